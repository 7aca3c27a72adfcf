//! Scheduled incremental view sync (Flowfinity-style REST views).
//!
//! One run of one view:
//! 1. take the view's lease (`leases/view-sync-<view>.json`); if another run holds it, stop and
//!    say who (`SyncOutcome::LeaseHeld`); when that run is past its expected run time (it has
//!    not renewed the lease for three quarters of its TTL: it died or is stuck), say so at warn
//!    with the holder and the lease's age (`SyncOutcome::LeaseStale`): nothing syncs until the
//!    lease expires, and a scheduler must see that;
//! 2. read the watermark (`watermarks/<view>.json`: value + ETag; absent = read everything);
//! 3. `GET <url>?onbehalfof=<user>&previouslastsubmissionid=<watermark or empty>` with HTTP Basic
//!    auth, and split the JSON array as it streams in (never the whole response in memory);
//! 4. deliver the records to the sink in chunks of `chunk_size`, and after each delivered chunk
//!    advance the watermark to the chunk's last cursor by compare-and-swap (never backwards); a
//!    chunk that fails stops the run with the watermark at the previous chunk; a response cut
//!    off mid-body (reset, read timeout) is not a failure of the view: once the chunks read
//!    before the cut are delivered, the same run asks again (the GET is idempotent) from the
//!    watermark it saved, within the retry policy (tries, backoff, budget), so nothing is
//!    delivered twice and nothing is skipped;
//! 5. release the lease.
//!
//! Ordering rule: the view promises ascending `lastSubmissionId`. The watermark is only correct
//! if it is: a record below an already-saved watermark would be skipped by every later request.
//! So a record whose cursor is *lower* than the one before it stops the run loudly
//! (`SyncFailure::OutOfOrder`) before the chunk holding it is delivered; sorting within a chunk
//! would hide a view that is not sorted and lose records across chunk boundaries. Equal cursors are
//! fine, and a chunk never ends between two records with the same cursor (it grows past
//! `chunk_size` instead), because the next request asks only for cursors *greater* than the
//! watermark. Records at or below the watermark the run asked with are skipped (counted), in
//! case a view ignores the parameter.

pub mod lease;
pub mod record;
pub mod splitter;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use secrecy::SecretString;
use serde::Serialize;
use thiserror::Error;
use tracing::Instrument;

use crate::config::ViewConfig;
use crate::http_client::HttpClass;
use crate::layout::lease_key;
use crate::redact::redact_url;
use crate::retry::{RetryPolicy, RetryStop, Retryable, status_is_retryable};
use crate::sink::{Chunk, Sink, SinkError};
use crate::state::{StateError, StateStore};
use lease::{Acquired, Lease, WatermarkState, advance_watermark, read_watermark};
use record::{Cursor, Record, RecordError};
use splitter::{ArraySplitter, SplitError};

/// How a run of one view ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SyncOutcome {
    /// The run read the view to its end and delivered everything new.
    Synced(SyncReport),
    /// Another run holds the view's lease; this one did nothing.
    LeaseHeld {
        /// The view.
        view: String,
        /// The run that holds the lease.
        holder: String,
        /// RFC 3339 time the lease expires unless renewed.
        expires_at: String,
    },
    /// Another run holds the view's lease but is past its expected run time (it has not renewed
    /// the lease for three quarters of its TTL): it died or is stuck, and nothing syncs until
    /// the lease expires. Not a success: the function reports it as a failure.
    LeaseStale {
        /// The view.
        view: String,
        /// The run that holds the lease.
        holder: String,
        /// Seconds since the holder took the lease (`None`: not recorded by the holder).
        age_secs: Option<u64>,
        /// Seconds since the holder last renewed it.
        silent_secs: u64,
        /// RFC 3339 time the lease expires.
        expires_at: String,
    },
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// The view.
    pub view: String,
    /// Records delivered to the sink.
    pub records: u64,
    /// Chunks delivered (one watermark update each).
    pub chunks: u64,
    /// Records at or below the watermark the view returned anyway (not delivered again).
    pub skipped: u64,
    /// Watermark before the run.
    pub watermark_before: Option<Cursor>,
    /// Watermark after the run (the last delivered chunk's last cursor).
    pub watermark_after: Option<Cursor>,
    /// Wall time of the run.
    pub duration_ms: u64,
}

/// Why a run stopped early. Whatever was delivered before is covered by the saved watermark.
#[derive(Debug, Error)]
#[error("view {view}: {failure} (this run delivered {delivered} records; watermark {})", watermark.as_ref().map_or("none".to_string(), |w| w.to_string()))]
pub struct SyncError {
    /// The view.
    pub view: String,
    /// What went wrong.
    pub failure: SyncFailure,
    /// Records this run delivered before stopping.
    pub delivered: u64,
    /// The watermark when it stopped.
    pub watermark: Option<Cursor>,
}

/// What went wrong in a run.
#[derive(Debug, Error)]
pub enum SyncFailure {
    /// The view is not in the config.
    #[error("no such view in the config")]
    UnknownView,
    /// The state store failed (watermark or lease).
    #[error("state store: {0}")]
    State(#[from] StateError),
    /// The view refused the credentials (401/403).
    #[error("the view refused the credentials (HTTP {status}): check the username and password")]
    Unauthorized {
        /// The HTTP status.
        status: u16,
    },
    /// The view answered an HTTP error.
    #[error("the view answered HTTP {status} ({url})")]
    ViewHttp {
        /// The HTTP status.
        status: u16,
        /// The URL, without credentials.
        url: String,
        /// How long the server asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The view did not answer in time.
    #[error("the view did not answer within {secs} s")]
    Timeout {
        /// The timeout, in seconds.
        secs: u64,
    },
    /// The connection failed or broke.
    #[error("cannot read the view: {0}")]
    Transport(String),
    /// The response is not a JSON array of records.
    #[error("the view's response is not a JSON array of records: {0}")]
    Malformed(#[from] SplitError),
    /// A record is unusable.
    #[error("record {index} of the response refused: {reason}")]
    InvalidRecord {
        /// Position of the record in the response, from 0.
        index: u64,
        /// What happened (secret-free).
        reason: RecordError,
    },
    #[error(
        "records out of order: record {index} (RecordID {record_id}) has lastSubmissionId {found} after {previous}; \
         the view must be sorted ascending by lastSubmissionId, so nothing from this chunk on was delivered"
    )]
    /// A record came after one with a higher lastSubmissionId.
    OutOfOrder {
        /// Position of the record in the response, from 0.
        index: u64,
        /// Its RecordID.
        record_id: String,
        /// Its lastSubmissionId.
        found: Cursor,
        /// The lastSubmissionId of the record before it.
        previous: Cursor,
    },
    /// The sink failed.
    #[error("sink {sink} failed: {error}")]
    Sink {
        /// The sink.
        sink: String,
        /// The underlying error.
        error: SinkError,
    },
    /// Another run took the lease.
    #[error("lost the lease to another run; stopped before the next chunk")]
    LeaseLost,
}

impl SyncFailure {
    /// The failure's kind as a metric dimension (`Kind` of `ViewSyncFailures`).
    pub fn kind(&self) -> &'static str {
        match self {
            SyncFailure::UnknownView => "unknown_view",
            SyncFailure::State(_) => "state",
            SyncFailure::Unauthorized { .. } => "unauthorized",
            SyncFailure::ViewHttp { .. } => "view_http",
            SyncFailure::Timeout { .. } => "timeout",
            SyncFailure::Transport(_) => "transport",
            SyncFailure::Malformed(_) => "malformed",
            SyncFailure::InvalidRecord { .. } => "invalid_record",
            SyncFailure::OutOfOrder { .. } => "out_of_order",
            SyncFailure::Sink { .. } => "sink",
            SyncFailure::LeaseLost => "lease_lost",
        }
    }
}

/// Counts a run of `view`: records synced and skipped (also those delivered before a failure),
/// failures by kind, and a stale lease as a failure of kind `lease_stale`.
fn record_metrics(view: &str, result: &Result<SyncOutcome, SyncError>) {
    use crate::metrics::{Unit, add};
    let dims = [("View", view)];
    match result {
        Ok(SyncOutcome::Synced(report)) => {
            add(
                "ViewRecordsSynced",
                Unit::Count,
                report.records as f64,
                &dims,
            );
            add(
                "ViewRecordsSkipped",
                Unit::Count,
                report.skipped as f64,
                &dims,
            );
        }
        Ok(SyncOutcome::LeaseHeld { .. }) => {}
        Ok(SyncOutcome::LeaseStale { .. }) => add(
            "ViewSyncFailures",
            Unit::Count,
            1.0,
            &[("View", view), ("Kind", "lease_stale")],
        ),
        Err(e) => {
            add("ViewRecordsSynced", Unit::Count, e.delivered as f64, &dims);
            add(
                "ViewSyncFailures",
                Unit::Count,
                1.0,
                &[("View", view), ("Kind", e.failure.kind())],
            );
        }
    }
}

impl Retryable for SyncFailure {
    fn is_retryable(&self) -> bool {
        match self {
            SyncFailure::State(e) => e.is_retryable(),
            SyncFailure::ViewHttp { status, .. } => status_is_retryable(*status),
            SyncFailure::Timeout { .. } | SyncFailure::Transport(_) => true,
            SyncFailure::Sink { error, .. } => error.is_retryable(),
            _ => false,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            SyncFailure::ViewHttp { retry_after, .. } => *retry_after,
            SyncFailure::Sink { error, .. } => error.retry_after(),
            _ => None,
        }
    }
    fn retries_stopped(self, why: RetryStop) -> Self {
        match self {
            SyncFailure::State(e) => SyncFailure::State(e.retries_stopped(why)),
            SyncFailure::Sink { sink, error } => SyncFailure::Sink {
                sink,
                error: error.retries_stopped(why),
            },
            SyncFailure::Transport(reason) => SyncFailure::Transport(format!("{reason} ({why})")),
            // No reason text to extend; the retry policy logs `why` beside the error.
            other => other,
        }
    }
}

impl Retryable for SyncError {
    fn is_retryable(&self) -> bool {
        self.failure.is_retryable()
    }
    fn retry_after(&self) -> Option<Duration> {
        self.failure.retry_after()
    }
    fn retries_stopped(self, why: RetryStop) -> Self {
        Self {
            failure: self.failure.retries_stopped(why),
            ..self
        }
    }
}

/// One configured view with its resolved credentials, client and sink.
pub struct ViewSource {
    /// The view's config.
    pub config: ViewConfig,
    /// HTTP Basic auth password.
    pub password: SecretString,
    /// Client with the view's timeouts.
    pub http: reqwest::Client,
    /// The sink the records go to.
    pub sink: Arc<dyn Sink>,
}

/// Syncs views. Built once per cold start (`Services::view_sync`).
pub struct ViewSync {
    state: Arc<dyn StateStore>,
    views: BTreeMap<String, ViewSource>,
    retry: RetryPolicy,
    instance: String,
}

/// Where a run is.
struct Progress {
    watermark: WatermarkState,
    /// Cursor the next chunk starts after (the last delivered chunk's last cursor).
    position: Option<Cursor>,
    report: SyncReport,
}

impl ViewSync {
    /// An engine over the state store; `instance` names this process in lease holders.
    pub fn new(state: Arc<dyn StateStore>, retry: RetryPolicy, instance: &str) -> Self {
        Self {
            state,
            views: BTreeMap::new(),
            retry,
            instance: instance.to_string(),
        }
    }

    /// Adds a view under `name`.
    pub fn add_view(&mut self, name: &str, view: ViewSource) {
        self.views.insert(name.to_string(), view);
    }

    /// The configured view names, in order.
    pub fn view_names(&self) -> Vec<String> {
        self.views.keys().cloned().collect()
    }

    /// Runs one sync of `name`.
    pub async fn sync(&self, name: &str) -> Result<SyncOutcome, SyncError> {
        crate::metrics::invocation("view-sync", async {
            let result = self.sync_once(name).await;
            record_metrics(name, &result);
            result
        })
        .await
    }

    async fn sync_once(&self, name: &str) -> Result<SyncOutcome, SyncError> {
        let fail = |failure| SyncError {
            view: name.to_string(),
            failure,
            delivered: 0,
            watermark: None,
        };
        let view = self
            .views
            .get(name)
            .ok_or_else(|| fail(SyncFailure::UnknownView))?;
        let run_id = format!("{:016x}", rand::random::<u64>());
        let holder = format!("{}/{run_id}", self.instance);
        let span = tracing::info_span!("view_sync", view = name, run_id = %run_id);
        async {
            let ttl = Duration::from_secs(view.config.lease_secs);
            let state = self.state.as_ref();
            let mut lease =
                match Lease::acquire(state, &self.retry, &lease_key(name), &holder, ttl).await {
                    Ok(Acquired::Held(lease)) => lease,
                    Ok(Acquired::Busy {
                        holder,
                        expires_at_ms,
                        acquired_at_ms,
                        stale,
                    }) => {
                        let expires_at = humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + Duration::from_millis(expires_at_ms),
                        )
                        .to_string();
                        if stale {
                            let now = crate::clock::now_ms();
                            let renewed_ms = expires_at_ms.saturating_sub(ttl.as_millis() as u64);
                            let silent_secs = now.saturating_sub(renewed_ms) / 1000;
                            let age_secs = (acquired_at_ms > 0)
                                .then(|| now.saturating_sub(acquired_at_ms) / 1000);
                            tracing::warn!(
                                %holder,
                                age_secs,
                                silent_secs,
                                %expires_at,
                                "view lease held past its holder's expected run time: the holder died or is stuck; nothing syncs until the lease expires"
                            );
                            return Ok(SyncOutcome::LeaseStale {
                                view: name.to_string(),
                                holder,
                                age_secs,
                                silent_secs,
                                expires_at,
                            });
                        }
                        tracing::info!(%holder, %expires_at, "lease held by another run; nothing to do");
                        return Ok(SyncOutcome::LeaseHeld {
                            view: name.to_string(),
                            holder,
                            expires_at,
                        });
                    }
                    Err(e) => return Err(fail(SyncFailure::State(e))),
                };
            let started = Instant::now();
            let mut progress = Progress {
                watermark: WatermarkState::default(),
                position: None,
                report: SyncReport {
                    view: name.to_string(),
                    ..SyncReport::default()
                },
            };
            let result = self.run(name, view, &mut lease, &mut progress).await;
            lease.release(state, &self.retry).await;
            let mut report = progress.report;
            report.watermark_after = progress.watermark.value.clone();
            if let Some(at) = progress.watermark.updated_at {
                let age = std::time::SystemTime::now()
                    .duration_since(at)
                    .unwrap_or_default();
                crate::metrics::sample(
                    "WatermarkAge",
                    crate::metrics::Unit::Seconds,
                    age.as_secs() as f64,
                    &[("View", name)],
                );
            }
            report.duration_ms = started.elapsed().as_millis() as u64;
            match result {
                Ok(()) => {
                    tracing::info!(
                        records = report.records,
                        chunks = report.chunks,
                        skipped = report.skipped,
                        watermark_before = report.watermark_before.as_ref().map(Cursor::as_str),
                        watermark_after = report.watermark_after.as_ref().map(Cursor::as_str),
                        ms = report.duration_ms,
                        "view synced"
                    );
                    Ok(SyncOutcome::Synced(report))
                }
                Err(failure) => {
                    let e = SyncError {
                        view: name.to_string(),
                        failure,
                        delivered: report.records,
                        watermark: report.watermark_after,
                    };
                    tracing::error!(error = %e, retryable = e.is_retryable(), "view sync failed");
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn run(
        &self,
        name: &str,
        view: &ViewSource,
        lease: &mut Lease,
        progress: &mut Progress,
    ) -> Result<(), SyncFailure> {
        let state = self.state.as_ref();
        progress.watermark = read_watermark(state, &self.retry, name).await?;
        let asked = progress.watermark.value.clone();
        progress.position = asked.clone();
        progress.report.watermark_before = asked;
        // Each pass reads from the watermark saved so far; a pass whose response was cut off
        // mid-body runs again (only that: the request's own retries already happened in it).
        let run = tokio::sync::Mutex::new((lease, &mut *progress));
        self.retry
            .run("read the view again after a cut-off response", || async {
                let mut guard = run.lock().await;
                let (lease, progress) = &mut *guard;
                self.pass(name, view, lease, progress).await
            })
            .await
            .map_err(|e| e.failure)?;
        if progress.report.skipped > 0 {
            tracing::warn!(
                skipped = progress.report.skipped,
                "the view returned records at or below the watermark it was asked for; they were not delivered again"
            );
        }
        Ok(())
    }

    /// Reads the view once from the saved watermark (`progress.position`) and delivers what it
    /// returns, chunk by chunk.
    async fn pass(
        &self,
        name: &str,
        view: &ViewSource,
        lease: &mut Lease,
        progress: &mut Progress,
    ) -> Result<(), PassError> {
        let asked = progress.position.clone();
        let response = self
            .fetch(view, asked.as_ref())
            .await
            .map_err(PassError::fatal)?;
        // The next chunk is read and parsed while the previous one is being delivered: a
        // one-slot channel keeps at most three chunks in memory (building, queued, delivering)
        // and chunks are delivered strictly in order, each before the watermark moves past it.
        let (chunks, mut queued) = tokio::sync::mpsc::channel::<Vec<Record>>(1);
        let reading = read_chunks(view, response, asked.as_ref(), chunks);
        let delivered_progress = &mut *progress;
        let delivering = async move {
            // On a failure `queued` is dropped here, which stops the reader at its next chunk.
            while let Some(records) = queued.recv().await {
                self.deliver(name, view, lease, records, delivered_progress)
                    .await
                    .map_err(PassError::fatal)?;
            }
            Ok::<_, PassError>(())
        };
        // A delivery failure ends the run at once (the reader is dropped mid-response); a read
        // failure (bad record, out of order, cut connection) first lets the chunks handed over
        // before it be delivered.
        let read = {
            tokio::pin!(reading, delivering);
            tokio::select! {
                delivered = &mut delivering => {
                    delivered?;
                    reading.await
                }
                read = &mut reading => {
                    delivering.await?;
                    read
                }
            }
        };
        match read {
            Ok(skipped) | Err(ReadStop::DeliveryStopped { skipped }) => {
                progress.report.skipped += skipped;
                Ok(())
            }
            Err(ReadStop::Failed(failure)) => Err(PassError::fatal(failure)),
            Err(ReadStop::Cut { failure, skipped }) => {
                progress.report.skipped += skipped;
                tracing::warn!(
                    error = %failure,
                    watermark = progress.position.as_ref().map(Cursor::as_str),
                    delivered = progress.report.records,
                    "view response cut off mid-body; the chunks read before the cut are delivered, the rest is asked for again from the saved watermark"
                );
                Err(PassError { failure, cut: true })
            }
        }
    }

    /// Delivers one chunk, then moves the watermark to its last cursor.
    async fn deliver(
        &self,
        name: &str,
        view: &ViewSource,
        lease: &mut Lease,
        records: Vec<Record>,
        progress: &mut Progress,
    ) -> Result<(), SyncFailure> {
        let state = self.state.as_ref();
        lease.keep(state, &self.retry).await.map_err(|e| match e {
            StateError::PreconditionFailed { .. } => SyncFailure::LeaseLost,
            e => SyncFailure::State(e),
        })?;
        let chunk = Chunk {
            after: progress.position.clone(),
            records,
        };
        let last = chunk
            .last_cursor()
            .cloned()
            .expect("chunks are never empty");
        let receipt = self
            .retry
            .run("deliver chunk", || view.sink.deliver(name, &chunk))
            .await
            .map_err(|error| SyncFailure::Sink {
                sink: view.config.sink.clone(),
                error,
            })?;
        advance_watermark(
            state,
            &self.retry,
            name,
            &last,
            lease.holder(),
            &mut progress.watermark,
        )
        .await?;
        progress.position = Some(last.clone());
        progress.report.records += chunk.records.len() as u64;
        progress.report.chunks += 1;
        tracing::info!(
            sink = %view.config.sink,
            location = %receipt.location,
            records = receipt.records,
            applied = receipt.applied,
            after = chunk.after.as_ref().map(Cursor::as_str),
            watermark = %last,
            "chunk delivered"
        );
        Ok(())
    }

    /// Sends the view request (retrying 5xx, 429, timeouts) and returns the response whose body
    /// is the record array.
    async fn fetch(
        &self,
        view: &ViewSource,
        after: Option<&Cursor>,
    ) -> Result<reqwest::Response, SyncFailure> {
        let mut url = url::Url::parse(&view.config.url)
            .map_err(|e| SyncFailure::Transport(format!("bad view url: {e}")))?;
        url.query_pairs_mut()
            .append_pair("onbehalfof", &view.config.on_behalf_of)
            .append_pair("previouslastsubmissionid", after.map_or("", Cursor::as_str));
        let shown = redact_url(url.as_str());
        let secs = view.config.timeout_secs;
        tracing::info!(url = %shown, "reading view");
        self.retry
            .run("read view", || async {
                let response = view
                    .http
                    .get(url.clone())
                    .basic_auth(
                        &view.config.username,
                        Some(crate::secret::expose(&view.password)),
                    )
                    .header(reqwest::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| transport(&e, secs))?;
                match crate::http_client::classify(&response) {
                    HttpClass::Success => Ok(response),
                    HttpClass::Refused { status } => Err(SyncFailure::Unauthorized { status }),
                    HttpClass::Retryable {
                        status,
                        retry_after,
                    } => Err(SyncFailure::ViewHttp {
                        status,
                        url: shown.clone(),
                        retry_after,
                    }),
                    HttpClass::Rejected { status } => Err(SyncFailure::ViewHttp {
                        status,
                        url: shown.clone(),
                        retry_after: None,
                    }),
                }
            })
            .await
    }
}

/// `ferry check` for view `name`: one request as a sync would send it (Basic auth,
/// `onbehalfof`, the saved watermark so the answer is only what is new), judged by its status
/// alone; the body is not read. 401/403, 404, other failures and an unreachable host are
/// problems. The watermark is read from `state` when it can be; without it the view is asked
/// from its beginning (still only the status is read).
pub async fn probe_view(
    name: &str,
    config: &ViewConfig,
    password: &SecretString,
    state: &dyn StateStore,
    retry: &RetryPolicy,
) -> crate::probe::ProbeResult {
    use crate::probe::Problem;
    let after = read_watermark(state, retry, name)
        .await
        .ok()
        .and_then(|w| w.value);
    let mut url = url::Url::parse(&config.url)
        .map_err(|e| Problem::new(format!("bad view url: {e}"), "correct url"))?;
    url.query_pairs_mut()
        .append_pair("onbehalfof", &config.on_behalf_of)
        .append_pair(
            "previouslastsubmissionid",
            after.as_ref().map_or("", Cursor::as_str),
        );
    let shown = redact_url(config.url.as_str());
    let http = crate::http_client::build(Duration::from_secs(config.timeout_secs));
    let response = http
        .get(url)
        .basic_auth(&config.username, Some(crate::secret::expose(password)))
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| {
            Problem::new(
                format!(
                    "{shown} is unreachable: {}",
                    crate::http_client::describe_transport(e)
                ),
                "check url, and that this machine can reach the view's server",
            )
        })?;
    let status = response.status().as_u16();
    drop(response);
    match status {
        200..=299 => Ok(()),
        401 | 403 => Err(Problem::new(
            format!(
                "the view refused user {:?} (HTTP {status}) at {shown}",
                config.username
            ),
            "check username and the password secret, and that this user may read the view on behalf of on_behalf_of",
        )),
        404 => Err(Problem::new(
            format!("view not found (HTTP 404) at {shown}"),
            "check url: the view's REST URL as the application shows it (the view may have been renamed or deleted)",
        )),
        s => Err(Problem::new(
            format!("the view answered HTTP {s} at {shown}"),
            "check url and on_behalf_of; try again later if the server is failing",
        )),
    }
}

/// Why reading the view stopped early.
enum ReadStop {
    /// Delivery failed and dropped its end of the channel; `skipped` records were counted so far.
    DeliveryStopped { skipped: u64 },
    /// The connection broke (reset, read timeout) after the response began: the view is not at
    /// fault and the same request can be sent again.
    Cut { failure: SyncFailure, skipped: u64 },
    /// The response could not be read or broke the rules.
    Failed(SyncFailure),
}

/// Why one pass over the view ended early; only a cut-off response is worth another pass.
struct PassError {
    failure: SyncFailure,
    cut: bool,
}

impl PassError {
    fn fatal(failure: SyncFailure) -> Self {
        Self {
            failure,
            cut: false,
        }
    }
}

impl std::fmt::Display for PassError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.failure.fmt(f)
    }
}

impl Retryable for PassError {
    fn is_retryable(&self) -> bool {
        self.cut
    }
    fn retries_stopped(self, why: RetryStop) -> Self {
        Self {
            failure: self.failure.retries_stopped(why),
            ..self
        }
    }
}

impl From<SyncFailure> for ReadStop {
    fn from(failure: SyncFailure) -> Self {
        ReadStop::Failed(failure)
    }
}

impl From<SplitError> for ReadStop {
    fn from(e: SplitError) -> Self {
        ReadStop::Failed(e.into())
    }
}

/// Splits the view's response into chunks of `chunk_size` records (never between two equal
/// cursors) and hands them to `chunks` in order; returns the number of records skipped as at or
/// below `asked`.
async fn read_chunks(
    view: &ViewSource,
    response: reqwest::Response,
    asked: Option<&Cursor>,
    chunks: tokio::sync::mpsc::Sender<Vec<Record>>,
) -> Result<u64, ReadStop> {
    let secs = view.config.timeout_secs;
    let mut body = response.bytes_stream();
    let mut splitter = ArraySplitter::new(view.config.max_record_bytes);
    let chunk_size = view.config.chunk_size;
    let mut pending: Vec<Record> = Vec::with_capacity(chunk_size.min(10_000));
    let mut ready: Vec<(u64, Record)> = Vec::new();
    let mut last: Option<Cursor> = None;
    let mut skipped = 0;
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| ReadStop::Cut {
            failure: transport(&e, secs),
            skipped,
        })?;
        let mut index = splitter.elements();
        splitter.feed(&piece, |bytes| {
            index += 1;
            let record = Record::from_json(bytes)
                .map_err(|reason| SyncFailure::InvalidRecord { index, reason })?;
            ready.push((index, record));
            Ok::<_, SyncFailure>(())
        })?;
        for (index, record) in ready.drain(..) {
            if asked.is_some_and(|w| record.cursor <= *w) {
                skipped += 1;
                continue;
            }
            if let Some(previous) = &last
                && record.cursor < *previous
            {
                return Err(SyncFailure::OutOfOrder {
                    index,
                    record_id: record.record_id,
                    found: record.cursor,
                    previous: previous.clone(),
                }
                .into());
            }
            if pending.len() >= chunk_size && last.as_ref() != Some(&record.cursor) {
                let records = std::mem::replace(&mut pending, Vec::with_capacity(chunk_size));
                if chunks.send(records).await.is_err() {
                    return Err(ReadStop::DeliveryStopped { skipped });
                }
            }
            last = Some(record.cursor.clone());
            pending.push(record);
        }
    }
    splitter.finish()?;
    if !pending.is_empty() && chunks.send(pending).await.is_err() {
        return Err(ReadStop::DeliveryStopped { skipped });
    }
    Ok(skipped)
}

fn transport(e: &reqwest::Error, secs: u64) -> SyncFailure {
    if e.is_timeout() {
        return SyncFailure::Timeout { secs };
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    SyncFailure::Transport(crate::redact::redact_embedded_urls(&text))
}

#[cfg(test)]
mod tests {
    //! The fast tier of view sync: the memory store, a memory sink and an in-process fake view
    //! (`tests/support/view.rs`).

    use serde_json::json;

    use super::*;
    use crate::layout::watermark_key;
    use crate::state::{MemoryStateStore, StateStoreExt};
    use crate::testing::MemorySink;
    use crate::testing::view_fakes::{MockView, ON_BEHALF_OF, cursor_of, records};
    use crate::view_sync::lease::Watermark;

    async fn setup() -> (MockView, ViewSync, Arc<MemorySink>, Arc<MemoryStateStore>) {
        let view = MockView::start("view-pw").await;
        let config: ViewConfig = serde_json::from_value(json!({
            "url": view.url(), "on_behalf_of": ON_BEHALF_OF, "username": view.user,
            "password": {"env": "UNUSED_IN_THIS_TEST"}, "sink": "mem", "chunk_size": 10
        }))
        .unwrap();
        let sink = Arc::new(MemorySink::default());
        let state = Arc::new(MemoryStateStore::new());
        let mut sync = ViewSync::new(state.clone(), RetryPolicy::default(), "unit-test");
        sync.add_view(
            "cases",
            ViewSource {
                config,
                password: SecretString::from("view-pw"),
                http: reqwest::Client::new(),
                sink: sink.clone(),
            },
        );
        (view, sync, sink, state)
    }

    async fn synced(sync: &ViewSync) -> SyncReport {
        match sync.sync("cases").await {
            Ok(SyncOutcome::Synced(report)) => report,
            other => panic!("expected a sync: {other:?}"),
        }
    }

    #[tokio::test]
    async fn records_reach_the_sink_in_chunks_and_the_next_run_asks_only_for_new_ones() {
        let (view, sync, sink, state) = setup().await;
        view.push(records(0, 25));
        let first = synced(&sync).await;
        assert_eq!((first.records, first.chunks), (25, 3), "{first:?}");
        assert_eq!(first.watermark_before, None);
        let last = cursor_of(24).to_string();
        assert_eq!(
            first.watermark_after.as_ref().map(|c| c.to_string()),
            Some(last.clone())
        );
        let held = sink.records("cases");
        assert_eq!(held.len(), 25);
        assert_eq!(
            held.keys().next().map(String::as_str),
            Some("000000000"),
            "records are keyed by their RecordID"
        );
        assert_eq!(
            held["000000001"].1["Name"], "Client 1",
            "the record as the view sent it"
        );
        let (mark, _) = state
            .get_json::<Watermark>(&watermark_key("cases"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mark.last_submission_id.to_string(), last);

        view.push(records(25, 5));
        let second = synced(&sync).await;
        assert_eq!((second.records, second.chunks), (5, 1), "{second:?}");
        assert_eq!(view.asked().last().map(String::as_str), Some(last.as_str()));
        assert_eq!(sink.records("cases").len(), 30);
        assert_eq!(sink.deliveries(), 4);

        // Nothing new: nothing delivered, the watermark stays.
        let third = synced(&sync).await;
        assert_eq!((third.records, third.chunks), (0, 0), "{third:?}");
        assert_eq!(sink.deliveries(), 4);
        assert_eq!(third.watermark_after, second.watermark_after);
    }

    #[tokio::test]
    async fn a_refused_view_moves_no_watermark_and_delivers_nothing() {
        let (view, sync, sink, state) = setup().await;
        view.push(records(0, 3));
        view.answer_status(Some(401));
        let result = sync.sync("cases").await;
        assert!(result.is_err(), "{result:?}");
        assert_eq!(sink.deliveries(), 0);
        assert!(state.get(&watermark_key("cases")).await.unwrap().is_none());
        view.answer_status(None);
        assert_eq!(
            synced(&sync).await.records,
            3,
            "the next run starts from the beginning"
        );
    }
}
