output "function_name" {
  description = "Name of the Lambda function."
  value       = module.function.function_name
}

output "function_arn" {
  description = "ARN of the Lambda function."
  value       = module.function.function_arn
}

output "role_name" {
  description = "Name of the function's IAM execution role."
  value       = module.function.role_name
}

output "role_arn" {
  description = "ARN of the function's IAM execution role."
  value       = module.function.role_arn
}

output "policy_json" {
  description = "The function's inline IAM policy (ARNs and prefixes only)."
  value       = module.function.policy_json
}

output "log_group_name" {
  description = "Name of the function's CloudWatch log group."
  value       = module.function.log_group_name
}

output "errors_alarm_name" {
  description = "Name of the CloudWatch alarm on the function's errors."
  value       = module.function.errors_alarm_name
}

output "function_url" {
  description = "HTTPS URL of the webhook (give it to the SaaS together with the token, e.g. `<url>?token=...`; the token is not part of this output)."
  value       = aws_lambda_function_url.this.function_url
}

output "function_url_id" {
  description = "Id of the function URL (the host's first label)."
  value       = aws_lambda_function_url.this.url_id
}
