//! `ferry check`: validates the config and probes every configured source, destination, sink
//! and view. A stub on the `cli` branch (the command and its flags exist); the `check` branch
//! brings the probes and replaces this file.

use ferry_shared::services::Services;

/// Checks every configured item and prints per item OK or the problem (human, or JSON with
/// `json`); the exit code is non-zero when anything failed.
pub async fn run(_services: &Services, _json: bool) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("ferry check is not built yet")
}
