//! Azurite (blob service only) on a free loopback port.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::azure_admin::AzureAdmin;
use crate::process::{READY_TIMEOUT, RunDir, ServerProcess, start_on_free_port};

/// The emulator's well-known account.
pub const ACCOUNT_NAME: &str = "devstoreaccount1";
/// The emulator's well-known (public) account key.
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite blob service. Killed on Drop.
#[derive(Debug)]
pub struct Azurite {
    /// The loopback TCP port it listens on.
    pub port: u16,
    /// `http://127.0.0.1:PORT/devstoreaccount1` (path-style).
    pub account_url: String,
    /// Azurite's stdout/stderr (access log).
    pub log_path: PathBuf,
    process: ServerProcess,
    // Declared after `process`, so the server is stopped before its data is removed.
    dir: RunDir,
}

impl Azurite {
    /// Starts Azurite on a free port with its data in a fresh run directory.
    pub fn start() -> anyhow::Result<Self> {
        crate::ensure_installed()?;
        let bin = Self::bin();
        start_on_free_port(2, |port| Self::start_on(&bin, port))
    }

    fn bin() -> PathBuf {
        crate::repo_root().join(".local/azurite/node_modules/.bin/azurite-blob")
    }

    /// Starts on a given port (e.g. a fixed one for the demo).
    pub fn start_on_port(port: u16) -> anyhow::Result<Self> {
        crate::ensure_installed()?;
        Self::start_on(&Self::bin(), port)
    }

    fn start_on(bin: &Path, port: u16) -> anyhow::Result<Self> {
        let dir = RunDir::new("azurite")?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).context("creating Azurite data dir")?;
        let log_path = dir.path().join("azurite.log");
        let args = [
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--location",
            &data.to_string_lossy(),
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ]
        .map(String::from);
        let mut args = args.to_vec();
        // FERRY_AZURITE_DEBUG=1: Azurite's debug log (why a request failed) in debug.log.
        if std::env::var_os("FERRY_AZURITE_DEBUG").is_some_and(|v| !v.is_empty() && v != "0") {
            args.push("--debug".into());
            args.push(dir.path().join("debug.log").to_string_lossy().into_owned());
        }
        let mut process = ServerProcess::spawn("azurite", bin, &args, dir.path(), &log_path, &[])?;
        process.wait_ready(port, READY_TIMEOUT)?;
        Ok(Self {
            port,
            account_url: format!("http://127.0.0.1:{port}/{ACCOUNT_NAME}"),
            log_path,
            process,
            dir,
        })
    }

    /// An admin client (Shared Key with the well-known key).
    pub fn admin(&self) -> AzureAdmin {
        AzureAdmin::new(&self.account_url, ACCOUNT_NAME, ACCOUNT_KEY)
            .expect("the well-known Azurite key is valid base64")
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1/<container>`.
    pub fn container_url(&self, container: &str) -> String {
        self.admin().container_url(container)
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1/<container>/<blob>` (blob name
    /// percent-encoded, `/` kept).
    pub fn blob_url(&self, container: &str, blob: &str) -> String {
        self.admin().blob_url(container, blob)
    }

    /// A connection string for SDKs and tools.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};BlobEndpoint={};",
            self.account_url
        )
    }

    /// The directory holding Azurite's data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id of the server (while running).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}
