//! Pub/sub file export (EG Retail / Lindbak-style): file notifications arrive on a Service Bus
//! subscription; `export-pull` turns each into a transfer job (create-once, id from the
//! correlationId) and completes the message only after the job is saved. `blob-copy` then runs the
//! job like any other, reading the file with the rotating tokens (`crate::token`).

pub mod connection;
pub mod message;
pub mod pull;
pub mod servicebus;
pub mod uri;
