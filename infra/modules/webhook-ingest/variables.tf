variable "function_name" {
  description = "Name of the Lambda function and its IAM role."
  type        = string
  default     = "ferry-webhook-ingest"
}

variable "memory_size" {
  description = "Memory in MB. The handler is small; more memory mostly buys a faster TLS handshake at cold start."
  type        = number
  default     = 256
}

variable "timeout" {
  description = "Function timeout in seconds. The webhook caller waits for the answer: keep it short."
  type        = number
  default     = 15
}

variable "state_grants" {
  description = "The function's access to the state bucket, as data: its entries of `infra/state-layout.json` (generated from the code; webhook-ingest writes jobs under `jobs/`). See the lambda-function module."
  type = list(object({
    prefix  = string
    actions = list(string)
  }))
}

variable "grant_invoke_function_permission" {
  description = "Also grant public `lambda:InvokeFunction`, which AWS requires (besides `lambda:InvokeFunctionUrl`) for function URLs created since October 2025. AWS provider 5.x cannot add the `lambda:InvokedViaFunctionUrl` condition, so the grant is not limited to URL calls; ferry still authenticates every request with the webhook token. Set false on accounts where the URL works without it."
  type        = bool
  default     = true
}

variable "function_settings" {
  description = <<-EOT
    What every ferry function takes, passed on to the lambda-function module (which validates it):
    - package_path: the deployment zip (`target/lambda/<function>/bootstrap.zip` after `make build`);
    - ferry_config_json: ferry's configuration as JSON text (`FERRY_CONFIG`); it references secrets by
      Secrets Manager ARN and never contains a secret value;
    - state_bucket_arn: ferry's state bucket; S3 permissions are scoped to the prefixes the function uses;
    - architecture: `x86_64` or `arm64`, as the package was built;
    - reserved_concurrent_executions: -1 for none, 0 to stop the function, a positive number to cap it;
    - rust_log: log filter passed as `RUST_LOG`; environment_variables: extra variables (no secrets);
    - secret_arns: the Secrets Manager secrets this function may read (exactly those its part of the
      config references); secret_kms_key_arns: their customer-managed KMS keys (decrypt via Secrets
      Manager only), empty for the AWS-managed key;
    - additional_policy_json: an extra IAM policy document merged into the function's policy (e.g.
      kms:GenerateDataKey for an SSE-KMS destination bucket);
    - permissions_boundary_arn: a permissions boundary for the IAM roles the module creates;
    - log_retention_in_days, log_kms_key_arn: the function's CloudWatch log group;
    - application_log_level: Lambda's filter on the JSON log lines (TRACE lets `RUST_LOG` decide);
      system_log_level: level of the START/END/REPORT lines (DEBUG, INFO or WARN);
    - alarm_actions: ARNs (e.g. an SNS topic) notified by the alarms; tags: added to every resource.
  EOT
  type = object({
    package_path                   = string
    ferry_config_json              = string
    state_bucket_arn               = string
    architecture                   = optional(string, "x86_64")
    reserved_concurrent_executions = optional(number, -1)
    rust_log                       = optional(string, "info")
    environment_variables          = optional(map(string), {})
    secret_arns                    = optional(list(string), [])
    secret_kms_key_arns            = optional(list(string), [])
    additional_policy_json         = optional(string)
    permissions_boundary_arn       = optional(string)
    log_retention_in_days          = optional(number, 30)
    log_kms_key_arn                = optional(string)
    application_log_level          = optional(string, "TRACE")
    system_log_level               = optional(string, "INFO")
    alarm_actions                  = optional(list(string), [])
    tags                           = optional(map(string), {})
  })
}
