//! The in-memory state store: the fast test tier. Engine, webhook, export and view-sync logic is
//! tested against it in milliseconds, with no moto; it passes the same [`super::conformance`]
//! suite as [`super::S3StateStore`], so a test that passes here relies on nothing S3 would not do.
//!
//! It copies S3's observable rules, not only the happy path: the ETag is the quoted hex MD5 of
//! the body (as S3 gives for a single-part put, so writing the same bytes twice keeps the ETag),
//! `Create` refuses an existing key, `Update` needs the current ETag, deletes of absent keys
//! succeed, and listings come back in key order, paged after `start_after`.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use crate::digest::Md5;
use async_trait::async_trait;
use bytes::Bytes;

use super::{Page, PutMode, StateError, StateStore, Versioned, page_of};

/// A [`StateStore`] held in a map, for tests and local experiments. Every request is also
/// recorded (see [`requests`](Self::requests)) so a test can assert what was (not) touched.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    objects: Mutex<BTreeMap<String, Versioned>>,
    requests: Mutex<Vec<String>>,
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every key held now, in key order.
    pub fn keys(&self) -> Vec<String> {
        lock(&self.objects).keys().cloned().collect()
    }

    /// Every request so far, oldest first, as `"<op> <key or prefix>"` (`get`, `put`, `delete`,
    /// `list`), including the ones that failed.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.requests).clone()
    }

    fn record(&self, op: &str, key: &str) {
        lock(&self.requests).push(format!("{op} {key}"));
    }
}

/// A poisoned lock only means another test thread panicked; the map itself is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// S3's ETag for a single-part put: the quoted hex MD5 of the body.
fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(body)))
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        self.record("get", key);
        Ok(lock(&self.objects).get(key).cloned())
    }

    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<String, StateError> {
        self.record("put", key);
        let mut objects = lock(&self.objects);
        match (&mode, objects.get(key)) {
            (PutMode::Create, Some(_)) => {
                return Err(StateError::AlreadyExists { key: key.into() });
            }
            // A missing object has no version to match: S3 refuses the write too.
            (PutMode::Update(expected), current) if current.is_none_or(|c| &c.etag != expected) => {
                return Err(StateError::PreconditionFailed { key: key.into() });
            }
            _ => {}
        }
        let etag = etag_of(&body);
        objects.insert(
            key.to_string(),
            Versioned {
                body,
                etag: etag.clone(),
            },
        );
        Ok(etag)
    }

    async fn delete(&self, key: &str) -> Result<(), StateError> {
        self.record("delete", key);
        lock(&self.objects).remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        self.record("list", prefix);
        Ok(lock(&self.objects)
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Page, StateError> {
        self.record("list", prefix);
        // Like S3's max-keys: at least one key per page, at most 1000.
        let max = max.clamp(1, 1000);
        let from = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let keys: Vec<String> = lock(&self.objects)
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .take(max + 1)
            .cloned()
            .collect();
        Ok(page_of(keys, max))
    }
}

#[cfg(test)]
mod tests {
    //! The state contract on the memory store (the S3 run is `tests/it/state_conformance.rs`).

    use std::sync::Arc;

    use super::super::conformance;
    use super::*;

    fn store() -> Arc<dyn StateStore> {
        Arc::new(MemoryStateStore::new())
    }

    #[tokio::test]
    async fn create_once_refuses_the_second_writer() {
        conformance::create_once_refuses_the_second_writer("memory", store()).await;
    }

    #[tokio::test]
    async fn compare_and_swap_needs_the_current_etag() {
        conformance::compare_and_swap_needs_the_current_etag("memory", store()).await;
    }

    #[tokio::test]
    async fn get_list_delete() {
        conformance::get_list_delete("memory", store()).await;
    }

    #[tokio::test]
    async fn pages_cover_a_prefix_once_in_order() {
        conformance::pages_cover_a_prefix_once_in_order("memory", store()).await;
    }

    #[tokio::test]
    async fn etags_follow_the_bytes() {
        conformance::etags_follow_the_bytes("memory", store()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sixteen_concurrent_creators_one_winner() {
        conformance::sixteen_concurrent_creators_one_winner("memory", store()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_compare_and_swap_loses_no_update() {
        conformance::concurrent_compare_and_swap_loses_no_update("memory", store()).await;
    }

    #[tokio::test]
    async fn requests_are_recorded_in_order() {
        let store = MemoryStateStore::new();
        store
            .put("a/1", Bytes::from_static(b"x"), PutMode::Create)
            .await
            .unwrap();
        let _ = store.get("a/2").await.unwrap();
        store.list("a/").await.unwrap();
        store.delete("a/1").await.unwrap();
        assert_eq!(
            store.requests(),
            vec!["put a/1", "get a/2", "list a/", "delete a/1"]
        );
        assert!(store.keys().is_empty());
    }
}
