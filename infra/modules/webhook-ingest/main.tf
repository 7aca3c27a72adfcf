# webhook-ingest: a public Lambda function URL (auth NONE: the SaaS cannot sign requests, ferry
# checks the webhook token itself in constant time) that turns notifications into job objects
# under jobs/. Its only S3 right is PutObject below jobs/.

data "aws_iam_policy_document" "access" {
  source_policy_documents = var.additional_policy_json == null ? [] : [var.additional_policy_json]

  statement {
    sid       = "WriteJobs"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = ["${var.state_bucket_arn}/${var.jobs_prefix}*"]
  }
}

module "function" {
  source = "../lambda-function"

  function_name                  = var.function_name
  description                    = "ferry webhook-ingest: authenticates export webhooks and writes transfer jobs"
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

resource "aws_lambda_function_url" "this" {
  function_name      = module.function.function_name
  authorization_type = "NONE"
  invoke_mode        = "BUFFERED"
}

resource "aws_lambda_permission" "function_url" {
  statement_id           = "AllowPublicFunctionUrl"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = module.function.function_name
  principal              = "*"
  function_url_auth_type = "NONE"
}

resource "aws_lambda_permission" "invoke_function" {
  count = var.grant_invoke_function_permission ? 1 : 0

  statement_id  = "AllowPublicInvokeForFunctionUrl"
  action        = "lambda:InvokeFunction"
  function_name = module.function.function_name
  principal     = "*"
}
