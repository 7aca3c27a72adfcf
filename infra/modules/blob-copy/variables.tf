variable "function_name" {
  description = "Name of the Lambda function and its IAM role."
  type        = string
  default     = "ferry-blob-copy"
}

variable "memory_size" {
  description = "Memory in MB. Copies stream with bounded memory (part size x (upload concurrency + 1)); memory also buys CPU for TLS and checksums."
  type        = number
  default     = 1024
}

variable "timeout" {
  description = "Function timeout in seconds. A large copy that runs out of time resumes from its stored parts on the next delivery."
  type        = number
  default     = 900
}

variable "queue_arn" {
  description = "ARN of the jobs queue fed by the state bucket's notifications (output `jobs_queue_arn` of the wiring module)."
  type        = string
}

variable "queue_visibility_timeout_seconds" {
  description = "Visibility timeout of that queue (output `jobs_queue_visibility_timeout_seconds` of the wiring module). Must be at least the function timeout; AWS recommends 6 times it."
  type        = number
}

variable "batch_size" {
  description = "Job messages per invocation. Failures are reported per message (ReportBatchItemFailures), but all messages of a batch share one function timeout: 1 gives every copy the whole timeout."
  type        = number
  default     = 1

  validation {
    condition     = var.batch_size >= 1 && var.batch_size <= 10
    error_message = "batch_size must be between 1 and 10."
  }
}

variable "maximum_concurrency" {
  description = "Most concurrent invocations the SQS event source starts (2-1000), limiting parallel copies and load on the destinations. Null leaves it to Lambda."
  type        = number
  default     = null

  validation {
    condition     = var.maximum_concurrency == null || try(var.maximum_concurrency >= 2 && var.maximum_concurrency <= 1000, false)
    error_message = "maximum_concurrency must be null or between 2 and 1000."
  }
}

variable "ephemeral_storage_size" {
  description = "Size of /tmp in MB (512-10240). A route with `decompress = true` stages each decompressed file there (up to its source's `max_decompressed_bytes`) before delivering it: give at least that plus some headroom. The example derives it from the config."
  type        = number
  default     = 512
}

variable "state_grants" {
  description = "The function's access to the state bucket, as data: its entries of `infra/state-layout.json` (generated from the code), each a key prefix and actions among `get`, `put`, `delete`. See the lambda-function module."
  type = list(object({
    prefix  = string
    actions = list(string)
  }))
}

variable "s3_destinations" {
  description = "S3 destinations of the routes: per bucket the key prefix the function may write below (PutObject and multipart, HeadObject to verify the size). An empty prefix allows the whole bucket."
  type = list(object({
    bucket = string
    prefix = optional(string, "")
  }))
  default = []
}

variable "s3_record_sinks" {
  description = "S3 JSON Lines sinks that the routes' `records` load into: per bucket the key prefix the function may write below (PutObject only: one object per chunk). An empty prefix allows the whole bucket."
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
