output "jobs_queue_arn" {
  description = "ARN of the jobs queue (event source of blob-copy)."
  value       = aws_sqs_queue.jobs.arn
}

output "jobs_queue_url" {
  description = "URL of the jobs queue."
  value       = aws_sqs_queue.jobs.id
}

output "jobs_queue_name" {
  description = "Name of the jobs queue."
  value       = aws_sqs_queue.jobs.name
}

output "jobs_queue_visibility_timeout_seconds" {
  description = "Visibility timeout of the jobs queue, for the consumer's timeout check."
  value       = aws_sqs_queue.jobs.visibility_timeout_seconds
}

output "dlq_arn" {
  description = "ARN of the dead-letter queue."
  value       = aws_sqs_queue.dlq.arn
}

output "dlq_url" {
  description = "URL of the dead-letter queue (start a redrive from here after fixing the cause)."
  value       = aws_sqs_queue.dlq.id
}

output "dlq_name" {
  description = "Name of the dead-letter queue."
  value       = aws_sqs_queue.dlq.name
}

output "dlq_alarm_name" {
  description = "Name of the CloudWatch alarm on the dead-letter queue depth."
  value       = aws_cloudwatch_metric_alarm.dlq_depth.alarm_name
}

output "bucket_notification_id" {
  description = "Id of the bucket notification configuration (the bucket name); depend on it before writing jobs."
  value       = aws_s3_bucket_notification.jobs.id
}
