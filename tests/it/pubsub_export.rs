//! Pub/sub file export (EG Retail-style), end to end: notifications on a Service Bus subscription
//! (REST fake with real peek-lock state), tokens from the vendor's token service (fake) bought with
//! an Azure AD client-credentials token (fake), files in Azurite behind stored access policies
//! (revoked for real on rotation), state and an S3 destination on moto. Messages go through the
//! export-pull Lambda handler, jobs through blob-copy's SQS handler, as in production; the two
//! get separate clients and token caches, as separate Lambdas would, and share the stored tokens.

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_shared::job::export_job_id;
use ferry_shared::layout::failure_key;
use ferry_shared::pubsub::pull::ExportPuller;
use ferry_shared::state::StateStoreExt;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use support::export::*;
use support::fault_proxy::{Fault, Gate};

#[tokio::test]
async fn fifty_mixed_messages_deliver_the_wanted_types_once_each() {
    let e = Export::new(Options::default()).await;
    let mut bodies = Vec::new();
    // Delivered decompressed to `out` (items route) and as stored to `raw` (raw-items route).
    let mut want_out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut want_raw: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..48u64 {
        let (blob_type, ext, content_type, plain) = match i % 4 {
            0 => (
                ITEMS,
                "jsonl",
                "application/x-jsonlines",
                jsonl(
                    i,
                    if i == 4 {
                        5 * MIB / 2
                    } else {
                        2000 + 500 * i as usize
                    },
                ),
            ),
            1 => (PRICES, "xml", "text/xml", xml(i, 40 + i as usize)),
            2 => (STOCK, "xmll", "application/x-xmllines", xml(i, 10)),
            _ => (
                CUSTOMERS,
                "jsonl",
                "application/x-jsonlines",
                jsonl(i, 3000),
            ),
        };
        let gzip = i % 3 != 1;
        let correlation_id = format!("corr-{i:03}-{:08x}", rand::random::<u32>());
        let name = format!(
            "2026/11/22/{blob_type}/{i:03} {correlation_id}.{ext}{}",
            if gzip { ".gz" } else { "" }
        );
        let stored = if gzip {
            gz(&plain, 1 + (i % 2) as usize)
        } else {
            plain.clone()
        };
        e.upload(&name, &stored).await;
        let body = notice(
            blob_type,
            &correlation_id,
            content_type,
            gzip,
            &e.blob_url(&name),
            i % 2 == 1,
        );
        e.bus.send(body.clone());
        bodies.push(body);
        if blob_type == ITEMS || blob_type == PRICES {
            want_out.insert(format!("items/{}", strip_gz(&name)), plain);
        }
        if blob_type == ITEMS {
            want_raw.insert(name, stored);
        }
    }
    // The vendor sends two notifications again (same correlationId): 50 messages in all.
    e.bus.send(bodies[0].clone());
    e.bus.send(bodies[1].clone());

    let summary = e.pull().await;
    let count = |k: &str| summary[k].as_u64().unwrap();
    assert_eq!(
        [
            "received",
            "jobs_created",
            "jobs_existing",
            "skipped",
            "completed",
            "poison",
            "refused",
            "lock_lost",
            "unlocked"
        ]
        .map(count),
        [50, 36, 3, 24, 50, 0, 0, 0, 0],
        "{summary}"
    );
    for m in e.bus.messages() {
        assert_eq!(
            (m.completes, m.deliveries, m.unlocks),
            (1, 1, 0),
            "message {} completed exactly once on first delivery",
            m.sequence
        );
    }
    assert_eq!(e.bus.lost_locks(), 0);
    let jobs = e.jobs().await;
    assert_eq!(
        jobs.len(),
        36,
        "one job per wanted file and route, no duplicates"
    );
    let again = e.copy_all(&jobs).await;
    assert!(again.is_empty(), "redelivery asked for {again:?}");

    assert_eq!(
        files_under(&e.out),
        want_out.keys().cloned().collect(),
        "exactly the configured types, decompressed names"
    );
    for (name, plain) in &want_out {
        assert!(
            std::fs::read(e.out.join(name)).unwrap() == *plain,
            "{name} decompressed identical"
        );
    }
    assert_eq!(files_under(&e.raw), want_raw.keys().cloned().collect());
    for (name, stored) in &want_raw {
        assert!(
            std::fs::read(e.raw.join(name)).unwrap() == *stored,
            "{name} byte-identical as stored"
        );
    }
    let archived = support::moto_s3()
        .await
        .list_objects_v2()
        .bucket(&e.archive_bucket)
        .prefix("eg/items/")
        .send()
        .await
        .unwrap();
    assert_eq!(archived.key_count(), Some(want_out.len() as i32));
    // Receipts say what was delivered: decompressed bytes for gzip files, as stored otherwise.
    for key in &jobs {
        let job = e.job(key).await;
        let export = job.export.as_ref().unwrap();
        for dest in &job.destinations {
            let r = e.receipt(&job.id, dest).await.expect("receipt");
            let gunzipped = export.is_gzip() && job.route == "items";
            assert_eq!(r.transform.is_some(), gunzipped, "{r:?}");
            if !gunzipped {
                assert!(r.md5_verified_against_source, "{r:?}");
            }
        }
    }

    // Nothing left to do: the queue is empty and every job is done.
    assert_eq!(e.pull().await["received"], 0);
    let before = e
        .receipt(
            &jobs[0].rsplit('/').next().unwrap().replace(".json", ""),
            "out",
        )
        .await;
    assert!(e.copy_all(&jobs).await.is_empty());
    let after = e
        .receipt(
            &jobs[0].rsplit('/').next().unwrap().replace(".json", ""),
            "out",
        )
        .await;
    assert_eq!(before, after, "a second run delivers nothing again");
    assert_eq!(
        (e.tokens.calls(), e.aad.calls()),
        (1, 1),
        "one token for both functions"
    );
    e.assert_logs_clean();
}

#[tokio::test]
async fn rotation_mid_transfer_refreshes_once_and_loses_nothing() {
    let e = Export::new(Options {
        proxy: true,
        ..Default::default()
    })
    .await;
    // A big gzip'd file, held part-way through its download while the tokens rotate.
    let big_plain = jsonl(900, 8 * MIB);
    let big = gz(&big_plain, 1);
    assert!(big.len() > 2 * MIB, "compressed size {}", big.len());
    e.upload("big/items-0001.jsonl.gz", &big).await;
    let mut want = vec![("items/big/items-0001.jsonl".to_string(), big_plain)];
    e.bus.send(notice(
        ITEMS,
        "corr-big",
        "application/x-jsonlines",
        true,
        &e.blob_url("big/items-0001.jsonl.gz"),
        false,
    ));
    for i in 0..5u64 {
        let plain = xml(i, 200);
        let name = format!("small/prices-{i}.xml.gz");
        e.upload(&name, &gz(&plain, 1)).await;
        e.bus.send(notice(
            PRICES,
            &format!("corr-before-{i}"),
            "text/xml",
            true,
            &e.blob_url(&name),
            true,
        ));
        want.push((format!("items/small/prices-{i}.xml"), plain));
    }
    assert_eq!(e.pull().await["jobs_created"], 7);
    assert_eq!(e.tokens.calls(), 1);
    // Tokens younger than min_refresh_interval_secs are never refreshed because of a 403.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let gate = Arc::new(Gate::default());
    let proxy = e.proxy.as_ref().unwrap();
    proxy.plan([
        Fault::PauseResponseThenCut(MIB as u64, gate.clone()),
        Fault::PauseResponseThenCut(MIB as u64, gate.clone()),
    ]);
    let big_key = format!(
        "jobs/items/{}.json",
        export_job_id("items", SOURCE, "corr-big")
    );
    let copy = e.copy(&big_key);
    let rotate = async {
        tokio::time::timeout(Duration::from_secs(20), gate.reached.notified())
            .await
            .expect("the download reached the pause");
        e.rotate("gen-1", "gen-2", SB_KEY_2).await;
        gate.release.notify_one();
    };
    let (redeliver, ()) = tokio::join!(copy, rotate);
    assert!(!redeliver, "the in-flight transfer survived the rotation");
    assert_eq!(e.tokens.calls(), 2, "exactly one refresh");
    let logs = support::logs::text();
    assert!(logs.contains("resuming with a range read"));
    assert!(logs.contains("retrying once with refreshed tokens"));

    // More notifications after the rotation: export-pull's old Service Bus key is refused; it
    // finds the refreshed tokens blob-copy stored and needs no token service call of its own.
    for i in 0..4u64 {
        let plain = jsonl(100 + i, 5000);
        let name = format!("after/items-{i}.jsonl.gz");
        e.upload(&name, &gz(&plain, 2)).await;
        e.bus.send(notice(
            ITEMS,
            &format!("corr-after-{i}"),
            "application/x-jsonlines",
            true,
            &e.blob_url(&name),
            false,
        ));
        want.push((format!("items/after/items-{i}.jsonl"), plain));
    }
    let unauthorized = e.bus.unauthorized();
    assert_eq!(e.pull().await["jobs_created"], 8);
    assert_eq!(
        e.bus.unauthorized(),
        unauthorized + 1,
        "one refused receive with the old key"
    );
    let rest: Vec<String> = e
        .jobs()
        .await
        .into_iter()
        .filter(|k| *k != big_key)
        .collect();
    assert_eq!(rest.len(), 14);
    assert!(e.copy_all(&rest).await.is_empty());
    assert_eq!(
        e.tokens.calls(),
        2,
        "still exactly one refresh across both functions"
    );
    for (name, plain) in &want {
        assert!(
            std::fs::read(e.out.join(name)).unwrap() == *plain,
            "{name} delivered identical"
        );
    }
    assert_eq!(e.bus.outstanding(), 0);
    assert!(e.bus.messages().iter().all(|m| m.completes == 1));
    e.assert_logs_clean();
}

#[tokio::test]
async fn lock_lost_during_a_slow_save_redelivers_without_a_duplicate_job_or_delivery() {
    let mut e = Export::new(Options {
        lock: Duration::from_secs(1),
        stop_when_idle: false,
        ..Default::default()
    })
    .await;
    let plain = jsonl(7, 20_000);
    e.upload("slow/items.jsonl.gz", &gz(&plain, 1)).await;
    e.bus.send(notice(
        ITEMS,
        "corr-slow",
        "application/x-jsonlines",
        true,
        &e.blob_url("slow/items.jsonl.gz"),
        false,
    ));
    // Instance A: its first job write lands, but A hears about it only after the lock expired.
    e.pull.state = Arc::new(support::SlowPuts {
        inner: e.pull.state.clone(),
        prefix: "jobs/".into(),
        delay: Duration::from_millis(2500),
        before: false,
        fail: false,
        count: 1.into(),
    });
    let slow = e.pull.export_pullers().await.unwrap();
    // Instance B: an overlapping run (next schedule) with its own clients.
    let other = support::services(&e.config).await;
    let fast = other.export_pullers().await.unwrap();
    let started = Instant::now();
    let a = Export::pull_with(&slow, Duration::from_secs(5));
    let b = async {
        tokio::time::sleep(Duration::from_millis(1300)).await;
        Export::pull_with(&fast, Duration::from_secs(4)).await
    };
    let (a, b) = tokio::join!(a, b);
    let (a, b) = (a.unwrap(), b.unwrap());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(5),
        "both runs poll until shortly before their deadlines (margin 1 s): {took:?}"
    );
    // A's first job write landed at once (B found it); B created the second job before A's
    // own write of it, which then found it there. Neither run made a duplicate.
    assert_eq!(
        ["jobs_created", "jobs_existing", "lock_lost", "completed"].map(|k| a[k].as_u64().unwrap()),
        [1, 1, 1, 0],
        "A: {a}"
    );
    assert_eq!(
        ["jobs_created", "jobs_existing", "lock_lost", "completed"].map(|k| b[k].as_u64().unwrap()),
        [1, 1, 0, 1],
        "B: {b}"
    );
    let m = &e.bus.messages()[0];
    assert_eq!(
        (m.deliveries, m.completes),
        (2, 1),
        "redelivered once, completed once"
    );
    assert_eq!(e.bus.lost_locks(), 1, "A's complete found the lock gone");
    let jobs = e.jobs().await;
    assert_eq!(jobs.len(), 2, "one job per route: {jobs:?}");
    // blob-copy may hear of a job more than once; it delivers once.
    let runs: Vec<String> = jobs.iter().chain(jobs.iter()).cloned().collect();
    assert!(e.copy_all(&runs).await.is_empty());
    assert!(e.copy_all(&jobs).await.is_empty());
    let id = export_job_id("items", SOURCE, "corr-slow");
    let receipt = e.receipt(&id, "out").await.unwrap();
    assert_eq!(receipt.bytes, plain.len() as u64);
    assert_eq!(
        std::fs::read(e.out.join("items/slow/items.jsonl")).unwrap(),
        plain
    );
    let archived = support::moto_s3()
        .await
        .list_objects_v2()
        .bucket(&e.archive_bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(archived.key_count(), Some(1));
    e.assert_logs_clean();
}

#[tokio::test]
async fn a_failed_job_save_unlocks_the_message_and_its_redelivery_is_saved() {
    let mut e = Export::new(Options::default()).await;
    let plain = xml(11, 50);
    e.upload("unlock/prices.xml", &plain).await;
    e.bus.send(notice(
        PRICES,
        "corr-unlock",
        "text/xml",
        false,
        &e.blob_url("unlock/prices.xml"),
        true,
    ));
    e.pull.state = Arc::new(support::SlowPuts {
        inner: e.pull.state.clone(),
        prefix: "jobs/".into(),
        delay: Duration::ZERO,
        before: false,
        fail: true,
        count: 1.into(),
    });
    let pullers = e.pull.export_pullers().await.unwrap();
    let summary = Export::pull_with(&pullers, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        ["received", "unlocked", "jobs_created", "completed"].map(|k| summary[k].as_u64().unwrap()),
        [2, 1, 1, 1],
        "{summary}"
    );
    let m = &e.bus.messages()[0];
    assert_eq!((m.deliveries, m.unlocks, m.completes), (2, 1, 1));
    let jobs = e.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert!(e.copy_all(&jobs).await.is_empty());
    assert_eq!(
        std::fs::read(e.out.join("items/unlock/prices.xml")).unwrap(),
        plain
    );
    assert!(support::logs::text().contains("unlocking it for redelivery"));
    e.assert_logs_clean();
}

#[tokio::test]
async fn poison_foreign_uris_and_gzip_bombs_are_refused_with_reasons_while_the_queue_flows() {
    let e = Export::new(Options::default()).await;
    let c = ferry_harness::shared();
    // A host that must never see a request (it would receive the token).
    let elsewhere = wiremock::MockServer::start().await;
    let admin = c.azurite.admin();
    let other_container = support::unique("other");
    admin.create_container(&other_container).await.unwrap();
    admin
        .put_blob(&other_container, "secret.jsonl", b"{\"x\":1}\n")
        .await
        .unwrap();
    let good = |i: u64| (format!("good/{i}.jsonl.gz"), jsonl(500 + i, 4000));
    let mut want = Vec::new();
    let mut send_good = async |i: u64| {
        let (name, plain) = good(i);
        e.upload(&name, &gz(&plain, 1)).await;
        e.bus.send(notice(
            ITEMS,
            &format!("corr-good-{i}"),
            "application/x-jsonlines",
            true,
            &e.blob_url(&name),
            i.is_multiple_of(2),
        ));
        want.push((format!("items/{}", strip_gz(&name)), plain));
    };
    send_good(0).await;
    // Poison: not JSON, and JSON without a uri.
    e.bus.send(b"\x00\x01 this is not a notification".to_vec());
    e.bus.send(
        json!({"blobType": ITEMS, "correlationId": "corr-no-uri"})
            .to_string()
            .into_bytes(),
    );
    send_good(1).await;
    // Foreign uris: another host (same IP, other port), another host name, another container,
    // and traversal out of the container, plain and percent-encoded.
    let base_path = format!("/devstoreaccount1/{}", e.container);
    let foreign = [
        format!("{}{base_path}/x.jsonl", elsewhere.uri()),
        format!("http://localhost:{}{base_path}/x.jsonl", c.azurite.port),
        format!(
            "http://127.0.0.1:{}/devstoreaccount1/{other_container}/secret.jsonl",
            c.azurite.port
        ),
        format!("{}/../{other_container}/secret.jsonl", e.blob_base),
        format!("{}/%2e%2e/{other_container}/secret.jsonl", e.blob_base),
    ];
    for (i, uri) in foreign.iter().enumerate() {
        e.bus.send(notice(
            ITEMS,
            &format!("corr-foreign-{i}"),
            "application/x-jsonlines",
            false,
            uri,
            false,
        ));
    }
    send_good(2).await;
    // Content refused when decompressed: a gzip bomb (64 MiB of newlines in ~64 KiB), an
    // overlong jsonl line, and data that is not gzip at all.
    let bomb = gz(&vec![b'\n'; 64 * MIB], 1);
    assert!(bomb.len() < 128 * 1024);
    e.upload("bad/bomb.jsonl.gz", &bomb).await;
    let long_line = [jsonl(1, 1000), vec![b'x'; 100 * 1024], b"\n".to_vec()].concat();
    e.upload("bad/long.jsonl.gz", &gz(&long_line, 1)).await;
    e.upload("bad/plain.xml.gz", &xml(3, 10)).await;
    for (corr, name, ctype) in [
        ("corr-bomb", "bad/bomb.jsonl.gz", "application/x-jsonlines"),
        ("corr-long", "bad/long.jsonl.gz", "application/x-jsonlines"),
        ("corr-notgz", "bad/plain.xml.gz", "text/xml"),
    ] {
        e.bus
            .send(notice(PRICES, corr, ctype, true, &e.blob_url(name), true));
    }
    send_good(3).await;

    let summary = e.pull().await;
    assert_eq!(
        ["received", "poison", "refused", "jobs_created", "completed"]
            .map(|k| summary[k].as_u64().unwrap()),
        [14, 2, 5, 4 * 2 + 3, 14],
        "{summary}"
    );
    assert_eq!(e.bus.outstanding(), 0, "nothing blocks the queue");
    let rejected = e.failed().await;
    let reasons: Vec<(String, String)> = rejected
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let has = |kind: &str, text: &str| reasons.iter().any(|(k, r)| k == kind && r.contains(text));
    assert!(has("poison", "body is not JSON"), "{reasons:?}");
    assert!(has("poison", "uri is missing"), "{reasons:?}");
    assert_eq!(
        reasons
            .iter()
            .filter(|(k, r)| k == "refused_uri"
                && r.contains("not under any of the token's blob base URLs"))
            .count(),
        3,
        "{reasons:?}"
    );
    assert_eq!(
        reasons
            .iter()
            .filter(|(k, r)| k == "refused_uri" && r.contains("'..'"))
            .count(),
        2,
        "{reasons:?}"
    );
    let poison_body = rejected
        .iter()
        .find(|r| r["reason"].as_str().unwrap().contains("not JSON"))
        .unwrap();
    assert!(
        poison_body["body"]
            .as_str()
            .unwrap()
            .contains("this is not a notification"),
        "the body is kept"
    );
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "no request (and no token) went to a foreign host"
    );

    let jobs = e.jobs().await;
    assert!(
        e.copy_all(&jobs).await.is_empty(),
        "refused content is not retried"
    );
    for (name, plain) in &want {
        assert!(
            std::fs::read(e.out.join(name)).unwrap() == *plain,
            "{name} delivered"
        );
    }
    for (corr, text) in [
        ("corr-bomb", "gzip bomb refused"),
        ("corr-long", "max_line_bytes"),
        ("corr-notgz", "not valid gzip"),
    ] {
        let id = export_job_id("items", SOURCE, corr);
        let record = e
            .copy
            .state
            .get_json::<Value>(&failure_key(&id))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no dead letter for {corr}"))
            .0;
        let reason = record["reason"].as_str().unwrap();
        assert!(
            reason.contains(text) && reason.contains("cannot succeed without intervention"),
            "{corr}: {reason}"
        );
        assert_eq!(record["retryable"], false);
        assert!(e.receipt(&id, "out").await.is_none());
    }
    assert!(
        files_under(&e.out)
            .iter()
            .all(|f| f.starts_with("items/good/")),
        "nothing of the refused files was delivered: {:?}",
        files_under(&e.out)
    );
    e.assert_logs_clean();
}

#[tokio::test]
async fn token_service_403_is_an_error_naming_permissions_not_granted() {
    let e = Export::new(Options::default()).await;
    e.tokens.forbid();
    e.bus.send(notice(
        ITEMS,
        "corr-1",
        "application/x-jsonlines",
        false,
        &e.blob_url("a.jsonl"),
        false,
    ));
    let caches = e.pull.token_caches().await.unwrap();
    let err = token_refresh::handle(&caches, LambdaEvent::new(json!({}), Context::default()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("403") && err.contains("permissions not granted yet"),
        "{err}"
    );
    assert!(err.contains(INTEGRATION), "names the integration: {err}");
    let err = Export::pull_with(&e.pullers, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(err.contains("permissions not granted yet"), "{err}");
    assert_eq!(
        e.bus.outstanding(),
        1,
        "the message waits for the permissions"
    );
    assert!(e.copy.state.list("tokens/").await.unwrap().is_empty());
    assert!(support::logs::text().contains("permissions not granted yet"));
    e.assert_logs_clean();
}

#[tokio::test]
async fn local_runner_schedule_refreshes_pulls_and_copies() {
    let e = Export::new(Options::default()).await;
    let plain = jsonl(77, 10_000);
    e.upload("runner/items.jsonl.gz", &gz(&plain, 1)).await;
    e.bus.send(notice(
        ITEMS,
        "corr-runner",
        "application/x-jsonlines",
        true,
        &e.blob_url("runner/items.jsonl.gz"),
        false,
    ));
    let mut runner = ferry::LocalRunner::start(
        &e.copy,
        "127.0.0.1:0".parse().unwrap(),
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    assert!(
        runner.webhook_addr.is_none(),
        "no webhook section, no server"
    );
    runner
        .start_export_schedule(&e.pull, Duration::from_secs(2))
        .await
        .unwrap();
    let (out, raw) = (
        e.out.join("items/runner/items.jsonl"),
        e.raw.join("runner/items.jsonl.gz"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(out.exists() && raw.exists()) {
        assert!(
            Instant::now() < deadline,
            "the scheduled pull's jobs were not copied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(std::fs::read(&out).unwrap() == plain);
    assert_eq!(e.bus.outstanding(), 0);
    assert_eq!(e.tokens.calls(), 1);
    e.assert_logs_clean();
}

/// A pull whose job writes all fail (so every message is unlocked again), on its own clients.
async fn failing_pullers(e: &Export) -> Vec<ExportPuller> {
    let mut failing = support::services(&e.config).await;
    failing.state = Arc::new(support::SlowPuts {
        inner: failing.state.clone(),
        prefix: "jobs/".into(),
        delay: Duration::ZERO,
        before: false,
        fail: true,
        count: 1000.into(),
    });
    failing.export_pullers().await.unwrap()
}

/// The `dead-letter message drained` log lines of these messages, as JSON.
fn drained_lines(message_ids: &[String]) -> Vec<Value> {
    support::logs::text()
        .lines()
        .filter(|l| l.contains("dead-letter message drained"))
        .filter(|l| message_ids.iter().any(|id| l.contains(id.as_str())))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_save_slower_than_twice_the_lock_is_renewed_and_completed_once() {
    let mut e = Export::new(Options {
        lock: Duration::from_secs(2),
        lock_config_secs: Some(2),
        ..Default::default()
    })
    .await;
    let plain = jsonl(31, 20_000);
    e.upload("renew/items.jsonl.gz", &gz(&plain, 1)).await;
    e.bus.send(notice(
        ITEMS,
        "corr-renew",
        "application/x-jsonlines",
        true,
        &e.blob_url("renew/items.jsonl.gz"),
        false,
    ));
    // The first job write takes 5 s: more than twice the 2 s lock.
    e.pull.state = Arc::new(support::SlowPuts {
        inner: e.pull.state.clone(),
        prefix: "jobs/".into(),
        delay: Duration::from_secs(5),
        before: true,
        fail: false,
        count: 1.into(),
    });
    let pullers = e.pull.export_pullers().await.unwrap();
    let summary = Export::pull_with(&pullers, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        [
            "received",
            "jobs_created",
            "completed",
            "lock_lost",
            "locks_lost"
        ]
        .map(|k| summary[k].as_u64().unwrap()),
        [1, 2, 1, 0, 0],
        "{summary}"
    );
    assert!(summary["locks_renewed"].as_u64().unwrap() >= 2, "{summary}");
    let m = &e.bus.messages()[0];
    assert_eq!(
        (m.deliveries, m.completes),
        (1, 1),
        "never redelivered, completed once"
    );
    assert!(m.renewals >= 2, "renewed {} times", m.renewals);
    assert_eq!(e.bus.lost_locks(), 0);
    let jobs = e.jobs().await;
    assert_eq!(jobs.len(), 2);
    assert!(e.copy_all(&jobs).await.is_empty());
    assert!(std::fs::read(e.out.join("items/renew/items.jsonl")).unwrap() == plain);
    e.assert_logs_clean();
}

#[tokio::test]
async fn a_renewal_answered_404_stops_the_save_and_the_redelivery_makes_one_job() {
    let mut e = Export::new(Options {
        lock: Duration::from_secs(2),
        lock_config_secs: Some(2),
        ..Default::default()
    })
    .await;
    let plain = xml(41, 80);
    e.upload("lost/prices.xml", &plain).await;
    e.bus.send(notice(
        PRICES,
        "corr-lost",
        "text/xml",
        false,
        &e.blob_url("lost/prices.xml"),
        true,
    ));
    // The job write lands, then hangs for 3 s; the renewal at 1 s finds the lock gone.
    e.bus.lose_locks_on_renew(true);
    e.pull.state = Arc::new(support::SlowPuts {
        inner: e.pull.state.clone(),
        prefix: "jobs/".into(),
        delay: Duration::from_secs(3),
        before: false,
        fail: false,
        count: 1.into(),
    });
    let pullers = e.pull.export_pullers().await.unwrap();
    let summary = Export::pull_with(&pullers, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        [
            "received",
            "locks_lost",
            "jobs_created",
            "jobs_existing",
            "completed",
            "unlocked"
        ]
        .map(|k| summary[k].as_u64().unwrap()),
        [2, 1, 1, 1, 1, 0],
        "the write in flight when the lock was lost is counted; the redelivery finds it: {summary}"
    );
    assert_eq!(e.bus.renewals_refused(), 1);
    let m = &e.bus.messages()[0];
    assert_eq!(
        (m.deliveries, m.completes, m.unlocks),
        (2, 1, 0),
        "redelivered once, completed once, never unlocked"
    );
    let jobs = e.jobs().await;
    assert_eq!(jobs.len(), 1, "one job: {jobs:?}");
    let twice: Vec<String> = jobs.iter().chain(jobs.iter()).cloned().collect();
    assert!(e.copy_all(&twice).await.is_empty());
    assert_eq!(
        std::fs::read(e.out.join("items/lost/prices.xml")).unwrap(),
        plain
    );
    let archived = support::moto_s3()
        .await
        .list_objects_v2()
        .bucket(&e.archive_bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(archived.key_count(), Some(1), "one delivery");
    assert!(support::logs::text().contains("lock lost while saving the message"));
    e.assert_logs_clean();
}

#[tokio::test]
async fn dead_lettered_messages_are_drained_into_jobs_once_and_poison_lands_in_failed() {
    let e = Export::new(Options::default()).await;
    e.bus.set_max_delivery_count(2);
    let mut want = Vec::new();
    // A notification taken normally, whose copy later sits in the dead-letter subqueue.
    let taken = xml(70, 40);
    e.upload("dlq/taken.xml", &taken).await;
    let taken_body = notice(
        PRICES,
        "corr-taken",
        "text/xml",
        false,
        &e.blob_url("dlq/taken.xml"),
        false,
    );
    e.bus.send(taken_body.clone());
    assert_eq!(e.pull().await["jobs_created"], 1);
    for i in 0..3u64 {
        let plain = xml(60 + i, 40);
        let name = format!("dlq/prices-{i}.xml");
        e.upload(&name, &plain).await;
        e.bus.send(notice(
            PRICES,
            &format!("corr-dlq-{i}"),
            "text/xml",
            false,
            &e.blob_url(&name),
            i == 1,
        ));
        want.push((format!("items/{name}"), plain));
    }
    // Every save fails: each message is unlocked, redelivered, and after MaxDeliveryCount (2)
    // deliveries the broker moves it to the dead-letter subqueue.
    let failing = failing_pullers(&e).await;
    let s = Export::pull_with(&failing, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        [
            "received",
            "unlocked",
            "jobs_created",
            "dead_letter_drained"
        ]
        .map(|k| s[k].as_u64().unwrap()),
        [6, 6, 0, 0],
        "{s}"
    );
    assert_eq!(e.bus.dead_lettered(), 3);
    assert_eq!(e.jobs().await.len(), 1, "only the one taken normally");
    e.bus
        .send_dead_letter(taken_body, "MaxDeliveryCountExceeded");
    // Poison in the dead-letter subqueue: compact JSON without a uri, holding a SAS whose `sig`
    // is the first parameter of its second URL, and one in the middle of the third.
    let poison = json!({"blobType": PRICES, "correlationId": "corr-poison",
        "links": ["https://x.blob.core.windows.net/c/a.xml?sv=2021&sp=r",
                  "https://y.blob.core.windows.net/c/b.xml?sig=POISONSIGTWO%2Bx&se=2030-01-01"],
        "note": "https://z.blob.core.windows.net/c/d.xml?sv=2021&sp=r&sig=POISONSIGONE",
        "n": 1})
    .to_string();
    e.bus
        .send_dead_letter(poison.clone(), "TTLExpiredException");
    assert_eq!(e.bus.dead_lettered(), 5);

    let s = e.pull().await;
    assert_eq!(
        [
            "dead_letter_drained",
            "dead_letter_jobs",
            "dead_letter_duplicates",
            "dead_letter_refused",
            "jobs_created",
            "jobs_existing",
            "poison",
            "completed",
            "received"
        ]
        .map(|k| s[k].as_u64().unwrap()),
        [5, 3, 1, 1, 3, 1, 1, 5, 0],
        "{s}"
    );
    assert_eq!(e.bus.dead_lettered(), 0, "the subqueue is empty");
    assert_eq!(e.bus.outstanding(), 0);
    assert!(
        e.bus.messages().iter().all(|m| m.completes == 1),
        "each completed once"
    );
    let ids: Vec<String> = e
        .bus
        .messages()
        .iter()
        .map(|m| m.message_id.clone())
        .collect();
    let lines = drained_lines(&ids);
    assert_eq!(lines.len(), 5, "one line per drained message");
    let mut outcomes: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["level"], "WARN");
            assert_eq!(l["fields"]["source"], SOURCE);
            (
                l["fields"]["reason"].as_str().unwrap().to_string(),
                l["fields"]["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    outcomes.sort();
    let pair = |r: &str, o: &str| (r.to_string(), o.to_string());
    assert_eq!(
        outcomes,
        [
            pair("MaxDeliveryCountExceeded", "duplicate"),
            pair("MaxDeliveryCountExceeded", "job_created"),
            pair("MaxDeliveryCountExceeded", "job_created"),
            pair("MaxDeliveryCountExceeded", "job_created"),
            pair("TTLExpiredException", "refused"),
        ]
    );
    // The poison one: recorded with the broker's reason and its body, still JSON, no signature.
    let failed = e.failed().await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    let record = &failed[0];
    assert_eq!(record["kind"], "poison");
    assert_eq!(record["dead_letter_reason"], "TTLExpiredException");
    assert!(
        record["reason"].as_str().unwrap().contains("uri"),
        "{record}"
    );
    let body = record["body"].as_str().unwrap();
    assert!(
        !body.contains("POISONSIG"),
        "every signature redacted: {body}"
    );
    let kept: Value = serde_json::from_str(body).expect("the kept body is still JSON");
    assert_eq!(kept["correlationId"], "corr-poison");
    assert_eq!(
        kept["links"][1],
        "https://y.blob.core.windows.net/c/b.xml?sig=REDACTED&se=2030-01-01"
    );
    assert_eq!(
        kept["note"],
        "https://z.blob.core.windows.net/c/d.xml?sv=2021&sp=r&sig=REDACTED"
    );
    assert_eq!(kept["n"], 1);

    let jobs = e.jobs().await;
    assert_eq!(jobs.len(), 4);
    let twice: Vec<String> = jobs.iter().chain(jobs.iter()).cloned().collect();
    assert!(e.copy_all(&twice).await.is_empty());
    want.push(("items/dlq/taken.xml".into(), taken));
    for (name, plain) in &want {
        assert!(
            std::fs::read(e.out.join(name)).unwrap() == *plain,
            "{name} delivered"
        );
    }
    let archived = support::moto_s3()
        .await
        .list_objects_v2()
        .bucket(&e.archive_bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(archived.key_count(), Some(4), "each file delivered once");
    // Drained: the next run finds nothing there.
    let s = e.pull().await;
    assert_eq!(
        [
            s["dead_letter_drained"].as_u64(),
            s["jobs_created"].as_u64()
        ],
        [Some(0), Some(0)]
    );
    support::logs::assert_no_secrets(&["POISONSIGONE", "POISONSIGTWO"]);
    e.assert_logs_clean();
}

#[tokio::test]
async fn an_empty_receive_that_comes_back_early_is_followed_by_a_pause_not_a_spin() {
    let e = Export::new(Options {
        stop_when_idle: false,
        ..Default::default()
    })
    .await;
    // A gateway that answers 204 at once although the receive asked to wait 2 s.
    e.bus.set_empty_hold(Duration::ZERO);
    let s = Export::pull_with(&e.pullers, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(s["received"], 0);
    let polls = e.bus.receives();
    // 4 s of polling (1 s deadline margin) with a 1 s pause after each early 204.
    assert!(
        (2..=6).contains(&polls),
        "{polls} polls in 4 s: the run spun instead of backing off"
    );
    assert_eq!(e.bus.dead_letter_receives(), 1, "one drain, found empty");
}

#[tokio::test]
async fn a_bus_refusal_just_after_a_refresh_waits_out_the_interval_instead_of_failing() {
    let e = Export::new(Options {
        min_refresh_secs: 4,
        ..Default::default()
    })
    .await;
    for i in 0..2u64 {
        let plain = xml(80 + i, 20);
        let name = format!("young/prices-{i}.xml");
        e.upload(&name, &plain).await;
        if i == 1 {
            // The vendor rotates the Service Bus key right after our first refresh.
            e.issue("gen-1", SB_KEY_2);
            e.bus.set_keys(&[SB_KEY_2]);
        }
        e.bus.send(notice(
            PRICES,
            &format!("corr-young-{i}"),
            "text/xml",
            false,
            &e.blob_url(&name),
            false,
        ));
        let s = Export::pull_with(&e.pullers, Duration::from_secs(20))
            .await
            .unwrap_or_else(|err| panic!("pull {i} failed: {err}"));
        assert_eq!(
            [s["jobs_created"].as_u64(), s["completed"].as_u64()],
            [Some(1), Some(1)],
            "pull {i}: {s}"
        );
    }
    assert_eq!(
        e.tokens.calls(),
        2,
        "one refresh once the interval allowed it"
    );
    assert!(support::logs::text().contains("refreshed less than the minimum interval ago"));
    assert_eq!(e.bus.outstanding(), 0);
    assert!(e.bus.messages().iter().all(|m| m.deliveries == 1));
    e.assert_logs_clean();
}

#[tokio::test]
async fn a_blob_refusal_just_after_a_refresh_is_retried_later_not_dead_lettered() {
    let e = Export::new(Options {
        min_refresh_secs: 4,
        ..Default::default()
    })
    .await;
    let plain = xml(90, 30);
    e.upload("young/blob.xml", &plain).await;
    e.bus.send(notice(
        PRICES,
        "corr-young-blob",
        "text/xml",
        false,
        &e.blob_url("young/blob.xml"),
        true,
    ));
    let fetched = Instant::now();
    assert_eq!(e.pull().await["jobs_created"], 1);
    // The vendor rotates the blob SAS right after our refresh: blob-copy is refused, and the
    // tokens are too young to refresh.
    e.rotate("gen-1", "gen-2", SB_KEY_1).await;
    let jobs = e.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert!(
        Instant::now() < fetched + Duration::from_secs(3),
        "the copy must start within the refresh interval for this test to mean anything"
    );
    assert!(e.copy(&jobs[0]).await, "asks for redelivery");
    let id = export_job_id("items", SOURCE, "corr-young-blob");
    assert!(
        e.copy
            .state
            .get_json::<Value>(&failure_key(&id))
            .await
            .unwrap()
            .is_none(),
        "not dead-lettered"
    );
    assert!(e.receipt(&id, "out").await.is_none());
    assert_eq!(e.tokens.calls(), 1);
    // After the interval the redelivered job refreshes once and is delivered.
    tokio::time::sleep(
        (fetched + Duration::from_millis(4100)).saturating_duration_since(Instant::now()),
    )
    .await;
    assert!(!e.copy(&jobs[0]).await);
    assert_eq!(e.tokens.calls(), 2);
    assert_eq!(
        std::fs::read(e.out.join("items/young/blob.xml")).unwrap(),
        plain
    );
    e.assert_logs_clean();
}

#[tokio::test]
async fn a_gzip_export_is_decompressed_then_encrypted_and_gpg_decrypts_it() {
    if !support::gpg::have_gpg() {
        return;
    }
    let partner = support::gpg::Keyring::new(
        "Retail Partner <edi@partner.test>",
        "future-default",
        "default",
        "never",
        None,
    );
    let e = Export::new(Options {
        encrypt: Some(json!({"recipients": [{"armored": partner.public_armored()}]})),
        ..Options::default()
    })
    .await;
    let plain = jsonl(91, 200_000);
    e.upload("enc/items.jsonl.gz", &gz(&plain, 2)).await;
    e.bus.send(notice(
        ITEMS,
        "corr-enc",
        "application/x-jsonlines",
        true,
        &e.blob_url("enc/items.jsonl.gz"),
        false,
    ));
    e.pull().await;
    let jobs = e.jobs().await;
    let items: Vec<_> = jobs
        .iter()
        .filter(|k| k.starts_with("jobs/items/"))
        .collect();
    assert_eq!(items.len(), 1, "{jobs:?}");
    assert!(!e.copy(items[0]).await, "delivered");
    let job = e.job(items[0]).await;
    assert!(job.encrypt);
    let ciphertext =
        std::fs::read(e.out.join("items/enc/items.jsonl.pgp")).expect("encrypted file");
    let receipt = e.receipt(&job.id, "out").await.expect("receipt");
    assert_eq!(receipt.transform.map(|t| t.as_str()), Some("gunzip+pgp"));
    assert_eq!(receipt.bytes, ciphertext.len() as u64);
    let plain_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&plain));
    let recorded = receipt.plaintext.expect("plaintext digest");
    assert_eq!(
        (recorded.bytes, recorded.sha256.as_str()),
        (plain.len() as u64, plain_sha.as_str())
    );
    let work = tempfile::tempdir().unwrap();
    assert_eq!(partner.decrypt_sha(&ciphertext, work.path()), plain_sha);
    e.assert_logs_clean();
}
