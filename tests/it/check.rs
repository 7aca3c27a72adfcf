//! `ferry check` against the real components (Azurite, sshd, moto, PostgreSQL; fakes only for
//! the view, the token service and Graph): a good config passes with exit 0, and each fault of
//! issue 11 item 2 is found with a message that says what is wrong (one test per fault), never
//! with a secret in it. Also the PostgreSQL sink's missing schema: created when the user may,
//! a clear error when not.

use crate::support;

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use ferry_shared::probe::{ProbeReport, ProbeStatus, Section};
use ferry_shared::services::Services;
use ferry_shared::sink::Chunk;
use ferry_shared::view_sync::record::Record;
use serde_json::{Value, json};
use support::graph::GraphFake;
use support::pubsub::{Aad, TokenService};
use support::view::{MockView, ON_BEHALF_OF};
use support::{file_secret, unique};
use wiremock::matchers::{header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

const HTTP_TOKEN: &str = "Bearer http-tok-5Qx81mZ";
const VIEW_PASSWORD: &str = "view-pw-Jt93kLq";
const GRAPH_CLIENT: &str = "graph-client-check";
const GRAPH_SECRET: &str = "graph-secret-W7pq2";
const AAD_CLIENT: &str = "aad-client-check";
const AAD_SECRET: &str = "aad-secret-R4nd0m";
const INTEGRATION: &str = "ferry-file-export";

/// Probe time limit in these tests (every fault here answers at once).
const TIMEOUT: Duration = Duration::from_secs(20);

/// A state bucket that exists (made once per process).
async fn state() -> Value {
    static BUCKET: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    support::aws_test_env();
    let moto = &ferry_harness::shared().moto;
    let bucket = BUCKET
        .get_or_init(|| async {
            let b = unique("check-state");
            moto.create_bucket(&b).await.unwrap();
            b
        })
        .await;
    json!({"bucket": bucket, "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}})
}

/// A config with the state bucket and the given sections (plus a local_dir destination so
/// routes have somewhere to go).
async fn config(mut sections: Value) -> Value {
    sections["state"] = state().await;
    let dir = tempfile::tempdir().unwrap().keep();
    let destinations = sections
        .as_object_mut()
        .unwrap()
        .entry("destinations")
        .or_insert_with(|| json!({}));
    destinations["disk"] = json!({"type": "local_dir", "path": dir});
    sections
}

async fn probe(config: &Value) -> Vec<ProbeReport> {
    support::services(config).await.probe_all(TIMEOUT).await
}

/// The human output of the reports, checked for the secrets of these tests.
fn output(reports: &[ProbeReport], secrets: &[&str]) -> String {
    let text = ferry::check::render(reports, false).unwrap();
    let json = ferry::check::render(reports, true).unwrap();
    for secret in secrets
        .iter()
        .chain([&HTTP_TOKEN, &VIEW_PASSWORD, &GRAPH_SECRET, &AAD_SECRET])
    {
        assert!(
            !text.contains(secret) && !json.contains(secret),
            "secret in output:\n{text}"
        );
    }
    text
}

/// The problem reported for `section` `name` (panics when it is OK).
fn problem(reports: &[ProbeReport], section: Section, name: &str) -> (String, String) {
    let report = reports
        .iter()
        .find(|r| r.section == section && r.name == name)
        .unwrap_or_else(|| panic!("no report for {name}: {reports:?}"));
    match &report.status {
        ProbeStatus::Problem { what, fix } => (what.clone(), fix.clone()),
        ProbeStatus::Ok => panic!("{name} passed: {reports:?}"),
    }
}

/// Every report but those of `except` is OK.
fn others_ok(reports: &[ProbeReport], except: &[&str]) {
    for r in reports {
        if !except.contains(&r.name.as_str()) {
            assert!(r.is_ok(), "{}", r.line());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Items

/// A container and an Azure source over it with `sas`; returns (source config, route).
async fn azure(container: &str, sas: &str) -> (Value, Value) {
    let azurite = &ferry_harness::shared().azurite;
    azurite.admin().create_container(container).await.unwrap();
    (
        json!({"type": "azure_blob", "account_url": azurite.account_url, "sas": file_secret(sas)}),
        json!({"name": format!("r-{container}"), "source": "clienttrack", "container": container, "destinations": ["disk"]}),
    )
}

fn in_an_hour() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

/// An SFTP destination on the shared sshd with a fresh upload directory.
fn sftp() -> Value {
    let sshd = &ferry_harness::shared().sshd;
    let dir = sshd.root.join(unique("upload"));
    std::fs::create_dir_all(&dir).unwrap();
    json!({"type": "sftp", "host": "127.0.0.1", "port": sshd.port, "username": sshd.user,
        "host_key": sshd.host_key, "private_key": file_secret(&sshd.client_key_pem),
        "directory": dir, "timeout_secs": 10})
}

/// A bucket on moto (created) and its S3 endpoint.
async fn bucket() -> (String, Value) {
    let moto = &ferry_harness::shared().moto;
    let b = unique("check-bucket");
    moto.create_bucket(&b).await.unwrap();
    (
        b,
        json!({"endpoint_url": moto.endpoint, "force_path_style": true}),
    )
}

/// An HTTP server that wants `Authorization: HTTP_TOKEN` (401 without) and answers HEAD
/// with 405, as an upload endpoint that takes only PUT does.
async fn http_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(header("authorization", HTTP_TOKEN))
        .respond_with(ResponseTemplate::new(405))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .respond_with(ResponseTemplate::new(401))
        .with_priority(10)
        .mount(&server)
        .await;
    server
}

/// A TCP port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn view(url: &str, sink: &str) -> Value {
    json!({"url": url, "on_behalf_of": ON_BEHALF_OF, "username": "svc-ferry",
        "password": file_secret(VIEW_PASSWORD), "sink": sink})
}

/// The pub/sub export source over the AAD and token-service fakes.
fn pubsub(aad: &Aad, service: &TokenService) -> Value {
    json!({"type": "pubsub_export", "tenant_service_url": service.server.uri(),
        "integration_name": INTEGRATION, "read_timeout_secs": 5,
        "aad": {"tenant_id": aad.tenant, "client_id": AAD_CLIENT, "scope": "api://eg/.default",
            "client_secret": file_secret(AAD_SECRET), "authority_url": aad.server.uri()}})
}

// ---------------------------------------------------------------------------------------------
// The good config

#[tokio::test]
async fn a_good_config_passes_every_item_and_exits_0() {
    let c = ferry_harness::shared();
    let container = unique("good");
    let sas = c
        .azurite
        .admin()
        .container_sas(&container, "rl", in_an_hour());
    let (source, route) = azure(&container, &sas).await;
    let (dest_bucket, endpoint) = bucket().await;
    let (lake, _) = bucket().await;
    let http = http_server().await;
    let mock_view = MockView::start(VIEW_PASSWORD).await;
    let graph = GraphFake::start(GRAPH_CLIENT, GRAPH_SECRET).await;
    let aad = Aad::start(AAD_CLIENT, Some(AAD_SECRET)).await;
    let tokens = TokenService::start(&aad, INTEGRATION).await;
    let export_sas = c
        .azurite
        .admin()
        .container_sas(&container, "r", in_an_hour());
    tokens.answer(
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=c2J0ZXN0a2V5;EntityPath=files",
        "ferry-sub",
        &[format!("{}/{container}?{export_sas}", c.azurite.account_url)],
    );
    let schema = unique("good_schema").replace('-', "_");
    let cfg = config(json!({
        "sources": {"clienttrack": source, "eg": pubsub(&aad, &tokens)},
        "destinations": {
            "partner": sftp(),
            "archive": {"type": "s3", "bucket": dest_bucket, "prefix": "in/", "endpoint": endpoint},
            "hook": {"type": "http", "url": format!("{}/in/{{name}}", http.uri()),
                "secret_headers": {"Authorization": file_secret(HTTP_TOKEN)}},
            "onedrive": graph.config(file_secret(GRAPH_SECRET), "ferry"),
        },
        "routes": [route,
            {"name": "eg-items", "source": "eg", "blob_types": ["Gateway.ItemChanges"], "destinations": ["archive"]}],
        "sinks": {
            "db": support::sinks::postgres_config(&format!("{schema}.rows")),
            "lake": {"type": "s3_jsonl", "bucket": lake, "endpoint": endpoint},
            "api": {"type": "http", "url": format!("{}/records", http.uri()),
                "secret_headers": {"Authorization": file_secret(HTTP_TOKEN)}},
        },
        "views": {"cases": view(&mock_view.url(), "db")},
    }))
    .await;
    let services = support::services(&cfg).await;
    let reports = services.probe_all(TIMEOUT).await;
    let text = output(&reports, &[&sas, &export_sas]);
    let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names.len(),
        1 + 1 + 2 + 5 + 3 + 1,
        "config, state, sources, destinations, sinks, views: {names:?}"
    );
    assert_eq!(reports[0].section, Section::Config);
    others_ok(&reports, &[]);
    assert!(text.contains("OK   destination partner (sftp)\n"), "{text}");
    assert!(
        text.contains("OK   source clienttrack (azure_blob)\n"),
        "{text}"
    );
    assert!(text.contains("OK   view cases (view)\n"), "{text}");
    // The probe reads nothing and leaves nothing: no file in the SFTP directory.
    let dir = cfg["destinations"]["partner"]["directory"]
        .as_str()
        .unwrap();
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
    // The checked command itself: exit 0.
    assert_eq!(
        ferry::check::run(&services, true).await.unwrap(),
        ExitCode::SUCCESS
    );
}

// ---------------------------------------------------------------------------------------------
// Azure Blob source

#[tokio::test]
async fn an_expired_sas_is_found() {
    let c = ferry_harness::shared();
    let container = unique("expired");
    let past = SystemTime::now() - Duration::from_secs(3600);
    let sas = c.azurite.admin().container_sas(&container, "rl", past);
    let (source, route) = azure(&container, &sas).await;
    let cfg = config(json!({"sources": {"clienttrack": source}, "routes": [route]})).await;
    let reports = probe(&cfg).await;
    let text = output(&reports, &[&sas]);
    let (what, fix) = problem(&reports, Section::Source, "clienttrack");
    assert!(what.starts_with("the SAS expired at "), "{what}");
    assert!(fix.contains("issue a new SAS"), "{fix}");
    assert!(
        text.contains("FAIL source clienttrack (azure_blob): the SAS expired at"),
        "{text}"
    );
    others_ok(&reports, &["clienttrack"]);
    // Exit status 1 when anything failed.
    assert_eq!(ferry::check::exit_code(&reports), ExitCode::from(1));
    // The same through the operator's command: exit 1, a JSON report on stdout, no secret.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["check", "--json", "--config"])
        .arg(&path)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let report: Value = serde_json::from_str(&stdout).expect("one JSON report on stdout");
    let failed: Vec<String> = report
        .as_array()
        .expect("an array of items")
        .iter()
        .filter(|r| r["status"] != "ok")
        .map(|r| r["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(failed, ["clienttrack"], "{stdout}");
    let sig = sas
        .split('&')
        .find_map(|kv| kv.strip_prefix("sig="))
        .unwrap();
    assert!(!stdout.contains(sig) && !String::from_utf8_lossy(&out.stderr).contains(sig));
}

#[tokio::test]
async fn an_expired_stored_access_policy_is_refused_by_azure() {
    let c = ferry_harness::shared();
    let container = unique("policy-expired");
    let admin = c.azurite.admin();
    admin.create_container(&container).await.unwrap();
    // The SAS itself carries no se: only Azure knows the policy expired.
    admin
        .set_access_policy(
            &container,
            "ferry",
            "rl",
            SystemTime::now() - Duration::from_secs(60),
        )
        .await
        .unwrap();
    let sas = admin.container_sas_for_policy(&container, "ferry");
    let (source, route) = azure(&container, &sas).await;
    let cfg = config(json!({"sources": {"clienttrack": source}, "routes": [route]})).await;
    let reports = probe(&cfg).await;
    output(&reports, &[&sas]);
    let (what, _) = problem(&reports, Section::Source, "clienttrack");
    assert!(
        what.contains("Azure refused the SAS") && what.contains("HTTP 403"),
        "{what}"
    );
    assert!(what.contains("expired"), "{what}");
}

#[tokio::test]
async fn a_sas_without_list_is_found_by_asking_azure() {
    let c = ferry_harness::shared();
    let container = unique("no-list");
    let admin = c.azurite.admin();
    admin.create_container(&container).await.unwrap();
    // Stored access policy with r only: the SAS has no sp, Azure answers List Blobs with 403.
    admin
        .set_access_policy(&container, "ferry", "r", in_an_hour())
        .await
        .unwrap();
    let sas = admin.container_sas_for_policy(&container, "ferry");
    let (source, route) = azure(&container, &sas).await;
    let cfg = config(json!({"sources": {"clienttrack": source}, "routes": [route]})).await;
    let reports = probe(&cfg).await;
    output(&reports, &[&sas]);
    let (what, fix) = problem(&reports, Section::Source, "clienttrack");
    assert!(what.starts_with("the SAS lacks l (list"), "{what}");
    assert!(!what.contains("r (read"), "it may read: {what}");
    assert!(fix.contains("l (list) for the reconcile sweep"), "{fix}");
    // An ad-hoc SAS says its permissions itself.
    let sas = admin.container_sas(&container, "r", in_an_hour());
    let (source, route) = azure(&container, &sas).await;
    let cfg = config(json!({"sources": {"clienttrack": source}, "routes": [route]})).await;
    let (what, _) = problem(&probe(&cfg).await, Section::Source, "clienttrack");
    assert!(what.starts_with("the SAS lacks l (list"), "{what}");
}

#[tokio::test]
async fn a_sas_without_read_is_found_by_asking_azure() {
    let c = ferry_harness::shared();
    let container = unique("no-read");
    let admin = c.azurite.admin();
    admin.create_container(&container).await.unwrap();
    admin
        .set_access_policy(&container, "ferry", "l", in_an_hour())
        .await
        .unwrap();
    let sas = admin.container_sas_for_policy(&container, "ferry");
    let (source, route) = azure(&container, &sas).await;
    let cfg = config(json!({"sources": {"clienttrack": source}, "routes": [route]})).await;
    let reports = probe(&cfg).await;
    output(&reports, &[&sas]);
    let (what, _) = problem(&reports, Section::Source, "clienttrack");
    assert_eq!(
        what,
        "the SAS lacks r (read: Get Blob answered 403 AuthorizationPermissionMismatch)"
    );
}

// ---------------------------------------------------------------------------------------------
// SFTP destination

#[tokio::test]
async fn an_sftp_host_key_mismatch_shows_the_offered_fingerprint() {
    let sshd = &ferry_harness::shared().sshd;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("other");
    let keygen = |args: &[&str]| {
        std::process::Command::new("ssh-keygen")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        keygen(&["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()])
            .status
            .success()
    );
    let other = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let real = dir.path().join("real.pub");
    std::fs::write(&real, &sshd.host_key).unwrap();
    let listed = String::from_utf8(keygen(&["-lf", real.to_str().unwrap()]).stdout).unwrap();
    let offered = listed.split_whitespace().nth(1).unwrap().to_string();
    assert!(offered.starts_with("SHA256:"), "{listed}");
    let mut dest = sftp();
    dest["host_key"] = json!(other.trim());
    let cfg = config(json!({"destinations": {"partner": dest}})).await;
    let reports = probe(&cfg).await;
    let text = output(&reports, &[&sshd.client_key_pem]);
    let (what, fix) = problem(&reports, Section::Destination, "partner");
    assert!(what.starts_with("host key mismatch: "), "{what}");
    assert!(
        what.contains(&format!("presented host key ssh-ed25519 {offered}")),
        "{what}"
    );
    assert!(fix.contains("ssh-keyscan"), "{fix}");
    assert!(
        text.contains("FAIL destination partner (sftp): host key mismatch"),
        "{text}"
    );
}

#[tokio::test]
async fn sftp_auth_refused_is_found() {
    let mut dest = sftp();
    dest.as_object_mut().unwrap().remove("private_key");
    dest["password"] = file_secret("not-the-password-x9");
    let cfg = config(json!({"destinations": {"partner": dest}})).await;
    let reports = probe(&cfg).await;
    output(&reports, &["not-the-password-x9"]);
    let (what, _) = problem(&reports, Section::Destination, "partner");
    assert!(what.starts_with("authentication refused: "), "{what}");
    assert!(what.contains("rejected password authentication"), "{what}");
}

#[tokio::test]
async fn a_missing_sftp_directory_is_found() {
    let mut dest = sftp();
    let missing = format!("{}/not-there", dest["directory"].as_str().unwrap());
    dest["directory"] = json!(missing);
    let cfg = config(json!({"destinations": {"partner": dest}})).await;
    let reports = probe(&cfg).await;
    output(&reports, &[]);
    let (what, fix) = problem(&reports, Section::Destination, "partner");
    assert!(
        what.starts_with(&format!("directory {missing} does not exist")),
        "{what}"
    );
    assert!(fix.starts_with("create it"), "{fix}");
    assert!(
        !std::path::Path::new(&missing).exists(),
        "the probe creates nothing"
    );
}

#[tokio::test]
async fn an_sftp_directory_that_is_not_writable_is_found() {
    // sshd runs as root here, which file modes do not stop; /sys/kernel refuses new files
    // (EACCES) even to root, as a read-only share would.
    if !std::path::Path::new("/sys/kernel").is_dir()
        || std::fs::write("/sys/kernel/ferry-check", b"x").is_ok()
    {
        eprintln!("skipped: /sys/kernel is missing or writable here");
        return;
    }
    let mut dest = sftp();
    dest["directory"] = json!("/sys/kernel");
    let cfg = config(json!({"destinations": {"partner": dest}})).await;
    let reports = probe(&cfg).await;
    output(&reports, &[]);
    let (what, fix) = problem(&reports, Section::Destination, "partner");
    let user = &ferry_harness::shared().sshd.user;
    assert!(
        what.starts_with(&format!(
            "directory /sys/kernel is not writable by {user}: create a file failed"
        )),
        "{what}"
    );
    assert!(fix.contains("create, rename and delete"), "{fix}");
}

// ---------------------------------------------------------------------------------------------
// Buckets

#[tokio::test]
async fn a_missing_destination_bucket_and_state_bucket_are_found() {
    let (_, endpoint) = bucket().await;
    let missing = unique("no-such-bucket");
    let mut cfg = config(json!({"destinations": {
        "archive": {"type": "s3", "bucket": missing, "endpoint": endpoint}}}))
    .await;
    let reports = probe(&cfg).await;
    output(&reports, &[]);
    let (what, fix) = problem(&reports, Section::Destination, "archive");
    assert_eq!(what, format!("bucket {missing:?} does not exist"));
    assert!(fix.starts_with("create the bucket"), "{fix}");
    others_ok(&reports, &["archive"]);
    // The state bucket itself.
    let state_missing = unique("no-state");
    cfg["state"]["bucket"] = json!(state_missing);
    let reports = probe(&cfg).await;
    let (what, _) = problem(&reports, Section::State, &state_missing);
    assert_eq!(what, format!("bucket {state_missing:?} does not exist"));
}

#[tokio::test]
async fn a_bucket_these_credentials_may_not_use_is_access_denied() {
    // A private moto with IAM enforcement on: the bucket exists, but the credentials ferry runs
    // with (moto's dummy keys, known to no IAM user) are refused.
    support::aws_test_env();
    let moto = ferry_harness::Moto::start().unwrap();
    let archive = unique("denied");
    moto.create_bucket(&archive).await.unwrap();
    ferry_harness::MotoApi::new(&moto.endpoint)
        .enforce_iam()
        .await
        .unwrap();
    let cfg = config(
        json!({"destinations": {"archive": {"type": "s3", "bucket": archive,
        "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}}}}),
    )
    .await;
    let reports = probe(&cfg).await;
    output(&reports, &[]);
    let (what, fix) = problem(&reports, Section::Destination, "archive");
    assert!(
        what.starts_with(&format!("access to bucket {archive:?} denied (HTTP 403)")),
        "{what}"
    );
    assert!(fix.contains("s3:ListBucket"), "{fix}");
    others_ok(&reports, &["archive"]);
}

// ---------------------------------------------------------------------------------------------
// HTTP destination and sink

#[tokio::test]
async fn an_unreachable_http_destination_is_found() {
    let port = closed_port();
    let cfg = config(json!({"destinations": {"hook": {"type": "http",
        "url": format!("http://127.0.0.1:{port}/in/{{name}}?code=s3cr3t-q"),
        "secret_headers": {"Authorization": file_secret(HTTP_TOKEN)}}}}))
    .await;
    let reports = probe(&cfg).await;
    output(&reports, &["s3cr3t-q"]);
    let (what, _) = problem(&reports, Section::Destination, "hook");
    assert!(
        what.starts_with(&format!(
            "http://127.0.0.1:{port}/in/ferry-check?code=REDACTED is unreachable: "
        )),
        "{what}"
    );
    assert!(what.to_lowercase().contains("connect"), "{what}");
}

#[tokio::test]
async fn http_destination_and_sink_401_are_found() {
    let server = http_server().await;
    let (lake, endpoint) = bucket().await;
    let cfg = config(json!({
        "destinations": {"hook": {"type": "http", "url": format!("{}/in/{{name}}", server.uri()),
            "secret_headers": {"Authorization": file_secret("Bearer wrong-tok-1")}}},
        "sinks": {"api": {"type": "http", "url": format!("{}/records", server.uri())},
            "lake": {"type": "s3_jsonl", "bucket": lake, "endpoint": endpoint}},
    }))
    .await;
    let reports = probe(&cfg).await;
    output(&reports, &["wrong-tok-1"]);
    let (what, fix) = problem(&reports, Section::Destination, "hook");
    assert_eq!(
        what,
        format!(
            "{}/in/ferry-check refused the credentials (HTTP 401)",
            server.uri()
        )
    );
    assert!(fix.contains("secret headers"), "{fix}");
    let (what, _) = problem(&reports, Section::Sink, "api");
    assert_eq!(
        what,
        format!(
            "{}/records refused the credentials (HTTP 401)",
            server.uri()
        )
    );
    others_ok(&reports, &["hook", "api"]);
}

// ---------------------------------------------------------------------------------------------
// Views

#[tokio::test]
async fn view_401_and_404_are_found() {
    let mock_view = MockView::start(VIEW_PASSWORD).await;
    let (lake, endpoint) = bucket().await;
    let mut wrong_password = view(&mock_view.url(), "lake");
    wrong_password["password"] = file_secret("wrong-view-pw-2");
    let cfg = config(json!({
        "sinks": {"lake": {"type": "s3_jsonl", "bucket": lake, "endpoint": endpoint}},
        "views": {"refused": wrong_password,
            "gone": view(&format!("{}/api/views/renamed", mock_view.server.uri()), "lake"),
            "cases": view(&mock_view.url(), "lake")},
    }))
    .await;
    // The mock answers 401 to anything but the right path and password; the renamed view
    // answers 404 as the server does for a view that no longer exists.
    Mock::given(method("GET"))
        .and(wiremock::matchers::path("/api/views/renamed"))
        .respond_with(ResponseTemplate::new(404))
        .with_priority(2)
        .mount(&mock_view.server)
        .await;
    let reports = probe(&cfg).await;
    output(&reports, &["wrong-view-pw-2"]);
    let (what, fix) = problem(&reports, Section::View, "refused");
    assert!(
        what.starts_with("the view refused user \"svc-ferry\" (HTTP 401)"),
        "{what}"
    );
    assert!(fix.contains("password secret"), "{fix}");
    let (what, _) = problem(&reports, Section::View, "gone");
    assert!(what.starts_with("view not found (HTTP 404)"), "{what}");
    others_ok(&reports, &["refused", "gone"]);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL sink

#[tokio::test]
async fn postgres_refused_connection_and_login_are_found() {
    let port = closed_port();
    let mut refused = support::sinks::postgres_config("rows_a");
    refused["port"] = json!(port);
    refused["connect_timeout_secs"] = json!(5);
    let mut bad_login = support::sinks::postgres_config("rows_b");
    bad_login["password"] = file_secret("wrong-pg-pw-3");
    let cfg = config(json!({"sinks": {"down": refused, "login": bad_login}})).await;
    let reports = probe(&cfg).await;
    output(
        &reports,
        &["wrong-pg-pw-3", &ferry_harness::postgres_shared().password],
    );
    let (what, fix) = problem(&reports, Section::Sink, "down");
    assert!(what.starts_with("cannot connect to PostgreSQL: "), "{what}");
    assert!(what.to_lowercase().contains("refused"), "{what}");
    assert!(fix.contains("listen_addresses"), "{fix}");
    let (what, _) = problem(&reports, Section::Sink, "login");
    let user = &ferry_harness::postgres_shared().user;
    assert!(
        what.starts_with(&format!("PostgreSQL refused the login of user {user:?}")),
        "{what}"
    );
    assert!(what.contains("password authentication failed"), "{what}");
}

fn chunk() -> Chunk {
    Chunk {
        after: None,
        records: support::view::records(1, 3)
            .iter()
            .map(|r| Record::from_json(&serde_json::to_vec(r).unwrap()).unwrap())
            .collect(),
    }
}

#[tokio::test]
async fn the_postgres_sink_creates_a_missing_schema_or_says_who_must() {
    let admin = support::sinks::pg_client().await;
    let schema = unique("new_schema").replace('-', "_");
    let cfg = config(
        json!({"sinks": {"db": support::sinks::postgres_config(&format!("{schema}.rows"))}}),
    )
    .await;
    let services = support::services(&cfg).await;
    let receipt = services
        .sink("db")
        .await
        .unwrap()
        .deliver("cases", &chunk())
        .await
        .unwrap();
    assert_eq!(receipt.applied, 3);
    let count: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {schema}.rows"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3);

    // A user without CREATE on the database: the delivery and the check both say what to do.
    let role = unique("ferry_limited").replace('-', "_");
    let pg = ferry_harness::postgres_shared();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'limited-pw-4'; REVOKE CREATE ON DATABASE {} FROM PUBLIC",
            pg.dbname
        ))
        .await
        .unwrap();
    let other = unique("denied_schema").replace('-', "_");
    let mut limited = support::sinks::postgres_config(&format!("{other}.rows"));
    limited["user"] = json!(role);
    limited["password"] = file_secret("limited-pw-4");
    let cfg = config(json!({"sinks": {"db": limited}})).await;
    let services = support::services(&cfg).await;
    let e = services
        .sink("db")
        .await
        .unwrap()
        .deliver("cases", &chunk())
        .await
        .unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains(&format!(
            "schema {other:?} does not exist and this user may not create it"
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!("CREATE SCHEMA {other} AUTHORIZATION")),
        "{e}"
    );
    let reports = services.probe_all(TIMEOUT).await;
    output(&reports, &["limited-pw-4"]);
    let (what, fix) = problem(&reports, Section::Sink, "db");
    assert_eq!(
        what,
        format!("schema {other:?} does not exist and user {role:?} may not create it")
    );
    assert!(
        fix.contains(&format!("CREATE SCHEMA {other} AUTHORIZATION")),
        "{fix}"
    );
}

// ---------------------------------------------------------------------------------------------
// Token service and Graph

#[tokio::test]
async fn token_service_403_says_permissions_not_granted_yet() {
    let aad = Aad::start(AAD_CLIENT, Some(AAD_SECRET)).await;
    let tokens = TokenService::start(&aad, INTEGRATION).await;
    tokens.forbid();
    let cfg = config(json!({
        "sources": {"eg": pubsub(&aad, &tokens)},
        "routes": [{"name": "eg-items", "source": "eg", "blob_types": ["Gateway.ItemChanges"], "destinations": ["disk"]}],
    }))
    .await;
    let reports = probe(&cfg).await;
    let text = output(&reports, &[]);
    let (what, fix) = problem(&reports, Section::Source, "eg");
    assert!(
        what.contains("403 Forbidden") && what.contains("permissions not granted yet"),
        "{what}"
    );
    assert!(fix.contains("ask the vendor"), "{fix}");
    assert!(text.contains("FAIL source eg (pubsub_export): "), "{text}");
    // The probe asked once and stored nothing.
    assert_eq!(tokens.calls(), 1);
}

#[tokio::test]
async fn a_graph_drive_that_does_not_exist_is_found() {
    let graph = GraphFake::start(GRAPH_CLIENT, GRAPH_SECRET).await;
    let mut by_id = graph.config(file_secret(GRAPH_SECRET), "ferry");
    for k in ["hostname", "site_path", "library"] {
        by_id.as_object_mut().unwrap().remove(k);
    }
    by_id["drive_id"] = json!("b!no-such-drive");
    let mut by_library = graph.config(file_secret(GRAPH_SECRET), "ferry");
    by_library["library"] = json!("Archive");
    let cfg = config(json!({"destinations": {"onedrive": by_id, "sharepoint": by_library}})).await;
    let reports = probe(&cfg).await;
    output(&reports, &[]);
    let (what, fix) = problem(&reports, Section::Destination, "onedrive");
    assert!(
        what.starts_with("drive not found: drive_id \"b!no-such-drive\""),
        "{what}"
    );
    assert!(what.contains("404"), "{what}");
    assert!(fix.contains("drive_id"), "{fix}");
    let (what, _) = problem(&reports, Section::Destination, "sharepoint");
    assert!(
        what.starts_with("drive not found: site contoso.sharepoint.com"),
        "{what}"
    );
    assert!(
        what.contains("has no document library \"Archive\""),
        "{what}"
    );
}

/// Services built for one config are what `ferry check` gets: a config that fails validation
/// cannot be built, so `check` only ever sees a validated config; its first line says so.
#[tokio::test]
async fn the_config_line_comes_first() {
    let cfg = config(json!({})).await;
    let services: Services = support::services(&cfg).await;
    let reports = services.probe_all(TIMEOUT).await;
    assert_eq!(reports[0].line(), "OK   config config (json)");
    assert_eq!(reports[1].section, Section::State);
}
