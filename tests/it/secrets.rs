//! Secrets referenced from config resolve from AWS Secrets Manager (moto here), plain or as a key
//! of a JSON secret, and a missing secret is a clear error that names the reference only.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support;
use crate::support::fault_proxy::Fault;

use ferry_shared::secret::{SecretRef, expose};

/// A Secrets Manager client on the shared moto, to put the tests' secrets in.
async fn secrets_manager() -> aws_sdk_secretsmanager::Client {
    let endpoint = ferry_shared::config::S3Endpoint {
        region: None,
        endpoint_url: Some(ferry_harness::shared().moto.endpoint.clone()),
        force_path_style: true,
    };
    aws_sdk_secretsmanager::Client::new(&ferry_shared::s3::load_aws_config(&endpoint).await)
}

#[tokio::test]
async fn secrets_manager_references_resolve_through_services() {
    support::aws_test_env();
    let moto = &ferry_harness::shared().moto;
    let bucket = support::unique("secrets");
    moto.create_bucket(&bucket).await.unwrap();
    let sm = secrets_manager().await;
    let plain = support::unique("ferry/webhook");
    let json = support::unique("ferry/sftp");
    sm.create_secret()
        .name(&plain)
        .secret_string("tok-8c1f2e")
        .send()
        .await
        .unwrap();
    sm.create_secret()
        .name(&json)
        .secret_string(r#"{"user": "ferry", "password": "pw-51d9a0"}"#)
        .send()
        .await
        .unwrap();
    let services = support::services(&serde_json::json!({
        "state": {"bucket": bucket, "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}},
    }))
    .await;
    let got = services
        .secrets
        .resolve(&SecretRef::SecretsManager {
            id: plain.clone(),
            json_key: None,
        })
        .await
        .unwrap();
    assert_eq!(expose(&got), "tok-8c1f2e");
    let got = services
        .secrets
        .resolve(&SecretRef::SecretsManager {
            id: json.clone(),
            json_key: Some("password".into()),
        })
        .await
        .unwrap();
    assert_eq!(expose(&got), "pw-51d9a0");
    let missing_key = services
        .secrets
        .resolve(&SecretRef::SecretsManager {
            id: json.clone(),
            json_key: Some("nope".into()),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        missing_key.contains("\"nope\"") && !missing_key.contains("pw-51d9a0"),
        "{missing_key}"
    );
    let absent = services
        .secrets
        .resolve(&SecretRef::SecretsManager {
            id: "ferry/absent".into(),
            json_key: None,
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(absent.contains("secretsmanager:ferry/absent"), "{absent}");
}

/// A cold start fetches the secrets of all its parts at once, not one after another: in Lambda
/// each is a Secrets Manager round trip. blob-copy here needs three (a source's SAS, an SFTP
/// password, an HTTP header), and a proxy in front of moto lets no request through until three
/// connections are open at once: fetched one by one, the first waits forever.
#[tokio::test]
async fn a_cold_start_fetches_its_secrets_at_once() {
    support::aws_test_env();
    let sm = secrets_manager().await;
    let ids: Vec<String> = ["sas", "sftp-password", "hook-auth"]
        .iter()
        .map(|name| support::unique(&format!("ferry/{name}")))
        .collect();
    for id in &ids {
        sm.create_secret()
            .name(id)
            .secret_string(format!("value of {id}"))
            .send()
            .await
            .unwrap();
    }
    let proxy = support::fault_proxy::FaultProxy::start(ferry_harness::shared().moto.port).await;
    let all_three = Arc::new(tokio::sync::Barrier::new(ids.len()));
    proxy.plan((0..ids.len()).map(|_| Fault::PassWhenOpen(all_three.clone())));
    let sm_ref = |id: &str| json!({"secrets_manager": {"id": id}});
    let services = support::services(&json!({
        "state": {"bucket": support::unique("cold"), "endpoint": {
            "endpoint_url": format!("http://127.0.0.1:{}", proxy.port), "force_path_style": true}},
        "sources": {"ct": {"type": "azure_blob", "account_url": "http://127.0.0.1:9/devstoreaccount1",
                           "sas": sm_ref(&ids[0])}},
        "destinations": {
            "partner": {"type": "sftp", "host": "127.0.0.1", "port": 9, "username": "u",
                        "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMMvSq5Vs7S+l8qmGaerwTbnaUaQmx+5s59zbcLKC7Cl",
                        "password": sm_ref(&ids[1]), "directory": "/upload"},
            "hook": {"type": "http", "url": "http://127.0.0.1:9/{name}",
                     "secret_headers": {"Authorization": sm_ref(&ids[2])}}
        },
        "routes": [{"name": "zips", "source": "ct", "container": "exports",
                    "destinations": ["partner", "hook"]}]
    }))
    .await;
    let built = tokio::time::timeout(Duration::from_secs(30), services.engine()).await;
    assert!(
        built.is_ok(),
        "blob-copy's cold start fetched its secrets one after another ({} connection(s) opened)",
        proxy.accepted()
    );
    built.unwrap().expect("blob-copy's engine");
    assert_eq!(proxy.accepted(), ids.len(), "one connection per secret");
    let mut fetched: Vec<String> = services
        .secrets
        .fetched()
        .into_iter()
        .map(|r| r.to_string())
        .collect();
    fetched.sort();
    let mut want: Vec<String> = ids
        .iter()
        .map(|id| format!("secretsmanager:{id}"))
        .collect();
    want.sort();
    assert_eq!(fetched, want, "each secret fetched once");
}
