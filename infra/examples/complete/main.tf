# A complete ferry deployment: state bucket, jobs queue wiring, webhook-ingest behind a function
# URL, blob-copy behind the jobs queue, the scheduled functions the config has work for, secrets
# (created empty), alarms to an SNS topic, and one FERRY_CONFIG built from the typed variables.
# Each function is granted what its code uses: its state bucket prefixes from
# infra/state-layout.json (generated from the code), the secrets its part of the config names.

data "aws_caller_identity" "current" {}

locals {
  functions = ["webhook-ingest", "blob-copy", "view-sync", "token-refresh", "export-pull", "reconcile"]

  package_dir = coalesce(var.lambda_package_dir, abspath("${path.module}/../../../target/lambda"))
  packages = merge(
    { for f in local.functions : f => "${local.package_dir}/${f}/bootstrap.zip" },
    var.lambda_packages,
  )

  state_bucket_name = coalesce(var.state_bucket_name, "${var.name}-state-${data.aws_caller_identity.current.account_id}-${var.region}")

  # What each function does in the state bucket, as the code declares it (shared/src/layout.rs).
  # A grant with `only_with = "pubsub_sources"` applies only when the config has a pub/sub source.
  layout     = jsondecode(file("${path.module}/../../state-layout.json"))
  has_pubsub = length(var.pubsub_sources) > 0
  state_grants = {
    for f, grants in local.layout.functions : f => [
      for g in grants : { prefix = g.prefix, actions = g.actions }
      if g.only_with == null || (g.only_with == "pubsub_sources" && local.has_pubsub)
    ]
  }
  layout_conditions = distinct(flatten([for f, grants in local.layout.functions : [for g in grants : g.only_with if g.only_with != null]]))

  source_names      = concat(keys(var.sources), keys(var.pubsub_sources))
  destination_names = concat(keys(var.s3_destinations), keys(var.sftp_destinations), keys(var.http_destinations), keys(var.graph_destinations))
  sink_names        = concat(keys(var.s3_jsonl_sinks), keys(var.http_sinks))

  route_sources      = toset([for r in var.routes : r.source])
  route_destinations = toset(flatten([for r in var.routes : r.destinations]))
  view_sinks         = toset([for v in var.views : v.sink])
  records_sinks      = toset([for r in var.routes : r.records.sink if r.records != null])
  webhook_routes     = [for r in var.routes : r if contains(keys(var.sources), r.source)]
  pubsub_routes      = [for r in var.routes : r if contains(keys(var.pubsub_sources), r.source)]

  # With aws_endpoint_url set, ferry's own S3 clients (state, s3 destinations, s3_jsonl sinks)
  # go to that endpoint too, path-style.
  s3_endpoint = var.aws_endpoint_url == null ? null : {
    endpoint_url     = var.aws_endpoint_url
    force_path_style = true
  }
}

# Cross-checks of the config that single-variable validations cannot express; a plan fails with
# these messages before anything is created.
resource "terraform_data" "config_checks" {
  lifecycle {
    precondition {
      condition     = length(setsubtract(local.layout_conditions, ["pubsub_sources"])) == 0
      error_message = "infra/state-layout.json has grant conditions this example does not know: ${join(", ", setsubtract(local.layout_conditions, ["pubsub_sources"]))}."
    }
    precondition {
      condition     = length(local.source_names) == length(distinct(local.source_names))
      error_message = "A source name is used in both var.sources and var.pubsub_sources."
    }
    precondition {
      condition     = length(setsubtract(local.route_sources, local.source_names)) == 0
      error_message = "Routes name sources that are in neither var.sources nor var.pubsub_sources: ${join(", ", setsubtract(local.route_sources, local.source_names))}."
    }
    precondition {
      condition     = length(setsubtract(local.route_destinations, local.destination_names)) == 0
      error_message = "Routes name destinations that are in none of var.s3_destinations, var.sftp_destinations, var.http_destinations, var.graph_destinations: ${join(", ", setsubtract(local.route_destinations, local.destination_names))}."
    }
    precondition {
      condition     = length(local.destination_names) == length(distinct(local.destination_names))
      error_message = "A destination name is used in more than one of var.s3_destinations, var.sftp_destinations, var.http_destinations, var.graph_destinations."
    }
    precondition {
      condition     = length(var.routes) == length(distinct([for r in var.routes : r.name]))
      error_message = "Route names must be unique."
    }
    precondition {
      condition     = alltrue([for r in var.routes : can(regex("^[A-Za-z0-9_.-]{1,64}$", r.name)) && (length(r.destinations) > 0 || r.records != null)])
      error_message = "Route names may use letters, digits, '-', '_' and '.' only, and every route needs at least one destination or records."
    }
    precondition {
      condition     = alltrue([for r in local.webhook_routes : r.container != null && r.blob_types == null && r.decompress == null])
      error_message = "Routes from an Azure Blob source (var.sources) need a container and take no blob_types or decompress."
    }
    precondition {
      condition     = alltrue([for r in local.pubsub_routes : length(coalesce(r.blob_types, [])) > 0 && r.container == null && r.file_glob == null && r.name_contains == null])
      error_message = "Routes from a pub/sub source (var.pubsub_sources) need blob_types and take no container, file_glob or name_contains."
    }
    precondition {
      condition     = length(setsubtract(local.view_sinks, local.sink_names)) == 0
      error_message = "Views name sinks that are in neither var.s3_jsonl_sinks nor var.http_sinks: ${join(", ", setsubtract(local.view_sinks, local.sink_names))}."
    }
    precondition {
      condition     = var.jobs_expiration_days == null || coalesce(var.reconcile_lookback_hours, 168) < var.jobs_expiration_days * 24
      error_message = "reconcile_lookback_hours (default 168) must be shorter than jobs_expiration_days: a sweep looking further back than jobs are kept would create a second job for a file delivered long ago."
    }
    precondition {
      condition     = length(setsubtract(local.records_sinks, local.sink_names)) == 0
      error_message = "Routes' records name sinks that are in neither var.s3_jsonl_sinks nor var.http_sinks: ${join(", ", setsubtract(local.records_sinks, local.sink_names))}."
    }
    precondition {
      condition     = length(local.sink_names) == length(distinct(local.sink_names))
      error_message = "A sink name is used in both var.s3_jsonl_sinks and var.http_sinks."
    }
  }
}

# ---------------------------------------------------------------------------------------------
# Secrets: created without a value. Terraform never sees one, so none ends up in a variable,
# an output or the state; put the values in with the CLI or the console (see outputs).
# ---------------------------------------------------------------------------------------------

locals {
  http_destination_headers = merge([
    for d, dest in var.http_destinations : {
      for h in dest.secret_headers : "${d}/headers/${lower(h)}" => { destination = d, header = h }
    }
  ]...)
  http_sink_headers = merge([
    for k, sink in var.http_sinks : {
      for h in sink.secret_headers : "${k}/headers/${lower(h)}" => { sink = k, header = h }
    }
  ]...)
  pgp_recipients = merge([
    for r in var.routes : {
      for k in r.encrypt_recipients : "${r.name}/pgp-recipients/${k}" => { route = r.name, recipient = k }
    }
  ]...)
}

resource "aws_secretsmanager_secret" "webhook_token" {
  name                    = "${var.name}/webhook-token"
  description             = "ferry: token the SaaS must present to webhook-ingest (X-Ferry-Token header, Bearer, or ?token=)."
  recovery_window_in_days = var.secret_recovery_window_in_days
}

resource "aws_secretsmanager_secret" "source_sas" {
  for_each = var.sources

  name                    = "${var.name}/sources/${each.key}/sas"
  description             = "ferry: SAS token (query string) for the Azure Blob source ${each.key} (${each.value.account_url})."
  recovery_window_in_days = var.secret_recovery_window_in_days
}

resource "aws_secretsmanager_secret" "aad_client_secret" {
  for_each = var.pubsub_sources

  name                    = "${var.name}/sources/${each.key}/aad-client-secret"
  description             = "ferry: Azure AD client secret of the app ${each.value.aad.client_id} that calls the token service of the pub/sub source ${each.key}."
  recovery_window_in_days = var.secret_recovery_window_in_days
}

resource "aws_secretsmanager_secret" "sftp_private_key" {
  for_each = var.sftp_destinations

  name                    = "${var.name}/destinations/${each.key}/private-key"
  description             = "ferry: OpenSSH private key of ${each.value.username}@${each.value.host} for the SFTP destination ${each.key}."
  recovery_window_in_days = var.secret_recovery_window_in_days
}

resource "aws_secretsmanager_secret" "http_destination_header" {
  for_each = local.http_destination_headers

  name                    = "${var.name}/destinations/${each.key}"
  description             = "ferry: value of the ${each.value.header} header ferry sends to the HTTP destination ${each.value.destination}."
  recovery_window_in_days = var.secret_recovery_window_in_days
}

resource "aws_secretsmanager_secret" "graph_client_secret" {
  for_each = var.graph_destinations

  name                    = "${var.name}/destinations/${each.key}/client-secret"
  description             = "ferry: Azure AD client secret of the app ${each.value.client_id} that uploads to the OneDrive/SharePoint destination ${each.key}."
  recovery_window_in_days = var.secret_recovery_window_in_days
}

resource "aws_secretsmanager_secret" "view_password" {
  for_each = var.views

  name                    = "${var.name}/views/${each.key}/password"
  description             = "ferry: HTTP Basic password of ${each.value.username} for the view ${each.key}."
  recovery_window_in_days = var.secret_recovery_window_in_days
}

resource "aws_secretsmanager_secret" "sink_header" {
  for_each = local.http_sink_headers

  name                    = "${var.name}/sinks/${each.key}"
  description             = "ferry: value of the ${each.value.header} header ferry sends to the HTTP sink ${each.value.sink}."
  recovery_window_in_days = var.secret_recovery_window_in_days
}

resource "aws_secretsmanager_secret" "pgp_recipient" {
  for_each = local.pgp_recipients

  name                    = "${var.name}/routes/${each.key}"
  description             = "ferry: armored OpenPGP public key of the recipient ${each.value.recipient} that blob-copy encrypts the files of route ${each.value.route} to."
  recovery_window_in_days = var.secret_recovery_window_in_days
}

locals {
  pgp_ref    = { for k, s in aws_secretsmanager_secret.pgp_recipient : k => { secrets_manager = { id = s.arn } } }
  sas_ref    = { for k, s in aws_secretsmanager_secret.source_sas : k => { secrets_manager = { id = s.arn } } }
  aad_ref    = { for k, s in aws_secretsmanager_secret.aad_client_secret : k => { secrets_manager = { id = s.arn } } }
  dest_h_ref = { for k, s in aws_secretsmanager_secret.http_destination_header : k => { secrets_manager = { id = s.arn } } }
  sink_h_ref = { for k, s in aws_secretsmanager_secret.sink_header : k => { secrets_manager = { id = s.arn } } }

  # ferry's config (shared/src/config.rs). Optional fields left null, and fields equal to ferry's
  # defaults (empty prefix, port 22, method PUT, no headers), are omitted: Lambda caps the whole
  # environment at 4 KiB.
  config = {
    for key, value in {
      state = { for k, v in {
        bucket   = module.state_bucket.bucket_id
        endpoint = local.s3_endpoint
      } : k => v if v != null }
      webhook = {
        token = { secrets_manager = { id = aws_secretsmanager_secret.webhook_token.arn } }
      }
      sources = merge(
        {
          for k, s in var.sources : k => {
            type        = "azure_blob"
            account_url = s.account_url
            sas         = local.sas_ref[k]
          }
        },
        {
          for k, s in var.pubsub_sources : k => { for f, v in {
            type               = "pubsub_export"
            tenant_service_url = s.tenant_service_url
            integration_name   = s.integration_name
            aad = { for f2, v2 in {
              authority_url = s.aad.authority_url
              tenant_id     = s.aad.tenant_id
              client_id     = s.aad.client_id
              scope         = s.aad.scope
              client_secret = local.aad_ref[k]
            } : f2 => v2 if v2 != null }
            topic                  = s.topic
            receive_timeout_secs   = s.receive_timeout_secs
            deadline_margin_secs   = s.deadline_margin_secs
            stop_when_idle         = s.stop_when_idle
            read_timeout_secs      = s.read_timeout_secs
            max_decompressed_bytes = s.max_decompressed_bytes
          } : f => v if v != null }
        },
      )
      destinations = merge(
        {
          for k, d in var.s3_destinations : k => { for f, v in {
            type     = "s3"
            bucket   = d.bucket
            prefix   = d.prefix == "" ? null : d.prefix
            endpoint = local.s3_endpoint
          } : f => v if v != null }
        },
        {
          for k, d in var.sftp_destinations : k => { for f, v in {
            type        = "sftp"
            host        = d.host
            port        = d.port == 22 ? null : d.port
            username    = d.username
            host_key    = d.host_key
            directory   = d.directory
            private_key = { secrets_manager = { id = aws_secretsmanager_secret.sftp_private_key[k].arn } }
          } : f => v if v != null }
        },
        {
          for k, d in var.http_destinations : k => { for f, v in {
            type           = "http"
            url            = d.url
            method         = d.method == "PUT" ? null : d.method
            headers        = length(d.headers) == 0 ? null : d.headers
            secret_headers = length(d.secret_headers) == 0 ? null : { for h in d.secret_headers : h => local.dest_h_ref["${k}/headers/${lower(h)}"] }
          } : f => v if v != null }
        },
        {
          for k, d in var.graph_destinations : k => { for f, v in {
            type              = "graph"
            drive_id          = d.drive_id
            hostname          = d.hostname
            site_path         = d.site_path
            library           = d.library
            user              = d.user
            folder            = d.folder == "" ? null : d.folder
            conflict_behavior = d.conflict_behavior == "replace" ? null : d.conflict_behavior
            fragment_size_mib = d.fragment_size_mib == 10 ? null : d.fragment_size_mib
            tenant_id         = d.tenant_id
            client_id         = d.client_id
            client_secret     = { secrets_manager = { id = aws_secretsmanager_secret.graph_client_secret[k].arn } }
          } : f => v if v != null }
        },
      )
      # Optional route fields left null (and decompress = false, no destinations) are omitted;
      # records without its null limits; encrypt_recipients becomes `encrypt` over their secrets.
      routes = [for r in var.routes : merge(
        { for k, v in r : k => v if v != null && v != false && !contains(["records", "encrypt_recipients"], k) && !(k == "destinations" && try(length(v), 1) == 0) },
        r.records == null ? {} : { records = { for k, v in r.records : k => v if v != null } },
        length(r.encrypt_recipients) == 0 ? {} : {
          encrypt = { recipients = [for k in r.encrypt_recipients : local.pgp_ref["${r.name}/pgp-recipients/${k}"]] }
        },
      )]
      transfer = {
        max_attempts = var.transfer_max_attempts
      }
      reconcile = var.reconcile_lookback_hours == null ? null : {
        lookback_hours = var.reconcile_lookback_hours
      }
      views = length(var.views) == 0 ? null : {
        for k, v in var.views : k => { for f, x in {
          url          = v.url
          on_behalf_of = v.on_behalf_of
          username     = v.username
          password     = { secrets_manager = { id = aws_secretsmanager_secret.view_password[k].arn } }
          sink         = v.sink
          chunk_size   = v.chunk_size
          lease_secs   = v.lease_secs
          timeout_secs = v.timeout_secs
        } : f => x if x != null }
      }
      sinks = length(local.sink_names) == 0 ? null : merge(
        {
          for k, s in var.s3_jsonl_sinks : k => { for f, v in {
            type     = "s3_jsonl"
            bucket   = s.bucket
            prefix   = s.prefix == "" ? null : s.prefix
            endpoint = local.s3_endpoint
          } : f => v if v != null }
        },
        {
          for k, s in var.http_sinks : k => { for f, v in {
            type           = "http"
            url            = s.url
            headers        = length(s.headers) == 0 ? null : s.headers
            secret_headers = length(s.secret_headers) == 0 ? null : { for h in s.secret_headers : h => local.sink_h_ref["${k}/headers/${lower(h)}"] }
          } : f => v if v != null }
        },
      )
    } : key => value if value != null
  }

  config_json = jsonencode(local.config)

  # Secrets each function may read: exactly those its code resolves for this config.
  azure_route_sources = [for r in local.webhook_routes : r.source]
  function_secret_arns = {
    # The webhook token, and the SAS of the sources its routes read (to check a file exists).
    "webhook-ingest" = concat(
      [aws_secretsmanager_secret.webhook_token.arn],
      [for k, s in aws_secretsmanager_secret.source_sas : s.arn if contains(local.azure_route_sources, k)],
    )
    # The sources, destinations and record sinks of its routes.
    "blob-copy" = concat(
      [for k, s in aws_secretsmanager_secret.source_sas : s.arn if contains(local.route_sources, k)],
      [for k, s in aws_secretsmanager_secret.aad_client_secret : s.arn if contains(local.route_sources, k)],
      [for k, s in aws_secretsmanager_secret.sftp_private_key : s.arn if contains(local.route_destinations, k)],
      [for k, s in aws_secretsmanager_secret.http_destination_header : s.arn if contains(local.route_destinations, local.http_destination_headers[k].destination)],
      [for k, s in aws_secretsmanager_secret.graph_client_secret : s.arn if contains(local.route_destinations, k)],
      # The sinks its routes load records into, and its routes' OpenPGP recipient keys.
      [for k, s in aws_secretsmanager_secret.sink_header : s.arn if contains(local.records_sinks, local.http_sink_headers[k].sink)],
      [for s in aws_secretsmanager_secret.pgp_recipient : s.arn],
    )
    # Its views' passwords and the secret headers of the sinks they deliver to.
    "view-sync" = concat(
      [for s in aws_secretsmanager_secret.view_password : s.arn],
      [for k, s in aws_secretsmanager_secret.sink_header : s.arn if contains(local.view_sinks, local.http_sink_headers[k].sink)],
    )
    # The Azure AD client secrets of the pub/sub sources (to call their token services).
    "token-refresh" = [for s in aws_secretsmanager_secret.aad_client_secret : s.arn]
    "export-pull"   = [for s in aws_secretsmanager_secret.aad_client_secret : s.arn]
    # The SAS of the sources its (webhook) routes read: it lists their containers.
    "reconcile" = [for k, s in aws_secretsmanager_secret.source_sas : s.arn if contains(local.azure_route_sources, k)]
  }

  # blob-copy stages a decompressed file in /tmp before delivering it: room for the largest one
  # a decompressing route may produce (its source's max_decompressed_bytes, ferry's default
  # 1 GiB), plus headroom, within Lambda's 512-10240 MB.
  default_max_decompressed_bytes = 1073741824
  ephemeral_headroom_mb          = 256
  staged_bytes = [
    for r in local.pubsub_routes : coalesce(var.pubsub_sources[r.source].max_decompressed_bytes, local.default_max_decompressed_bytes)
    if coalesce(r.decompress, false)
  ]
  blob_copy_staging_mb             = length(local.staged_bytes) == 0 ? 0 : ceil(max(local.staged_bytes...) / 1048576) + local.ephemeral_headroom_mb
  blob_copy_ephemeral_storage_size = min(10240, max(512, local.blob_copy_staging_mb))

  alarm_actions = [aws_sns_topic.alarms.arn]

  # What every function module takes; each adds its package and secrets.
  function_settings = {
    ferry_config_json     = local.config_json
    state_bucket_arn      = module.state_bucket.bucket_arn
    architecture          = var.architecture
    rust_log              = var.rust_log
    log_retention_in_days = var.log_retention_in_days
    alarm_actions         = local.alarm_actions
  }
}

check "blob_copy_staging_fits" {
  assert {
    condition     = local.blob_copy_staging_mb <= 10240
    error_message = "A decompressing route may stage ${local.blob_copy_staging_mb} MB (max_decompressed_bytes plus headroom), more than Lambda's largest /tmp (10240 MB): lower max_decompressed_bytes of its source."
  }
}

# ---------------------------------------------------------------------------------------------
# Alarms go to one SNS topic.
# ---------------------------------------------------------------------------------------------

resource "aws_sns_topic" "alarms" {
  name = "${var.name}-alarms"
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count = var.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

# ---------------------------------------------------------------------------------------------
# State bucket and the jobs queue wiring.
# ---------------------------------------------------------------------------------------------

module "state_bucket" {
  source = "../../modules/state-bucket"

  bucket_name            = local.state_bucket_name
  force_destroy          = var.state_bucket_force_destroy
  jobs_expiration_days   = var.jobs_expiration_days
  done_expiration_days   = var.done_expiration_days
  failed_expiration_days = var.failed_expiration_days
}

module "wiring" {
  source = "../../modules/wiring"

  name             = var.name
  state_bucket_id  = module.state_bucket.bucket_id
  state_bucket_arn = module.state_bucket.bucket_arn

  visibility_timeout_seconds = 6 * var.blob_copy_timeout
  max_receive_count          = var.transfer_max_attempts + 1
  restrict_dlq_to_jobs_queue = var.restrict_dlq_to_jobs_queue
  alarm_actions              = local.alarm_actions
}

# ---------------------------------------------------------------------------------------------
# Functions.
# ---------------------------------------------------------------------------------------------

module "webhook_ingest" {
  source = "../../modules/webhook-ingest"

  function_name = "${var.name}-webhook-ingest"
  function_settings = merge(local.function_settings, {
    package_path = local.packages["webhook-ingest"]
    secret_arns  = local.function_secret_arns["webhook-ingest"]
  })
  state_grants = local.state_grants["webhook-ingest"]
  timeout      = var.webhook_ingest_timeout

  depends_on = [terraform_data.config_checks]
}

module "blob_copy" {
  source = "../../modules/blob-copy"

  function_name = "${var.name}-blob-copy"
  function_settings = merge(local.function_settings, {
    package_path = local.packages["blob-copy"]
    secret_arns  = local.function_secret_arns["blob-copy"]
  })
  state_grants                     = local.state_grants["blob-copy"]
  memory_size                      = var.blob_copy_memory_size
  timeout                          = var.blob_copy_timeout
  ephemeral_storage_size           = local.blob_copy_ephemeral_storage_size
  maximum_concurrency              = var.blob_copy_maximum_concurrency
  queue_arn                        = module.wiring.jobs_queue_arn
  queue_visibility_timeout_seconds = module.wiring.jobs_queue_visibility_timeout_seconds
  s3_destinations                  = [for k, d in var.s3_destinations : d if contains(local.route_destinations, k)]
  s3_record_sinks = [
    for k, s in var.s3_jsonl_sinks : { bucket = s.bucket, prefix = s.prefix } if contains(local.records_sinks, k)
  ]

  depends_on = [terraform_data.config_checks]
}

# Scheduled functions, deployed exactly when the config has work for them: view-sync with views,
# token-refresh and export-pull with pub/sub sources, reconcile with webhook routes (unless its
# schedule is null).
locals {
  scheduled = {
    "view-sync" = {
      deploy      = length(var.views) > 0
      description = "ferry view-sync: incremental sync of REST views with a compare-and-swap watermark"
      memory_size = 256
      timeout     = 300
      schedule    = var.view_sync_schedule
      s3_write_targets = [
        for k, s in var.s3_jsonl_sinks : { bucket = s.bucket, prefix = s.prefix } if contains(local.view_sinks, k)
      ]
    }
    "token-refresh" = {
      deploy           = local.has_pubsub
      description      = "ferry token-refresh: renews the pub/sub sources' rotating tokens before they expire"
      memory_size      = 256
      timeout          = 60
      schedule         = var.token_refresh_schedule
      s3_write_targets = []
    }
    "export-pull" = {
      deploy           = local.has_pubsub
      description      = "ferry export-pull: drains the pub/sub export subscriptions into transfer jobs"
      memory_size      = 512
      timeout          = 50
      schedule         = var.export_pull_schedule
      s3_write_targets = []
    }
    "reconcile" = {
      deploy           = length(local.webhook_routes) > 0 && var.reconcile_schedule != null
      description      = "ferry reconcile: sweeps the webhook routes' containers for files whose webhook never came"
      memory_size      = 256
      timeout          = 300
      schedule         = coalesce(var.reconcile_schedule, "rate(1 hour)")
      s3_write_targets = []
    }
  }
}

module "scheduled" {
  source   = "../../modules/scheduled-function"
  for_each = { for f, s in local.scheduled : f => s if s.deploy }

  function_name = "${var.name}-${each.key}"
  description   = each.value.description
  function_settings = merge(local.function_settings, {
    package_path = local.packages[each.key]
    secret_arns  = local.function_secret_arns[each.key]
  })
  state_grants     = local.state_grants[each.key]
  s3_write_targets = each.value.s3_write_targets
  memory_size      = each.value.memory_size
  timeout          = each.value.timeout
  schedule         = { expression = each.value.schedule }

  depends_on = [terraform_data.config_checks]
}
