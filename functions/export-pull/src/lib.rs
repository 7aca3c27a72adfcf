//! export-pull: on an EventBridge schedule, drains each pub/sub export source's Service Bus
//! subscription into transfer jobs until shortly before the Lambda deadline (each source's
//! `deadline_margin_secs`), so the message in hand is saved and completed in time. Each run first
//! drains the subscription's dead-letter subqueue (unless `drain_dead_letters` is off), and renews
//! the lock of a message whose save is slow. blob-copy runs the jobs. The schedule's payload is
//! ignored; the reply is `{"sources": [PullSummary, ...]}` (drain and renewal counters included).

use std::time::{Duration, Instant};

use ferry_shared::clock::now_ms;
use ferry_shared::pubsub::pull::{ExportPuller, PullSummary};
use futures_util::future::join_all;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};

/// Run length when the invocation has no deadline (local runs with a default context).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(60);

/// Time left before the invocation's deadline.
pub fn budget(context: &lambda_runtime::Context) -> Duration {
    if context.deadline == 0 {
        return DEFAULT_BUDGET;
    }
    Duration::from_millis(context.deadline.saturating_sub(now_ms()))
}

/// Runs every source's puller for `budget` (less its margin); all summaries, or the first error
/// after every puller has stopped.
/// One invocation: its metrics (per source) are written when it ends.
pub async fn run(pullers: &[ExportPuller], budget: Duration) -> Result<Vec<PullSummary>, Error> {
    ferry_shared::metrics::invocation("export-pull", pull_all(pullers, budget)).await
}

async fn pull_all(pullers: &[ExportPuller], budget: Duration) -> Result<Vec<PullSummary>, Error> {
    let started = Instant::now();
    let results = join_all(pullers.iter().map(|p| {
        let until = started + budget.saturating_sub(p.deadline_margin());
        p.run(until)
    }))
    .await;
    let mut summaries = Vec::new();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(s) => summaries.push(s),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("; ").into());
    }
    Ok(summaries)
}

/// The Lambda handler.
pub async fn handle(pullers: &[ExportPuller], event: LambdaEvent<Value>) -> Result<Value, Error> {
    let summaries = run(pullers, budget(&event.context)).await?;
    Ok(json!({"sources": summaries}))
}
