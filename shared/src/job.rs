//! Transfer jobs and where their state lives in the bucket.
//!
//! Layout: `jobs/<route>/<job-id>.json` (the job), `done/<job-id>/<destination>.json`
//! (a receipt per delivered destination), `failed/<job-id>.json` (dead letter with the reason;
//! also `failed/msg-<hash>.json` for a pub/sub message refused before it became a job).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::source::SourceObject;

/// One file to copy from a source to a route's destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferJob {
    /// Deterministic id: same source object version + route = same job.
    pub id: String,
    /// Route that produced it.
    pub route: String,
    /// Source name in the config.
    pub source: String,
    /// The object as seen when the job was created (its ETag pins the version to copy).
    pub object: SourceObject,
    /// Destination names, fixed when the job was created so a replay does the same work.
    pub destinations: Vec<String>,
    /// Folder under each destination's root.
    #[serde(default)]
    pub target_folder: Option<String>,
    /// The route's name template when the job was created (rendered with `created_at`, so every
    /// run of the job writes the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_template: Option<String>,
    /// What to do to the source file once every destination has its receipt (from the route).
    #[serde(default, skip_serializing_if = "AfterDelivery::is_none")]
    pub after_delivery: AfterDelivery,
    /// The route encrypts with OpenPGP (its `encrypt`; the recipients' keys are the route's as
    /// loaded by blob-copy). A job that asks for it is never delivered in plaintext.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypt: bool,
    /// Correlation id of the request that created the job (for following it through logs).
    pub correlation_id: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// For jobs from a pub/sub export notification: the file's metadata and how to process it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportFile>,
}

/// A pub/sub export file: what its notification said and how the route wants it, fixed when
/// the job is created so a replay does the same work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportFile {
    /// `blobType` of the notification.
    pub blob_type: String,
    /// `contentType` of the notification.
    #[serde(default)]
    pub content_type: Option<String>,
    /// `contentEncoding`: `gzip` or none.
    #[serde(default)]
    pub content_encoding: Option<String>,
    /// `properties` of the notification, as given.
    #[serde(default)]
    pub properties: serde_json::Value,
    /// Service Bus message id.
    pub message_id: String,
    /// Service Bus sequence number.
    pub sequence_number: i64,
    /// Deliver decompressed (route setting; applies to gzip files).
    pub decompress: bool,
    /// Cap on the decompressed size.
    pub max_decompressed_bytes: u64,
    /// Cap on one line of a decompressed line-oriented file.
    pub max_line_bytes: usize,
}

impl ExportFile {
    /// `contentEncoding: gzip`.
    pub fn is_gzip(&self) -> bool {
        self.content_encoding
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("gzip"))
    }

    /// One record per line: `application/x-jsonlines` (or `jsonl`, `ndjson`), `application/x-xmllines`.
    pub fn is_line_oriented(&self) -> bool {
        self.content_type.as_deref().is_some_and(|t| {
            let t = t
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            t.ends_with("jsonlines")
                || t.ends_with("xmllines")
                || t.ends_with("/jsonl")
                || t.ends_with("ndjson")
        })
    }

    /// The file is delivered decompressed.
    pub fn decompresses(&self) -> bool {
        self.decompress && self.is_gzip()
    }
}

/// Why a pub/sub message was refused instead of becoming a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    /// The body cannot be read as a file notification (not JSON, fields missing).
    Poison,
    /// The notification points outside the token's blob base URLs.
    RefusedUri,
}

impl RejectionKind {
    /// The snake_case name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::Poison => "poison",
            RejectionKind::RefusedUri => "refused_uri",
        }
    }
}

impl std::fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pub/sub message refused before it became a job (poison body, refused uri), kept in
/// `failed/` with its body so it can be looked at; the message itself is completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedMessage {
    /// Record id (`msg-<hash>`), also its key `failed/<id>.json`.
    pub id: String,
    /// Source name.
    pub source: String,
    /// Why it was refused.
    pub kind: RejectionKind,
    /// Why (secret-free).
    pub reason: String,
    /// Service Bus message id.
    pub message_id: String,
    /// Service Bus sequence number.
    pub sequence_number: i64,
    /// Deliveries of the message so far.
    pub delivery_count: u32,
    /// `correlationId`, when the body had one.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// `blobType`, when the body had one.
    #[serde(default)]
    pub blob_type: Option<String>,
    /// `DeadLetterReason` the broker gave, when the message was read from the dead-letter
    /// subqueue (e.g. `MaxDeliveryCountExceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_reason: Option<String>,
    /// `DeadLetterErrorDescription` the broker gave, with `dead_letter_reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_description: Option<String>,
    /// The body (lossy UTF-8, every credential-bearing parameter redacted; a JSON body is kept
    /// as JSON with its strings redacted).
    pub body: String,
    /// True when the body was cut at the size cap.
    pub body_truncated: bool,
    /// RFC 3339 time of the rejection.
    pub rejected_at: String,
}

/// What the engine did to a file between its source and its destinations, as a receipt records
/// it (`gunzip`, `pgp`, `gunzip+pgp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transform {
    /// Decompressed (a gzip'd pub/sub export).
    #[serde(rename = "gunzip")]
    Gunzip,
    /// OpenPGP-encrypted.
    #[serde(rename = "pgp")]
    Pgp,
    /// Decompressed, then encrypted.
    #[serde(rename = "gunzip+pgp")]
    GunzipPgp,
}

impl Transform {
    /// The name a receipt stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Transform::Gunzip => "gunzip",
            Transform::Pgp => "pgp",
            Transform::GunzipPgp => "gunzip+pgp",
        }
    }
}

/// Where a destination's copy landed; written to `done/` after a verified delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Job id.
    pub job_id: String,
    /// Destination name.
    pub destination: String,
    /// Destination kind (`s3`, `sftp`, ...).
    pub kind: String,
    /// Secret-free location of the delivered file.
    pub location: String,
    /// Bytes delivered (and confirmed by the destination).
    pub bytes: u64,
    /// Hex MD5 of the bytes delivered, when they were checked against an MD5 the source (or the
    /// staged file) stored; absent otherwise, as nothing would check it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// True when the MD5 was checked against the source's own MD5.
    pub md5_verified_against_source: bool,
    /// Hex SHA-256 of the bytes delivered.
    pub sha256: String,
    /// RFC 3339 delivery time.
    pub delivered_at: String,
    /// Milliseconds the delivery took.
    pub duration_ms: u64,
    /// Processing between source and destination, when there was any; the byte count and
    /// digests are then those of the delivered bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Transform>,
    /// The destination's own hash of what it stored, when it reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_hash: Option<RemoteHash>,
    /// What was done to the source file after every destination had its receipt (routes with
    /// `after_delivery: delete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_action: Option<SourceAction>,
    /// For an encrypted delivery (`transform` names `pgp`): the plaintext that was encrypted,
    /// while `bytes`, `md5` and `sha256` are the ciphertext the destination holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<PlaintextDigest>,
}

/// The plaintext of an encrypted delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaintextDigest {
    /// Bytes of plaintext (after decompression, when the route decompresses).
    pub bytes: u64,
    /// Hex SHA-256 of the plaintext.
    pub sha256: String,
}

/// What a route does to the source file once every destination of a job has a receipt.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AfterDelivery {
    /// Leave it where it is (the source's own retention removes it).
    #[default]
    None,
    /// Delete it (pinned to the version that was copied: a file replaced meanwhile is kept).
    /// The source's SAS needs `d`.
    Delete,
}

impl AfterDelivery {
    /// True for the default, so jobs and configs without it stay as they were.
    pub fn is_none(&self) -> bool {
        *self == AfterDelivery::None
    }
}

/// Recorded in each receipt once the source file was dealt with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceAction {
    /// `deleted`, or `already_gone` when a previous run (or someone else) had deleted it.
    pub action: String,
    /// RFC 3339 time of the action.
    pub at: String,
}

/// A hash the destination computed itself over what it stored (e.g. OneDrive's quickXorHash),
/// kept in the receipt beside ferry's own md5/sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteHash {
    /// The destination's name for the algorithm, e.g. `quickXorHash`.
    pub algorithm: String,
    /// The hash of the bytes ferry sent, as the destination encodes it (base64 for quickXorHash).
    pub value: String,
    /// True when the destination reported the same value; false when it reported none (the
    /// content is then verified by size only). A different value is an error, never a receipt.
    pub verified: bool,
}

/// A job that gave up: what failed and why, enough to decide on a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Job id.
    pub job_id: String,
    /// Key of the job object (to replay it).
    pub job_key: String,
    /// Summary reason (secret-free).
    pub reason: String,
    /// Per-destination errors.
    pub destinations: std::collections::BTreeMap<String, String>,
    /// Whether retrying could help (false for expired credentials, missing blobs...).
    pub retryable: bool,
    /// Attempts made.
    pub attempts: u32,
    /// RFC 3339 time of the last failure.
    pub failed_at: String,
}

/// Job id: a hash of the source identity (source, container, name, ETag) and the route.
pub fn job_id(route: &str, source: &str, object: &SourceObject) -> String {
    let mut h = Sha256::new();
    for part in [route, source, &object.container, &object.name, &object.etag] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Job id of a pub/sub export file: a hash of the route, source and the file's correlationId, so
/// a redelivered notification names the same job.
pub fn export_job_id(route: &str, source: &str, correlation_id: &str) -> String {
    let mut h = Sha256::new();
    for part in [route, source, "correlationId", correlation_id] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Id of a rejected message record: a hash of the source and the message's identity.
pub fn rejected_message_id(source: &str, message_id: &str, sequence_number: i64) -> String {
    let mut h = Sha256::new();
    for part in [source, message_id, &sequence_number.to_string()] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("msg-{}", hex::encode(&h.finalize()[..16]))
}

/// Current time in RFC 3339 (seconds precision, UTC).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_are_stored_under_their_receipt_words() {
        for t in [Transform::Gunzip, Transform::Pgp, Transform::GunzipPgp] {
            let word = serde_json::to_value(t).unwrap();
            assert_eq!(word, serde_json::json!(t.as_str()));
            assert_eq!(serde_json::from_value::<Transform>(word).unwrap(), t);
        }
        assert_eq!(Transform::GunzipPgp.as_str(), "gunzip+pgp");
    }

    fn obj(etag: &str) -> SourceObject {
        SourceObject {
            container: "exports".into(),
            name: "a.zip".into(),
            size: 1,
            etag: etag.into(),
            content_md5: None,
            content_type: None,
            url: None,
        }
    }

    #[test]
    fn id_is_stable_and_version_sensitive() {
        assert_eq!(
            job_id("r", "s", &obj("\"1\"")),
            job_id("r", "s", &obj("\"1\""))
        );
        assert_ne!(
            job_id("r", "s", &obj("\"1\"")),
            job_id("r", "s", &obj("\"2\""))
        );
        assert_ne!(
            job_id("r", "s", &obj("\"1\"")),
            job_id("r2", "s", &obj("\"1\""))
        );
        assert_eq!(job_id("r", "s", &obj("x")).len(), 32);
    }
}
