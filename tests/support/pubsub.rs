//! Fakes of the pub/sub export's remote parts, which have no local emulator: Azure AD's token
//! endpoint, the vendor's token service, and Service Bus's REST runtime API with real peek-lock
//! state (locks that expire and redeliver with a growing DeliveryCount, complete and unlock by the
//! Location URL, renew by `POST <Location>`, 404 once a lock is lost; MaxDeliveryCount moves a
//! message to the subscription's `$deadletterqueue`, read with the same peek-lock calls on that
//! path). Each checks credentials the way the real one does: the
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
pub(crate) struct Aad {
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
    pub(crate) async fn start(client_id: &str, secret: Option<&str>) -> Self {
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

    pub(crate) fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }

    /// Access tokens issued so far.
    pub(crate) fn tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().tokens.clone()
    }

    /// Client assertions received so far.
    pub(crate) fn assertions(&self) -> Vec<String> {
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
pub(crate) struct TokenService {
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
    pub(crate) async fn start(aad: &Aad, integration: &str) -> Self {
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
    pub(crate) fn answer(
        &self,
        connection_string: &str,
        subscription: &str,
        blob_bases: &[String],
    ) {
        self.state.lock().unwrap().answer = json!({
            "serviceBusSubscriptionConnectionString": connection_string,
            "serviceBusSubscriptionName": subscription,
            "blobBaseUrlsWithToken": blob_bases,
        });
    }

    /// Answer 403 (permissions not granted yet) from now on.
    pub(crate) fn forbid(&self) {
        self.state.lock().unwrap().forbidden = true;
    }

    /// Delay every answer (to hold refreshers in flight).
    pub(crate) fn delay(&self, d: Duration) {
        self.state.lock().unwrap().delay = d;
    }

    /// Calls so far (answered or not).
    pub(crate) fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }
}

// ---------------------------------------------------------------------------------------------
// Service Bus (REST runtime API, peek-lock)

/// One message of the fake subscription.
#[derive(Debug, Clone)]
pub(crate) struct FakeMessage {
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
    /// Successful lock renewals.
    pub renewals: u32,
    /// Set once the message sits in the dead-letter subqueue: (DeadLetterReason, description).
    pub dead_letter: Option<(String, String)>,
    /// Deliveries from the dead-letter subqueue.
    pub dead_letter_deliveries: u32,
}

/// Which queue of the subscription a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Active,
    DeadLetter,
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
    max_delivery_count: u32,
    /// Renewals answered 404 as if the lock had been lost (and the lock dropped).
    lose_locks_on_renew: bool,
    renewals_refused: usize,
    /// Receive requests (polls) per queue.
    receives: usize,
    dead_letter_receives: usize,
    /// How long an empty receive is held before its 204.
    empty_hold: Duration,
}

/// A topic subscription.
pub(crate) struct ServiceBus {
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

    fn receive(&self, s: &mut SbState, request: &Request, queue: Queue) -> ResponseTemplate {
        let wait = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "timeout")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(60);
        let now = Instant::now();
        let lock_duration = s.lock_duration;
        let max_deliveries = s.max_delivery_count;
        match queue {
            Queue::Active => s.receives += 1,
            Queue::DeadLetter => s.dead_letter_receives += 1,
        }
        s.locks_issued += 1;
        let lock_no = s.locks_issued;
        let available = |m: &FakeMessage| {
            m.completes == 0 && m.lock.as_ref().is_none_or(|(_, until)| *until <= now)
        };
        // A message whose lock ran out (or was unlocked) MaxDeliveryCount times moves to the
        // dead-letter subqueue instead of being delivered again, as the broker does.
        for m in s.messages.iter_mut() {
            if m.dead_letter.is_none() && available(m) && m.deliveries >= max_deliveries {
                m.lock = None;
                m.dead_letter = Some((
                    "MaxDeliveryCountExceeded".into(),
                    format!(
                        "Message could not be consumed after {max_deliveries} delivery attempts."
                    ),
                ));
            }
        }
        let Some(m) = s
            .messages
            .iter_mut()
            .find(|m| available(m) && (m.dead_letter.is_some() == (queue == Queue::DeadLetter)))
        else {
            // Real Service Bus holds the request up to `timeout`; a short hold keeps tests fast.
            return ResponseTemplate::new(204)
                .set_delay(s.empty_hold.min(Duration::from_secs(wait)));
        };
        let delivery_count = match queue {
            Queue::Active => {
                m.deliveries += 1;
                m.deliveries
            }
            Queue::DeadLetter => {
                m.dead_letter_deliveries += 1;
                m.dead_letter_deliveries
            }
        };
        let lock = format!("{:08x}-lock-{lock_no}", m.sequence);
        m.lock = Some((lock.clone(), now + lock_duration));
        let entity = match queue {
            Queue::Active => self.entity.clone(),
            Queue::DeadLetter => format!("{}/$deadletterqueue", self.entity),
        };
        let broker = json!({
            "DeliveryCount": delivery_count,
            "EnqueuedSequenceNumber": 0,
            "EnqueuedTimeUtc": httpdate::fmt_http_date(SystemTime::now()),
            "LockToken": lock,
            "LockedUntilUtc": httpdate::fmt_http_date(SystemTime::now() + lock_duration),
            "MessageId": m.message_id,
            "SequenceNumber": m.sequence,
            "State": "Active",
            "TimeToLive": 1209600.0,
        });
        let mut response = ResponseTemplate::new(201)
            .insert_header("BrokerProperties", broker.to_string().as_str())
            .insert_header(
                "Location",
                format!("{}/{entity}/messages/{}/{lock}", self.base, m.sequence).as_str(),
            )
            .insert_header("Content-Type", "application/json; charset=utf-8")
            .set_body_bytes(m.body.clone());
        // Custom properties travel as headers; string values are quoted.
        if let Some((reason, description)) = &m.dead_letter {
            response = response
                .insert_header("DeadLetterReason", format!("\"{reason}\"").as_str())
                .insert_header(
                    "DeadLetterErrorDescription",
                    format!("\"{description}\"").as_str(),
                );
        }
        response
    }

    fn settle(
        &self,
        s: &mut SbState,
        verb: &str,
        queue: Queue,
        seq: i64,
        lock: &str,
    ) -> ResponseTemplate {
        let now = Instant::now();
        let lock_duration = s.lock_duration;
        let lose_on_renew = s.lose_locks_on_renew && verb == "POST";
        let held = s.messages.iter_mut().find(|m| {
            m.sequence == seq
                && m.completes == 0
                && m.dead_letter.is_some() == (queue == Queue::DeadLetter)
                && m.lock
                    .as_ref()
                    .is_some_and(|(l, until)| l == lock && *until > now)
        });
        let Some(m) = held else {
            s.lost_lock_404 += 1;
            return ResponseTemplate::new(404);
        };
        if lose_on_renew {
            m.lock = None;
            s.renewals_refused += 1;
            s.lost_lock_404 += 1;
            return ResponseTemplate::new(404);
        }
        match verb {
            "DELETE" => {
                m.completes += 1;
                m.lock = None;
            }
            "PUT" => {
                m.unlocks += 1;
                m.lock = None;
            }
            _ => {
                m.renewals += 1;
                m.lock = Some((lock.to_string(), now + lock_duration));
            }
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
        let path = request.url.path();
        let active = format!("/{}/messages/", self.entity);
        let dead = format!("/{}/$deadletterqueue/messages/", self.entity);
        let (queue, rest) = match (path.strip_prefix(&active), path.strip_prefix(&dead)) {
            (Some(rest), _) => (Queue::Active, rest),
            (_, Some(rest)) => (Queue::DeadLetter, rest),
            _ => return ResponseTemplate::new(404),
        };
        let parts: Vec<&str> = rest.split('/').collect();
        match (request.method.as_str(), parts.as_slice()) {
            ("POST", &["head"]) => self.receive(&mut s, request, queue),
            (verb @ ("DELETE" | "PUT" | "POST"), &[seq, lock]) => match seq.parse() {
                Ok(seq) => self.settle(&mut s, verb, queue, seq, lock),
                Err(_) => ResponseTemplate::new(400),
            },
            _ => ResponseTemplate::new(405),
        }
    }
}

impl ServiceBus {
    pub(crate) async fn start(key_name: &str, key: &str, lock_duration: Duration) -> Self {
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
            max_delivery_count: 10,
            lose_locks_on_renew: false,
            renewals_refused: 0,
            receives: 0,
            dead_letter_receives: 0,
            empty_hold: Duration::from_millis(150),
        }));
        Mock::given(path_regex(format!(
            "^/{entity}/(messages|\\$deadletterqueue/messages)/"
        )))
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
    pub(crate) fn connection_string(&self, key: &str) -> String {
        let key_name = self.state.lock().unwrap().key_name.clone();
        let host = self.server.uri().trim_start_matches("http://").to_string();
        format!(
            "Endpoint=sb://{host}/;SharedAccessKeyName={key_name};SharedAccessKey={key};EntityPath={};UseDevelopmentEmulator=true",
            self.topic
        )
    }

    /// Accept only these keys from now on (key rotation).
    pub(crate) fn set_keys(&self, keys: &[&str]) {
        self.state.lock().unwrap().keys = keys.iter().map(|k| k.to_string()).collect();
    }

    /// Enqueues a message; returns its sequence number.
    pub(crate) fn send(&self, body: impl Into<Vec<u8>>) -> i64 {
        self.enqueue(body.into(), None)
    }

    /// Puts a message straight into the dead-letter subqueue with `reason` (as a receiver's
    /// explicit dead-lettering would); returns its sequence number.
    pub(crate) fn send_dead_letter(&self, body: impl Into<Vec<u8>>, reason: &str) -> i64 {
        self.enqueue(
            body.into(),
            Some((
                reason.to_string(),
                format!("dead-lettered by a test: {reason}"),
            )),
        )
    }

    fn enqueue(&self, body: Vec<u8>, dead_letter: Option<(String, String)>) -> i64 {
        let mut s = self.state.lock().unwrap();
        let sequence = s.messages.len() as i64 + 1;
        s.messages.push(FakeMessage {
            sequence,
            message_id: format!("msg-{sequence:04}-{:08x}", rand::random::<u32>()),
            body,
            deliveries: 0,
            lock: None,
            completes: 0,
            unlocks: 0,
            renewals: 0,
            dead_letter,
            dead_letter_deliveries: 0,
        });
        sequence
    }

    /// MaxDeliveryCount of the subscription (default 10).
    pub(crate) fn set_max_delivery_count(&self, n: u32) {
        self.state.lock().unwrap().max_delivery_count = n;
    }

    /// From now on every renewal answers 404 and drops the lock (the lock was lost).
    pub(crate) fn lose_locks_on_renew(&self, on: bool) {
        self.state.lock().unwrap().lose_locks_on_renew = on;
    }

    /// How long an empty receive is held before its 204 (default 150 ms; zero: at once).
    pub(crate) fn set_empty_hold(&self, hold: Duration) {
        self.state.lock().unwrap().empty_hold = hold;
    }

    /// Renewals answered 404 by `lose_locks_on_renew`.
    pub(crate) fn renewals_refused(&self) -> usize {
        self.state.lock().unwrap().renewals_refused
    }

    /// Receive requests (polls) on the subscription itself.
    pub(crate) fn receives(&self) -> usize {
        self.state.lock().unwrap().receives
    }

    /// Receive requests on the dead-letter subqueue.
    pub(crate) fn dead_letter_receives(&self) -> usize {
        self.state.lock().unwrap().dead_letter_receives
    }

    pub(crate) fn messages(&self) -> Vec<FakeMessage> {
        self.state.lock().unwrap().messages.clone()
    }

    /// Messages in the dead-letter subqueue, not completed.
    pub(crate) fn dead_lettered(&self) -> usize {
        self.messages()
            .iter()
            .filter(|m| m.completes == 0 && m.dead_letter.is_some())
            .count()
    }

    /// Messages not completed (either queue).
    pub(crate) fn outstanding(&self) -> usize {
        self.messages().iter().filter(|m| m.completes == 0).count()
    }

    /// Requests refused for their SAS.
    pub(crate) fn unauthorized(&self) -> usize {
        self.state.lock().unwrap().unauthorized
    }

    /// Completes/unlocks answered 404 because the lock was gone.
    pub(crate) fn lost_locks(&self) -> usize {
        self.state.lock().unwrap().lost_lock_404
    }

    /// Every SAS signature presented (to scan logs for).
    pub(crate) fn signatures(&self) -> Vec<String> {
        self.state.lock().unwrap().signatures.clone()
    }
}
