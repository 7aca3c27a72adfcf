//! The functions' CloudWatch Embedded Metric Format lines, from real runs on the real components
//! (Azurite, moto, sshd, a mock HTTP endpoint and view): every line is valid EMF (each member
//! a directive names sits at the root, units CloudWatch knows, namespace `ferry`, at most 100
//! metrics and 30 dimensions) and its values are what the run did (bytes delivered = the files'
//! sizes, webhook outcomes, view records, reconcile finds, failures and dead letters).
//!
//! The lines are captured in memory through `ferry_shared::metrics::capture`. The capture is
//! process-wide, so the tests here take turns (one lock) and each reads only the lines written
//! during its turn.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_shared::metrics;
use ferry_shared::retry::RetryPolicy;
use ferry_shared::state::S3StateStore;
use ferry_shared::view_sync::{ViewSource, ViewSync};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use support::pipeline::{Options, Pipeline, job_of};
use support::pubsub::{Aad, ServiceBus, TokenService};
use support::view::{MockView, ON_BEHALF_OF, records};

/// One test at a time: the capture is shared by the process.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The units CloudWatch accepts in EMF.
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Runs `work` on its turn with the capture on; returns its result and the EMF lines written
/// meanwhile, each checked for valid structure.
async fn captured<F: std::future::Future>(work: F) -> (F::Output, Vec<Value>) {
    let _turn = TURN.lock().await;
    metrics::capture();
    let before = metrics::captured().len();
    let out = work.await;
    let lines = metrics::captured()[before..]
        .iter()
        .map(|l| valid_emf(l))
        .collect();
    (out, lines)
}

/// Parses one line and asserts it is valid EMF; returns it.
fn valid_emf(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(!line.contains('\n'), "one line: {line}");
    let aws = &v["_aws"];
    assert!(
        aws["Timestamp"].as_u64().unwrap() > 1_700_000_000_000,
        "{line}"
    );
    let directives = aws["CloudWatchMetrics"].as_array().unwrap();
    assert!(!directives.is_empty(), "{line}");
    for d in directives {
        assert_eq!(d["Namespace"], "ferry", "{line}");
        let sets = d["Dimensions"].as_array().unwrap();
        for set in sets {
            let set = set.as_array().unwrap();
            assert!(!set.is_empty() && set.len() <= 30, "{line}");
            for dim in set {
                let name = dim.as_str().unwrap();
                assert!(
                    v[name].as_str().is_some_and(|s| !s.is_empty()),
                    "dimension {name} is not a string member at the root: {line}"
                );
            }
        }
        let metrics = d["Metrics"].as_array().unwrap();
        assert!(!metrics.is_empty() && metrics.len() <= 100, "{line}");
        for m in metrics {
            let name = m["Name"].as_str().unwrap();
            let unit = m["Unit"].as_str().unwrap();
            assert!(UNITS.contains(&unit), "unit {unit} of {name}: {line}");
            match &v[name] {
                Value::Number(_) => {}
                Value::Array(values) => assert!(
                    !values.is_empty()
                        && values.len() <= 100
                        && values.iter().all(Value::is_number),
                    "{name}: {line}"
                ),
                other => panic!("metric {name} is {other} at the root: {line}"),
            }
        }
    }
    v
}

/// The values of `metric` over the lines whose dimensions are exactly `Function` + `dims`
/// (every sample of each line).
fn values(lines: &[Value], metric: &str, function: &str, dims: &[(&str, &str)]) -> Vec<f64> {
    lines
        .iter()
        .filter(|l| l["Function"] == function)
        .filter(|l| {
            let set = l["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
                .as_array()
                .unwrap()
                .len();
            set == dims.len() + 1 && dims.iter().all(|(k, v)| l[*k] == *v)
        })
        .flat_map(|l| match &l[metric] {
            Value::Number(n) => vec![n.as_f64().unwrap()],
            Value::Array(a) => a.iter().map(|n| n.as_f64().unwrap()).collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn sum(lines: &[Value], metric: &str, function: &str, dims: &[(&str, &str)]) -> f64 {
    values(lines, metric, function, dims).iter().sum()
}

#[tokio::test]
async fn webhook_and_copy_lines_count_the_outcomes_files_and_bytes_of_the_run() {
    let p = Pipeline::new(Options::default()).await;
    // 300 kB for the catch-all route; the zip goes to both routes.
    let files = [("report.csv", 300_000u64), ("HMIS_2026.zip", 5_000u64)];
    for (i, (name, len)) in files.iter().enumerate() {
        p.upload(name, 40 + i as u64, *len).await;
    }
    let ((), lines) = captured(async {
        let mut keys = Vec::new();
        for (name, _) in files {
            let (status, answer) = p.notify(name).await;
            assert_eq!(status, 202, "{answer}");
            keys.push(job_of(&answer, "all").1);
            if name.ends_with(".zip") {
                keys.push(job_of(&answer, "hmis-zips").1);
            }
        }
        let (status, _) = p.notify("report.csv").await;
        assert_eq!(status, 200, "the second call is a duplicate");
        let body = json!({"container": p.container, "file": "report.csv"}).to_string();
        let (status, _) = p
            .webhook_call("POST", Some("application/json"), &body, "", Some("wrong"))
            .await;
        assert_eq!(status, 401);
        for key in &keys {
            assert!(!p.copy(key, 1).await, "{key} asked for redelivery");
        }
    })
    .await;

    let hook = "webhook-ingest";
    let requests = |outcome, status| {
        sum(
            &lines,
            "WebhookRequests",
            hook,
            &[("Outcome", outcome), ("Status", status)],
        )
    };
    assert_eq!(requests("accepted", "202"), 2.0);
    assert_eq!(requests("duplicate", "200"), 1.0);
    assert_eq!(requests("refused", "401"), 1.0);
    let jobs = |route, outcome| {
        sum(
            &lines,
            "WebhookJobs",
            hook,
            &[("Route", route), ("Outcome", outcome)],
        )
    };
    assert_eq!(jobs("all", "accepted"), 2.0);
    assert_eq!(jobs("hmis-zips", "accepted"), 1.0);
    assert_eq!(jobs("all", "duplicate"), 1.0);
    // One line per webhook invocation and dimension set, never one per recorded value.
    let accepted_lines = lines
        .iter()
        .filter(|l| {
            l["Function"] == hook && l["Outcome"] == "accepted" && l.get("Status").is_some()
        })
        .count();
    assert_eq!(accepted_lines, 2);

    let copy = "blob-copy";
    let all_bytes = (300_000 + 5_000) as f64;
    for dest in ["sftp", "s3", "http"] {
        let dims = [("Route", "all"), ("Destination", dest)];
        assert_eq!(
            sum(&lines, "BytesDelivered", copy, &dims),
            all_bytes,
            "{dest}"
        );
        assert_eq!(sum(&lines, "FilesDelivered", copy, &dims), 2.0, "{dest}");
        let durations = values(&lines, "DeliveryDuration", copy, &dims);
        assert_eq!(durations.len(), 2, "one sample per delivery to {dest}");
        assert!(durations.iter().all(|ms| *ms > 0.0), "{durations:?}");
    }
    let hmis = [("Route", "hmis-zips"), ("Destination", "sftp")];
    assert_eq!(sum(&lines, "BytesDelivered", copy, &hmis), 5_000.0);
    assert_eq!(sum(&lines, "FilesDelivered", copy, &hmis), 1.0);
    // The Function-only rollup every directive carries is what the alarms read.
    let line = lines
        .iter()
        .find(|l| l["Function"] == copy && l.get("BytesDelivered").is_some())
        .unwrap();
    assert_eq!(
        line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Function", "Route", "Destination"], ["Function"]])
    );
    assert!(
        lines
            .iter()
            .all(|l| l.get("DeliveryFailures").is_none() && l.get("JobsDeadLettered").is_none()),
        "no failure in a clean run"
    );
    // Dimensions are config names and fixed labels: no secret reaches CloudWatch.
    for secret in p.secrets() {
        assert!(
            lines.iter().all(|l| !l.to_string().contains(&secret)),
            "a secret in a metric line"
        );
    }
    assert_cold_starts_once();
}

#[tokio::test]
async fn a_refused_delivery_counts_a_failure_by_kind_and_a_dead_letter() {
    // The HTTP endpoint answers 403: credentials refused, which no retry heals.
    let p = Pipeline::new(Options {
        http_status: Some(403),
        ..Options::default()
    })
    .await;
    p.upload("refused.csv", 51, 2_000).await;
    let (job_id, lines) = captured(async {
        let (_, answer) = p.notify("refused.csv").await;
        let (job_id, key) = job_of(&answer, "all");
        assert!(!p.copy(&key, 1).await, "a refusal is not retried");
        job_id
    })
    .await;
    assert!(p.failure(&job_id).await.is_some(), "dead-lettered");
    let copy = "blob-copy";
    assert_eq!(
        sum(
            &lines,
            "DeliveryFailures",
            copy,
            &[
                ("Route", "all"),
                ("Destination", "http"),
                ("Kind", "unauthorized")
            ]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &lines,
            "JobsDeadLettered",
            copy,
            &[("Route", "all"), ("Kind", "permanent")]
        ),
        1.0
    );
    // The two destinations that took the file count as delivered.
    for dest in ["sftp", "s3"] {
        let dims = [("Route", "all"), ("Destination", dest)];
        assert_eq!(sum(&lines, "BytesDelivered", copy, &dims), 2_000.0);
    }
    assert_eq!(
        sum(
            &lines,
            "FilesDelivered",
            copy,
            &[("Route", "all"), ("Destination", "http")]
        ),
        0.0
    );
    assert_cold_starts_once();
}

#[tokio::test]
async fn reconcile_counts_the_missed_webhooks_it_found() {
    let p = Pipeline::new(Options {
        all_route_destinations: Some(vec!["http"]),
        ..Options::default()
    })
    .await;
    p.upload("announced.csv", 61, 100).await;
    p.upload("missed-1.csv", 62, 100).await;
    p.upload("missed-2.csv", 63, 100).await;
    let reconciler = p.ingest.reconciler().await.unwrap();
    let (summary, lines) = captured(async {
        let (status, _) = p.notify("announced.csv").await;
        assert_eq!(status, 202);
        let event = LambdaEvent::new(json!({"lookback_hours": 1}), Context::default());
        reconcile::handle(&reconciler, event).await.unwrap()
    })
    .await;
    let dims = [("Route", "all")];
    assert_eq!(
        sum(&lines, "ReconcileCreated", "reconcile", &dims),
        2.0,
        "{summary}"
    );
    assert_eq!(
        sum(&lines, "ReconcileAlreadyKnown", "reconcile", &dims),
        1.0
    );
    assert_eq!(sum(&lines, "ReconcileListed", "reconcile", &dims), 3.0);
    assert_eq!(sum(&lines, "ReconcileFailures", "reconcile", &dims), 0.0);
    // The zip-only route takes none of them.
    assert_eq!(
        sum(
            &lines,
            "ReconcileCreated",
            "reconcile",
            &[("Route", "hmis-zips")]
        ),
        0.0
    );
    assert_cold_starts_once();
}

#[tokio::test]
async fn view_sync_counts_records_and_reports_the_watermark_age() {
    const PASSWORD: &str = "view-password-Mx3#q9";
    support::aws_test_env();
    support::logs::init();
    let moto = &ferry_harness::shared().moto;
    let bucket = support::unique("vstate");
    moto.create_bucket(&bucket).await.unwrap();
    let view = MockView::start(PASSWORD).await;
    let sink = support::sinks::s3().await;
    let name = support::unique("cases");
    let mut sync = ViewSync::new(
        Arc::new(S3StateStore::new(support::moto_s3().await, &bucket)),
        RetryPolicy::default(),
        "metrics-test",
    );
    sync.add_view(
        &name,
        ViewSource {
            config: serde_json::from_value(json!({
                "url": view.url(), "on_behalf_of": ON_BEHALF_OF, "username": view.user,
                "password": {"env": "FERRY_TEST_UNUSED"}, "sink": "s", "chunk_size": 10,
                "timeout_secs": 5, "lease_secs": 60,
            }))
            .unwrap(),
            password: PASSWORD.to_string().into(),
            http: ferry_shared::http_client::build(Duration::from_secs(5)),
            sink: sink.sink.clone(),
        },
    );
    let run = || async {
        let event = LambdaEvent::new(json!({"views": [name]}), Context::default());
        view_sync::handle(&sync, event).await.unwrap()
    };

    // The first run starts without a watermark and moves it: its age is that of a fresh one.
    view.push(records(0, 25));
    let (_, first) = captured(run()).await;
    let dims = [("View", name.as_str())];
    assert_eq!(sum(&first, "ViewRecordsSynced", "view-sync", &dims), 25.0);
    assert_eq!(sum(&first, "ViewRecordsSkipped", "view-sync", &dims), 0.0);
    let age = values(&first, "WatermarkAge", "view-sync", &dims);
    assert_eq!(age.len(), 1, "{first:?}");
    assert!(age[0] < 60.0, "the watermark just moved: {age:?}");

    // Two seconds later, nothing new: the watermark has not moved since, and its age says so.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (_, second) = captured(run()).await;
    assert_eq!(sum(&second, "ViewRecordsSynced", "view-sync", &dims), 0.0);
    let age = values(&second, "WatermarkAge", "view-sync", &dims);
    assert_eq!(age.len(), 1, "{second:?}");
    assert!(
        age[0] >= 1.0,
        "the watermark is older than a second: {age:?}"
    );

    // A view that refuses the credentials counts a failure of that kind.
    view.answer_status(Some(401));
    let (_, failed) = captured(async {
        let event = LambdaEvent::new(json!({"views": [name]}), Context::default());
        view_sync::handle(&sync, event).await.unwrap_err()
    })
    .await;
    assert_eq!(
        sum(
            &failed,
            "ViewSyncFailures",
            "view-sync",
            &[("View", name.as_str()), ("Kind", "unauthorized")]
        ),
        1.0,
        "{failed:?}"
    );
    assert_cold_starts_once();
}

#[tokio::test]
async fn token_refresh_and_export_pull_count_tokens_and_messages_by_outcome() {
    const CLIENT_ID: &str = "metrics-export-client";
    const CLIENT_SECRET: &str = "aad-client-secret-Mt4~k8Rz1";
    const INTEGRATION: &str = "ferry-metrics-export";
    const SB_KEY: &str = "sbkey-bWV0cmljcy10ZXN0LWtleS0xMjM0NTY=";
    let container = support::container_with_policy("export", "gen-1", "rl").await;
    let c = ferry_harness::shared();
    let admin = c.azurite.admin();
    let blob_base = format!(
        "http://127.0.0.1:{}/devstoreaccount1/{container}",
        c.azurite.port
    );
    let aad = Aad::start(CLIENT_ID, Some(CLIENT_SECRET)).await;
    let tokens = TokenService::start(&aad, INTEGRATION).await;
    let bus = ServiceBus::start("listen", SB_KEY, Duration::from_secs(30)).await;
    let sas = admin.container_sas_for_policy(&container, "gen-1");
    tokens.answer(
        &bus.connection_string(SB_KEY),
        &bus.subscription,
        &[format!("{blob_base}?{sas}")],
    );
    let state_bucket = support::unique("state");
    c.moto.create_bucket(&state_bucket).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let source = support::unique("eg");
    let config = json!({
        "state": {"bucket": state_bucket, "endpoint": {"endpoint_url": c.moto.endpoint, "force_path_style": true}},
        "sources": {&source: support::source_config(&aad, CLIENT_ID, CLIENT_SECRET, &tokens, INTEGRATION, json!({"receive_timeout_secs": 1}))},
        "destinations": {"out": {"type": "local_dir", "path": out.path()}},
        "routes": [{"name": "items", "source": &source, "blob_types": ["Gateway.ItemChanges"], "destinations": ["out"]}]
    });
    let notice = |blob_type: &str, id: &str, uri: &str| {
        json!({"blobType": blob_type, "correlationId": id, "contentType": "application/x-jsonlines",
               "contentEncoding": "", "uri": uri, "properties": {}})
        .to_string()
        .into_bytes()
    };
    // Wanted, unwanted, a uri on a foreign host, not a notification at all; and one wanted
    // message waiting in the dead-letter subqueue.
    bus.send(notice(
        "Gateway.ItemChanges",
        "c-1",
        &format!("{blob_base}/a.jsonl"),
    ));
    bus.send(notice(
        "Gateway.StockChanges",
        "c-2",
        &format!("{blob_base}/b.jsonl"),
    ));
    bus.send(notice(
        "Gateway.ItemChanges",
        "c-3",
        "https://elsewhere.example/x/c.jsonl",
    ));
    bus.send(b"not json".to_vec());
    bus.send_dead_letter(
        notice(
            "Gateway.ItemChanges",
            "c-4",
            &format!("{blob_base}/d.jsonl"),
        ),
        "MaxDeliveryCountExceeded",
    );

    let services = support::services(&config).await;
    let caches = services.token_caches().await.unwrap();
    let pullers = services.export_pullers().await.unwrap();
    let (_, refreshed) = captured(async {
        let event = LambdaEvent::new(json!({}), Context::default());
        token_refresh::handle(&caches, event).await.unwrap()
    })
    .await;
    let dims = [("Source", source.as_str())];
    assert_eq!(
        sum(&refreshed, "TokensRefreshed", "token-refresh", &dims),
        1.0
    );
    assert_eq!(
        sum(&refreshed, "TokenRefreshFailures", "token-refresh", &dims),
        0.0
    );

    let (summary, pulled) = captured(async {
        let mut context = Context::default();
        context.deadline = ferry_shared::clock::now_ms() + 20_000;
        export_pull::handle(&pullers, LambdaEvent::new(json!({}), context))
            .await
            .unwrap()["sources"][0]
            .clone()
    })
    .await;
    let f = "export-pull";
    let field = |k: &str| summary[k].as_f64().unwrap();
    for (metric, value) in [
        // The subscription's four (the dead-lettered one is counted as drained).
        ("ExportMessagesPulled", 4.0),
        ("ExportJobsCreated", 2.0),
        ("ExportMessagesSkipped", 1.0),
        ("ExportMessagesRefused", 2.0),
        ("ExportDeadLettersDrained", 1.0),
        ("ExportDeadLetterJobs", 1.0),
        ("ExportDeadLettersRefused", 0.0),
    ] {
        assert_eq!(sum(&pulled, metric, f, &dims), value, "{metric}: {summary}");
    }
    assert_eq!(field("received"), 4.0, "{summary}");
    // The tokens token-refresh stored were used: export-pull refreshed none.
    assert_eq!(sum(&pulled, "TokensRefreshed", f, &dims), 0.0);
    assert_cold_starts_once();
}

/// Every function that wrote lines in this process counted exactly one cold start (the capture
/// starts before any test runs a function, as every test captures from its first call).
fn assert_cold_starts_once() {
    let all: Vec<Value> = metrics::captured().iter().map(|l| valid_emf(l)).collect();
    let mut cold: BTreeMap<String, f64> = BTreeMap::new();
    for l in all.iter().filter(|l| l.get("ColdStart").is_some()) {
        *cold
            .entry(l["Function"].as_str().unwrap().to_string())
            .or_default() += l["ColdStart"].as_f64().unwrap();
    }
    for l in &all {
        let f = l["Function"].as_str().unwrap();
        assert_eq!(cold.get(f), Some(&1.0), "cold starts of {f}: {cold:?}");
    }
}
