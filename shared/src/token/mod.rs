//! Rotating export tokens (EG Retail / Lindbak-style pub/sub file export). An Azure AD
//! client-credentials token buys a set of temporary endpoints from the vendor's token service: a
//! Service Bus subscription connection string and SAS-signed blob base URLs. They rotate at any
//! time, so every function shares one stored copy (`tokens/<source>.json`, compare-and-swap) and
//! refreshes it single-flight when a request is refused.
//!
//! The token set holds secrets (SAS signatures, the Service Bus key): they live in `SecretString`s,
//! so `Debug` shows `[REDACTED]`, and only `BlobBase::url` (scheme, host, path) is ever logged.

pub mod cache;
pub mod service;

use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};
use thiserror::Error;

use crate::clock::now_ms;
use crate::pubsub::uri;
use crate::redact::redact_url;
use crate::retry::{RetryStop, Retryable};
use crate::secret::{SecretError, expose};
use crate::state::StateError;

/// Why tokens could not be obtained. Never contains a token, key or signature.
#[derive(Debug, Error)]
pub enum TokenError {
    /// No Azure AD token for the token service (refused credentials, unusable certificate,
    /// Azure AD unavailable).
    #[error(transparent)]
    Aad(#[from] crate::azure_ad::AadError),
    /// The token service answered 403: the vendor has not granted the integration yet.
    #[error(
        "the token service answered 403 Forbidden for integration {integration:?}: permissions not granted yet (the vendor must grant this app registration access to the integration's file export)"
    )]
    PermissionsNotGranted {
        /// The integration the tokens are for.
        integration: String,
    },
    /// The token service refused a fresh Azure AD token (401).
    #[error(
        "the token service refused the Azure AD token (401) for integration {integration:?}: check aad.scope and the app registration"
    )]
    Unauthorized {
        /// The integration the tokens are for.
        integration: String,
    },
    /// Credentials in the config cannot be used (unreadable certificate or key).
    #[error("token credentials unusable: {0}")]
    Config(String),
    /// The token service or Azure AD answered something we cannot use.
    #[error("unusable answer: {0}")]
    BadResponse(String),
    /// 5xx, 429, 408, resets, timeouts.
    #[error("token endpoint temporarily unavailable: {reason}")]
    Transient {
        /// What happened (secret-free).
        reason: String,
        /// How long the server asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The current tokens were refused, but they were refreshed less than
    /// `min_refresh_interval_secs` ago: a refresh is allowed again after `retry_after` (the rest
    /// of the interval). Retryable: a vendor rotation that lands just after our refresh passes.
    #[error(
        "tokens refused, but they were refreshed less than the minimum interval ago; a refresh is allowed again in {} ms",
        retry_after.as_millis()
    )]
    RefreshTooSoon {
        /// What is left of the minimum refresh interval.
        retry_after: Duration,
    },
    /// The state store failed while reading or saving tokens.
    #[error(transparent)]
    State(#[from] StateError),
    /// A configured secret could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

impl Retryable for TokenError {
    fn is_retryable(&self) -> bool {
        match self {
            TokenError::Transient { .. } | TokenError::RefreshTooSoon { .. } => true,
            TokenError::Aad(e) => e.is_retryable(),
            TokenError::State(e) => e.is_retryable(),
            _ => false,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            TokenError::Transient { retry_after, .. } => *retry_after,
            TokenError::RefreshTooSoon { retry_after } => Some(*retry_after),
            TokenError::Aad(e) => e.retry_after(),
            _ => None,
        }
    }
    fn retries_stopped(self, why: RetryStop) -> Self {
        match self {
            TokenError::Transient {
                reason,
                retry_after,
            } => TokenError::Transient {
                reason: format!("{reason} ({why})"),
                retry_after,
            },
            TokenError::State(e) => TokenError::State(e.retries_stopped(why)),
            TokenError::Aad(e) => TokenError::Aad(e.retries_stopped(why)),
            other => other,
        }
    }
}

/// One blob base URL of a token set: the public part and its SAS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobBase {
    /// `scheme://host[:port]/path` without query: safe to log.
    pub url: String,
    /// The SAS query string (without `?`).
    #[serde(serialize_with = "serialize_secret")]
    pub sas: SecretString,
}

/// The temporary endpoints the token service handed out, as stored in `tokens/<source>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportTokens {
    /// Integration name the tokens were issued for.
    pub integration: String,
    /// Bumped by every stored refresh; a request refused with generation `g` asks for `> g`.
    pub generation: u64,
    /// When the token service answered (milliseconds since the Unix epoch, refresher's clock).
    pub fetched_at_ms: u64,
    /// Earliest SAS expiry (`se`) among the endpoints, else `fetched_at` + the configured TTL.
    pub expires_at_ms: u64,
    /// `serviceBusSubscriptionName` as given.
    pub subscription_name: String,
    /// `serviceBusSubscriptionConnectionString` (holds a key or a signature).
    #[serde(serialize_with = "serialize_secret")]
    pub connection_string: SecretString,
    /// `blobBaseUrlsWithToken`, split into public URL and SAS.
    pub blob_bases: Vec<BlobBase>,
}

fn serialize_secret<S: Serializer>(value: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(expose(value))
}

impl ExportTokens {
    /// Time left before expiry (zero when expired).
    pub fn expires_in(&self) -> Duration {
        Duration::from_millis(self.expires_at_ms.saturating_sub(now_ms()))
    }

    /// Age of the token set.
    pub fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.fetched_at_ms))
    }

    /// The public base URLs, for logs.
    pub fn base_urls(&self) -> Vec<&str> {
        self.blob_bases.iter().map(|b| b.url.as_str()).collect()
    }

    /// The base a checked blob URL lies under, with the URL's part below it (still encoded).
    pub fn base_for(&self, uri: &url::Url) -> Option<(&BlobBase, String)> {
        self.blob_bases.iter().find_map(|b| {
            let base = url::Url::parse(&b.url).ok()?;
            uri::relative_to(&base, uri).map(|rest| (b, rest.to_string()))
        })
    }

    /// Checks an untrusted blob URL from a message and places it under one of the bases:
    /// the container (last segment of the base path) and the blob name below the base.
    pub fn locate(&self, raw: &str) -> Result<uri::Located, uri::UriRefusal> {
        let url = uri::check(raw)?;
        let Some((base, rest)) = self.base_for(&url) else {
            return Err(uri::UriRefusal::OutsideBases {
                uri: redact_url(url.as_str()),
                bases: self.base_urls().join(", "),
            });
        };
        let name = uri::blob_name(&rest)?;
        let base_url = url::Url::parse(&base.url).map_err(|_| uri::UriRefusal::Invalid)?;
        Ok(uri::Located {
            url: url.to_string(),
            container: uri::container_of(&base_url),
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_errors_hide_secrets_but_storage_keeps_them() {
        let t = ExportTokens {
            integration: "i".into(),
            generation: 3,
            fetched_at_ms: 1,
            expires_at_ms: 2,
            subscription_name: "sub".into(),
            connection_string: SecretString::from(
                "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=TOPSECRETKEY",
            ),
            blob_bases: vec![BlobBase {
                url: "https://a.blob.core.windows.net/c".into(),
                sas: SecretString::from("sv=1&sig=TOPSECRETSIG"),
            }],
        };
        let debug = format!("{t:?}");
        assert!(!debug.contains("TOPSECRET"), "{debug}");
        let stored = serde_json::to_string(&t).unwrap();
        assert!(stored.contains("TOPSECRETKEY") && stored.contains("TOPSECRETSIG"));
        let back: ExportTokens = serde_json::from_str(&stored).unwrap();
        assert_eq!(expose(&back.blob_bases[0].sas), "sv=1&sig=TOPSECRETSIG");
    }
}
