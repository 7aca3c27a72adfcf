//! The reconciliation sweep: finds the files whose webhook never came (ClientTrack's webhook is
//! fire-and-forget: a call lost while our endpoint was down is never repeated) and creates
//! their jobs.
//!
//! For each webhook route it lists the route's container with List Blobs (paged, from the glob's
//! literal folders), keeps the blobs the route would take (the webhook's own matcher), skips those
//! created before the lookback window, refuses unsafe names as the webhook does, and writes each
//! remaining blob's job create-once with the webhook's deterministic id (`job::job_id`). A blob
//! whose webhook did come finds its job already there; a webhook arriving after the sweep finds
//! the sweep's job: either way one job, one delivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::{StreamExt, stream};
use serde::Serialize;

use crate::config::{ReconcileConfig, RouteConfig};
use crate::names;
use crate::retry::RetryPolicy;
use crate::source::{ListedObject, Source, SourceError};
use crate::state::StateStore;
use crate::webhook::{CompiledRoute, JobWrite, create_route_job, route_job_id};

/// What one sweep should do.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    /// Sweep only these routes (all webhook routes when empty).
    pub routes: Vec<String>,
    /// Count what would be created, write nothing.
    pub dry_run: bool,
    /// Blobs created before this are left alone (default: now minus the configured lookback).
    pub since: Option<SystemTime>,
    /// Id that ties the sweep's log lines and the jobs it creates together (the Lambda request
    /// id, or one the caller makes).
    pub correlation_id: String,
}

/// What a sweep found on one route. Every listed blob is counted exactly once among
/// `not_taken`, `outside_lookback`, `refused_name`, `already_known` and `created` (or
/// `would_create` in a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteSweep {
    /// Route name.
    pub route: String,
    /// Source the route reads.
    pub source: String,
    /// Container listed.
    pub container: String,
    /// Name prefix the listing started from (the glob's literal folders).
    pub prefix: String,
    /// List Blobs pages read.
    pub pages: u32,
    /// Blobs listed.
    pub listed: u64,
    /// Blobs the route does not take (glob, name filter).
    pub not_taken: u64,
    /// Blobs the route takes, created before the window: left alone.
    pub outside_lookback: u64,
    /// Blobs the route takes whose names the webhook would refuse (traversal, control or
    /// bidirectional characters, ...): counted and logged, never delivered.
    pub refused_name: u64,
    /// Blobs whose job already existed (their webhook came, or an earlier sweep found them).
    pub already_known: u64,
    /// Jobs created: each one a webhook that was missed.
    pub created: u64,
    /// Dry run: jobs a real sweep would create.
    pub would_create: u64,
    /// Keys of the jobs created (or that would be, in a dry run).
    pub job_keys: Vec<String>,
    /// Why the route could not be swept (completely), e.g. a SAS without `l`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The result of one sweep over the routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepSummary {
    /// True when nothing was written.
    pub dry_run: bool,
    /// Blobs created at or after this (RFC 3339) were considered.
    pub since: String,
    /// Per route, in configuration order.
    pub routes: Vec<RouteSweep>,
}

impl SweepSummary {
    /// Jobs created over all routes (missed webhooks).
    pub fn created(&self) -> u64 {
        self.routes.iter().map(|r| r.created).sum()
    }

    /// Counts the sweep per `Route`: blobs listed, jobs created (missed webhooks), already
    /// known, names refused, and routes that could not be swept. A dry run counts nothing.
    pub fn record_metrics(&self) {
        use crate::metrics::{Unit, add};
        if self.dry_run {
            return;
        }
        for r in &self.routes {
            let dims = [("Route", r.route.as_str())];
            for (name, value) in [
                ("ReconcileListed", r.listed),
                ("ReconcileCreated", r.created),
                ("ReconcileAlreadyKnown", r.already_known),
                ("ReconcileRefused", r.refused_name),
                ("ReconcileFailures", u64::from(r.error.is_some())),
            ] {
                add(name, Unit::Count, value as f64, &dims);
            }
        }
    }

    /// Every route's error, as `route "<name>": <error>`.
    pub fn errors(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter_map(|r| {
                r.error
                    .as_ref()
                    .map(|e| format!("route {:?}: {e}", r.route))
            })
            .collect()
    }
}

/// Why a route could not be swept.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The SAS lacks the list permission (Azure answers 403 AuthorizationPermissionMismatch).
    #[error(
        "source {source_name:?} refused List Blobs on container {container:?} ({code}): the SAS lacks the `l` (list) permission the reconciliation sweep needs; add `l` to the SAS, or to the container's stored access policy that the SAS names (e.g. permissions `rl`)"
    )]
    ListPermissionMissing {
        /// Source name.
        source_name: String,
        /// Container.
        container: String,
        /// Azure's error code.
        code: String,
    },
    /// Anything else the source said.
    #[error("listing container {container:?} of source {source_name:?} failed: {error}")]
    List {
        /// Source name.
        source_name: String,
        /// Container.
        container: String,
        /// The source's error.
        error: SourceError,
    },
    /// The state bucket refused or failed a job write.
    #[error("writing a job failed: {0}")]
    State(#[from] crate::state::StateError),
}

struct SweptRoute {
    compiled: CompiledRoute,
    source: Arc<dyn Source>,
}

/// Sweeps the webhook routes. Built once per cold start (`Services::reconciler`).
pub struct Reconciler {
    routes: Vec<SweptRoute>,
    state: Arc<dyn StateStore>,
    retry: RetryPolicy,
    config: ReconcileConfig,
    max_name_bytes: usize,
}

impl Reconciler {
    /// A reconciler over `routes` (webhook routes) reading through `sources` (by name).
    pub fn new(
        routes: &[RouteConfig],
        sources: &BTreeMap<String, Arc<dyn Source>>,
        state: Arc<dyn StateStore>,
        retry: RetryPolicy,
        config: ReconcileConfig,
        max_name_bytes: usize,
    ) -> Result<Self, String> {
        let routes = routes
            .iter()
            .map(|r| {
                let compiled =
                    CompiledRoute::compile(r).map_err(|e| format!("route {:?}: {e}", r.name))?;
                let source = sources
                    .get(&r.source)
                    .cloned()
                    .ok_or_else(|| format!("route {:?} names a missing source", r.name))?;
                Ok(SweptRoute { compiled, source })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            routes,
            state,
            retry,
            config,
            max_name_bytes,
        })
    }

    /// The routes it sweeps.
    pub fn route_names(&self) -> Vec<&str> {
        self.routes
            .iter()
            .map(|r| r.compiled.config.name.as_str())
            .collect()
    }

    /// Sweeps the chosen routes one after another. A route that fails (e.g. a SAS without `l`)
    /// is reported once in its entry and the others are still swept; an unknown route name is
    /// an error before anything is listed.
    pub async fn sweep(&self, options: &SweepOptions) -> Result<SweepSummary, String> {
        crate::metrics::invocation("reconcile", async {
            let result = self.sweep_routes(options).await;
            if let Ok(summary) = &result {
                summary.record_metrics();
            }
            result
        })
        .await
    }

    async fn sweep_routes(&self, options: &SweepOptions) -> Result<SweepSummary, String> {
        if let Some(unknown) = options
            .routes
            .iter()
            .find(|r| !self.route_names().contains(&r.as_str()))
        {
            return Err(format!(
                "no webhook route named {unknown:?} (routes: {})",
                self.route_names().join(", ")
            ));
        }
        let since = options
            .since
            .unwrap_or_else(|| SystemTime::now() - self.config.lookback());
        let mut summary = SweepSummary {
            dry_run: options.dry_run,
            since: humantime::format_rfc3339_seconds(since).to_string(),
            routes: Vec::new(),
        };
        for route in &self.routes {
            let name = &route.compiled.config.name;
            if !options.routes.is_empty() && !options.routes.contains(name) {
                continue;
            }
            let mut found = RouteSweep {
                route: name.clone(),
                source: route.compiled.config.source.clone(),
                container: route.compiled.config.container.clone().unwrap_or_default(),
                prefix: route.compiled.list_prefix().to_string(),
                ..RouteSweep::default()
            };
            if let Err(e) = self.sweep_route(route, since, options, &mut found).await {
                tracing::error!(
                    correlation_id = %options.correlation_id,
                    route = %name,
                    error = %e,
                    "reconcile sweep of route failed"
                );
                found.error = Some(e.to_string());
            }
            tracing::info!(
                correlation_id = %options.correlation_id,
                route = %name,
                dry_run = options.dry_run,
                pages = found.pages,
                listed = found.listed,
                not_taken = found.not_taken,
                outside_lookback = found.outside_lookback,
                refused_name = found.refused_name,
                already_known = found.already_known,
                created = found.created,
                would_create = found.would_create,
                "reconcile sweep of route done"
            );
            if found.created > 0 {
                // Said at warn: operators grep for it (the alarm reads ReconcileCreated).
                tracing::warn!(
                    correlation_id = %options.correlation_id,
                    route = %name,
                    created = found.created,
                    "reconcile created jobs for missed webhooks"
                );
            }
            summary.routes.push(found);
        }
        Ok(summary)
    }

    async fn sweep_route(
        &self,
        route: &SweptRoute,
        since: SystemTime,
        options: &SweepOptions,
        found: &mut RouteSweep,
    ) -> Result<(), SweepError> {
        let config = &route.compiled.config;
        let mut marker: Option<String> = None;
        loop {
            let page = route
                .source
                .list_page(
                    &found.container,
                    &found.prefix,
                    marker.as_deref(),
                    self.config.page_size,
                )
                .await
                .map_err(|error| match error {
                    SourceError::AccessDenied { code } => SweepError::ListPermissionMissing {
                        source_name: config.source.clone(),
                        container: found.container.clone(),
                        code,
                    },
                    error => SweepError::List {
                        source_name: config.source.clone(),
                        container: found.container.clone(),
                        error,
                    },
                })?;
            found.pages += 1;
            found.listed += page.objects.len() as u64;
            let mut wanted = Vec::new();
            for listed in page.objects {
                if let Some(blob) = self.triage(route, listed, since, options, found) {
                    wanted.push(blob);
                }
            }
            self.create_jobs(config, wanted, options, found).await?;
            match page.next_marker {
                Some(next) => marker = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// Counts a listed blob the route does not want; returns the ones it does.
    fn triage(
        &self,
        route: &SweptRoute,
        listed: ListedObject,
        since: SystemTime,
        options: &SweepOptions,
        found: &mut RouteSweep,
    ) -> Option<ListedObject> {
        let name = listed.object.name.as_str();
        if !route.compiled.matches(&found.container, name) {
            found.not_taken += 1;
            return None;
        }
        // A blob without times is swept: better one no-op job check than a missed file.
        if listed.time().is_some_and(|t| t < since) {
            found.outside_lookback += 1;
            return None;
        }
        if let Err(e) = names::validate_object_name("file", name, self.max_name_bytes) {
            found.refused_name += 1;
            tracing::warn!(
                correlation_id = %options.correlation_id,
                route = %found.route,
                container = %found.container,
                name = ?name,
                reason = %e,
                "reconcile: blob not delivered: unsafe name"
            );
            return None;
        }
        Some(listed)
    }

    async fn create_jobs(
        &self,
        route: &RouteConfig,
        wanted: Vec<ListedObject>,
        options: &SweepOptions,
        found: &mut RouteSweep,
    ) -> Result<(), SweepError> {
        let state = self.state.as_ref();
        let cid = options.correlation_id.as_str();
        let results: Vec<_> = stream::iter(wanted)
            .map(|listed| async move {
                let object = listed.object;
                let name = object.name.clone();
                if options.dry_run {
                    let (_, key) = route_job_id(route, &object);
                    let exists = self
                        .retry
                        .run("check job", || state.get(&key))
                        .await?
                        .is_some();
                    let written = if exists {
                        JobWrite::Exists
                    } else {
                        JobWrite::Created
                    };
                    return Ok::<_, SweepError>((name, key, written));
                }
                let (_, key, written) =
                    create_route_job(state, &self.retry, route, object, cid).await?;
                Ok((name, key, written))
            })
            .buffered(self.config.concurrency.max(1))
            .collect()
            .await;
        for result in results {
            let (name, key, written) = result?;
            match (written, options.dry_run) {
                (JobWrite::Exists, _) => found.already_known += 1,
                (JobWrite::Created, true) => {
                    found.would_create += 1;
                    found.job_keys.push(key);
                }
                (JobWrite::Created, false) => {
                    tracing::info!(correlation_id = cid, route = %route.name, file = %name, job_key = %key, "reconcile: job created for a blob whose webhook never came");
                    found.created += 1;
                    found.job_keys.push(key);
                }
            }
        }
        Ok(())
    }
}
