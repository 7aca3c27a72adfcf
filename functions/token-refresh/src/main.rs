//! Lambda entry point: build clients once per cold start, then refresh tokens on each schedule.

use std::sync::Arc;

use ferry_shared::config::Config;
use ferry_shared::services::Services;
use ferry_shared::telemetry::startup;
use lambda_runtime::{Error, service_fn};

fn main() -> Result<(), Error> {
    // The heap policy, then a runtime with a worker thread per vCPU Lambda gives the function.
    ferry_shared::process::function_runtime().block_on(run())
}

async fn run() -> Result<(), Error> {
    // JSON logs and EMF metric lines on stdout.
    ferry_shared::process::init_lambda();
    let services = Services::new(startup(Config::from_env())?).await;
    // The pub/sub export sources' AAD credentials: nothing else.
    let caches = Arc::new(startup(services.token_caches().await)?);
    lambda_runtime::run(service_fn(move |event| {
        let caches = caches.clone();
        async move { token_refresh::handle(&caches, event).await }
    }))
    .await
}
