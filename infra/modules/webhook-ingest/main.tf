# webhook-ingest: a public Lambda function URL (auth NONE: the SaaS cannot sign requests, ferry
# checks the webhook token itself in constant time) that turns notifications into job objects
# under jobs/. Its state bucket access comes in as data (`state_grants`, from
# infra/state-layout.json: PutObject below jobs/).

module "function" {
  source = "../lambda-function"

  function_name                  = var.function_name
  description                    = "ferry webhook-ingest: authenticates export webhooks and writes transfer jobs"
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
  policy_json                    = coalesce(var.function_settings.additional_policy_json, "{\"Version\":\"2012-10-17\",\"Statement\":[]}")
  permissions_boundary_arn       = var.function_settings.permissions_boundary_arn
  log_retention_in_days          = var.function_settings.log_retention_in_days
  log_kms_key_arn                = var.function_settings.log_kms_key_arn
  application_log_level          = var.function_settings.application_log_level
  system_log_level               = var.function_settings.system_log_level
  alarm_actions                  = var.function_settings.alarm_actions
  tags                           = var.function_settings.tags
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
