//! Lambda entry point: build clients once per cold start, then sync views on each scheduled event.

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
    // The views' passwords and the sinks they name: nothing else.
    let sync = Arc::new(startup(services.view_sync().await)?);
    lambda_runtime::run(service_fn(move |event| {
        let sync = sync.clone();
        async move { view_sync::handle(&sync, event).await }
    }))
    .await
}
