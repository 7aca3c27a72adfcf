//! Incremental view sync end to end: state in S3 on moto, the view on a mock server that serves
//! the records after the cursor it is asked for, and the real sinks (PostgreSQL from the harness,
//! S3 JSON Lines on moto, the HTTP receiver stand-in).

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_shared::clock::now_ms;
use ferry_shared::config::ViewConfig;
use ferry_shared::layout::{lease_key, watermark_key};
use ferry_shared::retry::RetryPolicy;
use ferry_shared::sink::{Chunk, Sink, SinkError, SinkReceipt};
use ferry_shared::state::{PutMode, S3StateStore, StateStore, StateStoreExt};
use ferry_shared::view_sync::lease::{LeaseRecord, Watermark, WatermarkState, advance_watermark};
use ferry_shared::view_sync::record::Cursor;
use ferry_shared::view_sync::{SyncFailure, SyncOutcome, SyncReport, ViewSource, ViewSync};
use lambda_runtime::{Context, LambdaEvent};
use support::fault_proxy::{Fault, FaultProxy};
use support::sinks::{self, SinkUnderTest, expected};
use support::view::{MockView, ON_BEHALF_OF, cursor_of, record, records};

const VIEW: &str = "cases";
const PASSWORD: &str = "view-password-Zq8!x2";

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        retries: 2,
        initial: Duration::from_millis(5),
        max: Duration::from_millis(50),
        ..RetryPolicy::default()
    }
}

/// A state bucket on moto and a mock view.
struct Env {
    state: Arc<dyn StateStore>,
    bucket: String,
    view: MockView,
}

async fn env() -> Env {
    support::aws_test_env();
    support::logs::init();
    let moto = &ferry_harness::shared().moto;
    let bucket = support::unique("vstate");
    moto.create_bucket(&bucket).await.unwrap();
    Env {
        state: Arc::new(S3StateStore::new(support::moto_s3().await, &bucket)),
        bucket,
        view: MockView::start(PASSWORD).await,
    }
}

fn view_config(env: &Env, chunk_size: usize, timeout_secs: u64) -> ViewConfig {
    serde_json::from_value(serde_json::json!({
        "url": env.view.url(), "on_behalf_of": ON_BEHALF_OF, "username": env.view.user,
        "password": {"env": "FERRY_TEST_UNUSED"}, "sink": "s", "chunk_size": chunk_size,
        "timeout_secs": timeout_secs, "lease_secs": 60,
    }))
    .unwrap()
}

/// An engine (one "process": `instance`) syncing the env's view into `sink`.
fn engine(env: &Env, sink: Arc<dyn Sink>, chunk_size: usize, instance: &str) -> ViewSync {
    engine_with(env, sink, chunk_size, instance, PASSWORD, 5)
}

fn engine_with(
    env: &Env,
    sink: Arc<dyn Sink>,
    chunk_size: usize,
    instance: &str,
    password: &str,
    timeout_secs: u64,
) -> ViewSync {
    let mut sync = ViewSync::new(env.state.clone(), fast_retry(), instance);
    sync.add_view(
        VIEW,
        ViewSource {
            config: view_config(env, chunk_size, timeout_secs),
            password: password.to_string().into(),
            http: ferry_shared::http_client::build(Duration::from_secs(timeout_secs)),
            sink,
        },
    );
    sync
}

async fn watermark(env: &Env) -> Option<(u64, String)> {
    env.state
        .get_json::<Watermark>(&watermark_key(VIEW))
        .await
        .unwrap()
        .map(|(w, etag)| (w.last_submission_id.as_str().parse().unwrap(), etag))
}

fn synced(outcome: SyncOutcome) -> SyncReport {
    match outcome {
        SyncOutcome::Synced(r) => r,
        other => panic!("expected a sync, got {other:?}"),
    }
}

fn c(n: u64) -> Option<Cursor> {
    Some(Cursor::parse(&n.to_string()).unwrap())
}

#[tokio::test]
async fn two_sequential_runs_send_only_new_records_and_an_empty_view_keeps_the_watermark() {
    let env = env().await;
    let s = sinks::postgres().await;
    let sync = engine(&env, s.sink.clone(), 10, "seq");

    // A view that returns nothing: no watermark is written.
    let r = synced(sync.sync(VIEW).await.unwrap());
    assert_eq!((r.records, r.chunks, r.watermark_after), (0, 0, None));
    assert_eq!(watermark(&env).await, None);

    env.view.push(records(0, 25));
    let r = synced(sync.sync(VIEW).await.unwrap());
    assert_eq!((r.records, r.chunks), (25, 3));
    assert_eq!(r.watermark_after, c(cursor_of(24)));
    let (w1, etag1) = watermark(&env).await.unwrap();
    assert_eq!(w1, cursor_of(24));

    env.view.push(records(25, 7));
    let r = synced(sync.sync(VIEW).await.unwrap());
    assert_eq!(
        (r.records, r.skipped),
        (7, 0),
        "only the records after the watermark"
    );
    assert_eq!(r.watermark_before, c(cursor_of(24)));
    assert_eq!(watermark(&env).await.unwrap().0, cursor_of(31));

    // Nothing new: the watermark object is not rewritten.
    let (_, etag2) = watermark(&env).await.unwrap();
    let r = synced(sync.sync(VIEW).await.unwrap());
    assert_eq!((r.records, r.chunks), (0, 0));
    assert_eq!(
        watermark(&env).await.unwrap(),
        (cursor_of(31), etag2.clone())
    );
    assert_ne!(etag1, etag2);

    assert_eq!(
        env.view.asked(),
        [
            String::new(),
            String::new(),
            cursor_of(24).to_string(),
            cursor_of(31).to_string()
        ],
        "previouslastsubmissionid: empty, then each run's watermark"
    );
    let held = s.probe.held(VIEW).await;
    assert_eq!(held.latest, expected(&env.view.all()));
    assert!(held.applications.values().all(|n| *n == 1));
}

/// Delivers through `inner` until `budget` records went through (the part of a chunk within the
/// budget is delivered, like a crash in the middle of a chunk), then fails with an error or hangs
/// until the test aborts the run.
struct Faulty {
    inner: Arc<dyn Sink>,
    budget: std::sync::Mutex<usize>,
    hang: bool,
    reached: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl Sink for Faulty {
    fn kind(&self) -> &'static str {
        "faulty"
    }
    async fn deliver(&self, view: &str, chunk: &Chunk) -> Result<SinkReceipt, SinkError> {
        let allowed = *self.budget.lock().unwrap();
        if chunk.records.len() <= allowed {
            *self.budget.lock().unwrap() -= chunk.records.len();
            return self.inner.deliver(view, chunk).await;
        }
        *self.budget.lock().unwrap() = 0;
        if allowed > 0 {
            let part = Chunk {
                after: chunk.after.clone(),
                records: chunk.records[..allowed].to_vec(),
            };
            self.inner.deliver(view, &part).await?;
        }
        if self.hang {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
        Err(SinkError::Rejected(format!(
            "injected failure after {allowed} records of this chunk"
        )))
    }
}

/// For each k: fail (error, or a killed run) after k records, check the watermark covers only
/// whole delivered chunks, rerun, and check the sink holds exactly the view's records once.
async fn failure_then_rerun(make: impl AsyncFn() -> SinkUnderTest) {
    const N: u64 = 50;
    const CHUNK: usize = 10;
    for hang in [false, true] {
        for k in [0usize, 1, 9, 10, 11, 37, 49] {
            let env = env().await;
            let s = make().await;
            let what = format!("{} k={k} {}", s.kind, if hang { "killed" } else { "error" });
            env.view.push(records(0, N));
            let reached = Arc::new(tokio::sync::Notify::new());
            let faulty = Arc::new(Faulty {
                inner: s.sink.clone(),
                budget: std::sync::Mutex::new(k),
                hang,
                reached: reached.clone(),
            });
            let crashed = Arc::new(engine(&env, faulty, CHUNK, "crashed"));
            if hang {
                let run = tokio::spawn({
                    let crashed = crashed.clone();
                    async move { crashed.sync(VIEW).await }
                });
                tokio::time::timeout(Duration::from_secs(30), reached.notified())
                    .await
                    .unwrap_or_else(|_| panic!("{what}: the run never reached the fault"));
                run.abort();
                assert!(run.await.unwrap_err().is_cancelled());
            } else {
                let e = crashed.sync(VIEW).await.unwrap_err();
                assert!(matches!(e.failure, SyncFailure::Sink { .. }), "{what}: {e}");
                assert_eq!(e.delivered as usize, k / CHUNK * CHUNK, "{what}: {e}");
            }
            // Only whole delivered chunks are covered by the watermark.
            let whole = k / CHUNK * CHUNK;
            let want = (whole > 0).then(|| cursor_of(whole as u64 - 1));
            assert_eq!(watermark(&env).await.map(|w| w.0), want, "{what}");

            let rerun = engine(&env, s.sink.clone(), CHUNK, "rerun");
            if hang {
                // The killed run never released its lease: a rerun right away is refused...
                match rerun.sync(VIEW).await.unwrap() {
                    SyncOutcome::LeaseHeld { holder, .. } => {
                        assert!(holder.starts_with("crashed/"), "{what}: {holder}")
                    }
                    other => panic!("{what}: {other:?}"),
                }
                // ...until the lease expires (simulated: the clock is not ours to move).
                let (mut lease, _) = env
                    .state
                    .get_json::<LeaseRecord>(&lease_key(VIEW))
                    .await
                    .unwrap()
                    .unwrap();
                lease.expires_at_ms = now_ms() - 1;
                env.state
                    .put_json(&lease_key(VIEW), &lease, PutMode::Overwrite)
                    .await
                    .unwrap();
            }
            let r = synced(rerun.sync(VIEW).await.unwrap());
            assert_eq!(r.records as usize, N as usize - whole, "{what}");
            assert_eq!(watermark(&env).await.unwrap().0, cursor_of(N - 1), "{what}");
            let held = s.probe.held(VIEW).await;
            assert_eq!(held.latest, expected(&env.view.all()), "{what}");
            let twice: Vec<_> = held.applications.iter().filter(|(_, n)| **n != 1).collect();
            assert!(
                twice.is_empty(),
                "{what}: applied more than once: {twice:?}"
            );
            if let sinks::Probe::S3 {
                client,
                bucket,
                prefix,
            } = &s.probe
            {
                let keys = sinks::s3_keys(client, bucket, &format!("{prefix}{VIEW}/")).await;
                assert_eq!(keys.len(), N as usize / CHUNK, "{what}: {keys:?}");
            }
        }
    }
}

#[tokio::test]
async fn failure_after_k_records_then_rerun_converges_postgres() {
    failure_then_rerun(sinks::postgres).await;
}

#[tokio::test]
async fn failure_after_k_records_then_rerun_converges_s3() {
    failure_then_rerun(sinks::s3).await;
}

#[tokio::test]
async fn failure_after_k_records_then_rerun_converges_http() {
    failure_then_rerun(sinks::http).await;
}

/// Two runs (two "processes") started together, many times over, while records keep arriving.
async fn concurrent_pairs(s: SinkUnderTest) {
    let env = env().await;
    // A slow view keeps the first run busy while the second one checks the lease.
    env.view.set_delay(Duration::from_millis(150));
    let a = engine(&env, s.sink.clone(), 7, "a");
    let b = engine(&env, s.sink.clone(), 7, "b");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = tokio::spawn({
        let (state, stop) = (env.state.clone(), stop.clone());
        async move {
            let mut seen: Vec<u64> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some((w, _)) = state
                    .get_json::<Watermark>(&watermark_key(VIEW))
                    .await
                    .unwrap()
                {
                    seen.push(w.last_submission_id.as_str().parse().unwrap());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        }
    });
    let mut pushed = 0;
    for round in 0..12u64 {
        let n = 3 + round % 5 * 4;
        env.view.push(records(pushed, n));
        pushed += n;
        let (ra, rb) = tokio::join!(a.sync(VIEW), b.sync(VIEW));
        let outcomes = [ra.unwrap(), rb.unwrap()];
        let held: Vec<_> = outcomes
            .iter()
            .filter_map(|o| match o {
                SyncOutcome::LeaseHeld { holder, .. } => Some(holder.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(held.len(), 1, "{}: round {round}: {outcomes:?}", s.kind);
        let winner = outcomes
            .iter()
            .find_map(|o| match o {
                SyncOutcome::Synced(r) => Some(r.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(winner.records, n, "{}: round {round}", s.kind);
        assert_eq!(
            watermark(&env).await.unwrap().0,
            cursor_of(pushed - 1),
            "{}",
            s.kind
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = watcher.await.unwrap();
    assert!(seen.len() > 10, "the watcher saw the watermark move");
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "{}: the watermark went backwards: {seen:?}",
        s.kind
    );
    let held = s.probe.held(VIEW).await;
    assert_eq!(held.latest, expected(&env.view.all()), "{}", s.kind);
    assert!(
        held.applications.values().all(|n| *n == 1),
        "{}: a record was applied twice",
        s.kind
    );
    if let sinks::Probe::Http(receiver) = &s.probe {
        let resent: Vec<_> = receiver
            .keys(VIEW)
            .into_iter()
            .filter(|(_, n)| *n != 1)
            .collect();
        assert!(
            resent.is_empty(),
            "no record was even sent twice: {resent:?}"
        );
    }
}

#[tokio::test]
async fn concurrent_runs_never_regress_the_watermark_or_apply_twice_postgres() {
    concurrent_pairs(sinks::postgres().await).await;
}

#[tokio::test]
async fn concurrent_runs_never_regress_the_watermark_or_apply_twice_http() {
    concurrent_pairs(sinks::http().await).await;
}

#[tokio::test]
async fn view_failures_are_clear_leave_the_watermark_and_keep_the_password_out_of_logs() {
    let wrong = "wrong-password-Kx91!";
    type Breaks = Box<dyn Fn(&MockView)>;
    let cases: Vec<(&str, Breaks)> = vec![
        ("401", Box::new(|_| {})),
        ("500", Box::new(|v| v.answer_status(Some(500)))),
        (
            "bad record",
            Box::new(|v| {
                v.answer_raw(Some(
                    r#"[{"RecordID":"000000099","lastSubmissionId":99999},{"RecordID": oops}]"#,
                ))
            }),
        ),
        (
            "not an array",
            Box::new(|v| v.answer_raw(Some("<html>Service error</html>"))),
        ),
        (
            "truncated",
            Box::new(|v| {
                v.answer_raw(Some(
                    r#"[{"RecordID":"000000099","lastSubmissionId":99999},{"RecordID":"0001"#,
                ))
            }),
        ),
        ("timeout", Box::new(|v| v.set_delay(Duration::from_secs(3)))),
    ];
    for (name, break_view) in cases {
        let env = env().await;
        let s = sinks::s3().await;
        env.view.push(records(0, 5));
        synced(
            engine(&env, s.sink.clone(), 10, "ok")
                .sync(VIEW)
                .await
                .unwrap(),
        );
        let before = watermark(&env).await.unwrap();
        break_view(&env.view);
        let password = if name == "401" { wrong } else { PASSWORD };
        let sync = engine_with(&env, s.sink.clone(), 10, "broken", password, 1);
        let asked = env.view.asked().len();
        let e = sync.sync(VIEW).await.unwrap_err();
        let text = e.to_string();
        match (name, &e.failure) {
            ("401", SyncFailure::Unauthorized { status: 401 }) => {
                assert_eq!(env.view.asked().len(), asked, "401 reaches no responder");
            }
            ("500", SyncFailure::ViewHttp { status: 500, .. }) => {
                assert_eq!(
                    env.view.asked().len(),
                    asked + 3,
                    "500 is retried (2 retries)"
                );
            }
            ("bad record", SyncFailure::InvalidRecord { index: 2, .. }) => {}
            ("not an array", SyncFailure::Malformed(_)) => {
                assert!(text.contains("expected '['"), "{text}")
            }
            ("truncated", SyncFailure::Malformed(_)) => {
                assert!(text.contains("ended inside record 2"), "{text}")
            }
            ("timeout", SyncFailure::Timeout { secs: 1 }) => {}
            _ => panic!("{name}: unexpected {e:?}"),
        }
        assert!(text.starts_with("view cases: "), "{text}");
        assert_eq!(
            watermark(&env).await.unwrap(),
            before,
            "{name}: watermark unchanged"
        );
        assert_eq!(
            s.probe.held(VIEW).await.latest,
            expected(&records(0, 5)),
            "{name}: nothing delivered"
        );
        // The lease was released: the next run (view fixed) is not refused.
        env.view.answer_status(None);
        env.view.answer_raw(None);
        env.view.set_delay(Duration::ZERO);
        env.view.push(records(5, 1));
        let r = synced(
            engine(&env, s.sink.clone(), 10, "ok")
                .sync(VIEW)
                .await
                .unwrap(),
        );
        assert_eq!(r.records, 1, "{name}");
    }
    use base64::Engine as _;
    let basic =
        |p: &str| base64::engine::general_purpose::STANDARD.encode(format!("svc-ferry:{p}"));
    support::logs::assert_no_secrets(&[PASSWORD, wrong, &basic(PASSWORD), &basic(wrong)]);
}

#[tokio::test]
async fn out_of_order_records_are_refused_loudly_before_their_chunk() {
    let env = env().await;
    let s = sinks::postgres().await;
    let order = [1u64, 2, 3, 4, 6, 5, 7];
    env.view
        .push(order.iter().map(|&i| record(i, cursor_of(i))));
    let e = engine(&env, s.sink.clone(), 2, "ooo")
        .sync(VIEW)
        .await
        .unwrap_err();
    match &e.failure {
        SyncFailure::OutOfOrder {
            index,
            record_id,
            found,
            previous,
        } => {
            assert_eq!((*index, record_id.as_str()), (6, "000000005"));
            assert_eq!(
                (found, previous),
                (&c(cursor_of(5)).unwrap(), &c(cursor_of(6)).unwrap())
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("must be sorted ascending"), "{e}");
    // [1,2] and [3,4] were delivered; [6] was pending and is not.
    assert_eq!(watermark(&env).await.unwrap().0, cursor_of(4));
    let want: Vec<_> = [1u64, 2, 3, 4]
        .iter()
        .map(|&i| record(i, cursor_of(i)))
        .collect();
    assert_eq!(s.probe.held(VIEW).await.latest, expected(&want));
}

#[tokio::test]
async fn equal_cursors_never_straddle_a_chunk_boundary() {
    let env = env().await;
    let s = sinks::s3().await;
    // Cursors 10, 20, 20, 20, 30, 40 with chunk_size 2: the first chunk grows to hold every 20.
    let cursors = [10u64, 20, 20, 20, 30, 40];
    env.view.push(
        cursors
            .iter()
            .enumerate()
            .map(|(i, &cur)| record(i as u64, cur)),
    );
    // Fail after 2 records: a cut between two 20s would lose the third 20 on the rerun.
    let faulty = Arc::new(Faulty {
        inner: s.sink.clone(),
        budget: std::sync::Mutex::new(2),
        hang: false,
        reached: Arc::new(tokio::sync::Notify::new()),
    });
    engine(&env, faulty, 2, "cut").sync(VIEW).await.unwrap_err();
    assert_eq!(
        watermark(&env).await,
        None,
        "the 4-record chunk was not delivered whole"
    );
    let r = synced(
        engine(&env, s.sink.clone(), 2, "whole")
            .sync(VIEW)
            .await
            .unwrap(),
    );
    assert_eq!((r.records, r.chunks), (6, 2));
    let held = s.probe.held(VIEW).await;
    assert_eq!(held.latest, expected(&env.view.all()));
    let sinks::Probe::S3 {
        client,
        bucket,
        prefix,
    } = &s.probe
    else {
        unreachable!()
    };
    let keys = sinks::s3_keys(client, bucket, &format!("{prefix}{VIEW}/")).await;
    assert_eq!(
        keys,
        [
            format!("{prefix}{VIEW}/after-{:020}.jsonl", 20),
            format!("{prefix}{VIEW}/from-start.jsonl"),
        ]
    );
}

#[tokio::test]
async fn a_live_lease_is_reported_an_expired_one_taken_over_and_released_after() {
    let env = env().await;
    let s = sinks::postgres().await;
    env.view.push(records(0, 3));
    let live = LeaseRecord {
        holder: "lambda-stream-7/abc".into(),
        expires_at_ms: now_ms() + 60_000,
        renewed_at: "2026-11-22T00:00:00Z".into(),
        released: false,
        acquired_at_ms: now_ms(),
    };
    env.state
        .put_json(&lease_key(VIEW), &live, PutMode::Create)
        .await
        .unwrap();
    let sync = engine(&env, s.sink.clone(), 10, "second");
    match sync.sync(VIEW).await.unwrap() {
        SyncOutcome::LeaseHeld { holder, view, .. } => {
            assert_eq!(
                (holder.as_str(), view.as_str()),
                ("lambda-stream-7/abc", VIEW)
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(watermark(&env).await, None);
    assert!(env.view.asked().is_empty(), "the view was not read");
    let expired = LeaseRecord {
        expires_at_ms: now_ms() - 1,
        ..live
    };
    env.state
        .put_json(&lease_key(VIEW), &expired, PutMode::Overwrite)
        .await
        .unwrap();
    let r = synced(sync.sync(VIEW).await.unwrap());
    assert_eq!(r.records, 3);
    let (after, _) = env
        .state
        .get_json::<LeaseRecord>(&lease_key(VIEW))
        .await
        .unwrap()
        .unwrap();
    assert!(
        after.released && after.holder.starts_with("second/"),
        "{after:?}"
    );
}

#[tokio::test]
async fn the_watermark_never_moves_backwards() {
    let env = env().await;
    let retry = fast_retry();
    let to = |n: u64| Cursor::parse(&n.to_string()).unwrap();
    let mut mine = WatermarkState::default();
    advance_watermark(env.state.as_ref(), &retry, VIEW, &to(50), "me", &mut mine)
        .await
        .unwrap();
    // Someone else moved it to 90 meanwhile: our stale CAS fails, we re-read and keep 90.
    let mut theirs = mine.clone();
    advance_watermark(
        env.state.as_ref(),
        &retry,
        VIEW,
        &to(90),
        "them",
        &mut theirs,
    )
    .await
    .unwrap();
    let now = advance_watermark(env.state.as_ref(), &retry, VIEW, &to(70), "me", &mut mine)
        .await
        .unwrap();
    assert_eq!(now, to(90));
    assert_eq!(watermark(&env).await.unwrap().0, 90);
    // Created only once, too: a second creator finds it and compares.
    let mut fresh = WatermarkState::default();
    let now = advance_watermark(
        env.state.as_ref(),
        &retry,
        VIEW,
        &to(60),
        "late",
        &mut fresh,
    )
    .await
    .unwrap();
    assert_eq!(now, to(90));
}

#[tokio::test]
async fn lambda_handler_syncs_the_configured_views_into_every_sink() {
    let env = env().await;
    env.view.push(records(0, 12));
    let pg = sinks::postgres().await;
    let lake = sinks::s3().await;
    let api = sinks::http().await;
    let moto = &ferry_harness::shared().moto;
    let view = |sink: &str| {
        serde_json::json!({"url": env.view.url(), "on_behalf_of": ON_BEHALF_OF, "username": env.view.user,
            "password": support::file_secret(PASSWORD), "sink": sink, "chunk_size": 5})
    };
    let config = serde_json::json!({
        "state": {"bucket": env.bucket, "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}},
        "views": {"to-db": view("db"), "to-lake": view("lake"), "to-api": view("api")},
        "sinks": {"db": pg.config, "lake": lake.config, "api": api.config},
        "transfer": {"retries": 1, "initial_backoff_ms": 5, "max_backoff_ms": 50},
    });
    let services = support::services(&config).await;
    let sync = services.view_sync().await.unwrap();
    let answer = view_sync::handle(
        &sync,
        LambdaEvent::new(serde_json::json!({"views": []}), Context::default()),
    )
    .await
    .unwrap();
    let statuses: Vec<_> = answer["views"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["view"].as_str().unwrap(),
                v["status"].as_str().unwrap(),
                v["records"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("to-api", "synced", 12),
            ("to-db", "synced", 12),
            ("to-lake", "synced", 12)
        ]
    );
    for (name, s) in [("to-db", &pg), ("to-lake", &lake), ("to-api", &api)] {
        assert_eq!(
            s.probe.held(name).await.latest,
            expected(&env.view.all()),
            "{name}"
        );
    }
    // One named view; an unknown one fails the invocation (after the others ran).
    env.view.push(records(12, 2));
    let answer = view_sync::handle(
        &sync,
        LambdaEvent::new(serde_json::json!({"views": ["to-db"]}), Context::default()),
    )
    .await
    .unwrap();
    assert_eq!(answer["views"][0]["records"], 2);
    let e = view_sync::handle(
        &sync,
        LambdaEvent::new(
            serde_json::json!({"views": ["to-lake", "nope"]}),
            Context::default(),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("1 of 2 views failed: view nope: no such view"),
        "{e}"
    );
    assert_eq!(
        lake.probe.held("to-lake").await.latest,
        expected(&env.view.all())
    );
    support::logs::assert_no_secrets(&[PASSWORD, sinks::RECEIVER_AUTH]);
}

#[tokio::test]
async fn the_local_scheduler_fires_the_sync_on_an_interval_until_dropped() {
    let env = env().await;
    let s = sinks::postgres().await;
    env.view.push(records(0, 4));
    let sync = Arc::new(engine(&env, s.sink.clone(), 10, "local"));
    let scheduler = ferry::ViewScheduler::start(sync, Duration::from_millis(100));
    let wait_for = async |cursor: u64| {
        for _ in 0..200 {
            if watermark(&env).await.is_some_and(|w| w.0 == cursor) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the scheduler did not sync up to {cursor}");
    };
    wait_for(cursor_of(3)).await;
    env.view.push(records(4, 3));
    wait_for(cursor_of(6)).await;
    let ticks = env.view.asked().len();
    assert!(ticks >= 2, "{ticks}");
    drop(scheduler);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = env.view.asked().len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        env.view.asked().len(),
        after,
        "no sync after the scheduler was dropped"
    );
    assert_eq!(s.probe.held(VIEW).await.latest, expected(&env.view.all()));
}

#[tokio::test]
async fn a_view_response_cut_off_mid_body_is_read_again_from_the_saved_watermark_in_the_same_run() {
    let env = env().await;
    let s = sinks::http().await;
    env.view.push(records(0, 30));
    // The first response is cut after 2000 bytes (headers and about half the records).
    let proxy = FaultProxy::start(env.view.server.address().port()).await;
    proxy.plan([Fault::CutResponseAfter(2000)]);
    let mut config = view_config(&env, 5, 5);
    config.url = config.url.replace(
        &format!(":{}/", env.view.server.address().port()),
        &format!(":{}/", proxy.port),
    );
    let mut sync = ViewSync::new(env.state.clone(), fast_retry(), "cut");
    sync.add_view(
        VIEW,
        ViewSource {
            config,
            password: PASSWORD.to_string().into(),
            http: ferry_shared::http_client::build(Duration::from_secs(5)),
            sink: s.sink.clone(),
        },
    );
    let r = synced(sync.sync(VIEW).await.unwrap());
    assert_eq!((r.records, r.watermark_after), (30, c(cursor_of(29))));
    assert_eq!(watermark(&env).await.unwrap().0, cursor_of(29));
    // Asked twice in the one run: from the start, then from the watermark saved before the cut
    // (a chunk boundary: the chunks read before the cut were delivered first).
    let asked = env.view.asked();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(asked[0], "");
    let resumed: u64 = asked[1].parse().expect("asked again from a watermark");
    assert_eq!((resumed - cursor_of(0)) / 7 % 5, 4, "{asked:?}");
    assert!(
        resumed < cursor_of(29),
        "the cut came before the end: {asked:?}"
    );
    // Every record delivered, each exactly once on the wire.
    assert_eq!(s.probe.held(VIEW).await.latest, expected(&env.view.all()));
    let sinks::Probe::Http(receiver) = &s.probe else {
        unreachable!()
    };
    let keys = receiver.keys(VIEW);
    assert_eq!(keys.len(), 30);
    assert!(keys.values().all(|n| *n == 1), "{keys:?}");
    assert!(
        support::logs::text()
            .lines()
            .any(|l| l.contains("view response cut off mid-body")
                && l.contains("\"level\":\"WARN\"")),
        "the cut is logged"
    );
}

#[tokio::test]
async fn a_lease_its_holder_stopped_renewing_is_reported_stale_at_warn_and_fails_the_function() {
    let env = env().await;
    let s = sinks::s3().await;
    env.view.push(records(0, 3));
    // lease_secs is 60: a live holder renews once 15 s have passed. This one took the lease
    // 200 s ago and last renewed it 50 s ago (10 s left): it died or is stuck.
    let now = now_ms();
    let dead = LeaseRecord {
        holder: "lambda-stream-9/dead0001".into(),
        expires_at_ms: now + 10_000,
        renewed_at: "2026-11-22T00:00:00Z".into(),
        released: false,
        acquired_at_ms: now - 200_000,
    };
    env.state
        .put_json(&lease_key(VIEW), &dead, PutMode::Create)
        .await
        .unwrap();
    let sync = engine(&env, s.sink.clone(), 10, "next");
    let outcome = sync.sync(VIEW).await.unwrap();
    let SyncOutcome::LeaseStale {
        view,
        holder,
        age_secs,
        silent_secs,
        ..
    } = &outcome
    else {
        panic!("expected a stale lease: {outcome:?}");
    };
    assert_eq!(
        (view.as_str(), holder.as_str()),
        (VIEW, "lambda-stream-9/dead0001")
    );
    assert!(
        age_secs.is_some_and(|a| (199..=202).contains(&a)),
        "{outcome:?}"
    );
    assert!((49..=52).contains(silent_secs), "{outcome:?}");
    assert_eq!(
        serde_json::to_value(&outcome).unwrap()["status"],
        "lease_stale"
    );
    assert!(env.view.asked().is_empty(), "the view was not read");
    let line = support::logs::text()
        .lines()
        .find(|l| l.contains("lambda-stream-9/dead0001") && l.contains("expected run time"))
        .expect("a log line names the holder")
        .to_string();
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["level"], "WARN", "{line}");
    assert!(line["fields"]["age_secs"].as_u64().is_some(), "{line}");
    // The scheduled function fails, so its error metric shows that nothing syncs.
    let e = view_sync::handle(
        &sync,
        LambdaEvent::new(serde_json::json!({"views": [VIEW]}), Context::default()),
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("lambda-stream-9/dead0001") && text.contains("past its expected run time"),
        "{text}"
    );
    // A lease renewed on time is still only "held" (not stale) ...
    let live = LeaseRecord {
        expires_at_ms: now_ms() + 50_000,
        ..dead.clone()
    };
    env.state
        .put_json(&lease_key(VIEW), &live, PutMode::Overwrite)
        .await
        .unwrap();
    assert!(matches!(
        sync.sync(VIEW).await.unwrap(),
        SyncOutcome::LeaseHeld { .. }
    ));
    // ... and once the stale one expires, the next run takes over and syncs.
    let expired = LeaseRecord {
        expires_at_ms: now_ms() - 1,
        ..dead
    };
    env.state
        .put_json(&lease_key(VIEW), &expired, PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(synced(sync.sync(VIEW).await.unwrap()).records, 3);
}
