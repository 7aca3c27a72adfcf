//! Webhook-triggered export copy, end to end on real components: Azurite (source), moto (state
//! and S3 destination), OpenSSH sshd (SFTP destination), and a mock HTTP endpoint. Requests go
//! through the webhook-ingest Lambda adapter, jobs through blob-copy's SQS handler, exactly as in
//! production; ingest and copy get separate clients, as separate Lambdas would.

use crate::support;

use std::time::Duration;

use ferry_shared::state::StateStoreExt as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::fault_proxy::{Fault, FaultProxy};
use support::pipeline::{MIB, Options, Pipeline, TOKEN, job_of};
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

#[tokio::test]
async fn webhook_to_sftp_s3_and_http_byte_identical_with_receipts() {
    let p = Pipeline::new(Options::default()).await;
    for (name, seed, len) in [
        ("daily HMIS ✓.csv", 11u64, 300_000u64),
        ("big export.xml", 12, 64 * MIB),
    ] {
        let source_sha = p.upload(name, seed, len).await;
        let (status, answer) = p.notify(name).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["status"], "accepted");
        let (job_id, job_key) = job_of(&answer, "all");
        assert!(
            !p.copy(&job_key, 1).await,
            "copy of {name} asked for redelivery"
        );
        let receipts = p.receipts(&job_id).await;
        assert_eq!(receipts.len(), 3, "{receipts:?}");
        for r in receipts.values() {
            assert_eq!(
                (r.bytes, r.sha256.as_str()),
                (len, source_sha.as_str()),
                "{r:?}"
            );
            assert!(!r.location.contains("sig="));
        }
        // Azure keeps an MD5 for single-shot and block-list uploads made by the harness.
        assert!(
            receipts["s3"].md5_verified_against_source,
            "{:?}",
            receipts["s3"]
        );
        let on_sftp = p.sftp_file(name).expect("file on SFTP");
        assert_eq!(hex::encode(Sha256::digest(&on_sftp)), source_sha);
        assert_eq!(p.s3_versions(name).await, (1, Some(source_sha.clone())));
        let encoded =
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let bodies = p.http.received_requests().await.unwrap();
        let body = bodies.iter().find(|r| {
            percent_encoding::percent_decode_str(r.url.path()).decode_utf8_lossy()
                == format!("/files/{name}")
        });
        let body = body.unwrap_or_else(|| panic!("no HTTP delivery of {name} ({encoded})"));
        assert_eq!(hex::encode(Sha256::digest(&body.body)), source_sha);
    }
    p.assert_logs_clean();
}

#[tokio::test]
async fn route_filter_sends_hmis_zips_to_their_folder() {
    let p = Pipeline::new(Options::default()).await;
    let sha = p.upload("HMIS_2026.zip", 21, 5000).await;
    let (status, answer) = p.notify("HMIS_2026.zip").await;
    assert_eq!(status, 202);
    assert_eq!(
        answer["jobs"].as_array().unwrap().len(),
        2,
        "both routes match: {answer}"
    );
    let (id, key) = job_of(&answer, "hmis-zips");
    assert!(!p.copy(&key, 1).await);
    assert_eq!(p.receipts(&id).await.len(), 1);
    let got = p
        .sftp_file("hmis/HMIS_2026.zip")
        .expect("in the route's folder");
    assert_eq!(hex::encode(Sha256::digest(got)), sha);
    // Not a zip: only the catch-all route.
    p.upload("HMIS_2026.csv", 22, 10).await;
    let (_, answer) = p.notify("HMIS_2026.csv").await;
    assert_eq!(answer["jobs"].as_array().unwrap().len(), 1, "{answer}");
}

#[tokio::test]
async fn matching_routes_write_their_jobs_at_the_same_time() {
    let mut p = Pipeline::new(Options::default()).await;
    p.upload("HMIS_2027.zip", 23, 100).await;
    // Job writes wait at a gate that opens only once both routes' writes are waiting at it: a
    // webhook that wrote one job after the other would never get there.
    let (open, gate) = tokio::sync::watch::channel(false);
    let gated = std::sync::Arc::new(support::GatedPuts::new(
        p.ingest.state.clone(),
        "jobs/",
        0,
        gate,
    ));
    p.ingest.state = gated.clone();
    p.webhook = p.ingest.webhook().await.unwrap();
    let opener = async {
        let started = std::time::Instant::now();
        while gated.held() < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the two matching routes' jobs were not written at the same time (held: {})",
                gated.held()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        open.send_replace(true);
    };
    let ((status, answer), ()) = tokio::join!(p.notify("HMIS_2027.zip"), opener);
    assert_eq!(status, 202, "{answer}");
    let jobs = answer["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{answer}");
    assert!(jobs.iter().all(|j| j["status"] == "accepted"), "{answer}");
    assert_eq!(gated.seen(), 2);
}

#[tokio::test]
async fn same_webhook_ten_times_delivers_once_per_destination() {
    let p = Pipeline::new(Options::default()).await;
    let sha = p.upload("repeat.csv", 31, 2 * MIB).await;
    let answers = futures_util::future::join_all((0..10).map(|_| p.notify("repeat.csv"))).await;
    let accepted = answers.iter().filter(|(s, _)| *s == 202).count();
    let duplicates = answers
        .iter()
        .filter(|(s, a)| *s == 200 && a["status"] == "duplicate")
        .count();
    assert_eq!((accepted, duplicates), (1, 9), "{answers:?}");
    let ids: std::collections::BTreeSet<_> =
        answers.iter().map(|(_, a)| job_of(a, "all")).collect();
    assert_eq!(ids.len(), 1, "every answer names the same job");
    let (job_id, job_key) = ids.into_iter().next().unwrap();
    // Ten SQS deliveries of the same job (duplicates and redeliveries happen).
    assert!(!p.copy(&job_key, 1).await);
    let mtime = std::fs::metadata(p.sftp_dir.join("repeat.csv"))
        .unwrap()
        .modified()
        .unwrap();
    futures_util::future::join_all((0..9).map(|i| p.copy(&job_key, 1 + i % 2))).await;
    assert_eq!(
        p.http_bodies("repeat.csv").await.len(),
        1,
        "one HTTP delivery"
    );
    assert_eq!(
        p.s3_versions("repeat.csv").await,
        (1, Some(sha.clone())),
        "one S3 version"
    );
    assert_eq!(
        std::fs::metadata(p.sftp_dir.join("repeat.csv"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime,
        "SFTP file not rewritten"
    );
    assert_eq!(p.receipts(&job_id).await.len(), 3);
    let jobs = p.ingest.state.list("jobs/").await.unwrap();
    assert_eq!(jobs, vec![job_key], "one job object");
}

/// method, content type, body, query, token, expected status, expected error code
type BadInput<'a> = (
    &'a str,
    Option<&'a str>,
    String,
    String,
    Option<&'a str>,
    u16,
    &'a str,
);

#[tokio::test]
async fn bad_input_gets_status_and_reason_and_writes_nothing() {
    let p = Pipeline::new(Options::default()).await;
    p.upload("present.csv", 41, 10).await;
    let c = p.container.clone();
    let json_body = |file: &str| json!({"container": c, "file": file}).to_string();
    let long = "a".repeat(1100);
    let big = "x".repeat(20_000);
    let cases: Vec<BadInput> = vec![
        (
            "POST",
            Some("application/json"),
            json_body("present.csv"),
            String::new(),
            None,
            401,
            "unauthorized",
        ),
        (
            "POST",
            Some("application/json"),
            json_body("present.csv"),
            String::new(),
            Some("wrong-token-value"),
            401,
            "unauthorized",
        ),
        (
            "DELETE",
            None,
            String::new(),
            String::new(),
            Some(TOKEN),
            405,
            "method_not_allowed",
        ),
        (
            "PATCH",
            Some("application/json"),
            json_body("present.csv"),
            String::new(),
            Some(TOKEN),
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            Some("application/json"),
            big.clone(),
            String::new(),
            Some(TOKEN),
            413,
            "body_too_large",
        ),
        (
            "POST",
            Some("text/plain"),
            "container=x".into(),
            String::new(),
            Some(TOKEN),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            None,
            "container=x".into(),
            String::new(),
            Some(TOKEN),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            Some("application/json"),
            "{not json".into(),
            String::new(),
            Some(TOKEN),
            400,
            "bad_json",
        ),
        (
            "POST",
            Some("application/json"),
            json!({"container": c}).to_string(),
            String::new(),
            Some(TOKEN),
            400,
            "missing_field",
        ),
        (
            "POST",
            Some("application/json"),
            json!({"container": "", "file": "a"}).to_string(),
            String::new(),
            Some(TOKEN),
            400,
            "missing_field",
        ),
        (
            "PUT",
            Some("application/x-www-form-urlencoded"),
            format!("container={c}&file="),
            String::new(),
            Some(TOKEN),
            400,
            "missing_field",
        ),
        (
            "GET",
            None,
            String::new(),
            format!("container={c}"),
            Some(TOKEN),
            400,
            "missing_field",
        ),
        (
            "POST",
            Some("application/json"),
            json_body("../../etc/passwd"),
            String::new(),
            Some(TOKEN),
            400,
            "invalid_name",
        ),
        (
            "POST",
            Some("application/json"),
            json_body("/etc/passwd"),
            String::new(),
            Some(TOKEN),
            400,
            "invalid_name",
        ),
        (
            "POST",
            Some("application/json"),
            json_body("dir\\file.csv"),
            String::new(),
            Some(TOKEN),
            400,
            "invalid_name",
        ),
        (
            "POST",
            Some("application/json"),
            json_body("bad\u{0007}name.csv"),
            String::new(),
            Some(TOKEN),
            400,
            "invalid_name",
        ),
        (
            "POST",
            Some("application/json"),
            json_body("invoice\u{202E}piz.exe"),
            String::new(),
            Some(TOKEN),
            400,
            "invalid_name",
        ),
        (
            "POST",
            Some("application/json"),
            json_body("present\u{200B}.csv"),
            String::new(),
            Some(TOKEN),
            400,
            "invalid_name",
        ),
        (
            "POST",
            Some("application/json"),
            json_body(" \n "),
            String::new(),
            Some(TOKEN),
            400,
            "invalid_name",
        ),
        (
            "POST",
            Some("application/json"),
            json_body("   "),
            String::new(),
            Some(TOKEN),
            400,
            "invalid_name",
        ),
        (
            "POST",
            Some("application/json"),
            json_body(&long),
            String::new(),
            Some(TOKEN),
            400,
            "invalid_name",
        ),
        (
            "POST",
            Some("application/json"),
            json!({"container": "Bad_Container", "file": "a.csv"}).to_string(),
            String::new(),
            Some(TOKEN),
            400,
            "invalid_name",
        ),
        (
            "POST",
            Some("application/json"),
            json!({"container": "unknown-container", "file": "a.csv"}).to_string(),
            String::new(),
            Some(TOKEN),
            422,
            "no_route",
        ),
        (
            "POST",
            Some("application/json"),
            json_body("missing.csv"),
            String::new(),
            Some(TOKEN),
            422,
            "file_not_found",
        ),
    ];
    for (method, ct, body, query, token, want, code) in &cases {
        let (status, answer) = p.webhook_call(method, *ct, body, query, *token).await;
        assert_eq!(
            (status, answer["error"].as_str().unwrap_or("")),
            (*want, *code),
            "{method} {ct:?} {query} -> {answer}"
        );
        assert!(
            answer["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "a reason is given: {answer}"
        );
        assert!(answer["correlation_id"].is_string());
        let unsafe_name = ["\u{202E}", "\u{200B}", "   "]
            .iter()
            .any(|bad| body.contains(bad) && !body.contains("etc"));
        if unsafe_name {
            assert!(
                answer["reason"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("unsafe name")),
                "an unsafe name says so: {answer}"
            );
        }
    }
    assert!(
        p.ingest.state.list("jobs/").await.unwrap().is_empty(),
        "nothing written for bad input"
    );
    // The same file through each accepted form: query token, Bearer, form body, GET query.
    let (s, a) = p
        .webhook_call(
            "GET",
            None,
            "",
            &format!("container={c}&file=present.csv&token={TOKEN}"),
            None,
        )
        .await;
    assert_eq!(s, 202, "{a}");
    let (s, _) = p
        .webhook_call(
            "PUT",
            Some("application/x-www-form-urlencoded"),
            &format!("container={c}&file=present.csv"),
            "",
            Some(TOKEN),
        )
        .await;
    assert_eq!(s, 200, "form body: duplicate of the GET");
    let logs = support::logs::text();
    assert!(
        logs.contains("\"error\":\"invalid_name\"") || logs.contains("webhook rejected"),
        "rejections are logged"
    );
    p.assert_logs_clean();
}

#[tokio::test]
async fn source_503_twice_then_200_is_delivered() {
    let azurite_port = ferry_harness::shared().azurite.port;
    let proxy = FaultProxy::start(azurite_port).await;
    let p = Pipeline::new(Options {
        source_proxy: Some(proxy),
        ..Default::default()
    })
    .await;
    let sha = p.upload("flaky.csv", 51, 100_000).await;
    let (_, answer) = p.notify("flaky.csv").await;
    let (id, key) = job_of(&answer, "all");
    let proxy = &p._proxies[0];
    proxy.plan([
        Fault::HttpStatus {
            status: 503,
            retry_after_secs: 0,
        },
        Fault::HttpStatus {
            status: 503,
            retry_after_secs: 0,
        },
    ]);
    let before = proxy.accepted();
    assert!(!p.copy(&key, 1).await);
    assert!(
        proxy.accepted() >= before + 3,
        "two refused connections and at least one good one"
    );
    let receipts = p.receipts(&id).await;
    assert_eq!(receipts.len(), 3);
    assert!(receipts.values().all(|r| r.sha256 == sha));
    p.assert_logs_clean();
}

#[tokio::test]
async fn connection_cut_mid_body_resumes_with_a_range_read() {
    let azurite_port = ferry_harness::shared().azurite.port;
    let proxy = FaultProxy::start(azurite_port).await;
    let p = Pipeline::new(Options {
        source_proxy: Some(proxy),
        ..Default::default()
    })
    .await;
    let sha = p.upload("cut.bin", 61, 24 * MIB).await;
    let (_, answer) = p.notify("cut.bin").await;
    let (id, key) = job_of(&answer, "all");
    // Cut each destination's first read part-way through the body.
    p._proxies[0].plan([
        Fault::CutResponseAfter(5 * MIB),
        Fault::CutResponseAfter(9 * MIB),
        Fault::CutResponseAfter(3 * MIB),
    ]);
    assert!(!p.copy(&key, 1).await);
    let receipts = p.receipts(&id).await;
    assert_eq!(receipts.len(), 3);
    for r in receipts.values() {
        assert_eq!((r.bytes, r.sha256.as_str()), (24 * MIB, sha.as_str()));
    }
    assert!(support::logs::text().contains("resuming with a range read"));
    p.assert_logs_clean();
}

#[tokio::test]
async fn revoked_policy_and_expired_sas_dead_letter_with_a_secret_free_reason() {
    // Stored access policy removed after the job was created.
    let p = Pipeline::new(Options::default()).await;
    p.upload("revoked.csv", 71, 1000).await;
    let (_, answer) = p.notify("revoked.csv").await;
    let (id, key) = job_of(&answer, "all");
    ferry_harness::shared()
        .azurite
        .admin()
        .remove_access_policy(&p.container, "ferry-read")
        .await
        .unwrap();
    assert!(
        !p.copy(&key, 1).await,
        "a revoked SAS will not heal by retrying: no redelivery"
    );
    let failure = p.failure(&id).await.expect("dead letter in failed/");
    assert!(!failure.retryable);
    assert!(failure.reason.contains("denied access"), "{failure:?}");
    let text = serde_json::to_string(&failure).unwrap();
    for s in p.secrets() {
        assert!(!text.contains(&s), "failed/ record leaks a secret");
    }
    assert!(p.receipts(&id).await.is_empty());
    p.assert_logs_clean();

    // An ad-hoc SAS that expires between ingest and copy.
    let p = Pipeline::new(Options {
        copy_sas_expires_in: Some(Duration::from_secs(2)),
        ..Default::default()
    })
    .await;
    p.upload("expired.csv", 72, 1000).await;
    let (status, answer) = p.notify("expired.csv").await;
    assert_eq!(status, 202, "{answer}");
    let (id, key) = job_of(&answer, "all");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!p.copy(&key, 1).await);
    let failure = p.failure(&id).await.expect("dead letter in failed/");
    assert!(failure.reason.contains("expired, revoked"), "{failure:?}");
    p.assert_logs_clean();
}

#[tokio::test]
async fn transient_destination_failure_dead_letters_after_max_attempts_and_replays() {
    let p = Pipeline::new(Options {
        http_status: Some(503),
        ..Default::default()
    })
    .await;
    let sha = p.upload("retry.csv", 81, 4000).await;
    let (_, answer) = p.notify("retry.csv").await;
    let (id, key) = job_of(&answer, "all");
    assert!(p.copy(&key, 1).await, "attempt 1: redeliver");
    assert!(p.copy(&key, 2).await, "attempt 2: redeliver");
    let receipts = p.receipts(&id).await;
    assert_eq!(
        receipts.keys().collect::<Vec<_>>(),
        vec!["s3", "sftp"],
        "healthy destinations are done"
    );
    assert!(
        !p.copy(&key, 3).await,
        "attempt 3 = max: recorded, not redelivered"
    );
    let failure = p.failure(&id).await.expect("failed/ record");
    assert!(failure.retryable && failure.attempts == 3, "{failure:?}");
    assert!(
        failure.destinations.contains_key("http") && failure.destinations.len() == 1,
        "{failure:?}"
    );
    assert!(failure.reason.contains("HTTP 503"), "{failure:?}");
    // Dead-lettered jobs are left alone until replayed.
    assert!(!p.copy(&key, 1).await);
    // The endpoint recovers; a replay delivers only what is missing.
    p.http.reset().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&p.http)
        .await;
    ferry::clear_failure(p.copy.state.as_ref(), &id)
        .await
        .unwrap();
    assert!(!p.copy(&key, 1).await);
    let receipts = p.receipts(&id).await;
    assert_eq!(receipts.len(), 3);
    assert_eq!(receipts["http"].sha256, sha);
    assert_eq!(p.http_bodies("retry.csv").await.len(), 1);
    assert_eq!(
        p.s3_versions("retry.csv").await.0,
        1,
        "S3 not written again by the replay"
    );
}

#[tokio::test]
async fn sftp_write_interrupted_mid_file_leaves_no_file_at_the_final_name() {
    let sshd_port = ferry_harness::shared().sshd.port;
    let proxy = FaultProxy::start(sshd_port).await;
    let p = Pipeline::new(Options {
        sftp_proxy: Some(proxy),
        ..Default::default()
    })
    .await;
    let sha = p.upload("interrupted.bin", 91, 16 * MIB).await;
    let (_, answer) = p.notify("interrupted.bin").await;
    let (id, key) = job_of(&answer, "all");
    // Every SFTP connection of this invocation (each try opens up to 4 for the file's writers,
    // and the first writes at least 4 of its 16 MiB) is cut after 2 MiB of upload.
    let proxy = &p._proxies[0];
    proxy.plan(std::iter::repeat_n(Fault::CutRequestAfter(2 * MIB), 64));
    assert!(p.copy(&key, 1).await, "interrupted: redeliver");
    assert!(proxy.accepted() >= 4, "{} connections", proxy.accepted());
    proxy.clear_plan();
    assert!(
        p.sftp_file("interrupted.bin").is_none(),
        "no file at the final name"
    );
    assert!(!p.receipts(&id).await.contains_key("sftp"));
    // The next delivery goes through.
    assert!(!p.copy(&key, 2).await);
    assert_eq!(
        hex::encode(Sha256::digest(p.sftp_file("interrupted.bin").unwrap())),
        sha
    );
}

#[tokio::test]
async fn function_url_event_with_base64_form_body_is_accepted() {
    use base64::Engine as _;
    let p = Pipeline::new(Options::default()).await;
    p.upload("from-lambda.csv", 101, 100).await;
    let form = format!("container={}&file=from-lambda.csv", p.container);
    // The shape a Lambda function URL delivers (API Gateway v2 payload), body base64-encoded.
    let event = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": format!("token={TOKEN}"),
        "headers": {"content-type": "application/x-www-form-urlencoded", "host": "abc.lambda-url.eu-west-1.on.aws"},
        "queryStringParameters": {"token": TOKEN},
        "requestContext": {"accountId": "anonymous", "apiId": "abc", "domainName": "abc.lambda-url.eu-west-1.on.aws",
            "domainPrefix": "abc", "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "saas"},
            "requestId": "req-7d1f", "routeKey": "$default", "stage": "$default", "time": "22/Nov/2026:05:00:00 +0000", "timeEpoch": 1795323600000u64},
        "body": base64::engine::general_purpose::STANDARD.encode(form), "isBase64Encoded": true
    });
    let request =
        lambda_http::request::from_str(&event.to_string()).expect("function URL event parses");
    let response = webhook_ingest::handle(&p.webhook, request).await.unwrap();
    let answer: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(response.status(), 202, "{answer}");
    assert_eq!(answer["jobs"].as_array().unwrap().len(), 1);
    p.assert_logs_clean();
}

#[tokio::test]
async fn name_templates_rename_on_every_destination_and_keep_the_jobs_date() {
    let p = Pipeline::new(Options {
        name_template: Some("AGENCY_{stem}_{date:%Y%m%d}.{ext}"),
        ..Options::default()
    })
    .await;
    let mut expected = Vec::new();
    for (i, (name, backdate)) in [
        ("hmis-export.zip", None),
        ("late-file.csv", Some("2026-11-28T23:59:59Z")),
    ]
    .into_iter()
    .enumerate()
    {
        let sha = p.upload(name, 40 + i as u64, 50_000).await;
        let (status, answer) = p.notify(name).await;
        assert_eq!(status, 202, "{answer}");
        let (_, key) = job_of(&answer, "all");
        let (mut job, _) = p
            .copy
            .state
            .get_json::<ferry_shared::job::TransferJob>(&key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            job.name_template.as_deref(),
            Some("AGENCY_{stem}_{date:%Y%m%d}.{ext}")
        );
        if let Some(then) = backdate {
            // A job created just before midnight and retried the next day: the name keeps the
            // day it was created (the template is rendered with the job's own time).
            job.created_at = then.to_string();
            p.copy
                .state
                .put_json(&key, &job, ferry_shared::state::PutMode::Overwrite)
                .await
                .unwrap();
        }
        let day = job.created_at[..10].replace('-', "");
        let (stem, ext) = name.rsplit_once('.').unwrap();
        let rendered = format!("AGENCY_{stem}_{day}.{ext}");
        assert!(!p.copy(&key, 1).await, "{name} delivered");
        expected.push((rendered, sha));
    }
    assert!(expected[1].0.contains("20261128"), "{expected:?}");
    for (rendered, sha) in &expected {
        let sftp = p
            .sftp_file(rendered)
            .unwrap_or_else(|| panic!("SFTP has {rendered}"));
        assert_eq!(&hex::encode(Sha256::digest(&sftp)), sha);
        assert_eq!(
            p.s3_versions(rendered).await,
            (1, Some(sha.clone())),
            "S3 {rendered}"
        );
        let bodies = p.http_bodies(rendered).await;
        assert_eq!(bodies.len(), 1, "HTTP {rendered}");
        assert_eq!(&hex::encode(Sha256::digest(&bodies[0])), sha);
    }
    // An unsafe template never loads.
    let mut config = p.copy_config.clone();
    config["routes"][0]["name_template"] = "../{name}".into();
    let e = ferry_shared::config::Config::from_json(&config.to_string())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("can render an unsafe name") && e.contains("route \"all\""),
        "{e}"
    );
}

#[tokio::test]
async fn delete_after_delivery_waits_for_every_receipt_and_records_it() {
    let p = Pipeline::new(Options {
        after_delivery: Some("delete"),
        source_permissions: Some("rld"),
        http_status: Some(503),
        ..Options::default()
    })
    .await;
    let admin = ferry_harness::shared().azurite.admin();
    let name = "delete-me.csv";
    let sha = p.upload(name, 61, 80_000).await;
    let (status, answer) = p.notify(name).await;
    assert_eq!(status, 202, "{answer}");
    let (job_id, key) = job_of(&answer, "all");
    // The HTTP destination fails: two receipts of three, and the file stays.
    assert!(p.copy(&key, 1).await, "redelivery requested");
    assert_eq!(p.receipts(&job_id).await.len(), 2);
    assert!(
        admin.get_blob(&p.container, name).await.is_ok(),
        "kept while a destination is missing"
    );
    // The endpoint recovers: the last receipt, then the delete.
    p.http.reset().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&p.http)
        .await;
    assert!(!p.copy(&key, 2).await);
    assert!(
        admin.get_blob(&p.container, name).await.is_err(),
        "deleted after the last receipt"
    );
    let receipts = p.receipts(&job_id).await;
    assert_eq!(receipts.len(), 3);
    for (dest, r) in &receipts {
        assert_eq!(r.sha256, sha, "{dest}");
        assert_eq!(
            r.source_action.as_ref().map(|a| a.action.as_str()),
            Some("deleted"),
            "{dest}'s receipt says what was done to the source"
        );
    }
    // A redelivery finds it all done: no error, receipts unchanged.
    assert!(!p.copy(&key, 3).await);
    assert!(p.failure(&job_id).await.is_none());
    assert_eq!(p.receipts(&job_id).await, receipts);
    p.assert_logs_clean();
}

#[tokio::test]
async fn delete_without_d_is_a_clear_dead_letter_and_the_file_stays() {
    let p = Pipeline::new(Options {
        after_delivery: Some("delete"),
        ..Options::default()
    })
    .await;
    let name = "keep-me.csv";
    p.upload(name, 62, 10_000).await;
    let (_, answer) = p.notify(name).await;
    let (job_id, key) = job_of(&answer, "all");
    assert!(
        !p.copy(&key, 1).await,
        "not retried: it cannot succeed without a new SAS"
    );
    assert_eq!(
        p.receipts(&job_id).await.len(),
        3,
        "every destination delivered"
    );
    let failure = p.failure(&job_id).await.expect("a dead letter");
    assert!(
        failure.reason.contains("`d` (delete) permission"),
        "{}",
        failure.reason
    );
    assert!(
        failure.reason.contains("AuthorizationPermissionMismatch"),
        "Azurite's refusal: {}",
        failure.reason
    );
    let admin = ferry_harness::shared().azurite.admin();
    assert!(
        admin.get_blob(&p.container, name).await.is_ok(),
        "the file stays"
    );
    for r in p.receipts(&job_id).await.values() {
        assert!(r.source_action.is_none());
    }
}
