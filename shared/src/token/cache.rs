//! The shared token cache: one per source and function instance, backed by the stored copy in
//! `tokens/<source>.json` that every function instance shares.
//!
//! - `get` serves the in-memory copy, else the stored one, else refreshes.
//! - `refresh_after_denied` is called when a request made with generation `g` got 401/403: it is
//!   single-flight (one refresh however many requests were refused at once), first adopts any
//!   copy newer than `g` (memory, then the store: another instance may have refreshed already),
//!   and refuses to refresh a token set younger than `min_refresh_interval` (refresh storms)
//!   with the retryable `TokenError::RefreshTooSoon`, whose retry-after is the rest of the
//!   interval: a vendor rotation just after our refresh delays work, it never fails it for good.
//! - `refresh_if_due` is the scheduled refresh ahead of expiry.
//! - Saving is compare-and-swap (`If-Match` / `If-None-Match: *`): a refresher that loses the
//!   race re-reads, and keeps the stored set when it was fetched later than its own, so a newer
//!   token set is never replaced by an older one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::service::TokenIssuer;
use super::{ExportTokens, TokenError};
use crate::layout::token_key;
use crate::retry::{RetryPolicy, Retryable};
use crate::source::SourceError;
use crate::source::azure_blob::BlobCredentials;
use crate::state::{PutMode, StateError, StateStore};

/// Tokens within this long of expiry are not handed out by `get` without trying a refresh.
const EXPIRY_SLACK: Duration = Duration::from_secs(60);

/// What a scheduled refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The stored tokens have enough life left.
    NotDue {
        /// The token set's generation.
        generation: u64,
        /// Time left before the tokens expire.
        expires_in: Duration,
    },
    /// New tokens were fetched (or adopted from a concurrent refresher) and stored.
    Refreshed {
        /// The token set's generation.
        generation: u64,
        /// Time left before the tokens expire.
        expires_in: Duration,
    },
}

/// Settings of one cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Scheduled refreshes happen when the tokens expire within this.
    pub refresh_ahead: Duration,
    /// A token set younger than this is not refreshed because a request was refused.
    pub min_refresh_interval: Duration,
}

/// Shared, single-flight token cache for one source.
pub struct TokenCache {
    source: String,
    key: String,
    state: Arc<dyn StateStore>,
    issuer: Arc<dyn TokenIssuer>,
    retry: RetryPolicy,
    settings: CacheSettings,
    current: std::sync::Mutex<Option<Arc<ExportTokens>>>,
    /// Held while loading or refreshing; holds when this instance last called the issuer.
    flight: tokio::sync::Mutex<Option<Instant>>,
    issued: AtomicU64,
}

impl TokenCache {
    /// The token cache of one pub/sub export source, built from its config: Azure AD client ->
    /// token service -> cache, keeping the tokens in `state`. Resolves the AAD credential.
    pub async fn from_config(
        name: &str,
        p: &crate::config::PubsubExportConfig,
        secrets: &crate::secret::SecretResolver,
        state: &Arc<dyn StateStore>,
        retry: RetryPolicy,
    ) -> Result<Arc<Self>, crate::setup::SetupError> {
        let service = super::service::TokenService::from_config(name, p, secrets, retry).await?;
        Ok(Arc::new(Self::new(
            name,
            state.clone(),
            Arc::new(service),
            retry,
            CacheSettings {
                refresh_ahead: Duration::from_secs(p.refresh_ahead_secs),
                min_refresh_interval: Duration::from_secs(p.min_refresh_interval_secs),
            },
        )))
    }

    /// A cache for `source`'s tokens.
    pub fn new(
        source: &str,
        state: Arc<dyn StateStore>,
        issuer: Arc<dyn TokenIssuer>,
        retry: RetryPolicy,
        settings: CacheSettings,
    ) -> Self {
        Self {
            source: source.to_string(),
            key: token_key(source),
            state,
            issuer,
            retry,
            settings,
            current: std::sync::Mutex::new(None),
            flight: tokio::sync::Mutex::new(None),
            issued: AtomicU64::new(0),
        }
    }

    /// Source name.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How many times this instance called the token service successfully.
    pub fn refreshes(&self) -> u64 {
        self.issued.load(Ordering::SeqCst)
    }

    fn memory(&self) -> Option<Arc<ExportTokens>> {
        self.current.lock().expect("token cache").clone()
    }

    fn remember(&self, tokens: Arc<ExportTokens>) -> Arc<ExportTokens> {
        let mut current = self.current.lock().expect("token cache");
        match current.as_ref() {
            Some(c) if c.generation > tokens.generation => c.clone(),
            _ => {
                *current = Some(tokens.clone());
                tokens
            }
        }
    }

    /// Reads the stored copy (with its ETag). A corrupt copy reads as absent-but-replaceable.
    async fn load(&self) -> Result<Option<(Option<ExportTokens>, String)>, TokenError> {
        let state = self.state.as_ref();
        let Some(found) = self
            .retry
            .run("load tokens", || state.get(&self.key))
            .await?
        else {
            return Ok(None);
        };
        match serde_json::from_slice::<ExportTokens>(&found.body) {
            Ok(t) => Ok(Some((Some(t), found.etag))),
            Err(e) => {
                tracing::warn!(source = %self.source, key = %self.key, error = %e, "stored tokens unreadable; they will be replaced");
                Ok(Some((None, found.etag)))
            }
        }
    }

    /// Adopts the stored copy when it is newer than memory; returns what memory holds then.
    async fn adopt_stored(&self) -> Result<Option<Arc<ExportTokens>>, TokenError> {
        if let Some((Some(stored), _)) = self.load().await? {
            return Ok(Some(self.remember(Arc::new(stored))));
        }
        Ok(self.memory())
    }

    /// Current tokens: memory, else the stored copy, else a refresh.
    pub async fn get(&self) -> Result<Arc<ExportTokens>, TokenError> {
        if let Some(t) = self.memory().filter(|t| t.expires_in() > EXPIRY_SLACK) {
            return Ok(t);
        }
        let mut flight = self.flight.lock().await;
        if let Some(t) = self.memory().filter(|t| t.expires_in() > EXPIRY_SLACK) {
            return Ok(t);
        }
        let known = self.adopt_stored().await?;
        if let Some(t) = known.clone().filter(|t| t.expires_in() > EXPIRY_SLACK) {
            return Ok(t);
        }
        match self
            .refresh_locked(&mut flight, "tokens missing or expiring")
            .await
        {
            Ok(t) => Ok(t),
            Err(e) => match known.filter(|t| !t.expires_in().is_zero()) {
                Some(t) => {
                    tracing::warn!(source = %self.source, error = %e, "token refresh failed; using the current tokens until they expire");
                    Ok(t)
                }
                None => Err(e),
            },
        }
    }

    /// Re-reads the stored copy (adopting it when newer) without calling the token service.
    pub async fn reload(&self) -> Result<Arc<ExportTokens>, TokenError> {
        let flight = self.flight.lock().await;
        if let Some(t) = self.adopt_stored().await? {
            return Ok(t);
        }
        drop(flight);
        self.get().await
    }

    /// Called after a request made with tokens of `used_generation` was refused (401/403).
    /// Returns the tokens to retry with. Tokens refreshed
    /// less than `min_refresh_interval` ago are not refreshed again: that is the retryable
    /// [`TokenError::RefreshTooSoon`] carrying the rest of the interval, never a final refusal
    /// (the vendor may have rotated just after our refresh).
    pub async fn refresh_after_denied(
        &self,
        used_generation: u64,
    ) -> Result<Arc<ExportTokens>, TokenError> {
        let mut flight = self.flight.lock().await;
        if let Some(t) = self.memory().filter(|t| t.generation > used_generation) {
            return Ok(t);
        }
        if let Some(t) = self
            .adopt_stored()
            .await?
            .filter(|t| t.generation > used_generation)
        {
            tracing::info!(source = %self.source, generation = t.generation, "refused tokens were already replaced; using the stored ones");
            return Ok(t);
        }
        let min = self.settings.min_refresh_interval;
        let young = self.memory().map(|t| min.saturating_sub(t.age()));
        let recent = flight.map(|at| min.saturating_sub(at.elapsed()));
        let wait = young.into_iter().chain(recent).max().unwrap_or_default();
        if !wait.is_zero() {
            tracing::warn!(source = %self.source, generation = used_generation, min_interval_secs = min.as_secs(), retry_after_ms = wait.as_millis() as u64, "tokens refused, but they were refreshed less than the minimum interval ago; not refreshing again until the interval has passed");
            // Ages are counted in whole milliseconds: a little slack so the retry is not early.
            return Err(TokenError::RefreshTooSoon {
                retry_after: wait + Duration::from_millis(5),
            });
        }
        self.refresh_locked(&mut flight, "a request was refused (401/403)")
            .await
    }

    /// The scheduled refresh: refreshes when the stored tokens expire within `refresh_ahead`.
    pub async fn refresh_if_due(&self) -> Result<RefreshOutcome, TokenError> {
        crate::metrics::invocation("token-refresh", self.refresh_when_due()).await
    }

    async fn refresh_when_due(&self) -> Result<RefreshOutcome, TokenError> {
        let mut flight = self.flight.lock().await;
        if let Some(t) = self.adopt_stored().await?
            && t.expires_in() > self.settings.refresh_ahead
        {
            return Ok(RefreshOutcome::NotDue {
                generation: t.generation,
                expires_in: t.expires_in(),
            });
        }
        let t = self
            .refresh_locked(&mut flight, "tokens expire soon")
            .await?;
        Ok(RefreshOutcome::Refreshed {
            generation: t.generation,
            expires_in: t.expires_in(),
        })
    }

    /// Fetches a new token set and stores it (caller holds the flight lock).
    async fn refresh_locked(
        &self,
        flight: &mut Option<Instant>,
        why: &str,
    ) -> Result<Arc<ExportTokens>, TokenError> {
        tracing::info!(source = %self.source, reason = why, "refreshing tokens from the token service");
        *flight = Some(Instant::now());
        let dims = [("Source", self.source.as_str())];
        let fresh = self.issuer.issue().await.inspect_err(|e| {
            crate::metrics::add(
                "TokenRefreshFailures",
                crate::metrics::Unit::Count,
                1.0,
                &dims,
            );
            tracing::error!(source = %self.source, error = %e, "token refresh failed");
        })?;
        crate::metrics::add("TokensRefreshed", crate::metrics::Unit::Count, 1.0, &dims);
        self.issued.fetch_add(1, Ordering::SeqCst);
        let stored = match self.save(fresh.clone()).await {
            Ok(t) => t,
            Err(e) => {
                // Usable for this instance even though others cannot share it yet.
                let generation = self.memory().map_or(0, |t| t.generation) + 1;
                tracing::warn!(source = %self.source, error = %e, "fresh tokens could not be stored; using them in memory");
                ExportTokens {
                    generation,
                    ..fresh
                }
            }
        };
        let stored = self.remember(Arc::new(stored));
        tracing::info!(source = %self.source, generation = stored.generation, expires_in_secs = stored.expires_in().as_secs(), bases = %stored.base_urls().join(", "), "tokens refreshed");
        Ok(stored)
    }

    /// Compare-and-swap save; keeps a stored set fetched later than `fresh`.
    async fn save(&self, fresh: ExportTokens) -> Result<ExportTokens, TokenError> {
        for _ in 0..8 {
            let (mode, generation) = match self.load().await? {
                None => (PutMode::Create, 1),
                Some((Some(stored), _)) if stored.fetched_at_ms >= fresh.fetched_at_ms => {
                    tracing::info!(source = %self.source, generation = stored.generation, "a concurrent refresh stored newer tokens; keeping them");
                    return Ok(stored);
                }
                Some((stored, etag)) => (
                    PutMode::Update(etag),
                    stored.map_or(0, |s| s.generation) + 1,
                ),
            };
            let tokens = ExportTokens {
                generation,
                ..fresh.clone()
            };
            let body = serde_json::to_vec(&tokens)
                .map_err(|e| TokenError::BadResponse(format!("cannot serialise tokens: {e}")))?;
            match self.state.put(&self.key, Bytes::from(body), mode).await {
                Ok(_) => return Ok(tokens),
                Err(StateError::AlreadyExists { .. } | StateError::PreconditionFailed { .. }) => {
                    continue;
                }
                Err(e) if e.is_retryable() => {
                    tokio::time::sleep(self.retry.initial).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(TokenError::State(StateError::Transient(format!(
            "{}: too many concurrent token writers",
            self.key
        ))))
    }
}

fn denied_source_error(e: TokenError) -> SourceError {
    if e.is_retryable() {
        SourceError::Transient {
            reason: format!("token refresh: {e}"),
            retry_after: e.retry_after(),
        }
    } else {
        SourceError::Permanent(format!("token refresh failed: {e}"))
    }
}

#[async_trait]
impl BlobCredentials for TokenCache {
    async fn sign(&self, url: &str) -> Result<(String, u64), SourceError> {
        let tokens = self.get().await.map_err(denied_source_error)?;
        let parsed = url::Url::parse(url)
            .map_err(|_| SourceError::Refused(format!("{url} is not a URL")))?;
        let Some((base, _)) = tokens.base_for(&parsed) else {
            return Err(SourceError::Refused(format!(
                "{url} is not under any of the token's blob base URLs ({})",
                tokens.base_urls().join(", ")
            )));
        };
        let sas = crate::secret::expose(&base.sas);
        Ok((format!("{url}?{sas}"), tokens.generation))
    }

    async fn refused(&self, generation: u64) -> Result<bool, SourceError> {
        self.refresh_after_denied(generation)
            .await
            .map(|_| true)
            .map_err(denied_source_error)
    }
}
