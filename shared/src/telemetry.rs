//! Structured logs, filtered by `RUST_LOG`. The Lambda functions log JSON lines to stdout without
//! timestamps (Lambda stamps each line itself); the local `ferry` command logs to stderr, so its
//! stdout carries only results, with timestamps, as human text or JSON lines.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber of a Lambda function once; later calls are no-ops: JSON lines
/// on stdout. `FERRY_LOG_FORMAT=text` switches to human-readable lines.
pub fn init() {
    let text = std::env::var("FERRY_LOG_FORMAT").is_ok_and(|v| v == "text");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_target(false);
    let _ = if text {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .without_time()
            .try_init()
    };
}

/// How a local command writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human lines (`2026-11-29T12:00:00.123Z  INFO message key=value`) when stderr is a
    /// terminal, JSON lines otherwise (a log file or a collector).
    Auto,
    /// Human lines with a timestamp, level and fields.
    Text,
    /// One JSON object per line with a `timestamp` field; the fields sit at the top level.
    Json,
}

/// Installs the global subscriber of a local command (the `ferry` binary) once; later calls
/// are no-ops. Every line goes to stderr, with a timestamp.
pub fn init_local(format: LogFormat) {
    let text = match format {
        LogFormat::Auto => std::io::stderr().is_terminal(),
        LogFormat::Text => true,
        LogFormat::Json => false,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = if text {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
}

/// Why a function could not start: the error's own text, also as its `Debug` form, so the line
/// `main` exits with reads `Error: config is not valid JSON for ferry: ...`, not a variant name.
pub struct StartupError(String);

impl std::fmt::Debug for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartupError {}

/// A cold-start step's result: on failure, logs one JSON error line (`"cold start failed"` with
/// the error, e.g. a secret the role may not read) where Lambda collects the function's logs,
/// and returns an error whose text is the same.
pub fn startup<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, StartupError> {
    result.map_err(|e| {
        let text = e.to_string();
        tracing::error!(error = %text, "cold start failed");
        StartupError(text)
    })
}
