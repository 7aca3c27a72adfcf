//! A stateful fake of Microsoft Graph's drive upload API and of Azure AD's token endpoint, on
//! one wiremock server: Graph has no emulator (Dev Proxy answers static mocks), so this fake
//! enforces the protocol rules of design 6a and counts what it saw.
//!
//! Rules enforced: bearer tokens from the fake AAD (expiring, revocable) on every Graph call, and
//! NO `Authorization` on uploadUrl requests (401 if present); fragments in order, each below
//! 60 MiB, every one but the last a multiple of 320 KiB, the same total on each; 416 when a
//! fragment overlaps bytes already stored, 400 on a gap; `deferCommit` sessions become a file
//! only on `POST {uploadUrl}`; conflicts under `fail` at the last byte (409
//! `nameAlreadyExists`); expired or cancelled sessions answer 404. Faults (429/5xx with
//! Retry-After, a stored-but-lost response, session expiry, token revocation) are injected by
//! fragment number. A rule broken by the client is also recorded as a violation, so a test
//! fails even if the client recovers from the 400.
//!
//! Stored files keep only size, SHA-256 and quickXorHash (enough to prove byte identity), so
//! large uploads cost no memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use quickxorhash::QuickXorHash;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const UNIT: u64 = 327_680;
const MAX_REQUEST: u64 = 60 * 1024 * 1024;

/// What to do to a fragment PUT (counted from 1 over all sessions).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// Answer this status (429, 503...) with an optional Retry-After (seconds), storing nothing.
    Status(u16, Option<u64>),
    /// Store the fragment, then answer 500: the client never saw the success.
    StoreThenFail,
    /// The session expires just before this fragment (404 from now on).
    ExpireSession,
    /// Every access token issued so far stops working (AAD token expiry), then the fragment
    /// proceeds normally.
    RevokeTokens,
}

struct Item {
    size: u64,
    sha256: String,
    quick_xor: String,
    id: String,
}

struct Session {
    path: String,
    tempauth: String,
    conflict: String,
    defer: bool,
    total: Option<u64>,
    received: u64,
    sha: Sha256,
    quick_xor: QuickXorHash,
    gone: bool,
}

#[derive(Default)]
struct State {
    tenant: String,
    client_id: String,
    secret: String,
    token_life_secs: u64,
    tokens: HashMap<String, Instant>,
    drive_id: String,
    site_id: String,
    hostname: String,
    site_path: String,
    report_hashes: bool,
    corrupt_next: bool,
    deny_sites: bool,
    lose_commit_answer: bool,
    items: BTreeMap<String, Item>,
    sessions: BTreeMap<String, Session>,
    faults: HashMap<usize, Fault>,
    fragments: usize,
    assertions: usize,
    counts: BTreeMap<String, usize>,
    fragment_bytes: u64,
    auth_on_upload_url: usize,
    unauthorized: usize,
    upload_urls: Vec<String>,
    violations: Vec<String>,
    base: String,
}

/// The fake: Graph at `{uri}/v1.0`, AAD at `{uri}/{tenant}/oauth2/v2.0/token`.
pub(crate) struct GraphFake {
    pub server: MockServer,
    state: Arc<Mutex<State>>,
}

fn error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error": {"code": code, "message": message}}))
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl GraphFake {
    /// A fake with one tenant, one app (`client_id` / `secret`), one SharePoint site
    /// (`contoso.sharepoint.com` `/sites/hmis`, library `Documents`) whose drive is the only one.
    pub(crate) async fn start(client_id: &str, secret: &str) -> Self {
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        let state = Arc::new(Mutex::new(State {
            tenant: "tenant-graph-1".into(),
            client_id: client_id.into(),
            secret: secret.into(),
            token_life_secs: 3599,
            drive_id: "b!drive-hmis".into(),
            site_id: "contoso.sharepoint.com,site-1,web-1".into(),
            hostname: "contoso.sharepoint.com".into(),
            site_path: "sites/hmis".into(),
            report_hashes: true,
            base: server.uri(),
            ..Default::default()
        }));
        Mock::given(wiremock::matchers::any())
            .respond_with(Responder(state.clone()))
            .mount(&server)
            .await;
        Self { server, state }
    }

    pub(crate) fn tenant(&self) -> String {
        self.state.lock().unwrap().tenant.clone()
    }
    pub(crate) fn drive_id(&self) -> String {
        self.state.lock().unwrap().drive_id.clone()
    }
    /// Destination config JSON addressing the site's `Documents` library.
    pub(crate) fn config(&self, secret: Value, folder: &str) -> Value {
        let s = self.state.lock().unwrap();
        json!({"type": "graph", "hostname": s.hostname, "site_path": format!("/{}", s.site_path),
            "library": "Documents", "folder": folder, "fragment_size_mib": 5,
            "tenant_id": s.tenant, "client_id": s.client_id, "client_secret": secret,
            "authority_url": s.base, "graph_url": format!("{}/v1.0", s.base), "timeout_secs": 10})
    }
    /// Whether driveItems carry `file.hashes.quickXorHash`.
    pub(crate) fn report_hashes(&self, yes: bool) {
        self.state.lock().unwrap().report_hashes = yes;
    }
    /// Site lookups answer 403, as Graph does for an app with `Sites.Selected` but no grant on
    /// the site.
    pub(crate) fn deny_sites(&self) {
        self.state.lock().unwrap().deny_sites = true;
    }
    /// The next commit stores the file, then answers 500 (its answer lost).
    pub(crate) fn lose_next_commit_answer(&self) {
        self.state.lock().unwrap().lose_commit_answer = true;
    }
    /// The next file stored holds other bytes than were sent (its quickXorHash shows it).
    pub(crate) fn corrupt_next_file(&self) {
        self.state.lock().unwrap().corrupt_next = true;
    }
    /// Injects `fault` at the `nth` fragment PUT from now (1-based).
    pub(crate) fn inject(&self, nth: usize, fault: Fault) {
        let mut s = self.state.lock().unwrap();
        let at = s.fragments + nth;
        s.faults.insert(at, fault);
    }
    /// Requests seen of `kind`: token, get_site, get_drive, list_drives, simple_put,
    /// create_session, fragment, status, commit, cancel, get_item.
    pub(crate) fn count(&self, kind: &str) -> usize {
        *self.state.lock().unwrap().counts.get(kind).unwrap_or(&0)
    }
    /// Bytes received in fragment PUTs (all sessions, duplicates included).
    pub(crate) fn fragment_bytes(&self) -> u64 {
        self.state.lock().unwrap().fragment_bytes
    }
    /// Token requests that proved the app with a certificate (client assertion).
    pub(crate) fn assertions(&self) -> usize {
        self.state.lock().unwrap().assertions
    }
    /// uploadUrl requests that carried an Authorization header.
    pub(crate) fn auth_on_upload_url(&self) -> usize {
        self.state.lock().unwrap().auth_on_upload_url
    }
    /// Graph calls refused for a missing, unknown or expired token.
    pub(crate) fn unauthorized(&self) -> usize {
        self.state.lock().unwrap().unauthorized
    }
    /// Every uploadUrl handed out (they embed a token: must never be logged).
    pub(crate) fn upload_urls(&self) -> Vec<String> {
        self.state.lock().unwrap().upload_urls.clone()
    }
    /// Access tokens issued.
    pub(crate) fn tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().tokens.keys().cloned().collect()
    }
    /// Protocol rules the client broke (empty for a correct client).
    pub(crate) fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }
    /// (size, sha256 hex) of the file at drive path `path` (case-insensitive), if any.
    pub(crate) fn stored(&self, path: &str) -> Option<(u64, String)> {
        let s = self.state.lock().unwrap();
        s.items
            .get(&path.to_lowercase())
            .map(|i| (i.size, i.sha256.clone()))
    }
    /// Every file path (lowercase) and every open session (`pending session <path>`).
    pub(crate) fn everything(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        let mut out: Vec<String> = s.items.keys().cloned().collect();
        out.extend(
            s.sessions
                .values()
                .filter(|x| !x.gone)
                .map(|x| format!("pending session {}", x.path)),
        );
        out
    }
}

struct Responder(Arc<Mutex<State>>);

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut s = self.0.lock().unwrap();
        s.route(request)
    }
}

impl State {
    fn count(&mut self, kind: &str) {
        *self.counts.entry(kind.to_string()).or_default() += 1;
    }

    fn violation(&mut self, status: u16, code: &str, message: String) -> ResponseTemplate {
        self.violations.push(message.clone());
        error(status, code, &message)
    }

    fn route(&mut self, r: &Request) -> ResponseTemplate {
        let path = r.url.path().to_string();
        let method = r.method.as_str().to_string();
        if method == "POST" && path == format!("/{}/oauth2/v2.0/token", self.tenant) {
            return self.token(r);
        }
        if let Some(id) = path.strip_prefix("/up/") {
            return self.upload_url(r, &method, id.to_string());
        }
        let Some(rest) = path.strip_prefix("/v1.0/") else {
            return error(404, "itemNotFound", "no such API");
        };
        if !self.authorized(r) {
            self.unauthorized += 1;
            return error(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            );
        }
        let rest = rest.to_string();
        let site_by_path = format!("sites/{}:/{}", self.hostname, self.site_path);
        let drive_prefix = format!("drives/{}/root:/", self.drive_id);
        if self.deny_sites && rest.starts_with("sites/") {
            return error(
                403,
                "accessDenied",
                "Either scp or roles claim need to be present in the token.",
            );
        }
        if method == "GET" && rest == site_by_path {
            self.count("get_site");
            return ResponseTemplate::new(200).set_body_json(json!({"id": self.site_id}));
        }
        let decoded = decode(&rest);
        if method == "GET" && decoded == format!("sites/{}/drives", self.site_id) {
            self.count("list_drives");
            return ResponseTemplate::new(200).set_body_json(json!({"value": [
                {"id": "b!other-library", "name": "Site Assets"},
                {"id": self.drive_id, "name": "Documents"}]}));
        }
        if method == "GET"
            && (rest == format!("drives/{}", self.drive_id)
                || rest.ends_with("/drive")
                    && (rest.starts_with("sites/") || rest.starts_with("users/")))
        {
            self.count("get_drive");
            return ResponseTemplate::new(200).set_body_json(json!({"id": self.drive_id}));
        }
        // Any other drive id: Graph's answer for a drive that does not exist (or is not shared
        // with the app).
        if method == "GET" && rest.starts_with("drives/") && !rest[7..].contains('/') {
            return error(404, "itemNotFound", "The resource could not be found.");
        }
        if method == "DELETE"
            && let Some(id) = rest.strip_prefix(&format!("drives/{}/items/", self.drive_id))
        {
            self.count("delete_item");
            let before = self.items.len();
            self.items.retain(|_, i| i.id != id);
            return if self.items.len() < before {
                ResponseTemplate::new(204)
            } else {
                error(404, "itemNotFound", "The resource could not be found.")
            };
        }
        if let Some(item) = rest.strip_prefix(&drive_prefix) {
            let item = item.to_string();
            if method == "PUT"
                && let Some(p) = item.strip_suffix(":/content")
            {
                return self.simple_put(r, &decode(p));
            }
            if method == "POST"
                && let Some(p) = item.strip_suffix(":/createUploadSession")
            {
                return self.create_session(r, &decode(p));
            }
            if method == "GET" {
                self.count("get_item");
                let p = decode(&item).to_lowercase();
                return match self.items.get(&p) {
                    Some(_) => self.item_json(&p, 200),
                    None => error(404, "itemNotFound", "The resource could not be found."),
                };
            }
        }
        error(
            400,
            "invalidRequest",
            &format!("fake: unhandled {method} {rest}"),
        )
    }

    fn token(&mut self, r: &Request) -> ResponseTemplate {
        self.count("token");
        let f: BTreeMap<String, String> =
            url::form_urlencoded::parse(&r.body).into_owned().collect();
        if f.get("grant_type").map(String::as_str) != Some("client_credentials")
            || f.get("scope").map(String::as_str) != Some("https://graph.microsoft.com/.default")
            || f.get("client_id") != Some(&self.client_id)
        {
            return ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_request"}));
        }
        let assertion = f.get("client_assertion").filter(|a| {
            f.get("client_assertion_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                && a.split('.').count() == 3
        });
        if assertion.is_some() {
            // The signature itself is checked with openssl in tests/pubsub_tokens.rs (same client).
            self.assertions += 1;
        } else if f.get("client_secret") != Some(&self.secret) {
            return ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided."}));
        }
        let token = format!("eyJ0eXAiOiJKV1QifQ.graph-{}", rand::random::<u64>());
        self.tokens.insert(
            token.clone(),
            Instant::now() + Duration::from_secs(self.token_life_secs),
        );
        ResponseTemplate::new(200).set_body_json(json!({"token_type": "Bearer",
            "expires_in": self.token_life_secs, "access_token": token}))
    }

    fn authorized(&self, r: &Request) -> bool {
        let Some(h) = r.headers.get("authorization").and_then(|v| v.to_str().ok()) else {
            return false;
        };
        h.strip_prefix("Bearer ")
            .and_then(|t| self.tokens.get(t))
            .is_some_and(|until| Instant::now() < *until)
    }

    fn conflict_of(r: &Request) -> String {
        r.url
            .query_pairs()
            .find(|(k, _)| k == "@microsoft.graph.conflictBehavior")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| "replace".into())
    }

    fn simple_put(&mut self, r: &Request, path: &str) -> ResponseTemplate {
        self.count("simple_put");
        if r.body.len() as u64 > 4 * 1024 * 1024 {
            return self.violation(
                413,
                "requestTooLarge",
                format!("simple upload of {} bytes", r.body.len()),
            );
        }
        let mut q = QuickXorHash::new();
        q.update(&r.body);
        let sha = hex::encode(Sha256::digest(&r.body));
        let conflict = Self::conflict_of(r);
        self.store(path, &conflict, r.body.len() as u64, sha, q)
    }

    /// Puts a finished file under `path` per the conflict behaviour; 409 under `fail`.
    fn store(
        &mut self,
        path: &str,
        conflict: &str,
        size: u64,
        sha256: String,
        mut quick_xor: QuickXorHash,
    ) -> ResponseTemplate {
        let mut key = path.to_lowercase();
        let exists = self.items.contains_key(&key);
        if exists {
            match conflict {
                "fail" => {
                    return error(
                        409,
                        "nameAlreadyExists",
                        "The specified item name already exists.",
                    );
                }
                "rename" => {
                    let (stem, ext) = key
                        .rsplit_once('.')
                        .map_or((key.clone(), String::new()), |(a, b)| {
                            (a.to_string(), format!(".{b}"))
                        });
                    let mut n = 1;
                    while self.items.contains_key(&format!("{stem} {n}{ext}")) {
                        n += 1;
                    }
                    key = format!("{stem} {n}{ext}");
                }
                _ => {}
            }
        }
        if std::mem::take(&mut self.corrupt_next) {
            quick_xor.update(b"bit rot");
        }
        let quick_xor = base64::engine::general_purpose::STANDARD.encode(quick_xor.finalize());
        self.items.insert(
            key.clone(),
            Item {
                size,
                sha256,
                quick_xor,
                id: format!("item-{}", rand::random::<u32>()),
            },
        );
        self.item_json(&key, if exists { 200 } else { 201 })
    }

    fn item_json(&self, key: &str, status: u16) -> ResponseTemplate {
        let item = &self.items[key];
        let name = key.rsplit('/').next().unwrap_or(key);
        let web_url = format!(
            "https://contoso.sharepoint.com/sites/hmis/Shared%20Documents/{}",
            key.split('/')
                .map(|s| percent_encoding::utf8_percent_encode(
                    s,
                    percent_encoding::NON_ALPHANUMERIC
                )
                .to_string())
                .collect::<Vec<_>>()
                .join("/")
        );
        let mut body = json!({"id": item.id, "name": name, "size": item.size, "webUrl": web_url,
            "file": {"mimeType": "application/octet-stream", "hashes": {}}});
        if self.report_hashes {
            body["file"]["hashes"]["quickXorHash"] = json!(item.quick_xor);
        }
        ResponseTemplate::new(status).set_body_json(body)
    }

    fn create_session(&mut self, r: &Request, path: &str) -> ResponseTemplate {
        self.count("create_session");
        let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let conflict = body
            .pointer("/item/@microsoft.graph.conflictBehavior")
            .and_then(Value::as_str)
            .unwrap_or("replace")
            .to_string();
        let defer = body
            .get("deferCommit")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let id = format!("{:016x}", rand::random::<u64>());
        let tempauth = format!("v1.eyJ0ZW1wYXV0aCI6{:032x}", rand::random::<u128>());
        let url = format!("{}/up/{id}?tempauth={tempauth}", self.base);
        self.upload_urls.push(url.clone());
        self.sessions.insert(
            id,
            Session {
                path: path.to_lowercase(),
                tempauth,
                conflict,
                defer,
                total: None,
                received: 0,
                sha: Sha256::new(),
                quick_xor: QuickXorHash::new(),
                gone: false,
            },
        );
        ResponseTemplate::new(200).set_body_json(json!({"uploadUrl": url,
            "expirationDateTime": "2026-11-30T10:00:00Z", "nextExpectedRanges": ["0-"]}))
    }

    fn status_json(session: &Session) -> Value {
        let done = session.total == Some(session.received);
        let ranges: Vec<String> = if done {
            vec![]
        } else {
            vec![format!("{}-", session.received)]
        };
        json!({"expirationDateTime": "2026-11-30T10:00:00Z", "nextExpectedRanges": ranges})
    }

    fn upload_url(&mut self, r: &Request, method: &str, id: String) -> ResponseTemplate {
        let kind = match method {
            "PUT" => "fragment",
            "GET" => "status",
            "POST" => "commit",
            "DELETE" => "cancel",
            _ => "other",
        };
        self.count(kind);
        if r.headers.contains_key("authorization") {
            self.auth_on_upload_url += 1;
            return self.violation(
                401,
                "unauthenticated",
                format!("Authorization header sent on {method} to the uploadUrl"),
            );
        }
        let tempauth = r
            .url
            .query_pairs()
            .find(|(k, _)| k == "tempauth")
            .map(|(_, v)| v.into_owned());
        let fault = if kind == "fragment" {
            self.fragments += 1;
            self.faults.remove(&self.fragments)
        } else {
            None
        };
        match fault {
            Some(Fault::ExpireSession) => {
                if let Some(x) = self.sessions.get_mut(&id) {
                    x.gone = true;
                }
            }
            Some(Fault::RevokeTokens) => self.tokens.clear(),
            Some(Fault::Status(status, retry_after)) => {
                let mut t = error(status, "serviceNotAvailable", "injected");
                if let Some(secs) = retry_after {
                    t = t.insert_header("Retry-After", secs.to_string().as_str());
                }
                return t;
            }
            _ => {}
        }
        let Some(session) = self.sessions.get_mut(&id).filter(|x| !x.gone) else {
            return error(404, "itemNotFound", "The upload session was not found.");
        };
        if tempauth.as_deref() != Some(session.tempauth.as_str()) {
            return error(401, "unauthenticated", "bad tempauth");
        }
        match method {
            "GET" => ResponseTemplate::new(200).set_body_json(Self::status_json(session)),
            "DELETE" => {
                session.gone = true;
                ResponseTemplate::new(204)
            }
            "POST" => {
                if session.total != Some(session.received) {
                    let m = format!(
                        "commit of an incomplete session ({} of {:?})",
                        session.received, session.total
                    );
                    return self.violation(400, "invalidRequest", m);
                }
                let (path, conflict, total) = (
                    session.path.clone(),
                    session.conflict.clone(),
                    session.received,
                );
                if conflict == "fail" && self.items.contains_key(&path) {
                    return error(
                        409,
                        "nameAlreadyExists",
                        "The specified item name already exists.",
                    );
                }
                let session = self.sessions.get_mut(&id).unwrap();
                session.gone = true;
                let sha = hex::encode(std::mem::take(&mut session.sha).finalize());
                let q = std::mem::take(&mut session.quick_xor);
                let answer = self.store(&path, &conflict, total, sha, q);
                if std::mem::take(&mut self.lose_commit_answer) {
                    return error(500, "generalException", "injected: committed, answer lost");
                }
                answer
            }
            "PUT" => self.fragment(r, &id, fault),
            _ => error(405, "invalidRequest", "method"),
        }
    }

    fn fragment(&mut self, r: &Request, id: &str, fault: Option<Fault>) -> ResponseTemplate {
        let len = r.body.len() as u64;
        self.fragment_bytes += len;
        let range = r
            .headers
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| {
                let (span, total) = v.split_once('/')?;
                let (a, b) = span.split_once('-')?;
                Some((
                    a.parse::<u64>().ok()?,
                    b.parse::<u64>().ok()?,
                    total.parse::<u64>().ok()?,
                ))
            });
        let Some((start, end, total)) = range else {
            return self.violation(
                400,
                "invalidRange",
                "missing or malformed Content-Range".into(),
            );
        };
        let session = self.sessions.get(id).unwrap();
        if end < start || end - start + 1 != len || end >= total {
            return self.violation(
                400,
                "invalidRange",
                format!("Content-Range {start}-{end}/{total} vs {len} body bytes"),
            );
        }
        if len >= MAX_REQUEST {
            return self.violation(413, "requestTooLarge", format!("fragment of {len} bytes"));
        }
        if end + 1 != total && !len.is_multiple_of(UNIT) {
            return self.violation(
                400,
                "invalidRange",
                format!("fragment of {len} bytes is not a multiple of 320 KiB"),
            );
        }
        if session.total.is_some_and(|t| t != total) {
            return self.violation(400, "invalidRange", format!("total changed to {total}"));
        }
        if start < session.received {
            return error(
                416,
                "invalidRange",
                "The requested range overlaps bytes already received.",
            );
        }
        if start > session.received {
            let m = format!(
                "gap: fragment at {start}, session holds {}",
                session.received
            );
            return self.violation(400, "invalidRange", m);
        }
        let session = self.sessions.get_mut(id).unwrap();
        session.total = Some(total);
        session.sha.update(&r.body);
        session.quick_xor.update(&r.body);
        session.received += len;
        if matches!(fault, Some(Fault::StoreThenFail)) {
            return error(500, "generalException", "injected: stored, answer lost");
        }
        if session.received == total && !session.defer {
            let (path, conflict) = (session.path.clone(), session.conflict.clone());
            if conflict == "fail" && self.items.contains_key(&path) {
                return error(
                    409,
                    "nameAlreadyExists",
                    "The specified item name already exists.",
                );
            }
            let session = self.sessions.get_mut(id).unwrap();
            let sha = hex::encode(std::mem::take(&mut session.sha).finalize());
            let q = std::mem::take(&mut session.quick_xor);
            session.gone = true;
            return self.store(&path, &conflict, total, sha, q);
        }
        ResponseTemplate::new(202).set_body_json(Self::status_json(session))
    }
}
