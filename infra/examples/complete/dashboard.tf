# ---------------------------------------------------------------------------------------------
# The operators' view: a CloudWatch dashboard of ferry's own metrics (the functions' Embedded
# Metric Format lines, shared/src/metrics.rs: namespace "ferry", dimension Function = the
# deployed function's name) beside Lambda's and SQS's, and alarms on ferry's metrics to the
# alarm topic. Widgets use SEARCH expressions, so every route, destination and view appears
# without being listed here.
# ---------------------------------------------------------------------------------------------

locals {
  metrics_namespace = "ferry"
  blob_copy_name    = module.blob_copy.function_name
  webhook_name      = module.webhook_ingest.function_name
  view_sync_name    = try(module.scheduled["view-sync"].function_name, null)

  # SEARCH over one ferry metric of one function, by the given extra dimensions.
  search = {
    deliveries = "SEARCH('{${local.metrics_namespace},Function,Route,Destination} Function=\"${local.blob_copy_name}\" MetricName=\"FilesDelivered\"', 'Sum', 300)"
    bytes      = "SEARCH('{${local.metrics_namespace},Function,Route,Destination} Function=\"${local.blob_copy_name}\" MetricName=\"BytesDelivered\"', 'Sum', 300)"
    failures   = "SEARCH('{${local.metrics_namespace},Function,Route,Destination,Kind} Function=\"${local.blob_copy_name}\" MetricName=\"DeliveryFailures\"', 'Sum', 300)"
    dead       = "SEARCH('{${local.metrics_namespace},Function,Route,Kind} Function=\"${local.blob_copy_name}\" MetricName=\"JobsDeadLettered\"', 'Sum', 300)"
    duration   = "SEARCH('{${local.metrics_namespace},Function,Route,Destination} Function=\"${local.blob_copy_name}\" MetricName=\"DeliveryDuration\"', 'p95', 300)"
    webhook    = "SEARCH('{${local.metrics_namespace},Function,Outcome,Status} Function=\"${local.webhook_name}\" MetricName=\"WebhookRequests\"', 'Sum', 300)"
    view_lag   = "SEARCH('{${local.metrics_namespace},Function,View} Function=\"${coalesce(local.view_sync_name, "-")}\" MetricName=\"WatermarkAge\"', 'Maximum', 300)"
    records    = "SEARCH('{${local.metrics_namespace},Function,View} Function=\"${coalesce(local.view_sync_name, "-")}\" MetricName=\"ViewRecordsSynced\"', 'Sum', 300)"
  }

  # One widget: a time series of `metrics` (metric arrays or expressions).
  widget_base = { type = "metric", width = 12, height = 6 }

  dashboard_widgets = concat(
    [
      merge(local.widget_base, { properties = {
        title   = "Deliveries per route and destination (FilesDelivered)", region = var.region, view = "timeSeries", stacked = true, period = 300
        metrics = [[{ expression = local.search.deliveries, id = "deliveries" }]]
      } }),
      merge(local.widget_base, { properties = {
        title   = "Bytes delivered per route and destination (BytesDelivered)", region = var.region, view = "timeSeries", stacked = true, period = 300
        metrics = [[{ expression = local.search.bytes, id = "bytes" }]]
      } }),
      merge(local.widget_base, { properties = {
        title = "Delivery failures by kind and dead letters (DeliveryFailures, JobsDeadLettered)", region = var.region, view = "timeSeries", period = 300
        metrics = [
          [{ expression = local.search.failures, id = "failures" }],
          [{ expression = local.search.dead, id = "dead" }],
        ]
      } }),
      merge(local.widget_base, { properties = {
        title = "Jobs queue age and dead-letter queue depth", region = var.region, view = "timeSeries", period = 300
        metrics = [
          ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", module.wiring.jobs_queue_name, { stat = "Maximum", label = "oldest job message (s)" }],
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", module.wiring.dlq_name, { stat = "Maximum", label = "jobs DLQ depth", yAxis = "right" }],
        ]
      } }),
      merge(local.widget_base, { properties = {
        title = "Function errors and throttles", region = var.region, view = "timeSeries", period = 300
        metrics = concat(
          [for f, m in local.deployed : ["AWS/Lambda", "Errors", "FunctionName", m.function_name, { stat = "Sum", label = "${f} errors" }]],
          [for f, m in local.deployed : ["AWS/Lambda", "Throttles", "FunctionName", m.function_name, { stat = "Sum", label = "${f} throttles" }]],
        )
      } }),
      merge(local.widget_base, { properties = {
        title = "Function duration p95 and delivery duration p95 (DeliveryDuration)", region = var.region, view = "timeSeries", period = 300
        metrics = concat(
          [for f, m in local.deployed : ["AWS/Lambda", "Duration", "FunctionName", m.function_name, { stat = "p95", label = "${f} p95" }]],
          [[{ expression = local.search.duration, id = "delivery", yAxis = "right" }]],
        )
      } }),
      merge(local.widget_base, { properties = {
        title   = "Webhook calls by outcome and status (WebhookRequests)", region = var.region, view = "timeSeries", stacked = true, period = 300
        metrics = [[{ expression = local.search.webhook, id = "webhook" }]]
      } }),
    ],
    local.view_sync_name == null ? [] : [
      merge(local.widget_base, { properties = {
        title = "View lag: seconds since each view's watermark moved (WatermarkAge) and records synced", region = var.region, view = "timeSeries", period = 300
        metrics = [
          [{ expression = local.search.view_lag, id = "lag" }],
          [{ expression = local.search.records, id = "records", yAxis = "right" }],
        ]
      } }),
    ],
  )

  # Alarms on ferry's metrics (the Function-only dimension set every line carries).
  metric_alarms = merge(
    {
      "delivery-failures" = {
        function    = local.blob_copy_name
        metric      = "DeliveryFailures"
        statistic   = "Sum"
        period      = 900
        threshold   = var.delivery_failures_alarm_threshold
        description = "blob-copy failed ${var.delivery_failures_alarm_threshold} or more delivery attempts within 15 minutes (retried ones included): a destination refuses or is down. The dashboard's failures widget names the route, destination and kind; `ferry failed` lists dead letters."
      }
      "dead-letters" = {
        function    = local.blob_copy_name
        metric      = "JobsDeadLettered"
        statistic   = "Sum"
        period      = 300
        threshold   = 1
        description = "A transfer job was dead-lettered (recorded under failed/): a file was not delivered to every destination. Fix the cause, then replay it (`ferry replay`)."
      }
    },
    # What the scheduled functions found: a missed webhook (the sweep created its job) and a
    # Service Bus message that reached a subscription's dead-letter subqueue.
    !local.scheduled["reconcile"].deploy ? {} : {
      "missed-webhooks" = {
        function    = "${var.name}-reconcile"
        metric      = "ReconcileCreated"
        statistic   = "Sum"
        period      = 300
        threshold   = 1
        description = "The reconciliation sweep found files whose webhook never came and created their jobs (they are being delivered now). Check the SaaS webhook's deliveries and ferry's webhook URL; reconcile's log lines name the route and the files."
      }
    },
    !local.scheduled["export-pull"].deploy ? {} : {
      "dead-lettered-exports" = {
        function    = "${var.name}-export-pull"
        metric      = "ExportDeadLettersDrained"
        statistic   = "Sum"
        period      = 300
        threshold   = 1
        description = "export-pull found messages in a subscription's dead-letter subqueue (they had reached MaxDeliveryCount): valid ones became jobs, the others are under failed/. Find out why they were delivered so often (lock lost while saving, token refused)."
      }
    },
    local.view_sync_name == null || var.view_lag_alarm_seconds == null ? {} : {
      "view-lag" = {
        function    = local.view_sync_name
        metric      = "WatermarkAge"
        statistic   = "Maximum"
        period      = 900
        threshold   = var.view_lag_alarm_seconds
        description = "A view's watermark has not moved for ${coalesce(var.view_lag_alarm_seconds, 0)} s: its records are not reaching the sink (or the view has been quiet that long). Check view-sync's log lines for the view."
      }
    },
  )
}

resource "aws_cloudwatch_dashboard" "ferry" {
  dashboard_name = var.name
  dashboard_body = jsonencode({ widgets = local.dashboard_widgets })
}

resource "aws_cloudwatch_metric_alarm" "metrics" {
  for_each = local.metric_alarms

  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = each.value.description
  namespace           = local.metrics_namespace
  metric_name         = each.value.metric
  dimensions          = { Function = each.value.function }
  statistic           = each.value.statistic
  period              = each.value.period
  evaluation_periods  = 1
  threshold           = each.value.threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}
