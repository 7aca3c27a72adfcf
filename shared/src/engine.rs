//! The transfer engine: runs one job by streaming its source object to every destination that
//! has no receipt yet, writing a receipt per verified delivery, and dead-lettering a job that
//! cannot succeed. Every integration ends up here.
//!
//! With a deadline (the Lambda invocation's), a run keeps `deadline_margin` in hand: from
//! `deadline - margin` on no job or delivery starts and deliveries in flight are told to stop
//! (S3 multipart keeps its parts with a checkpoint); at `deadline - margin/2` a delivery still
//! running is dropped, and at `deadline - margin/4` the whole run is. Such a run ends in
//! [`JobError::Interrupted`]: never a dead letter, whatever the attempt count.
//!
//! A process that shuts down (the local runner on SIGTERM) has no deadline known in advance:
//! it gives the engine a [`StopSignal`] and, when it must stop, fires it with its grace period.
//! From then on no job, delivery or retry starts; deliveries already running may finish until
//! three quarters of the grace period are gone and are dropped then (S3 multipart keeps the
//! checkpoint of the parts it stored), and the run ends, `Interrupted`, before seven eighths.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use thiserror::Error;
use tracing::Instrument;

use crate::dest::{Delivery, Destination, DestinationError, join_path};
use crate::encrypt::{Plaintext, Recipients, encrypt_to_spool};
use crate::job::{
    AfterDelivery, FailureRecord, PlaintextDigest, Receipt, SourceAction, TransferJob, Transform,
    now_rfc3339,
};
use crate::layout::{failure_key, receipt_key};
use crate::metrics::{self, Unit};
use crate::name_template::{NameParts, NameTemplate};
use crate::retry::{RetryPolicy, Retryable};
use crate::source::{Source, SourceError, SourceObject};
use crate::state::{PutMode, StateError, StateStore, StateStoreExt};
use crate::transform::{Limits, Spooled, gunzip};
use crate::verify::verifying;

/// The file as it will be delivered: the resolved object, and the staged decompressed and/or
/// encrypted copy when the route wants one.
struct Prepared {
    object: SourceObject,
    source: Arc<dyn Source>,
    name: String,
    content_type: Option<String>,
    staged: Option<Spooled>,
    /// What `staged` holds, when it holds a transformed copy.
    transform: Option<Transform>,
    /// What was encrypted (encrypted deliveries).
    plaintext: Option<Plaintext>,
}

/// `a/b.jsonl.gz` -> `a/b.jsonl` (names without the suffix are kept).
fn strip_gz(name: &str) -> String {
    let cut = name.len().saturating_sub(3);
    match name.get(cut..) {
        Some(ext) if ext.eq_ignore_ascii_case(".gz") && cut > 0 && !name[..cut].ends_with('/') => {
            name[..cut].to_string()
        }
        _ => name.to_string(),
    }
}

/// The name a job's file gets at its destinations: the route's template rendered with the job's
/// own values (its creation time, not today's), else the (decompressed) source name, with `.pgp`
/// appended when the job encrypts.
fn delivered_name(job: &TransferJob, prepared: &Prepared) -> Result<String, DestinationError> {
    let Some(template) = &job.name_template else {
        return Ok(if job.encrypt {
            format!("{}.pgp", prepared.name)
        } else {
            prepared.name.clone()
        });
    };
    let refused = |e: String| DestinationError::Rejected(format!("name_template: {e}"));
    let template = NameTemplate::parse(template).map_err(|e| refused(e.to_string()))?;
    let created = chrono::DateTime::parse_from_rfc3339(&job.created_at)
        .map_err(|e| refused(format!("job created_at {:?}: {e}", job.created_at)))?
        .with_timezone(&chrono::Utc);
    template
        .render(&NameParts {
            path: &prepared.name,
            container: &prepared.object.container,
            blob_type: job.export.as_ref().map_or("", |e| e.blob_type.as_str()),
            route: &job.route,
            job_id: &job.id,
            created,
        })
        .map_err(|e| refused(e.to_string()))
}

/// Why one step of a job (a destination, or `source`, `records/<sink>`, `after_delivery`) failed
/// in a run, and whether another attempt may succeed: what decides retry or dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    /// What went wrong (secret-free).
    reason: String,
    /// Whether another attempt may succeed.
    retryable: bool,
}

impl Failure {
    fn of<E: std::fmt::Display + Retryable>(e: &E) -> Self {
        Self {
            reason: e.to_string(),
            retryable: e.is_retryable(),
        }
    }

    fn permanent(reason: String) -> Self {
        Self {
            reason,
            retryable: false,
        }
    }
}

/// Why a job was dead-lettered: the `Kind` dimension of the `JobsDeadLettered` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeadLetterKind {
    /// Every failure was retryable, but the attempts ran out.
    AttemptsExhausted,
    /// A failure no retry can fix (refused credentials, a bad file, a rejected name).
    Permanent,
}

impl DeadLetterKind {
    fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::AttemptsExhausted => "attempts_exhausted",
            DeadLetterKind::Permanent => "permanent",
        }
    }
}

/// How a job run ended when it did not need another attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Every destination now has a receipt; `delivered` of them in this run.
    Completed {
        /// Destinations delivered in this run.
        delivered: usize,
        /// Destinations that had a receipt before this run.
        already_done: usize,
    },
    /// The job could not succeed (or used up its attempts) and was recorded under `failed/`.
    DeadLettered {
        /// Why (secret-free).
        reason: String,
    },
    /// The job is already in `failed/`; a replay clears that first.
    AlreadyFailed,
}

/// Why a job run needs another attempt (or cannot start).
#[derive(Debug, Error)]
pub enum JobError {
    /// No job object at that key (deleted, or a stray notification).
    #[error("no job at {0}")]
    Missing(String),
    /// The state store failed; the job is untouched and can be retried.
    #[error(transparent)]
    State(#[from] StateError),
    /// Some destinations failed with retryable errors; try again later.
    #[error("job {job_id} attempt {attempt} failed, will retry: {reason}")]
    RetryLater {
        /// The job (its id, or its key when the job was not read yet).
        job_id: String,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// Why (secret-free).
        reason: String,
    },
    /// The run stopped at the invocation deadline: not a failure (never dead-lettered), the next
    /// invocation continues. `job_id` is the job's key when the run stopped before reading the
    /// job; `progress` says how far it got (per destination, secret-free).
    #[error("job {job_id} stopped at the invocation deadline: {progress}")]
    Interrupted {
        /// The job (its id, or its key when the job was not read yet).
        job_id: String,
        /// How far it got, per destination (secret-free).
        progress: String,
    },
}

impl Retryable for JobError {
    fn is_retryable(&self) -> bool {
        match self {
            JobError::Missing(_) => false,
            JobError::State(e) => e.is_retryable(),
            JobError::RetryLater { .. } | JobError::Interrupted { .. } => true,
        }
    }
    fn retries_stopped(self, why: crate::retry::RetryStop) -> Self {
        match self {
            JobError::State(e) => JobError::State(e.retries_stopped(why)),
            other => other,
        }
    }
}

/// The instants a run with a deadline works to (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cutoffs {
    /// No job or delivery starts from here on; deliveries in flight are told to stop here.
    stop: tokio::time::Instant,
    /// A delivery still running is dropped here.
    drop_delivery: tokio::time::Instant,
    /// The whole run is dropped here, leaving the rest of the margin for the reply.
    drop_run: tokio::time::Instant,
}

impl Cutoffs {
    fn new(deadline: tokio::time::Instant, margin: Duration) -> Self {
        let before = |d: Duration| deadline.checked_sub(d).unwrap_or(deadline);
        Self {
            stop: before(margin),
            drop_delivery: before(margin / 2),
            drop_run: before(margin / 4),
        }
    }

    /// The cutoffs of a shutdown that leaves `grace` from now (see the module doc).
    fn shutdown(grace: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            stop: now,
            drop_delivery: now + grace * 3 / 4,
            drop_run: now + grace * 7 / 8,
        }
    }

    /// Each instant the earlier of the two.
    fn min(self, other: Self) -> Self {
        Self {
            stop: self.stop.min(other.stop),
            drop_delivery: self.drop_delivery.min(other.drop_delivery),
            drop_run: self.drop_run.min(other.drop_run),
        }
    }
}

/// Fires a [`StopSignal`]: held by the process that shuts down.
#[derive(Debug)]
pub struct StopHandle(tokio::sync::watch::Sender<Option<Cutoffs>>);

/// Lets a process stop the runs of an engine early (see the module doc), e.g. the local runner
/// on SIGTERM. Made with [`stop_signal`], given to [`TransferEngine::with_stop_signal`].
#[derive(Debug, Clone)]
pub struct StopSignal(tokio::sync::watch::Receiver<Option<Cutoffs>>);

/// A new, unfired stop signal and the handle that fires it.
pub fn stop_signal() -> (StopHandle, StopSignal) {
    let (tx, rx) = tokio::sync::watch::channel(None);
    (StopHandle(tx), StopSignal(rx))
}

impl StopHandle {
    /// Tells every run of the engines holding the signal to stop, ending within `grace` from
    /// now: nothing new starts; running deliveries get three quarters of it to finish. Firing
    /// again only ever brings the cutoffs closer.
    pub fn stop(&self, grace: Duration) {
        let cutoffs = Cutoffs::shutdown(grace);
        self.0
            .send_modify(|c| *c = Some(c.map_or(cutoffs, |old| old.min(cutoffs))));
    }

    /// True once [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.0.borrow().is_some()
    }
}

/// What bounds one run: the invocation's deadline (fixed when the run starts) and the
/// process's stop signal (may fire while it runs); each cutoff is the earlier of the two.
#[derive(Clone)]
struct RunLimits {
    deadline: Option<Cutoffs>,
    stop: Option<StopSignal>,
}

impl RunLimits {
    /// The cutoffs as known now (`None`: unbounded so far).
    fn now(&self) -> Option<Cutoffs> {
        let stopped = self.stop.as_ref().and_then(|s| *s.0.borrow());
        match (self.deadline, stopped) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The instant no work starts from, as known now.
    fn stop_at(&self) -> Option<tokio::time::Instant> {
        self.now().map(|c| c.stop)
    }

    /// The instant deliveries are dropped, as known now.
    fn drop_delivery_at(&self) -> Option<tokio::time::Instant> {
        self.now().map(|c| c.drop_delivery)
    }

    /// True once no work may start.
    fn stopped(&self) -> bool {
        self.stop_at()
            .is_some_and(|at| tokio::time::Instant::now() >= at)
    }

    /// Returns once the cutoff `pick` chooses is reached (never, while there is none).
    async fn reached(&self, pick: fn(&Cutoffs) -> tokio::time::Instant) {
        let mut signal = self.stop.as_ref().map(|s| s.0.clone());
        loop {
            let at = self.now().map(|c| pick(&c));
            let changed = async {
                let fired = match signal.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => false,
                };
                if !fired {
                    // No signal, or its handle is gone: it never fires.
                    std::future::pending::<()>().await;
                }
            };
            match at {
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at) => return,
                    () = changed => {}
                },
                None => changed.await,
            }
        }
    }

    /// Awaits `fut`, or gives `None` once the cutoff `pick` chooses is reached.
    async fn unless_past<F: std::future::Future>(
        &self,
        pick: fn(&Cutoffs) -> tokio::time::Instant,
        fut: F,
    ) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = fut => Some(out),
            () = self.reached(pick) => None,
        }
    }
}

/// Runs transfer jobs. Built once per cold start.
pub struct TransferEngine {
    state: Arc<dyn StateStore>,
    sources: BTreeMap<String, Arc<dyn Source>>,
    destinations: BTreeMap<String, Arc<dyn Destination>>,
    retry: RetryPolicy,
    max_attempts: u32,
    deadline_margin: Duration,
    stop: Option<StopSignal>,
    encryption: BTreeMap<String, Arc<Recipients>>,
    records: BTreeMap<String, Arc<crate::records::RecordsPlan>>,
}

impl TransferEngine {
    /// An engine over these clients.
    pub fn new(
        state: Arc<dyn StateStore>,
        sources: BTreeMap<String, Arc<dyn Source>>,
        destinations: BTreeMap<String, Arc<dyn Destination>>,
        retry: RetryPolicy,
        max_attempts: u32,
    ) -> Self {
        Self {
            state,
            sources,
            destinations,
            retry,
            max_attempts,
            deadline_margin: Duration::from_secs(
                crate::config::TransferConfig::default().deadline_margin_secs,
            ),
            stop: None,
            encryption: BTreeMap::new(),
            records: BTreeMap::new(),
        }
    }

    /// The record loading of each route that has `records` (route name -> its sink and
    /// settings); see [`crate::records`].
    pub fn with_records(self, records: BTreeMap<String, Arc<crate::records::RecordsPlan>>) -> Self {
        Self { records, ..self }
    }

    /// The OpenPGP recipients of each route that encrypts (route name -> its checked keys).
    pub fn with_encryption(self, encryption: BTreeMap<String, Arc<Recipients>>) -> Self {
        Self { encryption, ..self }
    }

    /// Runs of this engine also end early when `signal` fires (see the module doc).
    pub fn with_stop_signal(self, signal: StopSignal) -> Self {
        Self {
            stop: Some(signal),
            ..self
        }
    }

    /// The time a run with a deadline keeps in hand before it (`transfer.deadline_margin_secs`;
    /// see the module doc for how it is spent).
    pub fn with_deadline_margin(self, margin: Duration) -> Self {
        Self {
            deadline_margin: margin,
            ..self
        }
    }

    /// Runs the job stored at `job_key`. `attempt` counts deliveries of this job (1 = first), as
    /// SQS's ApproximateReceiveCount does; at `max_attempts` a still-failing job is dead-lettered.
    pub async fn run(&self, job_key: &str, attempt: u32) -> Result<JobOutcome, JobError> {
        self.run_until(job_key, attempt, None).await
    }

    /// [`run`](Self::run), finishing before `deadline` (the invocation's; `None`: no deadline).
    /// A run that cannot finish in time ends in [`JobError::Interrupted`] before the deadline,
    /// with what can be resumed saved; an interrupted run is never dead-lettered.
    pub async fn run_until(
        &self,
        job_key: &str,
        attempt: u32,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<JobOutcome, JobError> {
        let limits = RunLimits {
            deadline: deadline.map(|d| Cutoffs::new(d, self.deadline_margin)),
            stop: self.stop.clone(),
        };
        let interrupted = |progress: &str| JobError::Interrupted {
            job_id: job_key.to_string(),
            progress: progress.to_string(),
        };
        if limits.stopped() {
            return Err(interrupted(
                "not started: too close to the deadline, or shutting down",
            ));
        }
        let run = async {
            let state = self.state.as_ref();
            let retry = self.retry.until(limits.drop_delivery_at());
            let Some((job, _)) = retry
                .run("load job", || state.get_json::<TransferJob>(job_key))
                .await?
            else {
                return Err(JobError::Missing(job_key.to_string()));
            };
            let span = tracing::info_span!("job", job_id = %job.id, correlation_id = %job.correlation_id, route = %job.route);
            self.run_job(job_key, &job, attempt, &limits)
                .instrument(span)
                .await
        };
        let run = limits.unless_past(|c| c.drop_run, run);
        metrics::invocation("blob-copy", run)
            .await
            .unwrap_or_else(|| Err(interrupted("cut off while finishing (receipts or state)")))
    }

    async fn run_job(
        &self,
        job_key: &str,
        job: &TransferJob,
        attempt: u32,
        limits: &RunLimits,
    ) -> Result<JobOutcome, JobError> {
        let state = self.state.as_ref();
        // State requests may go on until deliveries are dropped; deliveries retry until the stop.
        let retry = self.retry.until(limits.drop_delivery_at());
        let interrupted = |progress: String| {
            tracing::info!(%progress, "job stopped at the deadline; the next invocation continues");
            Err(JobError::Interrupted {
                job_id: job.id.clone(),
                progress,
            })
        };
        let fkey = failure_key(&job.id);
        if retry
            .run("check failed marker", || state.get(&fkey))
            .await?
            .is_some()
        {
            tracing::info!("job is dead-lettered; replay it to run again");
            return Ok(JobOutcome::AlreadyFailed);
        }
        let mut pending = Vec::new();
        for dest in &job.destinations {
            let key = receipt_key(&job.id, dest);
            if retry
                .run("check receipt", || state.get(&key))
                .await?
                .is_none()
            {
                pending.push(dest.as_str());
            }
        }
        let already_done = job.destinations.len() - pending.len();
        if pending.is_empty() {
            tracing::info!("every destination already has a receipt; nothing to deliver");
            let outcome = JobOutcome::Completed {
                delivered: 0,
                already_done,
            };
            return self
                .finish(job_key, job, attempt, limits, &retry, outcome)
                .await;
        }
        if limits.stopped() {
            return interrupted(format!(
                "not started: {} destinations pending",
                pending.len()
            ));
        }
        let prepared = match limits
            .unless_past(|c| c.drop_delivery, self.prepare(job, &retry))
            .await
        {
            None => return interrupted("cut off while preparing the file".into()),
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                // Nothing can be delivered without the file: every pending destination fails alike.
                tracing::warn!(error = %e, "cannot prepare the file");
                let errors = pending
                    .iter()
                    .map(|d| {
                        record_failure(&job.route, d, &e);
                        (d.to_string(), Failure::of(&e))
                    })
                    .collect();
                return self.settle(job_key, job, attempt, errors).await;
            }
        };
        let results = join_all(
            pending
                .iter()
                .map(|d| self.deliver(job, &prepared, d, limits, &retry)),
        )
        .await;
        let mut errors = BTreeMap::new();
        let mut progress = Vec::new();
        let mut was_interrupted = false;
        for (dest, result) in pending.iter().zip(results) {
            match result {
                Ok(_) => progress.push(format!("{dest}: delivered")),
                Err(DestinationError::Interrupted { kept_bytes, size }) => {
                    was_interrupted = true;
                    progress.push(format!("{dest}: {kept_bytes} of {size} bytes kept"));
                }
                Err(e) => {
                    record_failure(&job.route, dest, &e);
                    progress.push(format!("{dest}: failed ({e})"));
                    errors.insert(dest.to_string(), Failure::of(&e));
                }
            }
        }
        if was_interrupted {
            // Not a failed attempt: failures beside it are decided by the next, whole run.
            return interrupted(progress.join("; "));
        }
        if errors.is_empty() {
            let outcome = JobOutcome::Completed {
                delivered: pending.len(),
                already_done,
            };
            return self
                .finish(job_key, job, attempt, limits, &retry, outcome)
                .await;
        }
        self.settle(job_key, job, attempt, errors).await
    }

    /// Once every destination has its receipt: the route's record loading (when it has
    /// `records`; see [`crate::records`]), then its action on the source file.
    async fn finish(
        &self,
        job_key: &str,
        job: &TransferJob,
        attempt: u32,
        limits: &RunLimits,
        retry: &RetryPolicy,
        outcome: JobOutcome,
    ) -> Result<JobOutcome, JobError> {
        if let Some(plan) = self.records.get(&job.route) {
            use crate::records::{RecordsError, load};
            let Some(source) = self.sources.get(&job.source) else {
                let reason = format!("source {:?} is not configured", job.source);
                let errors = BTreeMap::from([(plan.label(), Failure::permanent(reason))]);
                return self.settle(job_key, job, attempt, errors).await;
            };
            let stopped = || limits.stopped();
            let loading = load(
                self.state.as_ref(),
                source.as_ref(),
                job,
                plan,
                retry,
                &stopped,
            );
            match limits.unless_past(|c| c.drop_delivery, loading).await {
                Some(Ok(_)) => {}
                None | Some(Err(RecordsError::Interrupted { .. })) => {
                    let progress =
                        format!("{}: stopped (a rerun skips what is loaded)", plan.label());
                    tracing::info!(%progress, "job stopped at the deadline; the next invocation continues");
                    return Err(JobError::Interrupted {
                        job_id: job.id.clone(),
                        progress,
                    });
                }
                Some(Err(RecordsError::State(e))) => return Err(e.into()),
                Some(Err(e)) => {
                    tracing::warn!(sink = %plan.sink_name, error = %e, "loading records failed");
                    metrics::add(
                        "RecordLoadFailures",
                        Unit::Count,
                        1.0,
                        &[
                            ("Route", &job.route),
                            ("Sink", &plan.sink_name),
                            ("Kind", e.kind()),
                        ],
                    );
                    let errors = BTreeMap::from([(plan.label(), Failure::of(&e))]);
                    return self.settle(job_key, job, attempt, errors).await;
                }
            }
        }
        self.after_delivery(job_key, job, attempt, retry, outcome)
            .await
    }

    /// Once every destination has its receipt: the route's action on the source file. Deleting
    /// is pinned to the copied version (If-Match); a file already gone counts as done; the
    /// receipts then record what was done. A refused delete (no `d` in the SAS) dead-letters the
    /// job with that reason: the deliveries stand, and a replay retries only the delete.
    async fn after_delivery(
        &self,
        job_key: &str,
        job: &TransferJob,
        attempt: u32,
        retry: &RetryPolicy,
        outcome: JobOutcome,
    ) -> Result<JobOutcome, JobError> {
        if job.after_delivery != AfterDelivery::Delete {
            return Ok(outcome);
        }
        let Some(source) = self.sources.get(&job.source) else {
            let reason = format!("source {:?} is not configured", job.source);
            let errors = BTreeMap::from([("source".to_string(), Failure::permanent(reason))]);
            return self.settle(job_key, job, attempt, errors).await;
        };
        let state = self.state.as_ref();
        let mut receipts = Vec::new();
        for dest in &job.destinations {
            let key = receipt_key(&job.id, dest);
            if let Some((receipt, _)) = retry
                .run("read receipt", || state.get_json::<Receipt>(&key))
                .await?
            {
                receipts.push((key, receipt));
            }
        }
        if !receipts.is_empty() && receipts.iter().all(|(_, r)| r.source_action.is_some()) {
            return Ok(outcome);
        }
        let deleted = match retry
            .run("delete source file", || source.delete(&job.object))
            .await
        {
            // A conditional delete of a file already gone may answer 412: look before judging.
            Err(SourceError::Changed { .. })
                if matches!(
                    source.stat(&job.object.container, &job.object.name).await,
                    Err(SourceError::NotFound(_))
                ) =>
            {
                Ok(false)
            }
            other => other,
        };
        let action = match deleted {
            Ok(true) => "deleted",
            Ok(false) => "already_gone",
            Err(e) => {
                let reason = match &e {
                    SourceError::AccessDenied { code } => format!(
                        "every destination has its receipt, but deleting the source file was refused ({code}): the SAS lacks the `d` (delete) permission that after_delivery: delete needs; add `d` to the SAS or its stored access policy, then replay"
                    ),
                    SourceError::Changed { .. } => {
                        "every destination has its receipt, but the source file was replaced after it was copied: the new version is kept (not deleted)".to_string()
                    }
                    other => format!(
                        "every destination has its receipt, but deleting the source file failed: {other}"
                    ),
                };
                let retryable = e.is_retryable();
                let errors =
                    BTreeMap::from([("source".to_string(), Failure { reason, retryable })]);
                return self.settle(job_key, job, attempt, errors).await;
            }
        };
        let done = SourceAction {
            action: action.to_string(),
            at: now_rfc3339(),
        };
        for (key, mut receipt) in receipts {
            if receipt.source_action.is_none() {
                receipt.source_action = Some(done.clone());
                retry
                    .run("record source action", || {
                        state.put_json(&key, &receipt, PutMode::Overwrite)
                    })
                    .await?;
            }
        }
        tracing::info!(action, file = %job.object.name, "source file dealt with after delivery");
        Ok(outcome)
    }

    /// Decides between another attempt and a dead letter for failed destinations (or the
    /// steps before them: `source`, a sink's `records/<sink>`, `after_delivery`).
    async fn settle(
        &self,
        job_key: &str,
        job: &TransferJob,
        attempt: u32,
        errors: BTreeMap<String, Failure>,
    ) -> Result<JobOutcome, JobError> {
        let state = self.state.as_ref();
        let fkey = failure_key(&job.id);
        let retryable = errors.values().all(|f| f.retryable);
        let reason = errors
            .iter()
            .map(|(d, f)| format!("{d}: {}", f.reason))
            .collect::<Vec<_>>()
            .join("; ");
        if retryable && attempt < self.max_attempts {
            metrics::add("JobsRetried", Unit::Count, 1.0, &[("Route", &job.route)]);
            tracing::warn!(attempt, max_attempts = self.max_attempts, %reason, "job failed; will be retried");
            return Err(JobError::RetryLater {
                job_id: job.id.clone(),
                attempt,
                reason,
            });
        }
        let record = FailureRecord {
            job_id: job.id.clone(),
            job_key: job_key.to_string(),
            reason: if retryable {
                format!("gave up after {attempt} attempts: {reason}")
            } else {
                format!("cannot succeed without intervention: {reason}")
            },
            destinations: errors.into_iter().map(|(d, f)| (d, f.reason)).collect(),
            retryable,
            attempts: attempt,
            failed_at: now_rfc3339(),
        };
        self.retry
            .run("write dead letter", || {
                state.put_json(&fkey, &record, PutMode::Overwrite)
            })
            .await?;
        tracing::error!(attempt, reason = %record.reason, failed_key = %fkey, "job dead-lettered");
        let kind = if retryable {
            DeadLetterKind::AttemptsExhausted
        } else {
            DeadLetterKind::Permanent
        };
        metrics::add(
            "JobsDeadLettered",
            Unit::Count,
            1.0,
            &[("Route", &job.route), ("Kind", kind.as_str())],
        );
        Ok(JobOutcome::DeadLettered {
            reason: record.reason,
        })
    }

    /// The transform step: reads the object's current properties (pub/sub export jobs are saved
    /// without them) and, for a gzip file the route wants decompressed and/or a route that
    /// encrypts, decompresses (under the job's caps) and then encrypts once into a staged file
    /// that every destination then reads.
    async fn prepare(
        &self,
        job: &TransferJob,
        retry: &RetryPolicy,
    ) -> Result<Prepared, DestinationError> {
        let source = self.sources.get(&job.source).ok_or_else(|| {
            DestinationError::Rejected(format!("source {:?} is not configured", job.source))
        })?;
        let object = source
            .resolve(&job.object)
            .await
            .map_err(DestinationError::Source)?;
        let export = job.export.as_ref().filter(|e| e.decompresses());
        let recipients = match job.encrypt {
            false => None,
            true => Some(self.encryption.get(&job.route).cloned().ok_or_else(|| {
                DestinationError::Rejected(format!(
                    "the job asks for OpenPGP encryption but route {:?} has no encrypt recipients \
                     configured; refusing to deliver it unencrypted",
                    job.route
                ))
            })?),
        };
        let (name, content_type) = match export {
            Some(e) => (strip_gz(&object.name), e.content_type.clone()),
            None => (object.name.clone(), object.content_type.clone()),
        };
        let transform = match (export.is_some(), recipients.is_some()) {
            (false, false) => {
                return Ok(Prepared {
                    name,
                    content_type,
                    object,
                    source: source.clone(),
                    staged: None,
                    transform: None,
                    plaintext: None,
                });
            }
            (true, false) => Transform::Gunzip,
            (false, true) => Transform::Pgp,
            (true, true) => Transform::GunzipPgp,
        };
        let limits = export.map(|export| Limits {
            max_bytes: export.max_decompressed_bytes,
            max_line_bytes: export.is_line_oriented().then_some(export.max_line_bytes),
        });
        let literal_name = name.rsplit('/').next().unwrap_or(&name).to_string();
        let (staged, plaintext) = retry
            .run(transform.as_str(), || async {
                let reader = source
                    .open(&object)
                    .await
                    .map_err(DestinationError::Source)?;
                let (reader, digests) = verifying(reader, object.size, object.content_md5.clone());
                let reader = match limits {
                    Some(limits) => gunzip(reader, limits),
                    None => reader,
                };
                let dir = std::env::temp_dir();
                let (staged, plaintext) = match &recipients {
                    Some(r) => {
                        let (staged, plaintext) =
                            encrypt_to_spool(reader, r.clone(), literal_name.clone(), &dir)
                                .await
                                .map_err(|e| DestinationError::from_io("encrypting", &e))?;
                        (staged, Some(plaintext))
                    }
                    None => (
                        Spooled::write(reader, &dir)
                            .await
                            .map_err(|e| DestinationError::from_io("decompressing", &e))?,
                        None,
                    ),
                };
                if digests.get().is_none() {
                    return Err(DestinationError::Verification(
                        if limits.is_some() {
                            "the gzip data ended before the file did"
                        } else {
                            "the encryption ended before the whole file was read"
                        }
                        .into(),
                    ));
                }
                Ok((staged, plaintext))
            })
            .await?;
        tracing::info!(
            source_bytes = object.size,
            bytes = staged.size,
            plaintext_bytes = plaintext.as_ref().map_or(staged.size, |p| p.bytes),
            transform = transform.as_str(),
            "transformed"
        );
        Ok(Prepared {
            name,
            content_type: if recipients.is_some() {
                Some("application/octet-stream".into())
            } else {
                content_type
            },
            object,
            source: source.clone(),
            staged: Some(staged),
            transform: Some(transform),
            plaintext,
        })
    }

    /// Delivers the job's object to one destination (with retries) and writes its receipt.
    /// With cutoffs, the destination is told to stop at `stop` (when known as it starts) and
    /// dropped at `drop_delivery`; either way the result is `Interrupted`.
    async fn deliver(
        &self,
        job: &TransferJob,
        prepared: &Prepared,
        dest_name: &str,
        limits: &RunLimits,
        retry: &RetryPolicy,
    ) -> Result<Receipt, DestinationError> {
        let dest = self.destinations.get(dest_name).ok_or_else(|| {
            DestinationError::Rejected(format!("destination {dest_name:?} is not configured"))
        })?;
        let object = &prepared.object;
        let (size, md5) = match &prepared.staged {
            Some(s) => (s.size, Some(s.md5_base64.clone())),
            None => (object.size, object.content_md5.clone()),
        };
        let name = delivered_name(job, prepared)?;
        let delivery = Delivery {
            name: join_path(job.target_folder.as_deref().unwrap_or(""), &name),
            size,
            content_type: prepared.content_type.clone(),
            content_md5: md5.clone(),
            idempotency_key: format!("{}:{dest_name}", job.id),
            stop_at: limits.stop_at(),
        };
        // Deliveries are retried only until the stop: a retry after it could not finish.
        let delivery_retry = retry.until(limits.stop_at());
        let started = Instant::now();
        let attempts = delivery_retry.run(dest_name, || async {
            if limits.stopped() {
                return Err(DestinationError::Interrupted {
                    kept_bytes: 0,
                    size,
                });
            }
            let reader = match &prepared.staged {
                Some(staged) => staged
                    .open()
                    .await
                    .map_err(|e| DestinationError::from_io("reading the staged file", &e))?,
                None => prepared
                    .source
                    .open(object)
                    .await
                    .map_err(DestinationError::Source)?,
            };
            let (reader, digests) = verifying(reader, size, md5.clone());
            let written = dest.write(&delivery, reader).await?;
            let digests = digests.get().ok_or_else(|| {
                DestinationError::Verification(
                    "destination finished without reading the whole stream".into(),
                )
            })?;
            Ok((written, digests))
        });
        let (written, digests) = limits
            .unless_past(|c| c.drop_delivery, attempts)
            .await
            .unwrap_or_else(|| {
                tracing::warn!(
                    destination = dest_name,
                    "delivery dropped at the deadline (or shutdown): the destination did not stop in time"
                );
                Err(DestinationError::Interrupted {
                    kept_bytes: 0,
                    size,
                })
            })
            .inspect_err(|e| match e {
                DestinationError::Interrupted { .. } => {
                    tracing::info!(destination = dest_name, error = %e, "delivery stopped")
                }
                _ => tracing::warn!(destination = dest_name, error = %e, "delivery failed"),
            })?;
        let elapsed = started.elapsed();
        let receipt = Receipt {
            job_id: job.id.clone(),
            destination: dest_name.to_string(),
            kind: dest.kind().to_string(),
            location: written.location,
            bytes: written.bytes,
            md5: digests.md5_hex,
            md5_verified_against_source: prepared.staged.is_none() && object.content_md5.is_some(),
            sha256: digests.sha256_hex,
            delivered_at: now_rfc3339(),
            duration_ms: elapsed.as_millis() as u64,
            transform: prepared.transform,
            remote_hash: written.remote_hash,
            source_action: None,
            plaintext: prepared.plaintext.as_ref().map(|p| PlaintextDigest {
                bytes: p.bytes,
                sha256: p.sha256_hex.clone(),
            }),
        };
        let state = self.state.as_ref();
        let key = receipt_key(&job.id, dest_name);
        retry
            .run("write receipt", || {
                state.put_json(&key, &receipt, PutMode::Overwrite)
            })
            .await
            .map_err(|e| {
                let reason = format!("delivered but receipt not saved: {e}");
                // A refusal (e.g. a role without put on done/) does not heal by retrying: the
                // job is dead-lettered with the reason, and a replay delivers again.
                if e.is_retryable() {
                    DestinationError::Transient {
                        reason,
                        retry_after: None,
                    }
                } else {
                    DestinationError::Rejected(reason)
                }
            })?;
        dest.receipt_saved(&delivery).await;
        let dims = [("Route", job.route.as_str()), ("Destination", dest_name)];
        metrics::add("FilesDelivered", Unit::Count, 1.0, &dims);
        metrics::add("BytesDelivered", Unit::Bytes, receipt.bytes as f64, &dims);
        metrics::sample(
            "DeliveryDuration",
            Unit::Milliseconds,
            elapsed.as_secs_f64() * 1000.0,
            &dims,
        );
        let mb_per_s = receipt.bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-6);
        tracing::info!(destination = dest_name, location = %receipt.location, bytes = receipt.bytes, ms = receipt.duration_ms, mb_per_s = format!("{mb_per_s:.1}"), "delivered");
        Ok(receipt)
    }
}

/// Counts one destination's failed attempt, by the failure's kind.
fn record_failure(route: &str, destination: &str, e: &DestinationError) {
    metrics::add(
        "DeliveryFailures",
        Unit::Count,
        1.0,
        &[
            ("Route", route),
            ("Destination", destination),
            ("Kind", e.kind()),
        ],
    );
}

#[cfg(test)]
mod tests {
    //! The fast tier of the deadline rules: in-memory state, source and destinations.

    use async_trait::async_trait;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::ByteReader;
    use crate::dest::Written;
    use crate::source::{SourceError, SourceObject};
    use crate::state::MemoryStateStore;

    const SIZE: u64 = 1000;
    const JOB_KEY: &str = "jobs/r/j1.json";

    struct MemSource;

    #[async_trait]
    impl Source for MemSource {
        async fn stat(&self, _: &str, _: &str) -> Result<SourceObject, SourceError> {
            unreachable!("jobs carry their object")
        }
        async fn open(&self, _: &SourceObject) -> Result<ByteReader, SourceError> {
            Ok(Box::pin(std::io::Cursor::new(vec![7u8; SIZE as usize])))
        }
    }

    /// How a fake destination behaves when its delivery has a stop instant (without one, every
    /// kind delivers, except `Fails`).
    #[derive(Clone, Copy)]
    enum Kind {
        /// Delivers at once.
        Delivers,
        /// Waits for the stop instant, then keeps 400 bytes and returns `Interrupted`.
        StopsInTime,
        /// Ignores the stop instant and never returns.
        Hangs,
        /// Fails with a retryable error.
        Fails,
        /// Takes this long, then delivers (whatever the stop instant).
        Slow(Duration),
    }

    struct Fake(Kind);

    #[async_trait]
    impl Destination for Fake {
        fn kind(&self) -> &'static str {
            "fake"
        }
        async fn write(
            &self,
            delivery: &Delivery,
            mut body: ByteReader,
        ) -> Result<Written, DestinationError> {
            match (self.0, delivery.stop_at) {
                (Kind::Fails, _) => {
                    return Err(DestinationError::Transient {
                        reason: "injected".into(),
                        retry_after: None,
                    });
                }
                (Kind::StopsInTime, Some(stop)) => {
                    tokio::time::sleep_until(stop).await;
                    return Err(DestinationError::Interrupted {
                        kept_bytes: 400,
                        size: delivery.size,
                    });
                }
                (Kind::Hangs, Some(_)) => std::future::pending::<()>().await,
                (Kind::Slow(d), _) => tokio::time::sleep(d).await,
                _ => {}
            }
            let mut sink = Vec::new();
            body.read_to_end(&mut sink).await.unwrap();
            Ok(Written {
                location: format!("fake://{}", delivery.name),
                bytes: sink.len() as u64,
                remote_hash: None,
            })
        }
    }

    /// An engine (max_attempts 3) over a stored job to the named fake destinations.
    async fn engine(
        dests: &[(&str, Kind)],
        margin: Duration,
    ) -> (TransferEngine, Arc<MemoryStateStore>) {
        let state = Arc::new(MemoryStateStore::new());
        let job = TransferJob {
            id: "j1".into(),
            route: "r".into(),
            source: "src".into(),
            object: SourceObject {
                container: "c".into(),
                name: "f.bin".into(),
                size: SIZE,
                etag: "0x1".into(),
                content_md5: None,
                content_type: None,
                url: None,
            },
            destinations: dests.iter().map(|(n, _)| n.to_string()).collect(),
            target_folder: None,
            name_template: None,
            after_delivery: Default::default(),
            encrypt: false,
            correlation_id: "corr".into(),
            created_at: now_rfc3339(),
            export: None,
        };
        state
            .put_json(JOB_KEY, &job, PutMode::Create)
            .await
            .unwrap();
        let sources = BTreeMap::from([("src".to_string(), Arc::new(MemSource) as Arc<dyn Source>)]);
        let destinations = dests
            .iter()
            .map(|(n, k)| (n.to_string(), Arc::new(Fake(*k)) as Arc<dyn Destination>))
            .collect();
        let retry = RetryPolicy {
            retries: 2,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
            ..RetryPolicy::default()
        };
        let engine = TransferEngine::new(state.clone(), sources, destinations, retry, 3)
            .with_deadline_margin(margin);
        (engine, state)
    }

    fn has(state: &MemoryStateStore, key: &str) -> bool {
        state.keys().iter().any(|k| k == key)
    }

    /// How many reads the store has served.
    fn reads(state: &MemoryStateStore) -> usize {
        state
            .requests()
            .iter()
            .filter(|r| r.starts_with("get "))
            .count()
    }

    #[tokio::test]
    async fn interrupted_deliveries_end_the_run_before_the_deadline_and_never_dead_letter() {
        let dests = [
            ("ok", Kind::Delivers),
            ("s3ish", Kind::StopsInTime),
            ("stuck", Kind::Hangs),
        ];
        let (engine, state) = engine(&dests, Duration::from_millis(400)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(600);
        // Far past max_attempts: an interruption still is no failure.
        let result = engine.run_until(JOB_KEY, 99, Some(deadline)).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "returned after the deadline"
        );
        let Err(JobError::Interrupted { progress, .. }) = result else {
            panic!("expected an interruption: {result:?}");
        };
        assert!(progress.contains("ok: delivered"), "{progress}");
        assert!(
            progress.contains("s3ish: 400 of 1000 bytes kept"),
            "{progress}"
        );
        assert!(
            progress.contains("stuck: 0 of 1000 bytes kept"),
            "{progress}"
        );
        assert!(!has(&state, &failure_key("j1")), "not dead-lettered");
        assert!(has(&state, &receipt_key("j1", "ok")));
        assert!(!has(&state, &receipt_key("j1", "s3ish")));
        // The next invocation (no deadline here) delivers the rest.
        let outcome = engine.run(JOB_KEY, 100).await.unwrap();
        assert_eq!(
            outcome,
            JobOutcome::Completed {
                delivered: 2,
                already_done: 1
            }
        );
    }

    #[tokio::test]
    async fn a_failure_beside_an_interruption_is_judged_by_the_next_whole_run() {
        let dests = [("bad", Kind::Fails), ("s3ish", Kind::StopsInTime)];
        let (engine, state) = engine(&dests, Duration::from_millis(400)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(600);
        let result = engine.run_until(JOB_KEY, 3, Some(deadline)).await;
        assert!(
            matches!(result, Err(JobError::Interrupted { .. })),
            "{result:?}"
        );
        assert!(!has(&state, &failure_key("j1")));
        // Without an interruption the failure at the last attempt dead-letters as before.
        let outcome = engine.run(JOB_KEY, 3).await.unwrap();
        assert!(
            matches!(outcome, JobOutcome::DeadLettered { .. }),
            "{outcome:?}"
        );
        assert!(has(&state, &failure_key("j1")));
    }

    #[tokio::test]
    async fn a_job_that_asks_for_encryption_is_never_delivered_unencrypted() {
        // The route lost its `encrypt` (or blob-copy has no keys for it): refuse, never plaintext.
        let (engine, state) = engine(&[("ok", Kind::Delivers)], Duration::from_secs(5)).await;
        let (mut job, _) = state
            .get_json::<TransferJob>(JOB_KEY)
            .await
            .unwrap()
            .unwrap();
        job.encrypt = true;
        state
            .put_json(JOB_KEY, &job, PutMode::Overwrite)
            .await
            .unwrap();
        let outcome = engine.run(JOB_KEY, 1).await.unwrap();
        assert!(
            matches!(&outcome, JobOutcome::DeadLettered { reason } if reason.contains("refusing to deliver it unencrypted")),
            "{outcome:?}"
        );
        assert!(!has(&state, &receipt_key("j1", "ok")));
    }

    #[tokio::test]
    async fn no_job_starts_within_the_margin() {
        let (engine, state) = engine(&[("ok", Kind::Delivers)], Duration::from_secs(5)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        let result = engine.run_until(JOB_KEY, 1, Some(deadline)).await;
        assert!(
            matches!(&result, Err(JobError::Interrupted { progress, .. }) if progress.contains("not started")),
            "{result:?}"
        );
        assert_eq!(reads(&state), 0, "the job was not even read");
        assert!(!has(&state, &receipt_key("j1", "ok")));
    }

    #[tokio::test]
    async fn a_stop_signal_lets_short_deliveries_finish_drops_long_ones_and_starts_nothing() {
        let dests = [
            ("quick", Kind::Slow(Duration::from_millis(50))),
            ("long", Kind::Slow(Duration::from_secs(30))),
        ];
        let (engine, state) = engine(&dests, Duration::from_secs(5)).await;
        let (handle, signal) = stop_signal();
        let engine = engine.with_stop_signal(signal);
        let run = engine.run(JOB_KEY, 99);
        tokio::pin!(run);
        // Both deliveries are under way when the process is told to stop.
        tokio::select! {
            r = &mut run => panic!("finished before the stop: {r:?}"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        handle.stop(Duration::from_millis(800));
        assert!(handle.is_stopped());
        let result = run.await;
        let Err(JobError::Interrupted { progress, .. }) = result else {
            panic!("expected an interruption: {result:?}");
        };
        assert!(progress.contains("quick: delivered"), "{progress}");
        assert!(
            progress.contains("long: 0 of 1000 bytes kept"),
            "{progress}"
        );
        assert!(has(&state, &receipt_key("j1", "quick")));
        assert!(!has(&state, &receipt_key("j1", "long")));
        assert!(!has(&state, &failure_key("j1")), "never dead-lettered");
        // Once stopped, no run starts at all.
        let gets = reads(&state);
        let again = engine.run(JOB_KEY, 1).await;
        assert!(
            matches!(&again, Err(JobError::Interrupted { progress, .. }) if progress.contains("not started")),
            "{again:?}"
        );
        assert_eq!(reads(&state), gets, "nothing was read");
    }

    // ---- Deliveries, retries, dead letters, receipts and after_delivery on in-process parts:
    // a memory source, the local_dir destination into a temporary directory, fakes.

    use crate::dest::local_dir::LocalDirDestination;
    use crate::testing::MemorySource;

    /// Bytes that are not all alike, so a shifted or truncated copy shows.
    fn content(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// A destination that fails `failures` times with a retryable error, then delivers.
    struct Flaky {
        failures: std::sync::atomic::AtomicU32,
        writes: std::sync::atomic::AtomicU32,
    }

    #[async_trait]
    impl Destination for Flaky {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        async fn write(
            &self,
            delivery: &Delivery,
            body: ByteReader,
        ) -> Result<Written, DestinationError> {
            use std::sync::atomic::Ordering::SeqCst;
            self.writes.fetch_add(1, SeqCst);
            if self
                .failures
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(DestinationError::Transient {
                    reason: "flaky".into(),
                    retry_after: None,
                });
            }
            Fake(Kind::Delivers).write(delivery, body).await
        }
    }

    /// Refuses every write for good (a 4xx that retrying cannot fix).
    struct Refuses;

    #[async_trait]
    impl Destination for Refuses {
        fn kind(&self) -> &'static str {
            "refuses"
        }
        async fn write(&self, _: &Delivery, _: ByteReader) -> Result<Written, DestinationError> {
            Err(DestinationError::Rejected("403 by policy".into()))
        }
    }

    /// An engine (max_attempts 3) over a job for `in/report.csv` in a memory source, to `dests`.
    async fn engine_over(
        source: Arc<MemorySource>,
        body: &[u8],
        dests: Vec<(&str, Arc<dyn Destination>)>,
        after_delivery: AfterDelivery,
    ) -> (TransferEngine, Arc<MemoryStateStore>) {
        let state = Arc::new(MemoryStateStore::new());
        let object = source.put("c", "in/report.csv", body.to_vec());
        let job = TransferJob {
            id: "j1".into(),
            route: "r".into(),
            source: "src".into(),
            object,
            destinations: dests.iter().map(|(n, _)| n.to_string()).collect(),
            target_folder: None,
            name_template: None,
            after_delivery,
            encrypt: false,
            correlation_id: "corr".into(),
            created_at: now_rfc3339(),
            export: None,
        };
        state
            .put_json(JOB_KEY, &job, PutMode::Create)
            .await
            .unwrap();
        let sources = BTreeMap::from([("src".to_string(), source as Arc<dyn Source>)]);
        let destinations = dests.into_iter().map(|(n, d)| (n.to_string(), d)).collect();
        let retry = RetryPolicy {
            retries: 2,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
            ..RetryPolicy::default()
        };
        let engine = TransferEngine::new(state.clone(), sources, destinations, retry, 3);
        (engine, state)
    }

    async fn receipt(state: &MemoryStateStore, dest: &str) -> Option<Receipt> {
        state
            .get_json::<Receipt>(&receipt_key("j1", dest))
            .await
            .unwrap()
            .map(|(r, _)| r)
    }

    async fn dead_letter(state: &MemoryStateStore) -> Option<FailureRecord> {
        state
            .get_json::<FailureRecord>(&failure_key("j1"))
            .await
            .unwrap()
            .map(|(r, _)| r)
    }

    #[tokio::test]
    async fn a_job_is_delivered_byte_for_byte_with_one_receipt_per_destination() {
        use md5::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let body = content(300_000);
        let dests: Vec<(&str, Arc<dyn Destination>)> = vec![
            ("disk", Arc::new(LocalDirDestination::new(dir.path()))),
            ("other", Arc::new(Fake(Kind::Delivers))),
        ];
        let source = Arc::new(MemorySource::default());
        let (engine, state) = engine_over(source, &body, dests, AfterDelivery::None).await;
        let outcome = engine.run(JOB_KEY, 1).await.unwrap();
        assert_eq!(
            outcome,
            JobOutcome::Completed {
                delivered: 2,
                already_done: 0
            }
        );
        let delivered = std::fs::read(dir.path().join("in/report.csv")).unwrap();
        assert!(delivered == body, "the file arrived byte for byte");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("in"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
        let r = receipt(&state, "disk").await.expect("a receipt for disk");
        assert_eq!(r.bytes, body.len() as u64);
        assert_eq!(r.md5, Some(hex::encode(md5::Md5::digest(&body))));
        assert_eq!(r.sha256, hex::encode(sha2::Sha256::digest(&body)));
        assert!(r.md5_verified_against_source, "the source had an MD5");
        assert_eq!(r.kind, "local_dir");
        assert_eq!(r.source_action, None);
        assert!(receipt(&state, "other").await.is_some());
        assert!(dead_letter(&state).await.is_none());
        // A redelivered notification finds both receipts and writes nothing.
        let puts_before = state
            .requests()
            .iter()
            .filter(|r| r.starts_with("put"))
            .count();
        let again = engine.run(JOB_KEY, 2).await.unwrap();
        assert_eq!(
            again,
            JobOutcome::Completed {
                delivered: 0,
                already_done: 2
            }
        );
        let puts_after = state
            .requests()
            .iter()
            .filter(|r| r.starts_with("put"))
            .count();
        assert_eq!(puts_before, puts_after, "nothing written on a rerun");
    }

    /// Delivers, and notes whether its receipt was already stored each time the engine says it
    /// was saved.
    #[derive(Default)]
    struct Remembers {
        state: std::sync::OnceLock<Arc<MemoryStateStore>>,
        saved: std::sync::Mutex<Vec<(String, bool)>>,
    }

    #[async_trait]
    impl Destination for Remembers {
        fn kind(&self) -> &'static str {
            "remembers"
        }
        async fn write(
            &self,
            delivery: &Delivery,
            body: ByteReader,
        ) -> Result<Written, DestinationError> {
            Fake(Kind::Delivers).write(delivery, body).await
        }
        async fn receipt_saved(&self, delivery: &Delivery) {
            let state = self.state.get().expect("state set before the run");
            let stored = has(state, &receipt_key("j1", "keeps"));
            let mut saved = self.saved.lock().unwrap();
            saved.push((delivery.idempotency_key.clone(), stored));
        }
    }

    #[tokio::test]
    async fn a_destination_hears_of_its_receipt_only_once_it_is_stored() {
        let keeps = Arc::new(Remembers::default());
        let source = Arc::new(MemorySource::default());
        let dests: Vec<(&str, Arc<dyn Destination>)> =
            vec![("keeps", keeps.clone()), ("refuses", Arc::new(Refuses))];
        let (engine, state) = engine_over(source, &content(10), dests, AfterDelivery::None).await;
        keeps.state.set(state.clone()).ok();
        // One destination refuses for good: the job dead-letters, the other keeps its receipt.
        let _ = engine.run(JOB_KEY, 1).await;
        assert!(receipt(&state, "keeps").await.is_some());
        assert_eq!(
            *keeps.saved.lock().unwrap(),
            [("j1:keeps".to_string(), true)],
            "told once, after the receipt was stored"
        );
        // A rerun finds the receipt and delivers nothing: nothing to be told either.
        let _ = engine.run(JOB_KEY, 2).await;
        assert_eq!(keeps.saved.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_within_the_run() {
        let flaky = Arc::new(Flaky {
            failures: 2.into(),
            writes: 0.into(),
        });
        let source = Arc::new(MemorySource::default());
        let dests: Vec<(&str, Arc<dyn Destination>)> = vec![("flaky", flaky.clone())];
        let (engine, state) = engine_over(source, &content(10), dests, AfterDelivery::None).await;
        let outcome = engine.run(JOB_KEY, 1).await.unwrap();
        assert!(
            matches!(outcome, JobOutcome::Completed { delivered: 1, .. }),
            "{outcome:?}"
        );
        assert_eq!(flaky.writes.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(receipt(&state, "flaky").await.unwrap().bytes, 10);
    }

    #[tokio::test]
    async fn a_failing_destination_is_retried_by_attempt_then_dead_lettered_and_the_other_keeps_its_receipt()
     {
        let source = Arc::new(MemorySource::default());
        let dests: Vec<(&str, Arc<dyn Destination>)> = vec![
            ("ok", Arc::new(Fake(Kind::Delivers))),
            ("bad", Arc::new(Fake(Kind::Fails))),
        ];
        let (engine, state) = engine_over(source, &content(10), dests, AfterDelivery::None).await;
        let first = engine.run(JOB_KEY, 1).await;
        assert!(
            matches!(&first, Err(JobError::RetryLater { attempt: 1, reason, .. }) if reason.contains("bad: ") && reason.contains("injected")),
            "{first:?}"
        );
        assert!(first.unwrap_err().is_retryable());
        assert!(
            dead_letter(&state).await.is_none(),
            "not before the last attempt"
        );
        assert!(receipt(&state, "ok").await.is_some());
        assert!(receipt(&state, "bad").await.is_none());
        let last = engine.run(JOB_KEY, 3).await.unwrap();
        assert!(
            matches!(&last, JobOutcome::DeadLettered { reason } if reason.starts_with("gave up after 3 attempts")),
            "{last:?}"
        );
        let record = dead_letter(&state).await.expect("a dead letter");
        assert_eq!(record.job_key, JOB_KEY);
        assert_eq!(record.attempts, 3);
        assert!(record.retryable);
        assert_eq!(
            record.destinations.keys().collect::<Vec<_>>(),
            vec!["bad"],
            "only the failing destination is named"
        );
        // A dead-lettered job is not run again until it is replayed.
        assert_eq!(
            engine.run(JOB_KEY, 4).await.unwrap(),
            JobOutcome::AlreadyFailed
        );
    }

    #[tokio::test]
    async fn a_permanent_refusal_dead_letters_at_the_first_attempt() {
        let source = Arc::new(MemorySource::default());
        let dests: Vec<(&str, Arc<dyn Destination>)> = vec![("partner", Arc::new(Refuses))];
        let (engine, state) = engine_over(source, &content(10), dests, AfterDelivery::None).await;
        let outcome = engine.run(JOB_KEY, 1).await.unwrap();
        assert!(
            matches!(&outcome, JobOutcome::DeadLettered { reason } if reason.starts_with("cannot succeed without intervention") && reason.contains("403 by policy")),
            "{outcome:?}"
        );
        let record = dead_letter(&state).await.unwrap();
        assert!(!record.retryable);
        assert_eq!(record.attempts, 1);
    }

    #[tokio::test]
    async fn after_delivery_delete_removes_the_source_file_and_says_so_in_every_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let source = Arc::new(MemorySource::default());
        let dests: Vec<(&str, Arc<dyn Destination>)> = vec![
            ("disk", Arc::new(LocalDirDestination::new(dir.path()))),
            ("other", Arc::new(Fake(Kind::Delivers))),
        ];
        let (engine, state) =
            engine_over(source.clone(), &content(64), dests, AfterDelivery::Delete).await;
        let outcome = engine.run(JOB_KEY, 1).await.unwrap();
        assert!(
            matches!(outcome, JobOutcome::Completed { delivered: 2, .. }),
            "{outcome:?}"
        );
        assert!(!source.has("c", "in/report.csv"));
        assert_eq!(source.deletes(), vec!["c/in/report.csv"]);
        for dest in ["disk", "other"] {
            let action = receipt(&state, dest).await.unwrap().source_action;
            assert_eq!(
                action.map(|a| a.action).as_deref(),
                Some("deleted"),
                "{dest}"
            );
        }
        assert_eq!(
            std::fs::read(dir.path().join("in/report.csv")).unwrap(),
            content(64)
        );
        // A rerun deletes nothing more.
        engine.run(JOB_KEY, 2).await.unwrap();
        assert_eq!(source.deletes().len(), 1);
    }

    #[tokio::test]
    async fn a_refused_source_delete_dead_letters_the_job_and_keeps_the_file_and_the_deliveries() {
        let source = Arc::new(MemorySource::default());
        source.deny_delete("AuthorizationPermissionMismatch");
        let dests: Vec<(&str, Arc<dyn Destination>)> = vec![("ok", Arc::new(Fake(Kind::Delivers)))];
        let (engine, state) =
            engine_over(source.clone(), &content(64), dests, AfterDelivery::Delete).await;
        let outcome = engine.run(JOB_KEY, 1).await.unwrap();
        assert!(
            matches!(&outcome, JobOutcome::DeadLettered { reason } if reason.contains("the SAS lacks the `d` (delete) permission")),
            "{outcome:?}"
        );
        assert!(source.has("c", "in/report.csv"), "the file stays");
        let r = receipt(&state, "ok").await.expect("the delivery stands");
        assert_eq!(r.source_action, None);
    }
}
