//! Webhook ingest, free of any HTTP framework: authenticate, validate, match routes, and write
//! one transfer job per matching route. The Lambda function and the local server both adapt
//! their requests to `WebhookRequest` and call `WebhookService::handle`.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use std::sync::Arc;

use bytes::Bytes;
use globset::GlobMatcher;
use http::{HeaderMap, Method};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{RouteConfig, WebhookConfig};
use crate::job::{TransferJob, job_id, now_rfc3339};
use crate::layout::job_key;
use crate::names;
use crate::retry::RetryPolicy;
use crate::secret::expose;
use crate::source::{Source, SourceError, SourceObject};
use crate::state::{PutMode, StateError, StateStore, StateStoreExt};

/// A webhook call as any HTTP front end sees it.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// HTTP method.
    pub method: Method,
    /// Raw query string, without `?`.
    pub query: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body (already base64-decoded by the front end).
    pub body: Bytes,
    /// Id to find this request in logs (the Lambda request id, or a generated one).
    pub correlation_id: String,
}

/// What a webhook call did, overall (`accepted` when at least one route's job is new) and per
/// route's job (`accepted` or `duplicate`). The same words are the body's `status` fields and the
/// `Outcome` dimension of the webhook metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookOutcome {
    /// A new job was written (202).
    Accepted,
    /// Every job already existed: a repeated or late call (200).
    Duplicate,
    /// The call was refused (4xx/5xx with a reason).
    Refused,
}

impl WebhookOutcome {
    /// The snake_case name, as in the body and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Accepted => "accepted",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::Refused => "refused",
        }
    }
}

/// One matching route's job, as the answer lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoutedJob {
    /// The route.
    pub route: String,
    /// The job's id (the same for every call about the same file version and route).
    pub job_id: String,
    /// Where the job is in the state store (`jobs/...`).
    pub job_key: String,
    /// `accepted` (written by this call) or `duplicate` (it existed).
    pub status: WebhookOutcome,
}

/// The answer: status code and a JSON body, with the typed outcome and jobs the body was made
/// from (front ends that run jobs themselves, like the local runner, read these, not the JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// Seconds for a `Retry-After` header (on 503).
    pub retry_after_secs: Option<u64>,
    /// What the call did.
    pub outcome: WebhookOutcome,
    /// The matching routes' jobs (empty when refused).
    pub jobs: Vec<RoutedJob>,
}

impl WebhookResponse {
    /// The jobs this call wrote (a front end that runs jobs queues exactly these).
    pub fn accepted_jobs(&self) -> impl Iterator<Item = &RoutedJob> {
        self.jobs
            .iter()
            .filter(|j| j.status == WebhookOutcome::Accepted)
    }
}

/// A route with its glob compiled: which webhook files it takes. The reconciliation sweep uses
/// the same matcher, so both take exactly the same names.
pub(crate) struct CompiledRoute {
    pub(crate) config: RouteConfig,
    glob: Option<GlobMatcher>,
}

impl CompiledRoute {
    pub(crate) fn compile(route: &RouteConfig) -> Result<Self, globset::Error> {
        Ok(Self {
            glob: route
                .file_glob
                .as_deref()
                .map(crate::names::compile_glob)
                .transpose()?,
            config: route.clone(),
        })
    }

    /// Whether the route takes `file` from `container` (glob and name filter).
    pub(crate) fn matches(&self, container: &str, file: &str) -> bool {
        self.config.container.as_deref() == Some(container)
            && self.glob.as_ref().is_none_or(|g| g.is_match(file))
            && self
                .config
                .name_contains
                .as_deref()
                .is_none_or(|s| file.contains(s))
    }

    /// The longest folder prefix every name the route takes starts with (the glob's literal
    /// folders: `exports/hmis/*.zip` -> `exports/hmis/`), so a listing can start there.
    pub(crate) fn list_prefix(&self) -> &str {
        let Some(glob) = self.config.file_glob.as_deref() else {
            return "";
        };
        let literal = glob
            .find(['*', '?', '[', '{', '\\'])
            .map_or(glob, |i| &glob[..i]);
        literal.rfind('/').map_or("", |i| &literal[..=i])
    }
}

/// Handles webhook calls. Built once per cold start.
pub struct WebhookService {
    config: WebhookConfig,
    token_digest: [u8; 32],
    routes: Vec<CompiledRoute>,
    sources: BTreeMap<String, Arc<dyn Source>>,
    state: Arc<dyn StateStore>,
    retry: RetryPolicy,
}

fn reject(
    status: u16,
    error: &str,
    reason: impl Into<String>,
    correlation_id: &str,
) -> WebhookResponse {
    let reason = reason.into();
    tracing::warn!(status, error, %reason, correlation_id, "webhook rejected");
    WebhookResponse {
        status,
        body: json!({"error": error, "reason": reason, "correlation_id": correlation_id}),
        retry_after_secs: if status == 503 { Some(30) } else { None },
        outcome: WebhookOutcome::Refused,
        jobs: Vec::new(),
    }
}

impl WebhookService {
    /// A service over the given routes and clients; `token` is the resolved shared secret.
    pub fn new(
        config: WebhookConfig,
        token: SecretString,
        routes: &[RouteConfig],
        sources: BTreeMap<String, Arc<dyn Source>>,
        state: Arc<dyn StateStore>,
        retry: RetryPolicy,
    ) -> Result<Self, globset::Error> {
        let routes = routes
            .iter()
            .map(CompiledRoute::compile)
            .collect::<Result<Vec<_>, globset::Error>>()?;
        let token_digest = Sha256::digest(expose(&token).as_bytes()).into();
        Ok(Self {
            config,
            token_digest,
            routes,
            sources,
            state,
            retry,
        })
    }

    /// Handles one call. Never panics on input; every rejection carries a reason. Counts the
    /// call in `WebhookRequests` by `Outcome` (accepted, duplicate, refused) and `Status`.
    pub async fn handle(&self, req: WebhookRequest) -> WebhookResponse {
        crate::metrics::invocation("webhook-ingest", async {
            let answer = self.answer(req).await;
            crate::metrics::add(
                "WebhookRequests",
                crate::metrics::Unit::Count,
                1.0,
                &[
                    ("Outcome", answer.outcome.as_str()),
                    ("Status", &answer.status.to_string()),
                ],
            );
            answer
        })
        .await
    }

    async fn answer(&self, req: WebhookRequest) -> WebhookResponse {
        let cid = req.correlation_id.as_str();
        if !matches!(req.method, Method::GET | Method::POST | Method::PUT) {
            return reject(
                405,
                "method_not_allowed",
                format!("{} is not accepted; use POST, PUT or GET", req.method),
                cid,
            );
        }
        if !self.authenticated(&req) {
            return reject(401, "unauthorized", "missing or wrong token", cid);
        }
        if req.body.len() > self.config.max_body_bytes {
            return reject(
                413,
                "body_too_large",
                format!(
                    "body is {} bytes; the limit is {}",
                    req.body.len(),
                    self.config.max_body_bytes
                ),
                cid,
            );
        }
        let fields = match parse_fields(&req) {
            Ok(f) => f,
            Err((status, error, reason)) => return reject(status, error, reason, cid),
        };
        let container = fields.get("container").map(String::as_str).unwrap_or("");
        let file = fields.get("file").map(String::as_str).unwrap_or("");
        for (field, value) in [("container", container), ("file", file)] {
            // A whitespace-only value is present but unsafe: the name checks below say so.
            if value.is_empty() {
                return reject(
                    400,
                    "missing_field",
                    format!("{field} is missing or empty"),
                    cid,
                );
            }
        }
        if let Err(e) = names::validate_container("container", container) {
            return reject(400, "invalid_name", e.to_string(), cid);
        }
        if let Err(e) = names::validate_object_name("file", file, self.config.max_name_bytes) {
            return reject(400, "invalid_name", e.to_string(), cid);
        }
        let matched: Vec<&RouteConfig> = self
            .routes
            .iter()
            .filter(|r| r.matches(container, file))
            .map(|r| &r.config)
            .collect();
        if matched.is_empty() {
            return reject(
                422,
                "no_route",
                format!("no route takes file {file:?} from container {container:?}"),
                cid,
            );
        }
        self.create_jobs(container, file, &matched, cid).await
    }

    fn authenticated(&self, req: &WebhookRequest) -> bool {
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        let presented = header("x-ferry-token")
            .map(str::to_string)
            .or_else(|| {
                header("authorization")
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_string)
            })
            .or_else(|| {
                url::form_urlencoded::parse(req.query.as_deref().unwrap_or("").as_bytes())
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.into_owned())
            });
        match presented {
            // Compare digests so neither content nor length leaks through timing.
            Some(t) => Sha256::digest(t.as_bytes())
                .as_slice()
                .ct_eq(&self.token_digest)
                .into(),
            None => false,
        }
    }

    async fn create_jobs(
        &self,
        container: &str,
        file: &str,
        routes: &[&RouteConfig],
        cid: &str,
    ) -> WebhookResponse {
        // Each source's object is read once, however many routes share it.
        let mut objects: BTreeMap<&str, SourceObject> = BTreeMap::new();
        for route in routes {
            if objects.contains_key(route.source.as_str()) {
                continue;
            }
            let Some(source) = self.sources.get(&route.source) else {
                return reject(
                    500,
                    "misconfigured",
                    format!("route {:?} names a missing source", route.name),
                    cid,
                );
            };
            match source.stat(container, file).await {
                Ok(o) => {
                    objects.insert(route.source.as_str(), o);
                }
                Err(SourceError::NotFound(_)) => {
                    return reject(
                        422,
                        "file_not_found",
                        format!("{file:?} does not exist in container {container:?}"),
                        cid,
                    );
                }
                Err(e @ SourceError::AccessDenied { .. }) => {
                    tracing::error!(correlation_id = cid, source = %route.source, error = %e, "source credentials refused");
                    return reject(502, "source_access_denied", e.to_string(), cid);
                }
                Err(e) => return reject(503, "source_unavailable", e.to_string(), cid),
            }
        }
        // The routes' jobs are independent: write them at once, so latency does not grow with
        // the number of matching routes.
        let writes = routes.iter().map(|route| {
            let object = objects[route.source.as_str()].clone();
            self.write_job(route, object, file, cid)
        });
        let mut jobs = Vec::new();
        for written in join_all(writes).await {
            match written {
                Ok(job) => jobs.push(job),
                Err(e) => return reject(503, "state_unavailable", e.to_string(), cid),
            }
        }
        let outcome = if jobs.iter().any(|j| j.status == WebhookOutcome::Accepted) {
            WebhookOutcome::Accepted
        } else {
            WebhookOutcome::Duplicate
        };
        WebhookResponse {
            status: if outcome == WebhookOutcome::Accepted {
                202
            } else {
                200
            },
            body: json!({"status": outcome, "jobs": jobs, "correlation_id": cid}),
            retry_after_secs: None,
            outcome,
            jobs,
        }
    }

    /// Writes one route's job create-once.
    async fn write_job(
        &self,
        route: &RouteConfig,
        object: SourceObject,
        file: &str,
        cid: &str,
    ) -> Result<RoutedJob, StateError> {
        let (id, key, written) =
            create_route_job(self.state.as_ref(), &self.retry, route, object, cid).await?;
        let status = match written {
            JobWrite::Created => {
                tracing::info!(correlation_id = cid, job_id = %id, route = %route.name, file, "job created");
                WebhookOutcome::Accepted
            }
            JobWrite::Exists => {
                tracing::info!(correlation_id = cid, job_id = %id, route = %route.name, file, "duplicate webhook; job exists");
                WebhookOutcome::Duplicate
            }
        };
        crate::metrics::add(
            "WebhookJobs",
            crate::metrics::Unit::Count,
            1.0,
            &[("Route", &route.name), ("Outcome", status.as_str())],
        );
        Ok(RoutedJob {
            route: route.name.clone(),
            job_id: id,
            job_key: key,
            status,
        })
    }
}

/// What a create-once job write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobWrite {
    /// The job is new: its delivery starts.
    Created,
    /// A job with this id was already there (a duplicate webhook, or a blob already swept).
    Exists,
}

/// The deterministic id and key of `object`'s job on a webhook route.
pub(crate) fn route_job_id(route: &RouteConfig, object: &SourceObject) -> (String, String) {
    let id = job_id(&route.name, &route.source, object);
    let key = job_key(&route.name, &id);
    (id, key)
}

/// Writes the job of `object` for a webhook route, create-once, with the deterministic id
/// (`job::job_id`) that the webhook and the reconciliation sweep both use: whichever comes
/// second finds the job and delivers nothing again. Returns (job id, job key, what happened).
pub(crate) async fn create_route_job(
    state: &dyn StateStore,
    retry: &RetryPolicy,
    route: &RouteConfig,
    object: SourceObject,
    cid: &str,
) -> Result<(String, String, JobWrite), StateError> {
    let (id, key) = route_job_id(route, &object);
    let job = TransferJob {
        id: id.clone(),
        route: route.name.clone(),
        source: route.source.clone(),
        object,
        destinations: route.destinations.clone(),
        target_folder: route.target_folder.clone(),
        name_template: route.name_template.clone(),
        after_delivery: route.after_delivery,
        encrypt: route.encrypt.is_some(),
        correlation_id: cid.to_string(),
        created_at: now_rfc3339(),
        export: None,
    };
    let written = match retry
        .run("write job", || state.put_json(&key, &job, PutMode::Create))
        .await
    {
        Ok(_) => JobWrite::Created,
        Err(StateError::AlreadyExists { .. }) => JobWrite::Exists,
        Err(e) => return Err(e),
    };
    Ok((id, key, written))
}

type Rejection = (u16, &'static str, String);

/// Reads `container` and `file` (field names case-insensitive) from the body or query string.
fn parse_fields(req: &WebhookRequest) -> Result<BTreeMap<String, String>, Rejection> {
    let from_pairs = |text: &[u8]| -> BTreeMap<String, String> {
        url::form_urlencoded::parse(text)
            .filter(|(k, _)| k != "token")
            .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
            .collect()
    };
    if req.method == Method::GET || req.body.is_empty() {
        return Ok(from_pairs(req.query.as_deref().unwrap_or("").as_bytes()));
    }
    let content_type = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match content_type.as_str() {
        "application/json" => {
            let value: Value = serde_json::from_slice(&req.body)
                .map_err(|e| (400, "bad_json", format!("body is not valid JSON: {e}")))?;
            let Value::Object(map) = value else {
                return Err((400, "bad_json", "body must be a JSON object".into()));
            };
            let mut out = BTreeMap::new();
            for (k, v) in map {
                let k = k.to_ascii_lowercase();
                if k == "container" || k == "file" {
                    let Value::String(s) = v else {
                        return Err((400, "bad_field", format!("{k} must be a string")));
                    };
                    out.insert(k, s);
                }
            }
            Ok(out)
        }
        "application/x-www-form-urlencoded" => Ok(from_pairs(&req.body)),
        "" => Err((
            415,
            "unsupported_media_type",
            "Content-Type is missing; use application/json or application/x-www-form-urlencoded"
                .into(),
        )),
        other => Err((
            415,
            "unsupported_media_type",
            format!(
                "{other} is not accepted; use application/json or application/x-www-form-urlencoded"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, ct: &str, body: &str, query: Option<&str>) -> WebhookRequest {
        let mut headers = HeaderMap::new();
        if !ct.is_empty() {
            headers.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        }
        WebhookRequest {
            method,
            query: query.map(str::to_string),
            headers,
            body: Bytes::from(body.to_string()),
            correlation_id: "c".into(),
        }
    }

    #[test]
    fn list_prefix_is_the_globs_literal_folders() {
        let prefix = |glob: Option<&str>| {
            let route: RouteConfig = serde_json::from_value(json!({
                "name": "r", "source": "s", "container": "c", "destinations": ["d"],
                "file_glob": glob,
            }))
            .unwrap();
            CompiledRoute::compile(&route)
                .unwrap()
                .list_prefix()
                .to_string()
        };
        assert_eq!(prefix(None), "");
        assert_eq!(prefix(Some("*.zip")), "");
        assert_eq!(prefix(Some("HMIS*.zip")), "");
        assert_eq!(prefix(Some("exports/hmis/*.zip")), "exports/hmis/");
        assert_eq!(prefix(Some("exports/h*/**/*.csv")), "exports/");
        assert_eq!(prefix(Some("exports/a.csv")), "exports/");
    }

    #[test]
    fn fields_from_each_encoding() {
        let j = parse_fields(&req(
            Method::POST,
            "application/json; charset=utf-8",
            r#"{"Container":"c1","file":"a.zip","x":1}"#,
            None,
        ))
        .unwrap();
        assert_eq!(
            (j["container"].as_str(), j["file"].as_str()),
            ("c1", "a.zip")
        );
        let f = parse_fields(&req(
            Method::PUT,
            "application/x-www-form-urlencoded",
            "container=c1&file=a+b.zip",
            None,
        ))
        .unwrap();
        assert_eq!(f["file"], "a b.zip");
        let q = parse_fields(&req(
            Method::GET,
            "",
            "",
            Some("container=c1&file=x%2Fy.csv&token=t"),
        ))
        .unwrap();
        assert_eq!(q["file"], "x/y.csv");
        assert!(!q.contains_key("token"));
        assert_eq!(
            parse_fields(&req(Method::POST, "text/plain", "x", None))
                .unwrap_err()
                .0,
            415
        );
        assert_eq!(
            parse_fields(&req(Method::POST, "application/json", "{", None))
                .unwrap_err()
                .0,
            400
        );
        assert_eq!(
            parse_fields(&req(
                Method::POST,
                "application/json",
                r#"{"file":3}"#,
                None
            ))
            .unwrap_err()
            .0,
            400
        );
    }

    // ---- The service end to end on in-process parts: a memory source and the memory store.

    mod service {
        use std::sync::Arc;

        use super::*;
        use crate::state::MemoryStateStore;
        use crate::testing::MemorySource;

        const TOKEN: &str = "s3cr3t-token";

        fn routes() -> Vec<RouteConfig> {
            serde_json::from_value(json!([
                {"name": "hmis", "source": "ct", "container": "exports", "destinations": ["partner"],
                 "file_glob": "hmis/*.csv"},
                {"name": "archive", "source": "ct", "container": "exports", "destinations": ["s3", "disk"],
                 "file_glob": "**/*.csv"}
            ]))
            .unwrap()
        }

        fn service() -> (WebhookService, Arc<MemorySource>, Arc<MemoryStateStore>) {
            let source = Arc::new(MemorySource::default());
            let state = Arc::new(MemoryStateStore::new());
            let config: WebhookConfig =
                serde_json::from_value(json!({"token": {"env": "UNUSED_IN_THIS_TEST"}})).unwrap();
            let sources = BTreeMap::from([("ct".to_string(), source.clone() as Arc<dyn Source>)]);
            let service = WebhookService::new(
                config,
                SecretString::from(TOKEN),
                &routes(),
                sources,
                state.clone(),
                RetryPolicy::default(),
            )
            .unwrap();
            (service, source, state)
        }

        fn call(token: &str, container: &str, file: &str) -> WebhookRequest {
            let mut r = req(
                Method::POST,
                "application/json",
                &json!({"container": container, "file": file}).to_string(),
                None,
            );
            r.headers.insert("x-ferry-token", token.parse().unwrap());
            r
        }

        #[tokio::test]
        async fn a_new_file_is_accepted_with_one_job_per_matching_route() {
            let (service, source, state) = service();
            let object = source.put("exports", "hmis/clients.csv", &b"id,name\n1,A\n"[..]);
            let answer = service
                .handle(call(TOKEN, "exports", "hmis/clients.csv"))
                .await;
            assert_eq!(answer.status, 202, "{}", answer.body);
            assert_eq!(answer.body["status"], "accepted");
            let jobs = answer.body["jobs"].as_array().unwrap();
            assert_eq!(jobs.len(), 2, "both routes take it: {jobs:?}");
            for job in jobs {
                assert_eq!(job["status"], "accepted");
                let key = job["job_key"].as_str().unwrap();
                let (stored, _) = state.get_json::<TransferJob>(key).await.unwrap().unwrap();
                assert_eq!(stored.id, job["job_id"].as_str().unwrap());
                assert_eq!(stored.route, job["route"].as_str().unwrap());
                assert_eq!(stored.object, object, "the job pins the version it saw");
                assert_eq!(stored.correlation_id, "c");
            }
            let mut keys = state.keys();
            keys.sort();
            assert_eq!(keys.len(), 2);
            assert!(keys[0].starts_with("jobs/archive/") && keys[1].starts_with("jobs/hmis/"));
            let (archive, _) = state
                .get_json::<TransferJob>(&keys[0])
                .await
                .unwrap()
                .unwrap();
            assert_eq!(archive.destinations, vec!["s3", "disk"]);
        }

        #[tokio::test]
        async fn the_same_file_again_is_a_duplicate_and_a_new_version_a_new_job() {
            let (service, source, state) = service();
            source.put("exports", "other/a.csv", &b"v1"[..]);
            let first = service.handle(call(TOKEN, "exports", "other/a.csv")).await;
            assert_eq!(first.status, 202);
            let before = state
                .get(first.body["jobs"][0]["job_key"].as_str().unwrap())
                .await
                .unwrap()
                .unwrap();
            let again = service.handle(call(TOKEN, "exports", "other/a.csv")).await;
            assert_eq!(again.status, 200, "{}", again.body);
            assert_eq!(again.body["status"], "duplicate");
            assert_eq!(
                again.body["jobs"][0]["job_id"],
                first.body["jobs"][0]["job_id"]
            );
            let after = state
                .get(first.body["jobs"][0]["job_key"].as_str().unwrap())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(after.body, before.body, "the first job is left as it was");
            assert_eq!(state.keys().len(), 1);
            // The file replaced under the same name is another version: another job.
            source.put("exports", "other/a.csv", &b"v2"[..]);
            let replaced = service.handle(call(TOKEN, "exports", "other/a.csv")).await;
            assert_eq!(replaced.status, 202);
            assert_ne!(
                replaced.body["jobs"][0]["job_id"],
                first.body["jobs"][0]["job_id"]
            );
            assert_eq!(state.keys().len(), 2);
        }

        #[tokio::test]
        async fn refused_calls_write_nothing() {
            let (service, source, state) = service();
            source.put("exports", "hmis/a.csv", &b"x"[..]);
            let cases = [
                (call("wrong", "exports", "hmis/a.csv"), 401, "unauthorized"),
                (call(TOKEN, "exports", "hmis/a.txt"), 422, "no_route"),
                (call(TOKEN, "other", "hmis/a.csv"), 422, "no_route"),
                (
                    call(TOKEN, "exports", "hmis/missing.csv"),
                    422,
                    "file_not_found",
                ),
                (
                    call(TOKEN, "exports", "hmis/a\u{202e}vsc.csv"),
                    400,
                    "invalid_name",
                ),
                (call(TOKEN, "exports", ""), 400, "missing_field"),
            ];
            for (request, status, error) in cases {
                let answer = service.handle(request).await;
                assert_eq!(
                    (answer.status, answer.body["error"].as_str()),
                    (status, Some(error)),
                    "{}",
                    answer.body
                );
                assert!(
                    answer.body["reason"]
                        .as_str()
                        .is_some_and(|r| !r.is_empty())
                );
            }
            assert!(
                state.requests().is_empty(),
                "no refused call touches state: {:?}",
                state.requests()
            );
        }

        #[tokio::test]
        async fn an_accepted_job_is_delivered_by_the_engine() {
            use crate::dest::Destination;
            use crate::dest::local_dir::LocalDirDestination;
            use crate::engine::{JobOutcome, TransferEngine};
            let (service, source, state) = service();
            source.put("exports", "hmis/clients.csv", &b"id,name\n1,A\n"[..]);
            let answer = service
                .handle(call(TOKEN, "exports", "hmis/clients.csv"))
                .await;
            let key = answer.body["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["route"] == "hmis")
                .unwrap()["job_key"]
                .as_str()
                .unwrap()
                .to_string();
            let dir = tempfile::tempdir().unwrap();
            let engine = TransferEngine::new(
                state.clone(),
                BTreeMap::from([("ct".to_string(), source.clone() as Arc<dyn Source>)]),
                BTreeMap::from([(
                    "partner".to_string(),
                    Arc::new(LocalDirDestination::new(dir.path())) as Arc<dyn Destination>,
                )]),
                RetryPolicy::default(),
                3,
            );
            let outcome = engine.run(&key, 1).await.unwrap();
            assert!(
                matches!(outcome, JobOutcome::Completed { delivered: 1, .. }),
                "{outcome:?}"
            );
            assert_eq!(
                std::fs::read(dir.path().join("hmis/clients.csv")).unwrap(),
                b"id,name\n1,A\n"
            );
        }
    }
}
