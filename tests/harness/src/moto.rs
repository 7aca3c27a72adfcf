//! moto server (S3, Secrets Manager, SQS, ...) on a free loopback port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::{READY_TIMEOUT, RunDir, ServerProcess, start_on_free_port};

/// Region to configure clients with (moto accepts any credentials).
pub const REGION: &str = "us-east-1";

/// A running moto server. Killed on Drop.
#[derive(Debug)]
pub struct Moto {
    /// The loopback TCP port it listens on.
    pub port: u16,
    /// `http://127.0.0.1:PORT` (use path-style addressing).
    pub endpoint: String,
    /// The server's log file (printed when a test fails to reach it).
    pub log_path: PathBuf,
    http: reqwest::Client,
    process: ServerProcess,
    dir: RunDir,
}

impl Moto {
    /// Installs moto if needed (scripts/install-components.sh) and starts it on a free port.
    pub fn start() -> anyhow::Result<Self> {
        crate::ensure_installed()?;
        let bin = Self::bin();
        start_on_free_port(2, |port| Self::start_on(&bin, port))
    }

    /// The venv's Python: it runs moto through `tests/harness/moto_server.py`, which makes S3's
    /// conditional PutObject atomic as it is on S3.
    fn bin() -> PathBuf {
        crate::repo_root().join(".local/venv/bin/python")
    }

    /// Starts on a given port (e.g. a fixed one for the demo).
    pub fn start_on_port(port: u16) -> anyhow::Result<Self> {
        crate::ensure_installed()?;
        Self::start_on(&Self::bin(), port)
    }

    fn start_on(bin: &Path, port: u16) -> anyhow::Result<Self> {
        let dir = RunDir::new("moto")?;
        let log_path = dir.path().join("moto.log");
        let launcher = crate::repo_root().join("tests/harness/moto_server.py");
        let args = [
            launcher.to_string_lossy().into_owned(),
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        let mut process = ServerProcess::spawn(
            "moto_server",
            bin,
            &args,
            dir.path(),
            &log_path,
            &[("PYTHONUNBUFFERED", "1")],
        )?;
        process.wait_ready(port, READY_TIMEOUT)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .context("building HTTP client")?;
        Ok(Self {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            log_path,
            http,
            process,
            dir,
        })
    }

    /// Creates a bucket (path-style `PUT /<name>`); succeeds when it already exists.
    pub async fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .put(format!("{}/{name}", self.endpoint))
            .body(Vec::new())
            .send()
            .await
            .with_context(|| format!("moto: PUT /{name}"))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        if status.as_u16() == 409 && body.contains("BucketAlreadyOwnedByYou") {
            return Ok(());
        }
        bail!("moto: create bucket {name}: HTTP {status}: {body}")
    }

    /// Forgets every resource of every service (`POST /moto-api/reset`). Affects all
    /// users of this server: for the shared instance prefer unique bucket names.
    pub async fn reset(&self) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/moto-api/reset", self.endpoint))
            .send()
            .await
            .context("moto: POST /moto-api/reset")?;
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "moto: reset: HTTP {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The directory holding moto's log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}
