//! Metrics (CloudWatch Embedded Metric Format). A stub on the `cli` branch with the API the
//! `metrics` branch provides, so `ferry serve --metrics print|off` can be wired already; that
//! branch replaces this file.

use std::sync::atomic::{AtomicBool, Ordering};

/// Where metric lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Printed to stdout, one EMF JSON line per invocation (what Lambda's log pipeline reads).
    Stdout,
    /// Not emitted (local runs that do not want them).
    Off,
}

static OFF: AtomicBool = AtomicBool::new(false);

/// Sets where metric lines go for the rest of the process.
pub fn set_output(output: Output) {
    OFF.store(output == Output::Off, Ordering::SeqCst);
}
