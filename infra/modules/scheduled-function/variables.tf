variable "function_name" {
  description = "Name of the Lambda function, its IAM role and its schedule (e.g. `ferry-view-sync`)."
  type        = string
}

variable "description" {
  description = "Description of the Lambda function: which ferry function it is and what it does."
  type        = string
  default     = ""
}

variable "memory_size" {
  description = "Memory in MB."
  type        = number
  default     = 256
}

variable "timeout" {
  description = "Function timeout in seconds. Keep it below the schedule interval; a run that is cut short leaves the rest to the next run (watermarks, leases and compare-and-swap keep overlapping runs safe)."
  type        = number
  default     = 60
}

variable "schedule" {
  description = <<-EOT
    When the function runs (EventBridge Scheduler):
    - expression: `rate(...)`, `cron(...)` or `at(...)`;
    - timezone: IANA time zone a cron expression is evaluated in;
    - enabled: false pauses the function without removing anything;
    - group_name: schedule group; input: JSON event passed on every run.
  EOT
  type = object({
    expression = string
    timezone   = optional(string, "UTC")
    enabled    = optional(bool, true)
    group_name = optional(string, "default")
    input      = optional(string, "{}")
  })
}

variable "state_grants" {
  description = "The function's access to the state bucket, as data: its entries of `infra/state-layout.json` (generated from the code), each a key prefix and actions among `get`, `put`, `delete`. See the lambda-function module."
  type = list(object({
    prefix  = string
    actions = list(string)
  }))
}

variable "s3_write_targets" {
  description = "S3 prefixes outside the state bucket the function writes to (s3:PutObject on `<bucket>/<prefix>*`), e.g. view-sync's s3_jsonl sinks. An empty prefix allows the whole bucket."
  type = list(object({
    bucket = string
    prefix = optional(string, "")
  }))
  default = []
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
