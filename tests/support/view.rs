//! Stand-ins for the HTTP ends of a view sync (neither has an emulator): a Flowfinity-style
//! view that serves the records after the cursor it is asked for, and an HTTP receiver that
//! applies each `Idempotency-Key` once, as the sink contract asks of receivers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wiremock::matchers::{basic_auth, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The view's user parameter every test uses.
pub(crate) const ON_BEHALF_OF: &str = "ops@example.org";

/// A view record: `RecordID` is `i` zero-padded to 9 digits. Field casing and the cursor's JSON
/// type vary with `i`, as the real views do.
pub(crate) fn record(i: u64, cursor: u64) -> serde_json::Value {
    let id = format!("{i:09}");
    match i % 3 {
        0 => {
            serde_json::json!({"RecordID": id, "lastSubmissionId": cursor, "Name": format!("Client {i}"), "Notes": "ünïcode ✓ \"quoted\" [x] {y}"})
        }
        1 => {
            serde_json::json!({"recordId": id, "LastSubmissionID": cursor.to_string(), "Name": format!("Client {i}"), "Visits": [1, 2, {"n": i}]})
        }
        _ => {
            serde_json::json!({"RECORDID": id, "lastsubmissionid": format!("{cursor:012}"), "Name": null})
        }
    }
}

/// Records `first..first+n`, cursor `1000 + 7 * i`.
pub(crate) fn records(first: u64, n: u64) -> Vec<serde_json::Value> {
    (first..first + n)
        .map(|i| record(i, cursor_of(i)))
        .collect()
}

/// The cursor `records` gives record `i`.
pub(crate) fn cursor_of(i: u64) -> u64 {
    1000 + 7 * i
}

/// (RecordID, cursor) of a record made by `record`.
pub(crate) fn identity(r: &serde_json::Value) -> (String, u64) {
    let o = r.as_object().unwrap();
    let get = |name: &str| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let id = get("RecordID").as_str().unwrap().to_string();
    let cursor = match get("lastSubmissionId") {
        serde_json::Value::Number(n) => n.as_u64().unwrap(),
        serde_json::Value::String(s) => s.parse().unwrap(),
        other => panic!("cursor {other}"),
    };
    (id, cursor)
}

#[derive(Default)]
struct ViewState {
    records: Vec<serde_json::Value>,
    asked: Vec<String>,
    delay: Duration,
    /// Raw body to answer instead of the records (malformed responses).
    raw: Option<String>,
    /// Status to answer instead of 200.
    status: Option<u16>,
}

/// The mock view. Answers `GET /api/views/cases?onbehalfof=..&previouslastsubmissionid=..` with
/// Basic auth `user`/`password`; anything else gets 401.
pub(crate) struct MockView {
    pub server: MockServer,
    pub user: String,
    pub password: String,
    state: Arc<Mutex<ViewState>>,
}

struct Responder(Arc<Mutex<ViewState>>);

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut s = self.0.lock().unwrap();
        let after = req
            .url
            .query_pairs()
            .find(|(k, _)| k == "previouslastsubmissionid")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        s.asked.push(after.clone());
        if let Some(status) = s.status {
            return ResponseTemplate::new(status).set_delay(s.delay);
        }
        if let Some(raw) = &s.raw {
            return ResponseTemplate::new(200)
                .set_body_raw(raw.clone().into_bytes(), "application/json")
                .set_delay(s.delay);
        }
        let after: Option<u64> = (!after.is_empty()).then(|| after.parse().unwrap());
        let mut body = b"[".to_vec();
        let mut first = true;
        for r in &s.records {
            if after.is_some_and(|a| identity(r).1 <= a) {
                continue;
            }
            if !first {
                body.extend_from_slice(b",\n");
            }
            first = false;
            serde_json::to_writer(&mut body, r).unwrap();
        }
        body.push(b']');
        ResponseTemplate::new(200)
            .set_body_raw(body, "application/json")
            .set_delay(s.delay)
    }
}

impl MockView {
    pub(crate) async fn start(password: &str) -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(ViewState::default()));
        let user = "svc-ferry".to_string();
        Mock::given(method("GET"))
            .and(path("/api/views/cases"))
            .and(query_param("onbehalfof", ON_BEHALF_OF))
            .and(basic_auth(&user, password))
            .respond_with(Responder(state.clone()))
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(401))
            .with_priority(10)
            .mount(&server)
            .await;
        Self {
            server,
            user,
            password: password.to_string(),
            state,
        }
    }

    /// The view URL to configure (with an extra parameter ferry must keep).
    pub(crate) fn url(&self) -> String {
        format!("{}/api/views/cases", self.server.uri())
    }

    /// Appends records (they must be in ascending cursor order to be a well-behaved view).
    pub(crate) fn push(&self, records: impl IntoIterator<Item = serde_json::Value>) {
        self.state.lock().unwrap().records.extend(records);
    }

    /// Every record the view holds.
    pub(crate) fn all(&self) -> Vec<serde_json::Value> {
        self.state.lock().unwrap().records.clone()
    }

    /// The `previouslastsubmissionid` of every request so far.
    pub(crate) fn asked(&self) -> Vec<String> {
        self.state.lock().unwrap().asked.clone()
    }

    pub(crate) fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub(crate) fn answer_raw(&self, body: Option<&str>) {
        self.state.lock().unwrap().raw = body.map(str::to_string);
    }

    pub(crate) fn answer_status(&self, status: Option<u16>) {
        self.state.lock().unwrap().status = status;
    }
}

#[derive(Default)]
struct ReceiverState {
    /// (view, Idempotency key) -> times received.
    keys: BTreeMap<(String, String), u32>,
    /// (view, RecordID) -> (cursor, body) of the latest applied version.
    latest: BTreeMap<(String, String), (u64, serde_json::Value)>,
    /// Answer this status to the next `fail_next` requests.
    fail_status: u16,
    fail_next: u32,
    /// Requests missing the expected auth header.
    unauthenticated: u32,
}

/// An HTTP receiver that applies each Idempotency-Key once per view (`X-Ferry-View`); later
/// copies are acknowledged and counted, not applied.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub server: Arc<MockServer>,
    state: Arc<Mutex<ReceiverState>>,
}

struct ReceiverResponder(Arc<Mutex<ReceiverState>>, String);

impl Respond for ReceiverResponder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut s = self.0.lock().unwrap();
        if req
            .headers
            .get("authorization")
            .is_none_or(|v| v.as_bytes() != self.1.as_bytes())
        {
            s.unauthenticated += 1;
            return ResponseTemplate::new(401);
        }
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return ResponseTemplate::new(s.fail_status);
        }
        let key = req
            .headers
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        let (id, cursor) = identity(&body);
        assert_eq!(
            key,
            format!("{id}:{cursor}"),
            "Idempotency-Key names the version"
        );
        let view = req
            .headers
            .get("x-ferry-view")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let seen = s.keys.entry((view.clone(), key)).or_insert(0);
        *seen += 1;
        let id = (view, id);
        if *seen == 1 && s.latest.get(&id).is_none_or(|(c, _)| *c < cursor) {
            s.latest.insert(id, (cursor, body));
        }
        ResponseTemplate::new(201)
    }
}

impl Receiver {
    /// Expects `Authorization: <auth>` on every request.
    pub(crate) async fn start(auth: &str) -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        Mock::given(method("POST"))
            .and(path("/records"))
            .respond_with(ReceiverResponder(state.clone(), auth.to_string()))
            .mount(&server)
            .await;
        Self {
            server: Arc::new(server),
            state,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("{}/records", self.server.uri())
    }

    /// RecordID -> (cursor, body) of the latest version applied for `view`.
    pub(crate) fn latest(&self, view: &str) -> BTreeMap<String, (u64, serde_json::Value)> {
        let s = self.state.lock().unwrap();
        s.latest
            .iter()
            .filter(|((v, _), _)| v == view)
            .map(|((_, id), l)| (id.clone(), l.clone()))
            .collect()
    }

    /// Idempotency key -> times received, for `view`.
    pub(crate) fn keys(&self, view: &str) -> BTreeMap<String, u32> {
        let s = self.state.lock().unwrap();
        s.keys
            .iter()
            .filter(|((v, _), _)| v == view)
            .map(|((_, k), n)| (k.clone(), *n))
            .collect()
    }

    /// Answers `status` to the next `n` requests.
    pub(crate) fn fail_next(&self, n: u32, status: u16) {
        let mut s = self.state.lock().unwrap();
        s.fail_next = n;
        s.fail_status = status;
    }

    pub(crate) fn unauthenticated(&self) -> u32 {
        self.state.lock().unwrap().unauthenticated
    }
}
