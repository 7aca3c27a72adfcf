//! The ferry engine shared by every function: config, the state store, sources,
//! destinations, view sync and sinks, retries, secrets and telemetry. Function crates stay thin and call in here.

pub mod azure_ad;
pub mod clock;
pub mod config;
pub mod dest;
pub(crate) mod digest;
pub mod encrypt;
pub mod engine;
pub mod http_client;
pub mod job;
pub mod json;
pub mod layout;
pub mod metrics;
pub mod name_template;
pub mod names;
pub mod probe;
pub mod process;
pub mod pubsub;
pub mod reconcile;
pub mod records;
pub mod redact;
pub mod retry;
pub mod s3;
pub mod secret;
pub mod services;
pub mod setup;
pub mod sink;
pub mod source;
pub mod state;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod token;
pub mod transform;
pub mod verify;
pub mod view_sync;
pub mod webhook;

/// A boxed byte stream: how bytes move from a source to a destination without being buffered whole.
pub type ByteReader = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;
