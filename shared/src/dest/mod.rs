//! Destinations: where files go. Each takes a byte stream and writes it atomically (a reader
//! sees the whole file or nothing), checks what it wrote, and says where it put it.
//!
//! A delivery may carry a stop instant (the Lambda deadline minus a margin): a destination that
//! can resume (S3 multipart) stops there, keeps what it stored with a checkpoint and returns
//! [`DestinationError::Interrupted`]; the others are dropped by the engine shortly after it and
//! start over in the next invocation.

mod buffers;
pub mod graph;
pub mod http;
pub mod local_dir;
pub mod s3;
pub mod sftp;

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use crate::ByteReader;
use crate::retry::{RetryStop, Retryable};
use crate::source::SourceError;

/// The file being delivered.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Relative name at the destination (validated: no traversal), e.g. `exports/a b.zip`.
    pub name: String,
    /// Exact byte count the stream will yield.
    pub size: u64,
    /// MIME type, when known.
    pub content_type: Option<String>,
    /// Base64 MD5 of the content, when the source provided one.
    pub content_md5: Option<String>,
    /// Stable id of this delivery (job id + destination), for idempotency headers.
    pub idempotency_key: String,
    /// When set, the destination stops by this instant: it saves what it can resume and returns
    /// [`DestinationError::Interrupted`] instead of finishing. `None`: no deadline.
    pub stop_at: Option<tokio::time::Instant>,
}

/// Where a destination put the file and how much it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Secret-free location (`s3://bucket/key`, `sftp://host/path`, URL without query).
    pub location: String,
    /// Bytes the destination confirmed it holds.
    pub bytes: u64,
    /// The destination's own hash of what it holds, when it computes one (Graph).
    pub remote_hash: Option<crate::job::RemoteHash>,
}

/// What went wrong delivering.
#[derive(Debug, Error)]
pub enum DestinationError {
    /// The source stream failed underneath the write.
    #[error(transparent)]
    Source(SourceError),
    /// The destination refused our credentials.
    #[error("destination refused credentials: {0}")]
    Unauthorized(String),
    /// The destination's identity did not match the pinned one (SFTP host key).
    #[error("destination identity check failed: {0}")]
    UntrustedHost(String),
    /// Worth trying again: 5xx, 429, resets, timeouts, a server that went away.
    #[error("destination temporarily unavailable: {reason}")]
    Transient {
        /// What happened (secret-free).
        reason: String,
        /// How long the server asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The destination refused the write for good (4xx other than auth, permissions).
    #[error("destination refused the write: {0}")]
    Rejected(String),
    /// What arrived is not what was sent (size or checksum); nothing was committed.
    #[error("verification failed: {0}")]
    Verification(String),
    /// The file's content was refused by the transform step (gzip bomb, overlong line, bad gzip).
    #[error(transparent)]
    Transform(crate::transform::TransformError),
    /// Stopped at the delivery's stop instant (the invocation deadline) before finishing.
    /// Nothing is visible at the final name; `kept_bytes` of `size` stay stored with a resume
    /// checkpoint and are not sent again by the next run (0 when the destination cannot resume).
    /// Not retried within the invocation: the job is run again by the next one, and this never
    /// counts as a failed attempt.
    #[error(
        "interrupted by the invocation deadline: {kept_bytes} of {size} bytes kept for the next run"
    )]
    Interrupted {
        /// Bytes stored with a resume checkpoint.
        kept_bytes: u64,
        /// The file's size.
        size: u64,
    },
}

impl Retryable for DestinationError {
    fn is_retryable(&self) -> bool {
        match self {
            DestinationError::Source(e) => e.is_retryable(),
            DestinationError::Transient { .. } => true,
            _ => false,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            DestinationError::Source(e) => e.retry_after(),
            DestinationError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
    fn retries_stopped(self, why: RetryStop) -> Self {
        match self {
            DestinationError::Source(e) => DestinationError::Source(e.retries_stopped(why)),
            DestinationError::Transient {
                reason,
                retry_after,
            } => DestinationError::Transient {
                reason: format!("{reason} ({why})"),
                retry_after,
            },
            other => other,
        }
    }
}

impl DestinationError {
    /// The failure's kind as a metric dimension (`Kind` of `DeliveryFailures`): bounded,
    /// `snake_case`, never the message.
    pub fn kind(&self) -> &'static str {
        match self {
            DestinationError::Source(SourceError::AccessDenied { .. }) => "source_access_denied",
            DestinationError::Source(SourceError::NotFound(_)) => "source_not_found",
            DestinationError::Source(SourceError::Transient { .. }) => "source_unavailable",
            DestinationError::Source(_) => "source_refused",
            DestinationError::Unauthorized(_) => "unauthorized",
            DestinationError::UntrustedHost(_) => "untrusted_host",
            DestinationError::Transient { .. } => "unavailable",
            DestinationError::Rejected(_) => "rejected",
            DestinationError::Verification(_) => "verification",
            DestinationError::Transform(_) => "transform",
            DestinationError::Interrupted { .. } => "interrupted",
        }
    }

    /// Classifies an I/O error from a write: the source's own error if it came from the stream,
    /// a verification error if the verifier raised it, else a transient destination failure.
    pub fn from_io(context: &str, e: &std::io::Error) -> Self {
        if let Some(inner) = e.get_ref() {
            if let Some(src) = inner.downcast_ref::<SourceError>() {
                return DestinationError::Source(src.clone());
            }
            if let Some(v) = inner.downcast_ref::<crate::verify::VerifyError>() {
                return DestinationError::Verification(v.to_string());
            }
            if let Some(t) = inner.downcast_ref::<crate::transform::TransformError>() {
                return DestinationError::Transform(t.clone());
            }
        }
        DestinationError::Transient {
            reason: format!("{context}: {e}"),
            retry_after: None,
        }
    }
}

/// The seam every destination implements; `tests/it/destination_conformance.rs` holds the suite
/// each one passes against its real server.
#[async_trait]
pub trait Destination: Send + Sync {
    /// Short kind name for logs and receipts (`s3`, `sftp`, `http`, `local_dir`).
    fn kind(&self) -> &'static str;
    /// Writes `body` (exactly `delivery.size` bytes) under `delivery.name`, atomically, replacing
    /// any existing file of that name. When the stream ends in an error, nothing is left at the
    /// final name.
    async fn write(
        &self,
        delivery: &Delivery,
        body: ByteReader,
    ) -> Result<Written, DestinationError>;
    /// Called once the engine saved this delivery's receipt. A destination that keeps its
    /// resume checkpoint through the commit (so that a run dying between the commit and the
    /// receipt finds the commit done, and does not write the file again) forgets it here.
    async fn receipt_saved(&self, _delivery: &Delivery) {}
}

/// Joins a folder and a relative name with exactly one `/`.
pub fn join_path(folder: &str, name: &str) -> String {
    let folder = folder.trim_end_matches('/');
    if folder.is_empty() {
        name.to_string()
    } else {
        format!("{folder}/{name}")
    }
}
