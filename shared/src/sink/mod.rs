//! Sinks: where view records go. A sink receives records in chunks and must be idempotent per
//! record version (`RecordID`, `lastSubmissionId`): a rerun after a failure delivers the same
//! records again, and applying them again must change nothing. `tests/it/sink_conformance.rs` holds
//! the suite every sink passes against its real server.

pub mod http;
pub mod postgres;
pub mod s3_jsonl;

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use crate::retry::{RetryStop, Retryable};
use crate::view_sync::record::{Cursor, Record};

/// One chunk of a view, in cursor order.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The watermark the chunk starts after (`None`: the view's beginning). Every record's cursor
    /// is greater. A rerun after a failure starts after the same watermark, so this names the
    /// chunk stably even when the rerun's chunk ends elsewhere (see the S3 sink's keys).
    pub after: Option<Cursor>,
    /// The records, cursors ascending (equal cursors never straddle two chunks).
    pub records: Vec<Record>,
}

impl Chunk {
    /// The highest cursor in the chunk (the last record's).
    pub fn last_cursor(&self) -> Option<&Cursor> {
        self.records.last().map(|r| &r.cursor)
    }
}

/// What a sink did with a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkReceipt {
    /// Secret-free location (`s3://bucket/key`, `postgres://host/db/table`, URL without query).
    pub location: String,
    /// Records the sink accepted (delivered or already present).
    pub records: usize,
    /// Of those, records the sink reported as newly applied, where it can tell (Postgres);
    /// otherwise equal to `records`.
    pub applied: usize,
}

/// What went wrong delivering a chunk.
#[derive(Debug, Error)]
pub enum SinkError {
    /// The sink refused our credentials.
    #[error("sink refused credentials: {0}")]
    Unauthorized(String),
    /// Worth trying again: 5xx, 429, resets, timeouts, a lost database connection.
    #[error("sink temporarily unavailable: {reason}")]
    Transient {
        /// What happened (secret-free).
        reason: String,
        /// How long the server asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The sink refused the records for good (4xx other than auth, constraint or type errors).
    #[error("sink refused the records: {0}")]
    Rejected(String),
}

impl Retryable for SinkError {
    fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Transient { .. })
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
    fn retries_stopped(self, why: RetryStop) -> Self {
        match self {
            SinkError::Transient {
                reason,
                retry_after,
            } => SinkError::Transient {
                reason: format!("{reason} ({why})"),
                retry_after,
            },
            other => other,
        }
    }
}

impl SinkError {
    /// A transient error without a server-given delay.
    pub fn transient(reason: impl Into<String>) -> Self {
        SinkError::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }
}

/// The seam every sink implements.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Short kind name for logs (`http`, `s3_jsonl`, `postgres`).
    fn kind(&self) -> &'static str;
    /// Delivers every record of `chunk` of view `view`. Must be safe to call again with the same
    /// records (or a chunk after the same watermark with more or fewer records): nothing may end
    /// up applied twice. On error, some records may have been applied; the caller retries or
    /// stops without advancing its watermark past this chunk.
    async fn deliver(&self, view: &str, chunk: &Chunk) -> Result<SinkReceipt, SinkError>;
}
