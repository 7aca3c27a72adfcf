//! An HTTP endpoint: the file is streamed as the body of one PUT or POST with a known length.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use percent_encoding::utf8_percent_encode;
use reqwest::header::HeaderMap;
use tokio_util::io::ReaderStream;

use super::{Delivery, Destination, DestinationError, Written};
use crate::ByteReader;
use crate::http_client::{HttpClass, classify};
use crate::names::URL_PATH_KEEP;
use crate::redact::redact_url;

/// Delivers each file as one streamed HTTP request.
pub struct HttpDestination {
    http: reqwest::Client,
    url: String,
    method: reqwest::Method,
    headers: HeaderMap,
}

impl HttpDestination {
    /// Builds the destination from its config, resolving its secret headers.
    pub async fn from_config(
        config: &crate::config::HttpDestinationConfig,
        secrets: &crate::secret::SecretResolver,
    ) -> Result<Self, crate::setup::SetupError> {
        let secret_headers = secrets.resolve_headers(&config.secret_headers).await?;
        let http = crate::http_client::build(std::time::Duration::from_secs(config.timeout_secs));
        Self::new(
            http,
            &config.url,
            &config.method,
            &config.headers,
            secret_headers,
        )
        .map_err(|e| crate::setup::SetupError::Config(e.to_string()))
    }

    /// `url` may hold `{name}`; `secret_headers` are already-resolved secret values, marked
    /// sensitive so no debug output shows them.
    pub fn new(
        http: reqwest::Client,
        url: &str,
        method: &str,
        headers: &BTreeMap<String, String>,
        secret_headers: Vec<(String, secrecy::SecretString)>,
    ) -> Result<Self, DestinationError> {
        let bad = |m: String| DestinationError::Rejected(m);
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| bad(format!("bad method {method}")))?;
        let map = crate::http_client::header_map(headers, secret_headers).map_err(bad)?;
        Ok(Self {
            http,
            url: url.to_string(),
            method,
            headers: map,
        })
    }
}

impl HttpDestination {
    /// `ferry check`: a `HEAD` of the URL (`{name}` filled with a probe name) with the
    /// configured headers; unreachable or 401/403 is a problem.
    pub async fn probe(&self) -> crate::probe::ProbeResult {
        let url = self.url.replace("{name}", "ferry-check");
        crate::http_client::probe_endpoint(&self.http, &url, &self.headers).await
    }
}

#[async_trait]
impl Destination for HttpDestination {
    fn kind(&self) -> &'static str {
        "http"
    }

    async fn write(
        &self,
        delivery: &Delivery,
        body: ByteReader,
    ) -> Result<Written, DestinationError> {
        let encoded = utf8_percent_encode(&delivery.name, URL_PATH_KEEP).to_string();
        let url = self.url.replace("{name}", &encoded);
        let mut req = self
            .http
            .request(self.method.clone(), &url)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_LENGTH, delivery.size)
            .header("X-Ferry-File-Name", &encoded)
            .header("Idempotency-Key", &delivery.idempotency_key)
            .header(
                reqwest::header::CONTENT_TYPE,
                delivery
                    .content_type
                    .as_deref()
                    .unwrap_or("application/octet-stream"),
            );
        if let Some(md5) = &delivery.content_md5 {
            req = req.header("Content-MD5", md5);
        }
        let resp = req
            .body(reqwest::Body::wrap_stream(hold_last_chunk(
                ReaderStream::with_capacity(body, 256 * 1024),
            )))
            .send()
            .await
            .map_err(|e| {
                // A body error is the source failing underneath us: report that, not a send failure.
                if let Some(io) = std::error::Error::source(&e).and_then(find_io_error) {
                    return DestinationError::from_io("http body", io);
                }
                DestinationError::Transient {
                    reason: e.without_url().to_string(),
                    retry_after: None,
                }
            })?;
        let location = redact_url(&url);
        match classify(&resp) {
            HttpClass::Success => Ok(Written {
                location,
                bytes: delivery.size,
                remote_hash: None,
            }),
            HttpClass::Refused { status } => Err(DestinationError::Unauthorized(format!(
                "HTTP {status} from {location}"
            ))),
            HttpClass::Retryable {
                status,
                retry_after,
            } => Err(DestinationError::Transient {
                reason: format!("HTTP {status} from {location}"),
                retry_after,
            }),
            HttpClass::Rejected { status } => Err(DestinationError::Rejected(format!(
                "HTTP {status} from {location}"
            ))),
        }
    }
}

/// Yields each chunk only once the next read has succeeded, so the final chunk goes out after
/// end-of-stream was seen. The verifying reader reports a short or corrupt stream at that point,
/// and the error then aborts the request instead of the server receiving a complete-looking body
/// (hyper stops polling a body once Content-Length bytes were sent).
fn hold_last_chunk<S>(
    chunks: S,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send
where
    S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Unpin,
{
    futures_util::stream::unfold(
        (chunks, None::<bytes::Bytes>, false),
        |(mut chunks, mut held, done)| async move {
            if done {
                return None;
            }
            loop {
                match chunks.next().await {
                    Some(Ok(next)) => match held.replace(next) {
                        Some(previous) => return Some((Ok(previous), (chunks, held, false))),
                        None => continue,
                    },
                    Some(Err(e)) => return Some((Err(e), (chunks, None, true))),
                    None => return held.map(|last| (Ok(last), (chunks, None, true))),
                }
            }
        },
    )
}

fn find_io_error<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    loop {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        e = e.source()?;
    }
}
