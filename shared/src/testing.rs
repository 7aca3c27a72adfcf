//! In-process stand-ins for the fast test tier (`make unit`): a memory [`Source`] and a memory
//! [`Sink`]; the state side is [`crate::state::MemoryStateStore`]. With these, the local_dir
//! destination and the wiremock fakes of the HTTP-only remotes (`tests/support/{pubsub,view}.rs`,
//! compiled in here too), the engine, the webhook service, the export puller and view sync are
//! tested without Azurite, moto, sshd or PostgreSQL.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest, Md5};

use crate::ByteReader;
use crate::sink::{Chunk, Sink, SinkError, SinkReceipt};
use crate::source::{Source, SourceError, SourceObject};

/// Fakes of Azure AD, the token service and Service Bus (wiremock; no emulator exists).
#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/support/pubsub.rs"]
pub(crate) mod pubsub_fakes;

/// Fakes of a Flowfinity-style view and an idempotent HTTP receiver (wiremock).
#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/support/view.rs"]
pub(crate) mod view_fakes;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A blob store in a map, keyed by (container, name). ETags are quoted MD5s, as Azure gives
/// for a single-shot upload, so a replaced file has a new ETag and a delete pinned to the old
/// one is refused with [`SourceError::Changed`].
#[derive(Default)]
pub(crate) struct MemorySource {
    blobs: Mutex<BTreeMap<(String, String), Bytes>>,
    /// When set, deletes are refused with this `AccessDenied` code (a SAS without `d`).
    deny_delete: Mutex<Option<String>>,
    deletes: Mutex<Vec<String>>,
}

impl MemorySource {
    /// Stores (or replaces) a blob; returns its object as `stat` would.
    pub(crate) fn put(&self, container: &str, name: &str, body: impl Into<Bytes>) -> SourceObject {
        let body = body.into();
        let object = object_of(container, name, &body);
        lock(&self.blobs).insert((container.into(), name.into()), body);
        object
    }

    /// Whether the blob is still there.
    pub(crate) fn has(&self, container: &str, name: &str) -> bool {
        lock(&self.blobs).contains_key(&(container.into(), name.into()))
    }

    /// Refuses every delete from now on, as Azure does for a SAS without `d`.
    pub(crate) fn deny_delete(&self, code: &str) {
        *lock(&self.deny_delete) = Some(code.to_string());
    }

    /// Names of the blobs deleted so far (`container/name`), in order.
    pub(crate) fn deletes(&self) -> Vec<String> {
        lock(&self.deletes).clone()
    }
}

fn object_of(container: &str, name: &str, body: &[u8]) -> SourceObject {
    let md5 = Md5::digest(body);
    SourceObject {
        container: container.into(),
        name: name.into(),
        size: body.len() as u64,
        etag: format!("\"0x{}\"", hex::encode(&md5[..8])),
        content_md5: Some(base64::engine::general_purpose::STANDARD.encode(md5)),
        content_type: Some("application/octet-stream".into()),
        url: None,
    }
}

#[async_trait]
impl Source for MemorySource {
    async fn stat(&self, container: &str, name: &str) -> Result<SourceObject, SourceError> {
        lock(&self.blobs)
            .get(&(container.into(), name.into()))
            .map(|b| object_of(container, name, b))
            .ok_or_else(|| SourceError::NotFound(format!("{container}/{name}")))
    }

    async fn delete(&self, object: &SourceObject) -> Result<bool, SourceError> {
        if let Some(code) = lock(&self.deny_delete).clone() {
            return Err(SourceError::AccessDenied { code });
        }
        let key = (object.container.clone(), object.name.clone());
        let mut blobs = lock(&self.blobs);
        let Some(current) = blobs.get(&key) else {
            return Ok(false);
        };
        if object_of(&key.0, &key.1, current).etag != object.etag {
            return Err(SourceError::Changed {
                etag: object.etag.clone(),
            });
        }
        blobs.remove(&key);
        lock(&self.deletes).push(format!("{}/{}", key.0, key.1));
        Ok(true)
    }

    async fn open(&self, object: &SourceObject) -> Result<ByteReader, SourceError> {
        let current = self.stat(&object.container, &object.name).await?;
        if current.etag != object.etag {
            return Err(SourceError::Changed {
                etag: object.etag.clone(),
            });
        }
        let body = lock(&self.blobs)[&(object.container.clone(), object.name.clone())].clone();
        Ok(Box::pin(std::io::Cursor::new(body)))
    }
}

/// The records a [`MemorySink`] holds for one view: record id -> (padded cursor, record JSON).
pub(crate) type ViewRecords = BTreeMap<String, (String, serde_json::Value)>;

/// A sink that keeps the last version of each record per view, keyed by record id, and applies
/// a record version at most once (as the sink contract asks): `applied` counts only new ones.
#[derive(Default)]
pub(crate) struct MemorySink {
    /// view -> its records.
    records: Mutex<BTreeMap<String, ViewRecords>>,
    deliveries: Mutex<usize>,
}

impl MemorySink {
    /// The records of `view`: id -> (cursor, record).
    pub(crate) fn records(&self, view: &str) -> ViewRecords {
        lock(&self.records).get(view).cloned().unwrap_or_default()
    }

    /// How many chunks were delivered.
    pub(crate) fn deliveries(&self) -> usize {
        *lock(&self.deliveries)
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn deliver(&self, view: &str, chunk: &Chunk) -> Result<SinkReceipt, SinkError> {
        *lock(&self.deliveries) += 1;
        let mut all = lock(&self.records);
        let records = all.entry(view.to_string()).or_default();
        let mut applied = 0;
        for r in &chunk.records {
            let cursor = r.cursor.padded();
            let newer = records
                .get(&r.record_id)
                .is_none_or(|(seen, _)| seen.as_str() < cursor.as_str());
            if newer {
                let value = serde_json::Value::Object(r.body.clone());
                records.insert(r.record_id.clone(), (cursor, value));
                applied += 1;
            }
        }
        Ok(SinkReceipt {
            location: format!("memory://{view}"),
            records: chunk.records.len(),
            applied,
        })
    }
}
