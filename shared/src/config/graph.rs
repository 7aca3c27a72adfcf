//! Settings of the Microsoft Graph destination (OneDrive and SharePoint document libraries):
//! the drive's address, upload-session sizes and the app registration's credentials. The
//! destination itself is `dest::graph`; protocol facts in `../shared/design.md` 6a.

use serde::{Deserialize, Serialize};

use crate::secret::SecretRef;

const MIB: u64 = 1024 * 1024;

/// What Graph does when a file of the same name exists.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ConflictBehavior {
    /// Replace it (the other destinations' overwrite semantics).
    #[default]
    Replace,
    /// Refuse the upload (409 `nameAlreadyExists` at the last byte).
    Fail,
    /// Keep both: Graph picks a new name for the upload.
    Rename,
}

impl ConflictBehavior {
    /// The `@microsoft.graph.conflictBehavior` value.
    pub fn as_graph(self) -> &'static str {
        match self {
            ConflictBehavior::Replace => "replace",
            ConflictBehavior::Fail => "fail",
            ConflictBehavior::Rename => "rename",
        }
    }
}

fn default_fragment_size_mib() -> u64 {
    10
}
fn default_simple_upload_max_bytes() -> u64 {
    GraphConfig::SIMPLE_UPLOAD_LIMIT_BYTES
}
fn default_authority_url() -> String {
    "https://login.microsoftonline.com".into()
}
fn default_graph_url() -> String {
    "https://graph.microsoft.com/v1.0".into()
}
fn default_timeout_secs() -> u64 {
    60
}

/// A OneDrive or SharePoint document library reached through Microsoft Graph (app-only).
/// Address the drive by exactly one of: `drive_id`; `hostname` + `site_path` (+ `library`);
/// `user`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// The drive's id, when known (skips the lookup at the first delivery).
    #[serde(default)]
    pub drive_id: Option<String>,
    /// SharePoint host, e.g. `contoso.sharepoint.com`.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Server-relative site path, e.g. `/sites/hmis`.
    #[serde(default)]
    pub site_path: Option<String>,
    /// Document library name on that site; the site's default library when unset.
    #[serde(default)]
    pub library: Option<String>,
    /// A user's OneDrive, by user principal name (`name@contoso.org`).
    #[serde(default)]
    pub user: Option<String>,
    /// Folder inside the drive the files go to (`""`: the drive's root).
    #[serde(default)]
    pub folder: String,
    /// What to do when the file exists: `replace` (default), `fail` or `rename`.
    #[serde(default)]
    pub conflict_behavior: ConflictBehavior,
    /// Upload-session fragment size in MiB; must be a multiple of 320 KiB (so a multiple of
    /// 5 MiB) below 60 MiB. Memory use is about one fragment.
    #[serde(default = "default_fragment_size_mib")]
    pub fragment_size_mib: u64,
    /// Files up to this many bytes go in one simple PUT (at most 4 MiB).
    #[serde(default = "default_simple_upload_max_bytes")]
    pub simple_upload_max_bytes: u64,
    /// Azure AD tenant (directory) id.
    pub tenant_id: String,
    /// The app registration's client id.
    pub client_id: String,
    /// Client secret (or use `certificate`).
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    /// PEM certificate (with its key unless `private_key` is set), for certificate credentials.
    #[serde(default)]
    pub certificate: Option<SecretRef>,
    /// PEM private key of `certificate`, when kept separately.
    #[serde(default)]
    pub private_key: Option<SecretRef>,
    /// Azure AD authority.
    #[serde(default = "default_authority_url")]
    pub authority_url: String,
    /// Graph API base URL.
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// Seconds a single request may stall (connect, each read).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

impl GraphConfig {
    /// Every upload-session fragment but the last is a multiple of this (320 KiB).
    pub const FRAGMENT_UNIT_BYTES: u64 = 327_680;
    /// Each request to an uploadUrl must stay below this.
    pub const MAX_REQUEST_BYTES: u64 = 60 * MIB;
    /// The largest body a simple `PUT .../content` accepts safely.
    pub const SIMPLE_UPLOAD_LIMIT_BYTES: u64 = 4 * MIB;

    /// Checks the drive address, fragment size, thresholds and credentials.
    pub fn validate(&self) -> Result<(), String> {
        let site = self.hostname.is_some() || self.site_path.is_some();
        let ways = [self.drive_id.is_some(), site, self.user.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if ways != 1 {
            return Err(
                "set exactly one of drive_id, hostname + site_path, or user to address the drive"
                    .into(),
            );
        }
        if site && (self.hostname.is_none() || self.site_path.is_none()) {
            return Err("hostname and site_path go together".into());
        }
        if self.library.is_some() && !site {
            return Err("library needs hostname + site_path".into());
        }
        let fragment = self.fragment_size_mib.saturating_mul(MIB);
        if fragment == 0
            || !fragment.is_multiple_of(Self::FRAGMENT_UNIT_BYTES)
            || fragment >= Self::MAX_REQUEST_BYTES
        {
            return Err(format!(
                "fragment_size_mib {} must give a multiple of 320 KiB below 60 MiB (5, 10, ... 55)",
                self.fragment_size_mib
            ));
        }
        if self.simple_upload_max_bytes > Self::SIMPLE_UPLOAD_LIMIT_BYTES {
            return Err("simple_upload_max_bytes must be at most 4 MiB (4194304)".into());
        }
        if self.tenant_id.is_empty() || self.client_id.is_empty() {
            return Err("tenant_id and client_id must not be empty".into());
        }
        match (&self.client_secret, &self.certificate) {
            (Some(_), Some(_)) => return Err("set client_secret or certificate, not both".into()),
            (None, None) => return Err("set client_secret or certificate".into()),
            _ => {}
        }
        if self.private_key.is_some() && self.certificate.is_none() {
            return Err("private_key needs certificate".into());
        }
        if self.timeout_secs == 0 {
            return Err("timeout_secs must be > 0".into());
        }
        for (field, url) in [
            ("authority_url", &self.authority_url),
            ("graph_url", &self.graph_url),
        ] {
            url::Url::parse(url).map_err(|e| format!("{field}: {e}"))?;
        }
        Ok(())
    }
}
