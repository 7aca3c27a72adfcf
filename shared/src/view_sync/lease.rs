//! The per-view lease that keeps two runs from syncing one view at once, and the watermark.
//! Both live in the state store and change only by conditional writes: a lease is created once
//! (`If-None-Match: *`), taken over only after it expired and only by compare-and-swap on the
//! version that was read, renewed and released by compare-and-swap on the holder's own version.
//! The watermark only moves forward, by compare-and-swap.
//!
//! A live holder renews its lease between chunks once a quarter of its TTL has passed, so a
//! lease whose remaining time fell below a quarter of the TTL has not been renewed for three
//! quarters of it: its holder died (or is stuck) and the lease only blocks other runs until it
//! expires. [`Acquired::Busy`] says so (`stale`), and the sync reports it as its own outcome.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::record::Cursor;
use crate::clock::now_ms;
use crate::job::now_rfc3339;
use crate::layout::watermark_key;
use crate::retry::RetryPolicy;
use crate::state::{PutMode, StateError, StateStore, StateStoreExt};

/// The stored lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Who holds it (instance and run id).
    pub holder: String,
    /// Unix milliseconds after which another run may take it over.
    pub expires_at_ms: u64,
    /// When it was taken or last renewed (for people reading the bucket).
    pub renewed_at: String,
    /// Set when the holder finished; the lease is then free.
    #[serde(default)]
    pub released: bool,
    /// Unix milliseconds when the holder took it (0 in leases written before this field).
    #[serde(default)]
    pub acquired_at_ms: u64,
}

/// The stored watermark: every record up to this cursor has been delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// The view.
    pub view: String,
    /// The highest `lastSubmissionId` delivered.
    pub last_submission_id: Cursor,
    /// When it was written.
    pub updated_at: String,
    /// Which run wrote it.
    pub updated_by: String,
}

/// A lease this run holds.
#[derive(Debug)]
pub struct Lease {
    key: String,
    holder: String,
    etag: String,
    expires_at_ms: u64,
    acquired_at_ms: u64,
    ttl: Duration,
}

/// The result of trying to take a lease.
#[derive(Debug)]
pub enum Acquired {
    /// This run holds it now.
    Held(Lease),
    /// Another run holds it, until `expires_at_ms`.
    Busy {
        /// The run that holds the lease.
        holder: String,
        /// When the lease expires, in ms since the Unix epoch.
        expires_at_ms: u64,
        /// When the holder took it (0: not recorded).
        acquired_at_ms: u64,
        /// Not renewed for three quarters of `ttl`: the holder is past its expected run time.
        stale: bool,
    },
}

/// True when a live lease with `expires_at_ms` and this `ttl` has less than a quarter of the
/// TTL left: a live holder would have renewed it (see the module doc).
pub fn is_stale(expires_at_ms: u64, ttl: Duration, now_ms: u64) -> bool {
    expires_at_ms.saturating_sub(now_ms) < ttl.as_millis() as u64 / 4
}

impl Lease {
    /// Takes the lease at `key` for `holder`: creates it when absent, takes it over with
    /// compare-and-swap when it expired or was released; otherwise reports who holds it.
    pub async fn acquire(
        state: &dyn StateStore,
        retry: &RetryPolicy,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Acquired, StateError> {
        for _ in 0..5 {
            let current = retry
                .run("read lease", || state.get_json::<LeaseRecord>(key))
                .await?;
            let mode = match &current {
                None => PutMode::Create,
                // A live lease of another run. (Our own holder id can only be there when a write of
                // ours landed but its answer was lost: then it is ours to take.)
                Some((l, _)) if !l.released && l.expires_at_ms > now_ms() && l.holder != holder => {
                    return Ok(Acquired::Busy {
                        holder: l.holder.clone(),
                        expires_at_ms: l.expires_at_ms,
                        acquired_at_ms: l.acquired_at_ms,
                        stale: is_stale(l.expires_at_ms, ttl, now_ms()),
                    });
                }
                Some((_, etag)) => PutMode::Update(etag.clone()),
            };
            let now = now_ms();
            let record = LeaseRecord {
                holder: holder.to_string(),
                expires_at_ms: now + ttl.as_millis() as u64,
                renewed_at: now_rfc3339(),
                released: false,
                acquired_at_ms: now,
            };
            match retry
                .run("write lease", || state.put_json(key, &record, mode.clone()))
                .await
            {
                Ok(etag) => {
                    return Ok(Acquired::Held(Lease {
                        key: key.to_string(),
                        holder: holder.to_string(),
                        etag,
                        expires_at_ms: record.expires_at_ms,
                        acquired_at_ms: record.acquired_at_ms,
                        ttl,
                    }));
                }
                // Another run wrote first: read again and see who holds it now.
                Err(StateError::AlreadyExists { .. } | StateError::PreconditionFailed { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(StateError::Transient(format!(
            "{key}: the lease kept changing while taking it"
        )))
    }

    /// Who holds this lease.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Renews the lease once a quarter of its time has passed (less than three quarters
    /// left). Fails with `PreconditionFailed` when another run took it over (this run must stop).
    pub async fn keep(
        &mut self,
        state: &dyn StateStore,
        retry: &RetryPolicy,
    ) -> Result<(), StateError> {
        let left = self.expires_at_ms.saturating_sub(now_ms());
        if left > self.ttl.as_millis() as u64 * 3 / 4 {
            return Ok(());
        }
        self.write(state, retry, false).await
    }

    /// Frees the lease (compare-and-swap to `released`, so a lease another run took over is never
    /// touched). Failures are logged: the lease then simply expires.
    pub async fn release(mut self, state: &dyn StateStore, retry: &RetryPolicy) {
        if let Err(e) = self.write(state, retry, true).await {
            tracing::warn!(lease = %self.key, error = %e, "could not release the lease; it expires on its own");
        }
    }

    async fn write(
        &mut self,
        state: &dyn StateStore,
        retry: &RetryPolicy,
        released: bool,
    ) -> Result<(), StateError> {
        let record = LeaseRecord {
            holder: self.holder.clone(),
            expires_at_ms: if released {
                now_ms()
            } else {
                now_ms() + self.ttl.as_millis() as u64
            },
            renewed_at: now_rfc3339(),
            released,
            acquired_at_ms: self.acquired_at_ms,
        };
        let mode = PutMode::Update(self.etag.clone());
        self.etag = retry
            .run("renew lease", || {
                state.put_json(&self.key, &record, mode.clone())
            })
            .await?;
        self.expires_at_ms = record.expires_at_ms;
        Ok(())
    }
}

/// The watermark as this run last saw it, with the version to compare-and-swap against.
#[derive(Debug, Clone, Default)]
pub struct WatermarkState {
    /// The saved cursor (`None`: no watermark yet, the view is read from its beginning).
    pub value: Option<Cursor>,
    /// ETag of the stored object (`None` when absent).
    pub etag: Option<String>,
    /// When the watermark was last moved (its `updated_at`; `None` when absent or unreadable):
    /// how far behind the view the sink may be (`WatermarkAge`).
    pub updated_at: Option<SystemTime>,
}

/// Reads the watermark of `view`.
pub async fn read_watermark(
    state: &dyn StateStore,
    retry: &RetryPolicy,
    view: &str,
) -> Result<WatermarkState, StateError> {
    let key = watermark_key(view);
    Ok(
        match retry
            .run("read watermark", || state.get_json::<Watermark>(&key))
            .await?
        {
            None => WatermarkState::default(),
            Some((w, etag)) => WatermarkState {
                value: Some(w.last_submission_id),
                etag: Some(etag),
                updated_at: humantime::parse_rfc3339_weak(&w.updated_at).ok(),
            },
        },
    )
}

/// Moves the watermark of `view` forward to `to`, never back: compare-and-swap against the
/// version in `known` (create when absent); when someone else wrote in between, reads again and
/// writes only if `to` is still higher. Returns the watermark now stored; updates `known`.
pub async fn advance_watermark(
    state: &dyn StateStore,
    retry: &RetryPolicy,
    view: &str,
    to: &Cursor,
    by: &str,
    known: &mut WatermarkState,
) -> Result<Cursor, StateError> {
    let key = watermark_key(view);
    for _ in 0..10 {
        if let Some(current) = &known.value
            && current >= to
        {
            return Ok(current.clone());
        }
        let mode = match &known.etag {
            None => PutMode::Create,
            Some(etag) => PutMode::Update(etag.clone()),
        };
        let record = Watermark {
            view: view.to_string(),
            last_submission_id: to.clone(),
            updated_at: now_rfc3339(),
            updated_by: by.to_string(),
        };
        match retry
            .run("write watermark", || {
                state.put_json(&key, &record, mode.clone())
            })
            .await
        {
            Ok(etag) => {
                *known = WatermarkState {
                    value: Some(to.clone()),
                    etag: Some(etag),
                    updated_at: Some(SystemTime::now()),
                };
                return Ok(to.clone());
            }
            Err(StateError::AlreadyExists { .. } | StateError::PreconditionFailed { .. }) => {
                tracing::warn!(view, "watermark changed underneath this run; re-reading");
                *known = read_watermark(state, retry, view).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(StateError::Transient(format!(
        "{key}: the watermark kept changing while advancing it"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_stale_once_three_quarters_of_its_ttl_passed_without_renewal() {
        let ttl = Duration::from_secs(100);
        let now = 1_000_000;
        // Renewed 70 s ago: 30 s left, a live holder may still renew at its next chunk.
        assert!(!is_stale(now + 30_000, ttl, now));
        // Renewed 76 s ago: 24 s left, a live holder would have renewed 50 s ago.
        assert!(is_stale(now + 24_000, ttl, now));
        assert!(!is_stale(now + 100_000, ttl, now));
    }
}
