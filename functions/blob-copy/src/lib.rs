//! blob-copy: consumes SQS messages that carry S3 ObjectCreated notifications for `jobs/`, and
//! runs each job with the shared transfer engine. Failed messages are reported individually
//! (ReportBatchItemFailures) so SQS redelivers only those.

use aws_lambda_events::event::s3::S3Event;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use ferry_shared::engine::{JobError, JobOutcome, TransferEngine};
use futures_util::future::join_all;
use lambda_runtime::{Error, LambdaEvent};

/// Job keys named by one SQS message body (an S3 event notification). S3's test event and
/// notifications for other prefixes yield nothing.
pub fn job_keys(body: &str) -> Result<Vec<String>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(body)?;
    if value.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    let event: S3Event = serde_json::from_value(value)?;
    Ok(event
        .records
        .into_iter()
        .filter(|r| {
            r.event_name
                .as_deref()
                .is_none_or(|n| n.starts_with("ObjectCreated"))
        })
        .filter_map(|r| r.s3.object.key)
        .map(|k| decode_key(&k))
        .filter(|k| k.starts_with("jobs/"))
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

/// Runs every job in the batch; returns the messages to redeliver.
pub async fn handle(
    engine: &TransferEngine,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
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
                // Not an S3 notification: nothing to replay, so drop it loudly.
                tracing::error!(message_id = %id, error = %e, "SQS message is not an S3 event notification; dropped");
                return None;
            }
        };
        let mut failed = false;
        for key in keys {
            match engine.run(&key, attempt).await {
                Ok(JobOutcome::Completed { delivered, already_done }) => {
                    tracing::info!(message_id = %id, job_key = %key, delivered, already_done, "job complete");
                }
                Ok(JobOutcome::DeadLettered { reason }) => {
                    tracing::error!(message_id = %id, job_key = %key, %reason, "job recorded under failed/");
                }
                Ok(JobOutcome::AlreadyFailed) => {}
                Err(JobError::Missing(k)) => tracing::warn!(message_id = %id, job_key = %k, "job object missing; skipped"),
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

/// The SQS event AWS would deliver for a newly created job object: used by the local runner
/// and tests so they go through the same parsing as production.
pub fn sqs_event_for_job(bucket: &str, job_key: &str, message_id: &str, attempt: u32) -> SqsEvent {
    let encoded: String = url::form_urlencoded::byte_serialize(job_key.as_bytes()).collect();
    let notification = serde_json::json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": encoded.replace("%2F", "/")}}
    }]});
    serde_json::from_value(serde_json::json!({"Records": [{
        "messageId": message_id,
        "body": notification.to_string(),
        "attributes": {"ApproximateReceiveCount": attempt.to_string()},
        "eventSource": "aws:sqs"
    }]}))
    .expect("static SQS event shape")
}
