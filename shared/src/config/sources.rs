//! Source settings: one typed struct per kind, each checking itself (`validate`). The source's
//! own file builds it (`from_config`); `Config::validate` only cross-checks names.

use serde::{Deserialize, Serialize};

use crate::secret::SecretRef;

/// A place files are read from.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// An Azure Blob Storage account read with a SAS token.
    AzureBlob(AzureBlobConfig),
    /// A pub/sub file export with rotating tokens (EG Retail / Lindbak "File export"): the
    /// vendor's token service hands out a Service Bus subscription (file notifications) and
    /// SAS-signed blob base URLs (the files). `export-pull` turns notifications into jobs for the
    /// routes that name this source; `blob-copy` downloads the files with the same tokens.
    ///
    /// The connection string and blob URLs are never configured: the token service hands them
    /// out. One with `UseDevelopmentEmulator=true` (a local emulator or fake) is spoken to over
    /// plain `http://`, on a loopback host only; for a local token service and Azure AD
    /// stand-in, point `tenant_service_url` and `aad.authority_url` at them.
    PubsubExport(Box<PubsubExportConfig>),
}

impl SourceConfig {
    /// Checks the settings of whichever kind this is.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            SourceConfig::AzureBlob(a) => a.validate(),
            SourceConfig::PubsubExport(p) => p.validate(),
        }
    }
}

/// An Azure Blob Storage account (see [`SourceConfig::AzureBlob`]).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AzureBlobConfig {
    /// Account URL: `https://<account>.blob.core.windows.net`, or the emulator's
    /// path-style `http://127.0.0.1:10000/devstoreaccount1`.
    pub account_url: String,
    /// SAS query string (container or account SAS, with or without a stored access policy
    /// `si=`); leading `?` optional.
    pub sas: SecretRef,
    /// Seconds a single read may stall before the connection is dropped and resumed.
    #[serde(default = "default_read_timeout_secs")]
    pub read_timeout_secs: u64,
    /// Ranged Get Blob requests in flight at once for a blob larger than `read_range_mib`: each
    /// reads its own range (pinned to the blob's ETag, resumed on its own after a broken
    /// connection) and the bytes are passed on in order. More streams help most on a long link
    /// (one TCP stream is bounded by its window / round-trip time); 1 reads every blob with one
    /// request. At most `read_streams x read_ahead_mib` MiB are buffered.
    #[serde(default = "default_read_streams")]
    pub read_streams: usize,
    /// Size of each ranged read, in MiB; blobs no larger than this are read with one request.
    /// Larger ranges mean fewer requests (each costs a round trip and the service's own work
    /// per request); they cost no memory, which `read_ahead_mib` bounds.
    #[serde(default = "default_read_range_mib")]
    pub read_range_mib: u64,
    /// MiB one range may read ahead of the bytes already passed on; a range that far ahead stops
    /// reading its connection until the copy catches up.
    #[serde(default = "default_read_ahead_mib")]
    pub read_ahead_mib: u64,
}

fn default_read_timeout_secs() -> u64 {
    30
}

fn default_read_streams() -> usize {
    crate::source::ranged::ParallelReads::default().streams
}

fn default_read_range_mib() -> u64 {
    crate::source::ranged::ParallelReads::default().range_bytes >> 20
}

fn default_read_ahead_mib() -> u64 {
    crate::source::ranged::ParallelReads::default().ahead_bytes >> 20
}

/// Largest read buffer (`read_streams x read_ahead_mib`) accepted, in MiB: blob-copy runs in a
/// few hundred MB of Lambda memory.
const MAX_READ_WINDOW_MIB: u64 = 64;

impl AzureBlobConfig {
    /// Checks the read settings.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=16).contains(&self.read_streams) {
            return Err(format!(
                "read_streams must be 1..=16, not {}",
                self.read_streams
            ));
        }
        if self.read_range_mib == 0 {
            return Err("read_range_mib must be at least 1".into());
        }
        if self.read_ahead_mib == 0 {
            return Err("read_ahead_mib must be at least 1".into());
        }
        let window = self.read_streams as u64 * self.read_ahead_mib.min(self.read_range_mib);
        if window > MAX_READ_WINDOW_MIB {
            return Err(format!(
                "read_streams x read_ahead_mib is {window} MiB of buffer; keep it at most {MAX_READ_WINDOW_MIB}"
            ));
        }
        Ok(())
    }
}

/// A pub/sub file export source (see `SourceConfig::PubsubExport`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
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
    /// Lock duration of the Service Bus subscription, in seconds (the broker's `LockDuration`,
    /// 1 minute unless the vendor set another). While a message is being saved its lock is
    /// renewed at about half of this; a renewal answered 404 means the lock was lost and the
    /// message is left to its redelivery.
    #[serde(default = "default_lock_duration_secs")]
    pub lock_duration_secs: u64,
    /// export-pull also drains the subscription's dead-letter subqueue
    /// (`{topic}/subscriptions/{sub}/$deadletterqueue`) at the start of every run: a valid
    /// notification there becomes its job (create-once, so a file already taken is not delivered
    /// twice), anything else is recorded under `failed/` with the broker's `DeadLetterReason`.
    #[serde(default = "default_drain_dead_letters")]
    pub drain_dead_letters: bool,
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
fn default_lock_duration_secs() -> u64 {
    60
}
fn default_drain_dead_letters() -> bool {
    true
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
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
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

impl PubsubExportConfig {
    /// Exactly one AAD credential, http(s) URLs, non-empty names, positive caps.
    pub fn validate(&self) -> Result<(), String> {
        let aad = &self.aad;
        let credentials =
            usize::from(aad.client_secret.is_some()) + usize::from(aad.certificate.is_some());
        if credentials != 1 {
            return Err("set exactly one of aad.client_secret and aad.certificate".into());
        }
        if aad.private_key.is_some() && aad.certificate.is_none() {
            return Err("aad.private_key needs aad.certificate".into());
        }
        for (field, url) in [
            ("tenant_service_url", &self.tenant_service_url),
            ("aad.authority_url", &aad.authority_url),
        ] {
            if !url.starts_with("https://") && !url.starts_with("http://") {
                return Err(format!("{field} must be an http(s) URL"));
            }
        }
        if self.integration_name.is_empty() || aad.tenant_id.is_empty() {
            return Err("integration_name and aad.tenant_id must not be empty".into());
        }
        if !(1..=300).contains(&self.lock_duration_secs) {
            return Err(
                "lock_duration_secs must be between 1 and 300 (Service Bus allows at most 5 minutes)"
                    .into(),
            );
        }
        if self.max_decompressed_bytes == 0 || self.max_line_bytes == 0 {
            return Err("max_decompressed_bytes and max_line_bytes must be > 0".into());
        }
        Ok(())
    }
}

fn default_authority_url() -> String {
    "https://login.microsoftonline.com".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pubsub(extra: &str) -> Result<PubsubExportConfig, String> {
        let json = format!(
            r#"{{"tenant_service_url": "https://tenant.example", "integration_name": "files",
                "aad": {{"tenant_id": "t", "client_id": "c", "scope": "api://eg/.default",
                         "client_secret": {{"env": "AAD_SECRET"}}}}{extra}}}"#
        );
        let p: PubsubExportConfig = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        p.validate().map(|()| p)
    }

    #[test]
    fn lock_duration_and_dead_letter_drain_default_and_are_checked() {
        let p = pubsub("").unwrap();
        assert_eq!((p.lock_duration_secs, p.drain_dead_letters), (60, true));
        let p = pubsub(r#", "lock_duration_secs": 2, "drain_dead_letters": false"#).unwrap();
        assert_eq!((p.lock_duration_secs, p.drain_dead_letters), (2, false));
        for bad in ["0", "301"] {
            let e = pubsub(&format!(r#", "lock_duration_secs": {bad}"#)).unwrap_err();
            assert!(e.contains("lock_duration_secs"), "{e}");
        }
    }

    #[test]
    fn parallel_read_settings_default_and_keep_the_window_bounded() {
        let blob = |extra: &str| -> Result<AzureBlobConfig, String> {
            let json = format!(
                r#"{{"account_url": "https://a.blob.core.windows.net", "sas": {{"env": "SAS"}}{extra}}}"#
            );
            let a: AzureBlobConfig = serde_json::from_str(&json).map_err(|e| e.to_string())?;
            a.validate().map(|()| a)
        };
        let a = blob("").unwrap();
        assert_eq!(
            (a.read_streams, a.read_range_mib, a.read_ahead_mib),
            (4, 16, 1)
        );
        // Large ranges cost no memory: only what each range holds ahead counts.
        let a =
            blob(r#", "read_streams": 16, "read_range_mib": 256, "read_ahead_mib": 4"#).unwrap();
        assert_eq!((a.read_streams, a.read_range_mib), (16, 256));
        let a = blob(r#", "read_streams": 8, "read_range_mib": 4, "read_ahead_mib": 32"#).unwrap();
        assert_eq!(a.read_ahead_mib, 32, "a range never holds more than itself");
        for bad in [
            r#", "read_streams": 0"#,
            r#", "read_streams": 17"#,
            r#", "read_range_mib": 0"#,
            r#", "read_ahead_mib": 0"#,
            r#", "read_streams": 8, "read_ahead_mib": 16"#,
        ] {
            let e = blob(bad).unwrap_err();
            assert!(e.contains("read_"), "{bad}: {e}");
        }
    }
}
