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
    /// A pub/sub file export with rotating tokens (EG Retail / Lindbak "File export"): the
    /// vendor's token service hands out a Service Bus subscription (file notifications) and
    /// SAS-signed blob base URLs (the files). `export-pull` turns notifications into jobs for the
    /// routes that name this source; `blob-copy` downloads the files with the same tokens.
    PubsubExport(Box<PubsubExportConfig>),
}

fn default_read_timeout_secs() -> u64 {
    30
}

/// A pub/sub file export source (see `SourceConfig::PubsubExport`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubExportConfig {
    /// The tenant's service URL; tokens come from
    /// `POST {tenant_service_url}/api/external/integration/export/temporaryendpoints`.
    pub tenant_service_url: String,
    /// The integration name registered with the vendor (`integrationName` of the token request).
    pub integration_name: String,
    /// How ferry signs in to Azure AD (Entra ID) to call the token service.
    pub aad: AadConfig,
    /// Service Bus topic, used only when the connection string has no `EntityPath` and the
    /// subscription name is not a full `topic/subscriptions/name` path.
    #[serde(default)]
    pub topic: Option<String>,
    /// Refresh the stored tokens when they expire within this many seconds (token-refresh runs
    /// on a schedule shorter than this).
    #[serde(default = "default_refresh_ahead_secs")]
    pub refresh_ahead_secs: u64,
    /// At most one token refresh per this many seconds in one function instance, however many
    /// requests are refused at once (the vendor's own client limits refreshes the same way).
    #[serde(default = "default_min_refresh_interval_secs")]
    pub min_refresh_interval_secs: u64,
    /// Lifetime assumed for tokens when no SAS carries an `se` expiry (stored access policies).
    #[serde(default = "default_token_ttl_secs")]
    pub default_token_ttl_secs: u64,
    /// Seconds a single read from the token service, Service Bus or Blob may stall.
    #[serde(default = "default_read_timeout_secs")]
    pub read_timeout_secs: u64,
    /// Seconds one Service Bus receive waits for a message (`timeout=` of the long poll).
    #[serde(default = "default_receive_timeout_secs")]
    pub receive_timeout_secs: u64,
    /// export-pull stops receiving this many seconds before the Lambda deadline, so the message
    /// in hand is saved and completed in time.
    #[serde(default = "default_deadline_margin_secs")]
    pub deadline_margin_secs: u64,
    /// export-pull ends its run at the first empty receive instead of polling until the deadline
    /// (for frequent schedules and local runs).
    #[serde(default)]
    pub stop_when_idle: bool,
    /// Largest message body accepted, in bytes; a larger one is recorded as poison.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Largest decompressed size of one gzip'd file, in bytes; more is refused as a gzip bomb.
    /// Decompressed deliveries are staged in the temp directory, which must have this much room.
    #[serde(default = "default_max_decompressed_bytes")]
    pub max_decompressed_bytes: u64,
    /// Longest line, in bytes, of a decompressed line-oriented file (`application/x-jsonlines`,
    /// `application/x-xmllines`); a longer one is refused.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

fn default_refresh_ahead_secs() -> u64 {
    600
}
fn default_min_refresh_interval_secs() -> u64 {
    30
}
fn default_token_ttl_secs() -> u64 {
    3600
}
fn default_receive_timeout_secs() -> u64 {
    20
}
fn default_deadline_margin_secs() -> u64 {
    15
}
fn default_max_message_bytes() -> usize {
    256 * 1024
}
fn default_max_decompressed_bytes() -> u64 {
    1 << 30
}
fn default_max_line_bytes() -> usize {
    16 << 20
}

/// Azure AD (Entra ID) client credentials for the token service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AadConfig {
    /// Authority host; tokens come from `{authority_url}/{tenant_id}/oauth2/v2.0/token`.
    #[serde(default = "default_authority_url")]
    pub authority_url: String,
    /// Directory (tenant) id.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
    /// Scope requested, e.g. `api://<token service app id>/.default`.
    pub scope: String,
    /// Client secret; set this or `certificate`.
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    /// PEM holding the client certificate (its SHA-1 thumbprint becomes the `x5t` of the signed
    /// `client_assertion`) and, unless `private_key` is set, its RSA private key.
    #[serde(default)]
    pub certificate: Option<SecretRef>,
    /// PEM RSA private key (PKCS#8 or PKCS#1) of the certificate, when not in `certificate`.
    #[serde(default)]
    pub private_key: Option<SecretRef>,
}

fn default_authority_url() -> String {
    "https://login.microsoftonline.com".into()
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
    /// A OneDrive or SharePoint document library via Microsoft Graph (see `dest::graph`).
    Graph(Box<crate::dest::graph::GraphConfig>),
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
fn default_retry_budget_secs() -> u64 {
    300
}
fn default_transfer_deadline_margin_secs() -> u64 {
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
            let pubsub = matches!(
                self.sources.get(&route.source),
                Some(SourceConfig::PubsubExport(_))
            );
            if pubsub {
                if route.blob_types.is_empty() || route.blob_types.iter().any(|t| t.is_empty()) {
                    return invalid(format!(
                        "route {:?}: a pub/sub export route needs blob_types (non-empty names)",
                        route.name
                    ));
                }
                if route.container.is_some()
                    || route.file_glob.is_some()
                    || route.name_contains.is_some()
                {
                    return invalid(format!(
                        "route {:?}: container, file_glob and name_contains are for webhook routes; pub/sub export routes select files by blob_types",
                        route.name
                    ));
                }
            } else {
                let Some(container) = &route.container else {
                    return invalid(format!("route {:?} needs a container", route.name));
                };
                if let Err(e) = names::validate_container("container", container) {
                    return invalid(format!("route {:?}: {e}", route.name));
                }
                if !route.blob_types.is_empty() || route.decompress {
                    return invalid(format!(
                        "route {:?}: blob_types and decompress apply to pub/sub export routes only",
                        route.name
                    ));
                }
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
        for (name, source) in &self.sources {
            if let SourceConfig::PubsubExport(p) = source {
                let aad = &p.aad;
                let credentials = usize::from(aad.client_secret.is_some())
                    + usize::from(aad.certificate.is_some());
                if credentials != 1 {
                    return invalid(format!(
                        "source {name:?}: set exactly one of aad.client_secret and aad.certificate"
                    ));
                }
                if aad.private_key.is_some() && aad.certificate.is_none() {
                    return invalid(format!(
                        "source {name:?}: aad.private_key needs aad.certificate"
                    ));
                }
                for (field, url) in [
                    ("tenant_service_url", &p.tenant_service_url),
                    ("aad.authority_url", &aad.authority_url),
                ] {
                    if !url.starts_with("https://") && !url.starts_with("http://") {
                        return invalid(format!("source {name:?}: {field} must be an http(s) URL"));
                    }
                }
                if p.integration_name.is_empty() || aad.tenant_id.is_empty() {
                    return invalid(format!(
                        "source {name:?}: integration_name and aad.tenant_id must not be empty"
                    ));
                }
                if p.max_decompressed_bytes == 0 || p.max_line_bytes == 0 {
                    return invalid(format!(
                        "source {name:?}: max_decompressed_bytes and max_line_bytes must be > 0"
                    ));
                }
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
            if let DestinationConfig::Graph(g) = dest {
                g.validate()
                    .or_else(|e| invalid(format!("destination {name:?}: {e}")))?;
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
