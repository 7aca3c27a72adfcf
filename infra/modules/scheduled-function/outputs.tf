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

output "schedule_name" {
  description = "Name of the EventBridge Scheduler schedule."
  value       = module.schedule.schedule_name
}

output "schedule_arn" {
  description = "ARN of the EventBridge Scheduler schedule."
  value       = module.schedule.schedule_arn
}

output "scheduler_role_arn" {
  description = "ARN of the IAM role the schedule uses to invoke the function."
  value       = module.schedule.role_arn
}
