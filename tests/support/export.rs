//! The pub/sub export fixture (EG Retail-style): one isolated export per test with its own
//! Azurite container behind stored access policies, state and archive buckets on moto, local
//! folders, and the fakes with no emulator (Azure AD, the vendor's token service, Service Bus
//! REST); messages go through the export-pull handler and jobs through blob-copy's engine, as in
//! production. Used by `tests/it/pubsub_export.rs`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ferry_shared::engine::TransferEngine;
use ferry_shared::job::{Receipt, TransferJob};
use ferry_shared::layout::receipt_key;
use ferry_shared::pubsub::pull::ExportPuller;
use ferry_shared::services::Services;
use ferry_shared::state::StateStoreExt;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

use super::fault_proxy::FaultProxy;
use super::pubsub::{Aad, ServiceBus, TokenService};
use crate::support;

pub(crate) const MIB: usize = 1024 * 1024;
pub(crate) const CLIENT_ID: &str = "5d0c7f38-ferry-export-client";
pub(crate) const CLIENT_SECRET: &str = "aad-client-secret-Qx7~f2Lk9pZ0v";
pub(crate) const INTEGRATION: &str = "ferry-file-export";
pub(crate) const SB_KEY_1: &str = "sbkey1-Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA=";
pub(crate) const SB_KEY_2: &str = "sbkey2-YmF6cXV4Zm9vYmFyOTg3NjU0MzIxMA=";
pub(crate) const SOURCE: &str = "egretail";
pub(crate) const ITEMS: &str = "Gateway.ItemChanges";
pub(crate) const PRICES: &str = "Gateway.PriceChanges";
pub(crate) const STOCK: &str = "Gateway.StockChanges";
pub(crate) const CUSTOMERS: &str = "Gateway.CustomerChanges";

#[derive(Clone)]
pub(crate) struct Options {
    /// Serve blobs through a fault proxy.
    pub proxy: bool,
    /// Service Bus lock duration.
    pub lock: Duration,
    /// export-pull ends at the first empty receive.
    pub stop_when_idle: bool,
    /// `lock_duration_secs` in ferry's config (`None`: the default, 60).
    pub lock_config_secs: Option<u64>,
    /// `min_refresh_interval_secs` in ferry's config.
    pub min_refresh_secs: u64,
    /// `encrypt` of the `items` route.
    pub encrypt: Option<Value>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            proxy: false,
            lock: Duration::from_secs(30),
            stop_when_idle: true,
            lock_config_secs: None,
            min_refresh_secs: 1,
            encrypt: None,
        }
    }
}

/// One isolated export: its own container, buckets, folders and fakes.
pub(crate) struct Export {
    pub container: String,
    pub blob_base: String,
    pub state_bucket: String,
    pub archive_bucket: String,
    pub out: PathBuf,
    pub raw: PathBuf,
    pub aad: Aad,
    pub tokens: TokenService,
    pub bus: ServiceBus,
    pub config: Value,
    pub pull: Services,
    pub pullers: Vec<ExportPuller>,
    pub copy: Services,
    pub engine: TransferEngine,
    pub proxy: Option<FaultProxy>,
    pub sas_issued: std::sync::Mutex<Vec<String>>,
    pub _dir: tempfile::TempDir,
}

impl Export {
    pub(crate) async fn new(opts: Options) -> Self {
        let container = support::container_with_policy("export", "gen-1", "rl").await;
        let c = ferry_harness::shared();
        let proxy = if opts.proxy {
            Some(FaultProxy::start(c.azurite.port).await)
        } else {
            None
        };
        let port = proxy.as_ref().map_or(c.azurite.port, |p| p.port);
        let blob_base = format!("http://127.0.0.1:{port}/devstoreaccount1/{container}");
        let aad = Aad::start(CLIENT_ID, Some(CLIENT_SECRET)).await;
        let tokens = TokenService::start(&aad, INTEGRATION).await;
        let bus = ServiceBus::start("listen", SB_KEY_1, opts.lock).await;
        let state_bucket = support::unique("state");
        let archive_bucket = support::unique("archive");
        c.moto.create_bucket(&state_bucket).await.unwrap();
        c.moto.create_bucket(&archive_bucket).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (out, raw) = (dir.path().join("out"), dir.path().join("raw"));
        let mut config = json!({
            "state": {"bucket": state_bucket, "endpoint": {"endpoint_url": c.moto.endpoint, "force_path_style": true}},
            "sources": {SOURCE: super::source_config(&aad, CLIENT_ID, CLIENT_SECRET, &tokens, INTEGRATION, json!({
                "stop_when_idle": opts.stop_when_idle, "min_refresh_interval_secs": opts.min_refresh_secs,
                "max_decompressed_bytes": 16 * MIB, "max_line_bytes": 64 * 1024
            }))},
            "destinations": {
                "out": {"type": "local_dir", "path": out},
                "raw": {"type": "local_dir", "path": raw},
                "archive": {"type": "s3", "bucket": archive_bucket, "prefix": "eg/",
                            "endpoint": {"endpoint_url": c.moto.endpoint, "force_path_style": true}}
            },
            "routes": [
                {"name": "items", "source": SOURCE, "blob_types": [ITEMS, PRICES], "decompress": true,
                 "destinations": ["out", "archive"], "target_folder": "items"},
                {"name": "raw-items", "source": SOURCE, "blob_types": ["gateway.itemchanges"], "destinations": ["raw"]}
            ],
            "transfer": {"max_attempts": 3, "retries": 3, "initial_backoff_ms": 10, "max_backoff_ms": 200, "max_resumes": 5}
        });
        if let Some(encrypt) = &opts.encrypt {
            config["routes"][0]["encrypt"] = encrypt.clone();
        }
        if let Some(secs) = opts.lock_config_secs {
            config["sources"][SOURCE]["lock_duration_secs"] = json!(secs);
        }
        let pull = support::services(&config).await;
        let pullers = pull.export_pullers().await.unwrap();
        let copy = support::services(&config).await;
        let engine = copy.engine().await.unwrap();
        let export = Self {
            container,
            blob_base,
            state_bucket,
            archive_bucket,
            out,
            raw,
            aad,
            tokens,
            bus,
            config,
            pull,
            pullers,
            copy,
            engine,
            proxy,
            sas_issued: Default::default(),
            _dir: dir,
        };
        export.issue("gen-1", SB_KEY_1);
        export
    }

    /// Makes the token service hand out the SAS of `policy` and the Service Bus `key`.
    pub(crate) fn issue(&self, policy: &str, key: &str) {
        let sas = ferry_harness::shared()
            .azurite
            .admin()
            .container_sas_for_policy(&self.container, policy);
        self.sas_issued.lock().unwrap().push(sas.clone());
        self.tokens.answer(
            &self.bus.connection_string(key),
            &self.bus.subscription,
            &[format!("{}?{sas}", self.blob_base)],
        );
    }

    /// Rotates everything: new policy and Service Bus key handed out, old ones revoked.
    pub(crate) async fn rotate(&self, old_policy: &str, new_policy: &str, new_key: &str) {
        let admin = ferry_harness::shared().azurite.admin();
        admin
            .set_access_policy(
                &self.container,
                new_policy,
                "rl",
                SystemTime::now() + Duration::from_secs(3600),
            )
            .await
            .unwrap();
        self.issue(new_policy, new_key);
        self.bus.set_keys(&[new_key]);
        admin
            .remove_access_policy(&self.container, old_policy)
            .await
            .unwrap();
    }

    pub(crate) async fn upload(&self, name: &str, bytes: &[u8]) {
        ferry_harness::shared()
            .azurite
            .admin()
            .put_blob(&self.container, name, bytes)
            .await
            .unwrap();
    }

    pub(crate) fn blob_url(&self, name: &str) -> String {
        let encoded = percent_encoding::utf8_percent_encode(name, PATH).to_string();
        format!("{}/{encoded}", self.blob_base)
    }

    /// Runs export-pull's Lambda handler with `budget` until the deadline.
    pub(crate) async fn pull_with(
        pullers: &[ExportPuller],
        budget: Duration,
    ) -> Result<Value, String> {
        let mut context = Context::default();
        context.deadline = ferry_shared::clock::now_ms() + budget.as_millis() as u64;
        export_pull::handle(
            pullers,
            LambdaEvent::new(json!({"source": "aws.scheduler"}), context),
        )
        .await
        .map(|v| v["sources"][0].clone())
        .map_err(|e| e.to_string())
    }

    pub(crate) async fn pull(&self) -> Value {
        Self::pull_with(&self.pullers, Duration::from_secs(60))
            .await
            .unwrap()
    }

    pub(crate) async fn jobs(&self) -> Vec<String> {
        self.copy.state.list("jobs/").await.unwrap()
    }

    pub(crate) async fn job(&self, key: &str) -> TransferJob {
        self.copy
            .state
            .get_json::<TransferJob>(key)
            .await
            .unwrap()
            .unwrap()
            .0
    }

    /// Runs blob-copy for a job key as an SQS delivery; true if it asked for redelivery.
    pub(crate) async fn copy(&self, job_key: &str) -> bool {
        let event = blob_copy::sqs_event_for_job(&self.state_bucket, job_key, "m-1", 1);
        let r = blob_copy::handle(&self.engine, LambdaEvent::new(event, Context::default()))
            .await
            .unwrap();
        !r.batch_item_failures.is_empty()
    }

    /// Runs every key, eight at a time; returns the keys that asked for redelivery.
    pub(crate) async fn copy_all(&self, keys: &[String]) -> Vec<String> {
        let mut again = Vec::new();
        for chunk in keys.chunks(8) {
            let results = futures_util::future::join_all(chunk.iter().map(|k| self.copy(k))).await;
            again.extend(
                chunk
                    .iter()
                    .zip(results)
                    .filter(|(_, r)| *r)
                    .map(|(k, _)| k.clone()),
            );
        }
        again
    }

    pub(crate) async fn receipt(&self, job_id: &str, dest: &str) -> Option<Receipt> {
        self.copy
            .state
            .get_json::<Receipt>(&receipt_key(job_id, dest))
            .await
            .unwrap()
            .map(|(r, _)| r)
    }

    pub(crate) async fn failed(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for key in self.copy.state.list("failed/").await.unwrap() {
            out.push(
                self.copy
                    .state
                    .get_json::<Value>(&key)
                    .await
                    .unwrap()
                    .unwrap()
                    .0,
            );
        }
        out
    }

    /// Every secret this export used: client secret, AAD tokens, SAS signatures, bus keys and
    /// the bus signatures we sent.
    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut s = vec![
            CLIENT_SECRET.to_string(),
            SB_KEY_1.to_string(),
            SB_KEY_2.to_string(),
        ];
        s.extend(self.aad.tokens());
        for sas in self.sas_issued.lock().unwrap().iter() {
            let sig = sas
                .split('&')
                .find_map(|p| p.strip_prefix("sig="))
                .unwrap()
                .to_string();
            s.push(
                percent_encoding::percent_decode_str(&sig)
                    .decode_utf8_lossy()
                    .into_owned(),
            );
            s.push(sig);
        }
        s.extend(self.bus.signatures());
        s
    }

    pub(crate) fn assert_logs_clean(&self) {
        let secrets = self.secrets();
        assert!(
            secrets.len() >= 6,
            "the scan covers real secrets: {}",
            secrets.len()
        );
        support::logs::assert_no_secrets(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

pub(crate) const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'/');

/// A notification body; `pascal` uses the vendor sample's casing.
pub(crate) fn notice(
    blob_type: &str,
    correlation_id: &str,
    content_type: &str,
    gzip: bool,
    uri: &str,
    pascal: bool,
) -> Vec<u8> {
    let encoding = if gzip { "gzip" } else { "" };
    let v = if pascal {
        json!({"BlobType": blob_type, "CorrelationId": correlation_id, "ContentType": content_type,
               "ContentEncoding": encoding, "Uri": uri, "Properties": {"TenantId": "42", "Store": "0815"}})
    } else {
        json!({"blobType": blob_type, "correlationId": correlation_id, "contentType": content_type,
               "contentEncoding": encoding, "uri": uri, "properties": {"tenantId": "42"}})
    };
    v.to_string().into_bytes()
}

/// jsonl records of about `bytes` bytes, with enough entropy that gzip cannot squash them.
pub(crate) fn jsonl(seed: u64, bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 128);
    let mut g = support::data::Generator::new(seed);
    let mut n = 0u64;
    while out.len() < bytes {
        let mut r = [0u8; 12];
        g.fill(&mut r);
        writeln!(
            out,
            r#"{{"itemId":{n},"sku":"{}","qty":{},"name":"Vare ✓ {seed}"}}"#,
            hex::encode(r),
            r[0]
        )
        .unwrap();
        n += 1;
    }
    out
}

pub(crate) fn xml(seed: u64, items: usize) -> Vec<u8> {
    let mut out = String::from(r#"<?xml version="1.0" encoding="utf-8"?><PriceChanges>"#);
    for i in 0..items {
        out.push_str(&format!(
            r#"<Price item="{seed}-{i}" amount="{}.{:02}" currency="NOK"/>"#,
            i * 7 % 1000,
            i % 100
        ));
    }
    out.push_str("</PriceChanges>");
    out.into_bytes()
}

/// gzip, as one member or two back to back (concatenated gzip files are one valid stream).
pub(crate) fn gz(data: &[u8], members: usize) -> Vec<u8> {
    let parts = if members > 1 {
        let cut = data.len() / 2;
        vec![&data[..cut], &data[cut..]]
    } else {
        vec![data]
    };
    let mut out = Vec::new();
    for part in parts {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(part).unwrap();
        out.extend(e.finish().unwrap());
    }
    out
}

pub(crate) fn strip_gz(name: &str) -> &str {
    name.strip_suffix(".gz").unwrap_or(name)
}

pub(crate) fn files_under(root: &Path) -> BTreeSet<String> {
    pub(crate) fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}
