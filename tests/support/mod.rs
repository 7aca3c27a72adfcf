//! Shared helpers for the integration tests: log capture (to scan for leaked secrets), generated
//! data streams, a TCP fault proxy, config builders over the harness's real components, and the
//! view-sync stand-ins (mock view, HTTP receiver) with probes for each sink, the stateful
//! Microsoft Graph fake, and the Terraform runner.
#![allow(dead_code)]

pub(crate) mod bootstrap;
pub(crate) mod data;
pub(crate) mod export;
pub(crate) mod fault_proxy;
pub(crate) mod gpg;
pub(crate) mod graph;
pub(crate) mod logs;
pub(crate) mod pipeline;
pub(crate) mod pubsub;
pub(crate) mod sinks;
pub(crate) mod terraform;
pub(crate) mod view;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_shared::config::Config;
use ferry_shared::dest::Destination;
use ferry_shared::services::Services;

/// A name unique within this test process (containers, buckets, folders).
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Writes `value` to a 0600 file in a fresh temp dir and returns a `{"file": path}` secret ref.
pub(crate) fn file_secret(value: &str) -> serde_json::Value {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let path = dir.join("secret");
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    f.write_all(value.as_bytes()).unwrap();
    serde_json::json!({"file": path})
}

/// Builds services from a JSON config (panics with the config error: tests want to see it).
pub(crate) async fn services(config: &serde_json::Value) -> Services {
    let config = Config::from_json(&config.to_string()).expect("test config is valid");
    Services::new(config).await
}

/// One named destination built through the same config path production uses.
pub(crate) async fn destination(
    kind_config: serde_json::Value,
    state_bucket: &str,
) -> Arc<dyn Destination> {
    let moto = &ferry_harness::shared().moto;
    let config = serde_json::json!({
        "state": {"bucket": state_bucket, "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}},
        "destinations": {"d": kind_config},
    });
    let s = services(&config).await;
    let state = s.state_for(ferry_shared::layout::Function::BlobCopy);
    s.destination("d", &state)
        .await
        .expect("destination builds")
}

/// An S3 client for moto (for assertions).
pub(crate) async fn moto_s3() -> aws_sdk_s3::Client {
    let moto = &ferry_harness::shared().moto;
    ferry_shared::s3::client(&ferry_shared::config::S3Endpoint {
        region: None,
        endpoint_url: Some(moto.endpoint.clone()),
        force_path_style: true,
    })
    .await
}

/// Turns versioning on for `bucket`, so a test can count the writes of a key (one version
/// each).
pub(crate) async fn enable_versioning(s3: &aws_sdk_s3::Client, bucket: &str) {
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// Sets the dummy AWS credentials moto accepts, once, before any client is built.
pub(crate) fn aws_test_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: called before the tests of this process start any threads that read the env
        // (each test calls it first; Once serialises the single write).
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
            std::env::set_var("AWS_REGION", "us-east-1");
            // Never let the SDK probe the EC2 metadata address from a test machine.
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
            std::env::remove_var("AWS_PROFILE");
        }
    });
}

/// A state store that holds writes under `prefix` (after the first `pass_first` of them) until
/// `open` turns true, counting how many are held at a time: a test opens the gate from outside
/// to prove that the caller went on without waiting, or that it wrote several keys at once.
pub(crate) struct GatedPuts {
    pub inner: Arc<dyn ferry_shared::state::StateStore>,
    pub prefix: String,
    pub pass_first: usize,
    pub open: tokio::sync::watch::Receiver<bool>,
    seen: std::sync::atomic::AtomicUsize,
    held: std::sync::atomic::AtomicUsize,
}

impl GatedPuts {
    pub(crate) fn new(
        inner: Arc<dyn ferry_shared::state::StateStore>,
        prefix: &str,
        pass_first: usize,
        open: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            inner,
            prefix: prefix.to_string(),
            pass_first,
            open,
            seen: 0.into(),
            held: 0.into(),
        }
    }

    /// Writes under the prefix so far (held or not).
    pub(crate) fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    /// Writes waiting at the gate right now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl ferry_shared::state::StateStore for GatedPuts {
    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<ferry_shared::state::Versioned>, ferry_shared::state::StateError> {
        self.inner.get(key).await
    }
    async fn put(
        &self,
        key: &str,
        body: bytes::Bytes,
        mode: ferry_shared::state::PutMode,
    ) -> Result<String, ferry_shared::state::StateError> {
        if key.starts_with(&self.prefix)
            && self.seen.fetch_add(1, Ordering::SeqCst) >= self.pass_first
        {
            self.held.fetch_add(1, Ordering::SeqCst);
            let _ = self.open.clone().wait_for(|open| *open).await;
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
        self.inner.put(key, body, mode).await
    }
    async fn delete(&self, key: &str) -> Result<(), ferry_shared::state::StateError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ferry_shared::state::StateError> {
        self.inner.list(prefix).await
    }
}

/// A state store that makes the first `count` writes under `prefix` slow: `delay` before the
/// write reaches the store (`before`), or after it landed (the caller hears late); with `fail`,
/// those writes fail instead (after the delay, without reaching the store).
pub(crate) struct SlowPuts {
    pub inner: Arc<dyn ferry_shared::state::StateStore>,
    pub prefix: String,
    pub delay: std::time::Duration,
    pub before: bool,
    pub fail: bool,
    pub count: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl ferry_shared::state::StateStore for SlowPuts {
    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<ferry_shared::state::Versioned>, ferry_shared::state::StateError> {
        self.inner.get(key).await
    }
    async fn put(
        &self,
        key: &str,
        body: bytes::Bytes,
        mode: ferry_shared::state::PutMode,
    ) -> Result<String, ferry_shared::state::StateError> {
        let slow = key.starts_with(&self.prefix)
            && self
                .count
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if slow && (self.before || self.fail) {
            tokio::time::sleep(self.delay).await;
        }
        if slow && self.fail {
            return Err(ferry_shared::state::StateError::Permanent(
                "injected write failure".into(),
            ));
        }
        let result = self.inner.put(key, body, mode).await;
        if slow && !self.before {
            tokio::time::sleep(self.delay).await;
        }
        result
    }
    async fn delete(&self, key: &str) -> Result<(), ferry_shared::state::StateError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ferry_shared::state::StateError> {
        self.inner.list(prefix).await
    }
}

/// The set-up every Azurite-backed suite starts with: test env and log capture on, a new
/// container named after `prefix`, and a stored access policy `policy` with `permissions` for an
/// hour (the policy's SAS is `admin.container_sas_for_policy(&container, policy)`, and removing
/// the policy revokes it). Returns the container's name.
pub(crate) async fn container_with_policy(prefix: &str, policy: &str, permissions: &str) -> String {
    aws_test_env();
    logs::init();
    let container = unique(prefix);
    let admin = ferry_harness::shared().azurite.admin();
    admin.create_container(&container).await.unwrap();
    admin
        .set_access_policy(
            &container,
            policy,
            permissions,
            std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
        )
        .await
        .unwrap();
    container
}

/// A `pubsub_export` source over these fakes with client-secret auth and the short timeouts the
/// suites run with (stops at the first empty receive); `extra`'s fields are added or override.
pub(crate) fn source_config(
    aad: &pubsub::Aad,
    client_id: &str,
    client_secret: &str,
    tokens: &pubsub::TokenService,
    integration: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut source = serde_json::json!({
        "type": "pubsub_export",
        "tenant_service_url": tokens.server.uri(),
        "integration_name": integration,
        "aad": {"authority_url": aad.server.uri(), "tenant_id": aad.tenant, "client_id": client_id,
                "scope": "api://eg-tenant-service/.default", "client_secret": file_secret(client_secret)},
        "read_timeout_secs": 5, "receive_timeout_secs": 2, "deadline_margin_secs": 1,
        "stop_when_idle": true, "min_refresh_interval_secs": 1
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        source[k] = v.clone();
    }
    source
}
