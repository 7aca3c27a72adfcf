//! The transform step between a source and its destinations, for pub/sub export files:
//! gzip'd files (`contentEncoding: gzip`) are decompressed as a stream (several gzip members
//! allowed), with a cap on the decompressed size and, for line-oriented files (jsonl, xml lines),
//! on the length of one line, so a gzip bomb is refused early with a clear reason instead of
//! filling memory or disk.
//!
//! Destinations need the exact length up front (S3 single PUT, HTTP Content-Length, the verifying
//! reader), which a gzip stream does not tell: a decompressed delivery is staged once per run in a
//! temporary file (bounded by the cap, memory stays bounded) and streamed from there to every
//! destination.
//!
//! `LineSplitter` cuts a decompressed line-oriented stream into records one at a time with the same
//! line cap; it is the seam where jsonl files will feed a record sink.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::digest::Md5;
use async_compression::tokio::bufread::GzipDecoder;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf};

use crate::ByteReader;
use crate::retry::{RetryStop, Retryable};
use crate::source::source_error_in;
use crate::verify::VerifyError;

/// Caps applied while decompressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most decompressed bytes accepted.
    pub max_bytes: u64,
    /// Longest line accepted (line-oriented files only).
    pub max_line_bytes: Option<usize>,
}

/// Why a file's content was refused. None of these heal by retrying.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TransformError {
    #[error(
        "gzip bomb refused: the decompressed file exceeds the cap of {limit} bytes (max_decompressed_bytes)"
    )]
    /// The decompressed file is over `max_decompressed_bytes`.
    TooLarge {
        /// The cap that was exceeded.
        limit: u64,
    },
    #[error(
        "line {line} of the decompressed file is longer than the cap of {limit} bytes (max_line_bytes); refused"
    )]
    /// A line is over `max_line_bytes`.
    LineTooLong {
        /// The cap that was exceeded.
        limit: usize,
        /// The line's number, from 1.
        line: u64,
    },
    /// Not valid gzip.
    #[error("the file is not valid gzip: {0}")]
    Corrupt(String),
    /// OpenPGP encryption failed.
    #[error("OpenPGP encryption refused: {0}")]
    Encrypt(String),
}

impl Retryable for TransformError {
    fn is_retryable(&self) -> bool {
        false
    }
    fn retries_stopped(self, _why: RetryStop) -> Self {
        self
    }
}

/// Finds the `TransformError` inside an I/O error, if there is one.
pub fn transform_error_in(e: &io::Error) -> Option<&TransformError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<TransformError>())
}

/// Decompresses `reader` (gzip, several members allowed) as a stream, enforcing `limits`.
/// Errors surface as `io::Error`s wrapping a `TransformError`, or the source's own error.
pub fn gunzip(reader: ByteReader, limits: Limits) -> ByteReader {
    let mut decoder = GzipDecoder::new(BufReader::new(reader));
    decoder.multiple_members(true);
    Box::pin(Capped {
        inner: Box::pin(decoder),
        limits,
        total: 0,
        line_len: 0,
        line: 1,
    })
}

/// Counts bytes and line lengths, failing as soon as a cap is passed.
struct Capped {
    inner: ByteReader,
    limits: Limits,
    total: u64,
    line_len: usize,
    line: u64,
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match self.inner.as_mut().poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => {
                let ours = source_error_in(&e).is_some()
                    || e.get_ref()
                        .is_some_and(|i| i.downcast_ref::<VerifyError>().is_some());
                return Poll::Ready(Err(if ours {
                    e
                } else {
                    io::Error::other(TransformError::Corrupt(e.to_string()))
                }));
            }
            Poll::Pending => return Poll::Pending,
        }
        let new = &buf.filled()[before..];
        let total = self.total + new.len() as u64;
        if total > self.limits.max_bytes {
            let limit = self.limits.max_bytes;
            buf.set_filled(before);
            return Poll::Ready(Err(io::Error::other(TransformError::TooLarge { limit })));
        }
        let (mut line_len, mut line) = (self.line_len, self.line);
        if let Some(max) = self.limits.max_line_bytes {
            for &b in new {
                if b == b'\n' {
                    line_len = 0;
                    line += 1;
                } else {
                    line_len += 1;
                    if line_len > max {
                        buf.set_filled(before);
                        return Poll::Ready(Err(io::Error::other(TransformError::LineTooLong {
                            limit: max,
                            line,
                        })));
                    }
                }
            }
        }
        self.total = total;
        self.line_len = line_len;
        self.line = line;
        Poll::Ready(Ok(()))
    }
}

/// A decompressed file staged on local disk (deleted when dropped).
pub struct Spooled {
    path: tempfile::TempPath,
    /// Bytes in the file.
    pub size: u64,
    /// Base64 MD5 of the file (verified again on every read).
    pub md5_base64: String,
}

impl Spooled {
    /// Writes `reader` to a new temporary file in `dir`.
    pub async fn write(mut reader: ByteReader, dir: &Path) -> io::Result<Self> {
        let path = tempfile::Builder::new()
            .prefix("ferry-spool-")
            .tempfile_in(dir)?
            .into_temp_path();
        let mut file = tokio::fs::File::create(&path).await?;
        let mut md5 = Md5::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            md5.update(&buf[..n]);
            file.write_all(&buf[..n]).await?;
            size += n as u64;
        }
        file.flush().await?;
        file.sync_all().await?;
        Ok(Self {
            path,
            size,
            md5_base64: base64::engine::general_purpose::STANDARD.encode(md5.finalize()),
        })
    }

    /// A file already written by the caller (e.g. the encrypting step) at `path`.
    pub fn from_file(path: tempfile::TempPath, size: u64, md5_base64: String) -> Self {
        Self {
            path,
            size,
            md5_base64,
        }
    }

    /// A fresh reader over the staged bytes.
    pub async fn open(&self) -> io::Result<ByteReader> {
        let file = tokio::fs::File::open(&self.path).await?;
        Ok(Box::pin(file))
    }
}

/// Cuts a line-oriented stream (jsonl, xml lines) into records, one line at a time, never
/// holding more than one line: the end of line (`\n`, `\r\n`) is dropped, empty lines skipped,
/// and a line longer than the cap is an error.
pub struct LineSplitter {
    reader: BufReader<ByteReader>,
    max_line: usize,
    line: u64,
}

impl LineSplitter {
    /// A splitter over `reader` (already decompressed).
    pub fn new(reader: ByteReader, max_line: usize) -> Self {
        Self {
            reader: BufReader::new(reader),
            max_line,
            line: 0,
        }
    }

    /// The line number (1-based, empty lines counted) of the line `next_record` returned last.
    pub fn line_number(&self) -> u64 {
        self.line
    }

    /// The next non-empty line, or `None` at the end.
    pub async fn next_record(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let mut record = BytesMut::new();
            let mut ended = false;
            self.line += 1;
            loop {
                let available = self.reader.fill_buf().await?;
                if available.is_empty() {
                    ended = true;
                    break;
                }
                let (take, newline) = match available.iter().position(|&b| b == b'\n') {
                    Some(i) => (i, true),
                    None => (available.len(), false),
                };
                if record.len() + take > self.max_line + 1 {
                    return Err(io::Error::other(TransformError::LineTooLong {
                        limit: self.max_line,
                        line: self.line,
                    }));
                }
                record.extend_from_slice(&available[..take]);
                self.reader.consume(take + usize::from(newline));
                if newline {
                    break;
                }
            }
            if record.last() == Some(&b'\r') {
                record.truncate(record.len() - 1);
            }
            if record.len() > self.max_line {
                return Err(io::Error::other(TransformError::LineTooLong {
                    limit: self.max_line,
                    line: self.line,
                }));
            }
            if !record.is_empty() {
                return Ok(Some(record.freeze()));
            }
            if ended {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gz(parts: &[&[u8]]) -> Vec<u8> {
        // Several members back to back, as concatenated gzip files are.
        let mut out = Vec::new();
        for p in parts {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(p).unwrap();
            out.extend(e.finish().unwrap());
        }
        out
    }

    async fn run(data: Vec<u8>, limits: Limits) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        gunzip(Box::pin(std::io::Cursor::new(data)), limits)
            .read_to_end(&mut out)
            .await?;
        Ok(out)
    }

    const ROOMY: Limits = Limits {
        max_bytes: 1 << 20,
        max_line_bytes: Some(100),
    };

    #[tokio::test]
    async fn multi_member_gzip_decompresses_whole() {
        let out = run(gz(&[b"{\"a\":1}\n", b"{\"b\":2}\n"]), ROOMY)
            .await
            .unwrap();
        assert_eq!(out, b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[tokio::test]
    async fn bombs_long_lines_and_garbage_are_refused() {
        let zeros = vec![b'\n'; 4 << 20];
        let bomb = gz(&[&zeros]);
        assert!(bomb.len() < 64 * 1024, "a real bomb: {} bytes", bomb.len());
        let e = run(bomb, ROOMY).await.unwrap_err();
        assert_eq!(
            transform_error_in(&e),
            Some(&TransformError::TooLarge { limit: 1 << 20 })
        );
        let long = [b"ok\n".to_vec(), vec![b'x'; 101]].concat();
        let e = run(gz(&[&long]), ROOMY).await.unwrap_err();
        assert_eq!(
            transform_error_in(&e),
            Some(&TransformError::LineTooLong {
                limit: 100,
                line: 2
            })
        );
        let no_line_cap = Limits {
            max_line_bytes: None,
            ..ROOMY
        };
        assert_eq!(
            run(gz(&[&long]), no_line_cap).await.unwrap().len(),
            long.len()
        );
        let e = run(b"definitely not gzip".to_vec(), ROOMY)
            .await
            .unwrap_err();
        assert!(
            matches!(transform_error_in(&e), Some(TransformError::Corrupt(_))),
            "{e}"
        );
    }

    #[tokio::test]
    async fn line_splitter_yields_records_and_enforces_the_cap() {
        let data = b"{\"a\":1}\r\n\n{\"b\":2}\n{\"c\":3}".to_vec();
        let mut s = LineSplitter::new(Box::pin(std::io::Cursor::new(data)), 8);
        let mut got = Vec::new();
        while let Some(r) = s.next_record().await.unwrap() {
            got.push(r);
        }
        assert_eq!(got, vec![&b"{\"a\":1}"[..], b"{\"b\":2}", b"{\"c\":3}"]);
        let mut s = LineSplitter::new(
            Box::pin(std::io::Cursor::new(b"short\nmuch too long\n".to_vec())),
            8,
        );
        assert_eq!(s.next_record().await.unwrap().unwrap(), &b"short"[..]);
        let e = s.next_record().await.unwrap_err();
        assert_eq!(
            transform_error_in(&e),
            Some(&TransformError::LineTooLong { limit: 8, line: 2 })
        );
    }

    #[tokio::test]
    async fn spool_round_trips_with_md5() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spooled::write(Box::pin(&b"hello"[..]), dir.path())
            .await
            .unwrap();
        assert_eq!(
            (s.size, s.md5_base64.as_str()),
            (5, "XUFAKrxLKna5cZ2REBfFkg==")
        );
        let mut back = Vec::new();
        s.open()
            .await
            .unwrap()
            .read_to_end(&mut back)
            .await
            .unwrap();
        assert_eq!(back, b"hello");
    }
}
