//! A minimal Lambda Runtime API (the HTTP interface a `bootstrap` polls), enough to time a cold
//! start: exec -> first `GET /next` (ready) and -> first invocation response.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};

#[derive(Debug)]
enum Seen {
    Next,
    Response,
    Error(String),
}

/// Spawns `bin` against a fresh Runtime API that serves `event` once; returns (ready_ms, first_response_ms).
pub(crate) async fn cold_start(
    bin: &Path,
    config: &str,
    event: Value,
) -> anyhow::Result<(f64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let served = Arc::new(Mutex::new(false));
    let event = Bytes::from(event.to_string());
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (tx, served, event) = (tx.clone(), served.clone(), event.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (tx, served, event) = (tx.clone(), served.clone(), event.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        if path.ends_with("/invocation/next") {
                            let _ = tx.send(Seen::Next);
                            let already = std::mem::replace(&mut *served.lock().await, true);
                            if already {
                                // One invocation only: later polls wait forever, like an idle sandbox.
                                std::future::pending::<()>().await;
                            }
                            let deadline = SystemTime::now()
                                .duration_since(UNIX_EPOCH)
                                .unwrap_or_default()
                                + Duration::from_secs(60);
                            let resp = hyper::Response::builder()
                                .header("lambda-runtime-aws-request-id", "bench-1")
                                .header(
                                    "lambda-runtime-deadline-ms",
                                    deadline.as_millis().to_string(),
                                )
                                .header(
                                    "lambda-runtime-invoked-function-arn",
                                    "arn:aws:lambda:us-east-1:123456789012:function:bench",
                                )
                                .header(
                                    "lambda-runtime-trace-id",
                                    "Root=1-00000000-000000000000000000000000",
                                )
                                .body(Full::new(event))
                                .expect("static response");
                            return Ok::<_, Infallible>(resp);
                        }
                        if path.ends_with("/response") {
                            let _ = tx.send(Seen::Response);
                        } else {
                            let _ =
                                tx.send(Seen::Error(String::from_utf8_lossy(&body).into_owned()));
                        }
                        Ok(hyper::Response::builder()
                            .status(202)
                            .body(Full::new(Bytes::new()))
                            .expect("static response"))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let started = Instant::now();
    let mut child = tokio::process::Command::new(bin)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("FERRY_CONFIG", config)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut ready = None;
    let result = loop {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(Seen::Next)) => {
                ready.get_or_insert(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(Some(Seen::Response)) => break Ok(started.elapsed().as_secs_f64() * 1000.0),
            Ok(Some(Seen::Error(e))) => {
                break Err(anyhow::anyhow!("{} reported an error: {e}", bin.display()));
            }
            _ => break Err(anyhow::anyhow!("{} never answered", bin.display())),
        }
    };
    child.kill().await.ok();
    server.abort();
    let first = result?;
    match ready {
        Some(r) => Ok((r, first)),
        None => bail!("no GET /next seen"),
    }
}

/// A Lambda function URL event (API Gateway v2 payload) carrying a webhook.
pub(crate) fn function_url_event(body: &str, token: &str) -> Value {
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
        "headers": {"content-type": "application/json", "x-ferry-token": token, "host": "bench.lambda-url.us-east-1.on.aws"},
        "requestContext": {"accountId": "anonymous", "apiId": "bench", "domainName": "bench.lambda-url.us-east-1.on.aws",
            "domainPrefix": "bench", "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench"},
            "requestId": "bench-1", "routeKey": "$default", "stage": "$default", "time": "22/Nov/2026:00:00:00 +0000", "timeEpoch": 0},
        "body": body, "isBase64Encoded": false
    })
}

/// An SQS event carrying an S3 notification for `key` (a job that does not exist: measures the
/// handler's fixed cost).
pub(crate) fn sqs_event(bucket: &str, key: &str) -> Value {
    serde_json::to_value(blob_copy::sqs_event_for_job(bucket, key, "bench-msg", 1))
        .expect("serialisable")
}

/// An EventBridge scheduled event, as the schedule rules deliver to the scheduled functions.
pub(crate) fn scheduled_event() -> Value {
    json!({
        "version": "0", "id": "bench-1", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2026-11-29T00:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/bench"], "detail": {}
    })
}
