# A complete ferry deployment: state bucket, jobs queue wiring, webhook-ingest behind a function
# URL, blob-copy behind the jobs queue, optional scheduled functions, secrets (created empty),
# alarms to an SNS topic, and one FERRY_CONFIG built from the typed variables.

data "aws_caller_identity" "current" {}

locals {
  functions = ["webhook-ingest", "blob-copy", "view-sync", "token-refresh", "export-pull"]

  package_dir = coalesce(var.lambda_package_dir, abspath("${path.module}/../../../target/lambda"))
  packages = merge(
    { for f in local.functions : f => "${local.package_dir}/${f}/bootstrap.zip" },
    var.lambda_packages,
  )

  state_bucket_name = coalesce(var.state_bucket_name, "${var.name}-state-${data.aws_caller_identity.current.account_id}-${var.region}")

  route_sources      = toset([for r in var.routes : r.source])
  route_destinations = toset(flatten([for r in var.routes : r.destinations]))
  destination_names  = concat(keys(var.s3_destinations), keys(var.sftp_destinations))
}

# Cross-checks of the route config that single-variable validations cannot express; a plan
# fails with these messages before anything is created.
resource "terraform_data" "config_checks" {
  lifecycle {
    precondition {
      condition     = length(setsubtract(local.route_sources, keys(var.sources))) == 0
      error_message = "Routes name sources that are not in var.sources: ${join(", ", setsubtract(local.route_sources, keys(var.sources)))}."
    }
    precondition {
      condition     = length(setsubtract(local.route_destinations, local.destination_names)) == 0
      error_message = "Routes name destinations that are in neither var.s3_destinations nor var.sftp_destinations: ${join(", ", setsubtract(local.route_destinations, local.destination_names))}."
    }
    precondition {
      condition     = length(local.destination_names) == length(distinct(local.destination_names))
      error_message = "A destination name is used in both var.s3_destinations and var.sftp_destinations."
    }
    precondition {
      condition     = length(var.routes) == length(distinct([for r in var.routes : r.name]))
      error_message = "Route names must be unique."
    }
    precondition {
      condition     = alltrue([for r in var.routes : can(regex("^[A-Za-z0-9_.-]{1,64}$", r.name)) && length(r.destinations) > 0])
      error_message = "Route names may use letters, digits, '-', '_' and '.' only, and every route needs at least one destination."
    }
  }
}

# ---------------------------------------------------------------------------------------------
# Secrets: created without a value. Terraform never sees one, so none ends up in a variable,
# an output or the state; put the values in with the CLI or the console (see outputs).
# ---------------------------------------------------------------------------------------------

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

resource "aws_secretsmanager_secret" "sftp_private_key" {
  for_each = var.sftp_destinations

  name                    = "${var.name}/destinations/${each.key}/private-key"
  description             = "ferry: OpenSSH private key of ${each.value.username}@${each.value.host} for the SFTP destination ${each.key}."
  recovery_window_in_days = var.secret_recovery_window_in_days
}

locals {
  config = {
    state = {
      bucket = module.state_bucket.bucket_id
    }
    webhook = {
      token = { secrets_manager = { id = aws_secretsmanager_secret.webhook_token.arn } }
    }
    sources = {
      for k, s in var.sources : k => {
        type        = "azure_blob"
        account_url = s.account_url
        sas         = { secrets_manager = { id = aws_secretsmanager_secret.source_sas[k].arn } }
      }
    }
    destinations = merge(
      {
        for k, d in var.s3_destinations : k => {
          type   = "s3"
          bucket = d.bucket
          prefix = d.prefix
        }
      },
      {
        for k, d in var.sftp_destinations : k => {
          type        = "sftp"
          host        = d.host
          port        = d.port
          username    = d.username
          host_key    = d.host_key
          directory   = d.directory
          private_key = { secrets_manager = { id = aws_secretsmanager_secret.sftp_private_key[k].arn } }
        }
      },
    )
    # Optional route fields left null are omitted rather than written as null.
    routes = [for r in var.routes : { for k, v in r : k => v if v != null }]
    transfer = {
      max_attempts = var.transfer_max_attempts
    }
  }

  config_json = jsonencode(local.config)

  # Secrets each function may read: exactly those its part of the config uses.
  blob_copy_secret_arns = concat(
    [for k, s in aws_secretsmanager_secret.source_sas : s.arn if contains(local.route_sources, k)],
    [for k, s in aws_secretsmanager_secret.sftp_private_key : s.arn if contains(local.route_destinations, k)],
  )

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
    secret_arns  = [aws_secretsmanager_secret.webhook_token.arn]
  })
  timeout = var.webhook_ingest_timeout

  depends_on = [terraform_data.config_checks]
}

module "blob_copy" {
  source = "../../modules/blob-copy"

  function_name = "${var.name}-blob-copy"
  function_settings = merge(local.function_settings, {
    package_path = local.packages["blob-copy"]
    secret_arns  = local.blob_copy_secret_arns
  })
  memory_size                      = var.blob_copy_memory_size
  timeout                          = var.blob_copy_timeout
  maximum_concurrency              = var.blob_copy_maximum_concurrency
  queue_arn                        = module.wiring.jobs_queue_arn
  queue_visibility_timeout_seconds = module.wiring.jobs_queue_visibility_timeout_seconds
  s3_destinations                  = values(var.s3_destinations)

  depends_on = [terraform_data.config_checks]
}

# Scheduled functions, off by default: this example's config has no view or pub/sub source yet
# (see docs/deploy.md), so they would run with nothing to do. They get the shared config and no
# secrets.

module "view_sync" {
  source = "../../modules/view-sync"
  count  = var.enable_view_sync ? 1 : 0

  function_name = "${var.name}-view-sync"
  function_settings = merge(local.function_settings, {
    package_path = local.packages["view-sync"]
  })
  schedule_expression = var.view_sync_schedule
}

module "token_refresh" {
  source = "../../modules/token-refresh"
  count  = var.enable_token_refresh ? 1 : 0

  function_name = "${var.name}-token-refresh"
  function_settings = merge(local.function_settings, {
    package_path = local.packages["token-refresh"]
  })
  schedule_expression = var.token_refresh_schedule
}

module "export_pull" {
  source = "../../modules/export-pull"
  count  = var.enable_export_pull ? 1 : 0

  function_name = "${var.name}-export-pull"
  function_settings = merge(local.function_settings, {
    package_path = local.packages["export-pull"]
  })
  schedule_expression = var.export_pull_schedule
}
