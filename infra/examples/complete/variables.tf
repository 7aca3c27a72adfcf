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
  description = "Per-function package paths that override `lambda_package_dir`, keyed by function (`webhook-ingest`, `blob-copy`, `view-sync`, `token-refresh`, `export-pull`, `reconcile`)."
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
  description = "Azure Blob sources of webhook routes, by name. Each gets a Secrets Manager secret `<name>/sources/<source>/sas` for its SAS token (created empty: put the value in yourself)."
  type = map(object({
    account_url = string
  }))
  default = {
    clienttrack = {
      account_url = "https://clienttrackexports.blob.core.windows.net"
    }
  }

  validation {
    condition     = alltrue([for k, s in var.sources : can(regex("^[A-Za-z0-9_.-]+$", k)) && can(regex("^https?://", s.account_url))])
    error_message = "Source names may use letters, digits, '-', '_' and '.'; account_url must be an http(s) URL (https:// for Azure, http:// for the Azurite emulator)."
  }
}

variable "pubsub_sources" {
  description = "Pub/sub file export sources (EG Retail / Lindbak \"File export\"), by name: the tenant's token service, the integration name and the Azure AD client that calls it. Each gets a secret `<name>/sources/<source>/aad-client-secret` (created empty). Null optional fields take ferry's defaults. With any pub/sub source, token-refresh and export-pull are deployed."
  type = map(object({
    tenant_service_url = string
    integration_name   = string
    aad = object({
      tenant_id     = string
      client_id     = string
      scope         = string
      authority_url = optional(string)
    })
    topic                  = optional(string)
    receive_timeout_secs   = optional(number)
    deadline_margin_secs   = optional(number)
    stop_when_idle         = optional(bool)
    read_timeout_secs      = optional(number)
    max_decompressed_bytes = optional(number)
  }))
  default = {}

  validation {
    condition = alltrue([
      for k, s in var.pubsub_sources : can(regex("^[A-Za-z0-9_.-]+$", k)) && can(regex("^https?://", s.tenant_service_url))
      && can(regex("^https?://", coalesce(s.aad.authority_url, "https://")))
      && coalesce(s.max_decompressed_bytes, 1) > 0
    ])
    error_message = "Pub/sub source names may use letters, digits, '-', '_' and '.'; tenant_service_url and aad.authority_url must be http(s) URLs; max_decompressed_bytes must be > 0."
  }
}

variable "s3_destinations" {
  description = "S3 destinations, by name: bucket and key prefix. blob-copy may write below the prefixes of the destinations its routes name."
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

variable "http_destinations" {
  description = "HTTP destinations, by name: each file is streamed as the body of a PUT or POST to `url` (`{name}` is replaced by the file name). `headers` are plain; each name in `secret_headers` (e.g. `Authorization`) gets a secret `<name>/destinations/<destination>/headers/<lower-case header>` (created empty)."
  type = map(object({
    url            = string
    method         = optional(string, "PUT")
    headers        = optional(map(string), {})
    secret_headers = optional(list(string), [])
  }))
  default = {}

  validation {
    condition = alltrue([
      for k, d in var.http_destinations : can(regex("^https?://", d.url)) && contains(["PUT", "POST"], d.method)
      && alltrue([for h in d.secret_headers : can(regex("^[A-Za-z0-9-]+$", h))])
    ])
    error_message = "HTTP destinations need an http(s) url, method PUT or POST, and secret header names of letters, digits and '-'."
  }
}

variable "graph_destinations" {
  description = "OneDrive / SharePoint destinations (Microsoft Graph, app-only), by name. Address the drive by exactly one of `drive_id`, `hostname` + `site_path` (+ `library`, else the site's default library), or `user` (a UPN, for that user's OneDrive). `conflict_behavior` is replace, fail or rename; `fragment_size_mib` a multiple of 5 below 60. Each gets a secret `<name>/destinations/<destination>/client-secret` for the app registration's client secret (created empty); docs/deploy.md explains the app registration and the Sites.Selected grant."
  type = map(object({
    tenant_id         = string
    client_id         = string
    drive_id          = optional(string)
    hostname          = optional(string)
    site_path         = optional(string)
    library           = optional(string)
    user              = optional(string)
    folder            = optional(string, "")
    conflict_behavior = optional(string, "replace")
    fragment_size_mib = optional(number, 10)
  }))
  default = {}

  validation {
    condition = alltrue([
      for k, d in var.graph_destinations : length([for a in [d.drive_id != null, d.hostname != null && d.site_path != null, d.user != null] : a if a]) == 1
      && (d.hostname == null) == (d.site_path == null) && (d.library == null || d.hostname != null)
      && contains(["replace", "fail", "rename"], d.conflict_behavior)
      && d.fragment_size_mib >= 5 && d.fragment_size_mib < 60 && d.fragment_size_mib % 5 == 0
    ])
    error_message = "Graph destinations need exactly one of drive_id, hostname + site_path (library only with them), or user; conflict_behavior replace, fail or rename; fragment_size_mib a multiple of 5 below 60."
  }
}

variable "routes" {
  description = "Which files go where. A webhook route names an Azure Blob source (`sources`) and a container, with optional filters on the file name; a pub/sub route names a pub/sub source and the `blob_types` it takes (`decompress` delivers gzip'd files decompressed). A route names the destinations that each receive a copy, and/or `records`: a sink (a key of `s3_jsonl_sinks` or `http_sinks`) that the lines of each file are loaded into (`format` `jsonl` or `xml_lines`; null limits take ferry's defaults). `encrypt_recipients` names the OpenPGP recipients of the route: each gets a secret `<name>/routes/<route>/pgp-recipients/<recipient>` (created empty; put the recipient's armored public key in it) that only blob-copy may read."
  type = list(object({
    name          = string
    source        = string
    destinations  = optional(list(string), [])
    container     = optional(string)
    file_glob     = optional(string)
    name_contains = optional(string)
    target_folder = optional(string)
    blob_types    = optional(list(string))
    decompress    = optional(bool)
    records = optional(object({
      sink            = string
      format          = string
      chunk_lines     = optional(number)
      max_line_bytes  = optional(number)
      max_total_bytes = optional(number)
    }))
    encrypt_recipients = optional(list(string), [])
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

  validation {
    condition = alltrue([for r in var.routes : (r.records == null || contains(["jsonl", "xml_lines"], try(r.records.format, "")))
    && alltrue([for k in r.encrypt_recipients : can(regex("^[A-Za-z0-9_.-]+$", k))])])
    error_message = "A route's records.format is jsonl or xml_lines; encrypt_recipients are names of letters, digits, '-', '_' and '.'."
  }
}

variable "views" {
  description = "REST views synced incrementally by view-sync (deployed when this is non-empty), by name: `GET <url>?onbehalfof=<on_behalf_of>&previouslastsubmissionid=<watermark>` with HTTP Basic auth as `username`; records go to `sink` (a key of `s3_jsonl_sinks` or `http_sinks`). Each view gets a secret `<name>/views/<view>/password` (created empty). Null optional fields take ferry's defaults."
  type = map(object({
    url          = string
    on_behalf_of = string
    username     = string
    sink         = string
    chunk_size   = optional(number)
    lease_secs   = optional(number)
    timeout_secs = optional(number)
  }))
  default = {}

  validation {
    condition     = alltrue([for k, v in var.views : can(regex("^[A-Za-z0-9_.-]+$", k)) && can(regex("^https?://", v.url))])
    error_message = "View names may use letters, digits, '-', '_' and '.'; url must be an http(s) URL."
  }
}

variable "s3_jsonl_sinks" {
  description = "S3 sinks of views and of routes' `records`, by name: one JSON Lines object per chunk below `prefix`. view-sync may write below the prefixes of the sinks its views name, blob-copy below those its routes' records name."
  type = map(object({
    bucket = string
    prefix = optional(string, "")
  }))
  default = {}
}

variable "http_sinks" {
  description = "HTTP sinks of views and of routes' `records`, by name: each record is POSTed as JSON to `url`. `headers` are plain; each name in `secret_headers` gets a secret `<name>/sinks/<sink>/headers/<lower-case header>` (created empty)."
  type = map(object({
    url            = string
    headers        = optional(map(string), {})
    secret_headers = optional(list(string), [])
  }))
  default = {}

  validation {
    condition = alltrue([
      for k, s in var.http_sinks : can(regex("^https?://", s.url)) && alltrue([for h in s.secret_headers : can(regex("^[A-Za-z0-9-]+$", h))])
    ])
    error_message = "HTTP sinks need an http(s) url and secret header names of letters, digits and '-'."
  }
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

variable "view_sync_schedule" {
  description = "Schedule expression of view-sync (deployed when `views` is non-empty)."
  type        = string
  default     = "rate(5 minutes)"
}

variable "token_refresh_schedule" {
  description = "Schedule expression of token-refresh (deployed with any pub/sub source)."
  type        = string
  default     = "rate(10 minutes)"
}

variable "export_pull_schedule" {
  description = "Schedule expression of export-pull (deployed with any pub/sub source)."
  type        = string
  default     = "rate(1 minute)"
}

variable "reconcile_schedule" {
  description = "Schedule expression of reconcile, the sweep that finds files whose webhook never came (deployed with any webhook route). ClientTrack keeps exports 30 days: run it well inside that. Null: not deployed."
  type        = string
  default     = "rate(1 hour)"
}

variable "reconcile_lookback_hours" {
  description = "How far back the sweep looks (blob creation time), in hours; null takes ferry's default (168, 7 days). Must stay below jobs_expiration_days, so a sweep never re-creates the job of a file delivered long ago."
  type        = number
  default     = null

  validation {
    condition     = var.reconcile_lookback_hours == null || try(var.reconcile_lookback_hours >= 1 && var.reconcile_lookback_hours <= 720, false)
    error_message = "reconcile_lookback_hours must be null or 1..720."
  }
}

variable "tags" {
  description = "Tags added to every resource (besides `Application = ferry`)."
  type        = map(string)
  default     = {}
}

variable "delivery_failures_alarm_threshold" {
  description = "Failed delivery attempts (ferry metric `DeliveryFailures`, every route and destination, retried ones included) within 15 minutes that raise the `delivery-failures` alarm."
  type        = number
  default     = 5

  validation {
    condition     = var.delivery_failures_alarm_threshold >= 1
    error_message = "delivery_failures_alarm_threshold must be at least 1."
  }
}

variable "view_lag_alarm_seconds" {
  description = "Raise the `view-lag` alarm when a view's watermark (ferry metric `WatermarkAge`, reported by each view-sync run) has not moved for this many seconds. A view that is quiet for longer than this raises it too: set it above the longest quiet spell of your views. Null: no alarm."
  type        = number
  default     = 86400

  validation {
    condition     = var.view_lag_alarm_seconds == null || try(var.view_lag_alarm_seconds >= 60, false)
    error_message = "view_lag_alarm_seconds must be null or at least 60."
  }
}
