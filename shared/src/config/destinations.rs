//! Destination settings: one typed struct per kind, each checking itself (`validate`). The
//! destination's own file builds it (`from_config`); `Config::validate` only cross-checks names.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{S3Endpoint, default_io_timeout_secs};
use crate::secret::SecretRef;

/// A place files are delivered to.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DestinationConfig {
    /// An S3 bucket (multipart upload for large files). Each body carries a CRC32 checksum S3
    /// checks, in a signed header, and is not hashed again into the request signature; over a
    /// plain `http://` endpoint that catches corruption, not a deliberate change on the wire.
    S3(S3DestinationConfig),
    /// An SFTP server; files are written under a temporary name and renamed when complete.
    Sftp(SftpConfig),
    /// An HTTP endpoint that receives each file as a streamed request body.
    Http(HttpDestinationConfig),
    /// A local directory (local runs, mounted volumes); atomic rename into place.
    LocalDir(LocalDirConfig),
    /// A OneDrive or SharePoint document library via Microsoft Graph (see `dest::graph`).
    Graph(Box<super::GraphConfig>),
}

impl DestinationConfig {
    /// Checks the settings of whichever kind this is.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            DestinationConfig::S3(c) => c.validate(),
            DestinationConfig::Sftp(c) => c.validate(),
            DestinationConfig::Http(c) => c.validate(),
            DestinationConfig::LocalDir(_) => Ok(()),
            DestinationConfig::Graph(c) => c.validate(),
        }
    }
}

/// An S3 bucket (see [`DestinationConfig::S3`]).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3DestinationConfig {
    /// Target bucket.
    pub bucket: String,
    /// Key prefix put before each file name, e.g. `incoming/`.
    #[serde(default)]
    pub prefix: String,
    /// How to reach it.
    #[serde(default)]
    pub endpoint: S3Endpoint,
    /// Multipart part size in MiB (5..=512); also the single-request threshold.
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: u64,
    /// Parts uploaded at once; memory use is about `part_size_mib * (upload_concurrency + 1)`.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: usize,
}

impl S3DestinationConfig {
    /// Part size and concurrency within S3's and ferry's limits.
    pub fn validate(&self) -> Result<(), String> {
        if !(5..=512).contains(&self.part_size_mib) || self.upload_concurrency == 0 {
            return Err("part_size_mib must be 5..=512 and upload_concurrency >= 1".into());
        }
        Ok(())
    }
}

/// An SFTP server (see [`DestinationConfig::Sftp`]).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SftpConfig {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// Login user.
    pub username: String,
    /// The server's public host key in OpenSSH form (`ssh-ed25519 AAAA...`); connections to
    /// a server presenting any other key are refused.
    pub host_key: String,
    /// Password, if the server uses password authentication.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// OpenSSH private key (PEM text), if the server uses key authentication.
    #[serde(default)]
    pub private_key: Option<SecretRef>,
    /// Remote directory the files go to (created if missing).
    pub directory: String,
    /// Seconds to wait for connect, auth and each SFTP request.
    #[serde(default = "default_io_timeout_secs")]
    pub timeout_secs: u64,
    /// SSH connections that write one file of 8 MiB or more at once, each over 2 SFTP channels
    /// and each channel its own chunks at their offsets (1-8). On a long link one TCP
    /// connection moves at most its window per round trip, and more connections multiply that.
    /// The copy starts on the first connection and the others join as they log in; writers the
    /// server does not let in (a limit on logins per user) become SFTP channels of the first
    /// connection instead, and the process's later writes try only as many connections as the
    /// server let in. With 1, a large file goes over 4 SFTP channels of a single connection: one
    /// login per file.
    #[serde(default = "default_sftp_write_connections")]
    #[schemars(range(min = 1, max = SFTP_MAX_WRITE_CONNECTIONS))]
    pub write_connections: u8,
}

/// Most SSH connections one SFTP write may open.
pub const SFTP_MAX_WRITE_CONNECTIONS: u8 = 8;

impl SftpConfig {
    /// Some way to log in, and a usable number of connections.
    pub fn validate(&self) -> Result<(), String> {
        if self.password.is_none() && self.private_key.is_none() {
            return Err("set password or private_key".into());
        }
        if !(1..=SFTP_MAX_WRITE_CONNECTIONS).contains(&self.write_connections) {
            return Err(format!(
                "write_connections is {}: use 1 to {SFTP_MAX_WRITE_CONNECTIONS}",
                self.write_connections
            ));
        }
        Ok(())
    }
}

/// An HTTP endpoint (see [`DestinationConfig::Http`]).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpDestinationConfig {
    /// Target URL. `{name}` is replaced by the (percent-encoded) file name.
    pub url: String,
    /// `PUT` or `POST`.
    #[serde(default = "default_http_method")]
    pub method: String,
    /// Extra plain headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are secrets (e.g. `Authorization`); never logged.
    #[serde(default)]
    pub secret_headers: BTreeMap<String, SecretRef>,
    /// Seconds a single read or write may stall.
    #[serde(default = "default_io_timeout_secs")]
    pub timeout_secs: u64,
}

impl HttpDestinationConfig {
    /// A method that carries a body.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.method.as_str(), "PUT" | "POST") {
            return Err("method must be PUT or POST".into());
        }
        Ok(())
    }
}

/// A local directory (see [`DestinationConfig::LocalDir`]).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalDirConfig {
    /// Directory files are written to (created if missing).
    pub path: PathBuf,
}

/// 5 MiB (S3's smallest) x 5 in flight: 25 MiB in flight keeps a 60 ms link busy (2 x 8 MiB
/// left it idle half the time) within the 64 MiB bound, beside the source's read buffer (six
/// parts peaked at 70 MiB once the reader was no longer the slower side); see
/// docs/performance.md.
fn default_part_size_mib() -> u64 {
    5
}
fn default_upload_concurrency() -> usize {
    5
}
fn default_sftp_write_connections() -> u8 {
    4
}

fn default_ssh_port() -> u16 {
    22
}
fn default_http_method() -> String {
    "PUT".into()
}
