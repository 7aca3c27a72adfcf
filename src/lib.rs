//! The local runner: the Lambda handlers wired together in one process, so the whole pipeline
//! runs on a laptop or a single VM (`ferry serve`) against local components. The webhook server
//! stands in for the function URL, an in-process queue for S3 notifications -> SQS, redelivery
//! with a delay for SQS's visibility timeout, and timers for EventBridge Scheduler (view sync,
//! token-refresh, export-pull).
//!
//! It keeps the promises SQS keeps in AWS:
//! - nothing is stranded: on start every job that has neither all its receipts nor a dead letter
//!   is queued again ([`pending_jobs`]), so a crash or restart loses nothing;
//! - bounded work: at most `concurrency` jobs run at once; a failed job waits for its redelivery
//!   without holding a slot, and a job already queued or running is not queued twice;
//! - a clean stop ([`LocalRunner::shutdown`]): no new work is taken (the webhook answers 503 with
//!   `Retry-After`), running copies are told to stop through the engine's
//!   [`StopSignal`](ferry_shared::engine::StopSignal) and get the grace period to finish or keep
//!   what they can resume (S3 multipart keeps its parts and checkpoint); whatever was interrupted
//!   is neither dead-lettered nor lost: the next start picks it up.

pub mod check;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "demo")]
pub mod demo_views;
pub mod inspect;

use std::collections::{BTreeSet, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_shared::engine::{StopHandle, TransferEngine, stop_signal};
use ferry_shared::job::TransferJob;
use ferry_shared::layout::{Prefix, failure_key, receipt_key};
use ferry_shared::services::Services;
use ferry_shared::state::{StateStore, StateStoreExt};
use ferry_shared::view_sync::ViewSync;
use ferry_shared::webhook::WebhookService;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_runtime::{Context, LambdaEvent};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

/// Jobs the worker runs at once unless told otherwise (`ferry serve --concurrency N`).
pub const DEFAULT_CONCURRENCY: usize = 4;
/// How long a stop waits for running copies unless told otherwise (`ferry serve --grace-period`).
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// Seconds a webhook sender is asked to wait (`Retry-After`) while the runner is stopping.
const STOPPING_RETRY_AFTER_SECS: u64 = 30;

/// A job key waiting to run, with its delivery count.
#[derive(Debug, Clone)]
pub struct Queued {
    /// `jobs/<route>/<id>.json`
    pub job_key: String,
    /// 1 on first delivery.
    pub attempt: u32,
}

/// How the job worker runs jobs.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    /// Jobs run at once (at least 1).
    pub concurrency: usize,
    /// Wait before a failed job runs again (SQS's visibility timeout); the wait holds no slot.
    pub redelivery_delay: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            redelivery_delay: Duration::from_secs(10),
        }
    }
}

/// The queue every producer (webhook, start-up scan, export-pull) offers job keys to. A key
/// stays "known" from its offer until its job ends (delivered, dead-lettered, missing), so a
/// duplicate offer while it is queued, running or waiting for redelivery is dropped: two runs
/// of one job at once could both deliver.
#[derive(Clone)]
struct JobQueue {
    tx: mpsc::UnboundedSender<Queued>,
    shared: Arc<QueueState>,
}

#[derive(Default)]
struct QueueState {
    /// Queued, running or waiting for redelivery.
    known: Mutex<HashSet<String>>,
    /// Running now.
    running: Mutex<BTreeSet<String>>,
    /// Ended by the stop without finishing (left for the next start).
    interrupted: Mutex<BTreeSet<String>>,
    /// Set by the stop: offers are refused, the webhook answers 503.
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl JobQueue {
    fn new() -> (Self, mpsc::UnboundedReceiver<Queued>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Self {
            tx,
            shared: Arc::default(),
        };
        (queue, rx)
    }

    /// Queues a first delivery of `job_key` unless it is known already or the runner stops.
    fn offer(&self, job_key: &str) -> bool {
        if self.closed() || !lock(&self.shared.known).insert(job_key.to_string()) {
            return false;
        }
        self.tx
            .send(Queued {
                job_key: job_key.to_string(),
                attempt: 1,
            })
            .is_ok()
    }

    fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    fn forget(&self, job_key: &str) {
        lock(&self.shared.known).remove(job_key);
    }
}

/// The job worker's handles, for the stop.
struct Worker {
    slots: Arc<Semaphore>,
    concurrency: usize,
    /// Tells the dispatcher and the redelivery waits to end.
    stopping: watch::Sender<bool>,
    /// Tells the engine's runs to stop.
    engine_stop: StopHandle,
    dispatcher: tokio::task::JoinHandle<()>,
}

/// What a stop left behind (all of it is picked up by the next start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Jobs that were running and ended early (their copies keep what they can resume).
    pub interrupted: Vec<String>,
    /// Jobs still running when the grace period was over (dropped with the process).
    pub abandoned: Vec<String>,
    /// Jobs queued or waiting for redelivery that did not start.
    pub not_started: usize,
}

/// The running local pipeline.
pub struct LocalRunner {
    /// Address the webhook server listens on (when the config has a `webhook` section).
    pub webhook_addr: Option<SocketAddr>,
    queue: JobQueue,
    worker: Option<Worker>,
    /// The webhook server (answers 503 while stopping, until the runner is dropped).
    webhook_task: Option<tokio::task::JoinHandle<()>>,
    /// Schedules that take work in (export-pull): ended by the stop.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LocalRunner {
    fn drop(&mut self) {
        for t in self.tasks.iter().chain(&self.webhook_task) {
            t.abort();
        }
        if let Some(w) = &self.worker {
            w.dispatcher.abort();
        }
    }
}

impl LocalRunner {
    /// Starts the webhook server on `listen` (when the config has a `webhook` section) and the
    /// job worker with the default concurrency; see [`start_with_options`](Self::start_with_options).
    pub async fn start(
        services: &Services,
        listen: SocketAddr,
        redelivery_delay: Duration,
    ) -> anyhow::Result<Self> {
        let options = WorkerOptions {
            redelivery_delay,
            ..WorkerOptions::default()
        };
        Self::start_with(services, listen, Some(options)).await
    }

    /// Starts the webhook server on `listen` (when the config has a `webhook` section) and the
    /// job worker. Every job written before (by a previous run that crashed or was stopped)
    /// that has neither all its receipts nor a dead letter is queued on start.
    pub async fn start_with_options(
        services: &Services,
        listen: SocketAddr,
        options: WorkerOptions,
    ) -> anyhow::Result<Self> {
        Self::start_with(services, listen, Some(options)).await
    }

    /// Starts only the webhook server: jobs are written but not run (ingest benchmarks, or a
    /// worker elsewhere).
    pub async fn start_ingest_only(
        services: &Services,
        listen: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::start_with(services, listen, None).await
    }

    async fn start_with(
        services: &Services,
        listen: SocketAddr,
        worker: Option<WorkerOptions>,
    ) -> anyhow::Result<Self> {
        let (queue, rx) = JobQueue::new();
        let bucket = services.config.state.bucket.clone();
        let mut running_worker = None;
        if let Some(options) = worker {
            let concurrency = options.concurrency.max(1);
            let (engine_stop, signal) = stop_signal();
            let engine = Arc::new(services.engine().await?.with_stop_signal(signal));
            let slots = Arc::new(Semaphore::new(concurrency));
            let (stopping, stopped) = watch::channel(false);
            let dispatcher = tokio::spawn(work(
                engine,
                bucket,
                rx,
                queue.clone(),
                slots.clone(),
                options.redelivery_delay,
                stopped,
            ));
            let pending = pending_jobs(services.state.as_ref()).await?;
            let mut offered = 0usize;
            for key in &pending {
                offered += usize::from(queue.offer(key));
            }
            tracing::info!(
                pending = pending.len(),
                queued = offered,
                concurrency,
                "picked up the jobs a previous run left unfinished"
            );
            running_worker = Some(Worker {
                slots,
                concurrency,
                stopping,
                engine_stop,
                dispatcher,
            });
        }
        let mut webhook_addr = None;
        let mut webhook_task = None;
        if services.config.webhook.is_some() {
            let webhook = Arc::new(services.webhook().await?);
            let listener = TcpListener::bind(listen).await?;
            let bound = listener.local_addr()?;
            webhook_addr = Some(bound);
            let runs_jobs = running_worker.is_some();
            webhook_task = Some(tokio::spawn(serve(
                listener,
                webhook,
                queue.clone(),
                runs_jobs,
            )));
            tracing::info!(webhook_addr = %bound, worker = runs_jobs, "local runner listening");
        }
        Ok(Self {
            webhook_addr,
            queue,
            worker: running_worker,
            webhook_task,
            tasks: Vec::new(),
        })
    }

    /// Runs the pub/sub export functions on a timer, as EventBridge Scheduler would: every
    /// `every`, token-refresh, then export-pull for `every` (at least the sources'
    /// `deadline_margin_secs` + 5 s); its new jobs are queued.
    /// Does nothing when the config has no pub/sub export source.
    pub async fn start_export_schedule(
        &mut self,
        services: &Services,
        every: Duration,
    ) -> anyhow::Result<()> {
        let caches = services.token_caches().await?;
        if caches.is_empty() {
            return Ok(());
        }
        let pullers = services.export_pullers().await?;
        // Each run needs more than its margin before the "deadline" to receive anything.
        let budget = pullers
            .iter()
            .map(|p| p.deadline_margin() + Duration::from_secs(5))
            .max()
            .unwrap_or_default()
            .max(every);
        let queue = self.queue.clone();
        let runs_jobs = self.worker.is_some();
        self.tasks.push(tokio::spawn(async move {
            loop {
                let started = Instant::now();
                let event = LambdaEvent::new(serde_json::json!({}), Context::default());
                if let Err(e) = token_refresh::handle(&caches, event).await {
                    tracing::error!(error = %e, "token-refresh failed");
                }
                match export_pull::run(&pullers, budget).await {
                    Ok(summaries) if runs_jobs => {
                        for key in summaries.into_iter().flat_map(|s| s.job_keys) {
                            queue.offer(&key);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "export-pull failed"),
                }
                tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
            }
        }));
        tracing::info!(
            every_secs = every.as_secs(),
            "pub/sub export schedule running"
        );
        Ok(())
    }

    /// Runs the reconciliation sweep on a timer, as EventBridge Scheduler runs the reconcile
    /// function: the first sweep at once, then every `every`; the jobs it creates (files whose
    /// webhook never came) are queued. Does nothing when the config has no webhook route.
    pub async fn start_reconcile_schedule(
        &mut self,
        services: &Services,
        every: Duration,
    ) -> anyhow::Result<()> {
        if services.config.webhook_routes().next().is_none() {
            return Ok(());
        }
        let reconciler = services.reconciler().await?;
        let queue = self.queue.clone();
        let runs_jobs = self.worker.is_some();
        self.tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for run in 1u64.. {
                ticks.tick().await;
                let options = ferry_shared::reconcile::SweepOptions {
                    correlation_id: format!("reconcile-{}-{run}", std::process::id()),
                    ..Default::default()
                };
                match reconciler.sweep(&options).await {
                    Ok(summary) => {
                        // Route errors (e.g. a SAS without `l`) are logged by the sweep.
                        tracing::info!(summary = %serde_json::to_value(&summary).unwrap_or_default(), "scheduled reconcile sweep done");
                        if runs_jobs {
                            for key in summary.routes.iter().flat_map(|r| &r.job_keys) {
                                queue.offer(key);
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "scheduled reconcile sweep failed"),
                }
            }
        }));
        tracing::info!(every_secs = every.as_secs(), "reconcile schedule running");
        Ok(())
    }

    /// Queues a job key, as an S3 notification would (a key already queued or running is not
    /// queued twice; nothing is queued once the runner stops).
    pub fn enqueue(&self, job_key: &str) {
        if self.worker.is_some() {
            self.queue.offer(job_key);
        }
    }

    /// Stops the runner: takes no more work (the webhook answers 503 with `Retry-After`, the
    /// export schedule ends), tells running copies to stop, and waits at most `grace` for them.
    /// Whatever did not finish is left as it is in the state store, for the next start.
    pub async fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        self.queue.shared.closed.store(true, Ordering::SeqCst);
        // The export schedule takes work in; a message it had not saved yet is redelivered by
        // the broker. The webhook server stays up to answer 503 until the process ends.
        for t in &self.tasks {
            t.abort();
        }
        let Some(worker) = self.worker.take() else {
            return ShutdownReport::default();
        };
        let _ = worker.stopping.send(true);
        worker.engine_stop.stop(grace);
        let running = lock(&self.queue.shared.running).clone();
        tracing::info!(
            running = running.len(),
            grace_secs = grace.as_secs_f64(),
            "stopping: no new jobs; running copies are told to stop"
        );
        // Every slot back = every job run ended.
        let all = u32::try_from(worker.concurrency).unwrap_or(u32::MAX);
        let finished = tokio::time::timeout(grace, worker.slots.acquire_many(all))
            .await
            .is_ok();
        worker.dispatcher.abort();
        let shared = &self.queue.shared;
        let abandoned: Vec<String> = if finished {
            Vec::new()
        } else {
            lock(&shared.running).iter().cloned().collect()
        };
        let interrupted: Vec<String> = lock(&shared.interrupted).iter().cloned().collect();
        let not_started = lock(&shared.known)
            .iter()
            .filter(|k| !interrupted.contains(k) && !abandoned.contains(k))
            .count();
        let report = ShutdownReport {
            interrupted,
            abandoned,
            not_started,
        };
        tracing::warn!(
            interrupted = %report.interrupted.join(", "),
            abandoned = %report.abandoned.join(", "),
            not_started = report.not_started,
            "stopped: the interrupted and unstarted jobs are picked up by the next start"
        );
        report
    }
}

/// Clears a job's dead letter so the next run (or a re-put of the job object) retries it. An
/// operator's action (`ferry replay`), run with the operator's credentials: no function's role
/// may delete under `failed/`.
pub async fn clear_failure(state: &dyn StateStore, job_id: &str) -> anyhow::Result<()> {
    state
        .delete(&ferry_shared::layout::failure_key(job_id))
        .await?;
    Ok(())
}

/// Jobs read at once while looking for unfinished ones.
const SCAN_CONCURRENCY: usize = 16;

/// Job keys under `jobs/` that lack a receipt for some destination and are not dead-lettered,
/// in key order. Three listings (`jobs/`, `done/`, `failed/`, each read page by page to its
/// end) decide most jobs; only a job with some receipts is read, to compare them with its
/// destinations. A job object that cannot be read or parsed is logged and left out (it could
/// not run anyway); it never hides the others.
pub async fn pending_jobs(state: &dyn StateStore) -> anyhow::Result<Vec<String>> {
    let jobs = state.list(Prefix::Jobs.as_str()).await?;
    let receipts: HashSet<String> = state
        .list(Prefix::Done.as_str())
        .await?
        .into_iter()
        .collect();
    let failed: HashSet<String> = state
        .list(Prefix::Failed.as_str())
        .await?
        .into_iter()
        .collect();
    // Ids with at least one receipt (`done/<id>/<destination>.json`).
    let with_receipts: HashSet<&str> = receipts
        .iter()
        .filter_map(|r| r.strip_prefix(Prefix::Done.as_str())?.split_once('/'))
        .map(|(id, _)| id)
        .collect();
    let mut pending = Vec::new();
    let mut to_read = Vec::new();
    for key in jobs {
        // `jobs/<route>/<id>.json`; the id inside the job decides when the job is read.
        let Some(id) = key.rsplit('/').next().and_then(|f| f.strip_suffix(".json")) else {
            continue;
        };
        if failed.contains(&failure_key(id)) {
            continue;
        }
        if with_receipts.contains(id) {
            to_read.push(key);
        } else {
            pending.push(key);
        }
    }
    let reads = futures_util::stream::iter(to_read)
        .map(|key| async move {
            let found = state.get_json::<TransferJob>(&key).await;
            (key, found)
        })
        .buffer_unordered(SCAN_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for (key, found) in reads {
        match found {
            Ok(Some((job, _))) => {
                let unfinished = !failed.contains(&failure_key(&job.id))
                    && job
                        .destinations
                        .iter()
                        .any(|d| !receipts.contains(&receipt_key(&job.id, d)));
                if unfinished {
                    pending.push(key);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job_key = %key, error = %e, "cannot read the job; left out of the pending jobs");
            }
        }
    }
    pending.sort();
    Ok(pending)
}

async fn serve(
    listener: TcpListener,
    webhook: Arc<WebhookService>,
    queue: JobQueue,
    runs_jobs: bool,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (webhook, queue) = (webhook.clone(), queue.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (webhook, queue) = (webhook.clone(), queue.clone());
                async move { Ok::<_, Infallible>(answer(&webhook, &queue, runs_jobs, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Largest body the local server reads before handing off (the service applies its own cap).
const LOCAL_BODY_LIMIT: usize = 1 << 20;

async fn answer(
    webhook: &WebhookService,
    queue: &JobQueue,
    runs_jobs: bool,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    if queue.closed() {
        // Stopping: the sender retries later (ClientTrack's webhook does not, which is what
        // the reconciliation sweep is for); nothing is written now that no one would run.
        return hyper::Response::builder()
            .status(503)
            .header("retry-after", STOPPING_RETRY_AFTER_SECS.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                b"{\"error\":\"shutting_down\",\"reason\":\"ferry is stopping; send again later\"}",
            )))
            .expect("static response");
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, LOCAL_BODY_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::from(vec![0u8; LOCAL_BODY_LIMIT + 1]),
    };
    let lambda_request =
        lambda_http::Request::from_parts(parts, lambda_http::Body::Binary(body.to_vec()));
    let (response, answer) = match webhook_ingest::handle_answer(webhook, lambda_request).await {
        Ok(r) => r,
        Err(e) => {
            return hyper::Response::builder()
                .status(500)
                .body(Full::new(Bytes::from(format!(
                    "{{\"error\":\"internal\",\"reason\":{:?}}}",
                    e.to_string()
                ))))
                .expect("static response");
        }
    };
    let (parts, body) = response.into_parts();
    let bytes = Bytes::copy_from_slice(body.as_ref());
    if runs_jobs {
        for job in answer.accepted_jobs() {
            queue.offer(&job.job_key);
        }
    }
    hyper::Response::from_parts(parts, Full::new(bytes))
}

/// The job worker: takes queued jobs while a slot is free and runs each as blob-copy would
/// (an SQS event through the handler). A failed run gives its slot back at once and is queued
/// again after `redelivery_delay`, counting the attempt. Ends when `stopping` turns true: what
/// is still queued stays in the state store for the next start.
async fn work(
    engine: Arc<TransferEngine>,
    bucket: String,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    queue: JobQueue,
    slots: Arc<Semaphore>,
    redelivery_delay: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let mut message = 0u64;
    loop {
        let item = tokio::select! {
            biased;
            _ = stopping.wait_for(|s| *s) => return,
            item = rx.recv() => match item {
                Some(item) => item,
                None => return,
            },
        };
        let slot = tokio::select! {
            biased;
            _ = stopping.wait_for(|s| *s) => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        message += 1;
        let (engine, bucket, queue, mut stopping) = (
            engine.clone(),
            bucket.clone(),
            queue.clone(),
            stopping.clone(),
        );
        lock(&queue.shared.running).insert(item.job_key.clone());
        tokio::spawn(async move {
            let id = format!("local-{message}");
            let event = blob_copy::sqs_event_for_job(&bucket, &item.job_key, &id, item.attempt);
            let result =
                blob_copy::handle(&engine, LambdaEvent::new(event, Context::default())).await;
            let failed = match result {
                Ok(r) => !r.batch_item_failures.is_empty(),
                Err(e) => {
                    tracing::error!(error = %e, "blob-copy handler failed");
                    true
                }
            };
            lock(&queue.shared.running).remove(&item.job_key);
            if !failed {
                queue.forget(&item.job_key);
                drop(slot);
                return;
            }
            if queue.closed() {
                lock(&queue.shared.interrupted).insert(item.job_key.clone());
                drop(slot);
                return;
            }
            // The wait for redelivery holds no slot.
            drop(slot);
            tokio::select! {
                () = tokio::time::sleep(redelivery_delay) => {
                    // Like SQS after the visibility timeout: deliver again, counting the attempt.
                    let _ = queue.tx.send(Queued {
                        job_key: item.job_key,
                        attempt: item.attempt + 1,
                    });
                }
                _ = stopping.wait_for(|s| *s) => {}
            }
        });
    }
}

/// Fires the view-sync handler on an interval, as EventBridge Scheduler does in AWS (payload
/// `{"views": []}`: every configured view). The first sync starts at once; a sync that runs
/// longer than the interval delays the next tick instead of overlapping it (overlaps from other
/// processes are the lease's job). Stops when dropped (a sync under way is cut off: its lease
/// stays until it expires), or cleanly with [`stop`](Self::stop).
pub struct ViewScheduler {
    task: tokio::task::JoinHandle<()>,
    stopping: watch::Sender<bool>,
}

impl Drop for ViewScheduler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ViewScheduler {
    /// Starts syncing every `every`.
    pub fn start(sync: Arc<ViewSync>, every: Duration) -> Self {
        let (stopping, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = stopped.wait_for(|s| *s) => return,
                    _ = ticks.tick() => {}
                }
                let event = LambdaEvent::new(serde_json::json!({"views": []}), Context::default());
                match view_sync::handle(&sync, event).await {
                    Ok(summary) => tracing::debug!(%summary, "scheduled view sync done"),
                    Err(e) => tracing::error!(error = %e, "scheduled view sync failed"),
                }
            }
        });
        Self { task, stopping }
    }

    /// Starts no more syncs and lets one under way finish (it releases its lease) for at most
    /// `grace`; true when it did.
    pub async fn stop(mut self, grace: Duration) -> bool {
        let _ = self.stopping.send(true);
        let finished = tokio::time::timeout(grace, &mut self.task).await.is_ok();
        if !finished {
            tracing::warn!(
                "a view sync was still running at the end of the grace period; its lease expires on its own"
            );
        }
        finished
    }
}

#[cfg(test)]
mod tests {
    //! The fast tier of the start-up scan: the in-memory state store.

    use ferry_shared::layout::job_key;
    use ferry_shared::source::SourceObject;
    use ferry_shared::state::{MemoryStateStore, PutMode};

    use super::*;

    async fn job(state: &MemoryStateStore, id: &str, destinations: &[&str]) -> String {
        let job = TransferJob {
            id: id.into(),
            route: "r".into(),
            source: "src".into(),
            object: SourceObject {
                container: "c".into(),
                name: format!("{id}.csv"),
                size: 1,
                etag: "0x1".into(),
                content_md5: None,
                content_type: None,
                url: None,
            },
            destinations: destinations.iter().map(|d| d.to_string()).collect(),
            target_folder: None,
            name_template: None,
            after_delivery: Default::default(),
            encrypt: false,
            correlation_id: id.into(),
            created_at: ferry_shared::job::now_rfc3339(),
            export: None,
        };
        let key = job_key("r", id);
        state.put_json(&key, &job, PutMode::Create).await.unwrap();
        key
    }

    async fn mark(state: &MemoryStateStore, key: &str) {
        state
            .put(key, Bytes::from_static(b"{}"), PutMode::Overwrite)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn pending_jobs_are_those_without_every_receipt_or_a_dead_letter() {
        let state = MemoryStateStore::new();
        let fresh = job(&state, "fresh", &["a", "b"]).await;
        let partial = job(&state, "partial", &["a", "b"]).await;
        mark(&state, &receipt_key("partial", "a")).await;
        job(&state, "done", &["a", "b"]).await;
        mark(&state, &receipt_key("done", "a")).await;
        mark(&state, &receipt_key("done", "b")).await;
        job(&state, "dead", &["a"]).await;
        mark(&state, &failure_key("dead")).await;
        // A job that cannot be read is logged and left out; it never hides the others.
        mark(&state, &receipt_key("corrupt", "a")).await;
        state
            .put(
                &job_key("r", "corrupt"),
                Bytes::from_static(b"not json"),
                PutMode::Create,
            )
            .await
            .unwrap();
        let mut want = vec![fresh, partial];
        want.sort();
        assert_eq!(pending_jobs(&state).await.unwrap(), want);
    }
}
