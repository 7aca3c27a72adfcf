//! The one place HTTP clients are built (every call has connect and read timeouts) and HTTP
//! answers are classified ([`classify`]): what a status means is decided here for every backend
//! that speaks HTTP, which only adds the statuses its protocol gives a meaning of its own (a
//! 404 that means "gone", a 412 that means "changed").

use std::time::Duration;

mod sdk;

pub use sdk::{aws_http_client, aws_http_client_from};

use crate::retry::{retry_after_header, status_is_retryable};

/// What an HTTP answer's status means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpClass {
    /// 2xx.
    Success,
    /// 401 or 403: the credentials were refused (refresh them once, or give up).
    Refused {
        /// The status.
        status: u16,
    },
    /// 408, 429 or 5xx: worth sending again, after `retry_after` when the server said so.
    Retryable {
        /// The status.
        status: u16,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Any other status: the request itself is wrong; sending it again cannot help.
    Rejected {
        /// The status.
        status: u16,
    },
}

/// Classifies a response by its status (and `Retry-After`).
pub fn classify(response: &reqwest::Response) -> HttpClass {
    classify_status(response.status().as_u16(), response.headers())
}

/// Classifies a status with the headers that came with it.
pub fn classify_status(status: u16, headers: &http::HeaderMap) -> HttpClass {
    classify_parts(status, retry_after_header(headers))
}

/// Classifies a status whose `Retry-After` was already read (a caller that consumed the response).
pub fn classify_parts(status: u16, retry_after: Option<Duration>) -> HttpClass {
    match status {
        200..=299 => HttpClass::Success,
        401 | 403 => HttpClass::Refused { status },
        s if status_is_retryable(s) => HttpClass::Retryable {
            status,
            retry_after,
        },
        _ => HttpClass::Rejected { status },
    }
}

/// A client for sources and destinations. `read_timeout` resets on every read, so a long
/// streaming download is fine while a stalled one is cut.
pub fn build(read_timeout: Duration) -> reqwest::Client {
    with_tls(read_timeout, crate::tls::client_tls())
}

/// [`build`] trusting exactly the roots of `tls` (the process's come from [`crate::tls`]).
pub fn with_tls(read_timeout: Duration, tls: &crate::tls::ClientTls) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls.config())
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(read_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client configuration is static and valid")
}

/// Builds request headers from plain values and resolved secrets; secret values are marked
/// sensitive so no debug output shows them. The error names the offending header, never a value.
pub fn header_map(
    headers: &std::collections::BTreeMap<String, String>,
    secret_headers: Vec<(String, secrecy::SecretString)>,
) -> Result<reqwest::header::HeaderMap, String> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    let mut map = HeaderMap::new();
    let name =
        |k: &str| HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("bad header name {k}"));
    for (k, v) in headers {
        let value = HeaderValue::from_str(v).map_err(|_| format!("bad value for header {k}"))?;
        map.insert(name(k)?, value);
    }
    for (k, v) in secret_headers {
        let mut value = HeaderValue::from_str(crate::secret::expose(&v))
            .map_err(|_| format!("bad value for secret header {k}"))?;
        value.set_sensitive(true);
        map.insert(name(&k)?, value);
    }
    Ok(map)
}

/// `ferry check` for an HTTP endpoint (HTTP destinations and sinks): one `HEAD` with the
/// configured headers. Unreachable and 401/403 are problems; any other answer (404 and 405
/// included: many endpoints take only PUT or POST) shows the endpoint is there and took the
/// credentials. Texts carry the URL without its query, never a header value.
pub async fn probe_endpoint(
    http: &reqwest::Client,
    url: &str,
    headers: &reqwest::header::HeaderMap,
) -> crate::probe::ProbeResult {
    use crate::probe::Problem;
    let shown = crate::redact::redact_url(url);
    let resp = http
        .head(url)
        .headers(headers.clone())
        .send()
        .await
        .map_err(|e| {
            Problem::new(
                format!("{shown} is unreachable: {}", describe_transport(e)),
                "check the url, and that this machine can reach the endpoint (DNS, firewall, TLS)",
            )
        })?;
    match classify(&resp) {
        HttpClass::Refused { status } => Err(Problem::new(
            format!("{shown} refused the credentials (HTTP {status})"),
            "check the secret headers (e.g. Authorization) against what the endpoint expects",
        )),
        _ => Ok(()),
    }
}

/// A transport error with its causes (connection refused, DNS, TLS), for operators; without
/// the URL.
pub fn describe_transport(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    crate::redact::redact_embedded_urls(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_once_for_every_backend() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(classify_status(204, &headers), HttpClass::Success);
        assert_eq!(
            classify_status(403, &headers),
            HttpClass::Refused { status: 403 }
        );
        assert_eq!(
            classify_status(404, &headers),
            HttpClass::Rejected { status: 404 }
        );
        assert_eq!(
            classify_status(409, &headers),
            HttpClass::Rejected { status: 409 }
        );
        headers.insert("retry-after", "7".parse().unwrap());
        for status in [408, 429, 500, 503] {
            assert_eq!(
                classify_status(status, &headers),
                HttpClass::Retryable {
                    status,
                    retry_after: Some(Duration::from_secs(7))
                }
            );
        }
    }
}
