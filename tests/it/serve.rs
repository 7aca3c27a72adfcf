//! `ferry serve` keeps the promises SQS keeps in AWS, checked on the real binary as a child
//! process over the real components (Azurite, moto, a local HTTP receiver): a SIGKILL strands
//! nothing (the next start picks up every unfinished job and S3 copies resume from their
//! checkpoint), at most `--concurrency` jobs run at once (observed at the destination), and
//! SIGTERM stops cleanly within the grace period, leaving the copy to resume on the next start.

use crate::support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_shared::layout::{Prefix, progress_key, receipt_key};
use ferry_shared::state::StateStoreExt;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use support::fault_proxy::{Fault, FaultProxy};
use support::pipeline::{MIB, Options, Pipeline, ServeProcess, TOKEN, job_of};

/// Polls `check` every 50 ms until it is true; panics naming `what` after `limit` (a hang, not
/// a slow run: the limits are far above what the steps take).
async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts a webhook for `file` to a running `ferry serve`; returns (status, body).
async fn post(url: &str, container: &str, file: &str) -> (u16, Value, Option<String>) {
    let response = reqwest::Client::new()
        .post(url)
        .header("x-ferry-token", TOKEN)
        .json(&json!({"container": container, "file": file}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, retry_after)
}

/// Parts recorded in a delivery's S3 multipart checkpoint.
async fn checkpoint_parts(p: &Pipeline, job_id: &str) -> usize {
    p.copy
        .state
        .get_json::<Value>(&progress_key(job_id, "s3"))
        .await
        .unwrap()
        .map_or(0, |(v, _)| v["parts"].as_array().map_or(0, Vec::len))
}

async fn delivered_to_s3(p: &Pipeline, job_id: &str) -> bool {
    p.copy
        .state
        .get(&receipt_key(job_id, "s3"))
        .await
        .unwrap()
        .is_some()
}

async fn open_uploads(p: &Pipeline) -> usize {
    support::moto_s3()
        .await
        .list_multipart_uploads()
        .bucket(&p.archive_bucket)
        .send()
        .await
        .unwrap()
        .uploads()
        .len()
}

/// Waits for a stopped process; panics (after killing it) when it does not exit on its own.
async fn exit_status(serve: &mut ServeProcess, limit: Duration) -> std::process::ExitStatus {
    match tokio::time::timeout(limit, serve.child.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => {
            serve.child.kill().await.ok();
            panic!("ferry serve did not exit on its own:\n{}", serve.output());
        }
    }
}

/// The `parts` field of the log line where an S3 upload resumed, per resumed key.
fn resumed_parts(logs: &str) -> Vec<u64> {
    logs.lines()
        .filter(|l| l.contains("resuming multipart upload from parts already stored"))
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["parts"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// An S3-only pipeline whose source reads are throttled, so large copies can be caught mid-way.
async fn throttled_s3_pipeline(bytes_per_sec: u64) -> Pipeline {
    let proxy = FaultProxy::start(ferry_harness::shared().azurite.port).await;
    proxy.plan(std::iter::repeat_n(Fault::Throttle(bytes_per_sec), 100_000));
    Pipeline::new(Options {
        source_proxy: Some(proxy),
        all_route_destinations: Some(vec!["s3"]),
        part_size_mib: Some(5),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn sigkill_with_jobs_queued_and_copies_mid_way_then_restart_delivers_everything_once() {
    // 10 MiB/s in all: four parallel range streams (the source's default) at 2.5 MiB/s each, so
    // the large copies are still mid-way when the process is killed.
    let p = throttled_s3_pipeline(10 * MIB / 4).await;
    let large: Vec<(String, String)> = vec![
        (
            "large-1.bin".into(),
            p.upload("large-1.bin", 101, 40 * MIB).await,
        ),
        (
            "large-2.bin".into(),
            p.upload("large-2.bin", 102, 40 * MIB).await,
        ),
    ];
    let mut small = Vec::new();
    for i in 0..20u64 {
        let name = format!("small-{i:02}.csv");
        let sha = p.upload(&name, 200 + i, 20_000 + i * 1000).await;
        small.push((name, sha));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut start = p.serve_starter(dir.path());

    // Two slots, both taken by the large copies; the 20 small jobs arrive behind them.
    let mut first = start(&["--concurrency", "2"]);
    let url = first.webhook_url().await;
    let mut ids = BTreeMap::new();
    for (name, _) in &large {
        let (status, answer, _) = post(&url, &p.container, name).await;
        assert_eq!(status, 202, "{answer}");
        ids.insert(name.clone(), job_of(&answer, "all").0);
    }
    until(
        "both large copies to store a part",
        Duration::from_secs(60),
        async || {
            checkpoint_parts(&p, &ids["large-1.bin"]).await >= 1
                && checkpoint_parts(&p, &ids["large-2.bin"]).await >= 1
        },
    )
    .await;
    for (name, _) in &small {
        let (status, answer, _) = post(&url, &p.container, name).await;
        assert_eq!(status, 202, "{answer}");
        ids.insert(name.clone(), job_of(&answer, "all").0);
    }
    first.child.kill().await.unwrap();
    let mut undelivered = 0;
    for id in ids.values() {
        undelivered += usize::from(!delivered_to_s3(&p, id).await);
    }
    assert_eq!(
        undelivered,
        22,
        "premise: killed with 2 copies mid-way and 20 jobs queued behind them:\n{}",
        first.output()
    );

    let mut second = start(&["--concurrency", "4"]);
    let picked = second.wait_for_line("picked up the jobs").await;
    let picked: Value = serde_json::from_str(&picked).unwrap();
    assert_eq!(picked["pending"], 22, "{picked}");
    for id in ids.values() {
        until("every job delivered", Duration::from_secs(90), async || {
            delivered_to_s3(&p, id).await
        })
        .await;
    }
    for (name, sha) in large.iter().chain(&small) {
        assert_eq!(
            p.s3_versions(name).await,
            (1, Some(sha.clone())),
            "{name}: delivered once, byte-identical"
        );
        assert!(p.failure(&ids[name]).await.is_none(), "{name}");
    }
    let resumed = resumed_parts(&second.output());
    assert_eq!(resumed.len(), 2, "both large copies resumed: {resumed:?}");
    assert!(resumed.iter().all(|&parts| parts >= 1), "{resumed:?}");
    assert_eq!(open_uploads(&p).await, 0, "no multipart upload left behind");

    second.terminate();
    assert!(
        exit_status(&mut second, Duration::from_secs(40))
            .await
            .success()
    );
    let logs = first.output() + &second.output();
    for s in p.secrets() {
        assert!(!logs.contains(&s), "serve logs leak a secret");
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An HTTP destination that holds each request for `hold` and records the most requests it
/// ever had in flight at once, and every path it received; it answers 503 to paths containing
/// `fail`.
struct CountingReceiver {
    port: u16,
    peak: Arc<AtomicUsize>,
    paths: Arc<std::sync::Mutex<Vec<String>>>,
    _task: AbortOnDrop,
}

impl CountingReceiver {
    async fn start(hold: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let paths: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let (n, pk, ps) = (now.clone(), peak.clone(), paths.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (n, pk, ps) = (n.clone(), pk.clone(), ps.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (n, pk, ps) = (n.clone(), pk.clone(), ps.clone());
                            async move {
                                let inside = n.fetch_add(1, Ordering::SeqCst) + 1;
                                pk.fetch_max(inside, Ordering::SeqCst);
                                let path = req.uri().path().to_string();
                                let _ = req.into_body().collect().await;
                                tokio::time::sleep(hold).await;
                                let status = if path.contains("fail") { 503 } else { 201 };
                                ps.lock().unwrap().push(path);
                                n.fetch_sub(1, Ordering::SeqCst);
                                Ok::<_, Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            port,
            peak,
            paths,
            _task: AbortOnDrop(task),
        }
    }
}

/// A pipeline whose route `all` delivers only to a `CountingReceiver`.
async fn counted_pipeline(receiver: &CountingReceiver) -> Pipeline {
    Pipeline::new(Options {
        all_route_destinations: Some(vec!["counted"]),
        extra_destinations: Some(json!({"counted": {
            "type": "http", "url": format!("http://127.0.0.1:{}/files/{{name}}", receiver.port), "timeout_secs": 30
        }})),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn a_job_waiting_for_its_redelivery_holds_no_slot() {
    let receiver = CountingReceiver::start(Duration::ZERO).await;
    let p = counted_pipeline(&receiver).await;
    // One slot and a redelivery an hour away: a wait that held the slot would block the rest.
    let runner = ferry::LocalRunner::start_with_options(
        &p.copy,
        "127.0.0.1:0".parse().unwrap(),
        ferry::WorkerOptions {
            concurrency: 1,
            redelivery_delay: Duration::from_secs(3600),
        },
    )
    .await
    .unwrap();
    let mut keys = Vec::new();
    for name in ["fail-first.csv", "then-ok.csv"] {
        p.upload(name, 1, 100).await;
        let (_, answer) = p.notify(name).await;
        keys.push(job_of(&answer, "all"));
    }
    runner.enqueue(&keys[0].1);
    until(
        "the first job's attempt to fail",
        Duration::from_secs(30),
        async || !receiver.paths.lock().unwrap().is_empty(),
    )
    .await;
    runner.enqueue(&keys[1].1);
    // A duplicate offer of the waiting job is dropped, not run beside it.
    runner.enqueue(&keys[0].1);
    until(
        "the second job delivered",
        Duration::from_secs(30),
        async || {
            p.copy
                .state
                .get(&receipt_key(&keys[1].0, "counted"))
                .await
                .unwrap()
                .is_some()
        },
    )
    .await;
    let fails = |r: &CountingReceiver| {
        r.paths
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.contains("fail"))
            .count()
    };
    let before = fails(&receiver);
    let report = runner.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        (report.not_started, report.interrupted.len()),
        (1, 0),
        "{report:?}"
    );
    assert!(p.failure(&keys[0].0).await.is_none(), "waiting, not dead");
    // Only the first attempt (with its in-run retries) reached the receiver.
    assert_eq!(fails(&receiver), before);
}

#[tokio::test]
async fn two_hundred_queued_jobs_run_at_most_the_configured_concurrency() {
    const JOBS: usize = 200;
    const CONCURRENCY: usize = 3;
    let receiver = CountingReceiver::start(Duration::from_millis(60)).await;
    let p = counted_pipeline(&receiver).await;
    // 200 jobs written before the start (as a crash would leave them): all pending at once.
    let names: Vec<String> = (0..JOBS).map(|i| format!("q-{i:03}.csv")).collect();
    let p = &p;
    for chunk in names.chunks(20) {
        futures_util::future::join_all(chunk.iter().enumerate().map(|(i, name)| async move {
            p.upload(name, i as u64, 512).await;
            let (status, answer) = p.notify(name).await;
            assert_eq!(status, 202, "{answer}");
        }))
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut start = p.serve_starter(dir.path());
    let mut serve = start(&["--concurrency", &CONCURRENCY.to_string()]);
    until("200 deliveries", Duration::from_secs(120), async || {
        receiver.paths.lock().unwrap().len() >= JOBS
    })
    .await;
    until("200 receipts", Duration::from_secs(30), async || {
        p.copy
            .state
            .list(Prefix::Done.as_str())
            .await
            .unwrap()
            .len()
            >= JOBS
    })
    .await;
    let peak = receiver.peak.load(Ordering::SeqCst);
    assert!(
        (2..=CONCURRENCY).contains(&peak),
        "peak in flight {peak}, configured {CONCURRENCY}"
    );
    let mut paths = receiver.paths.lock().unwrap().clone();
    paths.sort();
    let mut want: Vec<String> = names.iter().map(|n| format!("/files/{n}")).collect();
    want.sort();
    assert_eq!(paths, want, "each file delivered once");
    serve.terminate();
    assert!(
        exit_status(&mut serve, Duration::from_secs(40))
            .await
            .success()
    );
}

#[tokio::test]
async fn sigterm_mid_copy_exits_cleanly_within_the_grace_period_and_the_copy_resumes() {
    // 8 MiB/s in all: four parallel range streams (the source's default) at 2 MiB/s each.
    let p = throttled_s3_pipeline(2 * MIB).await;
    let sha = p.upload("big.bin", 7, 40 * MIB).await;
    // Written before the start: the first start picks it up.
    let (_, answer) = p.notify("big.bin").await;
    let (id, key) = job_of(&answer, "all");
    let dir = tempfile::tempdir().unwrap();
    let mut start = p.serve_starter(dir.path());

    let mut first = start(&["--grace-period", "3s"]);
    let url = first.webhook_url().await;
    until("a part stored", Duration::from_secs(60), async || {
        checkpoint_parts(&p, &id).await >= 1
    })
    .await;
    first.terminate();
    first.wait_for_line("stopping: no new jobs").await;
    // While it stops, the webhook refuses work and says when to come back.
    let (status, body, retry_after) = post(&url, &p.container, "big.bin").await;
    assert_eq!(
        (status, retry_after.as_deref()),
        (503, Some("30")),
        "{body}"
    );
    let status = exit_status(&mut first, Duration::from_secs(3 + 20)).await;
    let logs = first.output();
    assert!(status.success(), "{status}:\n{logs}");
    assert!(logs.contains("SIGTERM: stopping"), "{logs}");
    let stopped: Value = serde_json::from_str(
        logs.lines()
            .find(|l| l.contains("picked up by the next start"))
            .unwrap_or_else(|| panic!("no stop report:\n{logs}")),
    )
    .unwrap();
    assert!(
        stopped["interrupted"].as_str().unwrap().contains(&key),
        "{stopped}"
    );
    // Interrupted, not failed: no dead letter, no receipt, the upload and its checkpoint kept.
    assert!(p.failure(&id).await.is_none());
    assert!(!delivered_to_s3(&p, &id).await);
    assert_eq!(p.s3_versions("big.bin").await.0, 0, "{logs}");
    assert_eq!(open_uploads(&p).await, 1, "the multipart upload is kept");
    let kept = checkpoint_parts(&p, &id).await;
    assert!(kept >= 1);

    let mut second = start(&[]);
    until("the copy to finish", Duration::from_secs(90), async || {
        delivered_to_s3(&p, &id).await
    })
    .await;
    let resumed = resumed_parts(&second.output());
    assert_eq!(
        resumed,
        [kept as u64],
        "resumed from the checkpoint the stop kept"
    );
    assert_eq!(p.s3_versions("big.bin").await, (1, Some(sha)));
    assert_eq!(open_uploads(&p).await, 0);
    // The checkpoint outlives the upload's completion only until the receipt is saved.
    until(
        "the checkpoint to go",
        Duration::from_secs(10),
        async || {
            p.copy
                .state
                .get(&progress_key(&id, "s3"))
                .await
                .unwrap()
                .is_none()
        },
    )
    .await;
    second.terminate();
    assert!(
        exit_status(&mut second, Duration::from_secs(40))
            .await
            .success()
    );
}

#[tokio::test]
async fn missed_webhooks_are_swept_at_start_and_on_the_schedule() {
    let p = Pipeline::new(Options {
        all_route_destinations: Some(vec!["s3"]),
        ..Default::default()
    })
    .await;
    // Uploaded while ferry was down: their webhooks went nowhere.
    let mut files = Vec::new();
    for i in 0..3u64 {
        let name = format!("while-down-{i}.csv");
        let sha = p.upload(&name, 300 + i, 5_000).await;
        files.push((name, sha));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut start = p.serve_starter(dir.path());
    let mut serve = start(&["--reconcile-every", "2s"]);
    serve.webhook_url().await;
    // One more whose webhook is lost while ferry runs: the next sweep finds it.
    let late = (
        "lost-webhook.csv".to_string(),
        p.upload("lost-webhook.csv", 399, 7_000).await,
    );
    files.push(late);
    for (name, sha) in &files {
        until(
            &format!("{name} delivered by a sweep"),
            Duration::from_secs(60),
            async || p.s3_versions(name).await.0 >= 1,
        )
        .await;
        assert_eq!(
            p.s3_versions(name).await,
            (1, Some(sha.clone())),
            "{name}: once, byte-identical"
        );
    }
    // Later sweeps find them known: still one version each.
    until("another sweep", Duration::from_secs(30), async || {
        serve
            .output()
            .matches("scheduled reconcile sweep done")
            .count()
            >= 3
    })
    .await;
    for (name, _) in &files {
        assert_eq!(p.s3_versions(name).await.0, 1, "{name} delivered once");
    }
    assert!(
        serve
            .output()
            .contains("reconcile created jobs for missed webhooks")
    );
    let _ = serve.child.start_kill();
}
