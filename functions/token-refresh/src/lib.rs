//! token-refresh: on an EventBridge schedule, refreshes the stored tokens of every pub/sub export
//! source that expire within `refresh_ahead_secs` (compare-and-swap, so concurrent refreshers never
//! replace newer tokens with older ones). Functions that use the tokens also refresh on their own
//! when a request is refused; this keeps that rare. The schedule's payload is ignored.

use std::sync::Arc;

use ferry_shared::token::cache::{RefreshOutcome, TokenCache};
use futures_util::future::join_all;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};

/// Refreshes what is due; fails the invocation (so the schedule's alarms see it) when any source
/// could not be refreshed, naming the cause (e.g. permissions not granted yet). Its metrics
/// (`TokensRefreshed`, `TokenRefreshFailures` per source) are written when it ends.
pub async fn handle(caches: &[Arc<TokenCache>], event: LambdaEvent<Value>) -> Result<Value, Error> {
    ferry_shared::metrics::invocation("token-refresh", refresh(caches, event)).await
}

async fn refresh(caches: &[Arc<TokenCache>], _event: LambdaEvent<Value>) -> Result<Value, Error> {
    let results = join_all(
        caches
            .iter()
            .map(|c| async move { (c.source().to_string(), c.refresh_if_due().await) }),
    )
    .await;
    let mut report = serde_json::Map::new();
    let mut failures = Vec::new();
    for (source, result) in results {
        let entry = match result {
            Ok(RefreshOutcome::NotDue {
                generation,
                expires_in,
            }) => {
                tracing::info!(%source, generation, expires_in_secs = expires_in.as_secs(), "tokens not due for refresh");
                json!({"status": "not_due", "generation": generation, "expires_in_secs": expires_in.as_secs()})
            }
            Ok(RefreshOutcome::Refreshed {
                generation,
                expires_in,
            }) => {
                json!({"status": "refreshed", "generation": generation, "expires_in_secs": expires_in.as_secs()})
            }
            Err(e) => {
                tracing::error!(%source, error = %e, "token refresh failed");
                failures.push(format!("source {source:?}: {e}"));
                json!({"status": "failed", "error": e.to_string()})
            }
        };
        report.insert(source, entry);
    }
    if !failures.is_empty() {
        return Err(failures.join("; ").into());
    }
    Ok(json!({"sources": report}))
}
