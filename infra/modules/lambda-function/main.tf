# One ferry Lambda function: its IAM role (least privilege: logs, the named secrets, the state
# bucket prefixes it is granted as data, and the caller's statements), its log group with
# retention, the function with JSON logging, and an alarm on its errors. Function modules
# (webhook-ingest, blob-copy, scheduled-function) add their triggers.

locals {
  log_group_name = "/aws/lambda/${var.function_name}"

  environment = merge(var.environment_variables, {
    FERRY_CONFIG = var.ferry_config_json
    RUST_LOG     = var.rust_log
  })

  # Lambda caps the environment at 4 KiB (names and values together).
  environment_bytes = sum([for k, v in local.environment : length(k) + length(v)])

  # State bucket grants, as data (from infra/state-layout.json): one statement per S3 action,
  # naming every prefix granted that action.
  state_actions = {
    get    = "s3:GetObject"
    put    = "s3:PutObject"
    delete = "s3:DeleteObject"
  }
  state_statements = {
    for action, s3_action in local.state_actions : s3_action => distinct([
      for g in var.state_grants : "${var.state_bucket_arn}/${g.prefix}*" if contains(g.actions, action)
    ])
  }
  state_reads = anytrue([for g in var.state_grants : contains(g.actions, "get")])
}

data "aws_iam_policy_document" "assume" {
  statement {
    sid     = "LambdaAssumeRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name                 = var.function_name
  description          = "Execution role of the ferry function ${var.function_name}"
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  permissions_boundary = var.permissions_boundary_arn
  tags                 = var.tags
}

data "aws_iam_policy_document" "base" {
  statement {
    sid       = "WriteOwnLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }

  dynamic "statement" {
    for_each = length(var.secret_arns) > 0 ? [1] : []

    content {
      sid       = "ReadOwnSecrets"
      effect    = "Allow"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = var.secret_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.secret_kms_key_arns) > 0 ? [1] : []

    content {
      sid       = "DecryptOwnSecrets"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = var.secret_kms_key_arns

      condition {
        test     = "StringLike"
        variable = "kms:ViaService"
        values   = ["secretsmanager.*.amazonaws.com"]
      }
    }
  }
}

data "aws_iam_policy_document" "state" {
  dynamic "statement" {
    for_each = { for a, resources in local.state_statements : a => resources if length(resources) > 0 }

    content {
      sid       = "State${replace(trimprefix(statement.key, "s3:"), "Object", "")}"
      effect    = "Allow"
      actions   = [statement.key]
      resources = statement.value
    }
  }

  # Without s3:ListBucket, S3 answers 403 instead of 404 for a key that does not exist, and a
  # missing key (no receipt yet, first watermark, free lease) is a normal case for a reader.
  # Listing reveals key names only.
  dynamic "statement" {
    for_each = local.state_reads ? [1] : []

    content {
      sid       = "TellMissingStateFromDenied"
      effect    = "Allow"
      actions   = ["s3:ListBucket"]
      resources = [var.state_bucket_arn]
    }
  }
}

data "aws_iam_policy_document" "this" {
  source_policy_documents = [
    data.aws_iam_policy_document.base.json,
    data.aws_iam_policy_document.state.json,
    var.policy_json,
  ]
}

resource "aws_iam_role_policy" "this" {
  name   = "ferry"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}

resource "aws_cloudwatch_log_group" "this" {
  name              = local.log_group_name
  retention_in_days = var.log_retention_in_days
  kms_key_id        = var.log_kms_key_arn
  tags              = var.tags
}

resource "aws_lambda_function" "this" {
  function_name                  = var.function_name
  description                    = var.description
  role                           = aws_iam_role.this.arn
  filename                       = var.package_path
  source_code_hash               = filebase64sha256(var.package_path)
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = [var.architecture]
  memory_size                    = var.memory_size
  timeout                        = var.timeout
  reserved_concurrent_executions = var.reserved_concurrent_executions
  tags                           = var.tags

  ephemeral_storage {
    size = var.ephemeral_storage_size
  }

  environment {
    variables = local.environment
  }

  logging_config {
    log_format            = "JSON"
    log_group             = aws_cloudwatch_log_group.this.name
    application_log_level = var.application_log_level
    system_log_level      = var.system_log_level
  }

  lifecycle {
    # moto (5.2, used by tests/terraform.rs) does not implement LoggingConfig: it neither stores
    # nor returns it, so every plan against it would re-add the block. The block is applied when
    # the function is created; later changes of the two log levels are not pushed by Terraform:
    # use `aws lambda update-function-configuration --logging-config ...` (docs/deploy.md).
    # RUST_LOG, the usual knob, is an environment variable and is not affected.
    ignore_changes = [logging_config]

    precondition {
      condition     = local.environment_bytes <= 4096
      error_message = "The environment of ${var.function_name} (FERRY_CONFIG and the rest) is ${local.environment_bytes} bytes; Lambda allows 4096. Shorten the config (fewer or shorter routes and names)."
    }
  }

  # The role must carry its policy (logs, secrets) before the first cold start.
  depends_on = [aws_iam_role_policy.this]
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  alarm_name          = "${var.function_name}-errors"
  alarm_description   = "The ferry function ${var.function_name} reported errors. Its JSON logs are in ${local.log_group_name}."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  statistic           = "Sum"
  period              = var.errors_alarm_period
  evaluation_periods  = 1
  threshold           = var.errors_alarm_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags

  dimensions = {
    FunctionName = aws_lambda_function.this.function_name
  }
}
