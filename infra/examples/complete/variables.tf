variable "region" {
  description = "AWS region to deploy to."
  type        = string
  default     = "us-east-1"
}

variable "aws_endpoint_url" {
  description = "Send every AWS API call to this endpoint instead of AWS, e.g. `http://127.0.0.1:5000` for a moto server (used by tests/terraform.rs). Null (the default) talks to AWS."
  type        = string
  default     = null
}

variable "name" {
  description = "Name prefix of everything this example creates (functions, roles, queues, secrets, alarms)."
  type        = string
  default     = "ferry"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,30}$", var.name))
    error_message = "name must be 1-31 lower-case letters, digits or '-', starting with a letter or digit."
  }
}

variable "state_bucket_name" {
  description = "Name of the state bucket. Null derives `<name>-state-<account id>-<region>`."
  type        = string
  default     = null
}

variable "state_bucket_force_destroy" {
  description = "Let `terraform destroy` delete the state bucket with its objects. Keep false for real deployments."
  type        = bool
  default     = false
}

variable "lambda_package_dir" {
  description = "Directory holding one `<function>/bootstrap.zip` per function, as `make build` (cargo lambda) leaves them. Null means `target/lambda` of this repository."
  type        = string
  default     = null
}

variable "lambda_packages" {
  description = "Per-function package paths that override `lambda_package_dir`, keyed by function (`webhook-ingest`, `blob-copy`, `view-sync`, `token-refresh`, `export-pull`)."
  type        = map(string)
  default     = {}
}

variable "architecture" {
  description = "Instruction set of the packages: `x86_64` (default) or `arm64` (built with `make build LAMBDA_ARCH=arm64`)."
  type        = string
  default     = "x86_64"
}

variable "rust_log" {
  description = "`RUST_LOG` of every function."
  type        = string
  default     = "info"
}

variable "log_retention_in_days" {
  description = "Retention of every function's log group, in days."
  type        = number
  default     = 30
}

variable "alarm_email" {
  description = "E-mail address subscribed to the alarm topic (AWS sends a confirmation mail first). Null creates the topic without subscribers."
  type        = string
  default     = null
}

variable "secret_recovery_window_in_days" {
  description = "Days a deleted secret can still be restored (0 deletes at once, 7-30 otherwise)."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_in_days == 0 || (var.secret_recovery_window_in_days >= 7 && var.secret_recovery_window_in_days <= 30)
    error_message = "secret_recovery_window_in_days must be 0 or between 7 and 30."
  }
}

variable "jobs_expiration_days" {
  description = "Days after which job objects (`jobs/`) expire in the state bucket."
  type        = number
  default     = 30
}

variable "done_expiration_days" {
  description = "Days after which delivery receipts (`done/`) expire; while a receipt exists a repeated webhook for the same file is a no-op."
  type        = number
  default     = 90
}

variable "failed_expiration_days" {
  description = "Days after which dead letters (`failed/`) expire."
  type        = number
  default     = 90
}

variable "sources" {
  description = "Azure Blob sources, by name. Each gets a Secrets Manager secret `<name>/sources/<source>/sas` for its SAS token (created empty: put the value in yourself)."
  type = map(object({
    account_url = string
  }))
  default = {
    clienttrack = {
      account_url = "https://clienttrackexports.blob.core.windows.net"
    }
  }

  validation {
    condition     = alltrue([for k, s in var.sources : can(regex("^[A-Za-z0-9_.-]+$", k)) && startswith(s.account_url, "https://")])
    error_message = "Source names may use letters, digits, '-', '_' and '.'; account_url must start with https://."
  }
}

variable "s3_destinations" {
  description = "S3 destinations, by name: bucket and key prefix. blob-copy may write below exactly these prefixes."
  type = map(object({
    bucket = string
    prefix = optional(string, "")
  }))
  default = {
    archive = {
      bucket = "customer-archive"
      prefix = "clienttrack/"
    }
  }
}

variable "sftp_destinations" {
  description = "SFTP destinations, by name. `host_key` is the server's public key (`ssh-ed25519 AAAA...`); each gets a secret `<name>/destinations/<destination>/private-key` for the client's OpenSSH private key (created empty)."
  type = map(object({
    host      = string
    port      = optional(number, 22)
    username  = string
    host_key  = string
    directory = string
  }))
  default = {
    partner = {
      host      = "sftp.example.com"
      username  = "ferry"
      host_key  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReplaceWithTheServersRealHostKey"
      directory = "/upload"
    }
  }
}

variable "routes" {
  description = "Which notified files go where: a route names a source and container, optional filters on the file name, and the destinations that each receive a copy."
  type = list(object({
    name          = string
    source        = string
    container     = string
    file_glob     = optional(string)
    name_contains = optional(string)
    destinations  = list(string)
    target_folder = optional(string)
  }))
  default = [
    {
      name          = "hmis"
      source        = "clienttrack"
      container     = "exports"
      file_glob     = "*.zip"
      name_contains = "HMIS"
      destinations  = ["archive", "partner"]
    },
  ]
}

variable "transfer_max_attempts" {
  description = "Deliveries of one job before blob-copy records it under `failed/` (ferry's `transfer.max_attempts`). The jobs queue moves a message to its dead-letter queue one receive later."
  type        = number
  default     = 5

  validation {
    condition     = var.transfer_max_attempts >= 1 && var.transfer_max_attempts <= 100
    error_message = "transfer_max_attempts must be between 1 and 100."
  }
}

variable "webhook_ingest_timeout" {
  description = "Timeout of webhook-ingest in seconds."
  type        = number
  default     = 15
}

variable "blob_copy_timeout" {
  description = "Timeout of blob-copy in seconds; the jobs queue's visibility timeout is 6 times this."
  type        = number
  default     = 900

  validation {
    condition     = var.blob_copy_timeout >= 1 && var.blob_copy_timeout <= 900
    error_message = "blob_copy_timeout must be between 1 and 900 seconds."
  }
}

variable "blob_copy_memory_size" {
  description = "Memory of blob-copy in MB."
  type        = number
  default     = 1024
}

variable "blob_copy_maximum_concurrency" {
  description = "Most parallel blob-copy invocations the jobs queue starts (2-1000); null leaves it to Lambda."
  type        = number
  default     = null
}

variable "restrict_dlq_to_jobs_queue" {
  description = "Only the jobs queue may use the dead-letter queue (an SQS redrive allow policy). The apply test against moto turns it off because moto does not implement that attribute."
  type        = bool
  default     = true
}

variable "enable_view_sync" {
  description = "Deploy view-sync (scheduled incremental view sync). Needs its package `view-sync/bootstrap.zip`."
  type        = bool
  default     = false
}

variable "view_sync_schedule" {
  description = "Schedule expression of view-sync."
  type        = string
  default     = "rate(5 minutes)"
}

variable "enable_token_refresh" {
  description = "Deploy token-refresh (scheduled SAS/OAuth token renewal). Needs its package `token-refresh/bootstrap.zip`."
  type        = bool
  default     = false
}

variable "token_refresh_schedule" {
  description = "Schedule expression of token-refresh."
  type        = string
  default     = "rate(10 minutes)"
}

variable "enable_export_pull" {
  description = "Deploy export-pull (scheduled drain of an export subscription into jobs). Needs its package `export-pull/bootstrap.zip`."
  type        = bool
  default     = false
}

variable "export_pull_schedule" {
  description = "Schedule expression of export-pull."
  type        = string
  default     = "rate(1 minute)"
}

variable "tags" {
  description = "Tags added to every resource (besides `Application = ferry`)."
  type        = map(string)
  default     = {}
}
