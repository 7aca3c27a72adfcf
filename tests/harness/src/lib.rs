//! ferry's local component harness: starts the real local components (Azurite, moto,
//! OpenSSH sshd, PostgreSQL) on free loopback ports and administers them, for the integration tests
//! and the local demo.
//!
//! - [`shared()`] starts all three once per process (test binary) and reuses them.
//! - [`postgres_shared()`] starts one PostgreSQL per process, separately (only the tests
//!   that need it pay for it).
//! - [`LambdaFunction`] runs a function's real `bootstrap` under a Lambda Runtime API emulator;
//!   [`MotoApi`] talks to moto's IAM/STS/SQS/Secrets Manager/Lambda APIs, signed once IAM
//!   enforcement is on.
//! - [`Azurite::start`], [`Moto::start`], [`Sshd::start`], [`Postgres::start`] start private instances (e.g.
//!   for fault tests that kill and restart a server).
//! - Components are installed on first use by `scripts/install-components.sh` (into the
//!   git-ignored `.local/` of the repository; sshd from Debian's `openssh-server`).
//! - Every server is killed when its handle drops and, through `PR_SET_PDEATHSIG`, when
//!   the process exits in any way. Logs and data live in a run directory under
//!   `$TMPDIR/ferry-harness/`, removed afterwards unless `FERRY_HARNESS_KEEP=1`.

mod azure_admin;
mod azurite;
pub mod lambda;
mod moto;
pub mod moto_api;
mod postgres;
mod process;
mod sshd;
pub mod xml;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, bail};

pub use azure_admin::{AccessPolicy, AzureAdmin, PutBlobResult, format_iso8601};
pub use azurite::{ACCOUNT_KEY, ACCOUNT_NAME, Azurite};
pub use lambda::{FunctionError, FunctionSpec, LambdaFunction};
pub use moto::{Moto, REGION as MOTO_REGION};
pub use moto_api::{AccessKey, MotoApi};
pub use postgres::{Postgres, bin_dir as postgres_bin_dir};
pub use process::{free_port, log_tail, port_open};
pub use sshd::Sshd;

/// The repository root: `$FERRY_REPO_ROOT`, else two levels above this crate.
pub fn repo_root() -> PathBuf {
    if let Some(root) = std::env::var_os("FERRY_REPO_ROOT").filter(|v| !v.is_empty()) {
        return PathBuf::from(root);
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = here.join("..").join("..");
    root.canonicalize().unwrap_or(root)
}

/// Runs `scripts/install-components.sh` once per process (it is idempotent and quick
/// when everything is present). Its progress goes to stderr.
pub fn ensure_installed() -> anyhow::Result<()> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| run_installer().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn run_installer() -> anyhow::Result<()> {
    let root = repo_root();
    let script = root.join("scripts").join("install-components.sh");
    let status = Command::new("bash")
        .arg(&script)
        .env("FERRY_REPO_ROOT", &root)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); see its messages above",
            script.display()
        );
    }
    Ok(())
}

/// The three local components, started together.
#[derive(Debug)]
pub struct Components {
    /// Azure Blob Storage emulator.
    pub azurite: Azurite,
    /// S3 (and the other AWS services) emulator.
    pub moto: Moto,
    /// OpenSSH server with SFTP.
    pub sshd: Sshd,
}

impl Components {
    /// Starts Azurite, moto and sshd in parallel.
    pub fn start() -> anyhow::Result<Self> {
        ensure_installed()?;
        std::thread::scope(|s| {
            let azurite = s.spawn(Azurite::start);
            let moto = s.spawn(Moto::start);
            let sshd = s.spawn(Sshd::start);
            let azurite = azurite
                .join()
                .map_err(|_| anyhow::anyhow!("Azurite start panicked"))?;
            let moto = moto
                .join()
                .map_err(|_| anyhow::anyhow!("moto start panicked"))?;
            let sshd = sshd
                .join()
                .map_err(|_| anyhow::anyhow!("sshd start panicked"))?;
            Ok(Self {
                azurite: azurite?,
                moto: moto?,
                sshd: sshd?,
            })
        })
    }
}

/// The components shared by every test of this process: started on first call, kept
/// until the process exits. Tests must not disturb them for others: use unique
/// container, bucket and path names, and start private instances for fault tests.
///
/// Panics (in every caller) when the components cannot be started.
pub fn shared() -> &'static Components {
    static SHARED: OnceLock<Result<Components, String>> = OnceLock::new();
    match SHARED.get_or_init(|| Components::start().map_err(|e| format!("{e:#}"))) {
        Ok(c) => c,
        Err(e) => panic!("ferry-harness: local components failed to start: {e}"),
    }
}

/// The PostgreSQL server shared by every test of this process: started on first call, kept
/// until the process exits. Tests use their own tables (or databases) so they do not disturb
/// each other.
///
/// Panics (in every caller) when it cannot be started.
pub fn postgres_shared() -> &'static Postgres {
    static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
    match SHARED.get_or_init(|| Postgres::start().map_err(|e| format!("{e:#}"))) {
        Ok(p) => p,
        Err(e) => panic!("ferry-harness: PostgreSQL failed to start: {e}"),
    }
}
