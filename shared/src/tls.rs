//! The trust roots of ferry's HTTP clients (sources, destinations, sinks, token services), read
//! once per process.
//!
//! reqwest's default verifier loads the platform's roots again for every client it builds, and
//! on a Debian-style system that is the bundle file plus every entry of `/etc/ssl/certs` (about
//! 440 files): a third of webhook-ingest's cold start, twice over in blob-copy. Here the roots are
//! the system's CA bundle file (`SSL_CERT_FILE` when set, else the one openssl-probe finds:
//! `/etc/pki/tls/certs/ca-bundle.crt` on Lambda's Amazon Linux), read and parsed once, and every
//! client trusts exactly those. Without a bundle file the platform's store is loaded as before.
//! (The AWS SDK loads its own copy once per process.)

use std::path::Path;
use std::sync::LazyLock;

use rustls_pki_types::CertificateDer;

/// Roots read from a bundle file, or the platform's store when there is none.
fn load(bundle: Option<&Path>) -> Vec<CertificateDer<'static>> {
    let result = match bundle {
        Some(file) => rustls_native_certs::load_certs_from_paths(Some(file), None),
        None => rustls_native_certs::load_native_certs(),
    };
    for error in &result.errors {
        tracing::warn!(%error, "could not read some CA root certificates");
    }
    if result.certs.is_empty() {
        tracing::warn!("no CA root certificates found: HTTPS connections will fail");
    }
    result.certs
}

static ROOTS: LazyLock<Vec<reqwest::Certificate>> = LazyLock::new(|| {
    let bundle = openssl_probe::probe().cert_file;
    certificates(&load(bundle.as_deref()))
});

fn certificates(roots: &[CertificateDer<'static>]) -> Vec<reqwest::Certificate> {
    roots
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der).ok())
        .collect()
}

/// The process's trust roots, as reqwest takes them (read on first use).
pub fn roots() -> &'static [reqwest::Certificate] {
    &ROOTS
}

/// Roots from one PEM bundle file, as [`roots`] reads the system's (for tests and tools).
pub fn roots_from(bundle: &Path) -> Vec<reqwest::Certificate> {
    certificates(&load(Some(bundle)))
}
