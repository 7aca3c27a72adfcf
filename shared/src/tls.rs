//! The trust roots of ferry's HTTP clients (sources, destinations, sinks, token services), read
//! once per process.
//!
//! reqwest's default verifier loads the platform's roots again for every client it builds, and
//! on a Debian-style system that is the bundle file plus every entry of `/etc/ssl/certs` (about
//! 440 files): a third of webhook-ingest's cold start, twice over in blob-copy. Here the roots are
//! the system's CA bundle file (`SSL_CERT_FILE` when set, else the one openssl-probe finds:
//! `/etc/pki/tls/certs/ca-bundle.crt` on Lambda's Amazon Linux), read and parsed once, and every
//! client trusts exactly those. Without a bundle file the platform's store is loaded as before.
//! (The AWS SDK loads its own copy once per process, and takes other roots only as PEM that it
//! decodes again for every client it builds: measured slower, see docs/performance.md.)
//!
//! The bundle's base64 is decoded with the `base64` crate's table decoder, not rustls-pki-types'
//! PEM reader, whose decoder runs in constant time because PEM often holds private keys. A CA
//! bundle is public, and that decoder took about 1 ms of every cold start for ~220 KB.

use std::path::Path;
use std::sync::LazyLock;

use base64::Engine as _;
use rustls_pki_types::CertificateDer;

/// Roots from a bundle file, or the platform's store when there is none.
fn load(bundle: Option<&Path>) -> Vec<CertificateDer<'static>> {
    let certs = match bundle {
        Some(file) => match std::fs::read(file) {
            Ok(pem) => {
                let (certs, unreadable) = certificates_in(&pem);
                if unreadable > 0 {
                    tracing::warn!(
                        file = %file.display(),
                        unreadable,
                        "some CA root certificates in the bundle are not valid base64 and were left out"
                    );
                }
                certs
            }
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "could not read the CA bundle");
                Vec::new()
            }
        },
        None => {
            let result = rustls_native_certs::load_native_certs();
            for error in &result.errors {
                tracing::warn!(%error, "could not read some CA root certificates");
            }
            result.certs
        }
    };
    if certs.is_empty() {
        tracing::warn!("no CA root certificates found: HTTPS connections will fail");
    }
    certs
}

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The DER of every `CERTIFICATE` block in a PEM bundle, in order, and how many blocks were not
/// valid base64. Other blocks (`TRUSTED CERTIFICATE`, keys) and text between blocks are skipped,
/// as rustls-pki-types' reader skips them.
fn certificates_in(pem: &[u8]) -> (Vec<CertificateDer<'static>>, usize) {
    let engine = &base64::engine::general_purpose::STANDARD;
    let (mut certs, mut unreadable) = (Vec::new(), 0);
    let pem = String::from_utf8_lossy(pem);
    let mut rest = pem.as_ref();
    let mut text = Vec::new();
    while let Some(start) = rest.find(BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let Some(end) = body.find(END) else {
            unreadable += 1;
            break;
        };
        text.clear();
        text.extend(body[..end].bytes().filter(|b| !b.is_ascii_whitespace()));
        match engine.decode(&text) {
            Ok(der) => certs.push(CertificateDer::from(der)),
            Err(_) => unreadable += 1,
        }
        rest = &body[end + END.len()..];
    }
    (certs, unreadable)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn block(label: &str, der: &[u8], newline: &str) -> String {
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN {label}-----{newline}{}{newline}-----END {label}-----{newline}",
            lines.join(newline)
        )
    }

    #[test]
    fn every_certificate_block_is_decoded_in_order_and_nothing_else() {
        let (one, two, three) = (vec![0x30; 150], vec![0x31; 1], vec![0x32; 700]);
        let bundle = [
            "# Mozilla's roots, as Debian writes them\n".to_string(),
            block("CERTIFICATE", &one, "\n"),
            "\nsome text a tool left between blocks\n".to_string(),
            block("TRUSTED CERTIFICATE", &[0x33; 90], "\n"),
            block("CERTIFICATE", &two, "\r\n"),
            "-----BEGIN CERTIFICATE-----\nnot*base64!\n-----END CERTIFICATE-----\n".to_string(),
            block("PRIVATE KEY", &[0x34; 40], "\n"),
            block("CERTIFICATE", &three, "\n"),
            "-----BEGIN CERTIFICATE-----\nMIIB".to_string(),
        ]
        .concat();
        let (certs, unreadable) = certificates_in(bundle.as_bytes());
        let ders: Vec<&[u8]> = certs.iter().map(|c| c.as_ref()).collect();
        assert_eq!(ders, [&one[..], &two[..], &three[..]]);
        assert_eq!(unreadable, 2, "the bad block and the unterminated one");
    }

    #[test]
    fn the_system_bundle_decodes_to_what_rustls_pki_types_reads() {
        let Some(file) = openssl_probe::probe().cert_file else {
            eprintln!("skipped: this machine has no CA bundle file to compare with");
            return;
        };
        let (mut ours, unreadable) =
            certificates_in(&std::fs::read(&file).expect("read the bundle"));
        let theirs = rustls_native_certs::load_certs_from_paths(Some(&file), None);
        assert!(theirs.errors.is_empty(), "{:?}", theirs.errors);
        assert!(
            theirs.certs.len() > 10,
            "{} holds few roots",
            file.display()
        );
        assert_eq!(unreadable, 0);
        // rustls-native-certs sorts and de-duplicates what it read.
        ours.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        ours.dedup();
        assert_eq!(ours, theirs.certs, "{}", file.display());
    }
}
