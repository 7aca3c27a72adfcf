//! Lambda entry point: build clients once per cold start, then serve function URL requests.

use std::sync::Arc;

use ferry_shared::config::Config;
use ferry_shared::services::Services;
use ferry_shared::telemetry::startup;
use lambda_http::{Error, service_fn};

fn main() -> Result<(), Error> {
    // The heap policy, then a runtime with a worker thread per vCPU Lambda gives the function.
    ferry_shared::process::function_runtime().block_on(run())
}

async fn run() -> Result<(), Error> {
    // JSON logs and EMF metric lines on stdout.
    ferry_shared::process::init_lambda();
    let services = Services::new(startup(Config::from_env())?).await;
    // The webhook token and the SAS of the sources webhook routes read: nothing else.
    let service = Arc::new(startup(services.webhook().await)?);
    lambda_http::run(service_fn(move |request| {
        let service = service.clone();
        async move { webhook_ingest::handle(&service, request).await }
    }))
    .await
}
