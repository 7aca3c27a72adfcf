//! Fault injection: the pipeline under source error bursts, broken connections, a killed SFTP
//! server, a killed worker process, a SAS revoked mid-transfer, an unreachable state store, and a
//! storm of duplicate webhooks. For every case: nothing lost, nothing corrupt (hash compare),
//! nothing duplicated, the final state (receipts, failed/) explains what happened, and no secret
//! reached a log line.

use crate::support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferry_shared::state::StateStoreExt as _;
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};
use support::fault_proxy::{Fault, FaultProxy};
use support::pipeline::{MIB, Options, Pipeline, SftpServer, TOKEN, job_of};

async fn source_proxy() -> FaultProxy {
    FaultProxy::start(ferry_harness::shared().azurite.port).await
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn assert_all_delivered(p: &Pipeline, job_id: &str, name: &str, source_sha: &str) {
    let receipts = p.receipts(job_id).await;
    assert_eq!(receipts.len(), 3, "{receipts:?}");
    assert!(
        receipts.values().all(|r| r.sha256 == source_sha),
        "{receipts:?}"
    );
    assert_eq!(sha(&p.sftp_file(name).expect("SFTP file")), source_sha);
    assert_eq!(
        p.s3_versions(name).await,
        (1, Some(source_sha.to_string())),
        "one S3 version, identical"
    );
    assert_eq!(p.http_bodies(name).await.len(), 1, "one HTTP delivery");
    assert!(p.failure(job_id).await.is_none());
}

#[tokio::test]
async fn source_429_and_503_bursts_with_retry_after_are_ridden_out() {
    let p = Pipeline::new(Options {
        source_proxy: Some(source_proxy().await),
        ..Default::default()
    })
    .await;
    let source_sha = p.upload("burst.csv", 1, 300_000).await;
    let (_, answer) = p.notify("burst.csv").await;
    let (id, key) = job_of(&answer, "all");
    p._proxies[0].plan([
        Fault::HttpStatus {
            status: 429,
            retry_after_secs: 1,
        },
        Fault::HttpStatus {
            status: 503,
            retry_after_secs: 0,
        },
        Fault::HttpStatus {
            status: 429,
            retry_after_secs: 1,
        },
        Fault::HttpStatus {
            status: 500,
            retry_after_secs: 0,
        },
    ]);
    assert!(!p.copy(&key, 1).await);
    assert_all_delivered(&p, &id, "burst.csv", &source_sha).await;
    assert!(
        support::logs::text().contains("retrying"),
        "retries are logged"
    );
    p.assert_logs_clean();
}

#[tokio::test]
async fn cuts_on_several_parallel_range_streams_at_once_are_resumed_per_range_byte_identical() {
    // No retries above the source: a range that cannot heal itself fails the delivery, so only
    // per-range resumes can make this pass.
    let p = Pipeline::new(Options {
        source_proxy: Some(source_proxy().await),
        transfer: Some(serde_json::json!({"retries": 0, "max_resumes": 3})),
        source: Some(serde_json::json!({"read_range_mib": 2, "read_ahead_mib": 1})),
        ..Default::default()
    })
    .await;
    // 22 MiB: eleven ranges of 2 MiB (set here: the default 16 MiB would make two), four in
    // flight per delivery, three deliveries; each range holds at most 1 MiB ahead of the copy.
    let source_sha = p.upload("range-cut.bin", 6, 22 * MIB).await;
    let (_, answer) = p.notify("range-cut.bin").await;
    let (id, key) = job_of(&answer, "all");
    // The first four connections (concurrent range requests) are cut mid-range.
    p._proxies[0].plan([
        Fault::CutResponseAfter(MIB),
        Fault::CutResponseAfter(MIB + 123),
        Fault::CutResponseAfter(3 * MIB / 2),
        Fault::CutResponseAfter(MIB / 2),
    ]);
    assert!(!p.copy(&key, 1).await, "delivered in one attempt");
    assert_all_delivered(&p, &id, "range-cut.bin", &source_sha).await;
    let logs = support::logs::text();
    let resumed: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| {
            l.contains("resuming with a range read of the rest of the range")
                && l.contains("range-cut.bin")
        })
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(resumed.len(), 4, "each cut resumed once: {resumed:?}");
    for r in &resumed {
        let (start, offset) = (
            r["fields"]["range_start"].as_u64().unwrap(),
            r["fields"]["offset"].as_u64().unwrap(),
        );
        assert!(
            offset > start && offset < start + 2 * MIB,
            "resumed mid-range: {r}"
        );
    }
    p.assert_logs_clean();
}

#[tokio::test]
async fn sftp_server_killed_mid_upload_then_restarted() {
    let mut sshd = ferry_harness::Sshd::start().unwrap();
    let proxy = source_proxy().await;
    let p = Pipeline::new(Options {
        source_proxy: Some(proxy),
        sftp_server: Some(SftpServer::of(&sshd)),
        ..Default::default()
    })
    .await;
    let source_sha = p.upload("killed-server.bin", 2, 24 * MIB).await;
    let (_, answer) = p.notify("killed-server.bin").await;
    let (id, key) = job_of(&answer, "all");
    // Slow reads keep the upload in flight long enough to kill the server under it.
    p._proxies[0].plan(std::iter::repeat_n(Fault::Throttle(12 * MIB), 3));
    let copy = p.copy(&key, 1);
    let killer = async {
        let started = Instant::now();
        loop {
            let partial = std::fs::read_dir(&p.sftp_dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    e.file_name().to_string_lossy().contains(".ferry-")
                        && e.metadata().is_ok_and(|m| m.len() > MIB)
                });
            if partial {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "upload never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sshd.kill();
        assert!(
            p.sftp_file("killed-server.bin").is_none(),
            "no file at the final name while the server is down"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        sshd.restart().unwrap();
    };
    let (redeliver, ()) = tokio::join!(copy, killer);
    if redeliver {
        assert!(!p.copy(&key, 2).await, "the redelivery completes");
    }
    assert_all_delivered(&p, &id, "killed-server.bin", &source_sha).await;
    p.assert_logs_clean();
}

#[tokio::test]
async fn worker_killed_mid_copy_resumes_from_the_parts_already_stored() {
    let p = Pipeline::new(Options {
        source_proxy: Some(source_proxy().await),
        part_size_mib: Some(5),
        ..Default::default()
    })
    .await;
    let source_sha = p.upload("resume.bin", 3, 64 * MIB).await;
    let (_, answer) = p.notify("resume.bin").await;
    let (id, key) = job_of(&answer, "all");
    let dir = tempfile::tempdir().unwrap();
    let run_job = p.run_job_worker(dir.path(), &key);
    // First worker: slow source, killed (SIGKILL) once S3 holds at least three parts. All its
    // connections are slow, so no destination can finish before the kill: one that had its file
    // delivered but not yet its receipt written would rightly be delivered again by the rerun
    // (at least once across a SIGKILL), and this test counts deliveries. The copy runs at about
    // one connection's rate (ranges further on wait once 1 MiB ahead): at 2 MiB/s the three
    // parts take about 10 s and the whole file about 30 s, room for a moto slowed by a loaded
    // machine (at 16 MiB/s the HTTP copy finished first in parallel runs). The rerun goes at
    // full speed: the HTTP destination's 5 s read timeout would not wait for a slow one.
    p._proxies[0].plan(std::iter::repeat_n(Fault::Throttle(2 * MIB), 200));
    let mut child = run_job();
    let s3 = support::moto_s3().await;
    let progress_key = ferry_shared::layout::progress_key(&id, "s3");
    let started = Instant::now();
    let parts_before_kill = loop {
        if started.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
            child.kill().await.ok();
            let out = child.wait_with_output().await.unwrap();
            panic!(
                "no multipart progress seen; worker said: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some((progress, _)) = p
            .copy
            .state
            .get_json::<serde_json::Value>(&progress_key)
            .await
            .unwrap()
        {
            let parts = progress["parts"].as_array().map_or(0, Vec::len);
            if parts >= 3 {
                break parts;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    child.kill().await.unwrap();
    p._proxies[0].clear_plan();
    assert!(
        p.s3_versions("resume.bin").await.1.is_none(),
        "no object after the crash"
    );
    // Second worker: full speed; must resume rather than start over.
    let out = run_job().wait_with_output().await.unwrap();
    let logs =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{logs}");
    let resumed = logs
        .lines()
        .find(|l| l.contains("resuming multipart upload"))
        .unwrap_or_else(|| panic!("the rerun did not resume: {logs}"));
    let parts: serde_json::Value = serde_json::from_str(resumed).unwrap();
    assert!(
        parts["parts"].as_u64().unwrap() >= 3,
        "{resumed} (killed with {parts_before_kill} parts)"
    );
    assert_all_delivered(&p, &id, "resume.bin", &source_sha).await;
    let pending = s3
        .list_multipart_uploads()
        .bucket(&p.archive_bucket)
        .send()
        .await
        .unwrap();
    assert!(
        pending.uploads().is_empty(),
        "no multipart upload left behind"
    );
    assert!(
        p.copy.state.get(&progress_key).await.unwrap().is_none(),
        "progress checkpoint removed"
    );
    for s in p.secrets() {
        assert!(!logs.contains(&s), "worker logs leak a secret");
    }
}

#[tokio::test]
async fn sas_revoked_mid_transfer_dead_letters_with_a_clear_reason() {
    let p = Pipeline::new(Options {
        source_proxy: Some(source_proxy().await),
        ..Default::default()
    })
    .await;
    p.upload("revoked-mid.bin", 4, 16 * MIB).await;
    let (_, answer) = p.notify("revoked-mid.bin").await;
    let (id, key) = job_of(&answer, "all");
    // Reads start with a valid SAS, run slowly, and break every 2 MiB: the resumes need the SAS
    // again. Every connection (each parallel range stream of each delivery, and each resume)
    // gets the same fault, so no range finishes before the revocation.
    p._proxies[0].plan(std::iter::repeat_n(
        Fault::ThrottleThenCut {
            bytes_per_sec: 8 * MIB,
            cut_after: 2 * MIB,
        },
        100,
    ));
    let copy = p.copy(&key, 1);
    let revoke = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        ferry_harness::shared()
            .azurite
            .admin()
            .remove_access_policy(&p.container, "ferry-read")
            .await
            .unwrap();
    };
    let (redeliver, ()) = tokio::join!(copy, revoke);
    assert!(!redeliver, "a revoked SAS does not heal by retrying");
    let failure = p.failure(&id).await.expect("dead letter");
    assert!(
        !failure.retryable && failure.reason.contains("denied access"),
        "{failure:?}"
    );
    assert!(p.receipts(&id).await.is_empty());
    assert!(
        p.sftp_file("revoked-mid.bin").is_none()
            && p.s3_versions("revoked-mid.bin").await.1.is_none()
    );
    assert!(p.http_bodies("revoked-mid.bin").await.is_empty());
    let text = serde_json::to_string(&failure).unwrap();
    assert!(p.secrets().iter().all(|s| !text.contains(s)));
    p.assert_logs_clean();
}

#[tokio::test]
async fn state_store_unreachable_for_a_while_then_back() {
    let state_proxy = FaultProxy::start(ferry_harness::shared().moto.port).await;
    let p = Pipeline::new(Options {
        state_proxy: Some(state_proxy),
        source_proxy: Some(source_proxy().await),
        ..Default::default()
    })
    .await;
    let (state, source) = (&p._proxies[1], &p._proxies[0]);
    let source_sha = p.upload("outage.bin", 5, 12 * MIB).await;
    let (_, answer) = p.notify("outage.bin").await;
    let (id, key) = job_of(&answer, "all");
    // Down before the run: the job cannot even be read; it is redelivered, untouched.
    state.set_refusing(true);
    assert!(p.copy(&key, 1).await, "state store down: redeliver");
    assert!(
        p.http_bodies("outage.bin").await.is_empty(),
        "nothing delivered blind"
    );
    // Down during the transfer (while bytes stream), back before the receipts are written.
    state.set_refusing(false);
    source.plan(std::iter::repeat_n(Fault::Throttle(6 * MIB), 3));
    let copy = p.copy(&key, 2);
    let outage = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        state.set_refusing(true);
        tokio::time::sleep(Duration::from_millis(700)).await;
        state.set_refusing(false);
    };
    let (redeliver, ()) = tokio::join!(copy, outage);
    assert!(!redeliver);
    assert_all_delivered(&p, &id, "outage.bin", &source_sha).await;
    p.assert_logs_clean();
}

#[tokio::test]
async fn thousand_webhooks_for_hundred_files_deliver_each_file_once_per_destination() {
    let p = Pipeline::new(Options::default()).await;
    let mut shas = std::collections::BTreeMap::new();
    for i in 0..100u64 {
        let name = format!("storm/file-{i:03}.csv");
        shas.insert(name.clone(), p.upload(&name, 100 + i, 1024 + i).await);
    }
    let runner = ferry::LocalRunner::start(
        &p.copy,
        "127.0.0.1:0".parse().unwrap(),
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    let url = format!(
        "http://{}/",
        runner
            .webhook_addr
            .expect("the config has a webhook section")
    );
    let http = reqwest::Client::new();
    // Ten of each, interleaved: file 0..99, then again, ten rounds, 50 in flight.
    let calls = (0..1000).map(|n| {
        let body = serde_json::json!({"container": p.container, "file": format!("storm/file-{:03}.csv", n % 100)});
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http.post(url).header("x-ferry-token", TOKEN).json(&body).send().await.unwrap();
            r.status().as_u16()
        }
    });
    let statuses: Vec<u16> = futures_util::stream::iter(calls)
        .buffer_unordered(50)
        .collect()
        .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        100,
        "one job per file"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        900,
        "the rest are duplicates"
    );
    let started = Instant::now();
    loop {
        let done = p.copy.state.list("done/").await.unwrap().len();
        if done == 300 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "only {done}/300 receipts"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(runner);
    let requests = p.http.received_requests().await.unwrap();
    let paths: BTreeSet<_> = requests.iter().map(|r| r.url.path().to_string()).collect();
    assert_eq!(
        (requests.len(), paths.len()),
        (100, 100),
        "exactly one HTTP delivery per file"
    );
    let s3 = support::moto_s3().await;
    let versions = s3
        .list_object_versions()
        .bucket(&p.archive_bucket)
        .max_keys(1000)
        .send()
        .await
        .unwrap();
    assert_eq!(
        versions.versions().len(),
        100,
        "exactly one S3 version per file"
    );
    for (name, want) in &shas {
        assert_eq!(&sha(&p.sftp_file(name).expect("on SFTP")), want, "{name}");
    }
    p.assert_logs_clean();
}
