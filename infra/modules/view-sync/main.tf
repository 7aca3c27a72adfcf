# view-sync: on a schedule, reads each view's watermark, fetches the records after it, delivers
# them and advances the watermark with a compare-and-swap. It uses watermarks/ and leases/ in
# the state bucket, plus the S3 sinks it delivers to.

data "aws_partition" "current" {}

data "aws_iam_policy_document" "access" {
  source_policy_documents = var.function_settings.additional_policy_json == null ? [] : [var.function_settings.additional_policy_json]

  statement {
    sid       = "WatermarksAndLeases"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${var.function_settings.state_bucket_arn}/watermarks/*", "${var.function_settings.state_bucket_arn}/leases/*"]
  }

  # Without s3:ListBucket, S3 answers 403 instead of 404 for a missing key (first run, free lease).
  statement {
    sid       = "TellMissingStateFromDenied"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [var.function_settings.state_bucket_arn]
  }

  dynamic "statement" {
    for_each = length(var.s3_destinations) > 0 ? [1] : []

    content {
      sid       = "DeliverToS3Destinations"
      effect    = "Allow"
      actions   = ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
      resources = distinct([for d in var.s3_destinations : "arn:${data.aws_partition.current.partition}:s3:::${d.bucket}/${d.prefix}*"])
    }
  }
}

module "function" {
  source = "../lambda-function"

  function_name                  = var.function_name
  description                    = "ferry view-sync: incremental sync of REST views with a compare-and-swap watermark"
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
