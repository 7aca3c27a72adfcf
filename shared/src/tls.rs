//! The trust roots of every HTTPS client in a ferry process, read once: its own (sources,
//! destinations, sinks, token services) and the AWS SDK's (state store, S3, Secrets Manager).
//!
//! Left alone, each reads the platform's roots itself: reqwest's default verifier for every
//! client it builds, the AWS SDK once per process from the bundle file and then every entry of
//! `SSL_CERT_DIR` or the probed directory (about 290 files on a Debian-style system, each root a
//! second time). That was a third of a function's cold start (docs/performance.md). Here the
//! roots are the system's CA bundle file (`SSL_CERT_FILE` when set, else the one openssl-probe
//! finds: `/etc/pki/tls/certs/ca-bundle.crt` on Lambda's Amazon Linux), read and decoded once;
//! without a bundle file, the platform's store. Every client trusts exactly those, through one
//! rustls configuration they all share ([`client_tls`]): ferry's own reqwest clients, and the AWS
//! SDK's HTTP client, which is reqwest too (built in the `http_client` module, which, like every
//! client, takes its roots from here). Roots rustls cannot take as a trust anchor are left out,
//! with a warning, so no client build fails on an odd entry.
//!
//! The bundle's base64 is decoded with SIMD (`base64-simd`), not rustls-pki-types' PEM reader,
//! whose decoder runs in constant time because PEM often holds private keys. A CA bundle is
//! public, and that decoder took about 1 ms of every cold start for ~220 KB; the `base64` crate's
//! table decoder, 1.5M instructions.

use std::path::Path;
use std::sync::LazyLock;

use memchr::memmem;
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

/// Every `CERTIFICATE` block in a PEM bundle, in order, and how many blocks were not valid
/// base64. Other blocks (`TRUSTED CERTIFICATE`, keys) and text between blocks are skipped,
/// as rustls-pki-types' reader skips them.
fn certificates_in(pem: &[u8]) -> (Vec<CertificateDer<'static>>, usize) {
    let (begin, end) = (memmem::Finder::new(BEGIN), memmem::Finder::new(END));
    let (mut certs, mut unreadable) = (Vec::new(), 0);
    let mut rest = pem;
    let mut text = Vec::new();
    while let Some(start) = begin.find(rest) {
        let body = &rest[start + BEGIN.len()..];
        let Some(stop) = end.find(body) else {
            unreadable += 1;
            break;
        };
        // Line by line: a byte-by-byte filter over the ~220 KB bundle cost more than its decode.
        let block = &body[..stop];
        text.clear();
        let mut from = 0;
        for newline in memchr::memchr_iter(b'\n', block).chain([block.len()]) {
            text.extend_from_slice(block[from..newline].trim_ascii());
            from = newline + 1;
        }
        match base64_simd::STANDARD.decode_to_vec(&text) {
            Ok(der) => certs.push(CertificateDer::from(der)),
            Err(_) => unreadable += 1,
        }
        rest = &body[stop + END.len()..];
    }
    (certs, unreadable)
}

/// The TLS settings of every HTTP client in a process: one rustls configuration trusting the
/// process's roots, which each client takes a copy of (its root store is shared, not copied).
/// Given only the roots, reqwest parses every root into a store of its own for each client it
/// builds: about 4K instructions a root, 0.6M per client on a cold start.
#[derive(Clone)]
pub struct ClientTls {
    config: rustls::ClientConfig,
    roots: usize,
}

impl ClientTls {
    /// What reqwest builds from `tls_certs_only` and its defaults: its crypto provider (AWS-LC),
    /// TLS 1.2 and 1.3, SNI, no client certificate, HTTP/2 and HTTP/1.1 offered by ALPN.
    fn trusting(store: rustls::RootCertStore) -> Self {
        let roots = store.len();
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .expect("AWS-LC supports TLS 1.2 and 1.3")
            .with_root_certificates(store)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self { config, roots }
    }

    /// How many roots are trusted.
    pub fn roots(&self) -> usize {
        self.roots
    }

    /// The configuration, for `reqwest::ClientBuilder::tls_backend_preconfigured`.
    pub fn config(&self) -> rustls::ClientConfig {
        self.config.clone()
    }
}

/// The roots rustls can take as trust anchors, in one store. Each is added borrowed:
/// `RootCertStore::add` keeps an anchor of its own.
fn anchors(roots: &[CertificateDer<'static>]) -> rustls::RootCertStore {
    let mut store = rustls::RootCertStore::empty();
    let (_, left_out) =
        store.add_parsable_certificates(roots.iter().map(|r| CertificateDer::from(r.as_ref())));
    if left_out > 0 {
        tracing::warn!(
            left_out,
            "CA root certificates that are not usable trust anchors were left out"
        );
    }
    store
}

static ROOTS: LazyLock<ClientTls> = LazyLock::new(|| {
    ClientTls::trusting(anchors(&load(openssl_probe::probe().cert_file.as_deref())))
});

/// The process's trust roots, as every HTTP client takes them (read on first use).
pub fn client_tls() -> &'static ClientTls {
    &ROOTS
}

/// Roots from one PEM bundle file, as [`client_tls`] reads the system's (for tests and tools).
pub fn client_tls_from(bundle: &Path) -> ClientTls {
    ClientTls::trusting(anchors(&load(Some(bundle))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

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

    /// The system's CA bundle file and what [`certificates_in`] reads from it; `None` (and a line
    /// saying the test is skipped) on a machine without one.
    fn system_bundle() -> Option<(std::path::PathBuf, (Vec<CertificateDer<'static>>, usize))> {
        let Some(file) = openssl_probe::probe().cert_file else {
            eprintln!("skipped: this machine has no CA bundle file");
            return None;
        };
        let read = certificates_in(&std::fs::read(&file).expect("read the bundle"));
        Some((file, read))
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
    fn a_root_rustls_cannot_take_is_left_out_and_the_rest_kept() {
        let Some((_, (roots, _))) = system_bundle() else {
            return;
        };
        let real = roots.into_iter().next().expect("a root in the bundle");
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x05]);
        let store = anchors(&[junk, real.clone()]);
        assert_eq!(store.len(), 1, "the clients trust the real root alone");
        let mut alone = rustls::RootCertStore::empty();
        alone.add(real).expect("the real root is an anchor");
        assert_eq!(store.roots, alone.roots);
    }

    #[test]
    fn the_system_bundle_decodes_to_what_rustls_pki_types_reads() {
        let Some((file, (ours, unreadable))) = system_bundle() else {
            return;
        };
        let theirs = rustls_native_certs::load_certs_from_paths(Some(&file), None);
        assert!(theirs.errors.is_empty(), "{:?}", theirs.errors);
        assert!(
            theirs.certs.len() > 10,
            "{} holds few roots",
            file.display()
        );
        assert_eq!(unreadable, 0);
        let mut ours = ours;
        // rustls-native-certs sorts and de-duplicates what it read.
        ours.sort_unstable_by(|a, b| a.as_ref().cmp(b.as_ref()));
        ours.dedup();
        assert_eq!(ours, theirs.certs, "{}", file.display());
    }

    /// What a client built by `http_client` offers in its TLS ClientHello, read by rustls' own
    /// server-side parser: ALPN h2 then http/1.1, and the host's name (SNI), as reqwest offered
    /// with its own configuration.
    #[tokio::test]
    async fn a_client_offers_http2_and_http1_and_names_the_host() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("the client connects");
            let mut acceptor = rustls::server::Acceptor::default();
            loop {
                let read = acceptor
                    .read_tls(&mut stream)
                    .expect("read the ClientHello");
                assert!(read > 0, "the client closed before its ClientHello");
                if let Some(accepted) = acceptor.accept().map_err(|(e, _)| e).expect("a hello") {
                    let hello = accepted.client_hello();
                    let alpn: Vec<Vec<u8>> = hello
                        .alpn()
                        .map(|offered| offered.map(<[u8]>::to_vec).collect())
                        .unwrap_or_default();
                    return (alpn, hello.server_name().map(str::to_owned));
                }
            }
        });
        let client = crate::http_client::build(std::time::Duration::from_secs(5));
        // The server reads the hello and hangs up: the request fails, what it offered is kept.
        let _ = client
            .get(format!("https://localhost:{port}/"))
            .send()
            .await;
        let (alpn, name) = server.join().expect("the server thread");
        assert_eq!(alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(name.as_deref(), Some("localhost"));
    }
}
