//! reconcile: on an EventBridge schedule, sweeps every webhook route's container for blobs whose
//! webhook never came and creates their jobs (the same create-once id the webhook uses, so a
//! late webhook and the sweep never both deliver). The jobs' S3 notifications start their
//! deliveries like any other job's.
//!
//! Payload (all optional): `{"routes": ["hmis-zips"], "dry_run": false, "lookback_hours": 48}`.
//! The summary (per route: listed, not taken, outside the lookback, refused names, already
//! known, created) is the function's result and a log line; an invocation where a route could
//! not be swept (e.g. its SAS lacks `l`) fails after sweeping the others, so the function's
//! error alarm sees it.

use std::time::{Duration, SystemTime};

use ferry_shared::reconcile::{Reconciler, SweepOptions, SweepSummary};
use lambda_runtime::{Error, LambdaEvent};
use serde::Deserialize;
use serde_json::Value;

/// The schedule's input.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    /// Routes to sweep; all webhook routes when empty.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Count only, create nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Overrides the configured lookback for this run.
    #[serde(default)]
    pub lookback_hours: Option<u64>,
}

impl ReconcileRequest {
    /// The sweep options for this request.
    pub fn options(&self, correlation_id: &str) -> SweepOptions {
        SweepOptions {
            routes: self.routes.clone(),
            dry_run: self.dry_run,
            since: self
                .lookback_hours
                .map(|h| SystemTime::now() - Duration::from_secs(h.saturating_mul(3600))),
            correlation_id: correlation_id.to_string(),
        }
    }
}

/// Runs one sweep; fails (after sweeping every route) when a route could not be swept. Its
/// metrics (per route: listed, created, already known, refused) are written when it ends.
pub async fn handle(reconciler: &Reconciler, event: LambdaEvent<Value>) -> Result<Value, Error> {
    ferry_shared::metrics::invocation("reconcile", sweep(reconciler, event)).await
}

async fn sweep(reconciler: &Reconciler, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    let request: ReconcileRequest = if payload.is_null() {
        ReconcileRequest::default()
    } else {
        serde_json::from_value(payload).map_err(|e| format!("bad reconcile payload: {e}"))?
    };
    let summary = reconciler
        .sweep(&request.options(&context.request_id))
        .await?;
    report(&summary)
}

/// Logs the summary and turns route errors into the invocation's error.
pub fn report(summary: &SweepSummary) -> Result<Value, Error> {
    let value = serde_json::to_value(summary)?;
    tracing::info!(summary = %value, created = summary.created(), "reconcile sweep done");
    let errors = summary.errors();
    if !errors.is_empty() {
        return Err(errors.join("; ").into());
    }
    Ok(value)
}
