# token-refresh: on a schedule, renews the SAS/OAuth tokens that other functions use before they
# expire and stores them (compare-and-swap) under tokens/; a lease under leases/ keeps two runs
# from refreshing at once.

data "aws_iam_policy_document" "access" {
  source_policy_documents = var.function_settings.additional_policy_json == null ? [] : [var.function_settings.additional_policy_json]

  statement {
    sid       = "TokensAndLeases"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${var.function_settings.state_bucket_arn}/tokens/*", "${var.function_settings.state_bucket_arn}/leases/*"]
  }

  # Without s3:ListBucket, S3 answers 403 instead of 404 for a missing key (no token stored yet).
  statement {
    sid       = "TellMissingStateFromDenied"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [var.function_settings.state_bucket_arn]
  }
}

module "function" {
  source = "../lambda-function"

  function_name                  = var.function_name
  description                    = "ferry token-refresh: renews SAS and OAuth tokens before they expire"
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
  schedule_expression          = var.schedule_expression
  schedule_expression_timezone = var.schedule_expression_timezone
  group_name                   = var.schedule_group_name
  enabled                      = var.schedule_enabled
  input                        = var.schedule_input
  permissions_boundary_arn     = var.function_settings.permissions_boundary_arn
  tags                         = var.function_settings.tags
}
