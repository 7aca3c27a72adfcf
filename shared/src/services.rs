//! Builds every client a function needs from the config, once per cold start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::config::{Config, DestinationConfig, PubsubExportConfig, SinkConfig, SourceConfig};
use crate::dest::Destination;
use crate::dest::http::HttpDestination;
use crate::dest::local_dir::LocalDirDestination;
use crate::dest::s3::S3Destination;
use crate::engine::TransferEngine;
use crate::pubsub::pull::ExportPuller;
use crate::pubsub::servicebus::ServiceBusClient;
use crate::retry::RetryPolicy;
use crate::secret::{SecretError, SecretResolver};
use crate::sink::Sink;
use crate::sink::http::HttpSink;
use crate::sink::postgres::PostgresSink;
use crate::sink::s3_jsonl::S3JsonlSink;
use crate::source::Source;
use crate::source::azure_blob::AzureBlobSource;
use crate::state::{S3StateStore, StateStore};
use crate::token::aad::{AadClient, AadCredential, CertificateSigner};
use crate::token::cache::{CacheSettings, TokenCache};
use crate::token::service::TokenService;
use crate::view_sync::{ViewSource, ViewSync};
use crate::webhook::WebhookService;

/// Why the clients could not be built.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("config: {0}")]
    Config(String),
}

/// Everything a function needs, built from one config.
pub struct Services {
    /// The parsed config.
    pub config: Config,
    /// Secrets, cached.
    pub secrets: Arc<SecretResolver>,
    /// The state store.
    pub state: Arc<dyn StateStore>,
    /// Sources by name.
    pub sources: BTreeMap<String, Arc<dyn Source>>,
    /// Destinations by name.
    pub destinations: BTreeMap<String, Arc<dyn Destination>>,
    /// Retry policy for requests.
    pub retry: RetryPolicy,
    /// The shared token caches of the pub/sub export sources, by source name.
    pub tokens: BTreeMap<String, Arc<TokenCache>>,
}

impl Services {
    /// Builds the state store, sources and destinations; resolves the secrets they need.
    pub async fn build(config: Config) -> Result<Self, SetupError> {
        // One AWS config (credentials chain, region, endpoint) for the state store and Secrets
        // Manager; building a client makes no request, credentials load on first use.
        let aws = crate::s3::load_aws_config(&config.state.endpoint).await;
        let sm = aws_sdk_secretsmanager::Client::new(&aws);
        let secrets = Arc::new(SecretResolver::new(Some(sm), Duration::from_secs(300)));
        let state_client = crate::s3::client_from(&aws, &config.state.endpoint);
        let state: Arc<dyn StateStore> =
            Arc::new(S3StateStore::new(state_client, &config.state.bucket));
        let retry = RetryPolicy::from_config(&config.transfer);

        let mut sources: BTreeMap<String, Arc<dyn Source>> = BTreeMap::new();
        let mut tokens = BTreeMap::new();
        for (name, source) in &config.sources {
            let built: Arc<dyn Source> = match source {
                SourceConfig::AzureBlob {
                    account_url,
                    sas,
                    read_timeout_secs,
                } => {
                    let http = crate::http_client::build(Duration::from_secs(*read_timeout_secs));
                    let sas = secrets.resolve(sas).await?;
                    Arc::new(AzureBlobSource::new(
                        http,
                        account_url,
                        sas,
                        retry,
                        config.transfer.max_resumes,
                    ))
                }
                SourceConfig::PubsubExport(p) => {
                    let cache = token_cache(name, p, &secrets, state.clone(), retry).await?;
                    tokens.insert(name.clone(), cache.clone());
                    let http = crate::http_client::build(Duration::from_secs(p.read_timeout_secs));
                    Arc::new(AzureBlobSource::with_credentials(
                        http,
                        None,
                        cache,
                        retry,
                        config.transfer.max_resumes,
                    ))
                }
            };
            sources.insert(name.clone(), built);
        }

        let mut destinations: BTreeMap<String, Arc<dyn Destination>> = BTreeMap::new();
        for (name, dest) in &config.destinations {
            let built: Arc<dyn Destination> = match dest {
                DestinationConfig::S3 {
                    bucket,
                    prefix,
                    endpoint,
                    part_size_mib,
                    upload_concurrency,
                } => {
                    let client = crate::s3::client(endpoint).await;
                    Arc::new(S3Destination::new(
                        client,
                        bucket,
                        prefix,
                        (*part_size_mib as usize) << 20,
                        *upload_concurrency,
                        Some(state.clone()),
                    ))
                }
                DestinationConfig::Http {
                    url,
                    method,
                    headers,
                    secret_headers,
                    timeout_secs,
                } => {
                    let mut resolved = Vec::new();
                    for (k, r) in secret_headers {
                        resolved.push((k.clone(), secrets.resolve(r).await?));
                    }
                    let http = crate::http_client::build(Duration::from_secs(*timeout_secs));
                    Arc::new(
                        HttpDestination::new(http, url, method, headers, resolved).map_err(
                            |e| SetupError::Config(format!("destination {name:?}: {e}")),
                        )?,
                    )
                }
                DestinationConfig::LocalDir { path } => Arc::new(LocalDirDestination::new(path)),
                DestinationConfig::Sftp { .. } => {
                    crate::dest::sftp_from_config(dest, &secrets).await?
                }
            };
            destinations.insert(name.clone(), built);
        }
        Ok(Self {
            config,
            secrets,
            state,
            sources,
            destinations,
            retry,
            tokens,
        })
    }

    /// One export puller per pub/sub export source (for export-pull).
    pub fn export_pullers(&self) -> Vec<ExportPuller> {
        let mut pullers = Vec::new();
        for (name, source) in &self.config.sources {
            let (SourceConfig::PubsubExport(p), Some(cache)) = (source, self.tokens.get(name))
            else {
                continue;
            };
            // A receive long-polls for up to receive_timeout_secs before the first byte.
            let read_timeout = p.read_timeout_secs.max(p.receive_timeout_secs + 10);
            let bus = ServiceBusClient::new(
                crate::http_client::build(Duration::from_secs(read_timeout)),
                cache.clone(),
                p.topic.clone(),
                self.retry,
            );
            pullers.push(ExportPuller::new(
                name,
                (**p).clone(),
                &self.config.routes,
                bus,
                cache.clone(),
                self.state.clone(),
                self.retry,
            ));
        }
        pullers
    }

    /// The transfer engine over these clients.
    pub fn engine(&self) -> TransferEngine {
        TransferEngine::new(
            self.state.clone(),
            self.sources.clone(),
            self.destinations.clone(),
            self.retry,
            self.config.transfer.max_attempts,
        )
    }

    /// The webhook service over these clients (needs the `webhook` config section).
    pub async fn webhook(&self) -> Result<WebhookService, SetupError> {
        let wh = self
            .config
            .webhook
            .clone()
            .ok_or_else(|| SetupError::Config("the webhook section is missing".into()))?;
        let token = self.secrets.resolve(&wh.token).await?;
        WebhookService::new(
            wh,
            token,
            &self.config.routes,
            self.sources.clone(),
            self.state.clone(),
            self.retry,
        )
        .map_err(|e| SetupError::Config(format!("bad route glob: {e}")))
    }

    /// The view-sync engine over these clients: builds every sink and view of the config and
    /// resolves their secrets (PostgreSQL connects on first use).
    pub async fn view_sync(&self) -> Result<ViewSync, SetupError> {
        let sinks = self.sinks().await?;
        let instance = std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
            .unwrap_or_else(|_| format!("pid-{}", std::process::id()));
        let mut sync = ViewSync::new(self.state.clone(), self.retry, &instance);
        for (name, view) in &self.config.views {
            let sink = sinks.get(&view.sink).cloned().ok_or_else(|| {
                SetupError::Config(format!("view {name:?} names unknown sink {:?}", view.sink))
            })?;
            sync.add_view(
                name,
                ViewSource {
                    config: view.clone(),
                    password: self.secrets.resolve(&view.password).await?,
                    http: crate::http_client::build(Duration::from_secs(view.timeout_secs)),
                    sink,
                },
            );
        }
        Ok(sync)
    }

    /// Every sink of the config, by name, with its secrets resolved.
    pub async fn sinks(&self) -> Result<BTreeMap<String, Arc<dyn Sink>>, SetupError> {
        let mut sinks: BTreeMap<String, Arc<dyn Sink>> = BTreeMap::new();
        for (name, sink) in &self.config.sinks {
            let built: Arc<dyn Sink> = match sink {
                SinkConfig::Http {
                    url,
                    headers,
                    secret_headers,
                    timeout_secs,
                    concurrency,
                } => {
                    let mut resolved = Vec::new();
                    for (k, r) in secret_headers {
                        resolved.push((k.clone(), self.secrets.resolve(r).await?));
                    }
                    let http = crate::http_client::build(Duration::from_secs(*timeout_secs));
                    Arc::new(
                        HttpSink::new(http, url, headers, resolved, *concurrency, self.retry)
                            .map_err(|e| SetupError::Config(format!("sink {name:?}: {e}")))?,
                    )
                }
                SinkConfig::S3Jsonl {
                    bucket,
                    prefix,
                    endpoint,
                } => Arc::new(S3JsonlSink::new(
                    crate::s3::client(endpoint).await,
                    bucket,
                    prefix,
                )),
                SinkConfig::Postgres {
                    host,
                    port,
                    user,
                    password,
                    dbname,
                    table,
                    connect_timeout_secs,
                } => {
                    let password = match password {
                        Some(r) => Some(self.secrets.resolve(r).await?),
                        None => None,
                    };
                    Arc::new(PostgresSink::new(
                        host,
                        *port,
                        user,
                        password,
                        dbname,
                        table,
                        Duration::from_secs(*connect_timeout_secs),
                    ))
                }
            };
            sinks.insert(name.clone(), built);
        }
        Ok(sinks)
    }
}

/// The token cache of one pub/sub export source: Azure AD client -> token service -> cache.
async fn token_cache(
    name: &str,
    p: &PubsubExportConfig,
    secrets: &SecretResolver,
    state: Arc<dyn StateStore>,
    retry: RetryPolicy,
) -> Result<Arc<TokenCache>, SetupError> {
    let http = crate::http_client::build(Duration::from_secs(p.read_timeout_secs));
    let aad = &p.aad;
    let credential = match (&aad.client_secret, &aad.certificate) {
        (Some(secret), _) => AadCredential::Secret(secrets.resolve(secret).await?),
        (None, Some(cert)) => {
            let cert = secrets.resolve(cert).await?;
            let key = match &aad.private_key {
                Some(k) => Some(secrets.resolve(k).await?),
                None => None,
            };
            let signer = CertificateSigner::from_pem(
                crate::secret::expose(&cert),
                key.as_ref().map(crate::secret::expose),
            )
            .map_err(|e| SetupError::Config(format!("source {name:?}: {e}")))?;
            AadCredential::Certificate(signer)
        }
        (None, None) => {
            return Err(SetupError::Config(format!(
                "source {name:?}: set aad.client_secret or aad.certificate"
            )));
        }
    };
    let aad_client = AadClient::new(
        http.clone(),
        &aad.authority_url,
        &aad.tenant_id,
        &aad.client_id,
        &aad.scope,
        credential,
        retry,
    );
    let service = TokenService::new(
        http,
        &p.tenant_service_url,
        &p.integration_name,
        aad_client,
        Duration::from_secs(p.default_token_ttl_secs),
        retry,
    );
    Ok(Arc::new(TokenCache::new(
        name,
        state,
        Arc::new(service),
        retry,
        CacheSettings {
            refresh_ahead: Duration::from_secs(p.refresh_ahead_secs),
            min_refresh_interval: Duration::from_secs(p.min_refresh_interval_secs),
        },
    )))
}
