//! Transfer jobs and where their state lives in the bucket.
//!
//! Layout: `jobs/<route>/<job-id>.json` (the job), `done/<job-id>/<destination>.json`
//! (a receipt per delivered destination), `failed/<job-id>.json` (dead letter with the reason).

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
    /// Correlation id of the request that created the job (for following it through logs).
    pub correlation_id: String,
    /// RFC 3339 creation time.
    pub created_at: String,
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
    /// Hex MD5 of the bytes delivered.
    pub md5: String,
    /// True when the MD5 was checked against the source's own MD5.
    pub md5_verified_against_source: bool,
    /// Hex SHA-256 of the bytes delivered.
    pub sha256: String,
    /// RFC 3339 delivery time.
    pub delivered_at: String,
    /// Milliseconds the delivery took.
    pub duration_ms: u64,
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

/// `jobs/<route>/<job-id>.json`
pub fn job_key(route: &str, id: &str) -> String {
    format!("jobs/{route}/{id}.json")
}

/// `done/<job-id>/<destination>.json`
pub fn receipt_key(id: &str, destination: &str) -> String {
    format!("done/{id}/{destination}.json")
}

/// `failed/<job-id>.json`
pub fn failure_key(id: &str) -> String {
    format!("failed/{id}.json")
}

/// Current time in RFC 3339 (seconds precision, UTC).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(etag: &str) -> SourceObject {
        SourceObject {
            container: "exports".into(),
            name: "a.zip".into(),
            size: 1,
            etag: etag.into(),
            content_md5: None,
            content_type: None,
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
