//! Secret references in config and their resolution. Values live in `SecretString`s, are read
//! once per cold start (cached with a TTL) and never reach logs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where a secret value comes from. Config files name secrets, they never contain them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretRef {
    /// Name of an environment variable that holds the value (local runs and tests).
    Env(String),
    /// Path of a file that holds the value; one trailing newline is trimmed.
    File(PathBuf),
    /// An AWS Secrets Manager secret, by name or ARN.
    SecretsManager {
        /// Secret name or ARN.
        id: String,
        /// When the secret string is a JSON object, the key whose value to use.
        #[serde(default)]
        json_key: Option<String>,
    },
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
            SecretRef::SecretsManager { id, json_key } => match json_key {
                Some(k) => write!(f, "secretsmanager:{id}#{k}"),
                None => write!(f, "secretsmanager:{id}"),
            },
        }
    }
}

/// Why a secret could not be read. Never contains the value.
#[derive(Debug, Error)]
pub enum SecretError {
    /// The secret does not exist (or the env variable is unset).
    #[error("secret {0} is not set")]
    Missing(String),
    /// The secret exists but could not be read.
    #[error("secret {reference} could not be read: {reason}")]
    Unreadable {
        /// The secret reference (a name or ARN, never the value).
        reference: String,
        /// What happened (secret-free).
        reason: String,
    },
}

/// Resolves `SecretRef`s and caches the values for `ttl`.
pub struct SecretResolver {
    secrets_manager: Option<SecretsManager>,
    ttl: Duration,
    cache: Mutex<HashMap<SecretRef, (Instant, SecretString)>>,
    /// One lock per reference, held while it is fetched.
    fetching: Mutex<HashMap<SecretRef, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    fetched: Mutex<Vec<SecretRef>>,
}

/// The Secrets Manager client, built on first use: a function whose part of the config names no
/// secret there never builds it (0.59M instructions of a cold start, measured).
struct SecretsManager {
    aws: aws_config::SdkConfig,
    client: OnceLock<aws_sdk_secretsmanager::Client>,
}

impl SecretsManager {
    fn client(&self) -> &aws_sdk_secretsmanager::Client {
        self.client
            .get_or_init(|| aws_sdk_secretsmanager::Client::new(&self.aws))
    }
}

impl SecretResolver {
    /// A resolver for env and file secrets, plus Secrets Manager through `aws` when it is given.
    pub fn new(aws: Option<&aws_config::SdkConfig>, ttl: Duration) -> Self {
        Self {
            secrets_manager: aws.map(|aws| SecretsManager {
                aws: aws.clone(),
                client: OnceLock::new(),
            }),
            ttl,
            cache: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
            fetched: Mutex::new(Vec::new()),
        }
    }

    /// Resolver without Secrets Manager: env and file references only.
    pub fn local() -> Self {
        Self::new(None, Duration::from_secs(300))
    }

    /// Returns the secret's value, from the cache while it is fresh.
    /// Parts built at once that share a reference fetch it once: the first fetches, the others
    /// wait for it and take it from the cache.
    pub async fn resolve(&self, reference: &SecretRef) -> Result<SecretString, SecretError> {
        if let Some(value) = self.fresh(reference) {
            return Ok(value);
        }
        let fetching = self
            .fetching
            .lock()
            .expect("secret fetches")
            .entry(reference.clone())
            .or_default()
            .clone();
        let _one_at_a_time = fetching.lock().await;
        if let Some(value) = self.fresh(reference) {
            return Ok(value);
        }
        let value = self.fetch(reference).await?;
        // The reference (an ARN, a variable name or a path), never the value: operators and the
        // deploy test compare what a function read with what its role grants.
        tracing::info!(secret = %reference, "secret resolved");
        self.fetched
            .lock()
            .expect("secret record")
            .push(reference.clone());
        self.cache
            .lock()
            .expect("secret cache")
            .insert(reference.clone(), (Instant::now(), value.clone()));
        Ok(value)
    }

    /// The cached value while it is fresh.
    fn fresh(&self, reference: &SecretRef) -> Option<SecretString> {
        let cache = self.cache.lock().expect("secret cache");
        let (at, value) = cache.get(reference)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    /// Header name -> value, for headers whose values are secrets (HTTP destinations, sinks).
    pub async fn resolve_headers(
        &self,
        headers: &std::collections::BTreeMap<String, SecretRef>,
    ) -> Result<Vec<(String, SecretString)>, SecretError> {
        let mut resolved = Vec::new();
        for (name, reference) in headers {
            resolved.push((name.clone(), self.resolve(reference).await?));
        }
        Ok(resolved)
    }

    /// Every reference fetched so far (cache misses), in order.
    pub fn fetched(&self) -> Vec<SecretRef> {
        self.fetched.lock().expect("secret record").clone()
    }

    async fn fetch(&self, reference: &SecretRef) -> Result<SecretString, SecretError> {
        let unreadable = |reason: String| SecretError::Unreadable {
            reference: reference.to_string(),
            reason,
        };
        match reference {
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
                _ => Err(SecretError::Missing(reference.to_string())),
            },
            SecretRef::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| unreadable(e.kind().to_string()))?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                Ok(SecretString::from(text.to_string()))
            }
            SecretRef::SecretsManager { id, json_key } => {
                let client = self
                    .secrets_manager
                    .as_ref()
                    .ok_or_else(|| unreadable("no Secrets Manager client configured".into()))?
                    .client();
                let out = client
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|e| {
                        unreadable(
                            aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
                        )
                    })?;
                let text = out
                    .secret_string()
                    .ok_or_else(|| unreadable("secret has no string value".into()))?;
                match json_key {
                    None => Ok(SecretString::from(text.to_string())),
                    Some(key) => {
                        let json: serde_json::Value = serde_json::from_str(text)
                            .map_err(|_| unreadable("secret string is not a JSON object".into()))?;
                        json.get(key)
                            .and_then(|v| v.as_str())
                            .map(|v| SecretString::from(v.to_string()))
                            .ok_or_else(|| {
                                unreadable(format!("JSON key {key:?} missing or not a string"))
                            })
                    }
                }
            }
        }
    }
}

/// Exposes a secret for the single place that must send it. Kept here so a grep finds every use.
pub fn expose(secret: &SecretString) -> &str {
    secret.expose_secret()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_secrets_manager_client_is_built_at_the_first_secret_read_there() {
        let aws = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let resolver = SecretResolver::new(Some(&aws), Duration::from_secs(300));
        let built = |r: &SecretResolver| r.secrets_manager.as_ref().unwrap().client.get().is_some();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "v\n").unwrap();
        let local = SecretRef::File(file);
        assert_eq!(resolver.resolve(&local).await.unwrap().expose_secret(), "v");
        assert!(
            !built(&resolver),
            "built for a secret that is not in Secrets Manager"
        );
        // No credentials: the read fails before any request, after the client is built.
        let sm = SecretRef::SecretsManager {
            id: "arn:x".into(),
            json_key: None,
        };
        let err = resolver.resolve(&sm).await.unwrap_err().to_string();
        assert!(err.contains("secretsmanager:arn:x"), "{err}");
        assert!(built(&resolver));
    }

    #[test]
    fn parses_each_reference_form() {
        let r: SecretRef = serde_json::from_str(r#"{"env":"X"}"#).unwrap();
        assert_eq!(r, SecretRef::Env("X".into()));
        let r: SecretRef =
            serde_json::from_str(r#"{"secrets_manager":{"id":"arn:x","json_key":"password"}}"#)
                .unwrap();
        assert_eq!(r.to_string(), "secretsmanager:arn:x#password");
        assert!(serde_json::from_str::<SecretRef>(r#"{"value":"inline"}"#).is_err());
    }

    #[tokio::test]
    async fn a_reference_resolved_by_parts_at_once_is_fetched_once() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, other) = (dir.path().join("shared"), dir.path().join("other"));
        std::fs::write(&shared, "s3cret-shared\n").unwrap();
        std::fs::write(&other, "s3cret-other\n").unwrap();
        let resolver = SecretResolver::local();
        let (shared, other) = (SecretRef::File(shared), SecretRef::File(other));
        let (a, b, c) = tokio::join!(
            resolver.resolve(&shared),
            resolver.resolve(&other),
            resolver.resolve(&shared),
        );
        assert_eq!(expose(&a.unwrap()), "s3cret-shared");
        assert_eq!(expose(&b.unwrap()), "s3cret-other");
        assert_eq!(expose(&c.unwrap()), "s3cret-shared");
        let mut fetched = resolver.fetched();
        fetched.sort_by_key(|r| r.to_string());
        assert_eq!(fetched, [other, shared], "each reference fetched once");
    }

    #[tokio::test]
    async fn file_secret_trims_newline_and_debug_hides_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "hunter22\n").unwrap();
        let v = SecretResolver::local()
            .resolve(&SecretRef::File(p))
            .await
            .unwrap();
        assert_eq!(expose(&v), "hunter22");
        assert!(!format!("{v:?}").contains("hunter22"));
    }

    #[tokio::test]
    async fn missing_env_is_a_clear_error() {
        let e = SecretResolver::local()
            .resolve(&SecretRef::Env("FERRY_TEST_SURELY_UNSET".into()))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret env:FERRY_TEST_SURELY_UNSET is not set"
        );
    }
}
