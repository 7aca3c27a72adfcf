//! `ferry check`: is the config right, and can ferry reach everything it names with the
//! credentials it has? Validates the config, then probes the state bucket and every source,
//! destination, sink and view at once (each backend's own probe, through
//! [`Services::probe_all`]), and prints one line per item: `OK   destination partner (sftp)` or
//! `FAIL source clienttrack (azure_blob): <what is wrong>; fix: <what to do>`. With `--json`, one
//! JSON array of the same reports. Exit status 1 when anything failed, so scripts and deploy
//! pipelines can gate on it. No secret is ever printed: probes build their texts from status
//! codes and redacted URLs.

use std::io::Write as _;
use std::process::ExitCode;

use ferry_shared::probe::ProbeReport;
use ferry_shared::services::{PROBE_TIMEOUT, Services};

/// Runs every probe and prints the reports (human lines, or a JSON array when `json`) to
/// stdout. `ExitCode::SUCCESS` when every item is OK, 1 otherwise.
pub async fn run(services: &Services, json: bool) -> anyhow::Result<ExitCode> {
    let reports = services.probe_all(PROBE_TIMEOUT).await;
    let mut out = std::io::stdout().lock();
    out.write_all(render(&reports, json)?.as_bytes())?;
    out.flush()?;
    Ok(exit_code(&reports))
}

/// What [`run`] prints for `reports`.
pub fn render(reports: &[ProbeReport], json: bool) -> anyhow::Result<String> {
    if json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(reports)?));
    }
    let mut text = String::new();
    for report in reports {
        text.push_str(&report.line());
        text.push('\n');
    }
    let failed = reports.iter().filter(|r| !r.is_ok()).count();
    if failed == 0 {
        text.push_str(&format!("all {} items OK\n", reports.len()));
    } else {
        text.push_str(&format!("{failed} of {} items failed\n", reports.len()));
    }
    Ok(text)
}

/// 0 when every report is OK, else 1.
pub fn exit_code(reports: &[ProbeReport]) -> ExitCode {
    if reports.iter().all(ProbeReport::is_ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
