//! An S3 bucket of JSON Lines: one object per chunk, one record per line.
//!
//! Keys are `<prefix><view>/after-<watermark>.jsonl` (`from-start.jsonl` before the first
//! watermark), i.e. named by where the chunk *starts*, not where it ends. A rerun after a failure
//! starts after the same saved watermark, so it writes the same key and replaces whatever the
//! failed run left there, even when its chunk ends elsewhere (more records arrived, or fewer
//! because some were updated to a later cursor). Only the last chunk of a failed run can be
//! unacknowledged (the watermark advances after every chunk), so that one object is the only one
//! a rerun must replace, and it does. Objects cover disjoint cursor ranges: `after-W` holds
//! cursors in `(W, W']` where `W'` is the next object's name; no record is in two objects.

use crate::digest::Md5;
use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;

use super::{Chunk, Sink, SinkError, SinkReceipt};
use crate::s3::{S3Failure, classify};

/// Writes chunk objects into a bucket under a prefix.
pub struct S3JsonlSink {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3JsonlSink {
    /// Builds the sink from its config (the client is built here, once).
    pub async fn from_config(config: &crate::config::S3JsonlConfig) -> Self {
        Self::new(
            crate::s3::client(&config.endpoint).await,
            &config.bucket,
            &config.prefix,
        )
    }

    /// `ferry check`: the bucket exists and these credentials may use it.
    pub async fn probe(&self) -> crate::probe::ProbeResult {
        crate::s3::probe_bucket(&self.client, &self.bucket).await
    }

    /// A sink over a client built once at cold start.
    pub fn new(client: aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Self {
        Self {
            client,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }
    }

    /// The key of the chunk of `view` that starts after `chunk.after`.
    pub fn key(&self, view: &str, chunk: &Chunk) -> String {
        let name = match &chunk.after {
            None => "from-start.jsonl".to_string(),
            Some(w) => format!("after-{}.jsonl", w.padded()),
        };
        format!("{}{view}/{name}", self.prefix)
    }
}

#[async_trait]
impl Sink for S3JsonlSink {
    fn kind(&self) -> &'static str {
        "s3_jsonl"
    }

    async fn deliver(&self, view: &str, chunk: &Chunk) -> Result<SinkReceipt, SinkError> {
        let key = self.key(view, chunk);
        let mut body = Vec::new();
        for record in &chunk.records {
            serde_json::to_writer(&mut body, &record.body)
                .map_err(|e| SinkError::Rejected(format!("record {}: {e}", record.record_id)))?;
            body.push(b'\n');
        }
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
        let last = chunk
            .last_cursor()
            .map(ToString::to_string)
            .unwrap_or_default();
        let after = chunk
            .after
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/x-ndjson")
            .content_md5(md5)
            .content_length(body.len() as i64)
            .metadata("ferry-view", view)
            .metadata("ferry-after", after)
            .metadata("ferry-last", last)
            .metadata("ferry-records", chunk.records.len().to_string())
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| match classify(&e) {
                S3Failure::Transient(t) => SinkError::transient(format!("PutObject {key}: {t}")),
                S3Failure::Permanent(t)
                    if t.contains("AccessDenied") || t.contains("InvalidAccessKeyId") =>
                {
                    SinkError::Unauthorized(format!("PutObject {key}: {t}"))
                }
                f => SinkError::Rejected(format!("PutObject {key}: {f:?}")),
            })?;
        Ok(SinkReceipt {
            location: format!("s3://{}/{key}", self.bucket),
            records: chunk.records.len(),
            applied: chunk.records.len(),
        })
    }
}
