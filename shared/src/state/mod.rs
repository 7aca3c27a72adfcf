//! The state store: small JSON objects in object storage, with conditional writes as the only
//! concurrency primitive (create-once with `If-None-Match: *`, compare-and-swap with `If-Match`).
//!
//! Two backends: [`S3StateStore`] (production, moto locally) and [`MemoryStateStore`] (the fast
//! test tier). Both pass the same contract, [`conformance`].

pub mod conformance;
mod memory;

pub use memory::MemoryStateStore;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::layout::{Access, Function};
use crate::retry::{RetryStop, Retryable};
use crate::s3::{S3Failure, classify};

/// How a put treats an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Write unconditionally.
    Overwrite,
    /// Write only if no object exists at the key (`If-None-Match: *`).
    Create,
    /// Write only if the current object still has this ETag (`If-Match`).
    Update(String),
}

/// A stored object and the version it was read at.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// Object body.
    pub body: Bytes,
    /// ETag to pass to `PutMode::Update` for a compare-and-swap.
    pub etag: String,
}

/// One page of a listing (see [`StateStore::list_page`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Keys of this page, in key order.
    pub keys: Vec<String>,
    /// The key to pass as `start_after` for the next page; `None` after the last page.
    pub next: Option<String>,
}

/// What went wrong with a state operation.
#[derive(Debug, Error)]
pub enum StateError {
    /// `PutMode::Create` found an object already there.
    #[error("state object {key} already exists")]
    AlreadyExists {
        /// The object's key.
        key: String,
    },
    /// `PutMode::Update` found a different version (someone else wrote first).
    #[error("state object {key} changed since it was read")]
    PreconditionFailed {
        /// The object's key.
        key: String,
    },
    /// Worth trying again: throttling, 5xx, 409 conflict, timeouts, connection errors.
    #[error("state store unavailable: {0}")]
    Transient(String),
    /// Not worth retrying: access denied, missing bucket, bad request.
    #[error("state store refused the request: {0}")]
    Permanent(String),
    /// A stored object is not the JSON we expect.
    #[error("state object {key} is corrupt: {reason}")]
    Corrupt {
        /// The object's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Retryable for StateError {
    fn is_retryable(&self) -> bool {
        matches!(self, StateError::Transient(_))
    }
    fn retries_stopped(self, why: RetryStop) -> Self {
        match self {
            StateError::Transient(reason) => StateError::Transient(format!("{reason} ({why})")),
            other => other,
        }
    }
}

/// The seam every state backend implements; every backend passes [`conformance`]
/// (run on S3 by `tests/it/state_conformance.rs`, on memory by this crate's unit tests).
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Reads an object; `None` when absent.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StateError>;
    /// Writes an object under `mode`; returns the new ETag.
    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<String, StateError>;
    /// Deletes an object; deleting an absent object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StateError>;
    /// Lists keys under a prefix, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError>;
    /// Lists at most `max` keys under a prefix that sort after `start_after`, in key order:
    /// inspection reads a large prefix page by page instead of loading it whole. The default
    /// slices a full [`list`](Self::list); a backend that can page overrides it.
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Page, StateError> {
        let keys: Vec<String> = self
            .list(prefix)
            .await?
            .into_iter()
            .filter(|k| start_after.is_none_or(|after| k.as_str() > after))
            .take(max.saturating_add(1))
            .collect();
        Ok(page_of(keys, max))
    }
}

/// The first `max` of `keys`, with a `next` when there were more.
fn page_of(mut keys: Vec<String>, max: usize) -> Page {
    let more = keys.len() > max;
    keys.truncate(max);
    let next = if more { keys.last().cloned() } else { None };
    Page { keys, next }
}

/// Typed JSON helpers over any `StateStore`.
#[async_trait]
pub trait StateStoreExt: StateStore {
    /// Reads and parses a JSON object, with its ETag.
    async fn get_json<T: DeserializeOwned + Send>(
        &self,
        key: &str,
    ) -> Result<Option<(T, String)>, StateError> {
        match self.get(key).await? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v.body)
                .map(|t| Some((t, v.etag)))
                .map_err(|e| StateError::Corrupt {
                    key: key.to_string(),
                    reason: e.to_string(),
                }),
        }
    }
    /// Serialises and writes a JSON object.
    async fn put_json<T: Serialize + Sync>(
        &self,
        key: &str,
        value: &T,
        mode: PutMode,
    ) -> Result<String, StateError> {
        let body = serde_json::to_vec_pretty(value)
            .map_err(|e| StateError::Permanent(format!("cannot serialise {key}: {e}")))?;
        self.put(key, Bytes::from(body), mode).await
    }
}

impl<S: StateStore + ?Sized> StateStoreExt for S {}

/// The production state store: an S3 bucket (or moto locally).
pub struct S3StateStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3StateStore {
    /// A store over `bucket` using a client built once at cold start.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

/// Every error names the operation and the key, so an AccessDenied says which prefix a role
/// lacks (`put done/<job>/<dest>.json: AccessDenied ...`).
fn to_state_error(op: &str, key: &str, failure: S3Failure, mode: Option<&PutMode>) -> StateError {
    match (failure, mode) {
        (S3Failure::PreconditionFailed, Some(PutMode::Create)) => {
            StateError::AlreadyExists { key: key.into() }
        }
        (S3Failure::PreconditionFailed, _) => StateError::PreconditionFailed { key: key.into() },
        (S3Failure::NotFound, _) => StateError::Permanent(format!("{op} {key}: not found")),
        (S3Failure::Transient(t), _) => StateError::Transient(format!("{op} {key}: {t}")),
        (S3Failure::Permanent(t), _) => StateError::Permanent(format!("{op} {key}: {t}")),
    }
}

#[async_trait]
impl StateStore for S3StateStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                return match classify(&e) {
                    S3Failure::NotFound => Ok(None),
                    f => Err(to_state_error("get", key, f, None)),
                };
            }
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StateError::Transient(format!("reading {key}: {e}")))?
            .into_bytes();
        Ok(Some(Versioned { body, etag }))
    }

    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<String, StateError> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(body.into());
        req = match &mode {
            PutMode::Overwrite => req,
            PutMode::Create => req.if_none_match("*"),
            PutMode::Update(etag) => req.if_match(etag),
        };
        match req.send().await {
            Ok(out) => Ok(out.e_tag().unwrap_or_default().to_string()),
            Err(e) => Err(to_state_error("put", key, classify(&e), Some(&mode))),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StateError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify(&e) {
                S3Failure::NotFound => Ok(()),
                f => Err(to_state_error("delete", key, f, None)),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| to_state_error("list", prefix, classify(&e), None))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        keys.sort();
        Ok(keys)
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Page, StateError> {
        let max_keys = i32::try_from(max.clamp(1, 1000)).unwrap_or(1000);
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_string))
            .max_keys(max_keys)
            .send()
            .await
            .map_err(|e| to_state_error("list", prefix, classify(&e), None))?;
        let mut keys: Vec<String> = page
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        keys.sort();
        let next = if page.is_truncated().unwrap_or(false) {
            keys.last().cloned()
        } else {
            None
        };
        Ok(Page { keys, next })
    }
}

/// A state store limited to what one function may do by the state layout
/// ([`crate::layout::Function::grants`]), which is also what its IAM role allows in AWS. Every
/// function's builder in `services` wraps its store in one, so any test or local run that drives a
/// function fails at once, naming the function, the operation and the key, when the code touches
/// state its role would not let it touch; in AWS the same access would be an AccessDenied.
pub struct Scoped {
    inner: std::sync::Arc<dyn StateStore>,
    function: Function,
}

impl Scoped {
    /// `inner`, limited to `function`'s grants.
    pub fn new(inner: std::sync::Arc<dyn StateStore>, function: Function) -> Self {
        Self { inner, function }
    }

    fn check(&self, access: Access, op: &str, key: &str) -> Result<(), StateError> {
        if self.function.may(access, key) {
            return Ok(());
        }
        Err(StateError::Permanent(format!(
            "{op} {key}: {} may not {op} there: the state layout (shared/src/layout.rs) grants it no {op} below that prefix",
            self.function.name()
        )))
    }
}

#[async_trait]
impl StateStore for Scoped {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        self.check(Access::Get, "get", key)?;
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<String, StateError> {
        self.check(Access::Put, "put", key)?;
        self.inner.put(key, body, mode).await
    }

    async fn delete(&self, key: &str) -> Result<(), StateError> {
        self.check(Access::Delete, "delete", key)?;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        // Listing reveals key names only; a function that may read below a prefix may list it.
        self.check(Access::Get, "list", prefix)?;
        self.inner.list(prefix).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Page, StateError> {
        self.check(Access::Get, "list", prefix)?;
        self.inner.list_page(prefix, start_after, max).await
    }
}
