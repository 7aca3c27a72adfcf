//! A Lambda Runtime API emulator: runs a function's real `bootstrap` the way the Lambda service
//! does, so a test can drive the deployed code with real events (design.md 6e).
//!
//! [`LambdaFunction::start`] serves the Runtime API (`GET /2018-06-01/runtime/invocation/next`,
//! `POST .../invocation/{id}/response`, `.../invocation/{id}/error`, `.../init/error`) on
//! `127.0.0.1:0` and starts the bootstrap with a clean environment: `PATH`, the function's own
//! environment (as Terraform configured it), the variables a Lambda sandbox sets
//! (`AWS_LAMBDA_*`, `AWS_REGION`, `_HANDLER`, `LAMBDA_TASK_ROOT`, ...) and its role's
//! credentials. [`LambdaFunction::invoke`] queues one event with the headers Lambda sends and
//! waits for the function's answer, its error, an init error, the process's exit or the
//! deadline, whichever comes first. The process's stdout and stderr (JSON log lines with
//! `AWS_LAMBDA_LOG_FORMAT=JSON`) are kept for the test. The process dies with the handle.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::moto_api::AccessKey;
use crate::process::{RunDir, ServerProcess, log_tail};

/// The `PATH` of a Lambda sandbox (provided.al2023).
const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin/:/bin:/opt/bin";
/// How long past its deadline a function may take to answer before it counts as timed out
/// (Lambda stops the sandbox at the deadline; the grace covers this emulator's own polling).
const DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// What to run and how the sandbox is configured.
#[derive(Clone, Debug)]
pub struct FunctionSpec {
    /// Function name (`AWS_LAMBDA_FUNCTION_NAME`, the ARN, the log group).
    pub name: String,
    /// The executable Lambda would start (`bootstrap` of the function's package).
    pub bootstrap: PathBuf,
    /// The function's configured environment (`Environment.Variables`).
    pub environment: BTreeMap<String, String>,
    /// The execution role's credentials (`AWS_ACCESS_KEY_ID`, ...); `None` sets none.
    pub credentials: Option<AccessKey>,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, in MB.
    pub memory_mb: u64,
    /// `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: String,
    /// Account id used in the function ARN.
    pub account: String,
}

impl FunctionSpec {
    /// The ARN Lambda passes as `Lambda-Runtime-Invoked-Function-Arn`.
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{}",
            self.region, self.account, self.name
        )
    }

    /// The whole environment the bootstrap starts with (nothing else is inherited).
    pub fn sandbox_env(&self, runtime_api: SocketAddr, task_root: &Path) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("PATH", SANDBOX_PATH.to_string());
        set("TZ", ":UTC".to_string());
        set("LANG", "en_US.UTF-8".to_string());
        set("_HANDLER", "bootstrap".to_string());
        set("LAMBDA_TASK_ROOT", task_root.display().to_string());
        set("LAMBDA_RUNTIME_DIR", task_root.display().to_string());
        set("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string());
        set("AWS_LAMBDA_FUNCTION_NAME", self.name.clone());
        set(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            self.memory_mb.to_string(),
        );
        set("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string());
        set(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", self.name),
        );
        set(
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/29/[$LATEST]0123456789abcdef".to_string(),
        );
        set("AWS_LAMBDA_LOG_FORMAT", "JSON".to_string());
        set("AWS_REGION", self.region.clone());
        set("AWS_DEFAULT_REGION", self.region.clone());
        // The function's own variables win over the defaults above, as in Lambda (which refuses
        // reserved names at configuration time).
        for (k, v) in &self.environment {
            set(k, v.clone());
        }
        if let Some(key) = &self.credentials {
            for (k, v) in key.lambda_env() {
                set(&k, v);
            }
        }
        env.into_iter().collect()
    }
}

/// A failed invocation: what the function reported, or what the emulator saw happen to it.
#[derive(Clone, Debug)]
pub struct FunctionError {
    /// `errorType` of the function's report, or `Runtime.InitError` (init error posted),
    /// `Runtime.ExitError` (process exited), `Sandbox.Timedout` (deadline passed).
    pub error_type: String,
    /// `errorMessage` of the report, or what happened.
    pub error_message: String,
    /// The last lines the process printed, when the process failed (exit, timeout, init).
    pub output: String,
}

impl fmt::Display for FunctionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.error_message)?;
        if !self.output.is_empty() {
            write!(f, "\n--- function output ---\n{}", self.output)?;
        }
        Ok(())
    }
}

impl std::error::Error for FunctionError {}

struct Invocation {
    id: String,
    payload: Bytes,
    deadline_ms: u128,
    reply: oneshot::Sender<Result<Value, FunctionError>>,
}

struct Shared {
    arn: String,
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Result<Value, FunctionError>>>>,
    init_error: watch::Sender<Option<FunctionError>>,
    first_poll: OnceLock<Instant>,
}

/// One running function: its Runtime API server and its bootstrap process.
pub struct LambdaFunction {
    spec: FunctionSpec,
    addr: SocketAddr,
    queue: mpsc::UnboundedSender<Invocation>,
    shared: Arc<Shared>,
    process: Mutex<ServerProcess>,
    log_path: PathBuf,
    started: Instant,
    server: tokio::task::JoinHandle<()>,
    next_id: AtomicU64,
    _dir: RunDir,
}

impl fmt::Debug for LambdaFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LambdaFunction")
            .field("name", &self.spec.name)
            .field("runtime_api", &self.addr)
            .field("log", &self.log_path)
            .finish()
    }
}

impl LambdaFunction {
    /// Serves a Runtime API and starts the bootstrap against it (a cold start). Must be called
    /// within a tokio runtime, which then serves the API.
    pub async fn start(spec: FunctionSpec) -> anyhow::Result<Self> {
        let dir = RunDir::new(&format!("lambda-{}", spec.name))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the Runtime API")?;
        let addr = listener.local_addr()?;
        let (queue, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            arn: spec.arn(),
            queue: tokio::sync::Mutex::new(rx),
            pending: Mutex::new(HashMap::new()),
            init_error: watch::channel(None).0,
            first_poll: OnceLock::new(),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        // The task root holds nothing but the bootstrap, as an unpacked package would.
        let task_root = dir.path().join("task");
        std::fs::create_dir(&task_root)?;
        let log_path = dir.path().join("output.log");
        let env = spec.sandbox_env(addr, &task_root);
        let started = Instant::now();
        let process = ServerProcess::spawn_clean_env(
            &spec.name,
            &spec.bootstrap,
            &task_root,
            &log_path,
            &env,
        )?;
        Ok(Self {
            spec,
            addr,
            queue,
            shared,
            process: Mutex::new(process),
            log_path,
            started,
            server,
            next_id: AtomicU64::new(1),
            _dir: dir,
        })
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// `host:port` of the Runtime API (`AWS_LAMBDA_RUNTIME_API`).
    pub fn runtime_api(&self) -> SocketAddr {
        self.addr
    }

    /// Time from exec to the bootstrap's first `GET /next` (its init phase), once it polled.
    pub fn init_duration(&self) -> Option<Duration> {
        self.shared
            .first_poll
            .get()
            .map(|t| t.duration_since(self.started))
    }

    /// Sends `payload` as one invocation whose deadline is `timeout` from now; the function's
    /// response, or the error it reported, or what happened to its process.
    pub async fn invoke(&self, payload: &Value, timeout: Duration) -> Result<Value, FunctionError> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "{:08x}-{n:04x}-4000-8000-{:012x}",
            std::process::id(),
            epoch_ms()
        );
        let deadline = Instant::now() + timeout;
        let (reply, mut answer) = oneshot::channel();
        let inv = Invocation {
            id,
            payload: Bytes::from(payload.to_string()),
            deadline_ms: epoch_ms() + timeout.as_millis(),
            reply,
        };
        if self.queue.send(inv).is_err() {
            return Err(self.failure("Runtime.Unavailable", "the Runtime API server is gone"));
        }
        let mut init = self.shared.init_error.subscribe();
        loop {
            tokio::select! {
                result = &mut answer => {
                    return result.unwrap_or_else(|_| Err(self.failure("Runtime.Unavailable", "the invocation was dropped")));
                }
                _ = init.changed() => {
                    if let Some(mut e) = init.borrow().clone() {
                        e.output = self.output_tail();
                        return Err(e);
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    let exited = self.process.lock().unwrap_or_else(|e| e.into_inner()).exited();
                    if let Some(status) = exited {
                        // The answer may have been posted just before the exit.
                        if let Ok(result) = answer.try_recv() {
                            return result;
                        }
                        return Err(self.failure("Runtime.ExitError", &format!("the bootstrap exited ({status})")));
                    }
                    if Instant::now() > deadline + DEADLINE_GRACE {
                        self.kill();
                        return Err(self.failure("Sandbox.Timedout", &format!("no answer within the {timeout:?} deadline")));
                    }
                }
            }
        }
    }

    /// Every line the process printed so far (stdout and stderr, in order of arrival).
    pub fn output_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The printed lines that are JSON objects (the function's structured logs).
    pub fn json_logs(&self) -> Vec<Value> {
        self.output_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// The last lines of the process's output, for error messages.
    pub fn output_tail(&self) -> String {
        log_tail(&self.log_path)
    }

    /// True while the bootstrap process runs.
    pub fn is_running(&self) -> bool {
        self.process
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_running()
    }

    /// Stops the process (SIGTERM, then SIGKILL).
    pub fn kill(&self) {
        self.process
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .kill();
    }

    fn failure(&self, error_type: &str, message: &str) -> FunctionError {
        FunctionError {
            error_type: error_type.to_string(),
            error_message: format!("{}: {message}", self.spec.name),
            output: self.output_tail(),
        }
    }
}

impl Drop for LambdaFunction {
    fn drop(&mut self) {
        self.kill();
        self.server.abort();
    }
}

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(shared.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn respond(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response")
}

/// The error a function posts: `{"errorType": ..., "errorMessage": ...}` (the type may also come
/// in the `Lambda-Runtime-Function-Error-Type` header).
fn function_error(header_type: Option<String>, body: &[u8]) -> FunctionError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |k: &str| v[k].as_str().map(str::to_string);
    FunctionError {
        error_type: text("errorType")
            .or(header_type)
            .unwrap_or_else(|| "Unhandled".to_string()),
        error_message: text("errorMessage")
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
        output: String::new(),
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const PREFIX: &str = "/2018-06-01/runtime/";
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let error_type = req
        .headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Ok(respond(
            StatusCode::NOT_FOUND,
            r#"{"errorType":"NotFound"}"#,
        ));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["invocation", "next"]) => {
            let _ = shared.first_poll.set(Instant::now());
            // One poll at a time, as a sandbox runs one invocation at a time.
            let next = shared.queue.lock().await.recv().await;
            let Some(inv) = next else {
                // The handle is gone: keep the runtime waiting, like an idle sandbox.
                std::future::pending::<()>().await;
                unreachable!()
            };
            shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(inv.id.clone(), inv.reply);
            let resp = Response::builder()
                .header("content-type", "application/json")
                .header("lambda-runtime-aws-request-id", &inv.id)
                .header("lambda-runtime-deadline-ms", inv.deadline_ms.to_string())
                .header("lambda-runtime-invoked-function-arn", &shared.arn)
                .header(
                    "lambda-runtime-trace-id",
                    format!(
                        "Root=1-{:08x}-{:024x};Parent={:016x};Sampled=0",
                        epoch_ms() / 1000,
                        epoch_ms(),
                        epoch_ms()
                    ),
                )
                .body(Full::new(inv.payload))
                .expect("static response");
            Ok(resp)
        }
        ("POST", ["invocation", id, kind @ ("response" | "error")]) => {
            let reply = shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(*id);
            let Some(reply) = reply else {
                return Ok(respond(
                    StatusCode::BAD_REQUEST,
                    r#"{"errorType":"InvalidRequestID","errorMessage":"unknown or already answered request id"}"#,
                ));
            };
            let result = if *kind == "response" {
                serde_json::from_slice::<Value>(&body).map_err(|e| FunctionError {
                    error_type: "Runtime.InvalidResponse".to_string(),
                    error_message: format!(
                        "response is not JSON ({e}): {}",
                        String::from_utf8_lossy(&body)
                    ),
                    output: String::new(),
                })
            } else {
                Err(function_error(error_type, &body))
            };
            let _ = reply.send(result);
            Ok(respond(StatusCode::ACCEPTED, r#"{"status":"OK"}"#))
        }
        ("POST", ["init", "error"]) => {
            let mut e = function_error(error_type, &body);
            e.error_message = format!("init error: {}", e.error_message);
            shared.init_error.send_replace(Some(e));
            Ok(respond(StatusCode::ACCEPTED, r#"{"status":"OK"}"#))
        }
        _ => Ok(respond(
            StatusCode::NOT_FOUND,
            r#"{"errorType":"NotFound","errorMessage":"no such Runtime API route"}"#,
        )),
    }
}
