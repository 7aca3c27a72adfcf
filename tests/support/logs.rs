//! Captures every log line of the test process (our crates and dependencies, debug level) so
//! tests can assert that no secret ever reached a log.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

static LINES: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LINES
            .get_or_init(Default::default)
            .lock()
            .unwrap()
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing JSON subscriber (once per process).
pub(crate) fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::new(
            "debug,hyper=info,hyper_util=info,h2=info,rustls=info",
        );
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// Everything logged so far.
pub(crate) fn text() -> String {
    String::from_utf8_lossy(&LINES.get_or_init(Default::default).lock().unwrap()).into_owned()
}

/// Panics if any of `secrets` (or their URL-encoded forms) appears in the captured logs.
pub(crate) fn assert_no_secrets(secrets: &[&str]) {
    let logs = text();
    assert!(
        !logs.is_empty(),
        "log capture is empty: the subscriber is not installed"
    );
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        let encoded: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
        for form in [s.to_string(), encoded] {
            if let Some(at) = logs.find(&form) {
                let start = at.saturating_sub(120);
                panic!(
                    "secret leaked into logs: …{}…",
                    &logs[start..(at + form.len()).min(logs.len())]
                );
            }
        }
    }
}
