//! `ferry`: run the pipeline locally.
//!
//! - `ferry demo`: end-to-end demo on local components (Azurite, moto, sshd).
//! - `ferry demo-views`: a view synced into PostgreSQL and S3 by the local scheduler (moto,
//!   PostgreSQL, a stand-in view).
//! - `ferry serve --config FILE [--listen ADDR] [--sync-every DURATION] [--pull-every SECS]
//!   [--reconcile-every DURATION|off]
//!   [--concurrency N] [--grace-period DURATION] [--ingest-only]`: the webhook server (when the
//!   config has a `webhook` section) and the job worker (not with `--ingest-only`), which first
//!   picks up every job a previous run left unfinished and runs at most N jobs at once (default
//!   4); the view-sync scheduler when it has `views` (every 5 minutes unless `--sync-every 30s`
//!   etc.); token-refresh and export-pull every SECS (default 60) when it has pub/sub export
//!   sources; the reconciliation sweep of the webhook routes at start and then every DURATION
//!   (default 1h; `off` to disable) when it has webhook routes. SIGTERM or Ctrl-C stops it cleanly: no new work (the webhook answers 503), running
//!   copies finish or keep what they can resume within the grace period (default 30s), exit 0;
//!   the next start picks up whatever was interrupted.
//! - `ferry sync-views --config FILE [VIEW...]`: sync views once now (all when none named);
//!   prints the summary, fails when a view failed.
//! - `ferry run-job --config FILE JOB_KEY`: run one job now (prints the outcome).
//! - `ferry replay --config FILE JOB_ID JOB_KEY`: clear a dead letter and run the job again.
//! - `ferry token-refresh --config FILE`: refresh the pub/sub export tokens that are due.
//! - `ferry export-pull --config FILE [--seconds N]`: pull notifications into jobs for up to N
//!   seconds (default 60) and print the new job keys.
//! - `ferry reconcile --config FILE [--route R]... [--dry-run] [--lookback DURATION]`: sweep the
//!   webhook routes' containers once for blobs whose webhook never came and create their jobs
//!   (or, with `--dry-run`, only count them); prints the summary, fails when a route could not
//!   be swept (e.g. the SAS lacks `l`).
//! - `ferry state-layout [--markdown]`: the state bucket layout and each function's access per
//!   prefix, as the JSON that `infra/state-layout.json` holds (Terraform builds the grants from
//!   it) or as the permissions table of docs/deploy.md.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ferry::{LocalRunner, ViewScheduler, WorkerOptions};
use ferry_shared::config::Config;
use ferry_shared::services::Services;
use lambda_runtime::{Context, LambdaEvent};

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn positional(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
        } else if a.starts_with("--") {
            skip = true;
        } else {
            out.push(a.clone());
        }
    }
    out
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM; names the one that came.
async fn stop_requested() -> anyhow::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT").map_err(Into::into),
        _ = term.recv() => Ok("SIGTERM"),
    }
}

async fn services(args: &[String]) -> anyhow::Result<Services> {
    let path = flag(args, "--config").context("--config FILE is required")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(Services::new(Config::from_json(&text)?).await)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("demo") {
        // The demo's S3 is a local moto server: give the SDK the dummy credentials moto accepts
        // and keep it from probing the EC2 metadata endpoint. Set before any thread starts.
        // SAFETY: no other thread exists yet.
        unsafe {
            for (k, v) in [
                ("AWS_ACCESS_KEY_ID", "ferry-demo"),
                ("AWS_SECRET_ACCESS_KEY", "ferry-demo"),
                ("AWS_REGION", "us-east-1"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ] {
                std::env::set_var(k, v);
            }
        }
    }
    tokio::runtime::Runtime::new()?.block_on(run(args))
}

async fn run(args: Vec<String>) -> anyhow::Result<()> {
    ferry_shared::telemetry::init();
    let Some(command) = args.first().cloned() else {
        bail!(
            "usage: ferry demo | demo-views | serve --config FILE [--listen ADDR] [--sync-every DURATION] [--pull-every SECS] [--reconcile-every DURATION] [--concurrency N] [--grace-period DURATION] [--ingest-only] | sync-views --config FILE [VIEW...] | run-job --config FILE JOB_KEY | replay --config FILE JOB_ID JOB_KEY | token-refresh --config FILE | export-pull --config FILE [--seconds N] | reconcile --config FILE [--route R]... [--dry-run] [--lookback DURATION] | state-layout [--markdown]"
        );
    };
    let rest = &args[1..];
    match command.as_str() {
        "state-layout" => {
            if rest.iter().any(|a| a == "--markdown") {
                print!("{}", ferry_shared::layout::permissions_table());
            } else {
                print!("{}", ferry_shared::layout::layout_file());
            }
            Ok(())
        }
        "demo" | "demo-views" => {
            // The demos talk to moto, which takes any credentials; without any set, the AWS SDK
            // would look for real ones (IMDS) and fail.
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                // SAFETY: nothing else runs yet (the runtime's workers are idle), so no thread
                // reads the environment while it changes.
                unsafe {
                    std::env::set_var("AWS_ACCESS_KEY_ID", "ferry-demo");
                    std::env::set_var("AWS_SECRET_ACCESS_KEY", "ferry-demo");
                }
            }
            if command == "demo" {
                ferry::demo::run().await
            } else {
                ferry::demo_views::run().await
            }
        }
        "serve" => {
            let services = services(rest).await?;
            let listen: SocketAddr = flag(rest, "--listen")
                .unwrap_or_else(|| "127.0.0.1:8080".into())
                .parse()?;
            let every = humantime::parse_duration(
                &flag(rest, "--sync-every").unwrap_or_else(|| "5m".into()),
            )
            .context("--sync-every takes a duration such as 30s or 5m")?;
            let pull_every: u64 = flag(rest, "--pull-every")
                .unwrap_or_else(|| "60".into())
                .parse()
                .context("--pull-every takes seconds")?;
            let concurrency: usize = flag(rest, "--concurrency")
                .map_or(Ok(ferry::DEFAULT_CONCURRENCY), |n| n.parse())
                .ok()
                .filter(|n| *n >= 1)
                .context("--concurrency takes a whole number of at least 1")?;
            let grace = match flag(rest, "--grace-period") {
                Some(d) => humantime::parse_duration(&d)
                    .context("--grace-period takes a duration such as 30s or 2m")?,
                None => ferry::DEFAULT_GRACE_PERIOD,
            };
            let mut runner = if rest.iter().any(|a| a == "--ingest-only") {
                LocalRunner::start_ingest_only(&services, listen).await?
            } else {
                let options = WorkerOptions {
                    concurrency,
                    ..WorkerOptions::default()
                };
                LocalRunner::start_with_options(&services, listen, options).await?
            };
            runner
                .start_export_schedule(&services, Duration::from_secs(pull_every.max(1)))
                .await?;
            match flag(rest, "--reconcile-every").as_deref() {
                Some("off") => {}
                every => {
                    let every = humantime::parse_duration(every.unwrap_or("1h"))
                        .context("--reconcile-every takes a duration such as 10m or 1h, or off")?;
                    runner
                        .start_reconcile_schedule(&services, every.max(Duration::from_secs(1)))
                        .await?;
                }
            }
            if let Some(addr) = runner.webhook_addr {
                println!("webhook listening on http://{addr}/");
            }
            let mut scheduler = None;
            if !services.config.views.is_empty() {
                let sync = Arc::new(services.view_sync().await?);
                println!(
                    "syncing views {:?} every {}",
                    sync.view_names(),
                    humantime::format_duration(every)
                );
                scheduler = Some(ViewScheduler::start(sync, every));
            }
            println!("Ctrl-C or SIGTERM to stop");
            let signal = stop_requested().await?;
            println!(
                "{signal}: stopping (grace period {})",
                humantime::format_duration(grace)
            );
            let views = async {
                if let Some(s) = scheduler {
                    s.stop(grace).await;
                }
            };
            let (report, ()) = tokio::join!(runner.shutdown(grace), views);
            println!(
                "stopped: {} interrupted, {} still running at the end of the grace period, {} not started; the next start picks them up",
                report.interrupted.len(),
                report.abandoned.len(),
                report.not_started
            );
            Ok(())
        }
        "sync-views" => {
            let services = services(rest).await?;
            let sync = services.view_sync().await?;
            let event = lambda_runtime::LambdaEvent::new(
                serde_json::json!({"views": positional(rest)}),
                lambda_runtime::Context::default(),
            );
            let summary = view_sync::handle(&sync, event)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{summary}");
            Ok(())
        }
        "token-refresh" => {
            let services = services(rest).await?;
            let caches = services.token_caches().await?;
            let event = LambdaEvent::new(serde_json::json!({}), Context::default());
            let report = token_refresh::handle(&caches, event)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{report:#}");
            Ok(())
        }
        "export-pull" => {
            let services = services(rest).await?;
            let seconds: u64 = flag(rest, "--seconds")
                .unwrap_or_else(|| "60".into())
                .parse()
                .context("--seconds takes a number")?;
            let pullers = services.export_pullers().await?;
            let summaries = export_pull::run(&pullers, Duration::from_secs(seconds))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for s in &summaries {
                println!("{}", serde_json::to_string_pretty(s)?);
                for key in &s.job_keys {
                    println!("job {key}");
                }
            }
            Ok(())
        }
        "reconcile" => {
            let services = services(rest).await?;
            let reconciler = services.reconciler().await?;
            let since = match flag(rest, "--lookback") {
                Some(d) => Some(
                    std::time::SystemTime::now()
                        - humantime::parse_duration(&d)
                            .context("--lookback takes a duration such as 48h or 7days")?,
                ),
                None => None,
            };
            let options = ferry_shared::reconcile::SweepOptions {
                routes: rest
                    .windows(2)
                    .filter(|w| w[0] == "--route")
                    .map(|w| w[1].clone())
                    .collect(),
                dry_run: rest.iter().any(|a| a == "--dry-run"),
                since,
                correlation_id: format!("reconcile-{}", std::process::id()),
            };
            let summary = reconciler
                .sweep(&options)
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            reconcile::report(&summary).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(())
        }
        "run-job" => {
            let services = services(rest).await?;
            let key = positional(rest)
                .first()
                .cloned()
                .context("JOB_KEY missing")?;
            let outcome = services.engine().await?.run(&key, 1).await?;
            println!("{outcome:?}");
            Ok(())
        }
        "replay" => {
            let services = services(rest).await?;
            let pos = positional(rest);
            let (id, key) = (
                pos.first().context("JOB_ID missing")?,
                pos.get(1).context("JOB_KEY missing")?,
            );
            ferry::clear_failure(services.state.as_ref(), id).await?;
            let engine = services.engine().await?;
            println!("{:?}", engine.run(key, 1).await?);
            Ok(())
        }
        other => bail!("unknown command {other:?}"),
    }
}
