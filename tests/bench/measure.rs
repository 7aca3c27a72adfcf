//! Measuring one command for the benchmarks: wall time, peak RSS and CPU time from
//! `/usr/bin/time -v`, and the optional `perf record` wrapper (FERRY_BENCH_PERF).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

/// One measured run.
pub(crate) struct Run {
    /// Wall seconds.
    pub secs: f64,
    /// Peak resident set size, MiB.
    pub rss_mib: f64,
    /// User + system CPU seconds: how much of the wall time the tool itself was busy.
    pub cpu_secs: f64,
}

/// Runs `cmd` (with its environment, removals included) under /usr/bin/time -v.
pub(crate) fn timed(cmd: &mut Command) -> anyhow::Result<Run> {
    let program = cmd.get_program().to_os_string();
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped.arg("-v").arg(&program).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    let started = Instant::now();
    let out = wrapped.output()?;
    let secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "{:?} failed: {}{}",
            program,
            String::from_utf8_lossy(&out.stdout),
            stderr
        );
    }
    let field = |label: &str| -> Option<f64> {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(label)?.parse().ok())
    };
    let kib =
        field("Maximum resident set size (kbytes): ").context("no RSS line from /usr/bin/time")?;
    Ok(Run {
        secs,
        rss_mib: kib / 1024.0,
        cpu_secs: field("User time (seconds): ").unwrap_or(0.0)
            + field("System time (seconds): ").unwrap_or(0.0),
    })
}

/// `bin` as a command, recorded by `perf record` into `profile` when FERRY_BENCH_PERF is set
/// (a flat CPU profile for `perf report -i <profile>`).
pub(crate) fn profiled(bin: &Path, profile: &Path) -> Command {
    if std::env::var_os("FERRY_BENCH_PERF").is_none() {
        return Command::new(bin);
    }
    let mut perf = Command::new("perf");
    perf.args(["record", "-q"]);
    match std::env::var("FERRY_BENCH_PERF_ARGS") {
        Ok(args) => perf.args(args.split_whitespace()),
        Err(_) => perf.args(["-F", "1999"]),
    };
    perf.arg("-o").arg(profile).arg(bin);
    perf
}
