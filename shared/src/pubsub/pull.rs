//! export-pull's work: drain one source's Service Bus subscription into transfer jobs until the
//! time is up. Per message: parse (poison: record in `failed/`, complete), keep only blob types a
//! route takes (others: complete), check the uri against the token's blob bases (refused: record
//! in `failed/`, complete), save one job per route with create-once, then complete. When a save
//! fails the message is unlocked, so nothing accepted is lost; a lost lock (404 on complete) is
//! fine because the redelivered message finds its jobs already there.
//!
//! While a message is being saved its lock is renewed every half `lock_duration_secs`; a renewal
//! answered 404 means the lock is gone, so work on it stops (no complete) and its redelivery
//! finishes the job (create-once). Each run first drains the dead-letter subqueue the same way:
//! a message the broker gave up on (e.g. after MaxDeliveryCount slow saves) still becomes its
//! job, and one that is no notification is recorded under `failed/` with its `DeadLetterReason`;
//! every such message logs `dead-letter message drained` at WARN (the alarm counts those lines).
//! An empty receive that came back well before its long-poll timeout is followed by a short
//! pause, so a gateway that answers early does not make the run spin.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;
use tracing::Instrument;

use super::message::{self, FileNotice};
use super::servicebus::{Received, SbError, ServiceBusClient, Settled, SubQueue};
use crate::config::{PubsubExportConfig, RouteConfig};
use crate::job::{
    ExportFile, RejectedMessage, RejectionKind, TransferJob, export_job_id, now_rfc3339,
    rejected_message_id,
};
use crate::layout::{failure_key, job_key};
use crate::redact::redact_body;
use crate::retry::{RetryPolicy, Retryable};
use crate::source::SourceObject;
use crate::state::{PutMode, StateError, StateStore, StateStoreExt};
use crate::token::TokenError;
use crate::token::cache::TokenCache;

/// Longest body kept in a rejection record.
const MAX_KEPT_BODY: usize = 64 * 1024;

/// Pause after an empty receive that came back well before its long-poll timeout.
const EARLY_EMPTY_PAUSE: Duration = Duration::from_secs(1);

/// Long-poll timeout of a dead-letter subqueue receive (the drain ends at the first empty one).
const DEAD_LETTER_WAIT: Duration = Duration::from_secs(1);

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PullSummary {
    /// Source name.
    pub source: String,
    /// Messages received (redeliveries included).
    pub received: u64,
    /// Jobs created.
    pub jobs_created: u64,
    /// Jobs that already existed (redelivered or duplicate notifications).
    pub jobs_existing: u64,
    /// Messages whose blob type no route takes.
    pub skipped: u64,
    /// Unparseable messages recorded under `failed/`.
    pub poison: u64,
    /// Messages whose uri was refused, recorded under `failed/`.
    pub refused: u64,
    /// Messages completed.
    pub completed: u64,
    /// Completes answered 404/410: the lock was lost and the message comes back.
    pub lock_lost: u64,
    /// Messages unlocked because their job could not be saved.
    pub unlocked: u64,
    /// Lock renewals that succeeded (a save took longer than half the lock duration).
    pub locks_renewed: u64,
    /// Renewals answered 404/410: the lock was lost while saving, so the message was left to its
    /// redelivery (not completed).
    pub locks_lost: u64,
    /// Messages read from the dead-letter subqueue (each also counted under its outcome below
    /// and in `jobs_created`/`jobs_existing`/`poison`/`refused`/`skipped`/`completed`).
    pub dead_letter_drained: u64,
    /// Jobs created from dead-lettered messages: files that would otherwise never be delivered.
    pub dead_letter_jobs: u64,
    /// Dead-lettered messages whose jobs all existed already (the original was taken).
    pub dead_letter_duplicates: u64,
    /// Dead-lettered messages that are no usable notification, recorded under `failed/` with
    /// their `DeadLetterReason`.
    pub dead_letter_refused: u64,
    /// Job keys created in this run (the local runner queues them).
    #[serde(skip)]
    pub job_keys: Vec<String>,
}

impl PullSummary {
    /// Counts the run per `Source`: messages pulled, jobs created, skipped and refused messages
    /// (poison included), lost locks, and the dead-letter drain's messages, jobs and refusals.
    pub fn record_metrics(&self) {
        use crate::metrics::{Unit, add};
        let dims = [("Source", self.source.as_str())];
        for (name, value) in [
            ("ExportMessagesPulled", self.received),
            ("ExportJobsCreated", self.jobs_created),
            ("ExportJobsExisting", self.jobs_existing),
            ("ExportMessagesSkipped", self.skipped),
            ("ExportMessagesRefused", self.refused + self.poison),
            ("ExportLocksLost", self.lock_lost + self.locks_lost),
            ("ExportDeadLettersDrained", self.dead_letter_drained),
            ("ExportDeadLetterJobs", self.dead_letter_jobs),
            ("ExportDeadLettersRefused", self.dead_letter_refused),
        ] {
            add(name, Unit::Count, value as f64, &dims);
        }
    }
}

/// Why a run stopped early.
#[derive(Debug, Error)]
pub enum PullError {
    /// Service Bus (or the tokens it needs) failed for good.
    #[error("source {source_name:?}: {error}")]
    Bus {
        /// The configured source.
        source_name: String,
        /// The underlying error.
        error: SbError,
    },
}

/// Drains one pub/sub export source into jobs.
pub struct ExportPuller {
    source: String,
    config: PubsubExportConfig,
    routes: Vec<RouteConfig>,
    bus: ServiceBusClient,
    tokens: Arc<TokenCache>,
    state: Arc<dyn StateStore>,
    retry: RetryPolicy,
}

/// How one message ended, for the summary and the dead-letter log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// At least one job created.
    JobCreated,
    /// Every job existed already.
    Duplicate,
    /// Recorded under `failed/` (poison or refused uri).
    Refused,
    /// No route takes its blob type.
    Skipped,
    /// Not saved; unlocked for redelivery.
    Unsaved,
    /// Its lock was lost while saving; left to its redelivery.
    LockLost,
}

impl Handled {
    fn as_str(self) -> &'static str {
        match self {
            Handled::JobCreated => "job_created",
            Handled::Duplicate => "duplicate",
            Handled::Refused => "refused",
            Handled::Skipped => "skipped",
            Handled::Unsaved => "unsaved",
            Handled::LockLost => "lock_lost",
        }
    }
}

/// Why a message could not be saved (it is unlocked and comes back).
#[derive(Debug, Error)]
enum Unsaved {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Tokens(#[from] TokenError),
}

enum Outcome {
    Jobs { created: Vec<String>, existing: u64 },
    Skipped,
    Rejected { refused: bool },
}

impl ExportPuller {
    /// A puller for `source`; `routes` are the config's routes (those naming this source are used).
    pub fn new(
        source: &str,
        config: PubsubExportConfig,
        routes: &[RouteConfig],
        bus: ServiceBusClient,
        tokens: Arc<TokenCache>,
        state: Arc<dyn StateStore>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            source: source.to_string(),
            config,
            routes: routes
                .iter()
                .filter(|r| r.source == source)
                .cloned()
                .collect(),
            bus,
            tokens,
            state,
            retry,
        }
    }

    /// Source name.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How long before a deadline this source wants to stop.
    pub fn deadline_margin(&self) -> Duration {
        Duration::from_secs(self.config.deadline_margin_secs)
    }

    /// Drains the dead-letter subqueue (when `drain_dead_letters`), then receives and handles
    /// messages until `until` (or the first empty receive with `stop_when_idle`).
    pub async fn run(&self, until: Instant) -> Result<PullSummary, PullError> {
        crate::metrics::invocation("export-pull", async {
            let result = self.pull(until).await;
            match &result {
                Ok(summary) => summary.record_metrics(),
                Err(_) => crate::metrics::add(
                    "ExportPullFailures",
                    crate::metrics::Unit::Count,
                    1.0,
                    &[("Source", &self.source)],
                ),
            }
            result
        })
        .await
    }

    async fn pull(&self, until: Instant) -> Result<PullSummary, PullError> {
        let mut summary = PullSummary {
            source: self.source.clone(),
            ..Default::default()
        };
        let bus_error = |error| PullError::Bus {
            source_name: self.source.clone(),
            error,
        };
        if self.config.drain_dead_letters {
            self.drain_dead_letters(until, &mut summary)
                .await
                .map_err(|e| {
                    tracing::error!(source = %self.source, error = %e, "export pull stopped");
                    bus_error(e)
                })?;
        }
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left < Duration::from_secs(1) {
                break;
            }
            let wait = left.min(Duration::from_secs(self.config.receive_timeout_secs.max(1)));
            let asked = Instant::now();
            let message = match self.bus.receive(wait, self.config.max_message_bytes).await {
                Ok(Some(m)) => m,
                Ok(None) if self.config.stop_when_idle => break,
                Ok(None) => {
                    // The long poll asks for whole seconds (at least 1).
                    let requested = Duration::from_secs(wait.as_secs().max(1));
                    if asked.elapsed() < requested / 2 {
                        let pause =
                            EARLY_EMPTY_PAUSE.min(until.saturating_duration_since(Instant::now()));
                        tracing::debug!(source = %self.source, pause_ms = pause.as_millis() as u64, "empty receive came back early; pausing before the next");
                        tokio::time::sleep(pause).await;
                    }
                    continue;
                }
                Err(e) if e.is_retryable() => {
                    // A server's (or the token refresh limit's) retry-after is honoured, up to
                    // the deadline.
                    let pause = match e.retry_after() {
                        Some(after) => after.min(left),
                        None => self.retry.max.min(left / 2),
                    };
                    tracing::warn!(source = %self.source, error = %e, pause_ms = pause.as_millis() as u64, "receive failed; trying again");
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(source = %self.source, error = %e, "export pull stopped");
                    return Err(bus_error(e));
                }
            };
            summary.received += 1;
            let span = tracing::info_span!(
                "message",
                source = %self.source,
                message_id = %message.broker.message_id,
                sequence_number = message.broker.sequence_number,
                delivery_count = message.broker.delivery_count,
            );
            self.handle(message, until, &mut summary)
                .instrument(span)
                .await;
        }
        tracing::info!(source = %self.source, received = summary.received, jobs_created = summary.jobs_created, jobs_existing = summary.jobs_existing, skipped = summary.skipped, poison = summary.poison, refused = summary.refused, completed = summary.completed, lock_lost = summary.lock_lost, unlocked = summary.unlocked, locks_renewed = summary.locks_renewed, locks_lost = summary.locks_lost, dead_letter_drained = summary.dead_letter_drained, dead_letter_jobs = summary.dead_letter_jobs, dead_letter_duplicates = summary.dead_letter_duplicates, dead_letter_refused = summary.dead_letter_refused, "export pull finished");
        Ok(summary)
    }

    /// Reads the dead-letter subqueue until it is empty (or the time is up) and handles each
    /// message like a fresh one. A retryable failure ends the drain (the next run drains again);
    /// a permanent one ends the run.
    async fn drain_dead_letters(
        &self,
        until: Instant,
        summary: &mut PullSummary,
    ) -> Result<(), SbError> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left < DEAD_LETTER_WAIT {
                return Ok(());
            }
            let message = match self
                .bus
                .receive_from(
                    SubQueue::DeadLetter,
                    DEAD_LETTER_WAIT,
                    self.config.max_message_bytes,
                )
                .await
            {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(source = %self.source, error = %e, "dead-letter subqueue receive failed; the next run drains it");
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            summary.dead_letter_drained += 1;
            let span = tracing::info_span!(
                "dead_letter_message",
                source = %self.source,
                message_id = %message.broker.message_id,
                sequence_number = message.broker.sequence_number,
                delivery_count = message.broker.delivery_count,
            );
            let handled = self.handle(message, until, summary).instrument(span).await;
            if matches!(handled, Handled::Unsaved | Handled::LockLost) {
                // It comes back at once; leave it to the next run instead of spinning on it.
                return Ok(());
            }
        }
    }

    /// Renews `message`'s lock every half lock duration; returns when a renewal says the lock
    /// is gone (never, otherwise: the caller drops this when the work is done).
    async fn keep_locked(&self, message: &Received, renewed: &AtomicU64) {
        let every = Duration::from_millis(self.config.lock_duration_secs.max(1) * 500);
        loop {
            tokio::time::sleep(every).await;
            match self.bus.renew(message).await {
                Ok(Settled::Ok) => {
                    renewed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("lock renewed");
                }
                Ok(Settled::LockLost) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "lock renewal failed; trying again at the next turn")
                }
            }
        }
    }

    async fn handle(
        &self,
        message: Received,
        until: Instant,
        summary: &mut PullSummary,
    ) -> Handled {
        let renewed = AtomicU64::new(0);
        let lost = AtomicBool::new(false);
        let processed = {
            let work = self.process(&message, &lost);
            tokio::pin!(work);
            tokio::select! {
                biased;
                r = &mut work => r,
                () = self.keep_locked(&message, &renewed) => {
                    // The write in flight finishes (so a job that lands is counted and queued);
                    // no further write starts. What was written stays (create-once): the
                    // redelivery finds it and does the rest.
                    lost.store(true, Ordering::SeqCst);
                    tracing::warn!("lock lost while saving the message; stopping after the write in flight, its redelivery finishes the job");
                    work.await
                }
            }
        };
        summary.locks_renewed += renewed.load(Ordering::Relaxed);
        let lock_lost = lost.load(Ordering::SeqCst);
        let dead = message.queue == SubQueue::DeadLetter;
        let handled = match processed {
            Ok(Outcome::Jobs { created, existing }) => {
                let made = created.len() as u64;
                summary.jobs_created += made;
                summary.jobs_existing += existing;
                summary.job_keys.extend(created);
                if dead {
                    summary.dead_letter_jobs += made;
                }
                if made > 0 {
                    Handled::JobCreated
                } else {
                    if dead {
                        summary.dead_letter_duplicates += 1;
                    }
                    Handled::Duplicate
                }
            }
            Ok(Outcome::Skipped) => {
                summary.skipped += 1;
                Handled::Skipped
            }
            Ok(Outcome::Rejected { refused }) => {
                if refused {
                    summary.refused += 1;
                } else {
                    summary.poison += 1;
                }
                if dead {
                    summary.dead_letter_refused += 1;
                }
                Handled::Refused
            }
            Err(e) if lock_lost => {
                tracing::warn!(error = %e, "message not saved; its lock is gone, so it comes back");
                Handled::Unsaved
            }
            Err(e) => {
                // Nothing durable yet (or only part): let the message come back.
                tracing::warn!(error = %e, "message not saved; unlocking it for redelivery");
                match self.bus.unlock(&message).await {
                    Ok(_) => summary.unlocked += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "unlock failed; the lock will expire instead")
                    }
                }
                Handled::Unsaved
            }
        };
        let handled = if lock_lost {
            summary.locks_lost += 1;
            Handled::LockLost
        } else {
            handled
        };
        if !matches!(handled, Handled::LockLost | Handled::Unsaved) {
            self.complete(&message, until, summary).await;
        }
        if dead {
            tracing::warn!(
                source = %self.source,
                reason = message.dead_letter_reason.as_deref().unwrap_or("unknown"),
                description = message.dead_letter_description.as_deref().unwrap_or(""),
                outcome = handled.as_str(),
                "dead-letter message drained"
            );
        }
        handled
    }

    /// Completes a saved message. Credentials refused just after a refresh are retried once the
    /// refresh interval allows (when that is before the deadline): the message is saved, and a
    /// lock left to expire would only count towards its MaxDeliveryCount.
    async fn complete(&self, message: &Received, until: Instant, summary: &mut PullSummary) {
        let mut settled = self.bus.complete(message).await;
        if let Err(e) = &settled
            && e.is_retryable()
            && let Some(after) = e.retry_after()
            && Instant::now() + after < until
        {
            tracing::warn!(error = %e, retry_after_ms = after.as_millis() as u64, "complete refused for now; trying again after the pause");
            tokio::time::sleep(after).await;
            settled = self.bus.complete(message).await;
        }
        match settled {
            Ok(Settled::Ok) => summary.completed += 1,
            Ok(Settled::LockLost) => {
                summary.lock_lost += 1;
                tracing::warn!(
                    "lock lost before complete; the message will come back and find its job saved"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "complete failed; the message will come back and find its job saved")
            }
        }
    }

    /// Saves what `message` asks for. Stops before the next job write once `lost` is set (its
    /// lock is gone); the jobs written so far are in the outcome.
    async fn process(&self, message: &Received, lost: &AtomicBool) -> Result<Outcome, Unsaved> {
        let notice = if message.truncated {
            Err(format!(
                "body is larger than max_message_bytes ({})",
                self.config.max_message_bytes
            ))
        } else {
            message::parse(&message.body)
        };
        let notice = match notice {
            Ok(n) => n,
            Err(reason) => {
                self.reject(message, None, RejectionKind::Poison, &reason)
                    .await?;
                return Ok(Outcome::Rejected { refused: false });
            }
        };
        let routes: Vec<&RouteConfig> = self
            .routes
            .iter()
            .filter(|r| {
                r.blob_types
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(&notice.blob_type))
            })
            .collect();
        if routes.is_empty() {
            tracing::info!(blob_type = %notice.blob_type, correlation_id = %notice.correlation_id, "no route takes this blob type; skipped");
            return Ok(Outcome::Skipped);
        }
        let located = match self.locate(&notice.uri).await? {
            Ok(l) => l,
            Err(reason) => {
                self.reject(message, Some(&notice), RejectionKind::RefusedUri, &reason)
                    .await?;
                return Ok(Outcome::Rejected { refused: true });
            }
        };
        let mut created = Vec::new();
        let mut existing = 0;
        for route in routes {
            if lost.load(Ordering::SeqCst) {
                break;
            }
            let job = self.job(route, message, &notice, &located);
            let key = job_key(&route.name, &job.id);
            let state = self.state.as_ref();
            match self
                .retry
                .run("write job", || state.put_json(&key, &job, PutMode::Create))
                .await
            {
                Ok(_) => {
                    tracing::info!(job_id = %job.id, route = %route.name, correlation_id = %notice.correlation_id, blob_type = %notice.blob_type, blob = %located.url, "job created");
                    created.push(key);
                }
                Err(StateError::AlreadyExists { .. }) => {
                    tracing::info!(job_id = %job.id, route = %route.name, correlation_id = %notice.correlation_id, "job already exists (redelivered notification)");
                    existing += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Outcome::Jobs { created, existing })
    }

    /// Places the uri under the current token's bases; re-reads the stored tokens once when it
    /// does not fit (the bases may have rotated), never refreshes because of a message.
    async fn locate(&self, uri: &str) -> Result<Result<super::uri::Located, String>, TokenError> {
        let tokens = self.tokens.get().await?;
        Ok(match tokens.locate(uri) {
            Ok(l) => Ok(l),
            Err(super::uri::UriRefusal::OutsideBases { .. }) => {
                let newer = self.tokens.reload().await?;
                newer.locate(uri).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        })
    }

    fn job(
        &self,
        route: &RouteConfig,
        message: &Received,
        notice: &FileNotice,
        located: &super::uri::Located,
    ) -> TransferJob {
        TransferJob {
            id: export_job_id(&route.name, &self.source, &notice.correlation_id),
            route: route.name.clone(),
            source: self.source.clone(),
            object: SourceObject {
                container: located.container.clone(),
                name: located.name.clone(),
                size: 0,
                etag: String::new(),
                content_md5: None,
                content_type: notice.content_type.clone(),
                url: Some(located.url.clone()),
            },
            destinations: route.destinations.clone(),
            target_folder: route.target_folder.clone(),
            name_template: route.name_template.clone(),
            after_delivery: route.after_delivery,
            encrypt: route.encrypt.is_some(),
            correlation_id: notice.correlation_id.clone(),
            created_at: now_rfc3339(),
            export: Some(ExportFile {
                blob_type: notice.blob_type.clone(),
                content_type: notice.content_type.clone(),
                content_encoding: notice.content_encoding.clone(),
                properties: notice.properties.clone(),
                message_id: message.broker.message_id.clone(),
                sequence_number: message.broker.sequence_number,
                decompress: route.decompress,
                max_decompressed_bytes: self.config.max_decompressed_bytes,
                max_line_bytes: self.config.max_line_bytes,
            }),
        }
    }

    async fn reject(
        &self,
        message: &Received,
        notice: Option<&FileNotice>,
        kind: RejectionKind,
        reason: &str,
    ) -> Result<(), StateError> {
        // Without BrokerProperties the Location (unique per message and lock) identifies it.
        let identity = match message.broker.message_id.as_str() {
            "" => message.location.as_str(),
            id => id,
        };
        let id = rejected_message_id(&self.source, identity, message.broker.sequence_number);
        let kept = &message.body[..message.body.len().min(MAX_KEPT_BODY)];
        let record = RejectedMessage {
            id: id.clone(),
            source: self.source.clone(),
            kind,
            reason: reason.to_string(),
            message_id: message.broker.message_id.clone(),
            sequence_number: message.broker.sequence_number,
            delivery_count: message.broker.delivery_count,
            correlation_id: notice.map(|n| n.correlation_id.clone()),
            blob_type: notice.map(|n| n.blob_type.clone()),
            dead_letter_reason: message.dead_letter_reason.clone(),
            dead_letter_description: message.dead_letter_description.clone(),
            body: redact_body(&String::from_utf8_lossy(kept)),
            body_truncated: message.truncated || kept.len() < message.body.len(),
            rejected_at: now_rfc3339(),
        };
        let key = failure_key(&id);
        let state = self.state.as_ref();
        self.retry
            .run("write rejected message", || {
                state.put_json(&key, &record, PutMode::Overwrite)
            })
            .await?;
        tracing::error!(kind = kind.as_str(), %reason, dead_letter_reason = message.dead_letter_reason.as_deref(), failed_key = %key, "message refused; recorded and completed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The fast tier of the export puller: the memory store and in-process fakes of Azure AD,
    //! the token service and Service Bus (`tests/support/pubsub.rs`). Blobs are never read here:
    //! a job is saved from the notification alone.

    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::config::Config;
    use crate::job::TransferJob;
    use crate::secret::SecretResolver;
    use crate::services::Services;
    use crate::state::{MemoryStateStore, StateStoreExt};
    use crate::testing::pubsub_fakes::{Aad, ServiceBus, TokenService};

    const CLIENT_ID: &str = "unit-client";
    const CLIENT_SECRET: &str = "unit-client-secret";
    const INTEGRATION: &str = "unit-export";
    const SB_KEY: &str = "c2JrZXktdW5pdC10ZXN0LWtleS0xMjM0NTY3ODk=";
    const BASE: &str = "http://127.0.0.1:9/devstoreaccount1/exports";

    fn notice(blob_type: &str, uri: &str) -> Vec<u8> {
        json!({"blobType": blob_type, "correlationId": "corr-1", "contentType": "application/x-ndjson",
               "contentEncoding": "", "uri": uri, "properties": {"tenantId": "42"}})
        .to_string()
        .into_bytes()
    }

    #[tokio::test]
    async fn notifications_become_jobs_once_and_the_rest_is_skipped_or_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("aad");
        std::fs::write(&secret, CLIENT_SECRET).unwrap();
        let aad = Aad::start(CLIENT_ID, Some(CLIENT_SECRET)).await;
        let tokens = TokenService::start(&aad, INTEGRATION).await;
        let bus = ServiceBus::start("listen", SB_KEY, Duration::from_secs(30)).await;
        tokens.answer(
            &bus.connection_string(SB_KEY),
            &bus.subscription,
            &[format!("{BASE}?sv=2023-11-03&sr=c&si=p1&sig=c2lnbmF0dXJl")],
        );
        let config = json!({
            "state": {"bucket": "unused"},
            "sources": {"eg": {
                "type": "pubsub_export",
                "tenant_service_url": tokens.server.uri(),
                "integration_name": INTEGRATION,
                "aad": {"authority_url": aad.server.uri(), "tenant_id": aad.tenant, "client_id": CLIENT_ID,
                        "scope": "api://eg/.default", "client_secret": {"file": secret}},
                "read_timeout_secs": 5, "receive_timeout_secs": 1, "deadline_margin_secs": 1,
                "stop_when_idle": true
            }},
            "destinations": {"out": {"type": "local_dir", "path": dir.path().join("out")}},
            "routes": [{"name": "items", "source": "eg", "blob_types": ["Gateway.ItemChanges"],
                        "destinations": ["out"], "target_folder": "items"}]
        });
        let state = Arc::new(MemoryStateStore::new());
        let services = Services::with_state(
            Config::from_json(&config.to_string()).unwrap(),
            state.clone(),
            Arc::new(SecretResolver::local()),
        );
        let pullers = services.export_pullers().await.unwrap();
        let uri = format!("{BASE}/items/2026/11/29/items-0001.jsonl");
        bus.send(notice("Gateway.ItemChanges", &uri));
        bus.send(notice("gateway.itemchanges", &uri)); // the same file again (type case differs)
        bus.send(notice(
            "Gateway.StockChanges",
            &format!("{BASE}/stock/s.jsonl"),
        ));
        bus.send(&b"{not json"[..]);
        bus.send(notice(
            "Gateway.ItemChanges",
            "http://attacker.example/items/x.jsonl",
        ));
        let summary = pullers[0]
            .run(Instant::now() + Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(
            (
                summary.received,
                summary.jobs_created,
                summary.jobs_existing,
                summary.skipped,
                summary.poison,
                summary.refused
            ),
            (5, 1, 1, 1, 1, 1),
            "{summary:?}"
        );
        assert_eq!(summary.completed, 5, "every message was settled");
        assert_eq!(bus.outstanding(), 0, "nothing left on the subscription");
        let jobs = state.list("jobs/").await.unwrap();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(summary.job_keys, jobs);
        let (job, _) = state
            .get_json::<TransferJob>(&jobs[0])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.route, "items");
        assert_eq!(job.destinations, vec!["out"]);
        assert_eq!(job.object.url.as_deref(), Some(uri.as_str()));
        assert!(job.object.is_unresolved(), "saved without reading the blob");
        let failed = state.list("failed/").await.unwrap();
        assert_eq!(
            failed.len(),
            2,
            "poison and refused uri recorded: {failed:?}"
        );
        for key in &failed {
            let body = state.get(key).await.unwrap().unwrap().body;
            let text = String::from_utf8_lossy(&body);
            assert!(!text.contains("c2lnbmF0dXJl"), "no SAS in {key}: {text}");
        }
    }
}
