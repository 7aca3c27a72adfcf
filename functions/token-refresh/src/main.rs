//! Lambda entry point: build clients once per cold start, then refresh tokens on each schedule.

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
    // The pub/sub export sources' AAD credentials: nothing else.
    let caches = Arc::new(startup(services.token_caches().await)?);
    lambda_runtime::run(service_fn(move |event| {
        let caches = caches.clone();
        async move { token_refresh::handle(&caches, event).await }
    }))
    .await
}
