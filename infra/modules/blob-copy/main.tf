# blob-copy: consumes the jobs queue (S3 ObjectCreated notifications for jobs/), runs each
# transfer job and reports failed messages individually (ReportBatchItemFailures). Its state
# bucket access comes in as data (`state_grants`, from infra/state-layout.json: jobs/, done/,
# failed/, progress/, tokens/ with pub/sub sources); it writes to the S3 destination prefixes of
# its routes and the S3 sink prefixes its routes' records name only, and stages decompressed files in /tmp (`ephemeral_storage_size`).

data "aws_partition" "current" {}

data "aws_iam_policy_document" "access" {
  source_policy_documents = var.function_settings.additional_policy_json == null ? [] : [var.function_settings.additional_policy_json]

  statement {
    sid    = "ConsumeJobsQueue"
    effect = "Allow"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
    ]
    resources = [var.queue_arn]
  }

  dynamic "statement" {
    for_each = length(var.s3_destinations) > 0 ? [1] : []

    content {
      sid    = "DeliverToS3Destinations"
      effect = "Allow"
      actions = [
        "s3:PutObject",
        "s3:GetObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
      ]
      resources = distinct([
        for d in var.s3_destinations : "arn:${data.aws_partition.current.partition}:s3:::${d.bucket}/${d.prefix}*"
      ])
    }
  }

  dynamic "statement" {
    for_each = length(var.s3_record_sinks) > 0 ? [1] : []

    content {
      sid       = "LoadRecordsIntoS3Sinks"
      effect    = "Allow"
      actions   = ["s3:PutObject"]
      resources = distinct([for s in var.s3_record_sinks : "arn:${data.aws_partition.current.partition}:s3:::${s.bucket}/${s.prefix}*"])
    }
  }
}

module "function" {
  source = "../lambda-function"

  function_name                  = var.function_name
  description                    = "ferry blob-copy: runs transfer jobs from the jobs queue, source to destinations"
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
  ephemeral_storage_size         = var.ephemeral_storage_size
  permissions_boundary_arn       = var.function_settings.permissions_boundary_arn
  log_retention_in_days          = var.function_settings.log_retention_in_days
  log_kms_key_arn                = var.function_settings.log_kms_key_arn
  application_log_level          = var.function_settings.application_log_level
  system_log_level               = var.function_settings.system_log_level
  alarm_actions                  = var.function_settings.alarm_actions
  tags                           = var.function_settings.tags
}

resource "aws_lambda_event_source_mapping" "jobs" {
  event_source_arn                   = var.queue_arn
  function_name                      = module.function.function_arn
  batch_size                         = var.batch_size
  maximum_batching_window_in_seconds = 0
  function_response_types            = ["ReportBatchItemFailures"]
  enabled                            = true

  dynamic "scaling_config" {
    for_each = var.maximum_concurrency == null ? [] : [var.maximum_concurrency]

    content {
      maximum_concurrency = scaling_config.value
    }
  }

  lifecycle {
    precondition {
      condition     = var.queue_visibility_timeout_seconds >= var.timeout
      error_message = "The jobs queue's visibility timeout (${var.queue_visibility_timeout_seconds}s) is below blob-copy's timeout (${var.timeout}s): a running copy would be handed out again. Use at least 6 x the timeout."
    }
  }
}

check "visibility_timeout_margin" {
  assert {
    condition     = var.queue_visibility_timeout_seconds >= 6 * var.timeout
    error_message = "The jobs queue's visibility timeout (${var.queue_visibility_timeout_seconds}s) is less than 6 x blob-copy's timeout (${var.timeout}s), the margin AWS recommends for SQS event sources."
  }
}
