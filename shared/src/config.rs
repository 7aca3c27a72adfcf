//! The configuration file: state store, webhook, sources, destinations, routes, views and sinks.
//! Every struct refuses unknown fields so a typo is an error, not a silently ignored setting.
//! Field docs here are the user's reference (see docs/config.md for a worked example).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::names;
use crate::secret::SecretRef;

/// Why a config could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config is not valid JSON for ferry: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("config could not be read from {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("no config: set FERRY_CONFIG (JSON text) or FERRY_CONFIG_FILE (path)")]
    Missing,
    #[error("config is inconsistent: {0}")]
    Invalid(String),
}

/// The whole ferry configuration, shared by every function.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where ferry keeps its state: jobs, receipts, dead letters, watermarks, leases.
    pub state: StateConfig,
    /// Settings of the webhook-ingest function. Required when that function runs.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// Named sources that routes read from.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Named destinations that routes deliver to.
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationConfig>,
    /// Which incoming files go where. A file may match several routes: one job per route.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// How transfers retry and when they give up (also the retry policy of view syncs).
    #[serde(default)]
    pub transfer: TransferConfig,
    /// Views to sync incrementally on a schedule (the view-sync function), by name. The name is
    /// part of state keys (`watermarks/<view>.json`), so letters, digits, `-`, `_`, `.` only.
    #[serde(default)]
    pub views: BTreeMap<String, ViewConfig>,
    /// Named sinks that views deliver records to.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
}

/// An S3-compatible endpoint. Credentials come from the standard AWS chain (the Lambda role,
/// or `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` locally), never from this file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Endpoint {
    /// AWS region; defaults to the environment's (`AWS_REGION`), else `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Custom endpoint such as a local moto server (`http://127.0.0.1:5000`); unset for AWS.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Use path-style URLs (`endpoint/bucket/key`); needed by moto and most emulators.
    #[serde(default)]
    pub force_path_style: bool,
}

/// The state bucket.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Bucket that holds ferry's state objects.
    pub bucket: String,
    /// How to reach it.
    #[serde(default)]
    pub endpoint: S3Endpoint,
}

/// The webhook-ingest function.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Shared secret the caller must present, in the `X-Ferry-Token` header, as
    /// `Authorization: Bearer <token>`, or as the `token` query parameter.
    pub token: SecretRef,
    /// Largest accepted request body in bytes; larger bodies get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Longest accepted file name in bytes; longer names get 400.
    #[serde(default = "default_max_name_bytes")]
    pub max_name_bytes: usize,
}

fn default_max_body_bytes() -> usize {
    16 * 1024
}
fn default_max_name_bytes() -> usize {
    names::MAX_NAME_BYTES
}

/// A place files are read from.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// An Azure Blob Storage account read with a SAS token.
    AzureBlob {
        /// Account URL: `https://<account>.blob.core.windows.net`, or the emulator's
        /// path-style `http://127.0.0.1:10000/devstoreaccount1`.
        account_url: String,
        /// SAS query string (container or account SAS, with or without a stored access policy
        /// `si=`); leading `?` optional.
        sas: SecretRef,
        /// Seconds a single read may stall before the connection is dropped and resumed.
        #[serde(default = "default_read_timeout_secs")]
        read_timeout_secs: u64,
    },
}

fn default_read_timeout_secs() -> u64 {
    30
}

/// A place files are delivered to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DestinationConfig {
    /// An S3 bucket (multipart upload for large files).
    S3 {
        /// Target bucket.
        bucket: String,
        /// Key prefix put before each file name, e.g. `incoming/`.
        #[serde(default)]
        prefix: String,
        /// How to reach it.
        #[serde(default)]
        endpoint: S3Endpoint,
        /// Multipart part size in MiB (5..=512); also the single-request threshold.
        #[serde(default = "default_part_size_mib")]
        part_size_mib: u64,
        /// Parts uploaded at once; memory use is about `part_size_mib * (upload_concurrency + 1)`.
        #[serde(default = "default_upload_concurrency")]
        upload_concurrency: usize,
    },
    /// An SFTP server; files are written under a temporary name and renamed when complete.
    Sftp {
        /// Host name or address.
        host: String,
        /// TCP port.
        #[serde(default = "default_ssh_port")]
        port: u16,
        /// Login user.
        username: String,
        /// The server's public host key in OpenSSH form (`ssh-ed25519 AAAA...`); connections to
        /// a server presenting any other key are refused.
        host_key: String,
        /// Password, if the server uses password authentication.
        #[serde(default)]
        password: Option<SecretRef>,
        /// OpenSSH private key (PEM text), if the server uses key authentication.
        #[serde(default)]
        private_key: Option<SecretRef>,
        /// Remote directory the files go to (created if missing).
        directory: String,
        /// Seconds to wait for connect, auth and each SFTP request.
        #[serde(default = "default_io_timeout_secs")]
        timeout_secs: u64,
    },
    /// An HTTP endpoint that receives each file as a streamed request body.
    Http {
        /// Target URL. `{name}` is replaced by the (percent-encoded) file name.
        url: String,
        /// `PUT` or `POST`.
        #[serde(default = "default_http_method")]
        method: String,
        /// Extra plain headers.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Headers whose values are secrets (e.g. `Authorization`); never logged.
        #[serde(default)]
        secret_headers: BTreeMap<String, SecretRef>,
        /// Seconds a single read or write may stall.
        #[serde(default = "default_io_timeout_secs")]
        timeout_secs: u64,
    },
    /// A local directory (local runs, mounted volumes); atomic rename into place.
    LocalDir {
        /// Directory files are written to (created if missing).
        path: PathBuf,
    },
}

fn default_part_size_mib() -> u64 {
    8
}
fn default_upload_concurrency() -> usize {
    2
}
fn default_ssh_port() -> u16 {
    22
}
fn default_io_timeout_secs() -> u64 {
    30
}
fn default_http_method() -> String {
    "PUT".into()
}

/// Which webhook notifications become jobs, and where their files go.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Route name: part of job keys, so letters, digits, `-`, `_`, `.` only.
    pub name: String,
    /// Name of the source (in `sources`) the file is read from.
    pub source: String,
    /// Container the notification must name.
    pub container: String,
    /// Glob the file name must match (`*.zip`, `exports/**/*.csv`); `*` matches within one
    /// folder level, `**` across levels. Default: every file.
    #[serde(default)]
    pub file_glob: Option<String>,
    /// Substring the file name must contain (case-sensitive), e.g. `HMIS`.
    #[serde(default)]
    pub name_contains: Option<String>,
    /// Destination names (in `destinations`) that each receive a copy.
    pub destinations: Vec<String>,
    /// Folder (or key prefix) under each destination's own root to put files in.
    #[serde(default)]
    pub target_folder: Option<String>,
}

/// Retry and give-up rules for transfers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransferConfig {
    /// Deliveries of one job before it is recorded under `failed/` (SQS receive count).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Retries of one request inside a single attempt.
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// First backoff delay in milliseconds; doubles each retry, with jitter.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Largest backoff delay in milliseconds (a server's Retry-After is capped to this too).
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// How many times one source read may be resumed (range read) after a broken connection.
    #[serde(default = "default_max_resumes")]
    pub max_resumes: u32,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            retries: default_retries(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            max_resumes: default_max_resumes(),
        }
    }
}

fn default_max_attempts() -> u32 {
    5
}
fn default_retries() -> usize {
    4
}
fn default_initial_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    20_000
}
fn default_max_resumes() -> u32 {
    10
}

/// A REST view read incrementally (Flowfinity style): `GET <url>?onbehalfof=<user>&
/// previouslastsubmissionid=<watermark>` with HTTP Basic auth, answering a JSON array of records
/// with `RecordID` and `lastSubmissionId`, sorted ascending by `lastSubmissionId`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    /// The view's URL, without the `onbehalfof` and `previouslastsubmissionid` parameters (ferry
    /// adds them). Other query parameters are kept.
    pub url: String,
    /// User the view is read on behalf of (the `onbehalfof` parameter).
    pub on_behalf_of: String,
    /// HTTP Basic auth user name.
    pub username: String,
    /// HTTP Basic auth password.
    pub password: SecretRef,
    /// Name of the sink (in `sinks`) the records go to.
    pub sink: String,
    /// Records per chunk. After each delivered chunk the watermark is saved; a chunk is extended
    /// past this size while records share the last record's `lastSubmissionId`.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: usize,
    /// Seconds the view may take to start answering, and the longest stall while reading it.
    #[serde(default = "default_view_timeout_secs")]
    pub timeout_secs: u64,
    /// Largest single record accepted, in bytes; a larger one stops the run.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Seconds a run holds the view's lease (`leases/view-sync-<view>.json`) before another run
    /// may take it over; a running sync renews it between chunks.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
}

fn default_chunk_size() -> usize {
    500
}
fn default_view_timeout_secs() -> u64 {
    60
}
fn default_max_record_bytes() -> usize {
    1 << 20
}
fn default_lease_secs() -> u64 {
    900
}

/// A place view records are delivered to. Every sink is idempotent per record version
/// (`RecordID`, `lastSubmissionId`), so a rerun after a failure applies nothing twice.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// An HTTP endpoint that receives each record as a JSON `POST` with an `Idempotency-Key`
    /// header of `RecordID:lastSubmissionId`; the receiver must skip keys it has applied.
    Http {
        /// Target URL.
        url: String,
        /// Extra plain headers.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Headers whose values are secrets (e.g. `Authorization`); never logged.
        #[serde(default)]
        secret_headers: BTreeMap<String, SecretRef>,
        /// Seconds a single request may stall.
        #[serde(default = "default_io_timeout_secs")]
        timeout_secs: u64,
        /// Requests in flight at once. Records with the same `RecordID` are always sent one after
        /// the other, in cursor order.
        #[serde(default = "default_sink_concurrency")]
        concurrency: usize,
    },
    /// An S3 bucket: one JSON Lines object per chunk at
    /// `<prefix><view>/after-<watermark, 20 digits>.jsonl` (`from-start.jsonl` for the first),
    /// so a rerun after a failure overwrites the object instead of adding a second copy.
    S3Jsonl {
        /// Target bucket.
        bucket: String,
        /// Key prefix, e.g. `views/`.
        #[serde(default)]
        prefix: String,
        /// How to reach it.
        #[serde(default)]
        endpoint: S3Endpoint,
    },
    /// A PostgreSQL table (created if missing) with one row per (view, `RecordID`): the record as
    /// `jsonb` and its `lastSubmissionId` as `numeric`. An incoming record replaces the row only
    /// when its `lastSubmissionId` is greater than the stored one.
    Postgres {
        /// Host name or address.
        host: String,
        /// TCP port.
        #[serde(default = "default_postgres_port")]
        port: u16,
        /// Login user.
        user: String,
        /// Password, if the server asks for one.
        #[serde(default)]
        password: Option<SecretRef>,
        /// Database name.
        dbname: String,
        /// Table name, optionally schema-qualified (`schema.table`); lowercase letters, digits
        /// and `_`.
        table: String,
        /// Seconds to wait for the connection.
        #[serde(default = "default_io_timeout_secs")]
        connect_timeout_secs: u64,
    },
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

impl Config {
    /// Parses and checks a JSON config.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let config: Config = serde_json::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads the config from `FERRY_CONFIG` (JSON text) or `FERRY_CONFIG_FILE` (a path).
    pub fn from_env() -> Result<Self, ConfigError> {
        if let Ok(text) = std::env::var("FERRY_CONFIG") {
            return Self::from_json(&text);
        }
        let path = std::env::var("FERRY_CONFIG_FILE").map_err(|_| ConfigError::Missing)?;
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Read {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Self::from_json(&text)
    }

    /// Cross-checks names: every route's source and destinations exist, names are key-safe,
    /// globs compile.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for name in self.destinations.keys().chain(self.sources.keys()) {
            if let Err(e) = names::validate_key_segment("name", name) {
                return invalid(format!("{name:?}: {e}"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for route in &self.routes {
            if let Err(e) = names::validate_key_segment("route name", &route.name) {
                return invalid(format!("route {:?}: {e}", route.name));
            }
            if !seen.insert(route.name.as_str()) {
                return invalid(format!("route {:?} is defined twice", route.name));
            }
            if !self.sources.contains_key(&route.source) {
                return invalid(format!(
                    "route {:?} names unknown source {:?}",
                    route.name, route.source
                ));
            }
            if route.destinations.is_empty() {
                return invalid(format!("route {:?} has no destinations", route.name));
            }
            for d in &route.destinations {
                if !self.destinations.contains_key(d) {
                    return invalid(format!(
                        "route {:?} names unknown destination {d:?}",
                        route.name
                    ));
                }
            }
            if let Err(e) = names::validate_container("container", &route.container) {
                return invalid(format!("route {:?}: {e}", route.name));
            }
            if let Some(glob) = &route.file_glob
                && let Err(e) = crate::webhook::compile_glob(glob)
            {
                return invalid(format!(
                    "route {:?}: bad file_glob {glob:?}: {e}",
                    route.name
                ));
            }
            if let Some(folder) = &route.target_folder
                && let Err(e) = names::validate_object_name("target_folder", folder, 512)
            {
                return invalid(format!("route {:?}: {e}", route.name));
            }
        }
        for (name, dest) in &self.destinations {
            if let DestinationConfig::S3 {
                part_size_mib,
                upload_concurrency,
                ..
            } = dest
                && (!(5..=512).contains(part_size_mib) || *upload_concurrency == 0)
            {
                return invalid(format!(
                    "destination {name:?}: part_size_mib must be 5..=512 and upload_concurrency >= 1"
                ));
            }
            if let DestinationConfig::Sftp {
                password: None,
                private_key: None,
                ..
            } = dest
            {
                return invalid(format!("destination {name:?}: set password or private_key"));
            }
            if let DestinationConfig::Http { method, .. } = dest
                && !matches!(method.as_str(), "PUT" | "POST")
            {
                return invalid(format!("destination {name:?}: method must be PUT or POST"));
            }
        }
        self.validate_views()
    }

    fn validate_views(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for (name, view) in &self.views {
            if let Err(e) = names::validate_key_segment("view name", name) {
                return invalid(format!("view {name:?}: {e}"));
            }
            if !self.sinks.contains_key(&view.sink) {
                return invalid(format!("view {name:?} names unknown sink {:?}", view.sink));
            }
            match url::Url::parse(&view.url) {
                Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                    return invalid(format!("view {name:?}: url must be an http(s) URL"));
                }
                // Credentials belong in `username`/`password` (a secret), never in the URL.
                Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                    return invalid(format!("view {name:?}: url must not contain credentials"));
                }
                Ok(_) => {}
                Err(_) => return invalid(format!("view {name:?}: url must be an http(s) URL")),
            }
            if !(1..=100_000).contains(&view.chunk_size) {
                return invalid(format!("view {name:?}: chunk_size must be 1..=100000"));
            }
            if view.lease_secs < 10 || view.timeout_secs == 0 || view.max_record_bytes < 64 {
                return invalid(format!(
                    "view {name:?}: lease_secs must be >= 10, timeout_secs >= 1, max_record_bytes >= 64"
                ));
            }
        }
        let mut tables = std::collections::HashSet::new();
        for (name, sink) in &self.sinks {
            if let Err(e) = names::validate_key_segment("sink name", name) {
                return invalid(format!("sink {name:?}: {e}"));
            }
            match sink {
                SinkConfig::Http {
                    url, concurrency, ..
                } => {
                    if !matches!(url::Url::parse(url), Ok(u) if matches!(u.scheme(), "http" | "https"))
                    {
                        return invalid(format!("sink {name:?}: url must be an http(s) URL"));
                    }
                    if !(1..=64).contains(concurrency) {
                        return invalid(format!("sink {name:?}: concurrency must be 1..=64"));
                    }
                }
                SinkConfig::S3Jsonl { .. } => {}
                SinkConfig::Postgres {
                    host,
                    port,
                    dbname,
                    table,
                    ..
                } => {
                    if !valid_sql_table(table) {
                        return invalid(format!(
                            "sink {name:?}: table must be lowercase letters, digits and _ (optionally schema.table)"
                        ));
                    }
                    if !tables.insert((host, port, dbname, table)) {
                        return invalid(format!(
                            "sink {name:?}: another sink writes the same table {table:?}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "state": {"bucket": "ferry-state", "endpoint": {"endpoint_url": "http://127.0.0.1:5000", "force_path_style": true}},
      "webhook": {"token": {"env": "FERRY_WEBHOOK_TOKEN"}},
      "sources": {"clienttrack": {"type": "azure_blob", "account_url": "http://127.0.0.1:10000/devstoreaccount1", "sas": {"env": "SAS"}}},
      "destinations": {
        "archive": {"type": "s3", "bucket": "archive", "prefix": "in/"},
        "partner": {"type": "sftp", "host": "127.0.0.1", "port": 2222, "username": "u", "host_key": "ssh-ed25519 AAAA", "private_key": {"file": "/k"}, "directory": "/upload"},
        "hook": {"type": "http", "url": "http://127.0.0.1:1/{name}", "secret_headers": {"Authorization": {"env": "H"}}},
        "disk": {"type": "local_dir", "path": "/tmp/out"}
      },
      "routes": [{"name": "hmis", "source": "clienttrack", "container": "exports", "file_glob": "*.zip", "name_contains": "HMIS", "destinations": ["archive", "partner", "hook", "disk"]}],
      "views": {"cases": {"url": "https://acme.flowfinity.example/api/view/cases", "on_behalf_of": "ops", "username": "svc", "password": {"env": "VIEW_PW"}, "sink": "db"}},
      "sinks": {
        "db": {"type": "postgres", "host": "127.0.0.1", "user": "ferry", "dbname": "ferry", "table": "public.cases"},
        "lake": {"type": "s3_jsonl", "bucket": "lake", "prefix": "views/"},
        "api": {"type": "http", "url": "https://intake.example/records"}
      }
    }"#;

    #[test]
    fn sample_parses_with_defaults() {
        let c = Config::from_json(SAMPLE).unwrap();
        assert_eq!(c.transfer.max_attempts, 5);
        assert_eq!(c.webhook.unwrap().max_body_bytes, 16 * 1024);
        assert!(matches!(
            c.destinations["archive"],
            DestinationConfig::S3 {
                part_size_mib: 8,
                ..
            }
        ));
    }

    #[test]
    fn views_and_sinks_parse_and_are_checked() {
        let c = Config::from_json(SAMPLE).unwrap();
        let v = &c.views["cases"];
        assert_eq!((v.chunk_size, v.lease_secs), (500, 900));
        assert!(matches!(
            c.sinks["db"],
            SinkConfig::Postgres { port: 5432, .. }
        ));
        for (from, to, want) in [
            ("\"sink\": \"db\"", "\"sink\": \"nope\"", "unknown sink"),
            ("public.cases", "Cases; drop", "table must be"),
            ("\"views\": {\"cases\"", "\"views\": {\"../x\"", "view name"),
            (
                "\"on_behalf_of\"",
                "\"chunk_size\": 0, \"on_behalf_of\"",
                "chunk_size",
            ),
            (
                "\"on_behalf_of\"",
                "\"onbehalf\": 1, \"on_behalf_of\"",
                "onbehalf",
            ),
        ] {
            let e = Config::from_json(&SAMPLE.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        assert!(
            valid_sql_table("view_rows") && !valid_sql_table("a.b.c") && !valid_sql_table("1a")
        );
    }

    #[test]
    fn unknown_fields_are_errors() {
        let typo = SAMPLE.replace("\"prefix\"", "\"prefx\"");
        let e = Config::from_json(&typo).unwrap_err().to_string();
        assert!(e.contains("prefx"), "{e}");
        let top = SAMPLE.replacen('{', "{\"extra\": 1,", 1);
        assert!(Config::from_json(&top).is_err());
    }

    #[test]
    fn dangling_route_references_are_errors() {
        let bad = SAMPLE.replace(
            "\"destinations\": [\"archive\"",
            "\"destinations\": [\"nope\"",
        );
        let e = Config::from_json(&bad).unwrap_err().to_string();
        assert!(e.contains("unknown destination \"nope\""), "{e}");
    }
}
