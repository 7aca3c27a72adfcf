# Shared wiring between the state bucket and blob-copy: S3 ObjectCreated on jobs/ -> SQS jobs
# queue (with a dead-letter queue). blob-copy's event source mapping lives in its own module.

data "aws_caller_identity" "current" {}

locals {
  sse_sqs = var.kms_master_key_id == null
}

resource "aws_sqs_queue" "dlq" {
  name                      = "${var.name}-jobs-dlq"
  message_retention_seconds = var.dlq_message_retention_seconds
  sqs_managed_sse_enabled   = local.sse_sqs ? true : null
  kms_master_key_id         = var.kms_master_key_id
  tags                      = var.tags
}

resource "aws_sqs_queue" "jobs" {
  name                       = "${var.name}-jobs"
  visibility_timeout_seconds = var.visibility_timeout_seconds
  message_retention_seconds  = var.message_retention_seconds
  sqs_managed_sse_enabled    = local.sse_sqs ? true : null
  kms_master_key_id          = var.kms_master_key_id
  tags                       = var.tags

  lifecycle {
    # The redrive policy is owned by aws_sqs_queue_redrive_policy.jobs below, which compares it
    # as JSON. The queue resource still reads the attribute back verbatim, and moto 5.2 returns
    # it re-serialised with spaces, which would show as a perpetual whitespace-only change here.
    ignore_changes = [redrive_policy]
  }
}

resource "aws_sqs_queue_redrive_policy" "jobs" {
  queue_url = aws_sqs_queue.jobs.id

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
}

# Only the jobs queue may use the DLQ as its dead-letter target.
resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  count = var.restrict_dlq_to_jobs_queue ? 1 : 0

  queue_url = aws_sqs_queue.dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.jobs.arn]
  })
}

data "aws_iam_policy_document" "jobs_queue" {
  statement {
    sid       = "AllowStateBucketNotifications"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.jobs.arn]

    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [var.state_bucket_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_sqs_queue_policy" "jobs" {
  queue_url = aws_sqs_queue.jobs.id
  policy    = data.aws_iam_policy_document.jobs_queue.json

  # Set the redrive policy first. In AWS the order does not matter; moto 5.2 (used by
  # tests/terraform.rs) drops the queue policy on every SetQueueAttributes call that does not
  # repeat it, so a redrive policy written after the queue policy would erase it there.
  depends_on = [aws_sqs_queue_redrive_policy.jobs]
}

resource "aws_s3_bucket_notification" "jobs" {
  bucket = var.state_bucket_id

  queue {
    id            = "ferry-jobs"
    queue_arn     = aws_sqs_queue.jobs.arn
    events        = ["s3:ObjectCreated:*"]
    filter_prefix = var.jobs_prefix
    filter_suffix = var.jobs_suffix
  }

  # S3 sends a test event when the notification is created; the queue must accept it.
  depends_on = [aws_sqs_queue_policy.jobs]
}

resource "aws_cloudwatch_metric_alarm" "dlq_depth" {
  alarm_name          = "${var.name}-jobs-dlq-not-empty"
  alarm_description   = "Job notifications reached the dead-letter queue ${aws_sqs_queue.dlq.name}: blob-copy could not handle them (crash or timeout). Inspect them, fix, then redrive to ${aws_sqs_queue.jobs.name}."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.dlq_alarm_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags

  dimensions = {
    QueueName = aws_sqs_queue.dlq.name
  }
}
