variable "bucket_name" {
  description = "Name of the S3 bucket that holds ferry's state (jobs/, done/, failed/, progress/, watermarks/, leases/, tokens/, inbox/). Bucket names are global: include something unique such as the account id."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-63 characters of lower-case letters, digits, '.' and '-', starting and ending with a letter or digit."
  }
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete the bucket even when it still holds objects (and their versions). Leave false in production: the bucket is ferry's memory of what was delivered."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "ARN of a customer-managed KMS key for default encryption (SSE-KMS with an S3 bucket key). Null uses SSE-S3 (AES256), which needs no extra IAM permissions for the functions."
  type        = string
  default     = null
}

variable "jobs_expiration_days" {
  description = "Days after which job descriptions under `jobs/` expire. Null keeps them forever. Must exceed the longest time a job can wait and retry (the SQS retention and redrive)."
  type        = number
  default     = 30

  validation {
    condition     = var.jobs_expiration_days == null || try(var.jobs_expiration_days >= 1, false)
    error_message = "jobs_expiration_days must be null or at least 1."
  }
}

variable "done_expiration_days" {
  description = "Days after which delivery receipts under `done/` expire. Null keeps them forever. While a receipt exists, a redelivered job for the same file is a no-op: keep receipts at least as long as the source keeps its files (ClientTrack keeps exports 30 days)."
  type        = number
  default     = 90

  validation {
    condition     = var.done_expiration_days == null || try(var.done_expiration_days >= 1, false)
    error_message = "done_expiration_days must be null or at least 1."
  }
}

variable "failed_expiration_days" {
  description = "Days after which dead letters under `failed/` expire. Null keeps them forever. They are what an operator replays, so give people time to look."
  type        = number
  default     = 90

  validation {
    condition     = var.failed_expiration_days == null || try(var.failed_expiration_days >= 1, false)
    error_message = "failed_expiration_days must be null or at least 1."
  }
}

variable "progress_expiration_days" {
  description = "Days after which resume records under `progress/` (multipart upload ids and parts done) expire. Null keeps them forever. Should be no shorter than `abort_incomplete_multipart_upload_days` of the destination buckets."
  type        = number
  default     = 7

  validation {
    condition     = var.progress_expiration_days == null || try(var.progress_expiration_days >= 1, false)
    error_message = "progress_expiration_days must be null or at least 1."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which non-current object versions (overwritten watermarks, leases and tokens; expired jobs and receipts) are deleted. Versioning keeps history for this long."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
  }
}

variable "abort_incomplete_multipart_upload_days" {
  description = "Days after which multipart uploads to the state bucket that were never completed are aborted and their parts deleted."
  type        = number
  default     = 7

  validation {
    condition     = var.abort_incomplete_multipart_upload_days >= 1
    error_message = "abort_incomplete_multipart_upload_days must be at least 1."
  }
}

variable "tags" {
  description = "Tags added to the bucket."
  type        = map(string)
  default     = {}
}
