# A scheduled ferry function (view-sync, token-refresh, export-pull, reconcile): the function, run by an
# EventBridge Scheduler schedule. What it may touch is passed in as data: its state bucket
# grants (from infra/state-layout.json), the S3 prefixes it writes to (view-sync's s3_jsonl
# sinks) and, in function_settings, the secrets its part of the config references.

data "aws_partition" "current" {}

data "aws_iam_policy_document" "access" {
  source_policy_documents = var.function_settings.additional_policy_json == null ? [] : [var.function_settings.additional_policy_json]

  dynamic "statement" {
    for_each = length(var.s3_write_targets) > 0 ? [1] : []

    content {
      sid       = "WriteToS3Targets"
      effect    = "Allow"
      actions   = ["s3:PutObject"]
      resources = distinct([for t in var.s3_write_targets : "arn:${data.aws_partition.current.partition}:s3:::${t.bucket}/${t.prefix}*"])
    }
  }
}

module "function" {
  source = "../lambda-function"

  function_name                  = var.function_name
  description                    = var.description
  package_path                   = var.function_settings.package_path
  architecture                   = var.function_settings.architecture
  memory_size                    = var.memory_size
  timeout                        = var.timeout
  reserved_concurrent_executions = var.function_settings.reserved_concurrent_executions
  ferry_config_json              = var.function_settings.ferry_config_json
  rust_log                       = var.function_settings.rust_log
  environment_variables          = var.function_settings.environment_variables
  secret_arns                    = var.function_settings.secret_arns
  secret_kms_key_arns            = var.function_settings.secret_kms_key_arns
  state_bucket_arn               = var.function_settings.state_bucket_arn
  state_grants                   = var.state_grants
  policy_json                    = data.aws_iam_policy_document.access.json
  permissions_boundary_arn       = var.function_settings.permissions_boundary_arn
  log_retention_in_days          = var.function_settings.log_retention_in_days
  log_kms_key_arn                = var.function_settings.log_kms_key_arn
  application_log_level          = var.function_settings.application_log_level
  system_log_level               = var.function_settings.system_log_level
  alarm_actions                  = var.function_settings.alarm_actions
  tags                           = var.function_settings.tags
}

module "schedule" {
  source = "../schedule"

  name                         = var.function_name
  description                  = "Runs ${var.function_name}"
  function_arn                 = module.function.function_arn
  schedule_expression          = var.schedule.expression
  schedule_expression_timezone = var.schedule.timezone
  group_name                   = var.schedule.group_name
  enabled                      = var.schedule.enabled
  input                        = var.schedule.input
  permissions_boundary_arn     = var.function_settings.permissions_boundary_arn
  tags                         = var.function_settings.tags
}
