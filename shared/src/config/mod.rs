//! The configuration file: state store, webhook, sources, destinations, routes, views and sinks.
//! Every struct refuses unknown fields so a typo is an error, not a silently ignored setting.
//! Field docs here are the user's reference: docs/config.md and docs/config.schema.json are generated
//! from them (`reference`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

mod destinations;
mod graph;
mod records;
pub mod reference;
mod sinks;
mod sources;

pub use destinations::{
    DestinationConfig, HttpDestinationConfig, LocalDirConfig, S3DestinationConfig,
    SFTP_MAX_WRITE_CONNECTIONS, SftpConfig,
};
pub use graph::{ConflictBehavior, GraphConfig};
pub use records::{RecordFormat, RecordsConfig};
pub use sinks::{HttpSinkConfig, PostgresConfig, S3JsonlConfig, SinkConfig, valid_sql_table};
pub use sources::{AadConfig, AzureBlobConfig, PubsubExportConfig, SourceConfig};

use crate::names;
use crate::retry::RetryPolicy;
use crate::secret::SecretRef;

/// Why a config could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The JSON does not parse into ferry's config types.
    #[error("config is not valid JSON for ferry: {0}")]
    Parse(#[from] serde_json::Error),
    /// The config file could not be read.
    #[error("config could not be read from {path}: {reason}")]
    Read {
        /// The file's path.
        path: String,
        /// Why it could not be read.
        reason: String,
    },
    /// Neither FERRY_CONFIG nor FERRY_CONFIG_FILE is set.
    #[error("no config: set FERRY_CONFIG (JSON text) or FERRY_CONFIG_FILE (path)")]
    Missing,
    /// The config parses but contradicts itself (unknown names, bad limits).
    #[error("config is inconsistent: {0}")]
    Invalid(String),
}

/// The whole ferry configuration, shared by every function.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
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
    /// The reconciliation sweep of webhook routes (the reconcile function, `ferry reconcile`,
    /// `ferry serve --reconcile-every`): how far back it looks and how it pages.
    #[serde(default)]
    pub reconcile: ReconcileConfig,
}

/// How the reconciliation sweep finds blobs whose webhook never came: it lists each webhook
/// route's container (from the glob's literal folders) and creates the job the webhook would
/// have created for every blob the route takes that was created within the lookback window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// Blobs created (else last modified) longer ago than this are left alone. Keep it shorter
    /// than the state bucket keeps jobs (`jobs_expiration_days`, 30) and receipts, so a sweep
    /// never re-creates the job of a file delivered long ago; ClientTrack keeps exports 30 days.
    /// Default 7 days.
    #[serde(default = "default_lookback_hours")]
    pub lookback_hours: u64,
    /// Blobs per List Blobs page (Azure's maximum and default: 5000).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Jobs written at once while sweeping.
    #[serde(default = "default_reconcile_concurrency")]
    pub concurrency: usize,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            lookback_hours: default_lookback_hours(),
            page_size: default_page_size(),
            concurrency: default_reconcile_concurrency(),
        }
    }
}

impl ReconcileConfig {
    /// The lookback window.
    pub fn lookback(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lookback_hours.saturating_mul(3600))
    }

    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=720).contains(&self.lookback_hours) {
            return Err("lookback_hours must be 1..=720 (30 days)".into());
        }
        if !(1..=5000).contains(&self.page_size) {
            return Err("page_size must be 1..=5000".into());
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err("concurrency must be 1..=64".into());
        }
        Ok(())
    }
}

fn default_lookback_hours() -> u64 {
    7 * 24
}
fn default_page_size() -> u32 {
    5000
}
fn default_reconcile_concurrency() -> usize {
    16
}

/// An S3-compatible endpoint. Credentials come from the standard AWS chain (the Lambda role,
/// or `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` locally), never from this file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Bucket that holds ferry's state objects.
    pub bucket: String,
    /// How to reach it.
    #[serde(default)]
    pub endpoint: S3Endpoint,
}

/// The webhook-ingest function.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
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

fn default_io_timeout_secs() -> u64 {
    30
}

/// Which webhook notifications become jobs, and where their files go.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Route name: part of job keys, so letters, digits, `-`, `_`, `.` only.
    pub name: String,
    /// Name of the source (in `sources`) the file is read from.
    pub source: String,
    /// Container the notification must name (webhook routes, `azure_blob` sources; required).
    #[serde(default)]
    pub container: Option<String>,
    /// Blob types whose files this route takes (pub/sub export routes; required there), e.g.
    /// `Gateway.ItemChanges`; compared case-insensitively. Other types are skipped.
    #[serde(default)]
    pub blob_types: Vec<String>,
    /// Deliver gzip-encoded files (`contentEncoding: gzip`) decompressed, named without `.gz`
    /// (pub/sub export routes). Default: delivered as received.
    #[serde(default)]
    pub decompress: bool,
    /// Glob the file name must match (`*.zip`, `exports/**/*.csv`); `*` matches within one
    /// folder level, `**` across levels. Default: every file.
    #[serde(default)]
    pub file_glob: Option<String>,
    /// Substring the file name must contain (case-sensitive), e.g. `HMIS`.
    #[serde(default)]
    pub name_contains: Option<String>,
    /// Destination names (in `destinations`) that each receive a copy. May be empty when the
    /// route loads `records` instead.
    #[serde(default)]
    pub destinations: Vec<String>,
    /// Folder (or key prefix) under each destination's own root to put files in.
    #[serde(default)]
    pub target_folder: Option<String>,
    /// Renames what the route delivers, e.g. `AGENCY_HMIS_{date}.zip`, `{date:%Y/%m}/{name}` or
    /// `{stem}.{ext}`. Placeholders: `{name}` (the file name), `{path}` (with its folders),
    /// `{stem}` and `{ext}` (the name without / only its last extension), `{container}`,
    /// `{blob_type}` (pub/sub exports), `{route}`, `{job_id}`, `{date}` (`%Y-%m-%d`), `{time}`
    /// (`%H%M%S`) and `{date:FORMAT}` (strftime); `{{` and `}}` for braces. Dates are UTC and the
    /// job's creation time (when the file was announced), so a retry or replay on another day
    /// writes the same name. A template that could render an unsafe or empty name is refused
    /// when the config loads. Default: the file's own name.
    #[serde(default)]
    pub name_template: Option<String>,
    /// What to do to the source file once every destination has a receipt: `none` (default)
    /// or `delete` (never before the last receipt, never when a destination failed; only the
    /// version that was copied). Deleting needs `d` in the source's SAS; without it the job is
    /// dead-lettered with that reason after delivering, and a replay only retries the delete.
    #[serde(default)]
    pub after_delivery: crate::job::AfterDelivery,
    /// Encrypt every file of the route with OpenPGP before delivering it, to each of
    /// `recipients` (e.g. `{"recipients": [{"armored": "-----BEGIN PGP PUBLIC KEY BLOCK-----..."},
    /// {"secrets_manager": {"id": "partner-pgp-key"}}]}`). Binary OpenPGP (what `gpg --decrypt`
    /// reads); with `decompress` the file is decompressed first. Without a `name_template` the
    /// delivered name gets `.pgp` appended; with one, write the suffix yourself
    /// (`"{name}.pgp"`). Receipts keep the ciphertext's bytes and digests (what the destination
    /// holds) and add the plaintext's size and SHA-256. Keys, inline or behind a secret, are checked
    /// at blob-copy's cold start and by `ferry check`: a revoked or expired key, one whose
    /// self-signatures do not verify, or one without an encryption (sub)key, is refused naming its
    /// fingerprint and user id. Loading the config refuses a private key and text that is no
    /// armored public key. Default: no encryption.
    #[serde(default)]
    pub encrypt: Option<crate::encrypt::EncryptConfig>,
    /// Load the lines of each file (jsonl or xml lines, decompressed when gzip'd) into a record
    /// sink (in `sinks`), e.g. `{"sink": "db", "format": "jsonl"}`, besides or instead of
    /// delivering the file. Runs after every destination has its receipt and before
    /// `after_delivery`; writes its own receipt (`done/<job-id>/records/<sink>.json`). Each
    /// record is keyed by (`correlationId`, line number), so a rerun applies nothing twice. A
    /// bad line (not one JSON object / XML element, too long, not UTF-8) dead-letters the job
    /// naming the line: the lines before it stay loaded, and a replay of the fixed file loads
    /// the rest without loading any line twice. Default: no records.
    #[serde(default)]
    pub records: Option<RecordsConfig>,
}

/// Retry and give-up rules for transfers.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
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
    /// Total seconds one operation (one request, one delivery to a destination) may spend on
    /// tries and backoff together: no retry starts whose wait would end after it, and the error
    /// then says the budget was spent. Retries never wait past the invocation's deadline either.
    #[serde(default = "default_retry_budget_secs")]
    pub retry_budget_secs: u64,
    /// Seconds before the Lambda invocation's deadline at which blob-copy stops: no job or
    /// delivery starts later than this, and a delivery in flight is stopped, saves its resume
    /// checkpoint and is reported for redelivery (not counted as a failure). Half of it is
    /// left for that wrap-up, the rest for the reply.
    #[serde(default = "default_transfer_deadline_margin_secs")]
    pub deadline_margin_secs: u64,
}

impl TransferConfig {
    /// The retry policy these settings describe (no deadline).
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            retries: self.retries,
            initial: std::time::Duration::from_millis(self.initial_backoff_ms),
            max: std::time::Duration::from_millis(self.max_backoff_ms),
            budget: std::time::Duration::from_secs(self.retry_budget_secs),
            deadline: None,
        }
    }
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            retries: default_retries(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            max_resumes: default_max_resumes(),
            retry_budget_secs: default_retry_budget_secs(),
            deadline_margin_secs: default_transfer_deadline_margin_secs(),
        }
    }
}

fn default_max_attempts() -> u32 {
    5
}
fn default_retries() -> usize {
    RetryPolicy::DEFAULT_RETRIES
}
fn default_initial_backoff_ms() -> u64 {
    RetryPolicy::DEFAULT_INITIAL.as_millis() as u64
}
fn default_max_backoff_ms() -> u64 {
    RetryPolicy::DEFAULT_MAX.as_millis() as u64
}
fn default_max_resumes() -> u32 {
    10
}
fn default_retry_budget_secs() -> u64 {
    RetryPolicy::DEFAULT_BUDGET.as_secs()
}
fn default_transfer_deadline_margin_secs() -> u64 {
    10
}

/// A REST view read incrementally (Flowfinity style): `GET <url>?onbehalfof=<user>&
/// previouslastsubmissionid=<watermark>` with HTTP Basic auth, answering a JSON array of records
/// with `RecordID` and `lastSubmissionId`, sorted ascending by `lastSubmissionId`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
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

/// How a route selects its files. Which kind a route is follows from its source's kind;
/// [`Config::route_selector`] decides it in one place and refuses fields of the other kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSelector<'a> {
    /// A webhook route (Azure Blob source): files notified in `container` whose name matches
    /// `file_glob` (if set) and contains `name_contains` (if set).
    Webhook {
        /// The container the notification must name.
        container: &'a str,
        /// Glob the file name must match.
        file_glob: Option<&'a str>,
        /// Substring the file name must contain.
        name_contains: Option<&'a str>,
    },
    /// A pub/sub export route: files announced with one of `blob_types` (compared
    /// case-insensitively), delivered decompressed when `decompress` and gzip'd.
    BlobTypes {
        /// The announced blob types this route takes.
        blob_types: &'a [String],
        /// Deliver gzip'd files decompressed.
        decompress: bool,
    },
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

    /// The selector of `route`, by its source's kind, with its fields checked; an error says
    /// which fields belong to the other kind.
    pub fn route_selector<'a>(
        &'a self,
        route: &'a RouteConfig,
    ) -> Result<RouteSelector<'a>, String> {
        match self.sources.get(&route.source) {
            None => Err(format!("names unknown source {:?}", route.source)),
            Some(SourceConfig::PubsubExport(_)) => {
                if route.blob_types.is_empty() || route.blob_types.iter().any(|t| t.is_empty()) {
                    return Err("a pub/sub export route needs blob_types (non-empty names)".into());
                }
                if route.container.is_some()
                    || route.file_glob.is_some()
                    || route.name_contains.is_some()
                {
                    return Err("container, file_glob and name_contains are for webhook routes; pub/sub export routes select files by blob_types".into());
                }
                Ok(RouteSelector::BlobTypes {
                    blob_types: &route.blob_types,
                    decompress: route.decompress,
                })
            }
            Some(SourceConfig::AzureBlob(_)) => {
                let Some(container) = &route.container else {
                    return Err("needs a container".into());
                };
                names::validate_container("container", container).map_err(|e| e.to_string())?;
                if !route.blob_types.is_empty() || route.decompress {
                    return Err(
                        "blob_types and decompress apply to pub/sub export routes only".into(),
                    );
                }
                if let Some(glob) = &route.file_glob {
                    names::compile_glob(glob)
                        .map_err(|e| format!("bad file_glob {glob:?}: {e}"))?;
                }
                Ok(RouteSelector::Webhook {
                    container,
                    file_glob: route.file_glob.as_deref(),
                    name_contains: route.name_contains.as_deref(),
                })
            }
        }
    }

    /// The routes webhook notifications are matched against (valid configs only).
    pub fn webhook_routes(&self) -> impl Iterator<Item = &RouteConfig> {
        self.routes
            .iter()
            .filter(|r| matches!(self.route_selector(r), Ok(RouteSelector::Webhook { .. })))
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
            if route.destinations.is_empty() && route.records.is_none() {
                return invalid(format!(
                    "route {:?} has no destinations (and no records)",
                    route.name
                ));
            }
            if let Err(e) = self.validate_records(route) {
                return invalid(format!("route {:?}: {e}", route.name));
            }
            for d in &route.destinations {
                if !self.destinations.contains_key(d) {
                    return invalid(format!(
                        "route {:?} names unknown destination {d:?}",
                        route.name
                    ));
                }
            }
            if let Err(e) = self.route_selector(route) {
                return invalid(format!("route {:?}: {e}", route.name));
            }
            if let Some(template) = &route.name_template
                && let Err(e) = crate::name_template::NameTemplate::parse(template)
            {
                return invalid(format!("route {:?}: {e}", route.name));
            }
            if let Some(encrypt) = &route.encrypt
                && let Err(e) = encrypt.validate()
            {
                return invalid(format!("route {:?}: {e}", route.name));
            }
            if let Some(folder) = &route.target_folder
                && let Err(e) = names::validate_object_name("target_folder", folder, 512)
            {
                return invalid(format!("route {:?}: {e}", route.name));
            }
        }
        if let Err(e) = self.reconcile.validate() {
            return invalid(format!("reconcile: {e}"));
        }
        for (name, source) in &self.sources {
            if let Err(e) = source.validate() {
                return invalid(format!("source {name:?}: {e}"));
            }
        }
        for (name, dest) in &self.destinations {
            if let Err(e) = dest.validate() {
                return invalid(format!("destination {name:?}: {e}"));
            }
        }
        self.validate_views()
    }

    /// A route's `records`: a known sink, sane caps; a route that only loads records takes no
    /// file-delivery settings.
    fn validate_records(&self, route: &RouteConfig) -> Result<(), String> {
        let Some(records) = &route.records else {
            return Ok(());
        };
        if !self.sinks.contains_key(&records.sink) {
            return Err(format!("records names unknown sink {:?}", records.sink));
        }
        records.validate()?;
        if route.destinations.is_empty()
            && (route.encrypt.is_some()
                || route.name_template.is_some()
                || route.target_folder.is_some()
                || route.decompress)
        {
            return Err("encrypt, name_template, target_folder and decompress apply to delivered files; this route has no destinations".into());
        }
        Ok(())
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
            if let Err(e) = sink.validate() {
                return invalid(format!("sink {name:?}: {e}"));
            }
            // Two sinks on one table would fight over its rows.
            if let SinkConfig::Postgres(pg) = sink
                && !tables.insert((&pg.host, pg.port, &pg.dbname, &pg.table))
            {
                return invalid(format!(
                    "sink {name:?}: another sink writes the same table {:?}",
                    pg.table
                ));
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
            DestinationConfig::S3(S3DestinationConfig {
                part_size_mib: 5,
                ..
            })
        ));
    }

    #[test]
    fn views_and_sinks_parse_and_are_checked() {
        let c = Config::from_json(SAMPLE).unwrap();
        let v = &c.views["cases"];
        assert_eq!((v.chunk_size, v.lease_secs), (500, 900));
        assert!(matches!(
            c.sinks["db"],
            SinkConfig::Postgres(PostgresConfig { port: 5432, .. })
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

    const PUBSUB: &str = r#"{
      "state": {"bucket": "ferry-state"},
      "sources": {"eg": {"type": "pubsub_export", "tenant_service_url": "https://tenant.example",
        "integration_name": "files", "aad": {"tenant_id": "t", "client_id": "c",
        "scope": "api://eg/.default", "client_secret": {"env": "AAD_SECRET"}}}},
      "destinations": {"disk": {"type": "local_dir", "path": "/tmp/out"}},
      "routes": [{"name": "items", "source": "eg", "blob_types": ["Gateway.ItemChanges"], "decompress": true, "destinations": ["disk"]}]
    }"#;

    #[test]
    fn pubsub_sources_and_routes_are_checked() {
        let c = Config::from_json(PUBSUB).unwrap();
        let SourceConfig::PubsubExport(p) = &c.sources["eg"] else {
            panic!("pubsub source")
        };
        assert_eq!(p.aad.authority_url, "https://login.microsoftonline.com");
        assert_eq!(
            (p.max_decompressed_bytes, p.receive_timeout_secs),
            (1 << 30, 20)
        );
        for (from, to, want) in [
            (
                "\"decompress\": true",
                "\"container\": \"x-y-z\"",
                "select files by blob_types",
            ),
            (
                "\"blob_types\": [\"Gateway.ItemChanges\"], ",
                "",
                "needs blob_types",
            ),
            (
                "\"client_secret\"",
                "\"certificate\": {\"env\": \"C\"}, \"client_secret\"",
                "exactly one of",
            ),
            ("\"client_secret\"", "\"private_key\"", "exactly one of"),
            (
                "https://tenant.example",
                "ftp://tenant.example",
                "http(s) URL",
            ),
            ("\"integration_name\"", "\"integration\"", "unknown field"),
        ] {
            let e = Config::from_json(&PUBSUB.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{to}: {e}");
        }
        // A route may load records instead of delivering the file; the sink must exist and the
        // caps be sane.
        let with_records = |records: &str, dests: &str| {
            PUBSUB
                .replace(
                    "\"destinations\": {\"disk\"",
                    "\"sinks\": {\"db\": {\"type\": \"postgres\", \"host\": \"h\", \"user\": \"u\", \"dbname\": \"d\", \"table\": \"rows\"}}, \"destinations\": {\"disk\"",
                )
                .replace(
                    "\"decompress\": true, \"destinations\": [\"disk\"]",
                    &format!("{dests}\"records\": {records}"),
                )
        };
        let c =
            Config::from_json(&with_records(r#"{"sink": "db", "format": "jsonl"}"#, "")).unwrap();
        let records = c.routes[0].records.as_ref().unwrap();
        assert!(c.routes[0].destinations.is_empty());
        assert_eq!(
            (records.format, records.chunk_lines, records.max_line_bytes),
            (RecordFormat::Jsonl, 1000, 1 << 20)
        );
        for (records, dests, want) in [
            (r#"{"sink": "nope", "format": "jsonl"}"#, "", "unknown sink"),
            (r#"{"sink": "db", "format": "csv"}"#, "", "unknown variant"),
            (
                r#"{"sink": "db", "format": "jsonl", "chunk": 5}"#,
                "",
                "unknown field",
            ),
            (
                r#"{"sink": "db", "format": "jsonl", "chunk_lines": 0}"#,
                "",
                "chunk_lines",
            ),
            (
                r#"{"sink": "db", "format": "jsonl", "max_line_bytes": 8}"#,
                "",
                "max_line_bytes",
            ),
            (
                r#"{"sink": "db", "format": "xml_lines", "max_line_bytes": 1000, "max_total_bytes": 999}"#,
                "",
                "max_total_bytes",
            ),
            (
                r#"{"sink": "db", "format": "jsonl"}"#,
                "\"decompress\": true, ",
                "no destinations",
            ),
        ] {
            let e = Config::from_json(&with_records(records, dests))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{records}: {e}");
        }
        let e = Config::from_json(&PUBSUB.replace(", \"destinations\": [\"disk\"]", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no destinations (and no records)"), "{e}");
        // Webhook routes keep needing a container and take no pub/sub settings.
        let webhook = SAMPLE.replace("\"container\": \"exports\", ", "");
        let e = Config::from_json(&webhook).unwrap_err().to_string();
        assert!(e.contains("needs a container"), "{e}");
        let webhook = SAMPLE.replace(
            "\"container\": \"exports\",",
            "\"container\": \"exports\", \"decompress\": true,",
        );
        let e = Config::from_json(&webhook).unwrap_err().to_string();
        assert!(e.contains("pub/sub export routes only"), "{e}");
    }
}
