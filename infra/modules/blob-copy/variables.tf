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

variable "s3_destinations" {
  description = "S3 destinations of the routes: per bucket the key prefix the function may write below (PutObject and multipart, HeadObject to verify the size). An empty prefix allows the whole bucket."
  type = list(object({
    bucket = string
    prefix = optional(string, "")
  }))
  default = []
}

variable "package_path" {
  description = "Path of the deployment zip for this function (`target/lambda/blob-copy/bootstrap.zip` after `make build`)."
  type        = string
}

variable "architecture" {
  description = "Instruction set the package was built for: `x86_64` or `arm64`."
  type        = string
  default     = "x86_64"
}

variable "reserved_concurrent_executions" {
  description = "Reserved concurrency: -1 for none, 0 to stop the function, a positive number to cap parallel executions."
  type        = number
  default     = -1
}

variable "ferry_config_json" {
  description = "ferry's configuration as JSON text (`FERRY_CONFIG`). It references secrets by Secrets Manager ARN and never contains a secret value."
  type        = string
}

variable "rust_log" {
  description = "Log filter passed as `RUST_LOG`."
  type        = string
  default     = "info"
}

variable "environment_variables" {
  description = "Extra environment variables (no secret values)."
  type        = map(string)
  default     = {}
}

variable "state_bucket_arn" {
  description = "ARN of ferry's state bucket; the function's S3 permissions are scoped to the prefixes it uses under it."
  type        = string
}

variable "secret_arns" {
  description = "ARNs of the Secrets Manager secrets this function may read: exactly the ones its part of the config references."
  type        = list(string)
  default     = []
}

variable "secret_kms_key_arns" {
  description = "Customer-managed KMS keys of those secrets (kms:Decrypt via Secrets Manager only). Empty for the AWS-managed key."
  type        = list(string)
  default     = []
}

variable "additional_policy_json" {
  description = "Optional extra IAM policy document (JSON) merged into the function's policy, e.g. kms:GenerateDataKey for an SSE-KMS destination bucket. Null adds nothing."
  type        = string
  default     = null
}

variable "permissions_boundary_arn" {
  description = "ARN of a permissions boundary for the IAM roles the module creates."
  type        = string
  default     = null
}

variable "log_retention_in_days" {
  description = "Retention of the function's CloudWatch log group, in days."
  type        = number
  default     = 30
}

variable "log_kms_key_arn" {
  description = "ARN of a KMS key for the log group. Null uses the default encryption."
  type        = string
  default     = null
}

variable "application_log_level" {
  description = "Lambda's filter on the function's JSON log lines; TRACE lets `RUST_LOG` decide alone."
  type        = string
  default     = "TRACE"
}

variable "system_log_level" {
  description = "Level of the platform's START/END/REPORT lines: DEBUG, INFO or WARN."
  type        = string
  default     = "INFO"
}

variable "alarm_actions" {
  description = "ARNs (e.g. an SNS topic) notified by the module's alarms."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every resource of the module that takes tags."
  type        = map(string)
  default     = {}
}
