//! The local runner: the Lambda handlers wired together in one process, so the whole pipeline
//! runs on a laptop against local components. The webhook server stands in for the function
//! URL, an in-process queue for S3 notifications -> SQS, redelivery with a delay for SQS's
//! visibility timeout, and timers for EventBridge Scheduler (view sync, token-refresh, export-pull).

pub mod demo;
pub mod demo_views;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_shared::engine::TransferEngine;
use ferry_shared::layout::receipt_key;
use ferry_shared::services::Services;
use ferry_shared::state::StateStore;
use ferry_shared::view_sync::ViewSync;
use ferry_shared::webhook::WebhookService;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_runtime::{Context, LambdaEvent};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A job key waiting to run, with its delivery count.
#[derive(Debug, Clone)]
pub struct Queued {
    /// `jobs/<route>/<id>.json`
    pub job_key: String,
    /// 1 on first delivery.
    pub attempt: u32,
}

/// The running local pipeline.
pub struct LocalRunner {
    /// Address the webhook server listens on (when the config has a `webhook` section).
    pub webhook_addr: Option<SocketAddr>,
    queue: mpsc::UnboundedSender<Queued>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LocalRunner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl LocalRunner {
    /// Starts the webhook server on `listen` (when the config has a `webhook` section) and the
    /// job worker. Jobs that exist without receipts (e.g. from a previous run) are queued on start.
    pub async fn start(
        services: &Services,
        listen: SocketAddr,
        redelivery_delay: Duration,
    ) -> anyhow::Result<Self> {
        Self::start_with(services, listen, Some(redelivery_delay)).await
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
        worker: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let engine = Arc::new(services.engine().await?);
        let (tx, rx) = mpsc::unbounded_channel();
        let bucket = services.config.state.bucket.clone();
        let mut tasks = Vec::new();
        if let Some(redelivery_delay) = worker {
            tasks.push(tokio::spawn(work(
                engine,
                bucket,
                rx,
                tx.clone(),
                redelivery_delay,
            )));
            for key in pending_jobs(services.state.as_ref()).await? {
                let _ = tx.send(Queued {
                    job_key: key,
                    attempt: 1,
                });
            }
        }
        let mut webhook_addr = None;
        if services.config.webhook.is_some() {
            let webhook = Arc::new(services.webhook().await?);
            let listener = TcpListener::bind(listen).await?;
            webhook_addr = Some(listener.local_addr()?);
            tasks.push(tokio::spawn(serve(listener, webhook, tx.clone())));
            tracing::info!(webhook_addr = %listen, worker = worker.is_some(), "local runner listening");
        }
        Ok(Self {
            webhook_addr,
            queue: tx,
            tasks,
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
        self.tasks.push(tokio::spawn(async move {
            loop {
                let started = Instant::now();
                let event = LambdaEvent::new(serde_json::json!({}), Context::default());
                if let Err(e) = token_refresh::handle(&caches, event).await {
                    tracing::error!(error = %e, "token-refresh failed");
                }
                match export_pull::run(&pullers, budget).await {
                    Ok(summaries) => {
                        for key in summaries.into_iter().flat_map(|s| s.job_keys) {
                            let _ = queue.send(Queued {
                                job_key: key,
                                attempt: 1,
                            });
                        }
                    }
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

    /// Queues a job key, as an S3 notification would.
    pub fn enqueue(&self, job_key: &str) {
        let _ = self.queue.send(Queued {
            job_key: job_key.to_string(),
            attempt: 1,
        });
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

/// Job keys under `jobs/` that lack a receipt for some destination and are not dead-lettered.
pub async fn pending_jobs(state: &dyn StateStore) -> anyhow::Result<Vec<String>> {
    let mut pending = Vec::new();
    for key in state
        .list(ferry_shared::layout::Prefix::Jobs.as_str())
        .await?
    {
        let Some(found) = state.get(&key).await? else {
            continue;
        };
        let job: ferry_shared::job::TransferJob = serde_json::from_slice(&found.body)?;
        if state
            .get(&ferry_shared::layout::failure_key(&job.id))
            .await?
            .is_some()
        {
            continue;
        }
        for dest in &job.destinations {
            if state.get(&receipt_key(&job.id, dest)).await?.is_none() {
                pending.push(key.clone());
                break;
            }
        }
    }
    Ok(pending)
}

async fn serve(
    listener: TcpListener,
    webhook: Arc<WebhookService>,
    queue: mpsc::UnboundedSender<Queued>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (webhook, queue) = (webhook.clone(), queue.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (webhook, queue) = (webhook.clone(), queue.clone());
                async move { Ok::<_, Infallible>(answer(&webhook, &queue, req).await) }
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
    queue: &mpsc::UnboundedSender<Queued>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, LOCAL_BODY_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::from(vec![0u8; LOCAL_BODY_LIMIT + 1]),
    };
    let lambda_request =
        lambda_http::Request::from_parts(parts, lambda_http::Body::Binary(body.to_vec()));
    let response = match webhook_ingest::handle(webhook, lambda_request).await {
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
    if parts.status.as_u16() == 202
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
    {
        for job in v["jobs"].as_array().into_iter().flatten() {
            if job["status"] == "accepted"
                && let Some(key) = job["job_key"].as_str()
            {
                let _ = queue.send(Queued {
                    job_key: key.to_string(),
                    attempt: 1,
                });
            }
        }
    }
    hyper::Response::from_parts(parts, Full::new(bytes))
}

async fn work(
    engine: Arc<TransferEngine>,
    bucket: String,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    tx: mpsc::UnboundedSender<Queued>,
    redelivery_delay: Duration,
) {
    let mut message = 0u64;
    while let Some(item) = rx.recv().await {
        message += 1;
        let (engine, bucket, tx) = (engine.clone(), bucket.clone(), tx.clone());
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
            if failed {
                // Like SQS after the visibility timeout: deliver again, counting the attempt.
                tokio::time::sleep(redelivery_delay).await;
                let _ = tx.send(Queued {
                    job_key: item.job_key,
                    attempt: item.attempt + 1,
                });
            }
        });
    }
}

/// Fires the view-sync handler on an interval, as EventBridge Scheduler does in AWS (payload
/// `{"views": []}`: every configured view). The first sync starts at once; a sync that runs
/// longer than the interval delays the next tick instead of overlapping it (overlaps from other
/// processes are the lease's job). Stops when dropped.
pub struct ViewScheduler {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ViewScheduler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ViewScheduler {
    /// Starts syncing every `every`.
    pub fn start(sync: Arc<ViewSync>, every: Duration) -> Self {
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let event = LambdaEvent::new(serde_json::json!({"views": []}), Context::default());
                match view_sync::handle(&sync, event).await {
                    Ok(summary) => tracing::debug!(%summary, "scheduled view sync done"),
                    Err(e) => tracing::error!(error = %e, "scheduled view sync failed"),
                }
            }
        });
        Self { task }
    }
}
