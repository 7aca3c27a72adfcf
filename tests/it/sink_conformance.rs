//! The sink contract, run against every sink on its real server: PostgreSQL (harness server),
//! S3 JSON Lines on moto, and HTTP on the receiver stand-in (the receiving system has no
//! emulator).
//!
//! Each sink must: hold exactly the records delivered, with their bodies as sent; take the same
//! chunk again (a rerun after a failure) without applying anything twice; take a longer chunk
//! after the same watermark (new records arrived before the rerun) without duplicating any
//! record; apply a newer version of a record; never let an older version win; and classify
//! failures so the engine retries only what can succeed.

use crate::support;

use ferry_shared::retry::Retryable as _;
use ferry_shared::sink::{Chunk, SinkError};
use ferry_shared::view_sync::record::{Cursor, Record};
use support::sinks::{self, SinkUnderTest, expected};
use support::view::{cursor_of, record, records};

fn chunk(after: Option<u64>, records: &[serde_json::Value]) -> Chunk {
    Chunk {
        after: after.map(|a| Cursor::parse(&a.to_string()).unwrap()),
        records: records
            .iter()
            .map(|r| Record::from_json(&serde_json::to_vec(r).unwrap()).unwrap())
            .collect(),
    }
}

fn ones(n: u64) -> std::collections::BTreeMap<String, u32> {
    (0..n).map(|i| (format!("{i:09}"), 1)).collect()
}

async fn run_suite(s: SinkUnderTest) {
    let kind = s.kind;
    let view = support::unique("conf");
    let recs = records(0, 6);
    let first = chunk(None, &recs[..4]);
    let receipt = s.sink.deliver(&view, &first).await.unwrap();
    assert_eq!(receipt.records, 4, "{kind}");
    let held = s.probe.held(&view).await;
    assert_eq!(
        held.latest,
        expected(&recs[..4]),
        "{kind}: records and bodies as sent"
    );
    assert_eq!(held.applications, ones(4), "{kind}");

    // The same chunk again, as a rerun after a failure sends it.
    s.sink.deliver(&view, &first).await.unwrap();
    let held = s.probe.held(&view).await;
    assert_eq!(held.latest, expected(&recs[..4]), "{kind}: rerun");
    assert_eq!(held.applications, ones(4), "{kind}: nothing applied twice");

    // A rerun whose chunk after the same watermark is longer (records arrived meanwhile).
    let longer = chunk(None, &recs);
    s.sink.deliver(&view, &longer).await.unwrap();
    let held = s.probe.held(&view).await;
    assert_eq!(held.latest, expected(&recs), "{kind}: longer rerun");
    assert_eq!(
        held.applications,
        ones(6),
        "{kind}: no duplicates after a longer rerun"
    );

    // The next chunk carries a newer version of record 2.
    let mut newer = record(2, cursor_of(5) + 100);
    newer["Name"] = serde_json::json!("Client 2, renamed");
    s.sink
        .deliver(&view, &chunk(Some(cursor_of(5)), &[newer.clone()]))
        .await
        .unwrap();
    let mut want = recs.clone();
    want[2] = newer.clone();
    let held = s.probe.held(&view).await;
    assert_eq!(
        held.latest,
        expected(&want),
        "{kind}: newer version applied"
    );
    let mut apps = ones(6);
    apps.insert(format!("{:09}", 2), 2);
    assert_eq!(held.applications, apps, "{kind}: two versions of record 2");

    // The older version arriving again (a stale rerun) never replaces the newer one.
    s.sink.deliver(&view, &longer).await.unwrap();
    let held = s.probe.held(&view).await;
    assert_eq!(
        held.latest,
        expected(&want),
        "{kind}: older version ignored"
    );
    assert_eq!(held.applications, apps, "{kind}: nothing applied twice");

    // Two views never mix.
    let other = support::unique("conf-other");
    s.sink
        .deliver(&other, &chunk(None, &records(100, 2)))
        .await
        .unwrap();
    assert_eq!(s.probe.held(&view).await.latest, expected(&want), "{kind}");
    assert_eq!(
        s.probe.held(&other).await.latest,
        expected(&records(100, 2)),
        "{kind}"
    );
}

#[tokio::test]
async fn postgres_sink_conforms() {
    support::aws_test_env();
    run_suite(sinks::postgres().await).await;
}

#[tokio::test]
async fn s3_jsonl_sink_conforms() {
    support::aws_test_env();
    let s = sinks::s3().await;
    let sinks::Probe::S3 {
        client,
        bucket,
        prefix,
    } = &s.probe
    else {
        unreachable!()
    };
    let (client, bucket, prefix) = (client.clone(), bucket.clone(), prefix.clone());
    run_suite(s).await;
    // One object per chunk, named by the watermark it starts after.
    let keys = sinks::s3_keys(&client, &bucket, &prefix).await;
    assert!(
        keys.iter().any(|k| k.ends_with("/from-start.jsonl")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.ends_with(&format!("/after-{:020}.jsonl", cursor_of(5)))),
        "{keys:?}"
    );
    assert_eq!(keys.len(), 3, "{keys:?}");
}

#[tokio::test]
async fn http_sink_conforms() {
    support::aws_test_env();
    run_suite(sinks::http().await).await;
}

#[tokio::test]
async fn postgres_failures_are_classified() {
    support::aws_test_env();
    let pg = ferry_harness::postgres_shared();
    let services = |sink: serde_json::Value| async move {
        support::services(&serde_json::json!({
            "state": {"bucket": "unused"}, "sinks": {"s": sink},
            "transfer": {"retries": 0, "initial_backoff_ms": 5, "max_backoff_ms": 50},
        }))
        .await
        .sink("s")
        .await
        .unwrap()
    };
    let one = chunk(None, &records(0, 1));
    let wrong = services(serde_json::json!({"type": "postgres", "host": "127.0.0.1", "port": pg.port,
        "user": pg.user, "password": support::file_secret("wrong-password-123"), "dbname": pg.dbname, "table": "never"}))
    .await;
    let e = wrong.deliver("v", &one).await.unwrap_err();
    assert!(matches!(e, SinkError::Unauthorized(_)), "{e}");
    assert!(!e.to_string().contains("wrong-password-123"), "{e}");
    let down = services(serde_json::json!({"type": "postgres", "host": "127.0.0.1", "port": ferry_harness::free_port(),
        "user": pg.user, "dbname": pg.dbname, "table": "never", "connect_timeout_secs": 2}))
    .await;
    let e = down.deliver("v", &one).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
}

#[tokio::test]
async fn http_failures_are_classified_and_transient_ones_retried() {
    support::aws_test_env();
    let s = sinks::http().await;
    let sinks::Probe::Http(receiver) = &s.probe else {
        unreachable!()
    };
    let view = support::unique("v");
    // Two 503s are retried away (retries: 2).
    receiver.fail_next(2, 503);
    s.sink
        .deliver(&view, &chunk(None, &records(0, 1)))
        .await
        .unwrap();
    assert_eq!(s.probe.held(&view).await.latest, expected(&records(0, 1)));
    receiver.fail_next(10, 503);
    let e = s
        .sink
        .deliver(&view, &chunk(None, &records(1, 1)))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    receiver.fail_next(1, 400);
    let e = s
        .sink
        .deliver(&view, &chunk(None, &records(2, 1)))
        .await
        .unwrap_err();
    assert!(matches!(e, SinkError::Rejected(_)), "{e}");
    receiver.fail_next(1, 401);
    let e = s
        .sink
        .deliver(&view, &chunk(None, &records(3, 1)))
        .await
        .unwrap_err();
    assert!(matches!(e, SinkError::Unauthorized(_)), "{e}");
    assert_eq!(receiver.unauthenticated(), 0, "the secret header was sent");
}
