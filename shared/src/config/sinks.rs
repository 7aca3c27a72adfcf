//! Sink settings (where view records go): one typed struct per kind, each checking itself
//! (`validate`). The sink's own file builds it (`from_config`); `Config::validate` only
//! cross-checks names and that no two sinks write one table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{S3Endpoint, default_io_timeout_secs};
use crate::secret::SecretRef;

/// A place view records are delivered to. Every sink is idempotent per record version
/// (`RecordID`, `lastSubmissionId`), so a rerun after a failure applies nothing twice.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// An HTTP endpoint that receives each record as a JSON `POST` with an `Idempotency-Key`
    /// header of `RecordID:lastSubmissionId`; the receiver must skip keys it has applied.
    Http(HttpSinkConfig),
    /// An S3 bucket: one JSON Lines object per chunk at
    /// `<prefix><view>/after-<watermark, 20 digits>.jsonl` (`from-start.jsonl` for the first),
    /// so a rerun after a failure overwrites the object instead of adding a second copy.
    S3Jsonl(S3JsonlConfig),
    /// A PostgreSQL table (created if missing) with one row per (view, `RecordID`): the record as
    /// `jsonb` and its `lastSubmissionId` as `numeric`. An incoming record replaces the row only
    /// when its `lastSubmissionId` is greater than the stored one.
    Postgres(PostgresConfig),
}

impl SinkConfig {
    /// Checks the settings of whichever kind this is.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            SinkConfig::Http(c) => c.validate(),
            SinkConfig::S3Jsonl(_) => Ok(()),
            SinkConfig::Postgres(c) => c.validate(),
        }
    }
}

/// An HTTP endpoint (see [`SinkConfig::Http`]).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Target URL.
    pub url: String,
    /// Extra plain headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are secrets (e.g. `Authorization`); never logged.
    #[serde(default)]
    pub secret_headers: BTreeMap<String, SecretRef>,
    /// Seconds a single request may stall.
    #[serde(default = "default_io_timeout_secs")]
    pub timeout_secs: u64,
    /// Requests in flight at once. Records with the same `RecordID` are always sent one after
    /// the other, in cursor order.
    #[serde(default = "default_sink_concurrency")]
    pub concurrency: usize,
}

impl HttpSinkConfig {
    /// An http(s) URL and a sane concurrency.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(url::Url::parse(&self.url), Ok(u) if matches!(u.scheme(), "http" | "https")) {
            return Err("url must be an http(s) URL".into());
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err("concurrency must be 1..=64".into());
        }
        Ok(())
    }
}

/// An S3 bucket of JSON Lines objects (see [`SinkConfig::S3Jsonl`]).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3JsonlConfig {
    /// Target bucket.
    pub bucket: String,
    /// Key prefix, e.g. `views/`.
    #[serde(default)]
    pub prefix: String,
    /// How to reach it.
    #[serde(default)]
    pub endpoint: S3Endpoint,
}

/// A PostgreSQL table (see [`SinkConfig::Postgres`]).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    #[serde(default = "default_postgres_port")]
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Password, if the server asks for one.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Database name.
    pub dbname: String,
    /// Table name, optionally schema-qualified (`schema.table`); lowercase letters, digits
    /// and `_`.
    pub table: String,
    /// Seconds to wait for the connection.
    #[serde(default = "default_io_timeout_secs")]
    pub connect_timeout_secs: u64,
}

impl PostgresConfig {
    /// A table name that is safe to put into statements.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_sql_table(&self.table) {
            return Err(
                "table must be lowercase letters, digits and _ (optionally schema.table)".into(),
            );
        }
        Ok(())
    }
}

fn default_sink_concurrency() -> usize {
    4
}
fn default_postgres_port() -> u16 {
    5432
}

/// Checks a (possibly schema-qualified) SQL identifier we interpolate into statements.
pub fn valid_sql_table(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 63
                && p.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}
