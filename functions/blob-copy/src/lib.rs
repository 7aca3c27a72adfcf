//! blob-copy: consumes SQS messages that carry S3 ObjectCreated notifications for `jobs/`, and
//! runs each job with the shared transfer engine. Failed messages are reported individually
//! (ReportBatchItemFailures) so SQS redelivers only those.
//!
//! The invocation's deadline (`context.deadline`) goes to the engine, which stops in time (see
//! `ferry_shared::engine`): a copy that cannot finish saves what it can resume and its message
//! is reported as a batch item failure before the deadline, so the next receive continues it
//! instead of Lambda killing the copy mid-write.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use ferry_shared::clock::now_ms;
use ferry_shared::engine::{JobError, JobOutcome, TransferEngine};
use ferry_shared::layout::Prefix;
use futures_util::future::join_all;
use lambda_runtime::{Error, LambdaEvent};

/// Job keys named by one SQS message body (an S3 event notification). S3's test event and
/// notifications for other prefixes yield nothing. Only the two fields we use are read, so a
/// notification with fields missing or added still parses.
pub fn job_keys(body: &str) -> Result<Vec<String>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(body)?;
    if value.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    let records = value
        .get("Records")
        .and_then(|r| r.as_array())
        .ok_or_else(|| {
            serde::de::Error::custom("no Records array: not an S3 event notification")
        })?;
    Ok(records
        .iter()
        .filter(|r| {
            r["eventName"]
                .as_str()
                .is_none_or(|n| n.starts_with("ObjectCreated"))
        })
        .filter_map(|r| r["s3"]["object"]["key"].as_str())
        .map(decode_key)
        .filter(|k| k.starts_with(Prefix::Jobs.as_str()))
        .collect())
}

/// S3 notification keys are form-encoded (`+` for space).
fn decode_key(key: &str) -> String {
    url_decode(&key.replace('+', " "))
}

fn url_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The invocation's deadline (`context.deadline`, epoch milliseconds) as an instant on this
/// process's clock; `None` for 0, which local runs and tests with a default context pass.
pub fn deadline(context: &lambda_runtime::Context) -> Option<tokio::time::Instant> {
    if context.deadline == 0 {
        return None;
    }
    let left = Duration::from_millis(context.deadline.saturating_sub(now_ms()));
    Some(tokio::time::Instant::now() + left)
}

/// Runs every job in the batch before the invocation's deadline; returns the messages to
/// redeliver (failed, or stopped at the deadline). The invocation's metrics (files, bytes and
/// durations per route and destination, failures, dead letters, retries) are written at its end.
pub async fn handle(
    engine: &TransferEngine,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    ferry_shared::metrics::invocation("blob-copy", run_batch(engine, event)).await
}

async fn run_batch(
    engine: &TransferEngine,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let deadline = deadline(&event.context);
    let runs = event.payload.records.into_iter().map(|message| async move {
        let id = message.message_id.clone().unwrap_or_default();
        let attempt: u32 = message
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let keys = match job_keys(message.body.as_deref().unwrap_or("")) {
            Ok(keys) => keys,
            Err(e) => {
                // Not an S3 notification: report it so SQS moves it to the dead-letter queue.
                tracing::error!(message_id = %id, error = %e, "SQS message is not an S3 event notification");
                return Some(id);
            }
        };
        let mut failed = false;
        for key in keys {
            match engine.run_until(&key, attempt, deadline).await {
                Ok(JobOutcome::Completed { delivered, already_done }) => {
                    tracing::info!(message_id = %id, job_key = %key, delivered, already_done, "job complete");
                }
                Ok(JobOutcome::DeadLettered { reason }) => {
                    tracing::error!(message_id = %id, job_key = %key, %reason, "job recorded under failed/");
                }
                Ok(JobOutcome::AlreadyFailed) => {}
                Err(JobError::Missing(k)) => tracing::warn!(message_id = %id, job_key = %k, "job object missing; skipped"),
                Err(JobError::Interrupted { progress, .. }) => {
                    tracing::info!(message_id = %id, job_key = %key, attempt, %progress, "stopped at the invocation deadline; the message comes back and the next run continues");
                    failed = true;
                }
                Err(e) => {
                    tracing::warn!(message_id = %id, job_key = %key, attempt, error = %e, "job will be redelivered");
                    failed = true;
                }
            }
        }
        failed.then_some(id)
    });
    let mut response = SqsBatchResponse::default();
    for id in join_all(runs).await.into_iter().flatten() {
        response.add_failure(id);
    }
    Ok(response)
}

/// An S3 ObjectCreated notification as S3 sends it (all fields AWS fills in).
fn s3_notification(bucket: &str, encoded_key: &str) -> serde_json::Value {
    serde_json::json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-22T00:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "local"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "ferry-jobs",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "local"}, "arn": format!("arn:aws:s3:::{bucket}")},
            "object": {"key": encoded_key, "size": 0, "eTag": "", "sequencer": "0"}
        }
    }]})
}

/// The SQS event AWS would deliver for a newly created job object: used by the local runner
/// and tests so they go through the same parsing as production.
pub fn sqs_event_for_job(bucket: &str, job_key: &str, message_id: &str, attempt: u32) -> SqsEvent {
    let encoded: String = url::form_urlencoded::byte_serialize(job_key.as_bytes()).collect();
    let notification = s3_notification(bucket, &encoded.replace("%2F", "/"));
    serde_json::from_value(serde_json::json!({"Records": [{
        "messageId": message_id,
        "body": notification.to_string(),
        "attributes": {"ApproximateReceiveCount": attempt.to_string()},
        "eventSource": "aws:sqs"
    }]}))
    .expect("static SQS event shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthesized_event_round_trips_through_the_parser() {
        let event = sqs_event_for_job("state", "jobs/a route/0123.json", "m", 2);
        let body = event.records[0].body.as_deref().unwrap();
        assert_eq!(
            job_keys(body).unwrap(),
            vec!["jobs/a route/0123.json".to_string()]
        );
        assert_eq!(event.records[0].attributes["ApproximateReceiveCount"], "2");
    }

    #[test]
    fn test_events_and_other_prefixes_are_ignored() {
        assert!(
            job_keys(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#)
                .unwrap()
                .is_empty()
        );
        let other = s3_notification("b", "done/x.json").to_string();
        assert!(job_keys(&other).unwrap().is_empty());
        assert!(job_keys("not json").is_err());
    }
}
