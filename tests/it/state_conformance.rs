//! The state store contract, run against every implementation on its real server (S3 on moto):
//! create-once, compare-and-swap, and their behaviour under concurrent writers.

use crate::support;

use std::sync::Arc;

use bytes::Bytes;
use ferry_shared::state::{PutMode, S3StateStore, StateError, StateStore, StateStoreExt};

async fn stores() -> Vec<(&'static str, Arc<dyn StateStore>)> {
    support::aws_test_env();
    support::logs::init();
    let moto = &ferry_harness::shared().moto;
    let bucket = support::unique("state");
    moto.create_bucket(&bucket).await.unwrap();
    vec![(
        "s3",
        Arc::new(S3StateStore::new(support::moto_s3().await, bucket)),
    )]
}

#[tokio::test]
async fn create_once_refuses_the_second_writer() {
    for (name, store) in stores().await {
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
        assert_eq!(got.etag, etag);
    }
}

#[tokio::test]
async fn compare_and_swap_needs_the_current_etag() {
    for (name, store) in stores().await {
        let v1 = store
            .put(
                "watermarks/v.json",
                Bytes::from_static(b"1"),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        let v2 = store
            .put(
                "watermarks/v.json",
                Bytes::from_static(b"2"),
                PutMode::Update(v1.clone()),
            )
            .await
            .unwrap();
        assert_ne!(v1, v2);
        let stale = store
            .put(
                "watermarks/v.json",
                Bytes::from_static(b"3"),
                PutMode::Update(v1),
            )
            .await;
        assert!(
            matches!(stale, Err(StateError::PreconditionFailed { .. })),
            "{name}: {stale:?}"
        );
        assert_eq!(
            store
                .get("watermarks/v.json")
                .await
                .unwrap()
                .unwrap()
                .body
                .as_ref(),
            b"2"
        );
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
    }
}

#[tokio::test]
async fn get_list_delete() {
    for (name, store) in stores().await {
        assert!(
            store.get("nothing/here.json").await.unwrap().is_none(),
            "{name}"
        );
        for k in ["done/j/b.json", "done/j/a.json", "done/k/a.json"] {
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
        assert_eq!(store.list("done/j/").await.unwrap(), vec!["done/j/b.json"]);
        let (v, _): (serde_json::Value, String) =
            store.get_json("done/k/a.json").await.unwrap().unwrap();
        assert_eq!(v, serde_json::json!({}));
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
}

#[tokio::test]
async fn sixteen_concurrent_creators_one_winner() {
    for (name, store) in stores().await {
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
}

#[tokio::test]
async fn concurrent_compare_and_swap_loses_no_update() {
    for (name, store) in stores().await {
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
                            let (n, etag): (u64, String) =
                                store.get_json(key).await.unwrap().unwrap();
                            match store.put_json(key, &(n + 1), PutMode::Update(etag)).await {
                                Ok(_) => break,
                                Err(StateError::PreconditionFailed { .. })
                                | Err(StateError::Transient(_)) => continue,
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
}
