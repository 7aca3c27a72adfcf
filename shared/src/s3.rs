//! Building S3 clients (state store and S3 destinations) from an `S3Endpoint`, once per cold start.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::timeout::TimeoutConfig;

use crate::config::S3Endpoint;

/// Loads the shared AWS config (credentials chain, region) with ferry's timeouts and trust roots
/// (the process's one SDK HTTPS client, [`crate::http_client::aws_http_client`]).
pub async fn load_aws_config(endpoint: &S3Endpoint) -> aws_config::SdkConfig {
    aws_config_in(endpoint, |name| std::env::var(name).ok()).await
}

/// [`load_aws_config`] in an environment read through `var`.
async fn aws_config_in(
    endpoint: &S3Endpoint,
    var: impl Fn(&str) -> Option<String>,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(crate::http_client::aws_http_client())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(60))
                .operation_attempt_timeout(Duration::from_secs(120))
                .build(),
        );
    let region = endpoint
        .region
        .clone()
        .or_else(|| var("AWS_REGION"))
        .unwrap_or_else(|| "us-east-1".to_string());
    loader = loader.region(aws_config::Region::new(region));
    if let Some(url) = &endpoint.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if keys_in_environment(&var) {
        loader = loader.credentials_provider(EnvironmentVariableCredentialsProvider::new());
    }
    loader.load().await
}

/// Whether the default credentials chain would take its keys from the environment, the first
/// place it looks: as in every Lambda function, and in ferry's tests and local runs against moto.
/// Then those keys are used directly, as the chain would, without building the chain's other
/// providers (a web-identity STS client, IMDS and ECS clients, profile files) for each AWS config
/// loaded: about 4 % of blob-copy's cold start for each. Elsewhere (a profile, SSO, an EC2
/// instance role) the default chain is used.
fn keys_in_environment(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name| var(name).is_some_and(|v| !v.trim().is_empty());
    set("AWS_ACCESS_KEY_ID") && (set("AWS_SECRET_ACCESS_KEY") || set("SECRET_ACCESS_KEY"))
}

/// An S3 client for `endpoint`. The SDK retries throttling and 5xx itself (standard mode).
pub async fn client(endpoint: &S3Endpoint) -> aws_sdk_s3::Client {
    client_from(&load_aws_config(endpoint).await, endpoint)
}

/// An S3 client from an already loaded AWS config (shared with other clients of the same endpoint).
pub fn client_from(shared: &aws_config::SdkConfig, endpoint: &S3Endpoint) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(shared)
        .force_path_style(endpoint.force_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// What an S3 SDK error means for us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Failure {
    /// 412 PreconditionFailed: an `If-Match`/`If-None-Match` condition did not hold.
    PreconditionFailed,
    /// 404 / NoSuchKey.
    NotFound,
    /// 409 ConditionalRequestConflict, 5xx, throttling, timeouts, connection errors.
    Transient(String),
    /// Anything else (403, 400...).
    Permanent(String),
}

/// Classifies an SDK error by its code and HTTP status.
pub fn classify<E>(
    err: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> S3Failure
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_s3::error::SdkError;
    let mut text = aws_sdk_s3::error::DisplayErrorContext(err).to_string();
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let status = Some(service.raw().status().as_u16());
            // The service's own words, not the SDK's dump of the whole response.
            text = format!(
                "{}: {} (HTTP {})",
                if code.is_empty() { "error" } else { code },
                service.err().message().unwrap_or("no message"),
                service.raw().status().as_u16()
            );
            match (code, status) {
                ("PreconditionFailed", _) | (_, Some(412)) => S3Failure::PreconditionFailed,
                ("NoSuchKey" | "NotFound" | "NoSuchUpload", _) | (_, Some(404)) => {
                    S3Failure::NotFound
                }
                (
                    "ConditionalRequestConflict" | "SlowDown" | "InternalError" | "RequestTimeout",
                    _,
                ) => S3Failure::Transient(text),
                (_, Some(s)) if crate::retry::status_is_retryable(s) || s == 409 => {
                    S3Failure::Transient(text)
                }
                _ => S3Failure::Permanent(text),
            }
        }
        SdkError::ConstructionFailure(_) => S3Failure::Permanent(text),
        _ => S3Failure::Transient(text),
    }
}

/// `ferry check` for a bucket (state, S3 destinations, S3 sinks): HeadBucket, which needs
/// `s3:ListBucket` on it. Tells a missing bucket from refused credentials.
pub async fn probe_bucket(client: &aws_sdk_s3::Client, bucket: &str) -> crate::probe::ProbeResult {
    use crate::probe::Problem;
    let Err(e) = client.head_bucket().bucket(bucket).send().await else {
        return Ok(());
    };
    let status = e.raw_response().map(|r| r.status().as_u16());
    let text = match classify(&e) {
        S3Failure::Transient(t) | S3Failure::Permanent(t) => t,
        S3Failure::NotFound => "not found".into(),
        S3Failure::PreconditionFailed => "precondition failed".into(),
    };
    Err(match status {
        Some(404) => Problem::new(
            format!("bucket {bucket:?} does not exist"),
            "create the bucket (Terraform does for the state bucket) or correct the bucket name and endpoint",
        ),
        Some(401 | 403) => Problem::new(
            // HeadBucket answers carry no body: the status is all there is to say.
            format!("access to bucket {bucket:?} denied (HTTP 403)"),
            "grant the credentials ferry runs with s3:ListBucket on the bucket and s3:GetObject/PutObject on its keys (the function roles Terraform creates do)",
        ),
        _ => Problem::new(
            format!("cannot reach bucket {bucket:?}: {text}"),
            "check the endpoint and region, and that this machine can reach S3",
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every AWS config carries the process's one HTTPS client (crate::tls), so no SDK client
    /// falls back to the SDK's default, which reads the platform's roots again.
    #[tokio::test]
    async fn an_aws_config_carries_the_process_http_client() {
        let config = load_aws_config(&S3Endpoint::default()).await;
        assert!(config.http_client().is_some());
    }

    /// The keys are taken from the environment exactly when the default chain's first provider
    /// would take them: an access key id and a secret key, neither blank.
    #[tokio::test]
    async fn keys_are_taken_from_the_environment_only_when_the_chain_would_take_them() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        // And the config loaded in such an environment holds the environment's provider, not
        // the default chain.
        let keys = env(&[
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]);
        let provider = |config: aws_config::SdkConfig| {
            format!("{:?}", config.credentials_provider().expect("a provider"))
        };
        let taken = provider(aws_config_in(&S3Endpoint::default(), keys).await);
        assert!(
            taken.starts_with("SharedCredentialsProvider(EnvironmentVariableCredentialsProvider"),
            "{taken}"
        );
        let chain =
            provider(aws_config_in(&S3Endpoint::default(), env(&[("AWS_PROFILE", "dev")])).await);
        assert!(
            chain.starts_with("SharedCredentialsProvider(DefaultCredentialsChain"),
            "{chain}"
        );
        for (pairs, taken) in [
            (
                &[
                    ("AWS_ACCESS_KEY_ID", "AKIA"),
                    ("AWS_SECRET_ACCESS_KEY", "s"),
                ][..],
                true,
            ),
            (
                &[("AWS_ACCESS_KEY_ID", "AKIA"), ("SECRET_ACCESS_KEY", "s")],
                true,
            ),
            (&[("AWS_ACCESS_KEY_ID", "AKIA")], false),
            (&[("AWS_SECRET_ACCESS_KEY", "s")], false),
            (
                &[("AWS_ACCESS_KEY_ID", " "), ("AWS_SECRET_ACCESS_KEY", "s")],
                false,
            ),
            (
                &[("AWS_ACCESS_KEY_ID", "AKIA"), ("AWS_SECRET_ACCESS_KEY", "")],
                false,
            ),
            (&[("AWS_PROFILE", "dev")], false),
            (&[], false),
        ] {
            assert_eq!(keys_in_environment(env(pairs)), taken, "{pairs:?}");
        }
    }
}
