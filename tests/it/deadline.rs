//! blob-copy under the Lambda deadline, on real components (Azurite source, moto state and S3
//! destination): a copy that cannot finish in time is stopped before the deadline, reported as a
//! batch item failure with its multipart upload kept open and checkpointed, and the next
//! invocation finishes it without sending the stored parts again. Interrupted runs are never
//! dead-lettered, whatever the attempt count.

use crate::support;

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsBatchResponse;
use ferry_shared::clock::now_ms;
use ferry_shared::engine::TransferEngine;
use ferry_shared::state::StateStoreExt as _;
use lambda_runtime::{Context, LambdaEvent};
use md5::{Digest as _, Md5};
use serde_json::Value;
use support::fault_proxy::{Fault, FaultProxy};
use support::pipeline::{MIB, Options, Pipeline, job_of};

const PART_MIB: u64 = 8;
const MARGIN: Duration = Duration::from_secs(2);

/// Runs blob-copy's handler for one job message, with `deadline_ms` (0: none) in the context.
async fn invoke(
    engine: &TransferEngine,
    p: &Pipeline,
    job_key: &str,
    attempt: u32,
    deadline_ms: u64,
) -> SqsBatchResponse {
    let event = blob_copy::sqs_event_for_job(&p.state_bucket, job_key, "m-deadline", attempt);
    let mut context = Context::default();
    context.deadline = deadline_ms;
    blob_copy::handle(engine, LambdaEvent::new(event, context))
        .await
        .unwrap()
}

fn failed_ids(r: &SqsBatchResponse) -> Vec<String> {
    r.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

/// The captured log lines (JSON) whose fields have `message` and `key`.
fn log_lines(message: &str, key: &str) -> Vec<Value> {
    support::logs::text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == message && l["fields"]["key"] == key)
        .map(|l| l["fields"].clone())
        .collect()
}

/// MD5 hex of an S3 object, streamed.
async fn s3_md5(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<String> {
    let mut body = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .ok()?
        .body;
    let mut h = Md5::new();
    while let Some(chunk) = body.try_next().await.unwrap() {
        h.update(&chunk);
    }
    Some(hex::encode(h.finalize()))
}

/// (part number, ETag) of an open multipart upload. moto answers ListParts with a
/// `ListPartsResponse` root the SDK refuses, so this reads the XML itself (moto does not check
/// signatures).
async fn list_parts(bucket: &str, key: &str, upload_id: &str) -> Vec<(i64, String)> {
    let moto = &ferry_harness::shared().moto;
    let mut url = url::Url::parse(&format!("{}/{bucket}/", moto.endpoint)).unwrap();
    url.path_segments_mut()
        .unwrap()
        .pop_if_empty()
        .extend(key.split('/'));
    url.query_pairs_mut().append_pair("uploadId", upload_id);
    let xml = reqwest::get(url).await.unwrap().text().await.unwrap();
    let tag = |part: &str, name: &str| -> Option<String> {
        let start = part.find(&format!("<{name}>"))? + name.len() + 2;
        let end = part[start..].find(&format!("</{name}>"))? + start;
        Some(
            part[start..end]
                .replace("&#34;", "\"")
                .replace("&quot;", "\""),
        )
    };
    xml.split("<Part>")
        .skip(1)
        .filter_map(|part| Some((tag(part, "PartNumber")?.parse().ok()?, tag(part, "ETag")?)))
        .collect()
}

fn source_md5(seed: u64, len: u64) -> String {
    support::data::digest::<Md5>(seed, len)
}

#[tokio::test]
async fn copy_cut_by_the_deadline_is_reported_in_time_and_resumed_without_resending_parts() {
    let p = Pipeline::new(Options {
        source_proxy: Some(FaultProxy::start(ferry_harness::shared().azurite.port).await),
        all_route_destinations: Some(vec!["s3"]),
        part_size_mib: Some(PART_MIB),
        ..Default::default()
    })
    .await;
    let engine = p.copy.engine().await.unwrap().with_deadline_margin(MARGIN);
    let (name, seed, len) = ("deadline big.bin", 41u64, 256 * MIB);
    let total_parts = len / (PART_MIB * MIB);
    let source_sha = p.upload(name, seed, len).await;
    let (status, answer) = p.notify(name).await;
    assert_eq!(status, 202, "{answer}");
    let (job_id, job_key) = job_of(&answer, "all");
    let s3_key = format!("clienttrack/{name}");
    let s3 = support::moto_s3().await;

    // First invocation: the source is read at 32 MiB/s (256 MiB would take 8 s), the deadline is
    // 6 s away: four parallel range streams (the source's default), each connection at 8 MiB/s.
    // Run at the last attempt SQS allows: an interruption must not dead-letter.
    p._proxies[0].plan(std::iter::repeat_n(Fault::Throttle(8 * MIB), 4));
    let deadline_ms = now_ms() + 6_000;
    let response = invoke(&engine, &p, &job_key, 3, deadline_ms).await;
    let returned_ms = now_ms();
    assert!(
        returned_ms < deadline_ms,
        "the handler returned {} ms after the deadline",
        returned_ms - deadline_ms
    );
    assert_eq!(
        failed_ids(&response),
        vec!["m-deadline".to_string()],
        "the interrupted message is a batch item failure"
    );
    assert!(p.receipts(&job_id).await.is_empty(), "no receipt yet");
    assert!(p.failure(&job_id).await.is_none(), "not dead-lettered");
    assert!(
        s3.head_object()
            .bucket(&p.archive_bucket)
            .key(&s3_key)
            .send()
            .await
            .is_err(),
        "nothing visible at the final key"
    );
    let progress_key = ferry_shared::layout::progress_key(&job_id, "s3");
    let (progress, _) = p
        .copy
        .state
        .get_json::<Value>(&progress_key)
        .await
        .unwrap()
        .expect("the progress checkpoint is kept");
    let checkpoint_parts = progress["parts"].as_array().unwrap().clone();
    assert!(
        !checkpoint_parts.is_empty() && (checkpoint_parts.len() as u64) < total_parts,
        "checkpoint holds some of the {total_parts} parts: {progress}"
    );
    let uploads = s3
        .list_multipart_uploads()
        .bucket(&p.archive_bucket)
        .send()
        .await
        .unwrap();
    let open: Vec<_> = uploads
        .uploads()
        .iter()
        .filter(|u| u.key() == Some(s3_key.as_str()))
        .collect();
    assert_eq!(open.len(), 1, "the multipart upload stays open");
    assert_eq!(open[0].upload_id(), progress["upload_id"].as_str());
    // Every checkpointed part is in S3 with the recorded ETag.
    let stored = list_parts(&p.archive_bucket, &s3_key, open[0].upload_id().unwrap()).await;
    for part in &checkpoint_parts {
        let number = part["number"].as_i64().unwrap();
        let etag = stored
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, etag)| etag.as_str())
            .unwrap_or_else(|| panic!("checkpointed part {number} is not in S3: {stored:?}"));
        assert_eq!(Some(etag), part["etag"].as_str(), "part {number}");
    }
    let stopped = log_lines(
        "multipart upload stopped at the deadline; left open for the next run",
        &s3_key,
    );
    assert_eq!(stopped.len(), 1, "{stopped:?}");

    // Second invocation, no deadline: finishes from the checkpoint.
    let response = invoke(&engine, &p, &job_key, 4, 0).await;
    assert!(failed_ids(&response).is_empty(), "the second run completes");
    let receipts = p.receipts(&job_id).await;
    assert_eq!(receipts["s3"].bytes, len);
    assert_eq!(receipts["s3"].sha256, source_sha);
    assert_eq!(
        s3_md5(&s3, &p.archive_bucket, &s3_key).await,
        Some(source_md5(seed, len)),
        "the object is byte-identical to the source"
    );
    let complete = log_lines("multipart upload complete", &s3_key);
    assert_eq!(complete.len(), 1, "{complete:?}");
    let resumed = complete[0]["parts_resumed"].as_u64().unwrap();
    let sent = complete[0]["parts_sent"].as_u64().unwrap();
    assert!(
        resumed >= checkpoint_parts.len() as u64,
        "resumed {resumed} parts, the checkpoint held {}",
        checkpoint_parts.len()
    );
    assert_eq!(resumed + sent, total_parts, "{complete:?}");
    assert!(
        sent < total_parts,
        "the second run sent every part again ({sent})"
    );
    println!(
        "first run returned {} ms before the deadline with {} of {total_parts} parts checkpointed; \
         second run resumed {resumed} parts and sent {sent}",
        deadline_ms - returned_ms,
        checkpoint_parts.len()
    );
    assert!(
        p.copy.state.get(&progress_key).await.unwrap().is_none(),
        "checkpoint removed after completion"
    );
    let uploads = s3
        .list_multipart_uploads()
        .bucket(&p.archive_bucket)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "no multipart upload left");
    p.assert_logs_clean();
}

#[tokio::test]
async fn a_job_too_close_to_the_deadline_is_not_started_nor_dead_lettered() {
    let p = Pipeline::new(Options {
        all_route_destinations: Some(vec!["s3"]),
        ..Default::default()
    })
    .await;
    let engine = p.copy.engine().await.unwrap().with_deadline_margin(MARGIN);
    p.upload("late.csv", 42, 1000).await;
    let (_, answer) = p.notify("late.csv").await;
    let (job_id, job_key) = job_of(&answer, "all");
    // Less than the margin left, far beyond max_attempts (3): redelivered, never dead-lettered.
    for attempt in [3, 10] {
        let response = invoke(&engine, &p, &job_key, attempt, now_ms() + 1_000).await;
        assert_eq!(failed_ids(&response), vec!["m-deadline".to_string()]);
        assert!(p.failure(&job_id).await.is_none(), "attempt {attempt}");
        assert!(p.receipts(&job_id).await.is_empty(), "attempt {attempt}");
    }
    // With time left the same job is delivered.
    let response = invoke(&engine, &p, &job_key, 11, now_ms() + 60_000).await;
    assert!(failed_ids(&response).is_empty());
    assert_eq!(p.receipts(&job_id).await.len(), 1);
}
