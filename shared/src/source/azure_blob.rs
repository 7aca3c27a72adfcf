//! Azure Blob Storage read with a SAS token (container, account or blob SAS; stored access
//! policies included). Get Blob Properties for the metadata, one long Get Blob for the bytes,
//! resumed with `Range` + `If-Match` after a broken connection.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use tokio_util::io::StreamReader;

use super::{Source, SourceError, SourceObject};
use crate::ByteReader;
use crate::retry::{RetryPolicy, retry_after_header, status_is_retryable};
use crate::secret::expose;

/// Azure's REST version we speak; SAS requests may omit it but pinning it keeps behaviour stable.
const API_VERSION: &str = "2021-08-06";

/// Characters left as they are in a blob path: unreserved ones and `/` between folders.
const PATH_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// An Azure Blob source. Cheap to clone; build once per cold start.
#[derive(Clone)]
pub struct AzureBlobSource {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    account_url: String,
    sas: SecretString,
    retry: RetryPolicy,
    max_resumes: u32,
}

impl AzureBlobSource {
    /// `account_url` like `https://acct.blob.core.windows.net` or
    /// `http://127.0.0.1:10000/devstoreaccount1`; `sas` is the SAS query string.
    pub fn new(
        http: reqwest::Client,
        account_url: &str,
        sas: SecretString,
        retry: RetryPolicy,
        max_resumes: u32,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                account_url: account_url.trim_end_matches('/').to_string(),
                sas,
                retry,
                max_resumes,
            }),
        }
    }
}

impl Inner {
    /// The blob URL with its SAS; never logged (see `display_url`).
    fn signed_url(&self, container: &str, name: &str) -> String {
        let sas = expose(&self.sas).trim_start_matches('?');
        format!("{}?{sas}", self.display_url(container, name))
    }

    fn display_url(&self, container: &str, name: &str) -> String {
        format!(
            "{}/{}/{}",
            self.account_url,
            container,
            utf8_percent_encode(name, PATH_KEEP)
        )
    }

    async fn properties(&self, container: &str, name: &str) -> Result<SourceObject, SourceError> {
        let resp = self
            .http
            .head(self.signed_url(container, name))
            .header("x-ms-version", API_VERSION)
            .send()
            .await
            .map_err(transport_error)?;
        let resp = check_status(resp, &self.display_url(container, name))?;
        let h = resp.headers();
        let text = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        let size = text("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                SourceError::Permanent("Get Blob Properties returned no Content-Length".into())
            })?;
        Ok(SourceObject {
            container: container.to_string(),
            name: name.to_string(),
            size,
            etag: text("etag").ok_or_else(|| {
                SourceError::Permanent("Get Blob Properties returned no ETag".into())
            })?,
            content_md5: text("content-md5").filter(|v| !v.is_empty()),
            content_type: text("content-type"),
        })
    }

    /// Starts a Get Blob at `offset`, pinned to the object's ETag.
    async fn get_from(&self, object: &SourceObject, offset: u64) -> Result<Response, SourceError> {
        let mut req = self
            .http
            .get(self.signed_url(&object.container, &object.name))
            .header("x-ms-version", API_VERSION)
            .header("If-Match", &object.etag);
        if offset > 0 {
            req = req.header("x-ms-range", format!("bytes={offset}-"));
        }
        let resp = req.send().await.map_err(transport_error)?;
        if resp.status() == StatusCode::PRECONDITION_FAILED {
            return Err(SourceError::Changed {
                etag: object.etag.clone(),
            });
        }
        check_status(resp, &self.display_url(&object.container, &object.name))
    }
}

/// Maps a reqwest failure to a `SourceError`, dropping the URL (it carries the SAS).
fn transport_error(e: reqwest::Error) -> SourceError {
    SourceError::Transient {
        reason: e.without_url().to_string(),
        retry_after: None,
    }
}

fn check_status(resp: Response, what: &str) -> Result<Response, SourceError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let code = resp
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(status.canonical_reason().unwrap_or("error"))
        .to_string();
    Err(match status.as_u16() {
        404 => SourceError::NotFound(what.to_string()),
        401 | 403 => SourceError::AccessDenied { code },
        412 => SourceError::Changed {
            etag: String::new(),
        },
        s if status_is_retryable(s) => SourceError::Transient {
            reason: format!("HTTP {s} {code} from {what}"),
            retry_after: retry_after_header(resp.headers()),
        },
        s => SourceError::Permanent(format!("HTTP {s} {code} from {what}")),
    })
}

/// Streaming state: where we are in the object and the response we are reading.
struct ReadState {
    inner: Arc<Inner>,
    object: SourceObject,
    offset: u64,
    response: Option<Response>,
    resumes: u32,
}

impl ReadState {
    async fn next_chunk(mut self) -> Result<Option<(Bytes, ReadState)>, std::io::Error> {
        loop {
            if self.offset >= self.object.size {
                return Ok(None);
            }
            let response = match self.response.as_mut() {
                Some(r) => r,
                None => {
                    let (inner, object, offset) =
                        (self.inner.clone(), self.object.clone(), self.offset);
                    let resp = inner
                        .retry
                        .run("azure get blob (resume)", || {
                            inner.get_from(&object, offset)
                        })
                        .await?;
                    self.response = Some(resp);
                    continue;
                }
            };
            let failure = match response.chunk().await {
                Ok(Some(bytes)) => {
                    self.offset += bytes.len() as u64;
                    if self.offset > self.object.size {
                        return Err(SourceError::Changed {
                            etag: self.object.etag.clone(),
                        }
                        .into());
                    }
                    return Ok(Some((bytes, self)));
                }
                Ok(None) => "connection closed early".to_string(),
                Err(e) => e.without_url().to_string(),
            };
            self.response = None;
            self.resumes += 1;
            if self.resumes > self.inner.max_resumes {
                return Err(SourceError::Transient {
                    reason: format!(
                        "gave up after {} resumes at byte {}: {failure}",
                        self.inner.max_resumes, self.offset
                    ),
                    retry_after: None,
                }
                .into());
            }
            tracing::warn!(
                blob = %self.inner.display_url(&self.object.container, &self.object.name),
                offset = self.offset,
                reason = %failure,
                "source read interrupted; resuming with a range read"
            );
            tokio::time::sleep(Duration::from_millis(50 * u64::from(self.resumes))).await;
        }
    }
}

#[async_trait]
impl Source for AzureBlobSource {
    async fn stat(&self, container: &str, name: &str) -> Result<SourceObject, SourceError> {
        let inner = &self.inner;
        inner
            .retry
            .run("azure get blob properties", || {
                inner.properties(container, name)
            })
            .await
    }

    async fn open(&self, object: &SourceObject) -> Result<ByteReader, SourceError> {
        let first = if object.size == 0 {
            None
        } else {
            let inner = &self.inner;
            Some(
                inner
                    .retry
                    .run("azure get blob", || inner.get_from(object, 0))
                    .await?,
            )
        };
        let state = ReadState {
            inner: self.inner.clone(),
            object: object.clone(),
            offset: 0,
            response: first,
            resumes: 0,
        };
        let chunks = stream::try_unfold(state, ReadState::next_chunk);
        Ok(Box::pin(StreamReader::new(chunks)))
    }
}
