//! The state store contract, as functions every backend runs: create-once, compare-and-swap,
//! reads, listings (whole and paged), deletes, and their behaviour under concurrent writers.
//!
//! It lives in the library, not in `tests/`, so that both tiers run the very same checks: this
//! crate's unit tests run it on [`super::MemoryStateStore`] (no component), and
//! `tests/it/state_conformance.rs` runs it on [`super::S3StateStore`] against moto. A new backend
//! adds one call per function here, in its own tests. It is plain code with no dependency beyond
//! the crate's own (compiled always, a few KB, never called by the functions), so no feature
//! flag has to be remembered by whoever runs it.
//!
//! Each function takes a fresh, empty store and a name for the assertion messages; it panics
//! (like `assert!`) when the backend breaks the contract.

use std::sync::Arc;

use bytes::Bytes;

use super::{PutMode, StateError, StateStore, StateStoreExt};

/// A second `Create` of a key fails with `AlreadyExists` and the first writer's value stays.
pub async fn create_once_refuses_the_second_writer(name: &str, store: Arc<dyn StateStore>) {
    let etag = store
        .put("leases/a.json", Bytes::from_static(b"1"), PutMode::Create)
        .await
        .unwrap();
    assert!(!etag.is_empty(), "{name}: create returns an etag");
    let second = store
        .put("leases/a.json", Bytes::from_static(b"2"), PutMode::Create)
        .await;
    assert!(
        matches!(second, Err(StateError::AlreadyExists { .. })),
        "{name}: {second:?}"
    );
    let got = store.get("leases/a.json").await.unwrap().unwrap();
    assert_eq!(
        got.body.as_ref(),
        b"1",
        "{name}: first writer's value stays"
    );
    assert_eq!(got.etag, etag, "{name}: get returns the etag put returned");
}

/// `Update` succeeds with the current ETag only; a stale ETag is `PreconditionFailed` and
/// changes nothing; an `Update` of a missing object fails.
pub async fn compare_and_swap_needs_the_current_etag(name: &str, store: Arc<dyn StateStore>) {
    let key = "watermarks/v.json";
    let v1 = store
        .put(key, Bytes::from_static(b"1"), PutMode::Overwrite)
        .await
        .unwrap();
    let v2 = store
        .put(key, Bytes::from_static(b"2"), PutMode::Update(v1.clone()))
        .await
        .unwrap();
    assert_ne!(v1, v2, "{name}: new bytes, new etag");
    let stale = store
        .put(key, Bytes::from_static(b"3"), PutMode::Update(v1))
        .await;
    assert!(
        matches!(stale, Err(StateError::PreconditionFailed { .. })),
        "{name}: {stale:?}"
    );
    let got = store.get(key).await.unwrap().unwrap();
    assert_eq!(
        got.body.as_ref(),
        b"2",
        "{name}: the stale write left no trace"
    );
    assert_eq!(got.etag, v2, "{name}");
    let missing = store
        .put(
            "watermarks/none.json",
            Bytes::from_static(b"x"),
            PutMode::Update("\"nope\"".into()),
        )
        .await;
    assert!(
        missing.is_err(),
        "{name}: CAS on a missing object must fail"
    );
    assert!(
        store.get("watermarks/none.json").await.unwrap().is_none(),
        "{name}: and must not create it"
    );
}

/// Absent reads are `None`; listings are in key order and bounded by the prefix; deleting twice
/// is fine; the JSON helpers round-trip and report a corrupt object as `Corrupt`.
pub async fn get_list_delete(name: &str, store: Arc<dyn StateStore>) {
    assert!(
        store.get("nothing/here.json").await.unwrap().is_none(),
        "{name}"
    );
    for k in [
        "done/j/b.json",
        "done/j/a.json",
        "done/k/a.json",
        "done/i.json",
    ] {
        store
            .put(k, Bytes::from_static(b"{}"), PutMode::Overwrite)
            .await
            .unwrap();
    }
    assert_eq!(
        store.list("done/j/").await.unwrap(),
        vec!["done/j/a.json", "done/j/b.json"],
        "{name}"
    );
    store.delete("done/j/a.json").await.unwrap();
    store
        .delete("done/j/a.json")
        .await
        .expect("deleting an absent object is fine");
    assert_eq!(
        store.list("done/j/").await.unwrap(),
        vec!["done/j/b.json"],
        "{name}"
    );
    assert!(store.list("none/").await.unwrap().is_empty(), "{name}");
    let (v, _): (serde_json::Value, String) =
        store.get_json("done/k/a.json").await.unwrap().unwrap();
    assert_eq!(v, serde_json::json!({}), "{name}");
    store
        .put(
            "bad.json",
            Bytes::from_static(b"{not json"),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let corrupt = store.get_json::<serde_json::Value>("bad.json").await;
    assert!(matches!(corrupt, Err(StateError::Corrupt { .. })), "{name}");
}

/// `list_page` walks a prefix page by page: every key once, in order, `next` only while more
/// remain, and nothing from a neighbouring prefix.
pub async fn pages_cover_a_prefix_once_in_order(name: &str, store: Arc<dyn StateStore>) {
    let mut expected = Vec::new();
    for i in 0..7 {
        let key = format!("jobs/p/{i:02}.json");
        store
            .put(&key, Bytes::from_static(b"{}"), PutMode::Create)
            .await
            .unwrap();
        expected.push(key);
    }
    for other in ["jobs/o/x.json", "jobs/q/x.json", "jobs/p.json"] {
        store
            .put(other, Bytes::from_static(b"{}"), PutMode::Create)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_page("jobs/p/", after.as_deref(), 3)
            .await
            .unwrap();
        pages += 1;
        assert!(page.keys.len() <= 3, "{name}: page of {:?}", page.keys);
        seen.extend(page.keys);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(pages < 10, "{name}: paging does not end");
    }
    assert_eq!(seen, expected, "{name}: every key once, in order");
    assert_eq!(pages, 3, "{name}: 7 keys in pages of 3");
    let tail = store
        .list_page("jobs/p/", Some("jobs/p/05.json"), 3)
        .await
        .unwrap();
    assert_eq!(tail.keys, vec!["jobs/p/06.json"], "{name}");
    assert_eq!(tail.next, None, "{name}");
}

/// The ETag is the object's version: `get` returns what the last `put` returned, and a write of
/// other bytes moves it, so a reader's ETag no longer matches.
pub async fn etags_follow_the_bytes(name: &str, store: Arc<dyn StateStore>) {
    let key = "leases/v.json";
    let first = store
        .put(key, Bytes::from_static(b"one"), PutMode::Create)
        .await
        .unwrap();
    let read = store.get(key).await.unwrap().unwrap();
    assert_eq!(read.etag, first, "{name}");
    let second = store
        .put(key, Bytes::from_static(b"two"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_ne!(first, second, "{name}: an overwrite is a new version");
    let late = store
        .put(
            key,
            Bytes::from_static(b"three"),
            PutMode::Update(read.etag),
        )
        .await;
    assert!(
        matches!(late, Err(StateError::PreconditionFailed { .. })),
        "{name}: {late:?}"
    );
    store.delete(key).await.unwrap();
    assert!(store.get(key).await.unwrap().is_none(), "{name}");
    store
        .put(key, Bytes::from_static(b"again"), PutMode::Create)
        .await
        .expect("a deleted key can be created again");
}

/// Sixteen writers race to create the same key, five times: exactly one wins each round.
pub async fn sixteen_concurrent_creators_one_winner(name: &str, store: Arc<dyn StateStore>) {
    for round in 0..5 {
        let key = format!("jobs/race/{round}.json");
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    store
                        .put(&key, Bytes::from(i.to_string()), PutMode::Create)
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => winners += 1,
                Err(StateError::AlreadyExists { .. }) => {}
                Err(e) => panic!("{name}: unexpected {e}"),
            }
        }
        assert_eq!(winners, 1, "{name}: round {round}");
    }
}

/// Eight writers increment one counter five times each by read + compare-and-swap (retrying on
/// `PreconditionFailed`): the counter ends at exactly 40.
pub async fn concurrent_compare_and_swap_loses_no_update(name: &str, store: Arc<dyn StateStore>) {
    let key = "watermarks/counter.json";
    store
        .put_json(key, &0u64, PutMode::Overwrite)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    loop {
                        let (n, etag): (u64, String) = store.get_json(key).await.unwrap().unwrap();
                        match store.put_json(key, &(n + 1), PutMode::Update(etag)).await {
                            Ok(_) => break,
                            Err(StateError::PreconditionFailed { .. })
                            | Err(StateError::Transient(_)) => tokio::task::yield_now().await,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (n, _): (u64, String) = store.get_json(key).await.unwrap().unwrap();
    assert_eq!(n, 40, "{name}: every increment applied exactly once");
}
