//! Inspection of the state bucket for operators (`ferry jobs`, `show`, `failed`, `find`,
//! `replay`): what happened to a job or a file, what is failing and why. Everything is read
//! through the state layout's key builders and prefixes (shared/src/layout.rs), and prefixes are
//! read page by page ([`Pager`]), so a bucket with many jobs is never loaded whole. Nothing here
//! prints: the CLI renders the typed results as text or JSON.

use std::time::SystemTime;

use ferry_shared::job::{FailureRecord, Receipt, RejectedMessage, TransferJob};
use ferry_shared::layout::{Prefix, failure_key, job_key, progress_key, receipt_key};
use ferry_shared::state::{StateError, StateStore, StateStoreExt};
use futures_util::StreamExt as _;
use serde::Serialize;

/// Keys read per listing request.
pub const PAGE_SIZE: usize = 200;
/// Objects read at once while inspecting a page.
const READ_CONCURRENCY: usize = 16;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Some destination has no receipt yet and the job is not dead-lettered.
    Pending,
    /// Every destination has a receipt.
    Done,
    /// Dead-lettered (`failed/<id>.json`).
    Failed,
}

impl JobState {
    /// The word the CLI prints.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }
}

/// The route and id in a job key `jobs/<route>/<id>.json`.
pub fn job_key_parts(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(Prefix::Jobs.as_str())?;
    let (route, file) = rest.rsplit_once('/')?;
    Some((route, file.strip_suffix(".json")?))
}

/// The prefix holding the jobs of `route` (all jobs when `None`).
pub fn jobs_prefix(route: Option<&str>) -> String {
    match route {
        Some(r) => format!("{}{r}/", Prefix::Jobs.as_str()),
        None => Prefix::Jobs.as_str().to_string(),
    }
}

/// Reads a prefix page by page, in key order.
pub struct Pager<'a> {
    state: &'a dyn StateStore,
    prefix: String,
    after: Option<String>,
    done: bool,
    page_size: usize,
}

impl<'a> Pager<'a> {
    /// Pages of [`PAGE_SIZE`] keys under `prefix`.
    pub fn new(state: &'a dyn StateStore, prefix: impl Into<String>) -> Self {
        Self::with_page_size(state, prefix, PAGE_SIZE)
    }

    /// Pages of `page_size` keys under `prefix`.
    pub fn with_page_size(
        state: &'a dyn StateStore,
        prefix: impl Into<String>,
        page_size: usize,
    ) -> Self {
        Self {
            state,
            prefix: prefix.into(),
            after: None,
            done: false,
            page_size: page_size.max(1),
        }
    }

    /// The next page; `None` after the last one.
    pub async fn next_page(&mut self) -> Result<Option<Vec<String>>, StateError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .state
            .list_page(&self.prefix, self.after.as_deref(), self.page_size)
            .await?;
        self.done = page.next.is_none();
        self.after = page.next;
        Ok(Some(page.keys))
    }
}

/// What one destination of a job has.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DestinationStatus {
    /// Delivered and verified: the receipt (read with [`Detail::Full`]).
    Delivered {
        /// The receipt: where, bytes, checksums.
        #[serde(skip_serializing_if = "Option::is_none")]
        receipt: Option<Box<Receipt>>,
    },
    /// The dead letter's error for this destination.
    Failed {
        /// The error (secret-free).
        error: String,
    },
    /// A large delivery stopped mid-way: a resume checkpoint is kept.
    InFlight,
    /// Not delivered yet.
    Pending,
}

/// One destination of a job and its status.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationView {
    /// The destination's name in the config.
    pub destination: String,
    /// What it has.
    #[serde(flatten)]
    pub status: DestinationStatus,
}

/// A job with everything the state bucket knows about it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// `jobs/<route>/<id>.json`
    pub job_key: String,
    /// Where it stands.
    pub state: JobState,
    /// The job as stored.
    pub job: TransferJob,
    /// Per destination, in the job's order.
    pub destinations: Vec<DestinationView>,
    /// The dead letter (attempts, reason), when the job gave up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureRecord>,
}

/// How much of a job to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Which destinations have a receipt (one listing) and the dead letter.
    Summary,
    /// Every receipt in full, and resume checkpoints of undelivered destinations.
    Full,
}

/// Reads a job's receipts, dead letter and (with [`Detail::Full`]) checkpoints.
pub async fn view_job(
    state: &dyn StateStore,
    job_key: &str,
    job: TransferJob,
    detail: Detail,
) -> Result<JobView, StateError> {
    let failure = state
        .get_json::<FailureRecord>(&failure_key(&job.id))
        .await?
        .map(|(f, _)| f);
    let receipts_prefix = receipts_prefix(&job.id);
    let listed = match detail {
        Detail::Summary => state.list(&receipts_prefix).await?,
        Detail::Full => Vec::new(),
    };
    let mut destinations = Vec::new();
    for name in &job.destinations {
        let rkey = receipt_key(&job.id, name);
        let receipt = match detail {
            Detail::Summary => listed.contains(&rkey).then_some(None),
            Detail::Full => state
                .get_json::<Receipt>(&rkey)
                .await?
                .map(|(r, _)| Some(Box::new(r))),
        };
        let status = match receipt {
            Some(receipt) => DestinationStatus::Delivered { receipt },
            None => match failure.as_ref().and_then(|f| f.destinations.get(name)) {
                Some(error) => DestinationStatus::Failed {
                    error: error.clone(),
                },
                None if detail == Detail::Full
                    && state.get(&progress_key(&job.id, name)).await?.is_some() =>
                {
                    DestinationStatus::InFlight
                }
                None => DestinationStatus::Pending,
            },
        };
        destinations.push(DestinationView {
            destination: name.clone(),
            status,
        });
    }
    let all_delivered = destinations
        .iter()
        .all(|d| matches!(d.status, DestinationStatus::Delivered { .. }));
    let state = if failure.is_some() {
        JobState::Failed
    } else if all_delivered {
        JobState::Done
    } else {
        JobState::Pending
    };
    Ok(JobView {
        job_key: job_key.to_string(),
        state,
        job,
        destinations,
        failure,
    })
}

/// `done/<id>/`: the receipts of one job.
fn receipts_prefix(job_id: &str) -> String {
    let probe = receipt_key(job_id, "");
    // `done/<id>/.json` -> `done/<id>/`
    probe.strip_suffix(".json").unwrap_or(&probe).to_string()
}

/// Which jobs `ferry jobs` lists.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this route.
    pub route: Option<String>,
    /// Only jobs created at or after this time.
    pub since: Option<SystemTime>,
    /// Only jobs in this state.
    pub state: Option<JobState>,
}

impl JobFilter {
    fn admits_created(&self, job: &TransferJob) -> bool {
        match self.since {
            None => true,
            Some(since) => humantime::parse_rfc3339_weak(&job.created_at).is_ok_and(|t| t >= since),
        }
    }
}

/// A job object that could not be read or parsed (listed, not fatal).
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    /// Its key.
    pub key: String,
    /// Why.
    pub error: String,
}

/// Reads the jobs of one page of `jobs/` keys that pass `filter`, in key order.
pub async fn jobs_in_page(
    state: &dyn StateStore,
    keys: Vec<String>,
    filter: &JobFilter,
) -> Vec<Result<JobView, Unreadable>> {
    futures_util::stream::iter(keys)
        .map(|key| async move {
            let job = match state.get_json::<TransferJob>(&key).await {
                Ok(Some((job, _))) => job,
                Ok(None) => return None,
                Err(e) => {
                    return Some(Err(Unreadable {
                        key,
                        error: e.to_string(),
                    }));
                }
            };
            if !filter.admits_created(&job) {
                return None;
            }
            match view_job(state, &key, job, Detail::Summary).await {
                Ok(v) if filter.state.is_none_or(|s| s == v.state) => Some(Ok(v)),
                Ok(_) => None,
                Err(e) => Some(Err(Unreadable {
                    key,
                    error: e.to_string(),
                })),
            }
        })
        .buffered(READ_CONCURRENCY)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

/// The key of the job with id `id`: from its dead letter (which names it), else at each of
/// `routes` (the configured ones: one read each), else by reading `jobs/` page by page.
pub async fn find_job_key<'r>(
    state: &dyn StateStore,
    routes: impl IntoIterator<Item = &'r str>,
    id: &str,
) -> Result<Option<String>, StateError> {
    if let Ok(Some((failure, _))) = state.get_json::<FailureRecord>(&failure_key(id)).await
        && job_key_parts(&failure.job_key).is_some_and(|(_, i)| i == id)
    {
        return Ok(Some(failure.job_key));
    }
    for route in routes {
        let key = job_key(route, id);
        if state.get(&key).await?.is_some() {
            return Ok(Some(key));
        }
    }
    let mut pages = Pager::new(state, Prefix::Jobs.as_str());
    while let Some(keys) = pages.next_page().await? {
        if let Some(k) = keys
            .into_iter()
            .find(|k| job_key_parts(k).is_some_and(|(_, i)| i == id))
        {
            return Ok(Some(k));
        }
    }
    Ok(None)
}

/// A record under `failed/`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeadLetter {
    /// A job that gave up.
    Job(FailureRecord),
    /// A pub/sub message refused before it became a job (poison, refused uri).
    Message(RejectedMessage),
    /// A record that does not parse as either.
    Unreadable(Unreadable),
}

impl DeadLetter {
    /// The route of a dead-lettered job (`None` for refused messages).
    pub fn route(&self) -> Option<&str> {
        match self {
            DeadLetter::Job(f) => job_key_parts(&f.job_key).map(|(r, _)| r),
            _ => None,
        }
    }
}

/// Reads one page of `failed/` keys, in key order.
pub async fn dead_letters_in_page(state: &dyn StateStore, keys: Vec<String>) -> Vec<DeadLetter> {
    futures_util::stream::iter(keys)
        .map(|key| async move {
            let body = match state.get(&key).await {
                Ok(Some(v)) => v.body,
                Ok(None) => return None,
                Err(e) => {
                    return Some(DeadLetter::Unreadable(Unreadable {
                        key,
                        error: e.to_string(),
                    }));
                }
            };
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let parsed = if value.get("job_key").is_some() {
                serde_json::from_value(value).map(DeadLetter::Job)
            } else {
                serde_json::from_value(value).map(DeadLetter::Message)
            };
            Some(parsed.unwrap_or_else(|e| {
                DeadLetter::Unreadable(Unreadable {
                    key,
                    error: format!("not a dead letter ferry wrote: {e}"),
                })
            }))
        })
        .buffered(READ_CONCURRENCY)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

/// Whether a job is for the file `name`: its full name, or its last path segment.
pub fn names_file(job: &TransferJob, name: &str) -> bool {
    let full = job.object.name.as_str();
    full == name || full.rsplit('/').next() == Some(name)
}

/// Reads one page of `jobs/` keys and returns the full view of each job for the file `name`.
pub async fn file_in_page(
    state: &dyn StateStore,
    keys: Vec<String>,
    name: &str,
) -> Vec<Result<JobView, Unreadable>> {
    futures_util::stream::iter(keys)
        .map(|key| async move {
            let job = match state.get_json::<TransferJob>(&key).await {
                Ok(Some((job, _))) if names_file(&job, name) => job,
                Ok(_) => return None,
                Err(e) => {
                    return Some(Err(Unreadable {
                        key,
                        error: e.to_string(),
                    }));
                }
            };
            Some(
                view_job(state, &key, job, Detail::Full)
                    .await
                    .map_err(|e| Unreadable {
                        key,
                        error: e.to_string(),
                    }),
            )
        })
        .buffered(READ_CONCURRENCY)
        .filter_map(|x| async move { x })
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    //! The fast tier: paging and job state over the in-memory store.

    use bytes::Bytes;
    use ferry_shared::source::SourceObject;
    use ferry_shared::state::{MemoryStateStore, PutMode};

    use super::*;

    fn job(id: &str, route: &str, name: &str) -> TransferJob {
        TransferJob {
            id: id.into(),
            route: route.into(),
            source: "src".into(),
            object: SourceObject {
                container: "c".into(),
                name: name.into(),
                size: 1,
                etag: "0x1".into(),
                content_md5: None,
                content_type: None,
                url: None,
            },
            destinations: vec!["a".into(), "b".into()],
            target_folder: None,
            name_template: None,
            after_delivery: Default::default(),
            encrypt: false,
            correlation_id: id.into(),
            created_at: "2026-11-29T10:00:00Z".into(),
            export: None,
        }
    }

    fn receipt(job: &TransferJob, destination: &str) -> Receipt {
        Receipt {
            job_id: job.id.clone(),
            destination: destination.to_string(),
            kind: String::new(),
            location: String::new(),
            bytes: 0,
            md5: None,
            md5_verified_against_source: false,
            sha256: String::new(),
            delivered_at: String::new(),
            duration_ms: 0,
            transform: None,
            remote_hash: None,
            source_action: None,
            plaintext: None,
        }
    }

    #[test]
    fn job_keys_split_into_route_and_id() {
        assert_eq!(job_key_parts(&job_key("r", "i")), Some(("r", "i")));
        assert_eq!(job_key_parts("jobs/r/i.txt"), None);
        assert_eq!(receipts_prefix("i"), "done/i/");
        assert_eq!(jobs_prefix(Some("r")), "jobs/r/");
    }

    #[tokio::test]
    async fn pages_cover_the_prefix_once_in_order() {
        let state = MemoryStateStore::new();
        for i in 0..7 {
            let k = job_key("r", &format!("j{i}"));
            state.put(&k, Bytes::new(), PutMode::Create).await.unwrap();
        }
        let other = job_key("s", "x");
        state
            .put(&other, Bytes::new(), PutMode::Create)
            .await
            .unwrap();
        let mut pager = Pager::with_page_size(&state, jobs_prefix(Some("r")), 3);
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        while let Some(page) = pager.next_page().await.unwrap() {
            sizes.push(page.len());
            all.extend(page);
        }
        assert_eq!(sizes, [3, 3, 1]);
        let want: Vec<String> = (0..7).map(|i| job_key("r", &format!("j{i}"))).collect();
        assert_eq!(all, want);
    }

    #[tokio::test]
    async fn state_follows_receipts_and_dead_letters() {
        let state = MemoryStateStore::new();
        for (id, receipts, failed) in [
            ("done", &["a", "b"][..], false),
            ("half", &["a"][..], false),
            ("dead", &["a"][..], true),
        ] {
            let key = job_key("r", id);
            state
                .put_json(
                    &key,
                    &job(id, "r", &format!("in/{id}.csv")),
                    PutMode::Create,
                )
                .await
                .unwrap();
            for d in receipts {
                let r = receipt(&job(id, "r", "x"), d);
                state
                    .put_json(&receipt_key(id, d), &r, PutMode::Create)
                    .await
                    .unwrap();
            }
            if failed {
                let f = FailureRecord {
                    job_id: id.into(),
                    job_key: key.clone(),
                    reason: "b refused".into(),
                    destinations: [("b".to_string(), "403".to_string())].into(),
                    retryable: false,
                    attempts: 3,
                    failed_at: "2026-11-29T10:01:00Z".into(),
                };
                state
                    .put_json(&failure_key(id), &f, PutMode::Create)
                    .await
                    .unwrap();
            }
        }
        let keys = state.list(Prefix::Jobs.as_str()).await.unwrap();
        let all = jobs_in_page(&state, keys.clone(), &JobFilter::default()).await;
        let states: Vec<(String, JobState)> = all
            .into_iter()
            .map(|v| v.unwrap())
            .map(|v| (v.job.id, v.state))
            .collect();
        assert_eq!(
            states,
            [
                ("dead".to_string(), JobState::Failed),
                ("done".to_string(), JobState::Done),
                ("half".to_string(), JobState::Pending)
            ]
        );
        let only_failed = JobFilter {
            state: Some(JobState::Failed),
            ..Default::default()
        };
        assert_eq!(
            jobs_in_page(&state, keys.clone(), &only_failed).await.len(),
            1
        );
        let later = JobFilter {
            since: Some(humantime::parse_rfc3339("2026-11-29T11:00:00Z").unwrap()),
            ..Default::default()
        };
        assert!(jobs_in_page(&state, keys.clone(), &later).await.is_empty());
        // The dead letter names the key; a destination's own error is kept.
        assert_eq!(
            find_job_key(&state, [], "dead").await.unwrap(),
            Some(job_key("r", "dead"))
        );
        assert_eq!(
            find_job_key(&state, [], "half").await.unwrap(),
            Some(job_key("r", "half"))
        );
        assert_eq!(find_job_key(&state, ["r"], "nope").await.unwrap(), None);
        let found = file_in_page(&state, keys, "dead.csv").await;
        let view = found[0].as_ref().unwrap();
        assert!(matches!(
            &view.destinations[1].status,
            DestinationStatus::Failed { error } if error == "403"
        ));
    }
}
