locals {
  # Every deployed function module, by ferry function.
  deployed = merge(
    {
      "webhook-ingest" = module.webhook_ingest
      "blob-copy"      = module.blob_copy
    },
    module.scheduled,
  )
}

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
  description = "Deployed Lambda functions, by ferry function (the scheduled ones only when the config has work for them)."
  value       = { for f, m in local.deployed : f => m.function_name }
}

output "role_names" {
  description = "IAM execution role of each deployed function, by ferry function. Its one inline policy is named `ferry`."
  value       = { for f, m in local.deployed : f => m.role_name }
}

output "role_arns" {
  description = "ARN of each deployed function's IAM execution role, by ferry function."
  value       = { for f, m in local.deployed : f => m.role_arn }
}

output "function_secret_arns" {
  description = "Secrets each deployed function's role may read (secretsmanager:GetSecretValue), by ferry function: exactly those its part of the config references."
  value       = { for f, m in local.deployed : f => local.function_secret_arns[f] }
}

output "log_group_names" {
  description = "CloudWatch log groups (JSON logs), by ferry function."
  value       = { for f, m in local.deployed : f => m.log_group_name }
}

output "schedule_names" {
  description = "EventBridge Scheduler schedules of the deployed scheduled functions."
  value       = { for f, m in module.scheduled : f => m.schedule_name }
}

output "secret_arns" {
  description = "Secrets created empty, to be filled by an operator, by purpose (`webhook-token`, `sources/<s>/sas`, `sources/<s>/aad-client-secret`, `destinations/<d>/private-key`, `destinations/<d>/headers/<h>`, `destinations/<d>/client-secret`, `views/<v>/password`, `sinks/<s>/headers/<h>`, `routes/<r>/pgp-recipients/<k>`): `aws secretsmanager put-secret-value --secret-id <arn> --secret-string <value>` (for the private key: `--secret-string file://key.pem`). ARNs only, never values."
  value = merge(
    { "webhook-token" = aws_secretsmanager_secret.webhook_token.arn },
    { for k, s in aws_secretsmanager_secret.source_sas : "sources/${k}/sas" => s.arn },
    { for k, s in aws_secretsmanager_secret.aad_client_secret : "sources/${k}/aad-client-secret" => s.arn },
    { for k, s in aws_secretsmanager_secret.sftp_private_key : "destinations/${k}/private-key" => s.arn },
    { for k, s in aws_secretsmanager_secret.http_destination_header : "destinations/${k}" => s.arn },
    { for k, s in aws_secretsmanager_secret.graph_client_secret : "destinations/${k}/client-secret" => s.arn },
    { for k, s in aws_secretsmanager_secret.view_password : "views/${k}/password" => s.arn },
    { for k, s in aws_secretsmanager_secret.sink_header : "sinks/${k}" => s.arn },
    { for k, s in aws_secretsmanager_secret.pgp_recipient : "routes/${k}" => s.arn },
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

output "dashboard_name" {
  description = "CloudWatch dashboard of deliveries, bytes, failures, dead letters, queue age, DLQ depth, function errors/throttles/duration and view lag."
  value       = aws_cloudwatch_dashboard.ferry.dashboard_name
}
