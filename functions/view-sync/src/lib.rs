//! view-sync: invoked by EventBridge Scheduler with `{"views": ["name", ...]}` (empty or absent:
//! every configured view). Syncs each named view once with the shared engine, one after the
//! other, and answers a per-view summary. Any view that failed makes the invocation fail (after
//! the others ran), so the failure shows in the function's error metrics; a view whose lease is
//! held by another run is not a failure, unless that run is past its expected run time
//! (`lease_stale`: it died holding the lease, and nothing syncs until the lease expires).

use ferry_shared::retry::Retryable as _;
use ferry_shared::view_sync::{SyncOutcome, ViewSync};
use lambda_runtime::{Error, LambdaEvent};
use serde::Deserialize;

/// The scheduler's payload.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Views to sync; empty means all.
    #[serde(default)]
    pub views: Vec<String>,
}

/// Reads the payload: a `SyncRequest` object, or `null`/`{}` for every view.
pub fn parse_request(payload: serde_json::Value) -> Result<SyncRequest, serde_json::Error> {
    if payload.is_null() {
        return Ok(SyncRequest::default());
    }
    serde_json::from_value(payload)
}

/// Runs the requested views; `Ok` with a summary when none failed. One invocation's metrics
/// (records synced per view, watermark age, failures) are written when it ends.
pub async fn handle(
    sync: &ViewSync,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, Error> {
    ferry_shared::metrics::invocation("view-sync", sync_views(sync, event)).await
}

async fn sync_views(
    sync: &ViewSync,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, Error> {
    let request = parse_request(event.payload)
        .map_err(|e| format!("payload must be {{\"views\": [\"name\", ...]}}: {e}"))?;
    let names = if request.views.is_empty() {
        sync.view_names()
    } else {
        request.views
    };
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for name in &names {
        match sync.sync(name).await {
            Ok(outcome) => {
                if let SyncOutcome::LeaseStale {
                    holder,
                    silent_secs,
                    ..
                } = &outcome
                {
                    failures.push(format!(
                        "view {name}: the lease is held by {holder}, which has not renewed it for {silent_secs} s (past its expected run time); nothing syncs until it expires"
                    ));
                }
                results.push(serde_json::to_value(&outcome)?);
            }
            Err(e) => {
                results.push(serde_json::json!({
                    "status": "failed", "view": name, "error": e.to_string(), "retryable": e.is_retryable()
                }));
                failures.push(e.to_string());
            }
        }
    }
    if !failures.is_empty() {
        return Err(format!(
            "{} of {} views failed: {}",
            failures.len(),
            names.len(),
            failures.join("; ")
        )
        .into());
    }
    Ok(serde_json::json!({ "views": results }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_forms() {
        assert!(
            parse_request(serde_json::Value::Null)
                .unwrap()
                .views
                .is_empty()
        );
        assert!(
            parse_request(serde_json::json!({}))
                .unwrap()
                .views
                .is_empty()
        );
        assert_eq!(
            parse_request(serde_json::json!({"views": ["a", "b"]}))
                .unwrap()
                .views,
            ["a", "b"]
        );
        assert!(parse_request(serde_json::json!({"view": "a"})).is_err());
    }
}
