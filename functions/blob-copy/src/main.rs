//! Lambda entry point: build clients once per cold start, then run SQS batches of jobs.

use std::sync::Arc;

use ferry_shared::config::Config;
use ferry_shared::services::Services;
use ferry_shared::telemetry::startup;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    ferry_shared::telemetry::init();
    // EMF lines on stdout: Lambda ships them to CloudWatch Logs, which makes them metrics.
    ferry_shared::metrics::set_output(ferry_shared::metrics::Output::Stdout);
    let services = Services::new(startup(Config::from_env())?).await;
    // The sources and destinations that routes name, with their secrets: nothing else.
    let engine = Arc::new(startup(services.engine().await)?);
    lambda_runtime::run(service_fn(move |event| {
        let engine = engine.clone();
        async move { blob_copy::handle(&engine, event).await }
    }))
    .await
}
