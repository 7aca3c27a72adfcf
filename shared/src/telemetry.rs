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
