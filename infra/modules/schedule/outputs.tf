output "schedule_name" {
  description = "Name of the schedule."
  value       = aws_scheduler_schedule.this.name
}

output "schedule_arn" {
  description = "ARN of the schedule."
  value       = aws_scheduler_schedule.this.arn
}

output "group_name" {
  description = "Schedule group the schedule belongs to."
  value       = aws_scheduler_schedule.this.group_name
}

output "role_name" {
  description = "Name of the IAM role Scheduler assumes to invoke the function."
  value       = aws_iam_role.this.name
}

output "role_arn" {
  description = "ARN of the IAM role Scheduler assumes to invoke the function."
  value       = aws_iam_role.this.arn
}
