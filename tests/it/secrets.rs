//! Secrets referenced from config resolve from AWS Secrets Manager (moto here), plain or as a key
//! of a JSON secret, and a missing secret is a clear error that names the reference only.

use crate::support;

use ferry_shared::secret::{SecretRef, expose};

#[tokio::test]
async fn secrets_manager_references_resolve_through_services() {
    support::aws_test_env();
    let moto = &ferry_harness::shared().moto;
    let bucket = support::unique("secrets");
    moto.create_bucket(&bucket).await.unwrap();
    let endpoint = ferry_shared::config::S3Endpoint {
        region: None,
        endpoint_url: Some(moto.endpoint.clone()),
        force_path_style: true,
    };
    let sm =
        aws_sdk_secretsmanager::Client::new(&ferry_shared::s3::load_aws_config(&endpoint).await);
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
