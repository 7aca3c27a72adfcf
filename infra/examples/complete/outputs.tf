output "webhook_url" {
  description = "Function URL of webhook-ingest: configure it in the SaaS as the webhook, adding the token (e.g. `?token=<value of the webhook-token secret>`)."
  value       = module.webhook_ingest.function_url
}

output "state_bucket" {
  description = "Name of the state bucket."
  value       = module.state_bucket.bucket_id
}

output "jobs_queue_url" {
  description = "URL of the jobs queue between the state bucket and blob-copy."
  value       = module.wiring.jobs_queue_url
}

output "dlq_url" {
  description = "URL of the jobs dead-letter queue (redrive from here after fixing a cause)."
  value       = module.wiring.dlq_url
}

output "function_names" {
  description = "Deployed Lambda functions, by ferry function."
  value = merge(
    {
      "webhook-ingest" = module.webhook_ingest.function_name
      "blob-copy"      = module.blob_copy.function_name
    },
    { for m in module.view_sync : "view-sync" => m.function_name },
    { for m in module.token_refresh : "token-refresh" => m.function_name },
    { for m in module.export_pull : "export-pull" => m.function_name },
  )
}

output "log_group_names" {
  description = "CloudWatch log groups (JSON logs), by ferry function."
  value = merge(
    {
      "webhook-ingest" = module.webhook_ingest.log_group_name
      "blob-copy"      = module.blob_copy.log_group_name
    },
    { for m in module.view_sync : "view-sync" => m.log_group_name },
    { for m in module.token_refresh : "token-refresh" => m.log_group_name },
    { for m in module.export_pull : "export-pull" => m.log_group_name },
  )
}

output "schedule_names" {
  description = "EventBridge Scheduler schedules of the scheduled functions that are enabled."
  value = merge(
    { for m in module.view_sync : "view-sync" => m.schedule_name },
    { for m in module.token_refresh : "token-refresh" => m.schedule_name },
    { for m in module.export_pull : "export-pull" => m.schedule_name },
  )
}

output "secret_arns" {
  description = "Secrets created empty, to be filled by an operator: `aws secretsmanager put-secret-value --secret-id <arn> --secret-string <value>` (for the private key: `--secret-string file://key.pem`). ARNs only, never values."
  value = merge(
    { "webhook-token" = aws_secretsmanager_secret.webhook_token.arn },
    { for k, s in aws_secretsmanager_secret.source_sas : "sources/${k}/sas" => s.arn },
    { for k, s in aws_secretsmanager_secret.sftp_private_key : "destinations/${k}/private-key" => s.arn },
  )
}

output "alarm_topic_arn" {
  description = "SNS topic the DLQ and function error alarms notify."
  value       = aws_sns_topic.alarms.arn
}

output "ferry_config" {
  description = "The FERRY_CONFIG every function receives (JSON; secret references only)."
  value       = local.config_json
}
