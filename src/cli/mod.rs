//! The `ferry` command line: every command, its flags and its help (with examples) in one place,
//! on clap's derive. Exit codes scripts can rely on: 0 the operation did what was asked, 1 it ran
//! and failed (a job dead-lettered, a view failed, a check failed, nothing found), 2 a usage or
//! config error (clap's own errors are 2 as well). Results go to stdout (human text, or JSON
//! with `--json`), logs to stderr. A user error prints one message and the usage, never a
//! backtrace.

mod inspect;
mod run;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, Parser, Subcommand, ValueEnum};
use ferry::inspect::JobState;
use ferry_shared::config::Config;
use ferry_shared::services::Services;
use ferry_shared::setup::SetupError;
use ferry_shared::telemetry::LogFormat;

/// The operation ran and failed.
pub(crate) const EXIT_FAILED: u8 = 1;
/// Bad usage or a bad config: nothing was done.
pub(crate) const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Run ferry locally and operate it: serve the pipeline, run one job or sync now, inspect and replay jobs.",
    long_about = None,
    arg_required_else_help = true,
    term_width = 100,
    after_help = "Exit codes: 0 ok; 1 the operation failed (a job dead-lettered, a view failed, a check failed, nothing found); 2 usage or config error.\nResults go to stdout (--json for scripts), logs to stderr (RUST_LOG=debug for more).\nThe demos are their own binary: `make demo` (cargo run --features demo --bin ferry-demo)."
)]
pub(crate) struct Cli {
    /// Log lines on stderr (with timestamps): `text`, `json`, or `auto` (text on a terminal).
    #[arg(long, global = true, hide_possible_values = true, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Auto)]
    pub log_format: LogFormatArg,

    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human lines with timestamps.
    Text,
    /// JSON lines with timestamps.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Auto => LogFormat::Auto,
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

/// `--config FILE`, or `FERRY_CONFIG_FILE`.
#[derive(Debug, Args)]
pub(crate) struct ConfigArg {
    /// The ferry config (JSON; reference in docs/config.md).
    #[arg(long, short = 'c', env = "FERRY_CONFIG_FILE", value_name = "FILE")]
    pub config: PathBuf,
}

/// `--json`.
#[derive(Debug, Args)]
pub(crate) struct JsonArg {
    /// Print results as JSON (one document, or one object per line for listings).
    #[arg(long)]
    pub json: bool,
}

/// `ferry serve --metrics`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum MetricsArg {
    /// Print the functions' metric lines (CloudWatch Embedded Metric Format) to stdout.
    Print,
    /// Do not emit metrics.
    Off,
}

/// `--reconcile-every`: a duration, or `off`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Every {
    /// Run on this interval.
    Every(Duration),
    /// Never.
    Off,
}

fn parse_every(s: &str) -> Result<Every, String> {
    if s == "off" {
        return Ok(Every::Off);
    }
    parse_duration(s).map(Every::Every)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e} (a duration such as 30s, 5m, 24h, 7days)"))
}

fn parse_concurrency(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("a whole number of at least 1".into()),
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the pipeline: webhook server, job worker, view and pub/sub schedules, reconcile sweep.
    #[command(after_help = "\
The webhook server runs when the config has a `webhook` section; the job worker (not with
--ingest-only) first picks up every job a previous run left unfinished. Views sync on their
schedule, pub/sub export sources are refreshed and drained, and the webhook routes' containers are
swept for files whose webhook never came. SIGTERM or Ctrl-C stops cleanly within --grace-period
(exit 0); the next start picks up whatever was interrupted.

Examples:
  ferry serve --config ferry.json
  ferry serve --config ferry.json --listen 0.0.0.0:8080 --concurrency 8 --sync-every 1m
  FERRY_CONFIG_FILE=ferry.json ferry serve --reconcile-every off --metrics off")]
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Address of the webhook server.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: SocketAddr,
        /// Interval of the view sync.
        #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
        sync_every: Duration,
        /// Interval, in seconds, of token-refresh + export-pull (pub/sub export sources).
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        pull_every: u64,
        /// Interval of the reconciliation sweep of the webhook routes, or `off`.
        #[arg(long, default_value = "1h", value_parser = parse_every, value_name = "DURATION|off")]
        reconcile_every: Every,
        /// Jobs run at once.
        #[arg(long, default_value_t = ferry::DEFAULT_CONCURRENCY, value_parser = parse_concurrency, value_name = "N")]
        concurrency: usize,
        /// How long a stop waits for running copies.
        #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
        grace_period: Duration,
        /// Only the webhook server: jobs are written, not run.
        #[arg(long)]
        ingest_only: bool,
        /// Print the metric lines to stdout, or skip them.
        #[arg(long, value_enum, default_value_t = MetricsArg::Print)]
        metrics: MetricsArg,
    },
    /// Validate the config and probe every source, destination, sink and view.
    #[command(after_help = "\
Exit code 1 when any item has a problem; each problem says what is wrong and how to fix it.

Examples:
  ferry check --config ferry.json
  ferry check --config ferry.json --json | jq '.[] | select(.ok | not)'")]
    Check {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        out: JsonArg,
    },
    /// List jobs, page by page, with their state.
    #[command(after_help = "\
A job is `done` when every destination has a receipt, `failed` when it is dead-lettered,
`pending` otherwise (queued, retrying, or interrupted).

Examples:
  ferry jobs --config ferry.json
  ferry jobs --config ferry.json --route hmis-zips --since 24h --state failed
  ferry jobs --config ferry.json --json | jq -r 'select(.state == \"pending\") | .job.id'")]
    Jobs {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this route.
        #[arg(long, value_name = "ROUTE")]
        route: Option<String>,
        /// Only jobs created within this time (e.g. 24h, 7days).
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        since: Option<Duration>,
        /// Only jobs in this state.
        #[arg(long, value_enum)]
        state: Option<JobState>,
        /// Stop after this many jobs.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Keys read per listing request (tests use a small page to cross page boundaries).
        #[arg(long, hide = true, default_value_t = ferry::inspect::PAGE_SIZE, value_name = "N")]
        page_size: usize,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Show one job: the file, each destination's receipt or failure, attempts.
    #[command(after_help = "\
Also shows a refused pub/sub message (an id `msg-…` from `ferry failed`).

Examples:
  ferry show --config ferry.json 3f9c0a…
  ferry show --config ferry.json --json 3f9c0a… | jq '.destinations'")]
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The job id (as `ferry jobs` lists it, or the webhook's `job_id`).
        #[arg(value_name = "JOB_ID")]
        id: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// List dead letters with their reasons: failed jobs and refused pub/sub messages.
    #[command(after_help = "\
Examples:
  ferry failed --config ferry.json
  ferry failed --config ferry.json --route hmis-zips --json
Replay a job with `ferry replay JOB_ID`, or all of them with `ferry replay --all-failed`.")]
    Failed {
        #[command(flatten)]
        config: ConfigArg,
        /// Only failed jobs of this route (refused messages have no route and are left out).
        #[arg(long, value_name = "ROUTE")]
        route: Option<String>,
        /// Keys read per listing request (tests use a small page to cross page boundaries).
        #[arg(long, hide = true, default_value_t = ferry::inspect::PAGE_SIZE, value_name = "N")]
        page_size: usize,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Was file NAME delivered? Where, with which checksum.
    #[command(after_help = "\
NAME matches a job's file by its full name or by its last path segment. Reads every job (of
--route when given). Exit code 1 when no job is for that file.

Examples:
  ferry find --config ferry.json HMIS-2026-11.zip
  ferry find --config ferry.json --route hmis-zips --json HMIS-2026-11.zip | jq '.destinations'")]
    Find {
        #[command(flatten)]
        config: ConfigArg,
        /// The file name.
        #[arg(value_name = "NAME")]
        name: String,
        /// Only jobs of this route.
        #[arg(long, value_name = "ROUTE")]
        route: Option<String>,
        /// Keys read per listing request (tests use a small page to cross page boundaries).
        #[arg(long, hide = true, default_value_t = ferry::inspect::PAGE_SIZE, value_name = "N")]
        page_size: usize,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Clear a dead letter and run the job again now (or every failed job).
    #[command(after_help = "\
The job's key is looked up from its id. Exit code 1 when a replayed job fails again.

Examples:
  ferry replay --config ferry.json 3f9c0a…
  ferry replay --config ferry.json --all-failed --route hmis-zips")]
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// The job id.
        #[arg(
            value_name = "JOB_ID",
            required_unless_present = "all_failed",
            conflicts_with = "all_failed"
        )]
        id: Option<String>,
        /// The job key (not needed: looked up from the id; accepted for old scripts).
        #[arg(value_name = "JOB_KEY", hide = true)]
        key: Option<String>,
        /// Replay every dead-lettered job (refused pub/sub messages are not jobs and are skipped).
        #[arg(long)]
        all_failed: bool,
        /// With --all-failed: only this route.
        #[arg(long, requires = "all_failed", value_name = "ROUTE")]
        route: Option<String>,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Run one job now, as blob-copy would.
    #[command(after_help = "\
Exit code 1 when the job is dead-lettered (or was already), or failed and would be retried.

Examples:
  ferry run-job --config ferry.json jobs/hmis-zips/3f9c0a….json
  ferry run-job --config ferry.json 3f9c0a…")]
    RunJob {
        #[command(flatten)]
        config: ConfigArg,
        /// The job key (`jobs/<route>/<id>.json`) or its id.
        #[arg(value_name = "JOB_KEY|JOB_ID")]
        job: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Sync views once now (all when none is named).
    #[command(after_help = "\
Prints every view's outcome, then exits 1 when any view failed.

Examples:
  ferry sync-views --config ferry.json
  ferry sync-views --config ferry.json orders --json")]
    SyncViews {
        #[command(flatten)]
        config: ConfigArg,
        /// Views to sync.
        #[arg(value_name = "VIEW")]
        views: Vec<String>,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Refresh the pub/sub export tokens that are due.
    #[command(after_help = "\
Examples:
  ferry token-refresh --config ferry.json")]
    TokenRefresh {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Pull pub/sub export notifications into jobs for a while.
    #[command(after_help = "\
Receives for --seconds, then prints the new job keys (run them with `ferry run-job` or let
`ferry serve` pick them up).

Examples:
  ferry export-pull --config ferry.json --seconds 10")]
    ExportPull {
        #[command(flatten)]
        config: ConfigArg,
        /// How long to receive.
        #[arg(long, default_value_t = 60, value_name = "N")]
        seconds: u64,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Sweep the webhook routes' containers once for files whose webhook never came.
    #[command(after_help = "\
Creates the missing jobs (or only counts them with --dry-run). Exit code 1 when a route could not
be swept (e.g. the SAS lacks `l`).

Examples:
  ferry reconcile --config ferry.json --dry-run
  ferry reconcile --config ferry.json --route hmis-zips --lookback 48h")]
    Reconcile {
        #[command(flatten)]
        config: ConfigArg,
        /// Only these routes (repeat the flag for more).
        #[arg(long = "route", value_name = "ROUTE")]
        routes: Vec<String>,
        /// Count, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Consider files created within this time (default: the config's lookback).
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        lookback: Option<Duration>,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Print the state bucket layout (infra/state-layout.json) or its permissions table.
    #[command(after_help = "\
Examples:
  ferry state-layout > infra/state-layout.json
  ferry state-layout --markdown")]
    StateLayout {
        /// The permissions table of docs/deploy.md instead of the JSON.
        #[arg(long)]
        markdown: bool,
    },
    /// Moved: the demo is `ferry-demo` (make demo).
    #[command(hide = true)]
    Demo,
    /// Moved: the view demo is `ferry-demo views` (make demo-views).
    #[command(hide = true)]
    DemoViews,
}

impl Command {
    /// The subcommand's name, as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Serve { .. } => "serve",
            Command::Check { .. } => "check",
            Command::Jobs { .. } => "jobs",
            Command::Show { .. } => "show",
            Command::Failed { .. } => "failed",
            Command::Find { .. } => "find",
            Command::Replay { .. } => "replay",
            Command::RunJob { .. } => "run-job",
            Command::SyncViews { .. } => "sync-views",
            Command::TokenRefresh { .. } => "token-refresh",
            Command::ExportPull { .. } => "export-pull",
            Command::Reconcile { .. } => "reconcile",
            Command::StateLayout { .. } => "state-layout",
            Command::Demo => "demo",
            Command::DemoViews => "demo-views",
        }
    }
}

/// A usage or config error: reported with the command's usage, exit code 2.
#[derive(Debug)]
pub(crate) struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The exit code for an error: 2 for usage and config errors, 1 for the rest.
fn exit_code_of(e: &anyhow::Error) -> u8 {
    let config = e.chain().any(|c| {
        c.is::<UsageError>()
            || c.is::<ferry_shared::config::ConfigError>()
            || matches!(c.downcast_ref::<SetupError>(), Some(SetupError::Config(_)))
    });
    if config { EXIT_USAGE } else { EXIT_FAILED }
}

/// Reads and validates the config; every failure is a config error (exit 2).
pub(crate) async fn services(config: &ConfigArg) -> anyhow::Result<Services> {
    let path = config.config.display();
    let text = std::fs::read_to_string(&config.config)
        .map_err(|e| UsageError(format!("cannot read the config {path}: {e}")))?;
    let config = Config::from_json(&text).map_err(|e| UsageError(format!("config {path}: {e}")))?;
    Ok(Services::new(config).await)
}

/// Runs the parsed command; prints an error (and the usage for a usage error) to stderr.
pub(crate) fn main(cli: Cli) -> ExitCode {
    ferry_shared::telemetry::init_local(cli.log_format.into());
    let name = cli.command.name();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(dispatch(cli.command)));
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = exit_code_of(&e);
            // `{:#}`: the message and its causes on one line; never the Debug form, which
            // would print a backtrace under RUST_BACKTRACE=1.
            eprintln!("error: {e:#}");
            if code == EXIT_USAGE {
                let mut cmd = Cli::command();
                cmd.build();
                if let Some(sub) = cmd.find_subcommand_mut(name) {
                    eprintln!("\n{}", sub.render_usage());
                }
                eprintln!("\nFor more information, try 'ferry {name} --help'.");
            }
            ExitCode::from(code)
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            config,
            listen,
            sync_every,
            pull_every,
            reconcile_every,
            concurrency,
            grace_period,
            ingest_only,
            metrics,
        } => {
            ferry_shared::metrics::set_output(match metrics {
                MetricsArg::Print => ferry_shared::metrics::Output::Stdout,
                MetricsArg::Off => ferry_shared::metrics::Output::Off,
            });
            let services = services(&config).await?;
            run::serve(
                &services,
                run::ServeOptions {
                    listen,
                    sync_every,
                    pull_every: Duration::from_secs(pull_every.max(1)),
                    reconcile_every: match reconcile_every {
                        Every::Every(d) => Some(d.max(Duration::from_secs(1))),
                        Every::Off => None,
                    },
                    concurrency,
                    grace_period,
                    ingest_only,
                },
            )
            .await
        }
        Command::Check { config, out } => {
            let services = services(&config).await?;
            ferry::check::run(&services, out.json).await
        }
        Command::Jobs {
            config,
            route,
            since,
            state,
            limit,
            page_size,
            out,
        } => {
            let services = services(&config).await?;
            let filter = ferry::inspect::JobFilter {
                route,
                since: since.map(|d| std::time::SystemTime::now() - d),
                state,
            };
            inspect::jobs(&services, &filter, limit, page_size, out.json).await
        }
        Command::Show { config, id, out } => {
            let services = services(&config).await?;
            inspect::show(&services, &id, out.json).await
        }
        Command::Failed {
            config,
            route,
            page_size,
            out,
        } => {
            let services = services(&config).await?;
            inspect::failed(&services, route.as_deref(), page_size, out.json).await
        }
        Command::Find {
            config,
            name,
            route,
            page_size,
            out,
        } => {
            let services = services(&config).await?;
            inspect::find(&services, &name, route.as_deref(), page_size, out.json).await
        }
        Command::Replay {
            config,
            id,
            key,
            all_failed,
            route,
            out,
        } => {
            let services = services(&config).await?;
            if all_failed {
                inspect::replay_all(&services, route.as_deref(), out.json).await
            } else {
                let id = id.ok_or_else(|| UsageError("JOB_ID missing".into()))?;
                inspect::replay(&services, &id, key.as_deref(), out.json).await
            }
        }
        Command::RunJob { config, job, out } => {
            let services = services(&config).await?;
            run::run_job(&services, &job, out.json).await
        }
        Command::SyncViews { config, views, out } => {
            let services = services(&config).await?;
            run::sync_views(&services, views, out.json).await
        }
        Command::TokenRefresh { config, out } => {
            let services = services(&config).await?;
            run::token_refresh(&services, out.json).await
        }
        Command::ExportPull {
            config,
            seconds,
            out,
        } => {
            let services = services(&config).await?;
            run::export_pull(&services, Duration::from_secs(seconds), out.json).await
        }
        Command::Reconcile {
            config,
            routes,
            dry_run,
            lookback,
            out,
        } => {
            let services = services(&config).await?;
            run::reconcile(&services, routes, dry_run, lookback, out.json).await
        }
        Command::StateLayout { markdown } => {
            if markdown {
                print!("{}", ferry_shared::layout::permissions_table());
            } else {
                print!("{}", ferry_shared::layout::layout_file());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => Err(UsageError(
            "the demo is its own binary now: `make demo` (or `cargo run --features demo --bin ferry-demo`)".into(),
        )
        .into()),
        Command::DemoViews => Err(UsageError(
            "the view demo is its own binary now: `make demo-views` (or `cargo run --features demo --bin ferry-demo -- views`)".into(),
        )
        .into()),
    }
}

/// Prints one JSON document (pretty) or line (compact) to stdout.
pub(crate) fn print_json(value: &impl serde::Serialize, pretty: bool) -> anyhow::Result<()> {
    let text = if pretty {
        serde_json::to_string_pretty(value)?
    } else {
        serde_json::to_string(value)?
    };
    println!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
