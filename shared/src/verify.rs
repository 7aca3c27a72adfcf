//! Verifying reader: counts and hashes the bytes as they stream past, and turns a short,
//! long or corrupt stream into an error *before* the destination sees end-of-file, so the
//! destination never commits a bad file.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::ByteReader;
use crate::digest::Md5;

/// Why a stream failed verification.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The stream was shorter or longer than announced.
    #[error("expected {expected} bytes, source delivered {actual}")]
    Size {
        /// What the source announced.
        expected: u64,
        /// What the bytes gave.
        actual: u64,
    },
    /// The bytes hash to another MD5 than the source stored.
    #[error("MD5 mismatch: source says {expected}, bytes hash to {actual}")]
    Md5 {
        /// What the source announced.
        expected: String,
        /// What the bytes gave.
        actual: String,
    },
}

/// Digests of a fully read stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// Bytes seen.
    pub bytes: u64,
    /// Hex MD5, computed only when the stream had an MD5 to be checked against: MD5 is the
    /// costliest step of a plain copy (about 40 % of its CPU), so nothing pays for it unchecked.
    pub md5_hex: Option<String>,
    /// Hex SHA-256.
    pub sha256_hex: String,
}

struct Hashers {
    bytes: u64,
    md5: Option<Md5>,
    sha256: Sha256,
}

/// A handle to read the digests once the stream is finished.
#[derive(Clone)]
pub struct DigestHandle(Arc<Mutex<Option<Digests>>>);

impl DigestHandle {
    /// The digests if the stream reached a verified end, else `None`.
    pub fn get(&self) -> Option<Digests> {
        self.0.lock().expect("digest lock").clone()
    }
}

/// Wraps `inner`; `expected_md5` is base64 as sources report it.
pub fn verifying(
    inner: ByteReader,
    expected_size: u64,
    expected_md5: Option<String>,
) -> (ByteReader, DigestHandle) {
    let handle = DigestHandle(Arc::new(Mutex::new(None)));
    let md5 = expected_md5.as_ref().map(|_| Md5::new());
    let reader = VerifyingReader {
        inner,
        expected_size,
        expected_md5,
        hashers: Some(Hashers {
            bytes: 0,
            md5,
            sha256: Sha256::new(),
        }),
        done: handle.clone(),
    };
    (Box::pin(reader), handle)
}

struct VerifyingReader {
    inner: ByteReader,
    expected_size: u64,
    expected_md5: Option<String>,
    hashers: Option<Hashers>,
    done: DigestHandle,
}

impl VerifyingReader {
    fn finish(&mut self) -> std::io::Result<()> {
        let Some(h) = self.hashers.take() else {
            return Ok(());
        };
        if h.bytes != self.expected_size {
            return Err(std::io::Error::other(VerifyError::Size {
                expected: self.expected_size,
                actual: h.bytes,
            }));
        }
        let md5 = h.md5.map(|m| m.finalize());
        if let (Some(expected), Some(md5)) = (&self.expected_md5, &md5) {
            let actual = base64::engine::general_purpose::STANDARD.encode(md5);
            if &actual != expected {
                return Err(std::io::Error::other(VerifyError::Md5 {
                    expected: expected.clone(),
                    actual,
                }));
            }
        }
        *self.done.0.lock().expect("digest lock") = Some(Digests {
            bytes: h.bytes,
            md5_hex: md5.map(hex::encode),
            sha256_hex: hex::encode(h.sha256.finalize()),
        });
        Ok(())
    }
}

impl AsyncRead for VerifyingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match self.inner.as_mut().poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    return Poll::Ready(self.finish());
                }
                let len = new.len() as u64;
                let expected = self.expected_size;
                if let Some(h) = self.hashers.as_mut() {
                    if let Some(md5) = h.md5.as_mut() {
                        md5.update(new);
                    }
                    h.sha256.update(new);
                    h.bytes += len;
                    if h.bytes > expected {
                        let actual = h.bytes;
                        // An erroring read must not hand out bytes.
                        buf.set_filled(before);
                        return Poll::Ready(Err(std::io::Error::other(VerifyError::Size {
                            expected,
                            actual,
                        })));
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn reader(data: &'static [u8]) -> ByteReader {
        Box::pin(data)
    }

    #[tokio::test]
    async fn good_stream_yields_digests() {
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(b"hello"));
        let (mut r, h) = verifying(reader(b"hello"), 5, Some(md5));
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        let d = h.get().unwrap();
        assert_eq!(d.bytes, 5);
        assert_eq!(
            d.sha256_hex,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(
            d.md5_hex.as_deref(),
            Some("5d41402abc4b2a76b9719d911017c592"),
            "checked against the source's MD5, so it is in the digests"
        );
    }

    #[tokio::test]
    async fn without_a_source_md5_no_md5_is_computed() {
        let (mut r, h) = verifying(reader(b"hello"), 5, None);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        let d = h.get().unwrap();
        assert_eq!(d.md5_hex, None);
        assert_eq!(
            d.sha256_hex,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[tokio::test]
    async fn short_long_and_corrupt_streams_fail_before_eof() {
        for (data, size, md5) in [
            (&b"hell"[..], 5, None),
            (&b"hello!"[..], 5, None),
            (
                &b"hellO"[..],
                5,
                Some(base64::engine::general_purpose::STANDARD.encode(Md5::digest(b"hello"))),
            ),
        ] {
            let (mut r, h) = verifying(Box::pin(data), size, md5);
            let mut out = Vec::new();
            let e = r.read_to_end(&mut out).await.unwrap_err();
            assert!(e.get_ref().unwrap().downcast_ref::<VerifyError>().is_some());
            assert!(h.get().is_none());
        }
    }
}
