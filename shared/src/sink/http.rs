//! An HTTP endpoint: each record is one JSON `POST` with `Idempotency-Key: RecordID:lastSubmissionId`,
//! so the receiver can skip versions it has applied when a rerun sends them again. The view's
//! name goes in `X-Ferry-View`: a receiver fed by several views scopes its keys by it.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use async_trait::async_trait;
use futures_util::future::try_join_all;
use reqwest::header::HeaderMap;

use super::{Chunk, Sink, SinkError, SinkReceipt};
use crate::http_client::{HttpClass, classify};
use crate::redact::redact_url;
use crate::retry::RetryPolicy;
use crate::view_sync::record::Record;

/// Posts records to one URL, `concurrency` requests at a time.
pub struct HttpSink {
    http: reqwest::Client,
    url: String,
    headers: HeaderMap,
    concurrency: usize,
    retry: RetryPolicy,
}

impl HttpSink {
    /// Builds the sink from its config, resolving its secret headers.
    pub async fn from_config(
        config: &crate::config::HttpSinkConfig,
        secrets: &crate::secret::SecretResolver,
        retry: RetryPolicy,
    ) -> Result<Self, crate::setup::SetupError> {
        let secret_headers = secrets.resolve_headers(&config.secret_headers).await?;
        let http = crate::http_client::build(std::time::Duration::from_secs(config.timeout_secs));
        Self::new(
            http,
            &config.url,
            &config.headers,
            secret_headers,
            config.concurrency,
            retry,
        )
        .map_err(|e| crate::setup::SetupError::Config(e.to_string()))
    }

    /// `secret_headers` are resolved values, marked sensitive so no debug output shows them.
    pub fn new(
        http: reqwest::Client,
        url: &str,
        headers: &BTreeMap<String, String>,
        secret_headers: Vec<(String, secrecy::SecretString)>,
        concurrency: usize,
        retry: RetryPolicy,
    ) -> Result<Self, SinkError> {
        let bad = |m: String| SinkError::Rejected(m);
        let map = crate::http_client::header_map(headers, secret_headers).map_err(bad)?;
        Ok(Self {
            http,
            url: url.to_string(),
            headers: map,
            concurrency: concurrency.max(1),
            retry,
        })
    }

    async fn post(&self, view: &str, record: &Record) -> Result<(), SinkError> {
        let location = redact_url(&self.url);
        let body = serde_json::to_vec(&record.body)
            .map_err(|e| SinkError::Rejected(format!("record {}: {e}", record.record_id)))?;
        let resp = self
            .http
            .post(&self.url)
            .headers(self.headers.clone())
            .header("Idempotency-Key", record.version_key())
            .header("X-Ferry-View", view)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| SinkError::transient(format!("POST {location}: {}", e.without_url())))?;
        match classify(&resp) {
            HttpClass::Success => Ok(()),
            HttpClass::Refused { status } => Err(SinkError::Unauthorized(format!(
                "HTTP {status} from {location}"
            ))),
            HttpClass::Retryable {
                status,
                retry_after,
            } => Err(SinkError::Transient {
                reason: format!("HTTP {status} from {location}"),
                retry_after,
            }),
            HttpClass::Rejected { status } => Err(SinkError::Rejected(format!(
                "HTTP {status} from {location} for record {}",
                record.version_key()
            ))),
        }
    }
}

impl HttpSink {
    /// `ferry check`: a `HEAD` of the URL with the configured headers; unreachable or 401/403
    /// is a problem.
    pub async fn probe(&self) -> crate::probe::ProbeResult {
        crate::http_client::probe_endpoint(&self.http, &self.url, &self.headers).await
    }
}

#[async_trait]
impl Sink for HttpSink {
    fn kind(&self) -> &'static str {
        "http"
    }

    async fn deliver(&self, view: &str, chunk: &Chunk) -> Result<SinkReceipt, SinkError> {
        // One lane per concurrent request; a RecordID always maps to the same lane, so two
        // versions of a record arrive in cursor order.
        let mut lanes: Vec<Vec<&Record>> = vec![Vec::new(); self.concurrency];
        for record in &chunk.records {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            record.record_id.hash(&mut h);
            lanes[(h.finish() % self.concurrency as u64) as usize].push(record);
        }
        try_join_all(lanes.into_iter().map(|lane| async move {
            for record in lane {
                self.retry
                    .run("post record", || self.post(view, record))
                    .await?;
            }
            Ok::<_, SinkError>(())
        }))
        .await?;
        Ok(SinkReceipt {
            location: redact_url(&self.url),
            records: chunk.records.len(),
            applied: chunk.records.len(),
        })
    }
}
