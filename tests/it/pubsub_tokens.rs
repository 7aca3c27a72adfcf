//! The pub/sub export's token handling on real components where they exist (moto for the stored
//! tokens, Azurite for refused SAS, openssl to check signatures) and fakes where they do not
//! (Azure AD, the vendor's token service): the certificate client assertion, compare-and-swap
//! between concurrent refreshers, single-flight refresh with a storm limit, refresh ahead of the
//! SAS expiry, and clear errors without secrets.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_shared::azure_ad::{AadClient, AadCredential};
use ferry_shared::layout::token_key;
use ferry_shared::retry::{RetryPolicy, Retryable};
use ferry_shared::secret::expose;
use ferry_shared::services::Services;
use ferry_shared::source::{SourceError, SourceObject};
use ferry_shared::state::StateStoreExt;
use ferry_shared::token::ExportTokens;
use ferry_shared::token::cache::{CacheSettings, RefreshOutcome, TokenCache};
use ferry_shared::token::service::TokenService as TokenServiceClient;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use support::pubsub::{Aad, TokenService};

const CLIENT_ID: &str = "0f3a9c2e-ferry-token-client";
const CLIENT_SECRET: &str = "aad-secret-9Lq~Zr3x7WmK2vB";
const INTEGRATION: &str = "ferry-file-export";
const SOURCE: &str = "egretail";
const SB: &str = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=c2J0ZXN0a2V5c2J0ZXN0a2V5MTIzNDU2Nzg5MA=;EntityPath=file-export";

/// Fakes, a container with a stored access policy, a state bucket, and the config over them.
struct Tokens {
    aad: Aad,
    service: TokenService,
    container: String,
    state_bucket: String,
    sigs: std::sync::Mutex<Vec<String>>,
}

impl Tokens {
    async fn new(secret: Option<&str>) -> Self {
        let container = support::container_with_policy("tokens", "gen-1", "rl").await;
        let c = ferry_harness::shared();
        let admin = c.azurite.admin();
        admin.put_blob(&container, "a.xml", b"<a/>").await.unwrap();
        let state_bucket = support::unique("state");
        c.moto.create_bucket(&state_bucket).await.unwrap();
        let aad = Aad::start(CLIENT_ID, secret).await;
        let service = TokenService::start(&aad, INTEGRATION).await;
        let t = Self {
            aad,
            service,
            container,
            state_bucket,
            sigs: Default::default(),
        };
        t.answer_policy("gen-1");
        t
    }

    fn base(&self) -> String {
        format!(
            "{}/{}",
            ferry_harness::shared().azurite.account_url,
            self.container
        )
    }

    fn answer_sas(&self, sas: String) {
        let sig = sas.split("sig=").nth(1).unwrap().to_string();
        let mut sigs = self.sigs.lock().unwrap();
        sigs.push(
            percent_encoding::percent_decode_str(&sig)
                .decode_utf8_lossy()
                .into_owned(),
        );
        sigs.push(sig);
        self.service
            .answer(SB, "ferry-tenant-42", &[format!("{}?{sas}", self.base())]);
    }

    fn answer_policy(&self, policy: &str) {
        let sas = ferry_harness::shared()
            .azurite
            .admin()
            .container_sas_for_policy(&self.container, policy);
        self.answer_sas(sas);
    }

    fn config(&self, aad: Value, extra: Value) -> Value {
        let c = ferry_harness::shared();
        let mut source = json!({
            "type": "pubsub_export",
            "tenant_service_url": self.service.server.uri(),
            "integration_name": INTEGRATION,
            "aad": aad,
            "read_timeout_secs": 5,
        });
        for (k, v) in extra.as_object().unwrap() {
            source[k] = v.clone();
        }
        json!({
            "state": {"bucket": self.state_bucket, "endpoint": {"endpoint_url": c.moto.endpoint, "force_path_style": true}},
            "sources": {SOURCE: source},
            "transfer": {"retries": 2, "initial_backoff_ms": 10, "max_backoff_ms": 100}
        })
    }

    fn secret_aad(&self, secret: &str) -> Value {
        json!({"authority_url": self.aad.server.uri(), "tenant_id": self.aad.tenant, "client_id": CLIENT_ID,
               "scope": "api://eg-tenant-service/.default", "client_secret": support::file_secret(secret)})
    }

    async fn services(&self, extra: Value) -> Services {
        support::services(&self.config(self.secret_aad(CLIENT_SECRET), extra)).await
    }

    async fn stored(&self, services: &Services) -> Option<ExportTokens> {
        services
            .state
            .get_json::<ExportTokens>(&token_key(SOURCE))
            .await
            .unwrap()
            .map(|(t, _)| t)
    }

    fn assert_logs_clean(&self, more: &[&str]) {
        let mut secrets: Vec<String> = vec![
            CLIENT_SECRET.into(),
            SB.split("SharedAccessKey=")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .into(),
        ];
        secrets.extend(self.aad.tokens());
        secrets.extend(self.aad.assertions());
        secrets.extend(self.sigs.lock().unwrap().iter().cloned());
        secrets.extend(more.iter().map(|s| s.to_string()));
        support::logs::assert_no_secrets(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

/// token-refresh's cold start: its caches, built once like `main` does.
async fn cold_start(services: &Services) -> Vec<Arc<TokenCache>> {
    services.token_caches().await.expect("token caches build")
}

async fn refresh(caches: &[Arc<TokenCache>]) -> Result<Value, String> {
    token_refresh::handle(caches, LambdaEvent::new(json!({}), Context::default()))
        .await
        .map(|v| v["sources"][SOURCE].clone())
        .map_err(|e| e.to_string())
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn certificate_client_assertion_is_rs256_with_x5t_and_verifies_with_openssl() {
    let t = Tokens::new(None).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-subj",
            "/CN=ferry-test",
            "-days",
            "2",
        ],
    );
    openssl(
        d,
        &[
            "rsa",
            "-in",
            "key.pem",
            "-traditional",
            "-out",
            "key-pkcs1.pem",
        ],
    );
    openssl(
        d,
        &[
            "x509", "-in", "cert.pem", "-pubkey", "-noout", "-out", "pub.pem",
        ],
    );
    let cert = std::fs::read_to_string(d.join("cert.pem")).unwrap();
    let key = std::fs::read_to_string(d.join("key.pem")).unwrap();
    assert!(key.contains("BEGIN PRIVATE KEY"), "PKCS#8 from openssl 3");
    let fingerprint = openssl(
        d,
        &["x509", "-in", "cert.pem", "-noout", "-fingerprint", "-sha1"],
    );
    let thumbprint = hex::decode(
        fingerprint
            .trim()
            .split('=')
            .nth(1)
            .unwrap()
            .replace(':', ""),
    )
    .unwrap();
    let want_x5t = URL_SAFE_NO_PAD.encode(thumbprint);

    // One PEM bundle (certificate + PKCS#8 key), and certificate with a separate PKCS#1 key.
    let bundle = format!("{cert}{key}");
    let pkcs1 = std::fs::read_to_string(d.join("key-pkcs1.pem")).unwrap();
    assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"));
    let aad_base = |extra: Value| {
        let mut a = json!({"authority_url": t.aad.server.uri(), "tenant_id": t.aad.tenant, "client_id": CLIENT_ID,
                           "scope": "api://eg-tenant-service/.default"});
        for (k, v) in extra.as_object().unwrap() {
            a[k] = v.clone();
        }
        a
    };
    let forms = [
        aad_base(json!({"certificate": support::file_secret(&bundle)})),
        aad_base(
            json!({"certificate": support::file_secret(&cert), "private_key": support::file_secret(&pkcs1)}),
        ),
    ];
    for (i, aad) in forms.into_iter().enumerate() {
        let services =
            support::services(&t.config(aad, json!({"refresh_ahead_secs": 999_999}))).await;
        let services = cold_start(&services).await;
        // Two refreshes (always due with this refresh_ahead), one AAD token (cached).
        for _ in 0..2 {
            assert_eq!(refresh(&services).await.unwrap()["status"], "refreshed");
        }
        assert_eq!(
            t.aad.calls(),
            i + 1,
            "the AAD token is cached until shortly before expires_in"
        );
    }
    assert_eq!(t.service.calls(), 4);

    let audience = format!("{}/{}/oauth2/v2.0/token", t.aad.server.uri(), t.aad.tenant);
    let assertions = t.aad.assertions();
    assert_eq!(assertions.len(), 2);
    for (i, assertion) in assertions.iter().enumerate() {
        let parts: Vec<&str> = assertion.split('.').collect();
        let decode = |p: &str| -> Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
        };
        let (header, claims) = (decode(parts[0]), decode(parts[1]));
        assert_eq!(
            header,
            json!({"alg": "RS256", "typ": "JWT", "x5t": want_x5t})
        );
        assert_eq!(claims["aud"], audience);
        assert_eq!(
            (&claims["iss"], &claims["sub"]),
            (&json!(CLIENT_ID), &json!(CLIENT_ID))
        );
        let now = ferry_shared::clock::now_ms() / 1000;
        let (nbf, exp) = (
            claims["nbf"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert!(nbf <= now && now < exp && exp - nbf == 600, "{claims}");
        assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
        // Independent check of the signature with openssl and the certificate's public key.
        std::fs::write(d.join("input"), format!("{}.{}", parts[0], parts[1])).unwrap();
        std::fs::write(d.join("sig"), URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let verified = openssl(
            d,
            &[
                "dgst",
                "-sha256",
                "-verify",
                "pub.pem",
                "-signature",
                "sig",
                "input",
            ],
        );
        assert_eq!(verified.trim(), "Verified OK", "assertion {i}");
        std::fs::write(d.join("input"), format!("{}.{}x", parts[0], parts[1])).unwrap();
        let tampered = Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                "pub.pem",
                "-signature",
                "sig",
                "input",
            ])
            .current_dir(d)
            .output()
            .unwrap();
        assert!(!tampered.status.success(), "the check can fail");
    }
    let key_body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    t.assert_logs_clean(&key_body);
}

#[tokio::test]
async fn concurrent_refreshers_never_replace_newer_tokens_with_older_ones() {
    let t = Tokens::new(Some(CLIENT_SECRET)).await;
    let b = t.services(json!({})).await;
    let b_caches = cold_start(&b).await;
    // Refresher A: its write reaches the store 1.5 s after it got its (older) tokens.
    let slow = Arc::new(support::SlowPuts {
        inner: b.state.clone(),
        prefix: "tokens/".into(),
        delay: Duration::from_millis(1500),
        before: true,
        fail: false,
        count: 1.into(),
    });
    let retry = RetryPolicy {
        retries: 2,
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
        ..RetryPolicy::default()
    };
    let http = reqwest::Client::new();
    let aad = AadClient::new(
        http.clone(),
        &t.aad.server.uri(),
        &t.aad.tenant,
        CLIENT_ID,
        "api://eg-tenant-service/.default",
        AadCredential::Secret(CLIENT_SECRET.to_string().into()),
        retry,
    );
    let issuer = TokenServiceClient::new(
        http,
        &t.service.server.uri(),
        INTEGRATION,
        aad,
        Duration::from_secs(3600),
        retry,
    );
    let settings = CacheSettings {
        refresh_ahead: Duration::from_secs(600),
        min_refresh_interval: Duration::from_secs(30),
    };
    let a = TokenCache::new(SOURCE, slow, Arc::new(issuer), retry, settings);
    let admin = ferry_harness::shared().azurite.admin();
    let older = admin.container_sas(
        &t.container,
        "rl",
        SystemTime::now() + Duration::from_secs(7200),
    );
    t.answer_sas(older.clone());
    let run_a = a.refresh_if_due();
    let run_b = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        t.answer_policy("gen-1");
        refresh(&b_caches).await.unwrap()
    };
    let (outcome_a, outcome_b) = tokio::join!(run_a, run_b);
    assert_eq!(outcome_b["status"], "refreshed");
    let stored = t.stored(&b).await.expect("tokens stored");
    let newer_sas = admin.container_sas_for_policy(&t.container, "gen-1");
    assert_eq!(
        expose(&stored.blob_bases[0].sas),
        newer_sas,
        "the newer tokens stay stored"
    );
    assert_eq!(stored.generation, 1, "A did not write over them");
    assert!(matches!(
        outcome_a.unwrap(),
        RefreshOutcome::Refreshed { generation: 1, .. }
    ));
    assert_eq!(
        expose(&a.get().await.unwrap().blob_bases[0].sas),
        newer_sas,
        "A adopted the newer tokens"
    );
    // A later refresh replaces them by compare-and-swap, bumping the generation.
    t.answer_policy("gen-1");
    let c = t.services(json!({"refresh_ahead_secs": 999_999})).await;
    assert_eq!(
        refresh(&cold_start(&c).await).await.unwrap()["generation"],
        2
    );
    assert_eq!(t.stored(&c).await.unwrap().generation, 2);
    t.assert_logs_clean(&[]);
}

#[tokio::test]
async fn refused_reads_refresh_once_and_refresh_storms_are_limited() {
    let t = Tokens::new(Some(CLIENT_SECRET)).await;
    let services = t.services(json!({"min_refresh_interval_secs": 2})).await;
    let state = services.state_for(ferry_shared::layout::Function::BlobCopy);
    let source = services.source(SOURCE, &state).await.unwrap();
    let object = SourceObject {
        container: t.container.clone(),
        name: "a.xml".into(),
        size: 0,
        etag: String::new(),
        content_md5: None,
        content_type: None,
        url: Some(format!("{}/a.xml", t.base())),
    };
    let resolved = source.resolve(&object).await.unwrap();
    assert_eq!((resolved.size, resolved.etag.is_empty()), (4, false));
    assert_eq!(t.service.calls(), 1);
    let admin = ferry_harness::shared().azurite.admin();
    let expiry = SystemTime::now() + Duration::from_secs(3600);
    // Rotation: gen-1 revoked, the token service hands out gen-2. 20 reads refused at once
    // cause one refresh, and all 20 go through with the new tokens.
    admin
        .set_access_policy(&t.container, "gen-2", "rl", expiry)
        .await
        .unwrap();
    t.answer_policy("gen-2");
    admin
        .remove_access_policy(&t.container, "gen-1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    t.service.delay(Duration::from_millis(300));
    let wave = || futures_util::future::join_all((0..20).map(|_| source.resolve(&object)));
    for r in wave().await {
        assert_eq!(r.unwrap().size, 4);
    }
    assert_eq!(t.service.calls(), 2, "20 refused reads, one refresh");
    // gen-2 is revoked too and the token service keeps handing it out: the fresh tokens are
    // refused, and they are not refreshed again within the minimum interval. That is a
    // retryable failure whose retry-after is the rest of the interval (a job retries then),
    // never a final "access denied" (which would dead-letter the job).
    admin
        .remove_access_policy(&t.container, "gen-2")
        .await
        .unwrap();
    for r in wave().await {
        let e = r.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(e.to_string().contains("minimum interval"), "{e}");
        let after = e.retry_after().expect("a retry-after");
        assert!(
            after > Duration::ZERO && after <= Duration::from_millis(2005),
            "the rest of the 2 s interval: {after:?}"
        );
        assert!(!matches!(e, SourceError::AccessDenied { .. }), "{e}");
    }
    assert_eq!(t.service.calls(), 2, "storm limited");
    // Once the interval has passed, a refusal refreshes again (and gen-3 works).
    admin
        .set_access_policy(&t.container, "gen-3", "rl", expiry)
        .await
        .unwrap();
    t.answer_policy("gen-3");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for r in wave().await {
        assert_eq!(r.unwrap().size, 4);
    }
    assert_eq!(t.service.calls(), 3);
    assert!(support::logs::text().contains("not refreshing again"));
    t.assert_logs_clean(&[]);
}

#[tokio::test]
async fn token_refresh_refreshes_ahead_of_the_sas_expiry_only() {
    let t = Tokens::new(Some(CLIENT_SECRET)).await;
    let admin = ferry_harness::shared().azurite.admin();
    let soon = admin.container_sas(
        &t.container,
        "rl",
        SystemTime::now() + Duration::from_secs(300),
    );
    t.answer_sas(soon);
    let services = cold_start(&t.services(json!({"refresh_ahead_secs": 600})).await).await;
    let first = refresh(&services).await.unwrap();
    assert_eq!(first["status"], "refreshed");
    let left = first["expires_in_secs"].as_u64().unwrap();
    assert!(
        (290..=300).contains(&left),
        "expiry from the SAS se: {left}"
    );
    assert_eq!(
        refresh(&services).await.unwrap()["status"],
        "refreshed",
        "still within refresh_ahead"
    );
    let later = admin.container_sas(
        &t.container,
        "rl",
        SystemTime::now() + Duration::from_secs(7200),
    );
    t.answer_sas(later);
    assert_eq!(refresh(&services).await.unwrap()["status"], "refreshed");
    let idle = refresh(&services).await.unwrap();
    assert_eq!(idle["status"], "not_due", "{idle}");
    assert_eq!(idle["generation"], 3);
    assert_eq!(t.service.calls(), 3);
    // Another instance reads the stored tokens instead of calling the token service.
    let other = cold_start(&t.services(json!({"refresh_ahead_secs": 600})).await).await;
    assert_eq!(refresh(&other).await.unwrap()["status"], "not_due");
    assert_eq!(t.service.calls(), 3);
    t.assert_logs_clean(&[]);
}

#[tokio::test]
async fn wrong_client_secret_is_a_clear_error_without_the_secret() {
    let t = Tokens::new(Some(CLIENT_SECRET)).await;
    let wrong = "aad-secret-WRONG-7hPq2Lx";
    let services =
        cold_start(&support::services(&t.config(t.secret_aad(wrong), json!({}))).await).await;
    let e = refresh(&services).await.unwrap_err();
    assert!(
        e.contains("Azure AD refused the client credentials") && e.contains("AADSTS7000215"),
        "{e}"
    );
    assert!(
        !e.contains("Trace ID"),
        "only the first line of AAD's description: {e}"
    );
    assert_eq!(t.service.calls(), 0);
    t.assert_logs_clean(&[wrong]);
}
