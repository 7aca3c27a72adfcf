//! Azure Blob Storage read with a SAS token (container, account or blob SAS; stored access
//! policies included). Get Blob Properties for the metadata; the bytes of a small blob with one
//! long Get Blob, those of a large one with several ranged Get Blobs at once (`x-ms-range`,
//! reassembled in order by `super::ranged`), every request pinned with `If-Match` and each one
//! resumed on its own with a narrower range after a broken connection.
//!
//! Requests are signed by a `BlobCredentials`: a fixed SAS from the config, or rotating tokens
//! (pub/sub exports), where a 401/403 triggers one refresh and the request is sent once more.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream;
use percent_encoding::utf8_percent_encode;
use reqwest::{RequestBuilder, Response, StatusCode};
use secrecy::SecretString;
use tokio_util::io::StreamReader;

use super::ranged::{self, ParallelReads, RangeSender};
use super::{ListPage, ListedObject, Source, SourceError, SourceObject};
use crate::ByteReader;
use crate::http_client::{HttpClass, classify};
use crate::names::URL_PATH_KEEP;
use crate::probe::{ProbeResult, Problem};
use crate::redact::redact_url;
use crate::retry::RetryPolicy;
use crate::secret::expose;

/// Azure's REST version we speak; SAS requests may omit it but pinning it keeps behaviour stable.
const API_VERSION: &str = "2021-08-06";

/// Signs blob requests.
#[async_trait]
pub trait BlobCredentials: Send + Sync {
    /// The URL to request for `url` (a blob URL without query), with its credential, and the
    /// generation of that credential. Never logged.
    async fn sign(&self, url: &str) -> Result<(String, u64), SourceError>;
    /// A request signed with `generation` was refused (401/403): true when newer credentials
    /// are now available and the request is worth sending once more.
    async fn refused(&self, _generation: u64) -> Result<bool, SourceError> {
        Ok(false)
    }
}

/// A fixed SAS from the config.
struct StaticSas(SecretString);

#[async_trait]
impl BlobCredentials for StaticSas {
    async fn sign(&self, url: &str) -> Result<(String, u64), SourceError> {
        let sas = expose(&self.0).trim_start_matches('?');
        Ok((format!("{url}?{sas}"), 0))
    }
}

/// An Azure Blob source. Cheap to clone; build once per cold start.
#[derive(Clone)]
pub struct AzureBlobSource {
    inner: Arc<Inner>,
    reads: ParallelReads,
}

struct Inner {
    http: reqwest::Client,
    /// Account URL for objects addressed by container and name; `None` when every object
    /// carries its own URL.
    account_url: Option<String>,
    credentials: Arc<dyn BlobCredentials>,
    retry: RetryPolicy,
    max_resumes: u32,
}

impl AzureBlobSource {
    /// Builds the source from its config, resolving its SAS.
    pub async fn from_config(
        config: &crate::config::AzureBlobConfig,
        secrets: &crate::secret::SecretResolver,
        retry: RetryPolicy,
        max_resumes: u32,
    ) -> Result<Self, crate::setup::SetupError> {
        let http = crate::http_client::build(Duration::from_secs(config.read_timeout_secs));
        let sas = secrets.resolve(&config.sas).await?;
        Ok(
            Self::new(http, &config.account_url, sas, retry, max_resumes).with_parallel_reads(
                ParallelReads {
                    streams: config.read_streams,
                    range_bytes: config.read_range_mib << 20,
                    ahead_bytes: config.read_ahead_mib << 20,
                },
            ),
        )
    }

    /// Reads blobs larger than `reads.range_bytes` with `reads.streams` ranged requests at once
    /// (the default is `ParallelReads::default()`).
    pub fn with_parallel_reads(mut self, reads: ParallelReads) -> Self {
        self.reads = reads;
        self
    }

    /// `account_url` like `https://acct.blob.core.windows.net` or
    /// `http://127.0.0.1:10000/devstoreaccount1`; `sas` is the SAS query string.
    pub fn new(
        http: reqwest::Client,
        account_url: &str,
        sas: SecretString,
        retry: RetryPolicy,
        max_resumes: u32,
    ) -> Self {
        Self::with_credentials(
            http,
            Some(account_url),
            Arc::new(StaticSas(sas)),
            retry,
            max_resumes,
        )
    }

    /// A source signed by `credentials`; without `account_url`, objects must carry their URL.
    pub fn with_credentials(
        http: reqwest::Client,
        account_url: Option<&str>,
        credentials: Arc<dyn BlobCredentials>,
        retry: RetryPolicy,
        max_resumes: u32,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                account_url: account_url.map(|u| u.trim_end_matches('/').to_string()),
                credentials,
                retry,
                max_resumes,
            }),
            reads: ParallelReads::default(),
        }
    }
}

impl Inner {
    /// The object's URL without credentials (safe to log).
    fn url_of(
        &self,
        container: &str,
        name: &str,
        url: Option<&str>,
    ) -> Result<String, SourceError> {
        if let Some(url) = url {
            return Ok(url.to_string());
        }
        let account = self.account_url.as_deref().ok_or_else(|| {
            SourceError::Permanent("this source addresses blobs by URL only".into())
        })?;
        Ok(format!(
            "{account}/{container}/{}",
            utf8_percent_encode(name, URL_PATH_KEEP)
        ))
    }

    fn object_url(&self, object: &SourceObject) -> Result<String, SourceError> {
        self.url_of(&object.container, &object.name, object.url.as_deref())
    }

    /// Sends a signed request; a 401/403 gets one more try when the credentials were renewed.
    async fn send(
        &self,
        url: &str,
        build: impl Fn(&reqwest::Client, String) -> RequestBuilder,
    ) -> Result<Response, SourceError> {
        let (signed, generation) = self.credentials.sign(url).await?;
        let resp = build(&self.http, signed)
            .send()
            .await
            .map_err(transport_error)?;
        if matches!(resp.status().as_u16(), 401 | 403)
            && self.credentials.refused(generation).await?
        {
            tracing::info!(blob = %redact_url(url), "blob access refused; retrying once with refreshed tokens");
            let (signed, _) = self.credentials.sign(url).await?;
            return build(&self.http, signed)
                .send()
                .await
                .map_err(transport_error);
        }
        Ok(resp)
    }

    async fn properties(
        &self,
        container: &str,
        name: &str,
        url: Option<&str>,
    ) -> Result<SourceObject, SourceError> {
        let plain = self.url_of(container, name, url)?;
        let resp = self
            .send(&plain, |http, signed| {
                http.head(signed).header("x-ms-version", API_VERSION)
            })
            .await?;
        let resp = check_status(resp, &redact_url(&plain))?;
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
            url: url.map(str::to_string),
        })
    }

    /// Starts a Get Blob at `offset`, pinned to the object's ETag.
    async fn get_from(&self, object: &SourceObject, offset: u64) -> Result<Response, SourceError> {
        self.get_range(object, offset, None).await
    }

    /// Starts a Get Blob of bytes `offset..end` (to the end of the blob without `end`), pinned
    /// to the object's ETag. A bounded range must be answered 206 with exactly that range.
    async fn get_range(
        &self,
        object: &SourceObject,
        offset: u64,
        end: Option<u64>,
    ) -> Result<Response, SourceError> {
        let plain = self.object_url(object)?;
        let range = match end {
            Some(end) => Some(format!("bytes={offset}-{}", end - 1)),
            None if offset > 0 => Some(format!("bytes={offset}-")),
            None => None,
        };
        let resp = self
            .send(&plain, |http, signed| {
                let req = http
                    .get(signed)
                    .header("x-ms-version", API_VERSION)
                    .header("If-Match", &object.etag);
                match &range {
                    Some(range) => req.header("x-ms-range", range),
                    None => req,
                }
            })
            .await?;
        if resp.status() == StatusCode::PRECONDITION_FAILED {
            return Err(SourceError::Changed {
                etag: object.etag.clone(),
            });
        }
        let resp = check_status(resp, &redact_url(&plain))?;
        if let Some(end) = end
            && (resp.status() != StatusCode::PARTIAL_CONTENT
                || resp.content_length() != Some(end - offset))
        {
            return Err(SourceError::Permanent(format!(
                "Get Blob of bytes {offset}-{} of {} was answered {} with {:?} bytes, not the range",
                end - 1,
                redact_url(&plain),
                resp.status(),
                resp.content_length()
            )));
        }
        Ok(resp)
    }
}

impl Inner {
    /// Delete Blob, pinned to the copied version: 202 deleted, 404 already gone, 412 replaced.
    async fn delete_once(&self, object: &SourceObject) -> Result<bool, SourceError> {
        let plain = self.object_url(object)?;
        let resp = self
            .send(&plain, |http, signed| {
                let req = http
                    .delete(signed)
                    .header("x-ms-version", API_VERSION)
                    .header("x-ms-delete-snapshots", "include");
                if object.etag.is_empty() {
                    req
                } else {
                    req.header("if-match", object.etag.as_str())
                }
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        let what = format!("Delete Blob {}", redact_url(&plain));
        match check_status(resp, &what) {
            Ok(_) => Ok(true),
            Err(SourceError::Changed { .. }) => Err(SourceError::Changed {
                etag: object.etag.clone(),
            }),
            Err(e) => Err(e),
        }
    }

    /// List Blobs (design 6b): one page of `container`, names starting with `prefix`.
    async fn list_once(
        &self,
        container: &str,
        prefix: &str,
        marker: Option<&str>,
        max_results: u32,
    ) -> Result<ListPage, SourceError> {
        let account = self.account_url.as_deref().ok_or_else(|| {
            SourceError::Permanent("this source addresses blobs by URL only: it cannot list".into())
        })?;
        let plain = format!(
            "{account}/{}",
            utf8_percent_encode(container, URL_PATH_KEEP)
        );
        let query = {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("restype", "container")
                .append_pair("comp", "list")
                .append_pair("maxresults", &max_results.to_string());
            if !prefix.is_empty() {
                q.append_pair("prefix", prefix);
            }
            if let Some(m) = marker.filter(|m| !m.is_empty()) {
                q.append_pair("marker", m);
            }
            q.finish()
        };
        let resp = self
            .send(&plain, |http, signed| {
                // `signed` already carries `?<sas>`: the listing's parameters follow it.
                http.get(format!("{signed}&{query}"))
                    .header("x-ms-version", API_VERSION)
            })
            .await?;
        let what = format!("List Blobs of {}", redact_url(&plain));
        let resp = check_status(resp, &what)?;
        let body = resp.text().await.map_err(transport_error)?;
        parse_list(container, &body)
            .map_err(|e| SourceError::Permanent(format!("{what} returned unreadable XML: {e}")))
    }
}

/// What a probe request found.
enum Answer {
    /// 2xx.
    Success,
    /// Any other status, with Azure's error code (`x-ms-error-code`).
    Status { status: u16, code: String },
}

impl AzureBlobSource {
    /// `ferry check`: can this SAS do what ferry needs on `containers` (the containers the
    /// source's routes name)? Reads the SAS's own `se` (expiry) and `sp` (permissions) when it
    /// carries them, then asks Azure: List Blobs with `maxresults=1` (needs `l`, which the
    /// reconcile sweep uses) and a Get Blob of a name that does not exist (404 with `r`, 403
    /// `AuthorizationPermissionMismatch` without it). Reads nothing and writes nothing.
    pub async fn probe(&self, containers: &[String]) -> ProbeResult {
        let inner = &self.inner;
        let account = inner.account_url.clone().unwrap_or_default();
        let (signed, _) = inner
            .credentials
            .sign(&format!("{account}/probe"))
            .await
            .map_err(|e| Problem::new(e.to_string(), "check the source's SAS secret"))?;
        let sas: Vec<(String, String)> = url::Url::parse(&signed)
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default();
        let param = |k: &str| sas.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let renew = "issue a new SAS (or extend the stored access policy's expiry) and store it in the source's sas secret";
        if let Some(se) = param("se")
            && let Some(expiry) = parse_sas_time(se)
            && expiry <= std::time::SystemTime::now()
        {
            return Err(Problem::new(format!("the SAS expired at {se}"), renew));
        }
        let mut lacks = Vec::new();
        if let Some(sp) = param("sp") {
            if !sp.contains('r') {
                lacks.push(LACKS_R);
            }
            if !sp.contains('l') {
                lacks.push(LACKS_L);
            }
        }
        for container in containers {
            if !lacks.is_empty() {
                break;
            }
            let plain = format!(
                "{account}/{}",
                utf8_percent_encode(container, URL_PATH_KEEP)
            );
            let shown = redact_url(&plain);
            let list = self
                .probe_request(&plain, "restype=container&comp=list&maxresults=1")
                .await?;
            let read = self
                .probe_request(
                    &format!("{plain}/.ferry-check-{:016x}", rand::random::<u64>()),
                    "",
                )
                .await?;
            for (answer, missing, needs_success) in
                [(&list, LACKS_L, true), (&read, LACKS_R, false)]
            {
                match answer {
                    Answer::Success => {}
                    // A read of a blob that does not exist: the SAS may read.
                    Answer::Status { status: 404, code }
                        if !needs_success && code == "BlobNotFound" => {}
                    Answer::Status { status: 403, code }
                        if code == "AuthorizationPermissionMismatch" =>
                    {
                        lacks.push(missing)
                    }
                    Answer::Status { status: 404, code } if code == "ContainerNotFound" => {
                        return Err(Problem::new(
                            format!("container {container:?} does not exist at {shown}"),
                            "create the container or correct the route's container name",
                        ));
                    }
                    Answer::Status { status: 403, code } => {
                        return Err(Problem::new(
                            format!(
                                "Azure refused the SAS on container {container:?} (HTTP 403 {code}): it is expired, revoked (its stored access policy was changed or removed) or not signed for this account and container"
                            ),
                            renew,
                        ));
                    }
                    Answer::Status { status, code } => {
                        return Err(Problem::new(
                            format!("{shown} answered HTTP {status} {code}"),
                            "check account_url and the container name",
                        ));
                    }
                }
            }
        }
        if lacks.is_empty() {
            return Ok(());
        }
        Err(Problem::new(
            format!("the SAS lacks {}", lacks.join(" and ")),
            "add the missing permissions to the SAS (or to its stored access policy): ferry needs r (read) to copy files and l (list) for the reconcile sweep",
        ))
    }

    /// One signed GET for the probe (no retries: a check answers quickly); the status and
    /// Azure's error code.
    async fn probe_request(&self, plain: &str, query: &str) -> Result<Answer, Problem> {
        let resp = self
            .inner
            .send(plain, |http, signed| {
                let url = if query.is_empty() {
                    signed
                } else {
                    format!("{signed}&{query}")
                };
                http.get(url).header("x-ms-version", API_VERSION)
            })
            .await
            .map_err(|e| {
                Problem::new(
                    format!("cannot reach {}: {e}", redact_url(plain)),
                    "check account_url and that this machine can reach the storage account",
                )
            })?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(Answer::Success);
        }
        let header = resp
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let code = match header {
            Some(code) => code,
            None => {
                let body = resp.text().await.unwrap_or_default();
                body.split_once("<Code>")
                    .and_then(|(_, rest)| rest.split_once("</Code>"))
                    .map_or_else(|| "error".to_string(), |(code, _)| code.to_string())
            }
        };
        Ok(Answer::Status { status, code })
    }
}

const LACKS_R: &str = "r (read: Get Blob answered 403 AuthorizationPermissionMismatch)";
const LACKS_L: &str = "l (list: List Blobs answered 403 AuthorizationPermissionMismatch; the reconcile sweep needs it)";

/// A SAS time (`se`, `st`): `2026-11-29T10:00:00Z`, with optional fractions, or a bare date.
fn parse_sas_time(text: &str) -> Option<std::time::SystemTime> {
    let text = text.trim();
    if text.len() == 10 {
        return humantime::parse_rfc3339_weak(&format!("{text}T00:00:00Z")).ok();
    }
    humantime::parse_rfc3339_weak(text).ok()
}

/// The parts of a List Blobs answer ferry reads (the XML has many more, ignored).
#[derive(serde::Deserialize)]
struct EnumerationResults {
    #[serde(rename = "Blobs", default)]
    blobs: BlobsXml,
    #[serde(rename = "NextMarker", default)]
    next_marker: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct BlobsXml {
    #[serde(rename = "Blob", default)]
    blob: Vec<BlobXml>,
}

#[derive(serde::Deserialize)]
struct BlobXml {
    #[serde(rename = "Name")]
    name: NameXml,
    #[serde(rename = "Properties")]
    properties: PropertiesXml,
}

/// A name Azure could not put in XML as it is comes percent-encoded with `Encoded="true"`.
#[derive(serde::Deserialize)]
struct NameXml {
    #[serde(rename = "@Encoded", default)]
    encoded: Option<bool>,
    #[serde(rename = "$text", default)]
    text: String,
}

#[derive(serde::Deserialize)]
struct PropertiesXml {
    #[serde(rename = "Creation-Time", default)]
    creation_time: Option<String>,
    #[serde(rename = "Last-Modified", default)]
    last_modified: Option<String>,
    #[serde(rename = "Etag")]
    etag: String,
    #[serde(rename = "Content-Length")]
    content_length: u64,
    #[serde(rename = "Content-Type", default)]
    content_type: Option<String>,
    #[serde(rename = "Content-MD5", default)]
    content_md5: Option<String>,
}

/// Reads a List Blobs page. ETags get the quotes Get Blob Properties puts around them, so a blob
/// found by listing names the same job as one announced by a webhook.
fn parse_list(container: &str, xml: &str) -> Result<ListPage, String> {
    let results: EnumerationResults = quick_xml::de::from_str(xml).map_err(|e| e.to_string())?;
    let time = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| httpdate::parse_http_date(t.trim()).ok())
    };
    let mut objects = Vec::with_capacity(results.blobs.blob.len());
    for blob in results.blobs.blob {
        let name = if blob.name.encoded == Some(true) {
            percent_encoding::percent_decode_str(&blob.name.text)
                .decode_utf8()
                .map_err(|e| format!("encoded blob name is not UTF-8: {e}"))?
                .into_owned()
        } else {
            blob.name.text
        };
        let p = blob.properties;
        let etag = p.etag.trim().to_string();
        let etag = if etag.starts_with('"') {
            etag
        } else {
            format!("\"{etag}\"")
        };
        objects.push(ListedObject {
            created: time(&p.creation_time),
            last_modified: time(&p.last_modified),
            object: SourceObject {
                container: container.to_string(),
                name,
                size: p.content_length,
                etag,
                content_md5: p.content_md5.filter(|v| !v.trim().is_empty()),
                content_type: p.content_type.filter(|v| !v.is_empty()),
                url: None,
            },
        });
    }
    Ok(ListPage {
        objects,
        next_marker: results.next_marker.filter(|m| !m.trim().is_empty()),
    })
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
    Err(match (status.as_u16(), classify(&resp)) {
        (404, _) => SourceError::NotFound(what.to_string()),
        (412, _) => SourceError::Changed {
            etag: String::new(),
        },
        (_, HttpClass::Refused { .. }) => SourceError::AccessDenied { code },
        (s, HttpClass::Retryable { retry_after, .. }) => SourceError::Transient {
            reason: format!("HTTP {s} {code} from {what}"),
            retry_after,
        },
        (s, _) => SourceError::Permanent(format!("HTTP {s} {code} from {what}")),
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
                blob = %self.inner.object_url(&self.object).unwrap_or_default(),
                offset = self.offset,
                reason = %failure,
                "source read interrupted; resuming with a range read"
            );
            tokio::time::sleep(Duration::from_millis(50 * u64::from(self.resumes))).await;
        }
    }
}

/// One range of a parallel read: sends bytes `start..end` to `tx` in order, resuming with a
/// narrower range after a broken connection (up to `max_resumes` times for this range), or
/// sends the error that ended it.
async fn read_range(
    inner: Arc<Inner>,
    object: Arc<SourceObject>,
    start: u64,
    end: u64,
    tx: RangeSender,
) {
    let mut offset = start;
    let mut resumes = 0u32;
    while offset < end {
        let response = inner
            .retry
            .run("azure get blob range", || {
                inner.get_range(&object, offset, Some(end))
            })
            .await;
        let mut response = match response {
            Ok(r) => r,
            Err(e) => {
                tx.fail(e.into());
                return;
            }
        };
        let failure = loop {
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    offset += bytes.len() as u64;
                    if offset > end {
                        tx.fail(
                            SourceError::Changed {
                                etag: object.etag.clone(),
                            }
                            .into(),
                        );
                        return;
                    }
                    if tx.send(bytes).await.is_err() {
                        // The reader was dropped: nobody wants the rest.
                        return;
                    }
                }
                Ok(None) if offset == end => return,
                Ok(None) => break "connection closed early".to_string(),
                Err(e) => break e.without_url().to_string(),
            }
        };
        resumes += 1;
        if resumes > inner.max_resumes {
            tx.fail(
                SourceError::Transient {
                    reason: format!(
                        "gave up after {} resumes at byte {offset} (range {start}-{}): {failure}",
                        inner.max_resumes,
                        end - 1
                    ),
                    retry_after: None,
                }
                .into(),
            );
            return;
        }
        tracing::warn!(
            blob = %inner.object_url(&object).unwrap_or_default(),
            range_start = start,
            offset,
            reason = %failure,
            "source range read interrupted; resuming with a range read of the rest of the range"
        );
        tokio::time::sleep(Duration::from_millis(50 * u64::from(resumes))).await;
    }
}

#[async_trait]
impl Source for AzureBlobSource {
    async fn stat(&self, container: &str, name: &str) -> Result<SourceObject, SourceError> {
        let inner = &self.inner;
        inner
            .retry
            .run("azure get blob properties", || {
                inner.properties(container, name, None)
            })
            .await
    }

    async fn resolve(&self, object: &SourceObject) -> Result<SourceObject, SourceError> {
        let Some(url) = object.url.as_deref() else {
            return Ok(object.clone());
        };
        let inner = &self.inner;
        let mut resolved = inner
            .retry
            .run("azure get blob properties", || {
                inner.properties(&object.container, &object.name, Some(url))
            })
            .await?;
        // Keep what the notification said the content is when the blob has no better type.
        if resolved
            .content_type
            .as_deref()
            .is_none_or(|t| t.is_empty() || t == "application/octet-stream")
        {
            resolved.content_type = object.content_type.clone();
        }
        Ok(resolved)
    }

    async fn delete(&self, object: &SourceObject) -> Result<bool, SourceError> {
        let inner = &self.inner;
        inner
            .retry
            .run("azure delete blob", || inner.delete_once(object))
            .await
    }

    async fn list_page(
        &self,
        container: &str,
        prefix: &str,
        marker: Option<&str>,
        max_results: u32,
    ) -> Result<ListPage, SourceError> {
        let inner = &self.inner;
        inner
            .retry
            .run("azure list blobs", || {
                inner.list_once(container, prefix, marker, max_results)
            })
            .await
    }

    async fn open(&self, object: &SourceObject) -> Result<ByteReader, SourceError> {
        if self.reads.applies_to(object.size) {
            let (inner, shared) = (self.inner.clone(), Arc::new(object.clone()));
            let chunks = ranged::ordered(object.size, self.reads, move |start, end, tx| {
                read_range(inner.clone(), shared.clone(), start, end, tx)
            });
            return Ok(Box::pin(StreamReader::new(chunks)));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_times_parse_with_fractions_and_as_bare_dates() {
        let at = |s: &str| {
            parse_sas_time(s)
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        assert_eq!(at("2026-11-29T10:00:00Z"), 1_795_946_400);
        assert_eq!(at("2026-11-29T10:00:00.1234567Z"), 1_795_946_400);
        assert_eq!(at("2026-11-29"), 1_795_946_400 - 10 * 3600);
        assert!(parse_sas_time("soon").is_none());
    }

    #[test]
    fn list_page_reads_names_etags_times_and_the_next_marker() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="exports">
  <Prefix>hmis/</Prefix><MaxResults>2</MaxResults>
  <Blobs>
    <Blob><Name> lead &amp; trail .csv</Name><Properties>
      <Creation-Time>Sun, 29 Nov 2026 10:00:00 GMT</Creation-Time>
      <Last-Modified>Sun, 29 Nov 2026 10:00:01 GMT</Last-Modified>
      <Etag>0x8DD1234</Etag><Content-Length>12</Content-Length>
      <Content-Type>text/csv</Content-Type><Content-MD5 /><BlobType>BlockBlob</BlobType>
    </Properties><Metadata /></Blob>
    <Blob><Name Encoded="true">bad%01name.csv</Name><Properties>
      <Last-Modified>Sun, 29 Nov 2026 11:00:00 GMT</Last-Modified>
      <Etag>"0x8DD5678"</Etag><Content-Length>0</Content-Length>
      <Content-MD5>1B2M2Y8AsgTpgAmY7PhCfg==</Content-MD5>
    </Properties></Blob>
  </Blobs>
  <NextMarker>2!72!MDAwMDA</NextMarker>
</EnumerationResults>"#;
        let page = parse_list("exports", xml).unwrap();
        assert_eq!(page.next_marker.as_deref(), Some("2!72!MDAwMDA"));
        let [a, b] = &page.objects[..] else {
            panic!("{page:?}")
        };
        assert_eq!(a.object.name, " lead & trail .csv");
        assert_eq!(a.object.etag, "\"0x8DD1234\"");
        assert_eq!((a.object.size, a.object.content_md5.as_deref()), (12, None));
        assert_eq!(
            a.time(),
            httpdate::parse_http_date("Sun, 29 Nov 2026 10:00:00 GMT").ok()
        );
        assert_eq!(b.object.name, "bad\u{1}name.csv");
        assert_eq!(b.object.etag, "\"0x8DD5678\"");
        assert_eq!(
            b.time(),
            httpdate::parse_http_date("Sun, 29 Nov 2026 11:00:00 GMT").ok()
        );
        let last = parse_list(
            "exports",
            "<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>",
        )
        .unwrap();
        assert_eq!(last, ListPage::default());
    }
}
