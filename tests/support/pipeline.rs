//! An isolated webhook-copy pipeline over the shared real components: its own container (with
//! a stored access policy), state and archive buckets, SFTP folder and mock HTTP receiver. Ingest
//! and copy get separate clients, as separate Lambdas would.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ferry_shared::engine::TransferEngine;
use ferry_shared::job::{FailureRecord, Receipt};
use ferry_shared::layout::{failure_key, receipt_key};
use ferry_shared::services::Services;
use ferry_shared::state::StateStoreExt;
use ferry_shared::webhook::WebhookService;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::data;
use super::fault_proxy::FaultProxy;

pub(crate) const MIB: u64 = 1024 * 1024;
pub(crate) const TOKEN: &str = "wh-token-5f1c9a77e2d04b1f";

/// One isolated pipeline: its own container, buckets, SFTP folder and HTTP endpoint.
pub(crate) struct Pipeline {
    pub container: String,
    pub sas: String,
    pub state_bucket: String,
    pub archive_bucket: String,
    pub sftp_dir: std::path::PathBuf,
    pub http: MockServer,
    pub ingest: Services,
    pub webhook: WebhookService,
    pub copy: Services,
    pub engine: TransferEngine,
    /// The copy side's config (for running `ferry run-job` as a separate process).
    pub copy_config: Value,
    pub _proxies: Vec<FaultProxy>,
}

/// An SFTP server other than the shared one (fault tests kill and restart their own).
#[derive(Clone)]
pub(crate) struct SftpServer {
    pub port: u16,
    pub user: String,
    pub host_key: String,
    pub key_pem: String,
    pub root: std::path::PathBuf,
}

impl SftpServer {
    pub(crate) fn of(sshd: &ferry_harness::Sshd) -> Self {
        Self {
            port: sshd.port,
            user: sshd.user.clone(),
            host_key: sshd.host_key.clone(),
            key_pem: sshd.client_key_pem.clone(),
            root: sshd.root.clone(),
        }
    }
}

#[derive(Default)]
pub(crate) struct Options {
    /// Route the copy side's blob reads through this proxy (port of Azurite behind it).
    pub source_proxy: Option<FaultProxy>,
    /// Route SFTP through this proxy.
    pub sftp_proxy: Option<FaultProxy>,
    /// Give the copy side an ad-hoc SAS that expires this soon (ingest keeps the policy SAS).
    pub copy_sas_expires_in: Option<Duration>,
    /// HTTP endpoint answers: default 201.
    pub http_status: Option<u16>,
    /// Route the copy side's state store (moto) through this proxy.
    pub state_proxy: Option<FaultProxy>,
    /// Deliver to this SFTP server instead of the shared one.
    pub sftp_server: Option<SftpServer>,
    /// Replace the `transfer` config section.
    pub transfer: Option<Value>,
    /// S3 destination part size (default 8 MiB).
    pub part_size_mib: Option<u64>,
    /// Destinations of the catch-all route `all` (default sftp, s3 and http).
    pub all_route_destinations: Option<Vec<&'static str>>,
    /// `name_template` of the "all" route.
    pub name_template: Option<&'static str>,
    /// `after_delivery` of the "all" route.
    pub after_delivery: Option<&'static str>,
    /// Permissions of the container's stored access policy the source's SAS names (`rl`).
    pub source_permissions: Option<&'static str>,
    /// More destinations by name (e.g. `graph` on the Graph fake), added to the config.
    pub extra_destinations: Option<Value>,
    /// `encrypt` of the "all" route.
    pub encrypt: Option<Value>,
    /// More settings of the Azure source (e.g. its read plan), added to its config.
    pub source: Option<Value>,
}

impl Pipeline {
    pub(crate) async fn new(opts: Options) -> Self {
        let container = super::container_with_policy(
            "exports",
            "ferry-read",
            opts.source_permissions.unwrap_or("rl"),
        )
        .await;
        let c = ferry_harness::shared();
        let admin = c.azurite.admin();
        let sas = admin.container_sas_for_policy(&container, "ferry-read");
        let copy_sas = match opts.copy_sas_expires_in {
            Some(d) => admin.container_sas(&container, "rl", SystemTime::now() + d),
            None => sas.clone(),
        };
        let state_bucket = super::unique("state");
        let archive_bucket = super::unique("archive");
        c.moto.create_bucket(&state_bucket).await.unwrap();
        c.moto.create_bucket(&archive_bucket).await.unwrap();
        let s3 = super::moto_s3().await;
        super::enable_versioning(&s3, &archive_bucket).await;
        let sftp = opts
            .sftp_server
            .clone()
            .unwrap_or_else(|| SftpServer::of(&c.sshd));
        let sftp_dir = sftp.root.join(super::unique("inbound"));
        let transfer = opts.transfer.clone().unwrap_or_else(|| json!({"max_attempts": 3, "retries": 3, "initial_backoff_ms": 10, "max_backoff_ms": 200, "max_resumes": 5}));
        let part_size_mib = opts.part_size_mib.unwrap_or(8);
        let all_route_destinations = opts
            .all_route_destinations
            .clone()
            .unwrap_or_else(|| vec!["sftp", "s3", "http"]);
        let http = MockServer::start().await;
        Mock::given(method("PUT"))
            .respond_with(ResponseTemplate::new(opts.http_status.unwrap_or(201)))
            .mount(&http)
            .await;
        let config = |account_url: String, sftp_port: u16, sas: &str, state_url: &str| {
            let mut config = json!({
                "state": {"bucket": state_bucket, "endpoint": {"endpoint_url": state_url, "force_path_style": true}},
                "webhook": {"token": super::file_secret(TOKEN)},
                "sources": {"clienttrack": {"type": "azure_blob", "account_url": account_url, "sas": super::file_secret(sas), "read_timeout_secs": 5}},
                "destinations": {
                    "sftp": {"type": "sftp", "host": "127.0.0.1", "port": sftp_port, "username": sftp.user, "host_key": sftp.host_key,
                             "private_key": super::file_secret(&sftp.key_pem), "directory": sftp_dir, "timeout_secs": 5},
                    "s3": {"type": "s3", "bucket": archive_bucket, "prefix": "clienttrack/", "part_size_mib": part_size_mib,
                           "endpoint": {"endpoint_url": c.moto.endpoint, "force_path_style": true}},
                    "http": {"type": "http", "url": format!("{}/files/{{name}}", http.uri()), "timeout_secs": 5}
                },
                "routes": [
                    {"name": "all", "source": "clienttrack", "container": container, "destinations": all_route_destinations},
                    {"name": "hmis-zips", "source": "clienttrack", "container": container, "file_glob": "*.zip",
                     "name_contains": "HMIS", "destinations": ["sftp"], "target_folder": "hmis"}
                ],
                "transfer": transfer
            });
            if let Some(t) = opts.name_template {
                config["routes"][0]["name_template"] = t.into();
            }
            if let Some(e) = &opts.encrypt {
                config["routes"][0]["encrypt"] = e.clone();
            }
            if let Some(a) = opts.after_delivery {
                config["routes"][0]["after_delivery"] = a.into();
            }
            for (k, v) in opts.source.iter().flat_map(|s| s.as_object().unwrap()) {
                config["sources"]["clienttrack"][k] = v.clone();
            }
            for (name, dest) in opts
                .extra_destinations
                .iter()
                .flat_map(|d| d.as_object().unwrap())
            {
                config["destinations"][name] = dest.clone();
            }
            config
        };
        let ingest = super::services(&config(
            c.azurite.account_url.clone(),
            sftp.port,
            &sas,
            &c.moto.endpoint,
        ))
        .await;
        let webhook = ingest.webhook().await.unwrap();
        let copy_url = match &opts.source_proxy {
            Some(p) => c
                .azurite
                .account_url
                .replace(&format!(":{}", c.azurite.port), &format!(":{}", p.port)),
            None => c.azurite.account_url.clone(),
        };
        let sftp_port = opts.sftp_proxy.as_ref().map_or(sftp.port, |p| p.port);
        let state_url = match &opts.state_proxy {
            Some(p) => format!("http://127.0.0.1:{}", p.port),
            None => c.moto.endpoint.clone(),
        };
        let copy_config = config(copy_url, sftp_port, &copy_sas, &state_url);
        let copy = super::services(&copy_config).await;
        let engine = copy.engine().await.unwrap();
        let proxies = [opts.source_proxy, opts.sftp_proxy, opts.state_proxy]
            .into_iter()
            .flatten()
            .collect();
        Self {
            container,
            sas,
            state_bucket,
            archive_bucket,
            sftp_dir,
            http,
            ingest,
            webhook,
            copy,
            engine,
            copy_config,
            _proxies: proxies,
        }
    }

    /// Sends a webhook through the Lambda adapter; returns (status, JSON body).
    pub(crate) async fn webhook_call(
        &self,
        method: &str,
        content_type: Option<&str>,
        body: &str,
        query: &str,
        token: Option<&str>,
    ) -> (u16, Value) {
        let uri = if query.is_empty() {
            "https://hook.local/ingest".to_string()
        } else {
            format!("https://hook.local/ingest?{query}")
        };
        let mut req = http::Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(t) = token {
            req = req.header("x-ferry-token", t);
        }
        let req = req.body(lambda_http::Body::Text(body.to_string())).unwrap();
        let resp = webhook_ingest::handle(&self.webhook, req).await.unwrap();
        let status = resp.status().as_u16();
        let text = String::from_utf8(resp.body().to_vec()).unwrap();
        (status, serde_json::from_str(&text).unwrap())
    }

    /// Writes the copy config into `dir` and returns a starter of `ferry run-job <job_key>`
    /// worker processes reading it (logs piped), so a test can SIGKILL a worker mid-copy and
    /// start another on the same job.
    pub(crate) fn run_job_worker(
        &self,
        dir: &std::path::Path,
        job_key: &str,
    ) -> impl Fn() -> tokio::process::Child {
        let config_path = dir.join("ferry.json");
        std::fs::write(&config_path, self.copy_config.to_string()).unwrap();
        let key = job_key.to_string();
        move || {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
                .args(["run-job", "--config"])
                .arg(&config_path)
                .arg(&key)
                .env("RUST_LOG", "info")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        }
    }

    pub(crate) async fn notify(&self, file: &str) -> (u16, Value) {
        let body = json!({"container": self.container, "file": file}).to_string();
        self.webhook_call("POST", Some("application/json"), &body, "", Some(TOKEN))
            .await
    }

    /// Runs blob-copy for a job key as an SQS delivery; returns true if it asked for redelivery.
    pub(crate) async fn copy(&self, job_key: &str, attempt: u32) -> bool {
        let event = blob_copy::sqs_event_for_job(&self.state_bucket, job_key, "m-1", attempt);
        let r = blob_copy::handle(&self.engine, LambdaEvent::new(event, Context::default()))
            .await
            .unwrap();
        !r.batch_item_failures.is_empty()
    }

    pub(crate) async fn upload(&self, name: &str, seed: u64, len: u64) -> String {
        let admin = ferry_harness::shared().azurite.admin();
        if len <= 4 * MIB {
            let bytes = data::bytes(seed, len as usize);
            admin.put_blob(&self.container, name, &bytes).await.unwrap();
            hex::encode(Sha256::digest(&bytes))
        } else {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("blob");
            let sha = data::write_file(&path, seed, len);
            admin
                .put_blob_from_file(&self.container, name, &path)
                .await
                .unwrap();
            sha
        }
    }

    pub(crate) async fn receipts(&self, job_id: &str) -> BTreeMap<String, Receipt> {
        let mut out = BTreeMap::new();
        for d in ["sftp", "s3", "http", "graph"] {
            if let Some((r, _)) = self
                .copy
                .state
                .get_json::<Receipt>(&receipt_key(job_id, d))
                .await
                .unwrap()
            {
                out.insert(d.to_string(), r);
            }
        }
        out
    }

    pub(crate) async fn failure(&self, job_id: &str) -> Option<FailureRecord> {
        self.copy
            .state
            .get_json::<FailureRecord>(&failure_key(job_id))
            .await
            .unwrap()
            .map(|(r, _)| r)
    }

    pub(crate) async fn s3_versions(&self, name: &str) -> (usize, Option<String>) {
        let s3 = super::moto_s3().await;
        let key = format!("clienttrack/{name}");
        let versions = s3
            .list_object_versions()
            .bucket(&self.archive_bucket)
            .prefix(&key)
            .send()
            .await
            .unwrap();
        let count = versions
            .versions()
            .iter()
            .filter(|v| v.key() == Some(key.as_str()))
            .count();
        let sha = match s3
            .get_object()
            .bucket(&self.archive_bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(o) => Some(hex::encode(Sha256::digest(
                o.body.collect().await.unwrap().into_bytes(),
            ))),
            Err(_) => None,
        };
        (count, sha)
    }

    /// The bytes of `clienttrack/<name>` in the S3 destination.
    pub(crate) async fn s3_object(&self, name: &str) -> Option<Vec<u8>> {
        let o = super::moto_s3()
            .await
            .get_object()
            .bucket(&self.archive_bucket)
            .key(format!("clienttrack/{name}"))
            .send()
            .await
            .ok()?;
        Some(o.body.collect().await.unwrap().into_bytes().to_vec())
    }

    pub(crate) async fn http_bodies(&self, name_path: &str) -> Vec<Vec<u8>> {
        let want = format!("/files/{name_path}");
        self.http
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.url.path() == want)
            .map(|r| r.body)
            .collect()
    }

    pub(crate) fn sftp_file(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.sftp_dir.join(name)).ok()
    }

    /// The SAS signature and everything else secret this pipeline used.
    pub(crate) fn secrets(&self) -> Vec<String> {
        let sig = self
            .sas
            .split('&')
            .find_map(|p| p.strip_prefix("sig="))
            .unwrap()
            .to_string();
        let decoded = percent_encoding::percent_decode_str(&sig)
            .decode_utf8_lossy()
            .into_owned();
        let key_body: String = ferry_harness::shared()
            .sshd
            .client_key_pem
            .lines()
            .nth(1)
            .unwrap_or("")
            .to_string();
        vec![sig, decoded, TOKEN.to_string(), key_body]
    }

    pub(crate) fn assert_logs_clean(&self) {
        let secrets = self.secrets();
        super::logs::assert_no_secrets(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

pub(crate) fn job_of(answer: &Value, route: &str) -> (String, String) {
    let job = answer["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["route"] == route)
        .unwrap_or_else(|| panic!("no {route} job in {answer}"));
    (
        job["job_id"].as_str().unwrap().to_string(),
        job["job_key"].as_str().unwrap().to_string(),
    )
}

/// A `ferry serve` child process on a pipeline's copy config. Its stdout and stderr go to a
/// file (a pipe nobody reads would fill and stall it); killed when dropped.
pub(crate) struct ServeProcess {
    pub child: tokio::process::Child,
    pub log: std::path::PathBuf,
}

impl ServeProcess {
    /// Everything it printed and logged so far.
    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it printed a line containing `needle` (panics with its output after 60 s
    /// or when it exits first); returns that line.
    pub(crate) async fn wait_for_line(&mut self, needle: &str) -> String {
        let started = std::time::Instant::now();
        loop {
            if let Some(line) = self.output().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            if started.elapsed() > Duration::from_secs(60)
                || self.child.try_wait().unwrap().is_some()
            {
                panic!("ferry serve never printed {needle:?}:\n{}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The webhook's base URL (`http://ADDR/`), once it listens.
    pub(crate) async fn webhook_url(&mut self) -> String {
        let line = self.wait_for_line("webhook listening on ").await;
        line.split("webhook listening on ")
            .nth(1)
            .unwrap()
            .trim()
            .to_string()
    }

    /// Sends SIGTERM.
    pub(crate) fn terminate(&self) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Pipeline {
    /// Writes the copy config into `dir` and returns a starter of `ferry serve` processes on it
    /// (`--listen 127.0.0.1:0` plus `args`), each logging to its own file in `dir`.
    pub(crate) fn serve_starter(
        &self,
        dir: &std::path::Path,
    ) -> impl FnMut(&[&str]) -> ServeProcess {
        let config_path = dir.join("ferry.json");
        std::fs::write(&config_path, self.copy_config.to_string()).unwrap();
        let dir = dir.to_path_buf();
        let mut started = 0;
        move |args| {
            started += 1;
            let log = dir.join(format!("serve-{started}.log"));
            let out = std::fs::File::create(&log).unwrap();
            // The reconciliation sweep (at start, then hourly) would find the files a test
            // announces itself: off unless the test asks for it.
            let sweep: &[&str] = if args.contains(&"--reconcile-every") {
                &[]
            } else {
                &["--reconcile-every", "off"]
            };
            let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
                .args(["serve", "--listen", "127.0.0.1:0", "--config"])
                .arg(&config_path)
                .args(sweep)
                .args(args)
                .env("RUST_LOG", "info")
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            ServeProcess { child, log }
        }
    }
}
