//! The cold-start reference for `make bench`: a hello-world `lambda_runtime` bootstrap (tokio,
//! one handler that echoes a constant), built with the same profile as ferry's functions and
//! timed under the same in-repo Runtime API. ferry's functions are compared against it.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|_event: LambdaEvent<Value>| async {
        Ok::<_, Error>(json!({"hello": "world"}))
    }))
    .await
}
