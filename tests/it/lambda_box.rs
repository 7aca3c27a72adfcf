//! Lambda in a box (issue 15, item 5): ferry runs as deployed.
//!
//! `terraform apply` of `infra/examples/complete` against a private moto, with packages holding
//! the functions' real bootstraps (built here with the dev profile); then every deployed
//! function's bootstrap runs under the in-repo Lambda Runtime API emulator
//! (`ferry_harness::LambdaFunction`) with the environment Terraform gave it (read back with
//! `GetFunctionConfiguration`) and its role's STS credentials, while moto enforces IAM
//! (design.md 6e). Real events drive it: a function URL webhook, the SQS message the bucket
//! notification put on the jobs queue, the schedules' inputs, against Azurite, sshd, a mock HTTP
//! receiver, a mock view and the pub/sub fakes. Then the negatives: one S3 grant removed from a
//! role makes the same function fail naming what it was denied, and each function resolved only
//! secrets its role grants (moto cannot scope secret grants, so the test compares the ARNs a
//! function logs as resolved with the `function_secret_arns` Terraform output).
//!
//! Where `terraform` or the provider mirror is missing, `build.rs` leaves `cfg(ferry_terraform)`
//! unset and the deploy test is reported as ignored with the reason, never as passed.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use ferry_harness::{AccessKey, FunctionSpec, LambdaFunction, MotoApi};
use serde_json::{Value, json};
use support::bootstrap::FUNCTIONS;
use support::pubsub::{Aad, ServiceBus, TokenService};
use support::terraform::{Terraform, copy_infra};
use support::view::{MockView, ON_BEHALF_OF};
use wiremock::matchers::{header, method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Name prefix of the deployment.
const NAME: &str = "ferrybox";
/// moto's fixed account id.
const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

const TOKEN: &str = "box-webhook-token-3c9e1f0a77d2";
const HTTP_AUTH: &str = "Bearer box-http-dest-8d1e2b";
const VIEW_PASSWORD: &str = "box-view-password-51f0";
const CLIENT_ID: &str = "box-export-client";
const CLIENT_SECRET: &str = "box-aad-client-secret-Zq81~x";
const INTEGRATION: &str = "ferry-box-export";
const SB_KEY: &str = "sbkey-box-Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA=";
const ITEMS: &str = "Gateway.ItemChanges";

/// The source, destinations, view and sink names of the deployed config.
const SOURCE: &str = "clienttrack";
const PUBSUB: &str = "egretail";
const S3_DEST: &str = "archive";
const SFTP_DEST: &str = "partner";
const HTTP_DEST: &str = "receiver";
const VIEW: &str = "cases";
const SINK: &str = "lake";

/// Prints a line that shows even when the test passes.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "[lambda box] {line}");
}

/// Notes a step's duration now (visible even when a later step fails) and keeps it for the summary.
fn record(timings: &mut Vec<(String, Duration)>, what: &str, took: Duration) {
    note(&format!("{what}: {took:.2?}"));
    timings.push((what.to_string(), took));
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

/// The emulator itself, with a real bootstrap and no Terraform: an answer, a reported error, and
/// a process that exits at cold start are each told apart, with the process's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_serves_answers_errors_and_exits_of_a_real_bootstrap() {
    let bin = tokio::task::spawn_blocking(|| support::bootstrap::build()["webhook-ingest"].clone())
        .await
        .unwrap();
    let token = support::file_secret(TOKEN);
    let config = json!({
        "state": {"bucket": "unused", "endpoint": {"endpoint_url": "http://127.0.0.1:9", "force_path_style": true}},
        "webhook": {"token": token},
    });
    let spec = |env: BTreeMap<String, String>| FunctionSpec {
        name: "box-emulator".into(),
        bootstrap: bin.clone(),
        environment: env,
        credentials: None,
        memory_mb: 128,
        region: REGION.into(),
        account: ACCOUNT.into(),
    };
    let f = LambdaFunction::start(spec(
        [("FERRY_CONFIG".to_string(), config.to_string())].into(),
    ))
    .await
    .unwrap();
    // An answer: the wrong token is a 401 response, not an invocation error.
    let answer = f
        .invoke(
            &function_url_event("{}", "not-the-token"),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer["statusCode"], json!(401), "{answer}");
    assert!(f.init_duration().is_some(), "the bootstrap polled /next");
    // A reported error: a payload that is no function URL event.
    let err = f
        .invoke(&json!({"not": "an http event"}), Duration::from_secs(10))
        .await
        .expect_err("a payload lambda_http cannot parse is an invocation error");
    assert!(
        !err.error_type.is_empty() && !err.error_message.is_empty(),
        "{err:?}"
    );
    assert!(f.is_running(), "an invocation error leaves the runtime up");
    // The runtime still serves the next invocation.
    let again = f
        .invoke(
            &function_url_event("{}", "still-wrong"),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again["statusCode"], json!(401));
    // A cold start that fails: the process exits before it polls (no FERRY_CONFIG).
    let dead = LambdaFunction::start(spec(BTreeMap::new())).await.unwrap();
    let err = dead
        .invoke(&function_url_event("{}", TOKEN), Duration::from_secs(10))
        .await
        .expect_err("without FERRY_CONFIG the cold start fails");
    assert_eq!(err.error_type, "Runtime.ExitError", "{err}");
    assert!(
        err.output.contains("Error"),
        "the error carries the process's last output: {err}"
    );
    assert!(dead.init_duration().is_none(), "it never polled /next");
}

/// The moto helpers against a private moto: role credentials obtained before IAM enforcement
/// stay valid after it and are evaluated per S3 prefix; the admin user's signed requests (IAM,
/// SQS) are accepted; the dummy keys are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_helpers_work_before_and_after_iam_enforcement() {
    let moto = tokio::task::spawn_blocking(ferry_harness::Moto::start)
        .await
        .unwrap()
        .expect("moto");
    let api = MotoApi::new(&moto.endpoint);
    moto.create_bucket("box-probe").await.unwrap();
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    .to_string();
    api.query(
        "iam",
        &[
            ("Action", "CreateRole"),
            ("Version", "2010-05-08"),
            ("RoleName", "box-probe"),
            ("AssumeRolePolicyDocument", &trust),
        ],
    )
    .await
    .unwrap();
    let grant = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::box-probe/jobs/*"}]});
    api.put_role_policy("box-probe", "ferry", &grant)
        .await
        .unwrap();
    let role = api
        .assume_role(&format!("arn:aws:iam::{ACCOUNT}:role/box-probe"), "probe")
        .await
        .unwrap();
    let admin_key = api.create_admin_user("box-probe-admin").await.unwrap();
    let queue = api
        .json(
            "sqs",
            "AmazonSQS.CreateQueue",
            &json!({"QueueName": "box-probe"}),
        )
        .await
        .unwrap()["QueueUrl"]
        .as_str()
        .unwrap()
        .to_string();
    api.enforce_iam().await.unwrap();

    let admin = api.signed(admin_key.clone());
    assert_eq!(
        admin.get_role_policy("box-probe", "ferry").await.unwrap(),
        grant,
        "signed IAM query accepted"
    );
    assert!(admin.receive_messages(&queue, 0).await.unwrap().is_empty());
    let refused = api
        .queue_attributes(&queue)
        .await
        .expect_err("dummy keys refused");
    assert!(
        refused.to_string().contains("InvalidClientTokenId"),
        "{refused}"
    );

    let role_s3 = admin_s3(&moto.endpoint, &role);
    role_s3
        .put_object()
        .bucket("box-probe")
        .key("jobs/a.json")
        .body(b"{}".to_vec().into())
        .send()
        .await
        .expect("the role may put under jobs/");
    let denied = role_s3
        .put_object()
        .bucket("box-probe")
        .key("done/a.json")
        .body(b"{}".to_vec().into())
        .send()
        .await
        .expect_err("the role may not put under done/");
    assert_eq!(
        denied.raw_response().map(|r| r.status().as_u16()),
        Some(403),
        "{denied:?}"
    );
    // A policy changed after the credentials were issued applies at once.
    admin
        .put_role_policy(
            "box-probe",
            "ferry",
            &without_grant(&grant, "s3:PutObject", "arn:aws:s3:::box-probe/jobs/*"),
        )
        .await
        .unwrap();
    assert!(
        role_s3
            .put_object()
            .bucket("box-probe")
            .key("jobs/b.json")
            .body(b"{}".to_vec().into())
            .send()
            .await
            .is_err(),
        "the grant removed after AssumeRole is no longer honoured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(
    not(ferry_terraform),
    ignore = "terraform or its AWS provider mirror not found on this machine"
)]
async fn deployed_functions_run_with_their_own_roles() {
    let started = Instant::now();
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let work = tempfile::tempdir().unwrap();

    // Components, fakes and the bootstraps, in parallel where they block.
    let t = Instant::now();
    let packages = {
        let dir = work.path().to_path_buf();
        tokio::task::spawn_blocking(move || support::bootstrap::package_all(&dir))
    };
    let servers = tokio::task::spawn_blocking(|| {
        std::thread::scope(|s| {
            let moto = s.spawn(ferry_harness::Moto::start);
            let azurite = s.spawn(ferry_harness::Azurite::start);
            let sshd = s.spawn(ferry_harness::Sshd::start);
            (
                moto.join().unwrap().expect("moto"),
                azurite.join().unwrap().expect("azurite"),
                sshd.join().unwrap().expect("sshd"),
            )
        })
    });
    let fakes = Fakes::start().await;
    let (moto, azurite, sshd) = servers.await.unwrap();
    let packages = packages.await.unwrap();
    record(
        &mut timings,
        "build + package + start components",
        t.elapsed(),
    );

    let env = Env::prepare(&moto, &azurite, &sshd, &fakes).await;
    let api = MotoApi::new(&moto.endpoint);
    let vars = env.tfvars(&moto.endpoint, &packages);

    // terraform apply.
    let infra = copy_infra(work.path());
    let example = infra.join("examples/complete");
    std::fs::write(example.join("box.auto.tfvars.json"), vars.to_string()).unwrap();
    let t = Instant::now();
    let outputs: Value = tokio::task::spawn_blocking(move || {
        let tf = Terraform::new();
        let env = tf.with_moto_env();
        tf.ok_env(&example, &["init", "-input=false", "-no-color"], &env);
        tf.ok_env(
            &example,
            &[
                "apply",
                "-auto-approve",
                "-input=false",
                "-no-color",
                "-parallelism=20",
            ],
            &env,
        );
        serde_json::from_str(&tf.ok_env(&example, &["output", "-json"], &env)).unwrap()
    })
    .await
    .unwrap();
    record(&mut timings, "terraform init + apply", t.elapsed());
    let deployed = Deployed::from_outputs(&outputs);

    // Set-up while IAM enforcement is off: secret values, the functions' configurations and role
    // credentials, the test's own admin user.
    let t = Instant::now();
    let values = env.secret_values();
    for (purpose, arn) in &deployed.secret_arns {
        let value = values
            .get(purpose.as_str())
            .unwrap_or_else(|| panic!("no value for secret {purpose}"));
        api.put_secret_value(arn, value).await.unwrap();
    }
    let mut specs = BTreeMap::new();
    for (f, name) in &deployed.function_names {
        let cfg = api.function_configuration(name).await.unwrap();
        assert_eq!(
            cfg["Role"].as_str(),
            deployed.role_arns.get(f).map(String::as_str),
            "{f} runs with its own role"
        );
        let zip = std::fs::read(&packages[f]).unwrap();
        assert_eq!(
            cfg["CodeSha256"].as_str(),
            Some(base64_sha256(&zip).as_str()),
            "{f}: moto holds the package this test runs"
        );
        let environment: BTreeMap<String, String> =
            serde_json::from_value(cfg["Environment"]["Variables"].clone()).unwrap();
        let key = api
            .assume_role(&deployed.role_arns[f], &format!("box-{f}"))
            .await
            .unwrap();
        specs.insert(
            f.clone(),
            FunctionSpec {
                name: name.clone(),
                bootstrap: support::bootstrap::build()[f].clone(),
                environment,
                credentials: Some(key),
                memory_mb: cfg["MemorySize"].as_u64().unwrap_or(128),
                region: REGION.into(),
                account: ACCOUNT.into(),
            },
        );
    }
    // moto cannot scope Secrets Manager grants to an ARN: it refuses GetSecretValue under any
    // policy whose Resource is not `*` (design.md 6e). So each role also gets this second inline
    // policy, test set-up only; which secrets each function actually resolved is checked against
    // its grants from the logs at the end (`secrets_resolved_are_granted`).
    for role in deployed.role_names.values() {
        api.put_role_policy(
            role,
            "moto-secrets-workaround",
            &json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]}),
        )
        .await
        .unwrap();
    }
    // moto applies bucket policies without their conditions, so the state bucket's TLS-only Deny
    // (real S3 applies it to plain-HTTP requests only) would deny every request to moto's
    // plain-HTTP endpoint; tests/terraform.rs asserts that policy. Remove it from moto.
    api.delete_bucket_policy(&deployed.state_bucket)
        .await
        .unwrap();
    let admin_key = api.create_admin_user("box-admin").await.unwrap();
    api.enforce_iam().await.unwrap();
    let admin = api.signed(admin_key.clone());
    let s3 = admin_s3(&moto.endpoint, &admin_key);
    record(
        &mut timings,
        "set-up (secrets, roles, enforcement)",
        t.elapsed(),
    );

    let mut sandboxes = Sandboxes {
        specs,
        running: BTreeMap::new(),
        timings,
    };

    // token-refresh: the schedule's input.
    let out = sandboxes.invoke("token-refresh", &json!({})).await;
    note(&format!("token-refresh answered {out}"));
    let tokens = support::sinks::s3_keys(&s3, &deployed.state_bucket, "tokens/").await;
    assert!(!tokens.is_empty(), "token-refresh stored tokens");
    assert!(fakes.token_service.calls() >= 1 && fakes.aad.calls() >= 1);

    // export-pull: one message on the subscription becomes one job.
    let pubsub_blob = "items-0001.jsonl";
    let pubsub_bytes = support::data::bytes(7, 300_000);
    env.upload(&azurite, &env.pubsub_container, pubsub_blob, &pubsub_bytes)
        .await;
    fakes.bus.send(
        json!({"blobType": ITEMS, "correlationId": "box-corr-1", "contentType": "application/x-jsonlines",
               "contentEncoding": "", "uri": format!("{}/{pubsub_blob}", env.pubsub_base), "properties": {}})
        .to_string(),
    );
    let out = sandboxes.invoke("export-pull", &json!({})).await;
    note(&format!("export-pull answered {out}"));
    assert_eq!(fakes.bus.outstanding(), 0, "the message was completed");
    let pubsub_jobs = support::sinks::s3_keys(&s3, &deployed.state_bucket, "jobs/items/").await;
    assert_eq!(
        pubsub_jobs.len(),
        1,
        "one job for one message: {pubsub_jobs:?}"
    );

    // webhook-ingest: a function URL request.
    let blob = "HMIS_export_2026-11-29.zip";
    let bytes = support::data::bytes(3, 2 * 1024 * 1024 + 17);
    env.upload(&azurite, &env.container, blob, &bytes).await;
    let body = json!({"container": env.container, "file": blob}).to_string();
    let answer = sandboxes
        .invoke("webhook-ingest", &function_url_event(&body, TOKEN))
        .await;
    let status = answer["statusCode"].as_u64().unwrap_or_default();
    assert!((200..300).contains(&status), "webhook answered {answer}");
    let jobs = support::sinks::s3_keys(&s3, &deployed.state_bucket, "jobs/hmis/").await;
    assert_eq!(jobs.len(), 1, "one job written: {jobs:?}");

    // reconcile: a file whose webhook never came, found by the scheduled sweep (List Blobs with
    // the source's SAS) and turned into the job the webhook would have written; the file the
    // webhook announced is already known.
    let missed = "HMIS_export_2026-11-28.zip";
    let missed_bytes = support::data::bytes(5, 70_000);
    env.upload(&azurite, &env.container, missed, &missed_bytes)
        .await;
    let out = sandboxes.invoke("reconcile", &json!({})).await;
    note(&format!("reconcile answered {out}"));
    let hmis = out["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["route"] == "hmis"))
        .unwrap_or_else(|| panic!("a summary for route hmis: {out}"));
    assert_eq!(
        (hmis["created"].as_u64(), hmis["already_known"].as_u64()),
        (Some(1), Some(1)),
        "the missed file got a job, the announced one was known: {out}"
    );
    let jobs = support::sinks::s3_keys(&s3, &deployed.state_bucket, "jobs/hmis/").await;
    assert_eq!(jobs.len(), 2, "the webhook's job and the sweep's: {jobs:?}");

    // blob-copy: the messages the bucket notification put on the jobs queue, as Lambda's SQS
    // poller would hand them over.
    let messages = receive_jobs(&admin, &deployed.jobs_queue_url, 3).await;
    for m in &messages {
        let event = sqs_event(m, &deployed.jobs_queue_arn());
        let out = sandboxes.invoke("blob-copy", &event).await;
        assert_eq!(
            out["batchItemFailures"],
            json!([]),
            "blob-copy delivered {}: {out}",
            m["Body"]
        );
    }
    assert_eq!(
        std::fs::read(env.sftp_dir.join(missed)).ok().as_deref(),
        Some(&missed_bytes[..]),
        "the file whose webhook never came reached SFTP"
    );
    // The webhook file, byte-identical at each destination, with receipts.
    let sftp_file = env.sftp_dir.join(blob);
    assert_eq!(
        std::fs::read(&sftp_file).ok().as_deref(),
        Some(&bytes[..]),
        "SFTP holds the file"
    );
    let object = s3
        .get_object()
        .bucket(&env.archive_bucket)
        .key(format!("clienttrack/{blob}"))
        .send()
        .await
        .expect("the S3 destination holds the file");
    assert_eq!(object.body.collect().await.unwrap().into_bytes(), bytes[..]);
    let received = fakes.receiver.received_requests().await.unwrap_or_default();
    assert!(
        received
            .iter()
            .any(|r| r.url.path().ends_with(blob) && r.body == bytes),
        "the HTTP receiver got the file with the secret header ({} requests)",
        received.len()
    );
    let receipts = support::sinks::s3_keys(&s3, &deployed.state_bucket, "done/").await;
    for dest in [S3_DEST, SFTP_DEST, HTTP_DEST] {
        assert!(
            receipts
                .iter()
                .any(|k| k.ends_with(&format!("/{dest}.json"))),
            "receipt for {dest}: {receipts:?}"
        );
    }
    // The pub/sub file reached its destination too.
    let object = s3
        .get_object()
        .bucket(&env.archive_bucket)
        .key(format!("clienttrack/items/{pubsub_blob}"))
        .send()
        .await;
    assert!(
        object.is_ok(),
        "the pub/sub job's file is in the archive: {:?}",
        support::sinks::s3_keys(&s3, &env.archive_bucket, "").await
    );

    // view-sync: the schedule's input.
    fakes.view.push(support::view::records(1, 5));
    let out = sandboxes.invoke("view-sync", &json!({"views": []})).await;
    note(&format!("view-sync answered {out}"));
    let watermarks = support::sinks::s3_keys(&s3, &deployed.state_bucket, "watermarks/").await;
    assert!(!watermarks.is_empty(), "view-sync saved a watermark");
    let written = support::sinks::s3_keys(&s3, &env.sink_bucket, "views/").await;
    assert!(!written.is_empty(), "view-sync wrote to the s3_jsonl sink");

    // Secrets: each function resolved only what its role grants, and what it needed. Checked
    // before the negatives below restart functions.
    let logs: BTreeMap<String, Vec<Value>> = sandboxes
        .running
        .iter()
        .map(|(f, l)| (f.clone(), l.json_logs()))
        .collect();
    let outputs_text: String = sandboxes
        .running
        .values()
        .flat_map(|l| l.output_lines())
        .collect::<Vec<_>>()
        .join("\n");
    for (purpose, value) in &values {
        assert!(
            !outputs_text.contains(value),
            "the value of secret {purpose} appears in a function's output"
        );
    }
    secrets_resolved_are_granted(&deployed, &logs);

    // Metrics: each function printed EMF lines named by its deployed function name (Lambda's
    // AWS_LAMBDA_FUNCTION_NAME), with one cold start; blob-copy's bytes to SFTP on route hmis
    // are the two files it delivered there (the webhook's and the missed one).
    for (f, lines) in &logs {
        let emf: Vec<&Value> = lines.iter().filter(|l| l.get("_aws").is_some()).collect();
        let name = &deployed.function_names[f];
        assert!(
            !emf.is_empty() && emf.iter().all(|l| l["Function"] == json!(name)),
            "{f} printed EMF lines for {name}: {emf:?}"
        );
        let cold: f64 = emf.iter().filter_map(|l| l["ColdStart"].as_f64()).sum();
        assert_eq!(cold, 1.0, "one cold start of {f}");
    }
    let sftp_bytes: f64 = logs["blob-copy"]
        .iter()
        .filter(|l| l["Route"] == "hmis" && l["Destination"] == SFTP_DEST)
        .filter_map(|l| l["BytesDelivered"].as_f64())
        .sum();
    assert_eq!(sftp_bytes, (bytes.len() + missed_bytes.len()) as f64);

    // Negatives: the same function with one S3 grant removed fails, naming what was denied.
    let t = Instant::now();
    let role = &deployed.role_names["view-sync"];
    let policy = admin.get_role_policy(role, "ferry").await.unwrap();
    let reduced = without_grant(
        &policy,
        "s3:PutObject",
        &format!("arn:aws:s3:::{}/watermarks/*", deployed.state_bucket),
    );
    assert_ne!(
        policy, reduced,
        "view-sync's policy grants watermarks/ puts"
    );
    admin
        .put_role_policy(role, "ferry", &reduced)
        .await
        .unwrap();
    fakes.view.push(support::view::records(6, 2));
    sandboxes.restart("view-sync");
    let err = sandboxes
        .try_invoke("view-sync", &json!({"views": []}))
        .await
        .expect_err("view-sync cannot save its watermark without the grant");
    note(&format!("view-sync without watermarks/ put: {err}"));
    assert_denied_naming(&err.to_string(), "watermarks/");

    let role = &deployed.role_names["blob-copy"];
    let policy = admin.get_role_policy(role, "ferry").await.unwrap();
    let reduced = without_grant(
        &policy,
        "s3:PutObject",
        &format!("arn:aws:s3:::{}/done/*", deployed.state_bucket),
    );
    assert_ne!(policy, reduced, "blob-copy's policy grants done/ puts");
    admin
        .put_role_policy(role, "ferry", &reduced)
        .await
        .unwrap();
    let blob2 = "HMIS_export_2026-11-30.zip";
    env.upload(&azurite, &env.container, blob2, &bytes[..1000])
        .await;
    let body = json!({"container": env.container, "file": blob2}).to_string();
    sandboxes
        .invoke("webhook-ingest", &function_url_event(&body, TOKEN))
        .await;
    let messages = receive_jobs(&admin, &deployed.jobs_queue_url, 1).await;
    sandboxes.restart("blob-copy");
    let out = sandboxes
        .try_invoke(
            "blob-copy",
            &sqs_event(&messages[0], &deployed.jobs_queue_arn()),
        )
        .await;
    let lines = sandboxes.running["blob-copy"].output_lines().join("\n");
    note(&format!(
        "blob-copy without done/ put answered {out:?}; its log mentions AccessDenied: {}",
        lines.contains("AccessDenied")
    ));
    // A refused receipt write cannot heal by retrying: the job is dead-lettered under failed/
    // (which blob-copy may still write) with a reason naming the key, and the message is done.
    let v = out.expect("blob-copy answers; the job is dead-lettered, not the invocation failed");
    assert_eq!(v["batchItemFailures"], json!([]), "{v}");
    let failed = support::sinks::s3_keys(&s3, &deployed.state_bucket, "failed/").await;
    assert_eq!(failed.len(), 1, "one dead letter: {failed:?}");
    let dead = s3
        .get_object()
        .bucket(&deployed.state_bucket)
        .key(&failed[0])
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let dead: Value = serde_json::from_slice(&dead).unwrap();
    let reason = dead["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("cannot succeed without intervention"),
        "{dead}"
    );
    assert_denied_naming(reason, "done/");
    assert_denied_naming(&lines, "done/");
    record(
        &mut sandboxes.timings,
        "negatives (two restarts)",
        t.elapsed(),
    );

    let timings = std::mem::take(&mut sandboxes.timings);
    drop(sandboxes);
    let summary: Vec<String> = timings
        .iter()
        .map(|(what, d)| format!("{what} {d:.1?}"))
        .collect();
    note(&format!(
        "total {:.0?}: {}",
        started.elapsed(),
        summary.join("; ")
    ));
    // moto, Azurite and sshd are private to this test and die with their handles: no destroy.
}

// ------------------------------------------------------------------------------------------------
// The running functions
// ------------------------------------------------------------------------------------------------

/// The deployed functions' sandboxes, started on first use (a cold start each).
struct Sandboxes {
    specs: BTreeMap<String, FunctionSpec>,
    running: BTreeMap<String, LambdaFunction>,
    timings: Vec<(String, Duration)>,
}

impl Sandboxes {
    async fn function(&mut self, f: &str) -> &LambdaFunction {
        if !self.running.contains_key(f) {
            let spec = self
                .specs
                .get(f)
                .unwrap_or_else(|| panic!("{f} was not deployed"))
                .clone();
            let l = LambdaFunction::start(spec).await.unwrap();
            self.running.insert(f.to_string(), l);
        }
        &self.running[f]
    }

    /// Stops the sandbox of `f`: its next invocation is a new cold start (same role credentials).
    fn restart(&mut self, f: &str) {
        if let Some(old) = self.running.remove(f) {
            old.kill();
        }
    }

    async fn try_invoke(
        &mut self,
        f: &str,
        payload: &Value,
    ) -> Result<Value, ferry_harness::FunctionError> {
        let timeout = Duration::from_secs(60);
        let cold = !self.running.contains_key(f);
        let t = Instant::now();
        let l = self.function(f).await;
        let result = l.invoke(payload, timeout).await;
        let what = match (cold, l.init_duration()) {
            (true, Some(init)) => format!("{f}: cold start (init {init:.2?}) + invocation"),
            (true, None) => format!("{f}: cold start (never ready) + invocation"),
            (false, _) => format!("{f}: warm invocation"),
        };
        record(&mut self.timings, &what, t.elapsed());
        result
    }

    async fn invoke(&mut self, f: &str, payload: &Value) -> Value {
        match self.try_invoke(f, payload).await {
            Ok(v) => v,
            Err(e) => panic!("{f} failed under its own role: {e}"),
        }
    }
}

/// SQS messages from the jobs queue, waiting up to 20 s until `n` of them are job notifications
/// (`ObjectCreated`). Others that arrive, e.g. the `s3:TestEvent` S3 sends when the notification
/// is configured, are returned too: Lambda's poller hands those to blob-copy as well.
async fn receive_jobs(admin: &MotoApi, queue_url: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    let jobs = |got: &[Value]| {
        got.iter()
            .filter(|m| {
                m["Body"]
                    .as_str()
                    .is_some_and(|b| b.contains("ObjectCreated"))
            })
            .count()
    };
    while jobs(&got) < n && Instant::now() < deadline {
        got.extend(admin.receive_messages(queue_url, 1).await.unwrap());
    }
    assert_eq!(
        jobs(&got),
        n,
        "job notifications on the jobs queue: {got:?}"
    );
    got
}

/// The SQS event Lambda's poller hands blob-copy for one received message.
fn sqs_event(m: &Value, queue_arn: &str) -> Value {
    let mut attributes = m["Attributes"].clone();
    if attributes.get("ApproximateReceiveCount").is_none() {
        attributes["ApproximateReceiveCount"] = json!("1");
    }
    json!({"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": attributes, "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": REGION
    }]})
}

/// A Lambda function URL event (API Gateway v2 payload) carrying a webhook POST.
fn function_url_event(body: &str, token: &str) -> Value {
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
        "headers": {"content-type": "application/json", "x-ferry-token": token,
                    "host": "box.lambda-url.us-east-1.on.aws"},
        "requestContext": {"accountId": "anonymous", "apiId": "box", "domainName": "box.lambda-url.us-east-1.on.aws",
            "domainPrefix": "box", "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1", "userAgent": "lambda-box"},
            "requestId": "box-1", "routeKey": "$default", "stage": "$default",
            "time": "29/Nov/2026:00:00:00 +0000", "timeEpoch": 0},
        "body": body, "isBase64Encoded": false
    })
}

// ------------------------------------------------------------------------------------------------
// The deployment
// ------------------------------------------------------------------------------------------------

/// The fakes the functions talk to besides Azurite, sshd and moto.
struct Fakes {
    receiver: MockServer,
    view: MockView,
    aad: Aad,
    token_service: TokenService,
    bus: ServiceBus,
}

impl Fakes {
    async fn start() -> Self {
        let receiver = MockServer::start().await;
        Mock::given(method("PUT"))
            .and(path_regex("^/files/"))
            .and(header("authorization", HTTP_AUTH))
            .respond_with(ResponseTemplate::new(201))
            .mount(&receiver)
            .await;
        let aad = Aad::start(CLIENT_ID, Some(CLIENT_SECRET)).await;
        let token_service = TokenService::start(&aad, INTEGRATION).await;
        Self {
            receiver,
            view: MockView::start(VIEW_PASSWORD).await,
            token_service,
            aad,
            bus: ServiceBus::start("listen", SB_KEY, Duration::from_secs(30)).await,
        }
    }
}

/// Containers, buckets and folders of one deployment.
struct Env {
    account_url: String,
    container: String,
    sas: String,
    pubsub_container: String,
    pubsub_base: String,
    archive_bucket: String,
    sink_bucket: String,
    sftp_dir: PathBuf,
    sftp_key: String,
    sshd_port: u16,
    sshd_user: String,
    sshd_host_key: String,
    tenant_service_url: String,
    aad_url: String,
    aad_tenant: String,
    view_url: String,
    view_user: String,
    receiver_url: String,
}

impl Env {
    async fn prepare(
        moto: &ferry_harness::Moto,
        azurite: &ferry_harness::Azurite,
        sshd: &ferry_harness::Sshd,
        fakes: &Fakes,
    ) -> Self {
        let admin = azurite.admin();
        let expiry = SystemTime::now() + Duration::from_secs(3600);
        let container = "exports".to_string();
        admin.create_container(&container).await.unwrap();
        admin
            .set_access_policy(&container, "ferry-read", "rl", expiry)
            .await
            .unwrap();
        let sas = admin.container_sas_for_policy(&container, "ferry-read");
        let pubsub_container = "eg-export".to_string();
        admin.create_container(&pubsub_container).await.unwrap();
        admin
            .set_access_policy(&pubsub_container, "gen-1", "rl", expiry)
            .await
            .unwrap();
        let pubsub_base = format!(
            "http://127.0.0.1:{}/devstoreaccount1/{pubsub_container}",
            azurite.port
        );
        let pubsub_sas = admin.container_sas_for_policy(&pubsub_container, "gen-1");
        fakes.token_service.answer(
            &fakes.bus.connection_string(SB_KEY),
            &fakes.bus.subscription,
            &[format!("{pubsub_base}?{pubsub_sas}")],
        );
        let (archive_bucket, sink_bucket) = ("box-archive".to_string(), "box-views".to_string());
        moto.create_bucket(&archive_bucket).await.unwrap();
        moto.create_bucket(&sink_bucket).await.unwrap();
        let sftp_dir = sshd.root.join("inbound");
        std::fs::create_dir_all(&sftp_dir).unwrap();
        Self {
            account_url: format!("http://127.0.0.1:{}/devstoreaccount1", azurite.port),
            container,
            sas,
            pubsub_container,
            pubsub_base,
            archive_bucket,
            sink_bucket,
            sftp_dir,
            sftp_key: sshd.client_key_pem.clone(),
            sshd_port: sshd.port,
            sshd_user: sshd.user.clone(),
            sshd_host_key: sshd.host_key.clone(),
            tenant_service_url: fakes.token_service.server.uri(),
            aad_url: fakes.aad.server.uri(),
            aad_tenant: fakes.aad.tenant.clone(),
            view_url: fakes.view.url(),
            view_user: fakes.view.user.clone(),
            receiver_url: fakes.receiver.uri(),
        }
    }

    async fn upload(
        &self,
        azurite: &ferry_harness::Azurite,
        container: &str,
        name: &str,
        data: &[u8],
    ) {
        azurite
            .admin()
            .put_blob(container, name, data)
            .await
            .unwrap();
    }

    /// The example's variables (/work/contract.md): every kind of source, destination and sink.
    fn tfvars(&self, moto_endpoint: &str, packages: &BTreeMap<String, PathBuf>) -> Value {
        json!({
            "aws_endpoint_url": moto_endpoint,
            "name": NAME,
            "region": REGION,
            "lambda_packages": packages,
            "state_bucket_force_destroy": true,
            "secret_recovery_window_in_days": 0,
            // moto 5.2 does not implement the SQS RedriveAllowPolicy attribute.
            "restrict_dlq_to_jobs_queue": false,
            "rust_log": "info",
            "sources": {SOURCE: {"account_url": self.account_url}},
            "pubsub_sources": {PUBSUB: {
                "tenant_service_url": self.tenant_service_url,
                "integration_name": INTEGRATION,
                "aad": {"tenant_id": self.aad_tenant, "client_id": CLIENT_ID,
                        "scope": "api://eg-tenant-service/.default", "authority_url": self.aad_url},
                "receive_timeout_secs": 2,
                "deadline_margin_secs": 1,
                "stop_when_idle": true,
                "read_timeout_secs": 5
            }},
            "s3_destinations": {S3_DEST: {"bucket": self.archive_bucket, "prefix": "clienttrack/"}},
            "sftp_destinations": {SFTP_DEST: {
                "host": "127.0.0.1", "port": self.sshd_port, "username": self.sshd_user,
                "host_key": self.sshd_host_key, "directory": self.sftp_dir
            }},
            "http_destinations": {HTTP_DEST: {
                "url": format!("{}/files/{{name}}", self.receiver_url),
                "method": "PUT",
                "secret_headers": ["Authorization"]
            }},
            "routes": [
                {"name": "hmis", "source": SOURCE, "container": self.container,
                 "destinations": [S3_DEST, SFTP_DEST, HTTP_DEST]},
                {"name": "items", "source": PUBSUB, "blob_types": [ITEMS],
                 "destinations": [S3_DEST], "target_folder": "items"}
            ],
            "views": {VIEW: {"url": self.view_url, "on_behalf_of": ON_BEHALF_OF,
                             "username": self.view_user, "sink": SINK}},
            "s3_jsonl_sinks": {SINK: {"bucket": self.sink_bucket, "prefix": "views/"}}
        })
    }

    /// Secret purpose (as in the `secret_arns` output) -> the value the test puts in.
    fn secret_values(&self) -> BTreeMap<String, String> {
        [
            ("webhook-token".to_string(), TOKEN.to_string()),
            (format!("sources/{SOURCE}/sas"), self.sas.clone()),
            (
                format!("sources/{PUBSUB}/aad-client-secret"),
                CLIENT_SECRET.to_string(),
            ),
            (
                format!("destinations/{SFTP_DEST}/private-key"),
                self.sftp_key.clone(),
            ),
            (
                format!("destinations/{HTTP_DEST}/headers/authorization"),
                HTTP_AUTH.to_string(),
            ),
            (format!("views/{VIEW}/password"), VIEW_PASSWORD.to_string()),
        ]
        .into()
    }
}

/// What Terraform reports about the deployment (`terraform output -json`).
struct Deployed {
    state_bucket: String,
    jobs_queue_url: String,
    function_names: BTreeMap<String, String>,
    role_names: BTreeMap<String, String>,
    role_arns: BTreeMap<String, String>,
    function_secret_arns: BTreeMap<String, BTreeSet<String>>,
    secret_arns: BTreeMap<String, String>,
}

impl Deployed {
    fn from_outputs(outputs: &Value) -> Self {
        let out = |k: &str| -> Value {
            let v = outputs[k]["value"].clone();
            assert!(!v.is_null(), "terraform output {k} is missing");
            v
        };
        let map = |k: &str| -> BTreeMap<String, String> {
            serde_json::from_value(out(k)).unwrap_or_else(|e| panic!("output {k}: {e}"))
        };
        let deployed = Self {
            state_bucket: out("state_bucket").as_str().unwrap().to_string(),
            jobs_queue_url: out("jobs_queue_url").as_str().unwrap().to_string(),
            function_names: map("function_names"),
            role_names: map("role_names"),
            role_arns: map("role_arns"),
            function_secret_arns: serde_json::from_value(out("function_secret_arns")).unwrap(),
            secret_arns: map("secret_arns"),
        };
        assert_eq!(
            deployed
                .function_names
                .keys()
                .map(String::as_str)
                .collect::<BTreeSet<_>>(),
            FUNCTIONS.into_iter().collect(),
            "with views and a pub/sub source configured every function is deployed"
        );
        deployed
    }

    fn jobs_queue_arn(&self) -> String {
        let name = self.jobs_queue_url.rsplit('/').next().unwrap();
        format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")
    }
}

// ------------------------------------------------------------------------------------------------
// Checks
// ------------------------------------------------------------------------------------------------

/// Each function resolved (logged `"secret resolved"` for) only secrets its role grants, and at
/// least the ones its run could not have done without.
fn secrets_resolved_are_granted(deployed: &Deployed, logs: &BTreeMap<String, Vec<Value>>) {
    let needed: BTreeMap<&str, Vec<String>> = [
        (
            "webhook-ingest",
            vec!["webhook-token".to_string(), format!("sources/{SOURCE}/sas")],
        ),
        (
            "blob-copy",
            vec![
                format!("sources/{SOURCE}/sas"),
                format!("destinations/{SFTP_DEST}/private-key"),
                format!("destinations/{HTTP_DEST}/headers/authorization"),
            ],
        ),
        ("view-sync", vec![format!("views/{VIEW}/password")]),
        (
            "token-refresh",
            vec![format!("sources/{PUBSUB}/aad-client-secret")],
        ),
        ("export-pull", vec![]),
        ("reconcile", vec![format!("sources/{SOURCE}/sas")]),
    ]
    .into();
    let mut problems = Vec::new();
    for (f, lines) in logs {
        let resolved: BTreeSet<String> = lines
            .iter()
            .filter(|l| l["message"] == "secret resolved")
            .filter_map(|l| l["secret"].as_str())
            .filter_map(|s| s.strip_prefix("secretsmanager:"))
            .map(|id| id.split('#').next().unwrap_or(id).to_string())
            .collect();
        let granted = deployed
            .function_secret_arns
            .get(f)
            .cloned()
            .unwrap_or_default();
        let outside: Vec<&String> = resolved.difference(&granted).collect();
        if !outside.is_empty() {
            problems.push(format!(
                "{f} resolved secrets its role does not grant: {outside:?}"
            ));
        }
        for purpose in needed.get(f.as_str()).into_iter().flatten() {
            let arn = &deployed.secret_arns[purpose];
            if !resolved.contains(arn) {
                problems.push(format!(
                    "{f} did not log resolving {purpose} ({arn}); resolved: {resolved:?}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The error names the denial (AccessDenied) and the state prefix it was denied on.
fn assert_denied_naming(text: &str, prefix: &str) {
    assert!(
        text.contains("AccessDenied") || text.contains("Access Denied"),
        "the error says access was denied: {text}"
    );
    assert!(
        text.contains(prefix),
        "the error names the key or prefix ({prefix}) it was denied on: {text}"
    );
}

/// `policy` without `action` on `resource` (other actions and resources of a statement stay).
fn without_grant(policy: &Value, action: &str, resource: &str) -> Value {
    let list = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        }
    };
    let statements = match &policy["Statement"] {
        Value::Array(a) => a.clone(),
        one => vec![one.clone()],
    };
    let mut out = Vec::new();
    for s in statements {
        let actions = list(&s["Action"]);
        let resources = list(&s["Resource"]);
        if !(actions.iter().any(|a| a == action) && resources.iter().any(|r| r == resource)) {
            out.push(s);
            continue;
        }
        // Split: the other resources keep every action, this resource loses `action`.
        let others: Vec<&String> = resources.iter().filter(|r| *r != resource).collect();
        if !others.is_empty() {
            let mut keep = s.clone();
            keep["Resource"] = json!(others);
            out.push(keep);
        }
        let rest: Vec<&String> = actions.iter().filter(|a| *a != action).collect();
        if !rest.is_empty() {
            let mut reduced = s.clone();
            reduced["Action"] = json!(rest);
            reduced["Resource"] = json!(resource);
            out.push(reduced);
        }
    }
    let mut p = policy.clone();
    p["Statement"] = json!(out);
    p
}

#[test]
fn without_grant_removes_exactly_one_action_on_one_resource() {
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": ["arn:b/w/*", "arn:b/l/*"]},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:b"}]});
    let reduced = without_grant(&policy, "s3:PutObject", "arn:b/w/*");
    assert_eq!(
        reduced["Statement"],
        json!([
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": ["arn:b/l/*"]},
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:b/w/*"},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:b"}])
    );
    assert_eq!(without_grant(&policy, "s3:PutObject", "arn:other"), policy);
}

// ------------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------------

/// An S3 client for moto signed with the test's admin key (moto's dummy keys are refused once IAM
/// enforcement is on).
fn admin_s3(endpoint: &str, key: &AccessKey) -> aws_sdk_s3::Client {
    let creds = aws_sdk_s3::config::Credentials::new(
        &key.access_key_id,
        &key.secret_access_key,
        key.session_token.clone(),
        None,
        "box-admin",
    );
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(creds)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Lambda's `CodeSha256`: base64 of the package's SHA-256.
fn base64_sha256(bytes: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}
