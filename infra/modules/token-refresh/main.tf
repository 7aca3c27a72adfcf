# token-refresh: on a schedule, renews the SAS/OAuth tokens that other functions use before they
# expire and stores them (compare-and-swap) under tokens/; a lease under leases/ keeps two runs
# from refreshing at once.

data "aws_iam_policy_document" "access" {
  source_policy_documents = var.additional_policy_json == null ? [] : [var.additional_policy_json]

  statement {
    sid       = "TokensAndLeases"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${var.state_bucket_arn}/tokens/*", "${var.state_bucket_arn}/leases/*"]
  }

  # Without s3:ListBucket, S3 answers 403 instead of 404 for a missing key (no token stored yet).
  statement {
    sid       = "TellMissingStateFromDenied"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [var.state_bucket_arn]
  }
}

module "function" {
  source = "../lambda-function"

  function_name                  = var.function_name
  description                    = "ferry token-refresh: renews SAS and OAuth tokens before they expire"
  package_path                   = var.package_path
  architecture                   = var.architecture
  memory_size                    = var.memory_size
  timeout                        = var.timeout
  reserved_concurrent_executions = var.reserved_concurrent_executions
  ferry_config_json              = var.ferry_config_json
  rust_log                       = var.rust_log
  environment_variables          = var.environment_variables
  secret_arns                    = var.secret_arns
  secret_kms_key_arns            = var.secret_kms_key_arns
  policy_json                    = data.aws_iam_policy_document.access.json
  permissions_boundary_arn       = var.permissions_boundary_arn
  log_retention_in_days          = var.log_retention_in_days
  log_kms_key_arn                = var.log_kms_key_arn
  application_log_level          = var.application_log_level
  system_log_level               = var.system_log_level
  alarm_actions                  = var.alarm_actions
  tags                           = var.tags
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
  permissions_boundary_arn     = var.permissions_boundary_arn
  tags                         = var.tags
}
