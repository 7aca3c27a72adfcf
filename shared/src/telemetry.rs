//! Structured logs: JSON lines (Lambda and local runs alike), filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global JSON subscriber once; later calls are no-ops. `FERRY_LOG_FORMAT=text`
/// switches to human-readable lines for local use.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let text = std::env::var("FERRY_LOG_FORMAT").is_ok_and(|v| v == "text");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
