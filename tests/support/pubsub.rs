//! Fakes of the pub/sub export's remote parts, which have no local emulator: Azure AD's token
//! endpoint, the vendor's token service, and Service Bus's REST runtime API with real peek-lock
//! state (locks that expire and redeliver with a growing DeliveryCount, complete and unlock by the
//! Location URL, 404 once a lock is lost). Each checks credentials the way the real one does: the
//! AAD client secret or assertion, the bearer token AAD issued, the Service Bus SAS signature
//! (HMAC-SHA256 with the current key). Blobs are real: Azurite.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn form(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

// ---------------------------------------------------------------------------------------------
// Azure AD

#[derive(Default)]
struct AadState {
    client_id: String,
    secret: Option<String>,
    calls: usize,
    tokens: Vec<String>,
    assertions: Vec<String>,
}

/// Azure AD's v2 token endpoint for one tenant.
pub struct Aad {
    pub server: MockServer,
    pub tenant: String,
    state: Arc<Mutex<AadState>>,
}

struct AadResponder(Arc<Mutex<AadState>>);

impl Respond for AadResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let f = form(&request.body);
        let mut s = self.0.lock().unwrap();
        s.calls += 1;
        let refuse = |code: &str, description: &str| {
            ResponseTemplate::new(401).set_body_json(json!({"error": code,
                "error_description": format!("{description}\r\nTrace ID: 0000\r\nTimestamp: 2026-11-22")}))
        };
        if f.get("grant_type").map(String::as_str) != Some("client_credentials")
            || f.get("client_id") != Some(&s.client_id)
            || !f.get("scope").is_some_and(|v| v.ends_with("/.default"))
        {
            return ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_request"}));
        }
        match (&s.secret, f.get("client_secret"), f.get("client_assertion")) {
            (Some(want), Some(got), None) if want == got => {}
            (Some(_), _, _) => {
                return refuse(
                    "invalid_client",
                    "AADSTS7000215: Invalid client secret provided.",
                );
            }
            (None, None, Some(assertion))
                if f.get("client_assertion_type").map(String::as_str)
                    == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                    && assertion.split('.').count() == 3 =>
            {
                s.assertions.push(assertion.clone());
            }
            (None, _, _) => {
                return refuse(
                    "invalid_client",
                    "AADSTS700027: Client assertion failed signature validation.",
                );
            }
        }
        let token = format!(
            "eyJ0eXAiOiJKV1QifQ.aad-access-{}-{}",
            s.calls,
            rand::random::<u64>()
        );
        s.tokens.push(token.clone());
        ResponseTemplate::new(200).set_body_json(
            json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}),
        )
    }
}

impl Aad {
    /// `secret`: the client secret to accept; `None` accepts a client assertion instead (the
    /// test checks its signature with openssl afterwards).
    pub async fn start(client_id: &str, secret: Option<&str>) -> Self {
        let server = MockServer::start().await;
        let tenant = "tenant-7c1e".to_string();
        let state = Arc::new(Mutex::new(AadState {
            client_id: client_id.into(),
            secret: secret.map(str::to_string),
            ..Default::default()
        }));
        Mock::given(method("POST"))
            .and(path(format!("/{tenant}/oauth2/v2.0/token")))
            .respond_with(AadResponder(state.clone()))
            .mount(&server)
            .await;
        Self {
            server,
            tenant,
            state,
        }
    }

    pub fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }

    /// Access tokens issued so far.
    pub fn tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().tokens.clone()
    }

    /// Client assertions received so far.
    pub fn assertions(&self) -> Vec<String> {
        self.state.lock().unwrap().assertions.clone()
    }

    fn issued(&self) -> Arc<Mutex<AadState>> {
        self.state.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// The vendor's token service

struct TsState {
    aad: Arc<Mutex<AadState>>,
    integration: String,
    answer: Value,
    forbidden: bool,
    calls: usize,
    delay: Duration,
}

/// `POST /api/external/integration/export/temporaryendpoints`.
pub struct TokenService {
    pub server: MockServer,
    state: Arc<Mutex<TsState>>,
}

struct TsResponder(Arc<Mutex<TsState>>);

impl Respond for TsResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut s = self.0.lock().unwrap();
        s.calls += 1;
        let bearer = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_string();
        if !s.aad.lock().unwrap().tokens.contains(&bearer) {
            return ResponseTemplate::new(401);
        }
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        if body != json!({"integrationName": s.integration, "useNewSBConnectionStringFormat": true})
        {
            return ResponseTemplate::new(400).set_body_string(format!("bad request body {body}"));
        }
        if s.forbidden {
            return ResponseTemplate::new(403);
        }
        ResponseTemplate::new(200)
            .set_body_json(s.answer.clone())
            .set_delay(s.delay)
    }
}

impl TokenService {
    pub async fn start(aad: &Aad, integration: &str) -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(TsState {
            aad: aad.issued(),
            integration: integration.into(),
            answer: Value::Null,
            forbidden: false,
            calls: 0,
            delay: Duration::ZERO,
        }));
        Mock::given(method("POST"))
            .and(path("/api/external/integration/export/temporaryendpoints"))
            .respond_with(TsResponder(state.clone()))
            .mount(&server)
            .await;
        Self { server, state }
    }

    /// What the next calls return: the vendor's response shape.
    pub fn answer(&self, connection_string: &str, subscription: &str, blob_bases: &[String]) {
        self.state.lock().unwrap().answer = json!({
            "serviceBusSubscriptionConnectionString": connection_string,
            "serviceBusSubscriptionName": subscription,
            "blobBaseUrlsWithToken": blob_bases,
        });
    }

    /// Answer 403 (permissions not granted yet) from now on.
    pub fn forbid(&self) {
        self.state.lock().unwrap().forbidden = true;
    }

    /// Delay every answer (to hold refreshers in flight).
    pub fn delay(&self, d: Duration) {
        self.state.lock().unwrap().delay = d;
    }

    /// Calls so far (answered or not).
    pub fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }
}

// ---------------------------------------------------------------------------------------------
// Service Bus (REST runtime API, peek-lock)

/// One message of the fake subscription.
#[derive(Debug, Clone)]
pub struct FakeMessage {
    pub sequence: i64,
    pub message_id: String,
    pub body: Vec<u8>,
    /// Deliveries so far (DeliveryCount of the last one).
    pub deliveries: u32,
    /// Current lock: token and expiry.
    pub lock: Option<(String, Instant)>,
    /// Successful completes (must end at exactly 1).
    pub completes: u32,
    /// Successful unlocks.
    pub unlocks: u32,
}

struct SbState {
    key_name: String,
    keys: Vec<String>,
    lock_duration: Duration,
    messages: Vec<FakeMessage>,
    unauthorized: usize,
    lost_lock_404: usize,
    signatures: Vec<String>,
    locks_issued: u64,
}

/// A topic subscription.
pub struct ServiceBus {
    pub server: MockServer,
    pub topic: String,
    pub subscription: String,
    state: Arc<Mutex<SbState>>,
}

struct SbResponder {
    state: Arc<Mutex<SbState>>,
    base: String,
    entity: String,
}

impl SbResponder {
    /// Checks `SharedAccessSignature sr=..&sig=..&se=..&skn=..` against the current keys.
    fn authorized(&self, s: &mut SbState, request: &Request) -> bool {
        let Some(header) = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(token) = header.strip_prefix("SharedAccessSignature ") else {
            return false;
        };
        let fields: BTreeMap<&str, &str> =
            token.split('&').filter_map(|p| p.split_once('=')).collect();
        let (Some(sr), Some(sig), Some(se), Some(skn)) = (
            fields.get("sr"),
            fields.get("sig"),
            fields.get("se"),
            fields.get("skn"),
        ) else {
            return false;
        };
        let sig_decoded = percent_encoding::percent_decode_str(sig)
            .decode_utf8_lossy()
            .into_owned();
        s.signatures.push(sig.to_string());
        s.signatures.push(sig_decoded.clone());
        let resource = percent_encoding::percent_decode_str(sr)
            .decode_utf8_lossy()
            .to_ascii_lowercase();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // wiremock sees only the path: the URL the client addressed comes from Host.
        let host = request
            .headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let addressed = format!("http://{host}{}", request.url.path()).to_ascii_lowercase();
        if *skn != s.key_name
            || se.parse::<u64>().map_or(true, |se| se <= now)
            || !addressed.starts_with(&resource)
        {
            return false;
        }
        s.keys.iter().any(|key| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
            mac.update(format!("{sr}\n{se}").as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
                == sig_decoded
        })
    }

    fn receive(&self, s: &mut SbState, request: &Request) -> ResponseTemplate {
        let wait = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "timeout")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(60);
        let now = Instant::now();
        let lock_duration = s.lock_duration;
        s.locks_issued += 1;
        let lock_no = s.locks_issued;
        let Some(m) = s
            .messages
            .iter_mut()
            .find(|m| m.completes == 0 && m.lock.as_ref().is_none_or(|(_, until)| *until <= now))
        else {
            // Real Service Bus holds the request up to `timeout`; a short hold keeps tests fast.
            return ResponseTemplate::new(204)
                .set_delay(Duration::from_millis(150).min(Duration::from_secs(wait)));
        };
        m.deliveries += 1;
        let lock = format!("{:08x}-lock-{lock_no}", m.sequence);
        m.lock = Some((lock.clone(), now + lock_duration));
        let broker = json!({
            "DeliveryCount": m.deliveries,
            "EnqueuedSequenceNumber": 0,
            "EnqueuedTimeUtc": httpdate::fmt_http_date(SystemTime::now()),
            "LockToken": lock,
            "LockedUntilUtc": httpdate::fmt_http_date(SystemTime::now() + lock_duration),
            "MessageId": m.message_id,
            "SequenceNumber": m.sequence,
            "State": "Active",
            "TimeToLive": 1209600.0,
        });
        ResponseTemplate::new(201)
            .insert_header("BrokerProperties", broker.to_string().as_str())
            .insert_header(
                "Location",
                format!(
                    "{}/{}/messages/{}/{lock}",
                    self.base, self.entity, m.sequence
                )
                .as_str(),
            )
            .insert_header("Content-Type", "application/json; charset=utf-8")
            .set_body_bytes(m.body.clone())
    }

    fn settle(&self, s: &mut SbState, verb: &str, seq: i64, lock: &str) -> ResponseTemplate {
        let now = Instant::now();
        let lock_duration = s.lock_duration;
        let held = s.messages.iter_mut().find(|m| {
            m.sequence == seq
                && m.completes == 0
                && m.lock
                    .as_ref()
                    .is_some_and(|(l, until)| l == lock && *until > now)
        });
        let Some(m) = held else {
            s.lost_lock_404 += 1;
            return ResponseTemplate::new(404);
        };
        match verb {
            "DELETE" => {
                m.completes += 1;
                m.lock = None;
            }
            "PUT" => {
                m.unlocks += 1;
                m.lock = None;
            }
            _ => m.lock = Some((lock.to_string(), now + lock_duration)),
        }
        ResponseTemplate::new(200)
    }
}

impl Respond for SbResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut s = self.state.lock().unwrap();
        if !self.authorized(&mut s, request) {
            s.unauthorized += 1;
            return ResponseTemplate::new(401);
        }
        let prefix = format!("/{}/messages/", self.entity);
        let Some(rest) = request.url.path().strip_prefix(&prefix) else {
            return ResponseTemplate::new(404);
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match (request.method.as_str(), parts.as_slice()) {
            ("POST", &["head"]) => self.receive(&mut s, request),
            (verb @ ("DELETE" | "PUT" | "POST"), &[seq, lock]) => match seq.parse() {
                Ok(seq) => self.settle(&mut s, verb, seq, lock),
                Err(_) => ResponseTemplate::new(400),
            },
            _ => ResponseTemplate::new(405),
        }
    }
}

impl ServiceBus {
    pub async fn start(key_name: &str, key: &str, lock_duration: Duration) -> Self {
        let server = MockServer::start().await;
        let (topic, subscription) = ("file-export".to_string(), "ferry-tenant-42".to_string());
        let entity = format!("{topic}/subscriptions/{subscription}");
        let state = Arc::new(Mutex::new(SbState {
            key_name: key_name.into(),
            keys: vec![key.into()],
            lock_duration,
            messages: Vec::new(),
            unauthorized: 0,
            lost_lock_404: 0,
            signatures: Vec::new(),
            locks_issued: 0,
        }));
        Mock::given(path_regex(format!("^/{entity}/messages/")))
            .respond_with(SbResponder {
                state: state.clone(),
                base: server.uri(),
                entity,
            })
            .mount(&server)
            .await;
        Self {
            server,
            topic,
            subscription,
            state,
        }
    }

    /// The connection string the token service hands out for `key` (new format, with EntityPath).
    pub fn connection_string(&self, key: &str) -> String {
        let key_name = self.state.lock().unwrap().key_name.clone();
        let host = self.server.uri().trim_start_matches("http://").to_string();
        format!(
            "Endpoint=sb://{host}/;SharedAccessKeyName={key_name};SharedAccessKey={key};EntityPath={};UseDevelopmentEmulator=true",
            self.topic
        )
    }

    /// Accept only these keys from now on (key rotation).
    pub fn set_keys(&self, keys: &[&str]) {
        self.state.lock().unwrap().keys = keys.iter().map(|k| k.to_string()).collect();
    }

    /// Enqueues a message; returns its sequence number.
    pub fn send(&self, body: impl Into<Vec<u8>>) -> i64 {
        let mut s = self.state.lock().unwrap();
        let sequence = s.messages.len() as i64 + 1;
        s.messages.push(FakeMessage {
            sequence,
            message_id: format!("msg-{sequence:04}-{:08x}", rand::random::<u32>()),
            body: body.into(),
            deliveries: 0,
            lock: None,
            completes: 0,
            unlocks: 0,
        });
        sequence
    }

    pub fn messages(&self) -> Vec<FakeMessage> {
        self.state.lock().unwrap().messages.clone()
    }

    /// Messages not completed.
    pub fn outstanding(&self) -> usize {
        self.messages().iter().filter(|m| m.completes == 0).count()
    }

    /// Requests refused for their SAS.
    pub fn unauthorized(&self) -> usize {
        self.state.lock().unwrap().unauthorized
    }

    /// Completes/unlocks answered 404 because the lock was gone.
    pub fn lost_locks(&self) -> usize {
        self.state.lock().unwrap().lost_lock_404
    }

    /// Every SAS signature presented (to scan logs for).
    pub fn signatures(&self) -> Vec<String> {
        self.state.lock().unwrap().signatures.clone()
    }
}
