variable "name" {
  description = "Name prefix of the queues and alarms, e.g. `ferry`: creates `<name>-jobs` and `<name>-jobs-dlq`."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,70}$", var.name))
    error_message = "name must be 1-70 letters, digits, '-' or '_' (SQS queue names allow 80 characters including the suffix)."
  }
}

variable "state_bucket_id" {
  description = "Name of the state bucket whose `jobs/` objects feed the queue (output `bucket_id` of the state-bucket module). This module owns the bucket's notification configuration: do not define another `aws_s3_bucket_notification` for the same bucket."
  type        = string
}

variable "state_bucket_arn" {
  description = "ARN of the state bucket; the queue policy accepts messages from this bucket only."
  type        = string
}

variable "jobs_prefix" {
  description = "Key prefix of job descriptions in the state bucket; only objects created under it are notified."
  type        = string
  default     = "jobs/"

  validation {
    condition     = endswith(var.jobs_prefix, "/") && !startswith(var.jobs_prefix, "/")
    error_message = "jobs_prefix must end with '/' and must not start with '/'."
  }
}

variable "jobs_suffix" {
  description = "Key suffix of job descriptions; objects with other suffixes under the prefix are not notified."
  type        = string
  default     = ".json"
}

variable "visibility_timeout_seconds" {
  description = "Visibility timeout of the jobs queue. AWS asks for at least 6 times the timeout of the function that consumes the queue (blob-copy), so a message is not handed out again while a slow copy still runs."
  type        = number

  validation {
    condition     = var.visibility_timeout_seconds >= 0 && var.visibility_timeout_seconds <= 43200
    error_message = "visibility_timeout_seconds must be between 0 and 43200 (12 hours)."
  }
}

variable "message_retention_seconds" {
  description = "How long an undelivered job notification stays in the jobs queue."
  type        = number
  default     = 345600

  validation {
    condition     = var.message_retention_seconds >= 60 && var.message_retention_seconds <= 1209600
    error_message = "message_retention_seconds must be between 60 and 1209600 (14 days)."
  }
}

variable "max_receive_count" {
  description = "Receives of one message before SQS moves it to the dead-letter queue. Set it above ferry's `transfer.max_attempts`, so blob-copy records the failure under `failed/` itself and the DLQ only catches messages the function could not handle at all (crash, timeout)."
  type        = number
  default     = 6

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be between 1 and 1000."
  }
}

variable "dlq_message_retention_seconds" {
  description = "How long messages stay in the dead-letter queue (keep it at the maximum: they are what an operator investigates)."
  type        = number
  default     = 1209600

  validation {
    condition     = var.dlq_message_retention_seconds >= 60 && var.dlq_message_retention_seconds <= 1209600
    error_message = "dlq_message_retention_seconds must be between 60 and 1209600 (14 days)."
  }
}

variable "restrict_dlq_to_jobs_queue" {
  description = "Set a redrive allow policy on the dead-letter queue so only the jobs queue may use it as its DLQ. Turn off only for emulators that do not implement the RedriveAllowPolicy attribute (moto 5.2 ignores it, and the AWS provider then waits forever for it to appear)."
  type        = bool
  default     = true
}

variable "kms_master_key_id" {
  description = "KMS key for SQS encryption. Null uses SQS-managed encryption (SSE-SQS), which S3 notifications can write to without a key policy. A customer-managed key must allow s3.amazonaws.com to use it."
  type        = string
  default     = null
}

variable "dlq_alarm_threshold" {
  description = "Alarm when the dead-letter queue holds at least this many visible messages."
  type        = number
  default     = 1
}

variable "alarm_actions" {
  description = "ARNs (e.g. an SNS topic) notified when the dead-letter queue alarm fires and when it recovers."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to the queues and the alarm."
  type        = map(string)
  default     = {}
}
