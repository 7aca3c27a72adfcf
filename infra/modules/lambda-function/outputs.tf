output "function_name" {
  description = "Name of the Lambda function."
  value       = aws_lambda_function.this.function_name
}

output "function_arn" {
  description = "ARN of the Lambda function (unqualified)."
  value       = aws_lambda_function.this.arn
}

output "invoke_arn" {
  description = "ARN for invoking the function from API Gateway."
  value       = aws_lambda_function.this.invoke_arn
}

output "source_code_hash" {
  description = "Base64 SHA-256 of the deployed package, to compare with a local build."
  value       = aws_lambda_function.this.source_code_hash
}

output "role_name" {
  description = "Name of the function's IAM execution role."
  value       = aws_iam_role.this.name
}

output "role_arn" {
  description = "ARN of the function's IAM execution role."
  value       = aws_iam_role.this.arn
}

output "policy_json" {
  description = "The inline IAM policy attached to the role (no secret values: only ARNs and prefixes)."
  value       = data.aws_iam_policy_document.this.json
}

output "log_group_name" {
  description = "Name of the function's CloudWatch log group."
  value       = aws_cloudwatch_log_group.this.name
}

output "log_group_arn" {
  description = "ARN of the function's CloudWatch log group."
  value       = aws_cloudwatch_log_group.this.arn
}

output "errors_alarm_name" {
  description = "Name of the CloudWatch alarm on the function's errors."
  value       = aws_cloudwatch_metric_alarm.errors.alarm_name
}
