variable "function_name" {
  description = "Name of the Lambda function, its IAM role and its schedule."
  type        = string
  default     = "ferry-token-refresh"
}

variable "memory_size" {
  description = "Memory in MB."
  type        = number
  default     = 256
}

variable "timeout" {
  description = "Function timeout in seconds."
  type        = number
  default     = 60
}

variable "schedule_expression" {
  description = "When the function runs (EventBridge Scheduler `rate(...)` or `cron(...)`)."
  type        = string
  default     = "rate(10 minutes)"
}

variable "schedule_expression_timezone" {
  description = "IANA time zone a cron schedule is evaluated in."
  type        = string
  default     = "UTC"
}

variable "schedule_enabled" {
  description = "Whether the schedule fires; false pauses the function without removing anything."
  type        = bool
  default     = true
}

variable "schedule_group_name" {
  description = "EventBridge Scheduler schedule group."
  type        = string
  default     = "default"
}

variable "schedule_input" {
  description = "JSON event passed to the function on every scheduled run."
  type        = string
  default     = "{}"
}

variable "package_path" {
  description = "Path of the deployment zip for this function (`target/lambda/token-refresh/bootstrap.zip` after `make build`)."
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
