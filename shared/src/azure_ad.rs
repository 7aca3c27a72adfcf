//! Azure AD (Entra ID) client-credentials flow: a client secret, or a certificate proving itself
//! with a signed `client_assertion` (RS256 JWT, `x5t` = base64url SHA-1 thumbprint of the
//! certificate). The access token is cached until shortly before its `expires_in`.
//!
//! Signing uses aws-lc-rs, the crypto library rustls already compiles into every function, so
//! the RSA code is the audited, constant-time AWS-LC implementation at no extra build cost.
//!
//! Generic over what the token is for (the scope): the pub/sub token service and Microsoft Graph
//! both sign in through it. It has its own error type and imports nothing of theirs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::SecretString;
use serde_json::json;

use thiserror::Error;

use crate::http_client::{HttpClass, classify};
use crate::retry::{RetryPolicy, RetryStop, Retryable};
use crate::secret::expose;

/// Why no Azure AD token could be had. Never contains a secret.
#[derive(Debug, Error)]
pub enum AadError {
    /// Azure AD refused the client credentials (wrong secret, unknown client, expired certificate).
    #[error("Azure AD refused the client credentials ({code}): {description}")]
    Rejected {
        /// Azure AD's error code.
        code: String,
        /// Azure AD's error description.
        description: String,
    },
    /// The configured credentials cannot be used (unreadable certificate or key).
    #[error("token credentials unusable: {0}")]
    Config(String),
    /// Azure AD answered something we cannot use.
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
}

impl Retryable for AadError {
    fn is_retryable(&self) -> bool {
        matches!(self, AadError::Transient { .. })
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            AadError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
    fn retries_stopped(self, why: RetryStop) -> Self {
        match self {
            AadError::Transient {
                reason,
                retry_after,
            } => AadError::Transient {
                reason: format!("{reason} ({why})"),
                retry_after,
            },
            other => other,
        }
    }
}

/// Seconds since the epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How the client proves who it is.
pub enum AadCredential {
    /// `client_secret`.
    Secret(SecretString),
    /// A certificate and its key: a fresh signed `client_assertion` per token request.
    Certificate(CertificateSigner),
}

/// Signs client assertions with a certificate's RSA key.
pub struct CertificateSigner {
    key: RsaKeyPair,
    x5t: String,
}

impl std::fmt::Debug for CertificateSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateSigner")
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

impl CertificateSigner {
    /// From PEM text holding the certificate and, unless `key_pem` is given, its private key
    /// (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    pub fn from_pem(cert_pem: &str, key_pem: Option<&str>) -> Result<Self, AadError> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| {
            AadError::Config(format!("no PEM certificate found in aad.certificate: {e}"))
        })?;
        let key_text = key_pem.unwrap_or(cert_pem);
        let key = PrivateKeyDer::from_pem_slice(key_text.as_bytes())
            .map_err(|e| AadError::Config(format!("no PEM private key found: {e}")))?;
        let key = match &key {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => {
                return Err(AadError::Config(
                    "the private key is not an RSA key (PKCS#8 or PKCS#1)".into(),
                ));
            }
        }
        .map_err(|e| AadError::Config(format!("the RSA private key was rejected: {e}")))?;
        let thumbprint = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert.as_ref());
        Ok(Self {
            key,
            x5t: URL_SAFE_NO_PAD.encode(thumbprint.as_ref()),
        })
    }

    /// The certificate's `x5t` (base64url SHA-1 thumbprint).
    pub fn x5t(&self) -> &str {
        &self.x5t
    }

    /// A client assertion for `client_id` at `audience` (the token endpoint), valid 10 minutes.
    pub fn assertion(&self, client_id: &str, audience: &str) -> Result<SecretString, AadError> {
        let now = now_secs();
        let header = json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t});
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| AadError::Config("no randomness".into()))?;
        let claims = json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": hex::encode(jti),
            "nbf": now,
            "iat": now,
            "exp": now + 600,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| AadError::Config("RSA signing failed".into()))?;
        Ok(SecretString::from(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

impl AadCredential {
    /// The credential a config names: a client secret, or a certificate (PEM, with its private
    /// key in it or in `private_key`). Exactly one of the two must be set (configs check it).
    pub async fn resolve(
        client_secret: Option<&crate::secret::SecretRef>,
        certificate: Option<&crate::secret::SecretRef>,
        private_key: Option<&crate::secret::SecretRef>,
        secrets: &crate::secret::SecretResolver,
    ) -> Result<Self, crate::setup::SetupError> {
        use crate::setup::SetupError;
        match (client_secret, certificate) {
            (Some(secret), _) => Ok(AadCredential::Secret(secrets.resolve(secret).await?)),
            (None, Some(cert)) => {
                let cert = secrets.resolve(cert).await?;
                let key = match private_key {
                    Some(k) => Some(secrets.resolve(k).await?),
                    None => None,
                };
                let signer = CertificateSigner::from_pem(expose(&cert), key.as_ref().map(expose))
                    .map_err(|e| SetupError::Config(e.to_string()))?;
                Ok(AadCredential::Certificate(signer))
            }
            (None, None) => Err(SetupError::Config(
                "set aad.client_secret or aad.certificate".into(),
            )),
        }
    }
}

/// Gets and caches Azure AD access tokens for one client.
pub struct AadClient {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    scope: String,
    credential: AadCredential,
    retry: RetryPolicy,
    cached: Mutex<Option<(SecretString, Instant)>>,
}

impl AadClient {
    /// A client for `{authority_url}/{tenant_id}/oauth2/v2.0/token`.
    pub fn new(
        http: reqwest::Client,
        authority_url: &str,
        tenant_id: &str,
        client_id: &str,
        scope: &str,
        credential: AadCredential,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            http,
            token_url: format!(
                "{}/{tenant_id}/oauth2/v2.0/token",
                authority_url.trim_end_matches('/')
            ),
            client_id: client_id.to_string(),
            scope: scope.to_string(),
            credential,
            retry,
            cached: Mutex::new(None),
        }
    }

    /// An access token, from the cache while it has life left.
    pub async fn token(&self) -> Result<SecretString, AadError> {
        if let Some((token, until)) = self.cached.lock().expect("aad cache").as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let (token, expires_in) = self.retry.run("azure ad token", || self.request()).await?;
        // Keep it until shortly before it expires: 5 minutes early, or halfway for short ones.
        let early = Duration::from_secs(300).min(expires_in / 2);
        *self.cached.lock().expect("aad cache") =
            Some((token.clone(), Instant::now() + (expires_in - early)));
        tracing::info!(
            expires_in_secs = expires_in.as_secs(),
            "azure ad token acquired"
        );
        Ok(token)
    }

    /// Forgets the cached token (it was refused).
    pub fn invalidate(&self) {
        *self.cached.lock().expect("aad cache") = None;
    }

    async fn request(&self) -> Result<(SecretString, Duration), AadError> {
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", self.client_id.clone()),
            ("scope", self.scope.clone()),
        ];
        let assertion;
        match &self.credential {
            AadCredential::Secret(secret) => {
                form.push(("client_secret", expose(secret).to_string()));
            }
            AadCredential::Certificate(signer) => {
                assertion = signer.assertion(&self.client_id, &self.token_url)?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", expose(&assertion).to_string()));
            }
        }
        let resp = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| AadError::Transient {
                reason: format!("azure ad: {}", e.without_url()),
                retry_after: None,
            })?;
        let status = resp.status().as_u16();
        let class = classify(&resp);
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if let HttpClass::Retryable { retry_after, .. } = class {
            return Err(AadError::Transient {
                reason: format!("azure ad answered HTTP {status}"),
                retry_after,
            });
        }
        if class != HttpClass::Success {
            let field = |k: &str| body.get(k).and_then(|v| v.as_str()).unwrap_or("");
            // The first line of AAD's description names the cause (AADSTS code); the rest is
            // trace ids and timestamps.
            let description: String = field("error_description")
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect();
            return Err(AadError::Rejected {
                code: format!("HTTP {status} {}", field("error")),
                description,
            });
        }
        let token = body
            .get("access_token")
            .and_then(|v| v.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AadError::BadResponse("azure ad sent no access_token".into()))?;
        // v2 sends a number, v1 a string.
        let expires_in = match body.get("expires_in") {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .unwrap_or(3600);
        Ok((
            SecretString::from(token.to_string()),
            Duration::from_secs(expires_in.max(1)),
        ))
    }
}
