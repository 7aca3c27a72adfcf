//! Sources: where files come from. A source describes an object (size, ETag, MD5) and opens a
//! byte stream that survives broken connections by resuming with range reads.

pub mod azure_blob;
pub mod ranged;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ByteReader;
use crate::retry::{RetryStop, Retryable};

/// What a source knows about one object before reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceObject {
    /// Container (bucket, share) the object is in.
    pub container: String,
    /// Object name inside the container.
    pub name: String,
    /// Exact size in bytes.
    pub size: u64,
    /// Version tag; reads are pinned to it so a file replaced mid-copy is detected.
    pub etag: String,
    /// Base64 MD5 of the whole content, when the source stores one.
    #[serde(default)]
    pub content_md5: Option<String>,
    /// MIME type, when known.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Absolute URL (without credentials) for objects addressed by URL rather than by container
    /// and name (pub/sub export files); `None` for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl SourceObject {
    /// True until the object's properties were read (`Source::resolve`): pub/sub export jobs are
    /// saved from the notification alone, without touching the blob.
    pub fn is_unresolved(&self) -> bool {
        self.etag.is_empty()
    }
}

/// One blob of a container listing, with the times the reconciliation window is judged by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// What `Source::stat` would say about it (same ETag format, so the same job id).
    pub object: SourceObject,
    /// When the blob was created, when the listing says so.
    pub created: Option<std::time::SystemTime>,
    /// When the blob was last written.
    pub last_modified: Option<std::time::SystemTime>,
}

impl ListedObject {
    /// The time a lookback window is compared with: creation, else last modification.
    pub fn time(&self) -> Option<std::time::SystemTime> {
        self.created.or(self.last_modified)
    }
}

/// One page of a container listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// The blobs of this page, in the listing's (lexicographic) order.
    pub objects: Vec<ListedObject>,
    /// Where the next page starts; `None` on the last page.
    pub next_marker: Option<String>,
}

/// What went wrong reading a source.
#[derive(Debug, Clone, Error)]
pub enum SourceError {
    /// The object (or container) does not exist.
    #[error("source object not found: {0}")]
    NotFound(String),
    /// Credentials refused: SAS expired, revoked (stored access policy removed) or wrong.
    #[error("source denied access ({code}): the SAS token is expired, revoked or lacks permission")]
    AccessDenied {
        /// The storage service's error code.
        code: String,
    },
    /// The object changed (new ETag) after the job was created.
    #[error("source object changed while being copied (ETag no longer {etag})")]
    Changed {
        /// The ETag the job was pinned to.
        etag: String,
    },
    /// 5xx, 429, 408, resets, timeouts: worth another try.
    #[error("source temporarily unavailable: {reason}")]
    Transient {
        /// What happened (secret-free).
        reason: String,
        /// How long the server asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Anything else the source refused.
    #[error("source refused the request: {0}")]
    Permanent(String),
    /// We refused to send credentials for this object (its URL is outside the allowed bases).
    #[error("refused to fetch: {0}")]
    Refused(String),
}

impl Retryable for SourceError {
    fn is_retryable(&self) -> bool {
        matches!(self, SourceError::Transient { .. })
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            SourceError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
    fn retries_stopped(self, why: RetryStop) -> Self {
        match self {
            SourceError::Transient {
                reason,
                retry_after,
            } => SourceError::Transient {
                reason: format!("{reason} ({why})"),
                retry_after,
            },
            other => other,
        }
    }
}

impl From<SourceError> for std::io::Error {
    fn from(e: SourceError) -> Self {
        std::io::Error::other(e)
    }
}

/// Finds the `SourceError` inside an I/O error raised while streaming, if there is one.
pub fn source_error_in(e: &std::io::Error) -> Option<&SourceError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<SourceError>())
}

/// The seam every source implements.
#[async_trait]
pub trait Source: Send + Sync {
    /// Reads an object's properties.
    async fn stat(&self, container: &str, name: &str) -> Result<SourceObject, SourceError>;
    /// Brings an object up to date before it is read: sources whose jobs are saved without
    /// reading the object (pub/sub exports) read its size, ETag and MD5 here. Others return it
    /// unchanged.
    async fn resolve(&self, object: &SourceObject) -> Result<SourceObject, SourceError> {
        Ok(object.clone())
    }
    /// Lists one page of at most `max_results` blobs of `container` whose names start with
    /// `prefix`, from `marker` (the previous page's `next_marker`). Sources that cannot list
    /// say so.
    async fn list_page(
        &self,
        _container: &str,
        _prefix: &str,
        _marker: Option<&str>,
        _max_results: u32,
    ) -> Result<ListPage, SourceError> {
        Err(SourceError::Permanent(
            "this source cannot list its objects".into(),
        ))
    }
    /// Deletes the object, pinned to `object.etag` when it has one (a replaced file is kept:
    /// `SourceError::Changed`). `Ok(false)` when it was already gone. Sources that cannot
    /// delete say so.
    async fn delete(&self, _object: &SourceObject) -> Result<bool, SourceError> {
        Err(SourceError::Permanent(
            "this source cannot delete its objects".into(),
        ))
    }
    /// Opens the object's bytes, pinned to `object.etag`. Broken connections are resumed with
    /// range reads inside the stream; errors that survive that surface as `io::Error`s wrapping
    /// a `SourceError` (see `source_error_in`).
    async fn open(&self, object: &SourceObject) -> Result<ByteReader, SourceError>;
}
