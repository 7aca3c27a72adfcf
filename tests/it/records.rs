//! Records from pub/sub export files into record sinks, on the real components: notifications on
//! the Service Bus fake, gzip'd jsonl files in Azurite behind a stored access policy, tokens from
//! the token-service and AAD fakes, state on moto, rows in the harness's PostgreSQL and objects in
//! an S3 JSON Lines bucket on moto. Messages go through export-pull's Lambda handler; jobs through
//! blob-copy's engine as built by `Services::engine`, with the sink wrapped by a fault where a
//! test needs a failure mid-file.
//!
//! What it shows: the file's lines arrive as rows (or JSON Lines objects) equal to the file's; a
//! rerun after a failure at line k applies nothing twice; a bad line dead-letters the job naming
//! its line, the lines before it stay loaded, and a replay of the fixed file loads the rest once.

use crate::support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ferry_shared::engine::{JobError, JobOutcome, TransferEngine};
use ferry_shared::job::{FailureRecord, TransferJob};
use ferry_shared::layout::{failure_key, records_receipt_key};
use ferry_shared::pubsub::pull::ExportPuller;
use ferry_shared::records::{RecordsPlan, RecordsReceipt};
use ferry_shared::services::Services;
use ferry_shared::sink::{Chunk, Sink, SinkError, SinkReceipt};
use ferry_shared::state::StateStoreExt;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use support::pubsub::{Aad, ServiceBus, TokenService};

const CLIENT_ID: &str = "7c1e4a90-ferry-records-client";
const CLIENT_SECRET: &str = "aad-client-secret-Rk4~p9Qz1xWm";
const INTEGRATION: &str = "ferry-records-export";
const SB_KEY: &str = "sbkey-cmVjb3Jkc2ZlcnJ5a2V5MTIzNDU2Nzg=";
const SOURCE: &str = "egretail";
const ITEMS: &str = "Gateway.ItemChanges";

/// One isolated export feeding record sinks.
struct Export {
    container: String,
    blob_base: String,
    table: String,
    lake_bucket: String,
    _aad: Aad,
    _tokens: TokenService,
    bus: ServiceBus,
    pullers: Vec<ExportPuller>,
    copy: Services,
    _pull: Services,
}

impl Export {
    /// `records` is the `records` block of the one route (`sink` is `db` or `lake`).
    async fn new(records: Value) -> Self {
        let container = support::container_with_policy("records", "gen-1", "rl").await;
        let c = ferry_harness::shared();
        let admin = c.azurite.admin();
        let blob_base = format!(
            "http://127.0.0.1:{}/devstoreaccount1/{container}",
            c.azurite.port
        );
        let aad = Aad::start(CLIENT_ID, Some(CLIENT_SECRET)).await;
        let tokens = TokenService::start(&aad, INTEGRATION).await;
        let bus = ServiceBus::start("listen", SB_KEY, Duration::from_secs(30)).await;
        let state_bucket = support::unique("state");
        let lake_bucket = support::unique("lake");
        c.moto.create_bucket(&state_bucket).await.unwrap();
        c.moto.create_bucket(&lake_bucket).await.unwrap();
        let table = support::unique("items").replace('-', "_");
        let config = json!({
            "state": {"bucket": state_bucket, "endpoint": {"endpoint_url": c.moto.endpoint, "force_path_style": true}},
            "sources": {SOURCE: support::source_config(&aad, CLIENT_ID, CLIENT_SECRET, &tokens, INTEGRATION, json!({}))},
            "sinks": {
                "db": support::sinks::postgres_config(&table),
                "lake": {"type": "s3_jsonl", "bucket": lake_bucket, "prefix": "exports/",
                         "endpoint": {"endpoint_url": c.moto.endpoint, "force_path_style": true}}
            },
            "routes": [
                {"name": "item-rows", "source": SOURCE, "blob_types": [ITEMS], "records": records}
            ],
            "transfer": {"max_attempts": 3, "retries": 1, "initial_backoff_ms": 10, "max_backoff_ms": 50}
        });
        let pull = support::services(&config).await;
        let pullers = pull.export_pullers().await.unwrap();
        let copy = support::services(&config).await;
        let sas = admin.container_sas_for_policy(&container, "gen-1");
        tokens.answer(
            &bus.connection_string(SB_KEY),
            &bus.subscription,
            &[format!("{blob_base}?{sas}")],
        );
        Self {
            container,
            blob_base,
            table,
            lake_bucket,
            _aad: aad,
            _tokens: tokens,
            bus,
            pullers,
            copy,
            _pull: pull,
        }
    }

    /// Uploads `bytes` as `name` and announces it (gzip'd jsonl); returns the job key export-pull
    /// saved.
    async fn announce(&self, name: &str, bytes: &[u8], correlation_id: &str) -> String {
        self.upload(name, bytes).await;
        self.bus.send(
            json!({"blobType": ITEMS, "correlationId": correlation_id,
                   "contentType": "application/x-jsonlines", "contentEncoding": "gzip",
                   "uri": format!("{}/{name}", self.blob_base), "properties": {"tenantId": "42"}})
            .to_string(),
        );
        let mut context = Context::default();
        context.deadline = ferry_shared::clock::now_ms() + 60_000;
        export_pull::handle(
            &self.pullers,
            LambdaEvent::new(json!({"source": "aws.scheduler"}), context),
        )
        .await
        .unwrap();
        let jobs = self.copy.state.list("jobs/item-rows/").await.unwrap();
        let job_id = ferry_shared::job::export_job_id("item-rows", SOURCE, correlation_id);
        let key = ferry_shared::layout::job_key("item-rows", &job_id);
        assert!(jobs.contains(&key), "{jobs:?}");
        key
    }

    async fn upload(&self, name: &str, bytes: &[u8]) {
        ferry_harness::shared()
            .azurite
            .admin()
            .put_blob(&self.container, name, bytes)
            .await
            .unwrap();
    }

    /// blob-copy's engine, as built for the config, with the route's sink wrapped by `fault`.
    async fn engine(&self, fault: Option<Arc<FailOnce>>) -> TransferEngine {
        let engine = self.copy.engine().await.unwrap();
        let Some(fault) = fault else {
            return engine;
        };
        let route = &self.copy.config.routes[0];
        let config = route.records.clone().unwrap();
        let plan = RecordsPlan {
            sink_name: config.sink.clone(),
            sink: fault,
            config,
        };
        engine.with_records(BTreeMap::from([(route.name.clone(), Arc::new(plan))]))
    }

    async fn job(&self, key: &str) -> TransferJob {
        self.copy
            .state
            .get_json::<TransferJob>(key)
            .await
            .unwrap()
            .unwrap()
            .0
    }

    async fn receipt(&self, job_id: &str, sink: &str) -> Option<RecordsReceipt> {
        self.copy
            .state
            .get_json::<RecordsReceipt>(&records_receipt_key(job_id, sink))
            .await
            .unwrap()
            .map(|(r, _)| r)
    }

    /// Rows of the job's view: line -> (record id, applied_count, record).
    async fn rows(&self, view: &str) -> BTreeMap<u64, (String, i32, Value)> {
        let client = support::sinks::pg_client().await;
        let rows = client
            .query(
                &format!(
                    "SELECT record_id, last_submission_id::text, applied_count, record::text FROM {} WHERE view_name = $1",
                    self.table
                ),
                &[&view],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                let line: String = r.get(1);
                let record: String = r.get(3);
                (
                    line.parse().unwrap(),
                    (
                        r.get::<_, String>(0),
                        r.get::<_, i32>(2),
                        serde_json::from_str(&record).unwrap(),
                    ),
                )
            })
            .collect()
    }

    /// The lake's objects of the job's view, in key order, and their lines parsed.
    async fn lake(&self, view: &str) -> (Vec<String>, Vec<Value>) {
        let s3 = support::moto_s3().await;
        let prefix = format!("exports/{view}/");
        let mut keys = support::sinks::s3_keys(&s3, &self.lake_bucket, &prefix).await;
        // `from-start` holds the first chunk; `after-<20 digits>` the rest, in cursor order.
        keys.sort_by_key(|k| (!k.ends_with("from-start.jsonl"), k.clone()));
        let mut lines = Vec::new();
        for key in &keys {
            let body = s3
                .get_object()
                .bucket(&self.lake_bucket)
                .key(key)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes();
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                lines.push(serde_json::from_slice(line).unwrap());
            }
        }
        (keys, lines)
    }

    fn assert_logs_clean(&self) {
        let pg = ferry_harness::postgres_shared();
        support::logs::assert_no_secrets(&[CLIENT_SECRET, SB_KEY, pg.password.as_str()]);
    }
}

/// A sink that passes every chunk to the real one, except that the `fail_on`-th delivery (1 =
/// first) and the retry that follows it (the config allows one) are applied and then reported
/// as transient failures: the worst case for a rerun (the sink holds records the run never saw
/// acknowledged).
struct FailOnce {
    inner: Arc<dyn Sink>,
    fail_on: usize,
    calls: AtomicUsize,
}

#[async_trait]
impl Sink for FailOnce {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn deliver(&self, view: &str, chunk: &Chunk) -> Result<SinkReceipt, SinkError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let receipt = self.inner.deliver(view, chunk).await?;
        if n == self.fail_on || n == self.fail_on + 1 {
            let (first, last) = (&chunk.records[0].cursor, chunk.last_cursor().unwrap());
            return Err(SinkError::transient(format!(
                "injected after applying lines {first}..={last}"
            )));
        }
        Ok(receipt)
    }
}

/// `lines` jsonl records (one object each), with entropy so gzip cannot squash them.
fn jsonl(seed: u64, lines: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut g = support::data::Generator::new(seed);
    for n in 0..lines {
        let mut r = [0u8; 10];
        g.fill(&mut r);
        writeln!(
            out,
            r#"{{"itemId":{n},"sku":"{}","qty":{},"name":"Vare ✓ {seed}","price":{{"amount":"{}.{:02}","currency":"NOK"}}}}"#,
            hex::encode(r),
            r[0],
            r[1],
            r[2] % 100
        )
        .unwrap();
    }
    out
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The file's lines parsed, by 1-based line number.
fn lines_of(data: &[u8]) -> BTreeMap<u64, Value> {
    data.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| (i as u64 + 1, serde_json::from_slice(l).unwrap()))
        .collect()
}

#[tokio::test]
async fn a_100k_line_gzip_export_loads_into_postgres_once_even_after_a_failure_mid_file() {
    let e = Export::new(json!({"sink": "db", "format": "jsonl", "chunk_lines": 1000})).await;
    let plain = jsonl(12, 100_000);
    let key = e
        .announce("items/2026-11-29/items.jsonl.gz", &gz(&plain), "corr-100k")
        .await;
    let job = e.job(&key).await;
    let view = ferry_shared::records::view_name(&job);

    // Run 1: the sink applies chunk 37 (lines 36001..=37000) and then fails.
    let fault = Arc::new(FailOnce {
        inner: e.copy.sink("db").await.unwrap(),
        fail_on: 37,
        calls: AtomicUsize::new(0),
    });
    let engine = e.engine(Some(fault.clone())).await;
    let first = engine.run(&key, 1).await;
    assert!(
        matches!(&first, Err(JobError::RetryLater { reason, .. }) if reason.contains("injected after applying lines 36001..=37000")),
        "{first:?}"
    );
    assert!(e.receipt(&job.id, "db").await.is_none(), "no receipt yet");
    let held = e.rows(&view).await;
    assert_eq!(held.len(), 37_000, "chunks 1..=37 were applied");

    // Run 2 (the redelivery): everything, and nothing applied twice.
    let second = engine.run(&key, 2).await.unwrap();
    assert_eq!(
        second,
        JobOutcome::Completed {
            delivered: 0,
            already_done: 0
        }
    );
    let receipt = e.receipt(&job.id, "db").await.expect("records receipt");
    assert_eq!(
        (receipt.records, receipt.applied, receipt.already_present),
        (100_000, 63_000, 37_000),
        "applied vs already present: {receipt:?}"
    );
    assert_eq!((receipt.chunks, receipt.kind.as_str()), (100, "postgres"));
    assert_eq!(receipt.view, view);
    let rows = e.rows(&view).await;
    let want = lines_of(&plain);
    assert_eq!(rows.len(), want.len(), "row count equals the file's lines");
    for (line, value) in &want {
        let (record_id, applied, record) = &rows[line];
        assert_eq!(record_id, &format!("corr-100k:{line}"));
        assert_eq!(*applied, 1, "line {line} applied once");
        assert_eq!(record, value, "line {line}: row equals the file's line");
    }

    // Run 1 made 38 calls (chunk 37 once more by its in-run retry), run 2 100.
    assert_eq!(fault.calls.load(Ordering::SeqCst), 138);
    // A replay of the finished job skips the load by its receipt: no sink call at all.
    let calls = fault.calls.load(Ordering::SeqCst);
    engine.run(&key, 3).await.unwrap();
    assert_eq!(fault.calls.load(Ordering::SeqCst), calls, "nothing re-sent");
    e.assert_logs_clean();
}

#[tokio::test]
async fn a_gzip_export_loads_into_s3_json_lines_equal_to_the_file_and_a_rerun_adds_no_object() {
    let e = Export::new(json!({"sink": "lake", "format": "jsonl", "chunk_lines": 2500})).await;
    let plain = jsonl(34, 100_000);
    let key = e
        .announce("items/lake/items.jsonl.gz", &gz(&plain), "corr-lake")
        .await;
    let job = e.job(&key).await;
    let view = ferry_shared::records::view_name(&job);
    let fault = Arc::new(FailOnce {
        inner: e.copy.sink("lake").await.unwrap(),
        fail_on: 9,
        calls: AtomicUsize::new(0),
    });
    let engine = e.engine(Some(fault)).await;
    assert!(matches!(
        engine.run(&key, 1).await,
        Err(JobError::RetryLater { .. })
    ));
    let (keys, lines) = e.lake(&view).await;
    assert_eq!((keys.len(), lines.len()), (9, 9 * 2500), "{keys:?}");
    engine.run(&key, 2).await.unwrap();
    let (keys, lines) = e.lake(&view).await;
    assert_eq!(keys.len(), 40, "one object per chunk, none twice: {keys:?}");
    assert!(keys[0].ends_with("/from-start.jsonl"), "{keys:?}");
    assert!(
        keys[1].ends_with("/after-00000000000000002500.jsonl"),
        "{keys:?}"
    );
    let want: Vec<Value> = lines_of(&plain).into_values().collect();
    assert_eq!(lines.len(), want.len());
    assert!(lines == want, "the lake's lines equal the file's, in order");
    let receipt = e.receipt(&job.id, "lake").await.unwrap();
    assert_eq!(
        (receipt.records, receipt.kind.as_str()),
        (100_000, "s3_jsonl")
    );
    e.assert_logs_clean();
}

#[tokio::test]
async fn a_bad_line_dead_letters_the_job_naming_it_and_a_replay_of_the_fixed_file_loads_the_rest_once()
 {
    let e = Export::new(json!({"sink": "db", "format": "jsonl", "chunk_lines": 4,
                               "max_line_bytes": 512}))
    .await;
    let good = jsonl(56, 10);
    let mut lines: Vec<&[u8]> = good.split(|&b| b == b'\n').collect();
    lines[6] = br#"{"itemId":6,"sku":"broken"#; // line 7
    let bad = lines.join(&b'\n');
    let key = e
        .announce("items/bad/items.jsonl.gz", &gz(&bad), "corr-bad")
        .await;
    let job = e.job(&key).await;
    let view = ferry_shared::records::view_name(&job);
    let engine = e.engine(None).await;
    let outcome = engine.run(&key, 1).await.unwrap();
    let JobOutcome::DeadLettered { reason } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("line 7: not valid JSON"), "{reason}");
    let (failure, _) = e
        .copy
        .state
        .get_json::<FailureRecord>(&failure_key(&job.id))
        .await
        .unwrap()
        .expect("dead letter under failed/");
    assert!(!failure.retryable);
    let why = &failure.destinations["records/db"];
    assert!(
        why.contains("line 7: not valid JSON")
            && why.contains("the 6 records before it are loaded"),
        "{why}"
    );
    // The rule: every line before the bad one is loaded (the chunk in hand was flushed).
    let rows = e.rows(&view).await;
    assert_eq!(
        rows.keys().copied().collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    assert!(e.receipt(&job.id, "db").await.is_none());

    // A line over max_line_bytes is a bad line too, named the same way.
    let long = format!("{{\"itemId\":1}}\n{{\"pad\":\"{}\"}}\n", "x".repeat(600));
    let long_key = e
        .announce("items/bad/long.jsonl.gz", &gz(long.as_bytes()), "corr-long")
        .await;
    let outcome = engine.run(&long_key, 1).await.unwrap();
    assert!(
        matches!(&outcome, JobOutcome::DeadLettered { reason } if reason.contains("line 2: longer than records.max_line_bytes (512 bytes)")),
        "{outcome:?}"
    );

    // The file is fixed in place and the job replayed (the dead letter cleared, as `ferry
    // replay` does): the rest is loaded, nothing twice.
    e.upload("items/bad/items.jsonl.gz", &gz(&good)).await;
    e.copy.state.delete(&failure_key(&job.id)).await.unwrap();
    let outcome = engine.run(&key, 1).await.unwrap();
    assert!(
        matches!(outcome, JobOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let receipt = e.receipt(&job.id, "db").await.unwrap();
    assert_eq!(
        (receipt.records, receipt.applied, receipt.already_present),
        (10, 4, 6)
    );
    let rows = e.rows(&view).await;
    assert_eq!(rows.len(), 10);
    for (line, value) in lines_of(&good) {
        assert_eq!(rows[&line].1, 1, "line {line} applied once");
        assert_eq!(rows[&line].2, value);
    }
    e.assert_logs_clean();
}
