//! The AWS SDK's HTTP client: reqwest, with the TLS configuration every other client of the
//! process shares ([`crate::tls::client_tls`]).
//!
//! The SDK's own HTTPS client takes trust roots only as PEM, and decodes and parses all of them
//! again when it builds its first connector, inside the first request of every cold start: 8.9M
//! instructions (about 1 ms) for the ~150 roots of a system bundle (docs/performance.md). Given
//! this client instead, the SDK's requests go through the root store the process already has.
//!
//! What the SDK's client did, this one does too:
//! - one connector (a reqwest client with its own pool) for each set of timeouts the SDK asks
//!   for, the connect timeout and the read timeout taken from it;
//! - the proxy from the environment (`HTTPS_PROXY`, `NO_PROXY`), as every reqwest client;
//! - no redirects followed and no body decoded: the SDK sees the service's answer as it came;
//! - failures sorted into the kinds the SDK's retry policy reads: a timeout, an I/O failure
//!   (refused, reset, closed mid-answer: retried), a request that cannot be sent (not retried).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

use crate::tls::ClientTls;

/// How long an idle connection is kept for the next request (the SDK's client kept them 90 s).
const POOL_IDLE: Duration = Duration::from_secs(90);

static SDK: LazyLock<SharedHttpClient> =
    LazyLock::new(|| sdk_http_client(crate::tls::client_tls()));

/// The AWS SDK's HTTP client, trusting exactly the process's roots ([`crate::tls::client_tls`])
/// through the same configuration. One per process, shared by every AWS config loaded, so its
/// connectors (one per set of timeouts) are shared by every SDK client.
pub fn aws_http_client() -> SharedHttpClient {
    SDK.clone()
}

/// [`aws_http_client`] trusting the roots of one PEM bundle file (for tests and tools).
pub fn aws_http_client_from(bundle: &Path) -> SharedHttpClient {
    sdk_http_client(&crate::tls::client_tls_from(bundle))
}

/// The SDK's HTTP client trusting exactly the roots of `tls`.
fn sdk_http_client(tls: &ClientTls) -> SharedHttpClient {
    SharedHttpClient::new(SdkClient {
        tls: tls.clone(),
        connectors: Arc::default(),
    })
}

/// The timeouts a connector is built with: the SDK asks for one per client it builds.
type Timeouts = (Option<Duration>, Option<Duration>);

#[derive(Clone)]
struct SdkClient {
    tls: ClientTls,
    connectors: Arc<Mutex<HashMap<Timeouts, SharedHttpConnector>>>,
}

impl std::fmt::Debug for SdkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkClient")
            .field("roots", &self.tls.roots())
            .finish_non_exhaustive()
    }
}

impl HttpClient for SdkClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self
            .connectors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        connectors
            .entry(key)
            .or_insert_with(|| SharedHttpConnector::new(Connector(reqwest_client(&self.tls, key))))
            .clone()
    }
}

fn reqwest_client(tls: &ClientTls, (connect, read): Timeouts) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls.config())
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(POOL_IDLE)
        .tcp_nodelay(true);
    if let Some(connect) = connect {
        builder = builder.connect_timeout(connect);
    }
    if let Some(read) = read {
        builder = builder.read_timeout(read);
    }
    builder
        .build()
        .expect("HTTP client configuration is static and valid")
}

#[derive(Debug)]
struct Connector(reqwest::Client);

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.0.clone();
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?
                .map(reqwest::Body::wrap);
            let request =
                reqwest::Request::try_from(request).map_err(|e| ConnectorError::user(e.into()))?;
            let response = client.execute(request).await.map_err(connector_error)?;
            let response = http::Response::from(response).map(SdkBody::from_body_1_x);
            HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// A reqwest failure as the SDK's retry policy reads it.
fn connector_error(e: reqwest::Error) -> ConnectorError {
    // The URL names only the bucket and key (requests are signed in headers), but no transport
    // error of ferry's carries a URL.
    let e = e.without_url();
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_builder() {
        ConnectorError::user(e.into())
    } else if e.is_connect() || e.is_request() || e.is_body() {
        // Refused, reset, or closed before the whole answer came: sending again may work.
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_sdk_s3::config::retry::RetryConfig;
    use aws_sdk_s3::config::timeout::TimeoutConfig;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// An S3 client of the SDK's, with ferry's HTTP client, talking to `port` on loopback.
    fn s3(port: u16, read_timeout: Duration) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .force_path_style(true)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(read_timeout)
                    .build(),
            )
            .http_client(aws_http_client())
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// What the test server does with the `n`th connection (from 0) once it has read the request.
    #[derive(Clone, Copy)]
    enum Reply {
        /// Close it unanswered.
        Close,
        /// Keep it open, unanswered.
        Hold,
        /// Answer 200 with no body.
        Ok,
    }

    /// A loopback server that reads each request's head (HeadBucket has no body) and replies as
    /// `reply` says for that connection. Returns its port and how many connections it took.
    async fn server(reply: fn(usize) -> Reply) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut stream, _) = listener.accept().await.expect("accept");
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let mut head = Vec::new();
                let mut buf = [0; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let read = stream.read(&mut buf).await.expect("read the request");
                    assert!(read > 0, "the client hung up mid-request");
                    head.extend_from_slice(&buf[..read]);
                }
                match reply(n) {
                    Reply::Close => drop(stream),
                    Reply::Hold => held.push(stream),
                    Reply::Ok => stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .expect("answer"),
                }
            }
        });
        (port, connections)
    }

    /// A connection closed before any answer is an I/O failure to the SDK, which sends the
    /// request again on a new connection: the second one is answered, and the call succeeds.
    #[tokio::test]
    async fn a_connection_closed_before_the_answer_is_sent_again() {
        let (port, connections) = server(|n| if n == 0 { Reply::Close } else { Reply::Ok }).await;
        s3(port, Duration::from_secs(5))
            .head_bucket()
            .bucket("b")
            .send()
            .await
            .expect("the second attempt is answered");
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }

    /// A server that takes the request and never answers is cut at the read timeout, and the SDK
    /// reports a timeout (each attempt cut the same way).
    #[tokio::test]
    async fn a_server_that_never_answers_is_cut_at_the_read_timeout() {
        let (port, connections) = server(|_| Reply::Hold).await;
        let err = s3(port, Duration::from_millis(200))
            .head_bucket()
            .bucket("b")
            .send()
            .await
            .expect_err("nothing answers");
        match &err {
            aws_sdk_s3::error::SdkError::TimeoutError(_) => {}
            aws_sdk_s3::error::SdkError::DispatchFailure(failure) => {
                assert!(failure.is_timeout(), "not a timeout: {err:?}")
            }
            other => panic!("not a timeout: {other:?}"),
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            3,
            "a timeout is retried"
        );
    }
}
