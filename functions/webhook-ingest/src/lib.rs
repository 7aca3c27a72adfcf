//! webhook-ingest: a Lambda function URL that turns "a file landed" notifications into transfer
//! jobs. All the logic is in `ferry_shared::webhook`; this adapts the Lambda HTTP event.

use ferry_shared::webhook::{WebhookRequest, WebhookResponse, WebhookService};
use lambda_http::{Body, Error, Request, RequestExt, Response};

/// Handles one function URL request; its metrics (`WebhookRequests`, `WebhookJobs`) are
/// written when it ends.
pub async fn handle(service: &WebhookService, request: Request) -> Result<Response<Body>, Error> {
    Ok(handle_answer(service, request).await?.0)
}

/// Like [`handle`], and also returns the typed answer the HTTP response was made from (the
/// local runner queues the accepted jobs from it instead of parsing its own JSON).
pub async fn handle_answer(
    service: &WebhookService,
    request: Request,
) -> Result<(Response<Body>, WebhookResponse), Error> {
    ferry_shared::metrics::invocation("webhook-ingest", respond(service, request)).await
}

async fn respond(
    service: &WebhookService,
    request: Request,
) -> Result<(Response<Body>, WebhookResponse), Error> {
    let correlation_id = request
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| format!("local-{:032x}", rand_id()));
    let (parts, body) = request.into_parts();
    let body = match body {
        Body::Empty => bytes::Bytes::new(),
        Body::Text(t) => bytes::Bytes::from(t),
        Body::Binary(b) => bytes::Bytes::from(b),
        _ => bytes::Bytes::new(),
    };
    let answer = service
        .handle(WebhookRequest {
            method: parts.method,
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers,
            body,
            correlation_id,
        })
        .await;
    let mut builder = Response::builder()
        .status(answer.status)
        .header("content-type", "application/json");
    if let Some(secs) = answer.retry_after_secs {
        builder = builder.header("retry-after", secs.to_string());
    }
    let response = builder.body(Body::Text(answer.body.to_string()))?;
    Ok((response, answer))
}

fn rand_id() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    nanos ^ (u128::from(std::process::id()) << 64)
}
