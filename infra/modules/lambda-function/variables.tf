variable "function_name" {
  description = "Name of the Lambda function; also names its IAM role and its log group `/aws/lambda/<function_name>`."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,64}$", var.function_name))
    error_message = "function_name must be 1-64 letters, digits, '-' or '_'."
  }
}

variable "description" {
  description = "Description of the Lambda function."
  type        = string
  default     = ""
}

variable "package_path" {
  description = "Path of the deployment zip built by `cargo lambda build --release --output-format zip` (`target/lambda/<function>/bootstrap.zip`): a zip with an executable `bootstrap` at its root."
  type        = string
}

variable "architecture" {
  description = "Instruction set the package was built for: `x86_64` (default build) or `arm64` (`cargo lambda build --arm64`)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be x86_64 or arm64."
  }
}

variable "memory_size" {
  description = "Memory in MB. CPU share grows with memory."
  type        = number
  default     = 256

  validation {
    condition     = var.memory_size >= 128 && var.memory_size <= 10240
    error_message = "memory_size must be between 128 and 10240 MB."
  }
}

variable "timeout" {
  description = "Function timeout in seconds."
  type        = number
  default     = 30

  validation {
    condition     = var.timeout >= 1 && var.timeout <= 900
    error_message = "timeout must be between 1 and 900 seconds."
  }
}

variable "reserved_concurrent_executions" {
  description = "Reserved concurrency: -1 for none (use the account pool), 0 to stop the function, a positive number to cap parallel executions."
  type        = number
  default     = -1
}

variable "ferry_config_json" {
  description = "ferry's configuration as JSON text, passed as the `FERRY_CONFIG` environment variable. It names secrets (Secrets Manager ARNs) but must never contain a secret value."
  type        = string

  validation {
    condition     = can(jsondecode(var.ferry_config_json))
    error_message = "ferry_config_json must be valid JSON."
  }
}

variable "rust_log" {
  description = "Log filter passed as `RUST_LOG`, e.g. `info` or `info,ferry_shared=debug`."
  type        = string
  default     = "info"
}

variable "environment_variables" {
  description = "Extra environment variables. `FERRY_CONFIG` and `RUST_LOG` are set from their own variables and cannot be overridden here. No secret values: reference secrets in the config instead."
  type        = map(string)
  default     = {}
}

variable "secret_arns" {
  description = "ARNs of the Secrets Manager secrets this function may read (secretsmanager:GetSecretValue). Only these: the function can read no other secret."
  type        = list(string)
  default     = []
}

variable "secret_kms_key_arns" {
  description = "ARNs of customer-managed KMS keys that encrypt the secrets in `secret_arns` (kms:Decrypt, only via Secrets Manager). Empty when the secrets use the AWS-managed key."
  type        = list(string)
  default     = []
}

variable "ephemeral_storage_size" {
  description = "Size of the function's /tmp in MB (512-10240; Lambda's default is 512). blob-copy stages decompressed files there."
  type        = number
  default     = 512

  validation {
    condition     = var.ephemeral_storage_size >= 512 && var.ephemeral_storage_size <= 10240 && floor(var.ephemeral_storage_size) == var.ephemeral_storage_size
    error_message = "ephemeral_storage_size must be a whole number of MB between 512 and 10240."
  }
}

variable "state_bucket_arn" {
  description = "ARN of ferry's state bucket; `state_grants` are prefixes of it."
  type        = string
}

variable "state_grants" {
  description = "The function's access to the state bucket, as data (its entries of `infra/state-layout.json`, generated from the code): per key prefix the actions `get` (s3:GetObject), `put` (s3:PutObject) and `delete` (s3:DeleteObject) on `<prefix>*`. Any `get` also grants s3:ListBucket on the bucket, so a missing key reads as 404, not 403."
  type = list(object({
    prefix  = string
    actions = list(string)
  }))

  validation {
    condition = alltrue([
      for g in var.state_grants : length(g.actions) > 0 && length(setsubtract(g.actions, ["get", "put", "delete"])) == 0
    ])
    error_message = "Every state grant needs actions, each one of get, put, delete."
  }

  validation {
    condition     = alltrue([for g in var.state_grants : can(regex("^[a-z0-9_-]+/$", g.prefix))])
    error_message = "State grant prefixes are one key segment ending in '/', e.g. `jobs/`."
  }
}

variable "policy_json" {
  description = "IAM policy document (JSON) with the function's access besides logs, secrets and the state bucket: queues, destinations. Merged with the statements this module adds into one inline policy on the function's role."
  type        = string
  default     = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"

  validation {
    condition     = can(jsondecode(var.policy_json).Version)
    error_message = "policy_json must be an IAM policy document (JSON with a Version; the Statement list may be empty or absent)."
  }
}

variable "permissions_boundary_arn" {
  description = "ARN of a permissions boundary policy for the function's IAM role, if your organisation requires one."
  type        = string
  default     = null
}

variable "log_retention_in_days" {
  description = "Retention of the function's CloudWatch log group, in days."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_in_days)
    error_message = "log_retention_in_days must be one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

variable "log_kms_key_arn" {
  description = "ARN of a KMS key to encrypt the log group with. Null uses CloudWatch Logs' default encryption."
  type        = string
  default     = null
}

variable "application_log_level" {
  description = "Lambda's own filter on the level of the function's JSON log lines (TRACE, DEBUG, INFO, WARN, ERROR, FATAL). The default TRACE lets every line through, so `RUST_LOG` is the one knob; a stricter level here drops lines even when `RUST_LOG` asks for them."
  type        = string
  default     = "TRACE"

  validation {
    condition     = contains(["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"], var.application_log_level)
    error_message = "application_log_level must be one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL."
  }
}

variable "system_log_level" {
  description = "Level of the platform's own log lines (START, END, REPORT): DEBUG, INFO or WARN."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARN"], var.system_log_level)
    error_message = "system_log_level must be one of DEBUG, INFO, WARN."
  }
}

variable "errors_alarm_threshold" {
  description = "Alarm when the function reports at least this many errors (failed invocations, timeouts, crashes) within one period."
  type        = number
  default     = 1
}

variable "errors_alarm_period" {
  description = "Period of the errors alarm, in seconds (a multiple of 60)."
  type        = number
  default     = 300

  validation {
    condition     = var.errors_alarm_period >= 60 && var.errors_alarm_period % 60 == 0
    error_message = "errors_alarm_period must be a multiple of 60 seconds."
  }
}

variable "alarm_actions" {
  description = "ARNs (e.g. an SNS topic) notified when the errors alarm fires and when it recovers."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
