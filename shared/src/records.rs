//! Records from export files into record sinks: a route with `records` has the lines of each of
//! its files (jsonl, or xml lines; decompressed when gzip'd) streamed into a record sink in
//! chunks, after every destination has its receipt and before the route's `after_delivery`.
//!
//! Identity. The records of one file form their own "view" named `<route>/<job-id>` (a view
//! name never contains `/`, so this never meets a view sync's rows); each record's id is
//! `<correlationId>:<line>` (the job id for webhook files, which have no correlationId) and its
//! cursor is its line number. The sinks are idempotent per (view, record id, cursor): PostgreSQL
//! upserts only a greater cursor, the S3 JSON Lines sink names each object by the cursor its
//! chunk starts after (a rerun cuts the same chunks, so it overwrites), and the HTTP sink sends
//! `Idempotency-Key: <record id>:<line>`. A rerun after a failure at line k therefore applies
//! nothing twice. Nothing relates the records of two files: files may arrive in any order.
//!
//! Memory: one chunk (`chunk_lines` lines of at most `max_line_bytes`) at a time; the file is
//! read as a stream, decompressed with the caps of [`crate::transform`].
//!
//! The bad-line rule: the file is validated while it streams. The first line that is not one
//! JSON object (`jsonl`) or one XML element (`xml_lines`), is not UTF-8, or is longer than
//! `max_line_bytes` stops the load: the lines before it are loaded (the chunk in hand is flushed)
//! and stay loaded, and the job is dead-lettered (`failed/<job-id>.json`) naming the line number
//! and the reason. A file larger than `max_total_bytes` (decompressed) is refused the same way.
//! After the file is fixed, a replay loads it again from the start: the lines already loaded
//! are recognised by their keys and not applied again.
//!
//! A finished load writes its receipt (`done/<job-id>/records/<sink>.json`); a replay of a job
//! whose load has a receipt skips it.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{RecordFormat, RecordsConfig};
use crate::job::{TransferJob, now_rfc3339};
use crate::layout::records_receipt_key;
use crate::metrics::{self, Unit};
use crate::retry::{RetryPolicy, RetryStop, Retryable};
use crate::sink::{Chunk, Sink, SinkError};
use crate::source::{Source, SourceError, source_error_in};
use crate::state::{PutMode, StateError, StateStore, StateStoreExt};
use crate::transform::{Limits, LineSplitter, TransformError, gunzip, transform_error_in};
use crate::verify::{VerifyError, verifying};
use crate::view_sync::record::{Cursor, Record};

/// A route's record loading as blob-copy built it: the sink (built once) and the settings.
pub struct RecordsPlan {
    /// The sink's name in the config.
    pub sink_name: String,
    /// The sink.
    pub sink: Arc<dyn Sink>,
    /// The route's `records` settings.
    pub config: RecordsConfig,
}

impl RecordsPlan {
    /// The name the load goes by in dead letters and progress (`records/<sink>`).
    pub fn label(&self) -> String {
        format!("records/{}", self.sink_name)
    }
}

/// What a finished load did; written to `done/<job-id>/records/<sink>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsReceipt {
    /// Job id.
    pub job_id: String,
    /// Sink name.
    pub sink: String,
    /// Sink kind (`postgres`, `s3_jsonl`, `http`).
    pub kind: String,
    /// Where the last chunk went (secret-free).
    pub location: String,
    /// The view name the records carry in the sink (`<route>/<job-id>`).
    pub view: String,
    /// `jsonl` or `xml_lines`.
    pub format: String,
    /// Records (non-empty lines) loaded.
    pub records: u64,
    /// Of those, newly applied by this run, where the sink can tell (PostgreSQL); else `records`.
    pub applied: u64,
    /// Of those, already present from an earlier run (`records - applied`).
    pub already_present: u64,
    /// Chunks delivered.
    pub chunks: u64,
    /// Bytes of the file as stored (before decompression).
    pub source_bytes: u64,
    /// Hex SHA-256 of the file as stored.
    pub source_sha256: String,
    /// RFC 3339 time the load finished.
    pub loaded_at: String,
    /// Milliseconds the load took.
    pub duration_ms: u64,
}

/// Why a load stopped.
#[derive(Debug, Error)]
pub enum RecordsError {
    /// A line broke the bad-line rule (see the module doc).
    #[error(
        "line {line}: {reason}; the {loaded} records before it are loaded and stay loaded; fix the file and replay (nothing is loaded twice)"
    )]
    BadLine {
        /// The bad line's number, from 1.
        line: u64,
        /// Why the line was refused.
        reason: String,
        /// Records loaded before it stopped.
        loaded: u64,
    },
    /// The file as a whole was refused (too large, not gzip).
    #[error("file refused: {0}")]
    Refused(String),
    /// Reading the source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The stream did not match what the source announced (size, MD5) or broke off.
    #[error("source stream failed verification: {0}")]
    Verification(String),
    /// The sink failed.
    #[error("sink {sink}: {error}")]
    Sink {
        /// The sink.
        sink: String,
        /// The underlying error.
        error: SinkError,
    },
    /// The state store failed (receipt).
    #[error(transparent)]
    State(#[from] StateError),
    /// The run must stop (deadline, shutdown) with `loaded` records of the file loaded; the next
    /// run starts over and skips them by their keys.
    #[error("stopped after {loaded} records")]
    Interrupted {
        /// Records loaded before it stopped.
        loaded: u64,
    },
}

impl Retryable for RecordsError {
    fn is_retryable(&self) -> bool {
        match self {
            RecordsError::BadLine { .. } | RecordsError::Refused(_) => false,
            RecordsError::Source(e) => e.is_retryable(),
            RecordsError::Verification(_) | RecordsError::Interrupted { .. } => true,
            RecordsError::Sink { error, .. } => error.is_retryable(),
            RecordsError::State(e) => e.is_retryable(),
        }
    }
    fn retries_stopped(self, _why: RetryStop) -> Self {
        self
    }
}

impl RecordsError {
    /// The failure's kind for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RecordsError::BadLine { .. } => "bad_line",
            RecordsError::Refused(_) => "refused",
            RecordsError::Source(_) => "source",
            RecordsError::Verification(_) => "verification",
            RecordsError::Sink { .. } => "sink",
            RecordsError::State(_) => "state",
            RecordsError::Interrupted { .. } => "interrupted",
        }
    }
}

/// `<route>/<job-id>`: the view name of a job's records.
pub fn view_name(job: &TransferJob) -> String {
    format!("{}/{}", job.route, job.id)
}

/// The first part of each record id: the file's `correlationId` (pub/sub exports), else the
/// job id.
fn record_key_base(job: &TransferJob) -> &str {
    match job.export {
        Some(_) if !job.correlation_id.is_empty() => &job.correlation_id,
        _ => &job.id,
    }
}

/// Is the stored file gzip: the notification says so (pub/sub exports), else its name ends in
/// `.gz`.
fn is_gzip(job: &TransferJob) -> bool {
    match &job.export {
        Some(export) => export.is_gzip(),
        None => {
            let name = job.object.name.as_bytes();
            name.len() > 3 && name[name.len() - 3..].eq_ignore_ascii_case(b".gz")
        }
    }
}

/// Loads the job's file into the plan's sink, unless its receipt shows it was done. Returns the
/// receipt written (`None`: already done). `stopped` is asked before each chunk.
pub async fn load(
    state: &dyn StateStore,
    source: &dyn Source,
    job: &TransferJob,
    plan: &RecordsPlan,
    retry: &RetryPolicy,
    stopped: &(dyn Fn() -> bool + Sync),
) -> Result<Option<RecordsReceipt>, RecordsError> {
    let key = records_receipt_key(&job.id, &plan.sink_name);
    if retry
        .run("check records receipt", || state.get(&key))
        .await?
        .is_some()
    {
        tracing::info!(sink = %plan.sink_name, "records already loaded");
        return Ok(None);
    }
    let started = Instant::now();
    let cfg = &plan.config;
    let object = source.resolve(&job.object).await?;
    let gzip = is_gzip(job);
    if !gzip && object.size > cfg.max_total_bytes {
        return Err(RecordsError::Refused(format!(
            "{} bytes is more than records.max_total_bytes ({})",
            object.size, cfg.max_total_bytes
        )));
    }
    let reader = source.open(&object).await?;
    let (reader, digests) = verifying(reader, object.size, object.content_md5.clone());
    let reader = if gzip {
        gunzip(
            reader,
            Limits {
                max_bytes: cfg.max_total_bytes,
                max_line_bytes: Some(cfg.max_line_bytes),
            },
        )
    } else {
        reader
    };
    let mut lines = LineSplitter::new(reader, cfg.max_line_bytes);
    let mut loader = Loader {
        plan,
        view: view_name(job),
        base: record_key_base(job).to_string(),
        retry,
        stopped,
        pending: Vec::with_capacity(cfg.chunk_lines.min(10_000)),
        after: None,
        records: 0,
        applied: 0,
        chunks: 0,
        location: String::new(),
    };
    let read = loader.read_all(&mut lines).await;
    if let Err(RecordsError::BadLine { .. }) = &read {
        // The rule: every line before the bad one is loaded.
        loader.flush().await?;
    }
    let loaded = loader.records;
    match read {
        Err(RecordsError::BadLine { line, reason, .. }) => {
            return Err(RecordsError::BadLine {
                line,
                reason,
                loaded,
            });
        }
        other => other?,
    }
    loader.flush().await?;
    let Some(digests) = digests.get() else {
        return Err(RecordsError::Verification(
            "the data ended before the file did".into(),
        ));
    };
    let receipt = RecordsReceipt {
        job_id: job.id.clone(),
        sink: plan.sink_name.clone(),
        kind: plan.sink.kind().to_string(),
        location: loader.location.clone(),
        view: loader.view.clone(),
        format: cfg.format.as_str().to_string(),
        records: loader.records,
        applied: loader.applied,
        already_present: loader.records - loader.applied,
        chunks: loader.chunks,
        source_bytes: digests.bytes,
        source_sha256: digests.sha256_hex,
        loaded_at: now_rfc3339(),
        duration_ms: started.elapsed().as_millis() as u64,
    };
    retry
        .run("write records receipt", || {
            state.put_json(&key, &receipt, PutMode::Overwrite)
        })
        .await?;
    let dims = [
        ("Route", job.route.as_str()),
        ("Sink", plan.sink_name.as_str()),
    ];
    metrics::add("RecordsLoaded", Unit::Count, receipt.applied as f64, &dims);
    tracing::info!(
        sink = %plan.sink_name,
        records = receipt.records,
        applied = receipt.applied,
        already_present = receipt.already_present,
        chunks = receipt.chunks,
        ms = receipt.duration_ms,
        "records loaded"
    );
    Ok(Some(receipt))
}

/// The state of one load: the chunk in hand and the counts so far.
struct Loader<'a> {
    plan: &'a RecordsPlan,
    view: String,
    base: String,
    retry: &'a RetryPolicy,
    stopped: &'a (dyn Fn() -> bool + Sync),
    pending: Vec<Record>,
    after: Option<Cursor>,
    records: u64,
    applied: u64,
    chunks: u64,
    location: String,
}

impl Loader<'_> {
    /// Reads every line into chunks, delivering each full chunk.
    async fn read_all(&mut self, lines: &mut LineSplitter) -> Result<(), RecordsError> {
        loop {
            let next = match lines.next_record().await {
                Ok(next) => next,
                Err(e) => return Err(read_error(e, self.records)),
            };
            let Some(bytes) = next else {
                return Ok(());
            };
            let line = lines.line_number();
            let body = parse_line(self.plan.config.format, &bytes).map_err(|reason| {
                RecordsError::BadLine {
                    line,
                    reason,
                    loaded: self.records,
                }
            })?;
            self.pending.push(Record {
                record_id: format!("{}:{line}", self.base),
                cursor: Cursor::parse(&line.to_string()).expect("a line number is digits"),
                body,
            });
            if self.pending.len() >= self.plan.config.chunk_lines {
                self.flush().await?;
            }
        }
    }

    /// Delivers the chunk in hand (if any), with retries.
    async fn flush(&mut self) -> Result<(), RecordsError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if (self.stopped)() {
            return Err(RecordsError::Interrupted {
                loaded: self.records,
            });
        }
        let chunk = Chunk {
            after: self.after.clone(),
            records: std::mem::take(&mut self.pending),
        };
        let sink = &self.plan.sink;
        let view = &self.view;
        let receipt = self
            .retry
            .run("deliver records", || sink.deliver(view, &chunk))
            .await
            .map_err(|error| RecordsError::Sink {
                sink: self.plan.sink_name.clone(),
                error,
            })?;
        self.records += chunk.records.len() as u64;
        self.applied += receipt.applied as u64;
        self.chunks += 1;
        self.location = receipt.location;
        self.after = chunk.last_cursor().cloned();
        self.pending = chunk.records;
        self.pending.clear();
        Ok(())
    }
}

/// Sorts a read failure: a line or size cap and corrupt gzip are the file's fault; a source
/// failure keeps its own class; anything else is worth another try.
fn read_error(e: std::io::Error, loaded: u64) -> RecordsError {
    if let Some(t) = transform_error_in(&e) {
        return match t {
            TransformError::LineTooLong { limit, line } => RecordsError::BadLine {
                line: *line,
                reason: format!("longer than records.max_line_bytes ({limit} bytes)"),
                loaded,
            },
            TransformError::TooLarge { limit } => RecordsError::Refused(format!(
                "decompressed, it is larger than records.max_total_bytes ({limit})"
            )),
            other => RecordsError::Refused(other.to_string()),
        };
    }
    if source_error_in(&e).is_some() {
        if let Some(inner) = e.into_inner()
            && let Ok(source) = inner.downcast::<SourceError>()
        {
            return RecordsError::Source(*source);
        }
        return RecordsError::Verification("source read failed".into());
    }
    if e.get_ref()
        .is_some_and(|i| i.downcast_ref::<VerifyError>().is_some())
    {
        return RecordsError::Verification(e.to_string());
    }
    RecordsError::Verification(format!("reading the file: {e}"))
}

/// One line as a record body, or why it is a bad line.
fn parse_line(
    format: RecordFormat,
    bytes: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 ({e})"))?;
    match format {
        RecordFormat::Jsonl => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            Ok(other) => Err(format!(
                "not a JSON object (a JSON {})",
                match other {
                    serde_json::Value::Array(_) => "array",
                    serde_json::Value::String(_) => "string",
                    serde_json::Value::Number(_) => "number",
                    serde_json::Value::Bool(_) => "boolean",
                    _ => "null",
                }
            )),
            Err(e) => Err(format!("not valid JSON ({e})")),
        },
        RecordFormat::XmlLines => {
            one_xml_element(text)?;
            let mut map = serde_json::Map::new();
            map.insert("xml".into(), serde_json::Value::String(text.to_string()));
            Ok(map)
        }
    }
}

/// Checks that `text` is exactly one well-formed XML element (whitespace around it allowed).
fn one_xml_element(text: &str) -> Result<(), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    let (mut depth, mut roots) = (0usize, 0usize);
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("not well-formed XML ({e})"))?;
        let outside = depth == 0;
        match event {
            Event::Start(_) | Event::Empty(_) if outside && roots == 1 => {
                return Err("more than one XML element".into());
            }
            Event::Start(_) => {
                depth += 1;
                if outside {
                    roots += 1;
                }
            }
            Event::Empty(_) if outside => roots += 1,
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(t) if outside && !t.iter().all(u8::is_ascii_whitespace) => {
                return Err("text outside the XML element".into());
            }
            Event::Eof => break,
            Event::Text(_) | Event::Empty(_) | Event::Comment(_) => {}
            _ if outside => return Err("not exactly one XML element".into()),
            _ => {}
        }
    }
    match (depth, roots) {
        (0, 1) => Ok(()),
        (0, _) => Err("no XML element".into()),
        _ => Err("an XML element is not closed".into()),
    }
}

#[cfg(test)]
mod tests {
    //! Fast tier: `load` over an in-memory state store, source and sink (the real sinks are
    //! proven in tests/it/records.rs and tests/it/sink_conformance.rs).

    use std::collections::BTreeMap;
    use std::io::Write as _;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::ByteReader;
    use crate::sink::SinkReceipt;
    use crate::source::SourceObject;
    use crate::state::Versioned;

    #[derive(Default)]
    struct MemState(Mutex<BTreeMap<String, Bytes>>);

    #[async_trait]
    impl StateStore for MemState {
        async fn get(&self, key: &str) -> Result<Option<Versioned>, StateError> {
            Ok(self.0.lock().unwrap().get(key).map(|b| Versioned {
                body: b.clone(),
                etag: "e".into(),
            }))
        }
        async fn put(&self, key: &str, body: Bytes, _: PutMode) -> Result<String, StateError> {
            self.0.lock().unwrap().insert(key.into(), body);
            Ok("e".into())
        }
        async fn delete(&self, key: &str) -> Result<(), StateError> {
            self.0.lock().unwrap().remove(key);
            Ok(())
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
            let map = self.0.lock().unwrap();
            Ok(map
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect())
        }
    }

    struct MemSource(Vec<u8>);

    #[async_trait]
    impl Source for MemSource {
        async fn stat(&self, _: &str, _: &str) -> Result<SourceObject, SourceError> {
            unreachable!("jobs carry their object")
        }
        async fn open(&self, _: &SourceObject) -> Result<ByteReader, SourceError> {
            Ok(Box::pin(std::io::Cursor::new(self.0.clone())))
        }
    }

    /// Keeps (view, record id) -> (cursor, body), applying only a greater cursor, as the real
    /// sinks do; counts every application.
    #[derive(Default)]
    struct MemSink {
        rows: Mutex<BTreeMap<(String, String), (Cursor, serde_json::Value)>>,
        applications: Mutex<usize>,
    }

    #[async_trait]
    impl Sink for MemSink {
        fn kind(&self) -> &'static str {
            "memory"
        }
        async fn deliver(&self, view: &str, chunk: &Chunk) -> Result<SinkReceipt, SinkError> {
            let mut rows = self.rows.lock().unwrap();
            let mut applied = 0;
            for r in &chunk.records {
                let key = (view.to_string(), r.record_id.clone());
                if rows.get(&key).is_none_or(|(c, _)| *c < r.cursor) {
                    rows.insert(key, (r.cursor.clone(), r.body.clone().into()));
                    applied += 1;
                }
            }
            *self.applications.lock().unwrap() += applied;
            Ok(SinkReceipt {
                location: "memory://".into(),
                records: chunk.records.len(),
                applied,
            })
        }
    }

    fn job(name: &str) -> TransferJob {
        TransferJob {
            id: "j1".into(),
            route: "r".into(),
            source: "s".into(),
            object: SourceObject {
                container: "c".into(),
                name: name.into(),
                size: 0,
                etag: "0x1".into(),
                content_md5: None,
                content_type: None,
                url: None,
            },
            destinations: Vec::new(),
            target_folder: None,
            name_template: None,
            after_delivery: Default::default(),
            encrypt: false,
            correlation_id: "request-cid".into(),
            created_at: now_rfc3339(),
            export: None,
        }
    }

    fn plan(sink: Arc<MemSink>, format: RecordFormat, chunk_lines: usize) -> RecordsPlan {
        RecordsPlan {
            sink_name: "mem".into(),
            sink,
            config: RecordsConfig {
                sink: "mem".into(),
                format,
                chunk_lines,
                max_line_bytes: 256,
                max_total_bytes: 1 << 20,
            },
        }
    }

    async fn run(
        data: &[u8],
        name: &str,
        plan: &RecordsPlan,
        state: &MemState,
        stop: &AtomicBool,
    ) -> Result<Option<RecordsReceipt>, RecordsError> {
        let mut j = job(name);
        j.object.size = data.len() as u64;
        let source = MemSource(data.to_vec());
        let stopped = || stop.load(Ordering::SeqCst);
        load(state, &source, &j, plan, &RetryPolicy::default(), &stopped).await
    }

    #[tokio::test]
    async fn a_gzip_webhook_file_of_xml_lines_loads_by_line_and_a_stopped_run_resumes_without_doubles()
     {
        let mut xml = Vec::new();
        for i in 1..=9 {
            writeln!(xml, r#"<Price item="{i}" amount="{i}.00"/>"#).unwrap();
            if i == 4 {
                xml.extend_from_slice(b"\r\n"); // an empty line (CRLF) is skipped, still counted
            }
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&xml).unwrap();
        let gz = gz.finish().unwrap();
        let (state, sink) = (MemState::default(), Arc::new(MemSink::default()));
        let plan = plan(sink.clone(), RecordFormat::XmlLines, 4);
        // Stopped before the first chunk: nothing loaded, no receipt.
        let stop = AtomicBool::new(true);
        let e = run(&gz, "prices.xml.gz", &plan, &state, &stop)
            .await
            .unwrap_err();
        assert!(matches!(e, RecordsError::Interrupted { loaded: 0 }), "{e}");
        stop.store(false, Ordering::SeqCst);
        let receipt = run(&gz, "prices.xml.gz", &plan, &state, &stop)
            .await
            .unwrap()
            .expect("a receipt");
        assert_eq!(
            (receipt.records, receipt.applied, receipt.chunks),
            (9, 9, 3)
        );
        assert_eq!(receipt.view, "r/j1");
        let rows = sink.rows.lock().unwrap().clone();
        // Webhook files are keyed by the job id (their correlation id is the request's).
        let (cursor, body) = &rows[&("r/j1".to_string(), "j1:6".to_string())];
        assert_eq!(cursor.as_str(), "6", "line 6 (after the empty line 5)");
        assert_eq!(body["xml"], r#"<Price item="5" amount="5.00"/>"#);
        // A second run skips by the receipt; without it, applies nothing again.
        assert!(
            run(&gz, "prices.xml.gz", &plan, &state, &stop)
                .await
                .unwrap()
                .is_none()
        );
        state.0.lock().unwrap().clear();
        let again = run(&gz, "prices.xml.gz", &plan, &state, &stop)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((again.applied, again.already_present), (0, 9));
        assert_eq!(*sink.applications.lock().unwrap(), 9);
    }

    #[tokio::test]
    async fn a_plain_file_over_the_total_cap_is_refused_before_reading() {
        let (state, sink) = (MemState::default(), Arc::new(MemSink::default()));
        let mut plan = plan(sink.clone(), RecordFormat::Jsonl, 10);
        plan.config.max_total_bytes = 100;
        let data = b"{\"a\":1}\n".repeat(20);
        let e = run(&data, "big.jsonl", &plan, &state, &AtomicBool::new(false))
            .await
            .unwrap_err();
        assert!(
            !e.is_retryable() && e.to_string().contains("max_total_bytes"),
            "{e}"
        );
        assert!(sink.rows.lock().unwrap().is_empty());
    }

    #[test]
    fn jsonl_lines_must_be_one_object() {
        let ok = parse_line(RecordFormat::Jsonl, br#"{"itemId":1,"sku":"a"}"#).unwrap();
        assert_eq!(ok["itemId"], 1);
        for (line, want) in [
            (&b"[1,2]"[..], "not a JSON object (a JSON array)"),
            (b"{\"a\":1", "not valid JSON"),
            (b"{\"a\":1} {\"b\":2}", "not valid JSON"),
            (b"\xff\xfe{}", "not UTF-8"),
        ] {
            let e = parse_line(RecordFormat::Jsonl, line).unwrap_err();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn xml_lines_must_be_one_element() {
        for ok in [
            r#"<Price item="1" amount="2.00"/>"#,
            "<Item id=\"7\"><Name>Vare &amp; co</Name></Item>",
            "  <a>x</a>  ",
        ] {
            let body = parse_line(RecordFormat::XmlLines, ok.as_bytes()).unwrap();
            assert_eq!(body["xml"], ok, "{ok}");
        }
        for (line, want) in [
            ("<a/><b/>", "more than one"),
            ("<a>x</a><b/>", "more than one"),
            ("<a><b></a>", "not well-formed"),
            ("<a>", "not closed"),
            ("just text", "text outside"),
            ("<a/>tail", "text outside"),
            ("", "no XML element"),
        ] {
            let e = parse_line(RecordFormat::XmlLines, line.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
    }
}
