//! The vendor's token service: `POST {tenantServiceUrl}/api/external/integration/export/temporaryendpoints`
//! with an Azure AD bearer token returns the Service Bus subscription and the SAS-signed blob
//! base URLs. The answer has no expiry field: it is the earliest SAS `se` among them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::{Value, json};

use super::{BlobBase, ExportTokens, TokenError};
use crate::azure_ad::AadClient;
use crate::clock::now_ms;
use crate::http_client::{HttpClass, classify};
use crate::json::field_ci;
use crate::probe::{ProbeResult, Problem};
use crate::redact::redact_url;
use crate::retry::RetryPolicy;
use crate::secret::expose;

/// Path of the token endpoint below the tenant service URL.
pub const TEMPORARY_ENDPOINTS_PATH: &str = "/api/external/integration/export/temporaryendpoints";

/// Whatever hands out fresh token sets (the token service; tests substitute their own).
#[async_trait]
pub trait TokenIssuer: Send + Sync {
    /// A fresh token set; `generation` is left 0 (the cache assigns it when storing).
    async fn issue(&self) -> Result<ExportTokens, TokenError>;
}

/// The token service client.
pub struct TokenService {
    http: reqwest::Client,
    url: String,
    integration: String,
    aad: AadClient,
    default_ttl: Duration,
    retry: RetryPolicy,
}

impl TokenService {
    /// A client for one integration.
    pub fn new(
        http: reqwest::Client,
        tenant_service_url: &str,
        integration: &str,
        aad: AadClient,
        default_ttl: Duration,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            http,
            url: format!(
                "{}{TEMPORARY_ENDPOINTS_PATH}",
                tenant_service_url.trim_end_matches('/')
            ),
            integration: integration.to_string(),
            aad,
            default_ttl,
            retry,
        }
    }

    /// The token service client of pub/sub export source `name`, from its config: resolves the
    /// Azure AD credential (nothing is requested yet).
    pub async fn from_config(
        name: &str,
        p: &crate::config::PubsubExportConfig,
        secrets: &crate::secret::SecretResolver,
        retry: RetryPolicy,
    ) -> Result<Self, crate::setup::SetupError> {
        let aad = &p.aad;
        let credential = crate::azure_ad::AadCredential::resolve(
            aad.client_secret.as_ref(),
            aad.certificate.as_ref(),
            aad.private_key.as_ref(),
            secrets,
        )
        .await
        .map_err(|e| match e {
            crate::setup::SetupError::Config(m) => {
                crate::setup::SetupError::Config(format!("source {name:?}: {m}"))
            }
            other => other,
        })?;
        let http = crate::http_client::build(Duration::from_secs(p.read_timeout_secs));
        let aad_client = AadClient::new(
            http.clone(),
            &aad.authority_url,
            &aad.tenant_id,
            &aad.client_id,
            &aad.scope,
            credential,
            retry,
        );
        Ok(Self::new(
            http,
            &p.tenant_service_url,
            &p.integration_name,
            aad_client,
            Duration::from_secs(p.default_token_ttl_secs),
            retry,
        ))
    }

    /// `ferry check`: one Azure AD token and one call to the token service, without retries;
    /// the tokens it hands out are dropped (nothing is stored, the shared copy is untouched).
    pub async fn probe(&self) -> ProbeResult {
        let tokens = self.issue_once().await.map_err(|e| {
            let fix = match &e {
                TokenError::PermissionsNotGranted { .. } => {
                    "ask the vendor to grant this app registration (aad.client_id) access to the integration's file export; ferry picks the tokens up once it is granted"
                }
                TokenError::Unauthorized { .. } => {
                    "check aad.scope (the token service's application ID URI + /.default) and the app registration"
                }
                TokenError::Aad(_) => {
                    "check aad.tenant_id, aad.client_id and the client secret or certificate (expired? rotated?)"
                }
                TokenError::Transient { .. } => {
                    "check tenant_service_url and that this machine can reach it; try again later if the service is down"
                }
                _ => "check tenant_service_url and integration_name",
            };
            Problem::new(e.to_string(), fix)
        })?;
        if tokens.expires_in().is_zero() {
            return Err(Problem::new(
                "the token service handed out SAS tokens that are already expired",
                "ask the vendor to check the integration's file export",
            ));
        }
        Ok(())
    }

    async fn call(&self, bearer: &SecretString) -> Result<Result<Value, u16>, TokenError> {
        let mut auth = http::HeaderValue::from_str(&format!("Bearer {}", expose(bearer)))
            .map_err(|_| TokenError::BadResponse("azure ad token is not a valid header".into()))?;
        auth.set_sensitive(true);
        let resp = self
            .http
            .post(&self.url)
            .header(http::header::AUTHORIZATION, auth)
            .json(&json!({"integrationName": self.integration, "useNewSBConnectionStringFormat": true}))
            .send()
            .await
            .map_err(|e| TokenError::Transient {
                reason: format!("token service: {}", e.without_url()),
                retry_after: None,
            })?;
        match classify(&resp) {
            HttpClass::Success => {}
            HttpClass::Retryable {
                status,
                retry_after,
            } => {
                return Err(TokenError::Transient {
                    reason: format!("token service answered HTTP {status}"),
                    retry_after,
                });
            }
            HttpClass::Refused { status } | HttpClass::Rejected { status } => {
                return Ok(Err(status));
            }
        }
        let body = resp.json::<Value>().await.map_err(|e| {
            TokenError::BadResponse(format!("token service sent no JSON: {}", e.without_url()))
        })?;
        Ok(Ok(body))
    }

    async fn issue_once(&self) -> Result<ExportTokens, TokenError> {
        let mut answer = self.call(&self.aad.token().await?).await?;
        if answer == Err(401) {
            // The cached AAD token may have been revoked early: one more try with a fresh one.
            self.aad.invalidate();
            answer = self.call(&self.aad.token().await?).await?;
        }
        let integration = self.integration.clone();
        match answer {
            Ok(body) => parse_answer(&body, &self.integration, self.default_ttl),
            Err(401) => Err(TokenError::Unauthorized { integration }),
            Err(403) => Err(TokenError::PermissionsNotGranted { integration }),
            Err(404) => Err(TokenError::BadResponse(format!(
                "the token service answered 404 for integration {integration:?}: check tenant_service_url and integration_name"
            ))),
            Err(s) => Err(TokenError::BadResponse(format!(
                "the token service answered HTTP {s} for integration {integration:?}"
            ))),
        }
    }
}

#[async_trait]
impl TokenIssuer for TokenService {
    async fn issue(&self) -> Result<ExportTokens, TokenError> {
        self.retry.run("token service", || self.issue_once()).await
    }
}

/// Parses the token service's answer into a token set (generation 0).
pub fn parse_answer(
    body: &Value,
    integration: &str,
    default_ttl: Duration,
) -> Result<ExportTokens, TokenError> {
    let field = |name: &str| {
        field_ci(body, name)
            .map_err(|e| TokenError::BadResponse(format!("the token service's answer: {e}")))
    };
    let text = |name: &str| {
        field(name)?
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().to_string())
            .ok_or_else(|| TokenError::BadResponse(format!("the token service sent no {name}")))
    };
    let connection_string = text("serviceBusSubscriptionConnectionString")?;
    let subscription_name = text("serviceBusSubscriptionName")?;
    let urls = field("blobBaseUrlsWithToken")?
        .and_then(Value::as_array)
        .ok_or_else(|| {
            TokenError::BadResponse("the token service sent no blobBaseUrlsWithToken".into())
        })?;
    let fetched_at_ms = now_ms();
    let mut expiries = Vec::new();
    let mut blob_bases = Vec::new();
    for url in urls {
        let raw = url.as_str().unwrap_or("");
        let parsed = url::Url::parse(raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        let (Some(parsed), Some((base, sas))) = (parsed, raw.split_once('?')) else {
            return Err(TokenError::BadResponse(format!(
                "blob base URL {} is not an http(s) URL with a SAS query",
                redact_url(raw)
            )));
        };
        if let Some(se) = parsed.query_pairs().find(|(k, _)| k == "se") {
            expiries.push(parse_sas_expiry(&se.1).ok_or_else(|| {
                TokenError::BadResponse(format!("blob SAS expiry se={:?} is not a date", se.1))
            })?);
        }
        blob_bases.push(BlobBase {
            url: base.trim_end_matches('/').to_string(),
            sas: SecretString::from(sas.to_string()),
        });
    }
    if blob_bases.is_empty() {
        return Err(TokenError::BadResponse(
            "the token service sent an empty blobBaseUrlsWithToken".into(),
        ));
    }
    if let Some(se) = crate::pubsub::connection::signature_expiry(&connection_string) {
        expiries.push(se);
    }
    let expires_at_ms = expiries
        .into_iter()
        .min()
        .unwrap_or(fetched_at_ms + default_ttl.as_millis() as u64);
    Ok(ExportTokens {
        integration: integration.to_string(),
        generation: 0,
        fetched_at_ms,
        expires_at_ms,
        subscription_name,
        connection_string: SecretString::from(connection_string),
        blob_bases,
    })
}

/// A SAS `se` (ISO 8601: `2026-11-22T10:00:00Z`, with or without fractions, or a bare date) in
/// milliseconds since the epoch.
pub fn parse_sas_expiry(se: &str) -> Option<u64> {
    let se = se.trim();
    let full = if se.len() == 10 {
        format!("{se}T00:00:00Z")
    } else {
        se.to_string()
    };
    let at: SystemTime = humantime::parse_rfc3339_weak(full.trim_end_matches('Z')).ok()?;
    Some(at.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_parses_case_insensitively_and_expires_at_the_earliest_se() {
        let body = json!({
            "ServiceBusSubscriptionConnectionString": "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=k3y=;EntityPath=export",
            "serviceBusSubscriptionName": "tenant-42",
            "blobBaseUrlsWithToken": [
                "https://a.blob.core.windows.net/export?sv=2021-08-06&se=2030-01-02T03%3A04%3A05Z&sr=c&sp=rl&sig=s1%2B",
                "https://b.blob.core.windows.net/export2/?sv=2021-08-06&se=2030-01-01T00:00:00.0000000Z&sr=c&sp=rl&sig=s2"
            ]
        });
        let t = parse_answer(&body, "i", Duration::from_secs(60)).unwrap();
        assert_eq!(t.subscription_name, "tenant-42");
        assert_eq!(
            t.base_urls(),
            vec![
                "https://a.blob.core.windows.net/export",
                "https://b.blob.core.windows.net/export2"
            ]
        );
        assert_eq!(
            expose(&t.blob_bases[0].sas),
            "sv=2021-08-06&se=2030-01-02T03%3A04%3A05Z&sr=c&sp=rl&sig=s1%2B"
        );
        assert_eq!(t.expires_at_ms, parse_sas_expiry("2030-01-01").unwrap());
        assert_eq!(
            parse_sas_expiry("2030-01-01T00:00:01Z").unwrap() - t.expires_at_ms,
            1000
        );
    }

    #[test]
    fn policy_sas_without_se_gets_the_default_ttl_and_bad_answers_are_named() {
        let body = json!({
            "serviceBusSubscriptionConnectionString": "Endpoint=sb://ns/;SharedAccessKeyName=a;SharedAccessKey=b;EntityPath=t",
            "serviceBusSubscriptionName": "s",
            "blobBaseUrlsWithToken": ["http://127.0.0.1:10000/devstoreaccount1/c?sv=1&si=p&sr=c&sig=x"]
        });
        let t = parse_answer(&body, "i", Duration::from_secs(60)).unwrap();
        assert!((59_000..=60_000).contains(&(t.expires_at_ms - t.fetched_at_ms)));
        let mut bad = body.clone();
        bad["blobBaseUrlsWithToken"] = json!([
            "https://a.blob.core.windows.net/c?sv=1&sig=SECRETSIG",
            "ftp://x/y?sig=SECRETSIG"
        ]);
        let e = parse_answer(&bad, "i", Duration::from_secs(60))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ftp://x/y?sig=REDACTED") && !e.contains("SECRETSIG"),
            "{e}"
        );
        let e = parse_answer(
            &json!({"serviceBusSubscriptionName": "s"}),
            "i",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("serviceBusSubscriptionConnectionString"),
            "{e}"
        );
    }
}
