//! The Graph destination under the faults design 6a names, on the stateful Graph fake: 429 with
//! Retry-After mid-upload, a lost fragment response (416 on the resend), an expired session
//! (404: start over), the AAD token expiring mid-upload, a copy killed or stopped at its deadline
//! at ~60% that resumes from the stored offset, conflicts under `fail`, a drive that reports no
//! hash, a wrong hash, a lost commit answer, certificate credentials, drive addressing; and end
//! to end, webhook -> job -> SharePoint (fake) + SFTP. Every test also checks that no
//! Authorization header reached an uploadUrl, that the client broke no protocol rule, and that
//! no secret, token or uploadUrl reached a log line.

use crate::support;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_shared::ByteReader;
use ferry_shared::dest::graph::{GraphConfig, GraphDestination};
use ferry_shared::dest::{Delivery, Destination, DestinationError, Written};
use ferry_shared::retry::RetryPolicy;
use ferry_shared::secret::SecretResolver;
use ferry_shared::state::StateStore;
use ferry_shared::verify::verifying;
use support::data;
use support::graph::{Fault, GraphFake};
use tokio::io::{AsyncRead, ReadBuf};

const MIB: u64 = 1024 * 1024;
const SECRET: &str = "graph-faults-client-secret-7f3a";

fn policy() -> RetryPolicy {
    RetryPolicy {
        retries: 4,
        initial: Duration::from_millis(10),
        max: Duration::from_secs(5),
        budget: Duration::from_secs(60),
        deadline: None,
    }
}

async fn start() -> GraphFake {
    support::logs::init();
    GraphFake::start("ferry-app", SECRET).await
}

async fn build(
    fake: &GraphFake,
    state: Option<Arc<dyn StateStore>>,
    tweak: serde_json::Value,
) -> GraphDestination {
    let mut config = fake.config(support::file_secret(SECRET), "in");
    config.as_object_mut().unwrap().remove("type");
    for (k, v) in tweak.as_object().unwrap() {
        config[k] = v.clone();
    }
    let config: GraphConfig = serde_json::from_value(config).unwrap();
    GraphDestination::from_config("g", &config, &SecretResolver::local(), state, policy())
        .await
        .expect("graph destination builds")
}

fn delivery(name: &str, size: u64, job: &str) -> Delivery {
    Delivery {
        name: name.into(),
        size,
        content_type: None,
        content_md5: None,
        idempotency_key: format!("{job}:g"),
        stop_at: None,
    }
}

async fn send(
    dest: &GraphDestination,
    delivery: &Delivery,
    seed: u64,
) -> Result<Written, DestinationError> {
    let (body, _) = verifying(data::reader(seed, delivery.size, None), delivery.size, None);
    dest.write(delivery, body).await
}

/// The client secret, every access token and every uploadUrl (and its embedded token).
fn secrets(fake: &GraphFake) -> Vec<String> {
    let mut secrets: Vec<String> = vec![SECRET.into()];
    secrets.extend(fake.tokens());
    for url in fake.upload_urls() {
        let tempauth = url.split("tempauth=").nth(1).unwrap().to_string();
        secrets.push(url);
        secrets.push(tempauth);
    }
    secrets
}

/// The checks every test ends with.
fn clean(fake: &GraphFake) {
    assert_eq!(
        fake.violations(),
        Vec::<String>::new(),
        "protocol rules broken"
    );
    assert_eq!(
        fake.auth_on_upload_url(),
        0,
        "Authorization sent to an uploadUrl"
    );
    let secrets = secrets(fake);
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    support::logs::assert_no_secrets(&refs);
}

#[tokio::test]
async fn retry_after_on_a_fragment_is_honoured_and_the_upload_completes() {
    let fake = start().await;
    let dest = build(&fake, None, serde_json::json!({})).await;
    fake.inject(2, Fault::Status(429, Some(2)));
    fake.inject(3, Fault::Status(503, Some(1)));
    let d = delivery("throttled.bin", 12 * MIB, "j429");
    let written = send(&dest, &d, 11).await.unwrap();
    assert_eq!(
        fake.stored("in/throttled.bin"),
        Some((12 * MIB, data::sha256(11, 12 * MIB)))
    );
    assert!(
        written.remote_hash.as_ref().is_some_and(|h| h.verified),
        "{:?}",
        written.remote_hash
    );
    // Three fragments, two of them refused once each and sent again.
    assert_eq!(fake.count("fragment"), 5);
    // The waits were the server's, not the policy's 10 ms backoff.
    let logs = support::logs::text();
    for wait in ["\"wait_ms\":2000", "\"wait_ms\":1000"] {
        assert!(
            logs.lines()
                .any(|l| l.contains("graph upload fragment") && l.contains(wait)),
            "no retry waited {wait}"
        );
    }
    clean(&fake);
}

#[tokio::test]
async fn a_lost_fragment_response_is_followed_by_416_status_and_continue() {
    let fake = start().await;
    let dest = build(&fake, None, serde_json::json!({})).await;
    // Fragment 2 is stored but its answer is lost (500): the resend overlaps -> 416.
    fake.inject(2, Fault::StoreThenFail);
    let d = delivery("lost.bin", 17 * MIB, "j416");
    send(&dest, &d, 12).await.unwrap();
    assert_eq!(
        fake.stored("in/lost.bin"),
        Some((17 * MIB, data::sha256(12, 17 * MIB)))
    );
    assert_eq!(fake.count("status"), 1, "416 reads the session status once");
    assert_eq!(fake.count("create_session"), 1, "the session was kept");
    // 4 fragments, the second sent twice.
    assert_eq!(fake.count("fragment"), 5);
    assert_eq!(fake.fragment_bytes(), 22 * MIB);
    clean(&fake);
}

#[tokio::test]
async fn an_expired_session_starts_over() {
    let fake = start().await;
    let dest = build(&fake, None, serde_json::json!({})).await;
    fake.inject(3, Fault::ExpireSession);
    let d = delivery("expired.bin", 14 * MIB, "j404");
    let err = send(&dest, &d, 13).await.unwrap_err();
    assert!(
        matches!(&err, DestinationError::Transient { reason, .. } if reason.contains("starting over")),
        "{err:?}"
    );
    assert_eq!(fake.stored("in/expired.bin"), None);
    // The engine retries a transient failure: a fresh read, a new session.
    send(&dest, &d, 13).await.unwrap();
    assert_eq!(
        fake.stored("in/expired.bin"),
        Some((14 * MIB, data::sha256(13, 14 * MIB)))
    );
    assert_eq!(fake.count("create_session"), 2);
    assert_eq!(fake.everything(), vec!["in/expired.bin".to_string()]);
    clean(&fake);
}

#[tokio::test]
async fn the_aad_token_expiring_mid_upload_is_refreshed_once() {
    let fake = start().await;
    let dest = build(&fake, None, serde_json::json!({})).await;
    assert_eq!(
        fake.count("token"),
        0,
        "no token at build: the drive is looked up at first use"
    );
    // Every token dies while fragment 2 is on its way: fragments carry none, so the upload
    // goes on; the next Graph call is refused once, refreshes, and succeeds.
    fake.inject(2, Fault::RevokeTokens);
    send(&dest, &delivery("long.bin", 12 * MIB, "jtok"), 14)
        .await
        .unwrap();
    assert_eq!(
        fake.count("token"),
        1,
        "one token for the drive lookup and the session; the fragments needed none"
    );
    send(&dest, &delivery("next.csv", 2000, "jtok2"), 15)
        .await
        .unwrap();
    assert_eq!(
        fake.stored("in/long.bin"),
        Some((12 * MIB, data::sha256(14, 12 * MIB)))
    );
    assert_eq!(
        fake.stored("in/next.csv"),
        Some((2000, data::sha256(15, 2000)))
    );
    assert_eq!(fake.unauthorized(), 1, "one refusal");
    assert_eq!(fake.count("token"), 2, "one refresh");
    clean(&fake);
}

#[tokio::test]
async fn conflict_fail_refuses_at_the_last_byte_and_leaves_the_old_file() {
    let fake = start().await;
    let replace = build(&fake, None, serde_json::json!({})).await;
    send(&replace, &delivery("keep.bin", 6 * MIB, "jc1"), 16)
        .await
        .unwrap();
    let fail = build(
        &fake,
        None,
        serde_json::json!({"conflict_behavior": "fail"}),
    )
    .await;
    let err = send(&fail, &delivery("keep.bin", 6 * MIB, "jc2"), 17)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DestinationError::Rejected(r) if r.contains("nameAlreadyExists")),
        "{err:?}"
    );
    assert_eq!(
        fake.stored("in/keep.bin"),
        Some((6 * MIB, data::sha256(16, 6 * MIB)))
    );
    assert_eq!(
        fake.everything(),
        vec!["in/keep.bin".to_string()],
        "no session left"
    );
    clean(&fake);
}

#[tokio::test]
async fn a_drive_without_hashes_is_recorded_unverified() {
    let fake = start().await;
    fake.report_hashes(false);
    let dest = build(&fake, None, serde_json::json!({})).await;
    for (name, len) in [("nohash-small.csv", 1000), ("nohash-big.bin", 6 * MIB)] {
        let w = send(&dest, &delivery(name, len, "jh"), 18).await.unwrap();
        let hash = w
            .remote_hash
            .as_ref()
            .expect("the hash of the bytes sent is kept");
        assert_eq!(hash.algorithm, "quickXorHash");
        assert!(
            !hash.verified,
            "no hash from the drive: recorded unverified"
        );
        assert!(
            w.location.starts_with("https://contoso.sharepoint.com/"),
            "{}",
            w.location
        );
    }
    clean(&fake);
}

/// Yields the first `limit` bytes of `inner`, then never anything again (a stalled source).
struct StallAfter {
    inner: ByteReader,
    left: u64,
}

impl AsyncRead for StallAfter {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.left == 0 {
            return Poll::Pending;
        }
        let want = (buf.remaining() as u64).min(self.left) as usize;
        let mut sub = ReadBuf::new(buf.initialize_unfilled_to(want));
        let polled = self.inner.as_mut().poll_read(cx, &mut sub);
        let n = sub.filled().len();
        buf.advance(n);
        self.left -= n as u64;
        polled
    }
}

async fn state_store() -> Arc<dyn StateStore> {
    support::aws_test_env();
    let moto = &ferry_harness::shared().moto;
    let bucket = support::unique("graph-state");
    moto.create_bucket(&bucket).await.unwrap();
    Arc::new(ferry_shared::state::S3StateStore::new(
        support::moto_s3().await,
        bucket,
    ))
}

/// A copy whose worker dies (the task is dropped, nothing cleans up) at ~60% resumes from the
/// checkpoint: the same session, fewer than half the bytes sent again, byte-identical.
#[tokio::test]
async fn a_killed_copy_resumes_from_the_stored_offset() {
    let fake = start().await;
    let state = state_store().await;
    let dest = Arc::new(build(&fake, Some(state.clone()), serde_json::json!({})).await);
    let len = 50 * MIB;
    let d = delivery("resume.bin", len, "jkill");
    let stalled: ByteReader = Box::pin(StallAfter {
        inner: data::reader(19, len, None),
        left: 30 * MIB,
    });
    let (body, _) = verifying(stalled, len, None);
    let task = {
        let (dest, d) = (dest.clone(), d.clone());
        tokio::spawn(async move { dest.write(&d, body).await })
    };
    // Six 5 MiB fragments fit in the 30 MiB the source gives before it stalls.
    while fake.fragment_bytes() < 30 * MIB {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The checkpoint is saved right after a fragment's answer: wait for the sixth.
    let key = ferry_shared::layout::progress_key("jkill", "g");
    loop {
        if let Ok(Some((v, _))) =
            ferry_shared::state::StateStoreExt::get_json::<serde_json::Value>(state.as_ref(), &key)
                .await
            && v["confirmed_bytes"] == 30 * MIB
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    let _ = task.await;
    let before = fake.fragment_bytes();
    send(&dest, &d, 19).await.unwrap();
    let again = fake.fragment_bytes() - before;
    assert_eq!(again, 20 * MIB, "only the missing 40% was sent");
    assert!(again < len / 2);
    assert_eq!(
        fake.count("create_session"),
        1,
        "the stored session was resumed"
    );
    assert_eq!(
        fake.stored("in/resume.bin"),
        Some((len, data::sha256(19, len)))
    );
    // The checkpoint stays until the receipt is saved.
    assert_eq!(state.list("progress/").await.unwrap().len(), 1);
    dest.receipt_saved(&d).await;
    assert!(
        state.list("progress/").await.unwrap().is_empty(),
        "checkpoint removed"
    );
    clean(&fake);
}

/// A run that committed its upload session and died before its receipt (a shutdown's grace can
/// end while the commit is in flight): the next run finds the session gone after its last byte,
/// and the file under its name with our size and quickXorHash settles it. Nothing is uploaded
/// or committed again; with `rename` an upload started over would leave a second file.
#[tokio::test]
async fn a_session_committed_by_a_run_that_died_before_its_receipt_is_not_uploaded_again() {
    let fake = start().await;
    let state = state_store().await;
    let dest = build(
        &fake,
        Some(state.clone()),
        serde_json::json!({"conflict_behavior": "rename"}),
    )
    .await;
    let len = 12 * MIB + 7;
    let d = delivery("died.bin", len, "jdied");
    // No receipt_saved after it: the run died there.
    let first = send(&dest, &d, 31).await.unwrap();
    let again = send(&dest, &d, 31).await.unwrap();
    assert_eq!(again, first, "the same file, location and hash");
    assert_eq!(fake.count("create_session"), 1, "a session started over");
    assert_eq!(fake.count("commit"), 1, "committed again");
    assert_eq!(fake.fragment_bytes(), len, "bytes uploaded again");
    assert_eq!(fake.everything(), ["in/died.bin"]);
    assert_eq!(
        fake.stored("in/died.bin"),
        Some((len, data::sha256(31, len)))
    );
    // Once the receipt is saved the checkpoint goes: a replay uploads again (and `rename` keeps
    // both).
    dest.receipt_saved(&d).await;
    assert!(state.list("progress/").await.unwrap().is_empty());
    send(&dest, &d, 31).await.unwrap();
    assert_eq!(fake.count("create_session"), 2);
    assert_eq!(fake.everything().len(), 2);
    clean(&fake);
}

/// At the delivery's stop instant the upload stops with `Interrupted`, keeping the session and
/// the confirmed bytes; the next run sends only the rest.
#[tokio::test]
async fn a_copy_stopped_at_its_deadline_resumes_in_the_next_run() {
    let fake = start().await;
    let state = state_store().await;
    let dest = build(&fake, Some(state.clone()), serde_json::json!({})).await;
    let len = 25 * MIB;
    let mut d = delivery("deadline.bin", len, "jstop");
    let stalled: ByteReader = Box::pin(StallAfter {
        inner: data::reader(20, len, None),
        left: 15 * MIB,
    });
    let (body, _) = verifying(stalled, len, None);
    // Generous for 15 MiB to a local fake; the source stalls after them, so the stop is what
    // ends the write.
    d.stop_at = Some(tokio::time::Instant::now() + Duration::from_secs(5));
    let err = dest.write(&d, body).await.unwrap_err();
    assert!(
        matches!(err, DestinationError::Interrupted { kept_bytes, size } if kept_bytes == 15 * MIB && size == len),
        "{err:?}"
    );
    assert_eq!(
        fake.stored("in/deadline.bin"),
        None,
        "nothing visible before commit"
    );
    let before = fake.fragment_bytes();
    d.stop_at = None;
    send(&dest, &d, 20).await.unwrap();
    assert_eq!(fake.fragment_bytes() - before, 10 * MIB);
    assert_eq!(fake.count("create_session"), 1);
    assert_eq!(
        fake.stored("in/deadline.bin"),
        Some((len, data::sha256(20, len)))
    );
    clean(&fake);
}

/// End to end: webhook -> job -> blob-copy delivering to SharePoint (the fake) and SFTP at once,
/// receipts carrying the quickXorHash.
#[tokio::test]
async fn webhook_copies_to_sharepoint_and_sftp_with_quickxorhash_receipts() {
    use support::pipeline::{Options, Pipeline, job_of};
    let fake = start().await;
    let p = Pipeline::new(Options {
        all_route_destinations: Some(vec!["sftp", "graph"]),
        extra_destinations: Some(
            serde_json::json!({"graph": fake.config(support::file_secret(SECRET), "in")}),
        ),
        ..Default::default()
    })
    .await;
    for (name, seed, len) in [
        ("daily HMIS ✓.csv", 21u64, 300_000u64),
        ("export.xml", 22, 24 * MIB),
    ] {
        let source_sha = p.upload(name, seed, len).await;
        let (status, answer) = p.notify(name).await;
        assert_eq!(status, 202, "{answer}");
        let (job_id, job_key) = job_of(&answer, "all");
        assert!(
            !p.copy(&job_key, 1).await,
            "copy of {name} asked for redelivery"
        );
        let receipts = p.receipts(&job_id).await;
        assert_eq!(
            receipts.keys().collect::<Vec<_>>(),
            ["graph", "sftp"],
            "{receipts:?}"
        );
        for r in receipts.values() {
            assert_eq!(
                (r.bytes, r.sha256.as_str()),
                (len, source_sha.as_str()),
                "{r:?}"
            );
        }
        let graph = &receipts["graph"];
        assert_eq!(graph.kind, "graph");
        assert!(
            graph
                .location
                .starts_with("https://contoso.sharepoint.com/")
                && graph.remote_hash.as_ref().is_some_and(|h| h.verified),
            "{}",
            graph.location
        );
        assert_eq!(
            fake.stored(&format!("in/{name}")).map(|s| s.1),
            Some(source_sha.clone())
        );
        assert_eq!(
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                p.sftp_file(name).unwrap()
            )),
            source_sha
        );
    }
    p.assert_logs_clean();
    clean(&fake);
}

/// The worker process SIGKILLed at ~60% of a 256 MiB upload, then rerun: it resumes the stored
/// session from its offset (fewer than half the bytes sent again), byte-identical.
#[tokio::test]
async fn worker_sigkilled_at_60_percent_of_256_mib_resumes_the_session() {
    use support::fault_proxy::{Fault as ProxyFault, FaultProxy, Gate};
    use support::pipeline::{Options, Pipeline, job_of};
    let fake = start().await;
    let proxy = FaultProxy::start(ferry_harness::shared().azurite.port).await;
    let mut p = Pipeline::new(Options {
        source_proxy: Some(proxy),
        all_route_destinations: Some(vec!["graph"]),
        extra_destinations: Some(
            serde_json::json!({"graph": fake.config(support::file_secret(SECRET), "in")}),
        ),
        ..Default::default()
    })
    .await;
    // One source stream, so the proxy's pause at 60% of the response holds the whole read (with
    // parallel ranges each connection carries only one range, and the worker would run past 60%
    // and race the kill).
    p.copy_config["sources"]["clienttrack"]["read_streams"] = 1.into();
    let len = 256 * MIB;
    let source_sha = p.upload("quarter.bin", 23, len).await;
    let (_, answer) = p.notify("quarter.bin").await;
    let (id, key) = job_of(&answer, "all");
    let dir = tempfile::tempdir().unwrap();
    let run_job = p.run_job_worker(dir.path(), &key);
    // The source holds its response after 60% of the file: the worker sends every whole
    // fragment it has, then waits; it is killed there.
    let gate = Arc::new(Gate::default());
    p._proxies[0].plan([ProxyFault::PauseResponseThenCut(len * 6 / 10, gate.clone())]);
    let mut child = run_job();
    let checkpoint = ferry_shared::layout::progress_key(&id, "graph");
    let want = (len * 6 / 10) / (5 * MIB) * (5 * MIB);
    let started = std::time::Instant::now();
    loop {
        if started.elapsed() > Duration::from_secs(120) || child.try_wait().unwrap().is_some() {
            child.kill().await.ok();
            let out = child.wait_with_output().await.unwrap();
            panic!(
                "the worker did not reach 60%: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some((v, _)) = ferry_shared::state::StateStoreExt::get_json::<serde_json::Value>(
            p.copy.state.as_ref(),
            &checkpoint,
        )
        .await
        .unwrap()
            && v["confirmed_bytes"].as_u64() == Some(want)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child.kill().await.unwrap();
    gate.release.notify_one();
    assert_eq!(
        fake.stored("in/quarter.bin"),
        None,
        "nothing visible after the kill"
    );
    let before = fake.fragment_bytes();
    let out = run_job().wait_with_output().await.unwrap();
    let logs =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{logs}");
    assert!(
        logs.contains("resuming graph upload session from the stored offset"),
        "the rerun did not resume: {logs}"
    );
    let again = fake.fragment_bytes() - before;
    assert_eq!(
        again,
        len - want,
        "only the bytes after the stored offset were sent"
    );
    assert!(again < len / 2);
    assert_eq!(fake.count("create_session"), 1);
    assert_eq!(
        fake.stored("in/quarter.bin"),
        Some((len, source_sha.clone()))
    );
    let receipts = p.receipts(&id).await;
    assert!(
        receipts["graph"]
            .remote_hash
            .as_ref()
            .is_some_and(|h| h.verified && h.algorithm == "quickXorHash")
    );
    assert_eq!(receipts["graph"].sha256, source_sha);
    for secret in secrets(&fake) {
        assert!(!logs.contains(&secret), "the worker logged a secret");
    }
    clean(&fake);
}

/// Graph's quickXorHash disagrees with the bytes sent: a verification error, and the committed
/// copy is deleted again (nothing wrong stays visible).
#[tokio::test]
async fn a_hash_mismatch_fails_verification_and_removes_the_file() {
    let fake = start().await;
    let dest = build(&fake, None, serde_json::json!({})).await;
    for (name, len) in [("rot-small.csv", 5000), ("rot-big.bin", 7 * MIB)] {
        fake.corrupt_next_file();
        let err = send(&dest, &delivery(name, len, "jrot"), 24)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DestinationError::Verification(m) if m.contains("quickXorHash mismatch")),
            "{err:?}"
        );
        assert_eq!(fake.stored(&format!("in/{name}")), None);
    }
    assert_eq!(fake.count("delete_item"), 2);
    assert!(fake.everything().is_empty(), "{:?}", fake.everything());
    clean(&fake);
}

/// The drive is found by id, by a user's UPN, or by site + library (the conformance suite), at
/// the first delivery and once: building the destination makes no call, so Graph being down at a
/// cold start stops only its own jobs. An app without the site grant fails that delivery (and
/// `ferry check`) with a message that names the fix.
#[tokio::test]
async fn drive_addressing_and_a_missing_site_grant() {
    let fake = start().await;
    let no_site = |mut v: serde_json::Value| {
        for k in ["hostname", "site_path", "library"] {
            v[k] = serde_json::Value::Null;
        }
        v
    };
    let by_id = build(
        &fake,
        None,
        no_site(serde_json::json!({"drive_id": fake.drive_id()})),
    )
    .await;
    assert_eq!(by_id.drive_id().await.unwrap(), fake.drive_id());
    let by_user = build(
        &fake,
        None,
        no_site(serde_json::json!({"user": "intake@contoso.org"})),
    )
    .await;
    assert_eq!(by_user.drive_id().await.unwrap(), fake.drive_id());
    send(&by_user, &delivery("via-user.csv", 10, "ju"), 25)
        .await
        .unwrap();
    assert_eq!(
        fake.stored("in/via-user.csv"),
        Some((10, data::sha256(25, 10)))
    );
    assert_eq!(fake.count("get_site"), 0);
    fake.deny_sites();
    let mut config = fake.config(support::file_secret(SECRET), "in");
    config.as_object_mut().unwrap().remove("type");
    let config: GraphConfig = serde_json::from_value(config).unwrap();
    let tokens = fake.count("token");
    let dest =
        GraphDestination::from_config("g", &config, &SecretResolver::local(), None, policy())
            .await
            .expect("building makes no call, so it cannot fail on access");
    assert_eq!(
        fake.count("token"),
        tokens,
        "a token was asked for at build"
    );
    let err = send(&dest, &delivery("no-grant.csv", 10, "ng"), 26)
        .await
        .expect_err("no site access: the delivery fails");
    assert!(err.to_string().contains("Sites.Selected"), "{err}");
    assert_eq!(fake.stored("in/no-grant.csv"), None);
    let problem = GraphDestination::probe_config("g", &config, &SecretResolver::local(), policy())
        .await
        .expect_err("ferry check finds it before any file moves");
    assert!(
        format!("{problem:?}").contains("Sites.Selected"),
        "{problem:?}"
    );
    clean(&fake);
}

/// Certificate credentials (what tenant admins prefer to secrets): the token request carries a
/// signed client assertion and no secret, and the key never reaches a log line.
#[tokio::test]
async fn certificate_credentials_sign_in_and_upload() {
    let fake = start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
        ])
        .args([
            "-out",
            "cert.pem",
            "-subj",
            "/CN=ferry-graph-test",
            "-days",
            "2",
        ])
        .current_dir(dir.path())
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    let (cert, key) = (read("cert.pem"), read("key.pem"));
    let dest = build(
        &fake,
        None,
        serde_json::json!({"client_secret": null, "certificate": support::file_secret(&cert),
            "private_key": support::file_secret(&key)}),
    )
    .await;
    send(&dest, &delivery("cert.csv", 700, "jcert"), 26)
        .await
        .unwrap();
    assert_eq!(
        fake.stored("in/cert.csv"),
        Some((700, data::sha256(26, 700)))
    );
    assert_eq!((fake.count("token"), fake.assertions()), (1, 1));
    let key_body: String = key.lines().nth(1).unwrap().to_string();
    support::logs::assert_no_secrets(&[&key_body]);
    clean(&fake);
}

/// Streams that end short or hash wrong are caught before the last fragment leaves: the
/// session is cancelled and nothing is committed (the conformance suite's short and corrupt
/// streams fit a simple upload; these need a session).
#[tokio::test]
async fn short_and_corrupt_session_streams_cancel_the_session() {
    let fake = start().await;
    let dest = build(&fake, None, serde_json::json!({})).await;
    let len = 12 * MIB;
    let (short, _) = verifying(data::reader(27, len, None), len + 1, None);
    let (corrupt, _) = verifying(
        data::reader(28, len, None),
        len,
        Some("AAAAAAAAAAAAAAAAAAAAAA==".into()),
    );
    for (name, body, size) in [("short.bin", short, len + 1), ("corrupt.bin", corrupt, len)] {
        let err = dest
            .write(&delivery(name, size, "jbad"), body)
            .await
            .unwrap_err();
        assert!(
            matches!(err, DestinationError::Verification(_)),
            "{name}: {err:?}"
        );
    }
    assert_eq!(fake.count("create_session"), 2);
    assert_eq!(fake.count("cancel"), 2);
    assert_eq!(fake.count("commit"), 0);
    // Two 5 MiB fragments each; the last 2 MiB never left.
    assert_eq!(fake.fragment_bytes(), 20 * MIB);
    assert!(fake.everything().is_empty(), "{:?}", fake.everything());
    clean(&fake);
}

/// A commit whose answer is lost: the retry finds the session gone (404), and the file under
/// its name with our size and hash settles it; nothing is uploaded again (with `fail`, an
/// upload started over would even be refused by its own file).
#[tokio::test]
async fn a_lost_commit_answer_is_settled_by_the_file_itself() {
    let fake = start().await;
    let dest = build(
        &fake,
        None,
        serde_json::json!({"conflict_behavior": "fail"}),
    )
    .await;
    fake.lose_next_commit_answer();
    let len = 8 * MIB;
    send(&dest, &delivery("committed.bin", len, "jcommit"), 29)
        .await
        .unwrap();
    assert_eq!(fake.count("commit"), 2);
    assert_eq!(fake.count("create_session"), 1);
    assert_eq!(fake.fragment_bytes(), len);
    assert_eq!(
        fake.stored("in/committed.bin"),
        Some((len, data::sha256(29, len)))
    );
    clean(&fake);
}
