//! Builds what one function needs from the config, once per cold start, and nothing else.
//!
//! [`Services::new`] makes no request and resolves no secret: it holds the config, the state
//! store and a secret resolver. Each function then asks for its own part: webhook-ingest
//! [`Services::webhook`], blob-copy [`Services::engine`], view-sync [`Services::view_sync`],
//! token-refresh [`Services::token_caches`], export-pull [`Services::export_pullers`]. Each
//! builds the sources, destinations and sinks its part of the config names, resolves only their
//! secrets, and hands them a state store scoped to the function's grants in the state layout
//! (`layout::Function::grants`), which is also what its IAM role allows. So a cold start never
//! reads a secret or touches a prefix its role does not grant, and a config with an SFTP
//! destination does not make view-sync fetch the SFTP key.
//!
//! A function's parts are built at once, so their secrets are fetched concurrently: deployed,
//! each is a Secrets Manager round trip, and a cold start that needs three waits about as long
//! as for one. A failure is still reported as before: sources first, then destinations, keys
//! and sinks, each kind by name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, DestinationConfig, PubsubExportConfig, SinkConfig, SourceConfig};
use crate::dest::Destination;
use crate::dest::http::HttpDestination;
use crate::dest::local_dir::LocalDirDestination;
use crate::dest::s3::S3Destination;
use crate::dest::sftp::SftpDestination;
use crate::engine::TransferEngine;
use crate::layout::Function;
use crate::probe::{ProbeReport, ProbeResult, Problem, Section};
use crate::pubsub::pull::ExportPuller;
use crate::pubsub::servicebus::ServiceBusClient;
use crate::reconcile::Reconciler;
use crate::retry::RetryPolicy;
use crate::secret::SecretResolver;
pub use crate::setup::SetupError;
use crate::sink::Sink;
use crate::sink::http::HttpSink;
use crate::sink::postgres::PostgresSink;
use crate::sink::s3_jsonl::S3JsonlSink;
use crate::source::Source;
use crate::source::azure_blob::AzureBlobSource;
use crate::state::{S3StateStore, Scoped, StateStore};
use crate::token::cache::TokenCache;
use crate::view_sync::{ViewSource, ViewSync};
use crate::webhook::WebhookService;

/// The config, the state store and a secret resolver: what every function starts from. Building
/// it makes no request; the function builders below resolve what each function uses.
pub struct Services {
    /// The parsed config.
    pub config: Config,
    /// Secrets, cached.
    pub secrets: Arc<SecretResolver>,
    /// The state store, unscoped (local tools and tests); functions get [`Services::state_for`].
    pub state: Arc<dyn StateStore>,
    /// Retry policy for requests.
    pub retry: RetryPolicy,
}

impl Services {
    /// The state store (S3) and a Secrets Manager-backed resolver for `config`. No request is
    /// made and no secret is read: credentials load on first use.
    pub async fn new(config: Config) -> Self {
        // One AWS config (credentials chain, region, endpoint) for the state store and Secrets
        // Manager.
        let aws = crate::s3::load_aws_config(&config.state.endpoint).await;
        let secrets = Arc::new(SecretResolver::new(Some(&aws), Duration::from_secs(300)));
        let state_client = crate::s3::client_from(&aws, &config.state.endpoint);
        let state: Arc<dyn StateStore> =
            Arc::new(S3StateStore::new(state_client, &config.state.bucket));
        Self::with_state(config, state, secrets)
    }

    /// Over a given state store and resolver (tests: an in-memory store, a recording resolver).
    pub fn with_state(
        config: Config,
        state: Arc<dyn StateStore>,
        secrets: Arc<SecretResolver>,
    ) -> Self {
        let retry = config.transfer.retry_policy();
        Self {
            config,
            secrets,
            state,
            retry,
        }
    }

    /// The state store as `function` may use it: limited to its grants in the state layout.
    pub fn state_for(&self, function: Function) -> Arc<dyn StateStore> {
        Arc::new(Scoped::new(self.state.clone(), function))
    }

    /// blob-copy: the transfer engine over the sources, destinations and record sinks that
    /// routes name.
    pub async fn engine(&self) -> Result<TransferEngine, SetupError> {
        let state = self.state_for(Function::BlobCopy);
        let routes = &self.config.routes;
        let source_names = routes.iter().map(|r| r.source.as_str());
        let destination_names = routes
            .iter()
            .flat_map(|r| r.destinations.iter().map(String::as_str));
        let encrypted: BTreeMap<&str, &crate::encrypt::EncryptConfig> = routes
            .iter()
            .filter_map(|r| Some((r.name.as_str(), r.encrypt.as_ref()?)))
            .collect();
        // Only the sinks that routes load records into (and only their secrets).
        let sink_names = routes
            .iter()
            .filter_map(|r| r.records.as_ref().map(|c| c.sink.as_str()));
        let (sources, destinations, encryption, sinks) = tokio::join!(
            all(source_names, |name| self.source(name, &state)),
            all(destination_names, |name| self.destination(name, &state)),
            all(encrypted.keys().copied(), |route| self
                .encryption(route, encrypted[route])),
            all(sink_names, |name| self.sink(name)),
        );
        let (sources, destinations, encryption, sinks) =
            (sources?, destinations?, encryption?, sinks?);
        let mut records = BTreeMap::new();
        for route in routes {
            let Some(config) = &route.records else {
                continue;
            };
            let plan = crate::records::RecordsPlan {
                sink_name: config.sink.clone(),
                sink: sinks[&config.sink].clone(),
                config: config.clone(),
            };
            records.insert(route.name.clone(), Arc::new(plan));
        }
        Ok(TransferEngine::new(
            state,
            sources,
            destinations,
            self.retry,
            self.config.transfer.max_attempts,
        )
        .with_deadline_margin(Duration::from_secs(
            self.config.transfer.deadline_margin_secs,
        ))
        .with_encryption(encryption)
        .with_records(records))
    }

    /// webhook-ingest: the webhook token and the sources of webhook routes (those with a
    /// container), whose SAS it needs to read a notified blob's properties. Needs the `webhook`
    /// config section.
    pub async fn webhook(&self) -> Result<WebhookService, SetupError> {
        let wh = self
            .config
            .webhook
            .clone()
            .ok_or_else(|| SetupError::Config("the webhook section is missing".into()))?;
        let state = self.state_for(Function::WebhookIngest);
        // Webhook routes only: a pub/sub route's source is never read here.
        let routes: Vec<_> = self.config.webhook_routes().cloned().collect();
        let (token, sources) = tokio::join!(
            self.secrets.resolve(&wh.token),
            all(routes.iter().map(|r| r.source.as_str()), |name| self
                .source(name, &state)),
        );
        let (token, sources) = (token?, sources?);
        WebhookService::new(wh, token, &routes, sources, state, self.retry)
            .map_err(|e| SetupError::Config(format!("bad route glob: {e}")))
    }

    /// reconcile: the sources of webhook routes (their SAS, which must allow `l`), nothing else:
    /// not the webhook token, no destination. Works without a `webhook` section (names are then
    /// checked against Azure's 1024-byte limit).
    pub async fn reconciler(&self) -> Result<Reconciler, SetupError> {
        let state = self.state_for(Function::Reconcile);
        let routes: Vec<_> = self.config.webhook_routes().cloned().collect();
        let sources = all(routes.iter().map(|r| r.source.as_str()), |name| {
            self.source(name, &state)
        })
        .await?;
        let max_name_bytes = self
            .config
            .webhook
            .as_ref()
            .map_or(crate::names::MAX_NAME_BYTES, |w| w.max_name_bytes);
        Reconciler::new(
            &routes,
            &sources,
            state,
            self.retry,
            self.config.reconcile.clone(),
            max_name_bytes,
        )
        .map_err(SetupError::Config)
    }

    /// view-sync: every view with its password, and the sinks that views name (PostgreSQL
    /// connects on first use).
    pub async fn view_sync(&self) -> Result<ViewSync, SetupError> {
        let state = self.state_for(Function::ViewSync);
        let instance = std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
            .unwrap_or_else(|_| format!("pid-{}", std::process::id()));
        let views = &self.config.views;
        let (sinks, passwords) = tokio::join!(
            all(views.values().map(|v| v.sink.as_str()), |name| self
                .sink(name)),
            all(views.keys().map(String::as_str), |name| async move {
                Ok(self.secrets.resolve(&views[name].password).await?)
            }),
        );
        let (sinks, mut passwords) = (sinks?, passwords?);
        let mut sync = ViewSync::new(state, self.retry, &instance);
        for (name, view) in views {
            sync.add_view(
                name,
                ViewSource {
                    config: view.clone(),
                    password: passwords.remove(name).expect("a password per view"),
                    http: crate::http_client::build(Duration::from_secs(view.timeout_secs)),
                    sink: sinks[&view.sink].clone(),
                },
            );
        }
        Ok(sync)
    }

    /// token-refresh: one token cache per pub/sub export source.
    pub async fn token_caches(&self) -> Result<Vec<Arc<TokenCache>>, SetupError> {
        let state = self.state_for(Function::TokenRefresh);
        let caches = self
            .pubsub_sources()
            .map(|(name, p)| TokenCache::from_config(name, p, &self.secrets, &state, self.retry));
        // At once, as `all` builds parts; the first error by source name.
        futures_util::future::join_all(caches)
            .await
            .into_iter()
            .collect()
    }

    /// export-pull: one puller per pub/sub export source, each with its token cache.
    pub async fn export_pullers(&self) -> Result<Vec<ExportPuller>, SetupError> {
        let state = self.state_for(Function::ExportPull);
        let sources: Vec<_> = self.pubsub_sources().collect();
        // Each source's token cache (its AAD secret) at once, as `all` builds parts.
        let caches =
            futures_util::future::join_all(sources.iter().map(|(name, p)| {
                TokenCache::from_config(name, p, &self.secrets, &state, self.retry)
            }))
            .await;
        let mut pullers = Vec::new();
        for ((name, p), cache) in sources.into_iter().zip(caches) {
            let cache = cache?;
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
                p.clone(),
                &self.config.routes,
                bus,
                cache,
                state.clone(),
                self.retry,
            ));
        }
        Ok(pullers)
    }

    fn pubsub_sources(&self) -> impl Iterator<Item = (&str, &PubsubExportConfig)> {
        self.config.sources.iter().filter_map(|(name, s)| match s {
            SourceConfig::PubsubExport(p) => Some((name.as_str(), &**p)),
            SourceConfig::AzureBlob(_) => None,
        })
    }

    /// One source by name, with its secrets resolved; `state` is where a pub/sub source keeps
    /// its tokens.
    pub async fn source(
        &self,
        name: &str,
        state: &Arc<dyn StateStore>,
    ) -> Result<Arc<dyn Source>, SetupError> {
        let source = self
            .config
            .sources
            .get(name)
            .ok_or_else(|| SetupError::Config(format!("unknown source {name:?}")))?;
        let max_resumes = self.config.transfer.max_resumes;
        Ok(match source {
            SourceConfig::AzureBlob(c) => Arc::new(
                AzureBlobSource::from_config(c, &self.secrets, self.retry, max_resumes).await?,
            ),
            SourceConfig::PubsubExport(p) => {
                let cache =
                    TokenCache::from_config(name, p, &self.secrets, state, self.retry).await?;
                let http = crate::http_client::build(Duration::from_secs(p.read_timeout_secs));
                Arc::new(AzureBlobSource::with_credentials(
                    http,
                    None,
                    cache,
                    self.retry,
                    max_resumes,
                ))
            }
        })
    }

    /// One destination by name, with its secrets resolved; `state` keeps resume checkpoints.
    pub async fn destination(
        &self,
        name: &str,
        state: &Arc<dyn StateStore>,
    ) -> Result<Arc<dyn Destination>, SetupError> {
        let dest = self
            .config
            .destinations
            .get(name)
            .ok_or_else(|| SetupError::Config(format!("unknown destination {name:?}")))?;
        Ok(match dest {
            DestinationConfig::S3(c) => {
                Arc::new(S3Destination::from_config(c, Some(state.clone())).await)
            }
            DestinationConfig::Sftp(c) => {
                Arc::new(SftpDestination::from_config(c, &self.secrets).await?)
            }
            DestinationConfig::Http(c) => {
                Arc::new(HttpDestination::from_config(c, &self.secrets).await?)
            }
            DestinationConfig::LocalDir(c) => Arc::new(LocalDirDestination::from_config(c)),
            DestinationConfig::Graph(g) => Arc::new(
                crate::dest::graph::GraphDestination::from_config(
                    name,
                    g,
                    &self.secrets,
                    Some(state.clone()),
                    self.retry,
                )
                .await?,
            ),
        })
    }

    /// One route's recipients, their keys resolved and checked.
    async fn encryption(
        &self,
        route: &str,
        encrypt: &crate::encrypt::EncryptConfig,
    ) -> Result<Arc<crate::encrypt::Recipients>, SetupError> {
        let recipients = encrypt.load(&self.secrets).await.map_err(|e| match e {
            crate::encrypt::LoadError::Secret(e) => SetupError::Secret(e),
            e => SetupError::Config(format!("route {route:?}: {e}")),
        })?;
        Ok(Arc::new(recipients))
    }

    /// One sink by name, with its secrets resolved.
    pub async fn sink(&self, name: &str) -> Result<Arc<dyn Sink>, SetupError> {
        let sink = self
            .config
            .sinks
            .get(name)
            .ok_or_else(|| SetupError::Config(format!("unknown sink {name:?}")))?;
        Ok(match sink {
            SinkConfig::Http(c) => {
                Arc::new(HttpSink::from_config(c, &self.secrets, self.retry).await?)
            }
            SinkConfig::S3Jsonl(c) => Arc::new(S3JsonlSink::from_config(c).await),
            SinkConfig::Postgres(c) => Arc::new(PostgresSink::from_config(c, &self.secrets).await?),
        })
    }
}

/// Builds the part named by each distinct name, all at once, and keeps them by name; the first
/// error in name order when any fails. At once, because each part resolves its own secrets: in
/// Lambda a Secrets Manager round trip each, so a cold start that needs five secrets waits about
/// as long as for one rather than for five in a row.
async fn all<'a, T, F, Fut>(
    names: impl IntoIterator<Item = &'a str>,
    build: F,
) -> Result<BTreeMap<String, T>, SetupError>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<T, SetupError>>,
{
    let names: BTreeSet<&str> = names.into_iter().collect();
    let built = futures_util::future::join_all(names.iter().map(|name| build(name))).await;
    names
        .into_iter()
        .zip(built)
        .map(|(name, part)| part.map(|part| (name.to_string(), part)))
        .collect()
}

/// How long `ferry check` waits for one item's probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

type ProbeFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = ProbeResult> + Send + 'a>>;

impl Services {
    /// `ferry check`: the config's validation first, then a probe of the state bucket and of
    /// every source, destination, sink and view, with its real credentials, all at once, each
    /// cut off after `timeout`. One report per item, in that order. Each probe lives with its
    /// backend; this is the one place that maps a config kind to its probe.
    pub async fn probe_all(&self, timeout: Duration) -> Vec<ProbeReport> {
        let config = &self.config;
        let mut items: Vec<(Section, String, String, ProbeFuture<'_>)> = Vec::new();
        let config_result = config.validate().map_err(|e| {
            Problem::new(
                e.to_string(),
                "correct the config (docs/config.md describes every field)",
            )
        });
        items.push((
            Section::State,
            config.state.bucket.clone(),
            "s3".into(),
            Box::pin(async move {
                let client = crate::s3::client(&config.state.endpoint).await;
                crate::s3::probe_bucket(&client, &config.state.bucket).await
            }),
        ));
        for (name, source) in &config.sources {
            let (kind, fut): (&str, ProbeFuture<'_>) = match source {
                SourceConfig::AzureBlob(c) => {
                    let containers: BTreeSet<String> = config
                        .routes
                        .iter()
                        .filter(|r| &r.source == name)
                        .filter_map(|r| r.container.clone())
                        .collect();
                    let containers: Vec<String> = containers.into_iter().collect();
                    (
                        "azure_blob",
                        Box::pin(async move {
                            AzureBlobSource::from_config(c, &self.secrets, self.retry, 0)
                                .await
                                .map_err(|e| Problem::setup(&e))?
                                .probe(&containers)
                                .await
                        }),
                    )
                }
                SourceConfig::PubsubExport(p) => (
                    "pubsub_export",
                    Box::pin(async move {
                        crate::token::service::TokenService::from_config(
                            name,
                            p,
                            &self.secrets,
                            self.retry,
                        )
                        .await
                        .map_err(|e| Problem::setup(&e))?
                        .probe()
                        .await
                    }),
                ),
            };
            items.push((Section::Source, name.clone(), kind.into(), fut));
        }
        for (name, dest) in &config.destinations {
            let (kind, fut): (&str, ProbeFuture<'_>) = match dest {
                DestinationConfig::S3(c) => (
                    "s3",
                    Box::pin(
                        async move { S3Destination::from_config(c, None).await.probe().await },
                    ),
                ),
                DestinationConfig::Sftp(c) => (
                    "sftp",
                    Box::pin(async move {
                        SftpDestination::from_config(c, &self.secrets)
                            .await
                            .map_err(|e| Problem::setup(&e))?
                            .probe()
                            .await
                    }),
                ),
                DestinationConfig::Http(c) => (
                    "http",
                    Box::pin(async move {
                        HttpDestination::from_config(c, &self.secrets)
                            .await
                            .map_err(|e| Problem::setup(&e))?
                            .probe()
                            .await
                    }),
                ),
                DestinationConfig::LocalDir(c) => (
                    "local_dir",
                    Box::pin(async move { LocalDirDestination::from_config(c).probe().await }),
                ),
                DestinationConfig::Graph(g) => (
                    "graph",
                    Box::pin(crate::dest::graph::GraphDestination::probe_config(
                        name,
                        g,
                        &self.secrets,
                        self.retry,
                    )),
                ),
            };
            items.push((Section::Destination, name.clone(), kind.into(), fut));
        }
        for (name, sink) in &config.sinks {
            let (kind, fut): (&str, ProbeFuture<'_>) = match sink {
                SinkConfig::Http(c) => (
                    "http",
                    Box::pin(async move {
                        HttpSink::from_config(c, &self.secrets, self.retry)
                            .await
                            .map_err(|e| Problem::setup(&e))?
                            .probe()
                            .await
                    }),
                ),
                SinkConfig::S3Jsonl(c) => (
                    "s3_jsonl",
                    Box::pin(async move { S3JsonlSink::from_config(c).await.probe().await }),
                ),
                SinkConfig::Postgres(c) => (
                    "postgres",
                    Box::pin(async move {
                        PostgresSink::from_config(c, &self.secrets)
                            .await
                            .map_err(|e| Problem::setup(&e))?
                            .probe()
                            .await
                    }),
                ),
            };
            items.push((Section::Sink, name.clone(), kind.into(), fut));
        }
        let view_state = self.state_for(Function::ViewSync);
        for (name, view) in &config.views {
            let state = view_state.clone();
            items.push((
                Section::View,
                name.clone(),
                "view".into(),
                Box::pin(async move {
                    let password = self
                        .secrets
                        .resolve(&view.password)
                        .await
                        .map_err(|e| Problem::setup(&e.into()))?;
                    crate::view_sync::probe_view(name, view, &password, state.as_ref(), &self.retry)
                        .await
                }),
            ));
        }
        for route in &config.routes {
            let Some(encrypt) = &route.encrypt else {
                continue;
            };
            items.push((
                Section::Route,
                route.name.clone(),
                "encrypt".into(),
                Box::pin(async move {
                    encrypt.load(&self.secrets).await.map(|_| ()).map_err(|e| match e {
                        crate::encrypt::LoadError::Secret(e) => Problem::setup(&e.into()),
                        e => Problem::new(
                            e.to_string(),
                            "give the recipient's current public key (gpg --export --armor KEYID); \
                             an expired key needs a new expiry date or a new key from its owner",
                        ),
                    })
                }),
            ));
        }
        let probes = items
            .into_iter()
            .map(|(section, name, kind, fut)| async move {
                let result = match tokio::time::timeout(timeout, fut).await {
                    Ok(result) => result,
                    Err(_) => Err(Problem::new(
                        format!("no answer within {}s", timeout.as_secs()),
                        "check that this machine can reach it (firewall, allow-list, DNS)",
                    )),
                };
                ProbeReport::new(section, &name, &kind, result)
            });
        let mut reports = vec![ProbeReport::new(
            Section::Config,
            "config",
            "json",
            config_result,
        )];
        reports.extend(futures_util::future::join_all(probes).await);
        reports
    }
}

#[cfg(test)]
mod tests {
    //! Fast tier: each function's cold start, on a config with every kind of part, resolves
    //! exactly the secrets of its own part and makes no state request at all.

    use std::collections::BTreeSet;

    use bytes::Bytes;

    use super::*;
    use crate::state::{MemoryStateStore, PutMode};

    /// Secret names used below; each is a file holding a dummy value.
    const SECRETS: [&str; 11] = [
        "webhook-token",
        "ct-sas",
        "unrouted-sas",
        "eg-aad",
        "partner-password",
        "hook-auth",
        "spare-auth",
        "cases-password",
        "api-auth",
        "db-password",
        "unused-sink-auth",
    ];

    fn config(dir: &std::path::Path) -> Config {
        for name in SECRETS {
            std::fs::write(dir.join(name), format!("value-of-{name}")).unwrap();
        }
        let f = |name: &str| serde_json::json!({"file": dir.join(name)});
        let json = serde_json::json!({
            "state": {"bucket": "state", "endpoint": {"endpoint_url": "http://127.0.0.1:9", "force_path_style": true}},
            "webhook": {"token": f("webhook-token")},
            "sources": {
                "ct": {"type": "azure_blob", "account_url": "http://127.0.0.1:9/devstoreaccount1", "sas": f("ct-sas")},
                "unrouted": {"type": "azure_blob", "account_url": "http://127.0.0.1:9/devstoreaccount1", "sas": f("unrouted-sas")},
                "eg": {"type": "pubsub_export", "tenant_service_url": "http://127.0.0.1:9", "integration_name": "files",
                       "aad": {"authority_url": "http://127.0.0.1:9", "tenant_id": "t", "client_id": "c", "scope": "api://eg/.default", "client_secret": f("eg-aad")}}
            },
            "destinations": {
                "partner": {"type": "sftp", "host": "127.0.0.1", "port": 9, "username": "u",
                            "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMMvSq5Vs7S+l8qmGaerwTbnaUaQmx+5s59zbcLKC7Cl",
                            "password": f("partner-password"), "directory": "/upload"},
                "hook": {"type": "http", "url": "http://127.0.0.1:9/{name}", "secret_headers": {"Authorization": f("hook-auth")}},
                "spare": {"type": "http", "url": "http://127.0.0.1:9/{name}", "secret_headers": {"Authorization": f("spare-auth")}}
            },
            "routes": [
                {"name": "zips", "source": "ct", "container": "exports", "destinations": ["partner"]},
                {"name": "items", "source": "eg", "blob_types": ["Gateway.ItemChanges"], "destinations": ["hook"]},
                {"name": "item-rows", "source": "eg", "blob_types": ["Gateway.ItemChanges"], "records": {"sink": "db", "format": "jsonl"}}
            ],
            "views": {"cases": {"url": "http://127.0.0.1:9/view", "on_behalf_of": "ops", "username": "svc", "password": f("cases-password"), "sink": "api"}},
            "sinks": {
                "api": {"type": "http", "url": "http://127.0.0.1:9/records", "secret_headers": {"Authorization": f("api-auth")}},
                "db": {"type": "postgres", "host": "127.0.0.1", "user": "u", "dbname": "d", "table": "t", "password": f("db-password")},
                "unused": {"type": "http", "url": "http://127.0.0.1:9/x", "secret_headers": {"Authorization": f("unused-sink-auth")}}
            }
        });
        Config::from_json(&json.to_string()).unwrap()
    }

    /// Builds `function`'s part on a fresh resolver; returns the secret names it read and the
    /// state requests it made.
    async fn cold_start(function: Function) -> (BTreeSet<String>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(MemoryStateStore::new());
        let services = Services::with_state(
            config(dir.path()),
            recorder.clone(),
            Arc::new(SecretResolver::local()),
        );
        match function {
            Function::WebhookIngest => drop(services.webhook().await.unwrap()),
            Function::BlobCopy => drop(services.engine().await.unwrap()),
            Function::ViewSync => drop(services.view_sync().await.unwrap()),
            Function::TokenRefresh => drop(services.token_caches().await.unwrap()),
            Function::ExportPull => drop(services.export_pullers().await.unwrap()),
            Function::Reconcile => drop(services.reconciler().await.unwrap()),
        }
        let read = services
            .secrets
            .fetched()
            .into_iter()
            .map(|r| match r {
                crate::secret::SecretRef::File(p) => {
                    p.file_name().unwrap().to_string_lossy().into_owned()
                }
                other => panic!("unexpected reference {other}"),
            })
            .collect();
        let requests = recorder.requests();
        (read, requests)
    }

    #[tokio::test]
    async fn each_cold_start_reads_only_its_own_secrets_and_no_state() {
        let expected: [(Function, &[&str]); 6] = [
            (Function::WebhookIngest, &["webhook-token", "ct-sas"]),
            (
                Function::BlobCopy,
                &[
                    "ct-sas",
                    "eg-aad",
                    "partner-password",
                    "hook-auth",
                    "db-password",
                ],
            ),
            (Function::ViewSync, &["cases-password", "api-auth"]),
            (Function::TokenRefresh, &["eg-aad"]),
            (Function::ExportPull, &["eg-aad"]),
            (Function::Reconcile, &["ct-sas"]),
        ];
        for (function, want) in expected {
            let (read, requests) = cold_start(function).await;
            let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
            assert_eq!(read, want, "{} read these secrets", function.name());
            assert!(
                requests.is_empty(),
                "{} touched state at cold start: {requests:?}",
                function.name()
            );
        }
    }

    #[tokio::test]
    async fn a_function_cannot_touch_state_outside_its_grants() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Arc::new(MemoryStateStore::new());
        let services = Services::with_state(
            config(dir.path()),
            recorder.clone(),
            Arc::new(SecretResolver::local()),
        );
        let state = services.state_for(Function::ViewSync);
        let e = state
            .put(
                "tokens/eg.json",
                Bytes::from_static(b"{}"),
                PutMode::Overwrite,
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("put tokens/eg.json") && e.contains("view-sync may not put"),
            "{e}"
        );
        assert!(state.get("watermarks/cases.json").await.unwrap().is_none());
        assert_eq!(
            recorder.requests(),
            ["get watermarks/cases.json"],
            "only the granted request reached the store"
        );
    }
}
