//! ferry's integration tests, linked as one binary: each file of this folder is a module named
//! after the suite it holds (`cargo test --test it webhook_copy::` runs one suite, a full test name
//! such as `webhook_copy::name_templates_rename_on_every_destination_and_keep_the_jobs_date` one
//! test). One binary instead of one per suite means the AWS SDKs, russh and tokio-postgres are
//! linked once per change instead of twenty times, and the local components (Azurite, moto, sshd,
//! PostgreSQL) are started once per run.
//!
//! `tests/metrics.rs` stays a binary of its own: it captures the process's EMF lines and counts
//! cold starts per function, which needs a process where only its own tests run functions.

#[path = "../support/mod.rs"]
mod support;

mod check;
mod cli;
mod deadline;
mod destination_conformance;
mod faults;
mod graph_faults;
mod lambda_box;
mod pgp_delivery;
mod pubsub_export;
mod pubsub_tokens;
mod readme_config;
mod reconcile;
mod records;
mod secrets;
mod serve;
mod sftp;
mod sink_conformance;
mod state_conformance;
mod state_layout;
mod terraform;
mod tls;
mod view_sync;
mod webhook_copy;
