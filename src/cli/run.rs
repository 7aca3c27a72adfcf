//! The commands that run part of the pipeline: `serve` (everything, until stopped) and the
//! one-off runs of a single function (`run-job`, `sync-views`, `token-refresh`, `export-pull`,
//! `reconcile`). Each prints its outcome to stdout and returns the exit code.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferry::{LocalRunner, ViewScheduler, WorkerOptions};
use ferry_shared::engine::{JobError, JobOutcome};
use ferry_shared::layout::Prefix;
use ferry_shared::services::Services;
use ferry_shared::view_sync::SyncOutcome;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::json;

use super::{EXIT_FAILED, print_json};

/// `ferry serve`'s settings.
pub(super) struct ServeOptions {
    pub listen: SocketAddr,
    pub sync_every: Duration,
    pub pull_every: Duration,
    /// `None`: no reconciliation sweep.
    pub reconcile_every: Option<Duration>,
    pub concurrency: usize,
    pub grace_period: Duration,
    pub ingest_only: bool,
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM; names the one that came.
async fn stop_requested() -> anyhow::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT").map_err(Into::into),
        _ = term.recv() => Ok("SIGTERM"),
    }
}

/// `ferry serve`: runs until SIGTERM or Ctrl-C, then stops cleanly (exit 0).
pub(super) async fn serve(services: &Services, o: ServeOptions) -> anyhow::Result<ExitCode> {
    let mut runner = if o.ingest_only {
        LocalRunner::start_ingest_only(services, o.listen).await?
    } else {
        let options = WorkerOptions {
            concurrency: o.concurrency,
            ..WorkerOptions::default()
        };
        LocalRunner::start_with_options(services, o.listen, options).await?
    };
    runner.start_export_schedule(services, o.pull_every).await?;
    if let Some(every) = o.reconcile_every {
        runner.start_reconcile_schedule(services, every).await?;
    }
    if let Some(addr) = runner.webhook_addr {
        println!("webhook listening on http://{addr}/");
    }
    let mut scheduler = None;
    if !services.config.views.is_empty() {
        let sync = Arc::new(services.view_sync().await?);
        println!(
            "syncing views {} every {}",
            sync.view_names().join(", "),
            humantime::format_duration(o.sync_every)
        );
        scheduler = Some(ViewScheduler::start(sync, o.sync_every));
    }
    println!("Ctrl-C or SIGTERM to stop");
    let signal = stop_requested().await?;
    println!(
        "{signal}: stopping (grace period {})",
        humantime::format_duration(o.grace_period)
    );
    let views = async {
        if let Some(s) = scheduler {
            s.stop(o.grace_period).await;
        }
    };
    let (report, ()) = tokio::join!(runner.shutdown(o.grace_period), views);
    println!(
        "stopped: {} interrupted, {} still running at the end of the grace period, {} not started; the next start picks them up",
        report.interrupted.len(),
        report.abandoned.len(),
        report.not_started
    );
    Ok(ExitCode::SUCCESS)
}

/// The key of `job`: itself when it is a key, else looked up from the id.
pub(super) async fn resolve_job_key(services: &Services, job: &str) -> anyhow::Result<String> {
    if job.starts_with(Prefix::Jobs.as_str()) {
        return Ok(job.to_string());
    }
    let routes = services.config.routes.iter().map(|r| r.name.as_str());
    ferry::inspect::find_job_key(services.state.as_ref(), routes, job)
        .await?
        .with_context(|| format!("no job with id {job} in the state bucket"))
}

/// A job run's outcome as the CLI reports it: (success, human text, JSON).
pub(super) fn describe_outcome(
    job_key: &str,
    result: Result<JobOutcome, JobError>,
) -> (bool, String, serde_json::Value) {
    match result {
        Ok(JobOutcome::Completed {
            delivered,
            already_done,
        }) => (
            true,
            format!(
                "{job_key}: completed ({delivered} delivered now, {already_done} delivered before)"
            ),
            json!({"job_key": job_key, "outcome": "completed", "delivered": delivered, "already_done": already_done}),
        ),
        Ok(JobOutcome::DeadLettered { reason }) => (
            false,
            format!("{job_key}: dead-lettered: {reason}"),
            json!({"job_key": job_key, "outcome": "dead_lettered", "reason": reason}),
        ),
        Ok(JobOutcome::AlreadyFailed) => (
            false,
            format!(
                "{job_key}: already dead-lettered; `ferry replay` clears the dead letter and runs it again"
            ),
            json!({"job_key": job_key, "outcome": "already_failed"}),
        ),
        Err(e) => (
            false,
            format!("{job_key}: failed: {e}"),
            json!({"job_key": job_key, "outcome": "error", "error": e.to_string()}),
        ),
    }
}

/// `ferry run-job`: exit 1 unless the job completed.
pub(super) async fn run_job(
    services: &Services,
    job: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let key = resolve_job_key(services, job).await?;
    let engine = services.engine().await?;
    let (ok, text, value) = describe_outcome(&key, engine.run(&key, 1).await);
    if json {
        print_json(&value, true)?;
    } else {
        println!("{text}");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

/// `ferry sync-views`: every view's outcome, then exit 1 when any failed.
pub(super) async fn sync_views(
    services: &Services,
    views: Vec<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let sync = services.view_sync().await?;
    let names = if views.is_empty() {
        sync.view_names()
    } else {
        views
    };
    let mut results = Vec::new();
    let mut failed = 0usize;
    for name in &names {
        let (line, value) = match sync.sync(name).await {
            Ok(outcome) => {
                let line = match &outcome {
                    SyncOutcome::Synced(r) => format!(
                        "view {}: synced {} records in {} chunks ({} skipped), watermark {} -> {}, {} ms",
                        r.view,
                        r.records,
                        r.chunks,
                        r.skipped,
                        r.watermark_before.as_ref().map_or("none", |c| c.as_str()),
                        r.watermark_after.as_ref().map_or("none", |c| c.as_str()),
                        r.duration_ms
                    ),
                    SyncOutcome::LeaseHeld {
                        view,
                        holder,
                        expires_at,
                    } => format!(
                        "view {view}: skipped, another run ({holder}) is syncing it (lease until {expires_at})"
                    ),
                    SyncOutcome::LeaseStale {
                        view,
                        holder,
                        silent_secs,
                        expires_at,
                        ..
                    } => {
                        failed += 1;
                        format!(
                            "view {view}: FAILED: the lease is held by {holder}, silent for {silent_secs} s (past its expected run time); nothing syncs until it expires at {expires_at}"
                        )
                    }
                };
                (line, serde_json::to_value(&outcome)?)
            }
            Err(e) => {
                failed += 1;
                (
                    format!("view {name}: FAILED: {e}"),
                    json!({"status": "failed", "view": name, "error": e.to_string()}),
                )
            }
        };
        if !json {
            println!("{line}");
        }
        results.push(value);
    }
    if json {
        print_json(&json!({"views": results, "failed": failed}), true)?;
    } else if failed > 0 {
        println!("{failed} of {} views failed", names.len());
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

/// `ferry token-refresh`: exit 1 when a source could not be refreshed.
pub(super) async fn token_refresh(services: &Services, json: bool) -> anyhow::Result<ExitCode> {
    let caches = services.token_caches().await?;
    let event = LambdaEvent::new(json!({}), Context::default());
    let report = token_refresh::handle(&caches, event)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if json {
        print_json(&report, true)?;
    } else {
        for (source, entry) in report.as_object().into_iter().flatten() {
            println!(
                "source {source}: {} (generation {}, expires in {} s)",
                entry["status"].as_str().unwrap_or("?"),
                entry["generation"],
                entry["expires_in_secs"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry export-pull`: receives for `seconds` (the sources' deadline margins are added, so the
/// whole time is spent receiving), then prints what each source did and the new job keys.
pub(super) async fn export_pull(
    services: &Services,
    seconds: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pullers = services.export_pullers().await?;
    let margin = pullers
        .iter()
        .map(|p| p.deadline_margin())
        .max()
        .unwrap_or_default();
    let summaries = export_pull::run(&pullers, seconds + margin)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if json {
        print_json(&json!({"sources": summaries}), true)?;
        return Ok(ExitCode::SUCCESS);
    }
    for s in &summaries {
        println!(
            "source {}: {} received, {} jobs created ({} existed), {} skipped, {} poison, {} refused, {} from the dead-letter queue",
            s.source,
            s.received,
            s.jobs_created,
            s.jobs_existing,
            s.skipped,
            s.poison,
            s.refused,
            s.dead_letter_drained
        );
        for key in &s.job_keys {
            println!("job {key}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry reconcile`: exit 1 when a route could not be swept.
pub(super) async fn reconcile(
    services: &Services,
    routes: Vec<String>,
    dry_run: bool,
    lookback: Option<Duration>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let reconciler = services.reconciler().await?;
    let options = ferry_shared::reconcile::SweepOptions {
        routes,
        dry_run,
        since: lookback.map(|d| std::time::SystemTime::now() - d),
        correlation_id: format!("reconcile-{}", std::process::id()),
    };
    let summary = reconciler
        .sweep(&options)
        .await
        .map_err(anyhow::Error::msg)?;
    if json {
        print_json(&summary, true)?;
    } else {
        let verb = if summary.dry_run {
            "would create"
        } else {
            "created"
        };
        println!("files created since {}:", summary.since);
        for r in &summary.routes {
            let made = if summary.dry_run {
                r.would_create
            } else {
                r.created
            };
            match &r.error {
                Some(e) => println!("route {}: FAILED: {e}", r.route),
                None => println!(
                    "route {}: {} listed, {} already have a job, {verb} {made} jobs (not taken {}, outside lookback {}, unsafe names {})",
                    r.route,
                    r.listed,
                    r.already_known,
                    r.not_taken,
                    r.outside_lookback,
                    r.refused_name
                ),
            }
            for key in &r.job_keys {
                println!("  job {key}");
            }
        }
    }
    match reconcile::report(&summary) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(_) => Ok(ExitCode::from(EXIT_FAILED)),
    }
}
