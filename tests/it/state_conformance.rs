//! The state store contract (`ferry_shared::state::conformance`) run on every implementation:
//! S3 on its real server (moto), and the in-memory store beside it, so the two tiers are seen to
//! pass the same checks. The memory store also runs the suite in the library's unit tests
//! (`make unit`), without moto.

use crate::support;

use std::sync::Arc;

use ferry_shared::state::{MemoryStateStore, S3StateStore, StateStore, conformance};

/// A fresh, empty store of each kind: a new moto bucket, a new map.
async fn stores() -> Vec<(&'static str, Arc<dyn StateStore>)> {
    support::aws_test_env();
    support::logs::init();
    let moto = &ferry_harness::shared().moto;
    let bucket = support::unique("state");
    moto.create_bucket(&bucket).await.unwrap();
    vec![
        (
            "s3",
            Arc::new(S3StateStore::new(support::moto_s3().await, bucket)),
        ),
        ("memory", Arc::new(MemoryStateStore::new())),
    ]
}

#[tokio::test]
async fn create_once_refuses_the_second_writer() {
    for (name, store) in stores().await {
        conformance::create_once_refuses_the_second_writer(name, store).await;
    }
}

#[tokio::test]
async fn compare_and_swap_needs_the_current_etag() {
    for (name, store) in stores().await {
        conformance::compare_and_swap_needs_the_current_etag(name, store).await;
    }
}

#[tokio::test]
async fn get_list_delete() {
    for (name, store) in stores().await {
        conformance::get_list_delete(name, store).await;
    }
}

#[tokio::test]
async fn pages_cover_a_prefix_once_in_order() {
    for (name, store) in stores().await {
        conformance::pages_cover_a_prefix_once_in_order(name, store).await;
    }
}

#[tokio::test]
async fn etags_follow_the_bytes() {
    for (name, store) in stores().await {
        conformance::etags_follow_the_bytes(name, store).await;
    }
}

#[tokio::test]
async fn sixteen_concurrent_creators_one_winner() {
    for (name, store) in stores().await {
        conformance::sixteen_concurrent_creators_one_winner(name, store).await;
    }
}

#[tokio::test]
async fn concurrent_compare_and_swap_loses_no_update() {
    for (name, store) in stores().await {
        conformance::concurrent_compare_and_swap_loses_no_update(name, store).await;
    }
}
