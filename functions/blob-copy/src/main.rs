//! Lambda entry point: build clients once per cold start, then run SQS batches of jobs.

use std::sync::Arc;

use ferry_shared::config::Config;
use ferry_shared::services::Services;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    ferry_shared::telemetry::init();
    let services = Services::build(Config::from_env()?).await?;
    let engine = Arc::new(services.engine());
    lambda_runtime::run(service_fn(move |event| {
        let engine = engine.clone();
        async move { blob_copy::handle(&engine, event).await }
    }))
    .await
}
