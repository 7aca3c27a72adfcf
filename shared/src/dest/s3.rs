//! An S3 bucket. Small files go in one PutObject (with Content-MD5 when known, so S3 checks it
//! too); larger ones as a multipart upload with a bounded number of parts in flight, completed
//! only after the whole stream verified, aborted on any failure: readers never see half a file.
//!
//! Crash resume: with a checkpoint store, the upload id and the gap-free run of finished parts
//! (number + ETag) are saved under `progress/<job-id>/<destination>.json` as parts complete. If
//! the process dies mid-copy (Lambda timeout, SIGKILL), the next run finds the checkpoint and
//! re-reads those bytes from the source only to feed the verifier, uploading just the rest. The
//! checkpoint (not ListParts) is the record, so any S3-compatible store resumes the same way.
//! It outlives CompleteMultipartUpload until the engine saved the receipt (`receipt_saved`): a
//! run that dies in between leaves every part in it, and the next run, finding the key already
//! holding exactly those parts (the multipart ETag), writes nothing again.
//!
//! Payload signing: the file's bytes are not hashed into the SigV4 signature
//! (`UNSIGNED-PAYLOAD`). That hash is a second SHA-256 of every byte, beside the receipt's, and
//! was a fifth of an S3 copy's CPU (docs/performance.md). Integrity is kept by the CRC32
//! checksum the SDK computes for every PutObject and UploadPart body (the destination asks for it
//! whatever the environment says) and sends in a signed `x-amz-checksum-crc32` header, which S3
//! checks before it stores anything. Over HTTPS, TLS
//! protects the bytes as well.
//!
//! Deadline: at the delivery's stop instant the upload stops cooperatively: parts in flight
//! are cancelled, the finished ones recorded, the newest checkpoint saved, and the multipart
//! upload left open (not aborted) so the next invocation resumes it exactly as after a crash.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::BytesMut;
use tokio::sync::watch;
use tokio::task::JoinSet;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::buffers::{Buffers, fill};
use super::{Delivery, Destination, DestinationError, Written, join_path};
use crate::ByteReader;
use crate::digest::Md5;
use crate::s3::{S3Failure, classify};
use crate::state::{PutMode, StateStore, StateStoreExt};

/// What a crashed run leaves behind so the next one can resume its multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct UploadProgress {
    bucket: String,
    key: String,
    upload_id: String,
    part_size: usize,
    size: u64,
    /// Finished parts 1..=n, in order.
    parts: Vec<StoredPart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredPart {
    number: i32,
    etag: String,
}

impl UploadProgress {
    fn same_upload(&self, other: &UploadProgress) -> bool {
        (&self.bucket, &self.key, self.part_size, self.size)
            == (&other.bucket, &other.key, other.part_size, other.size)
    }
}

/// Delivers into a bucket under a key prefix.
#[derive(Clone)]
pub struct S3Destination {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    part_size: usize,
    concurrency: usize,
    checkpoints: Option<Arc<dyn StateStore>>,
}

impl S3Destination {
    /// Builds the destination from its config (the client is built here, once);
    /// `checkpoints` (the state store) enables resuming a multipart upload.
    pub async fn from_config(
        config: &crate::config::S3DestinationConfig,
        checkpoints: Option<Arc<dyn StateStore>>,
    ) -> Self {
        Self::new(
            crate::s3::client(&config.endpoint).await,
            &config.bucket,
            &config.prefix,
            (config.part_size_mib as usize) << 20,
            config.upload_concurrency,
            checkpoints,
        )
    }

    /// `part_size` bytes per multipart part (>= 5 MiB), `concurrency` parts in flight;
    /// `checkpoints` (the state store) enables resuming a multipart upload after a crash.
    ///
    /// The client computes a checksum of every body whatever the environment or profile says
    /// (`AWS_REQUEST_CHECKSUM_CALCULATION=when_required` would otherwise leave it out): it is
    /// what checks the bytes, since they are not signed.
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: &str,
        prefix: &str,
        part_size: usize,
        concurrency: usize,
        checkpoints: Option<Arc<dyn StateStore>>,
    ) -> Self {
        let config = client
            .config()
            .to_builder()
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenSupported,
            )
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            part_size: part_size.max(5 * 1024 * 1024),
            concurrency: concurrency.max(1),
            checkpoints,
        }
    }
}

impl S3Destination {
    /// Whether `delivery` goes up as a multipart upload (which checkpoints) rather than in one
    /// PutObject.
    fn multipart(&self, delivery: &Delivery) -> bool {
        delivery.size as usize >= self.part_size
    }

    /// `ferry check`: the bucket exists and these credentials may use it.
    pub async fn probe(&self) -> crate::probe::ProbeResult {
        crate::s3::probe_bucket(&self.client, &self.bucket).await
    }
}

/// S3 takes at most this many parts per multipart upload.
const MAX_PARTS: u64 = 10_000;

/// Part size and parts in flight for an object of `size` bytes: the configured ones, unless the
/// object needs more than [`MAX_PARTS`] parts of that size; then parts grow (whole MiB) to fit,
/// and fewer go at once, so the memory they take stays about `part_size * (concurrency + 1)`.
fn plan_parts(size: u64, part_size: usize, concurrency: usize) -> (usize, usize) {
    let needed = size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20) as usize;
    if needed <= part_size {
        return (part_size, concurrency);
    }
    let budget = part_size * (concurrency + 1);
    (needed, (budget / needed).saturating_sub(1).max(1))
}

/// The delivery's checkpoint key, from its `<job-id>:<destination>` idempotency key.
fn progress_key(delivery: &Delivery) -> String {
    let (job_id, destination) = delivery
        .idempotency_key
        .split_once(':')
        .unwrap_or((delivery.idempotency_key.as_str(), ""));
    crate::layout::progress_key(job_id, destination)
}

fn sdk_err<E>(
    what: &str,
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> DestinationError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    match classify(e) {
        S3Failure::Transient(t) => DestinationError::Transient {
            reason: format!("{what}: {t}"),
            retry_after: None,
        },
        S3Failure::Permanent(t)
            if t.contains("AccessDenied") || t.contains("InvalidAccessKeyId") =>
        {
            DestinationError::Unauthorized(format!("{what}: {t}"))
        }
        S3Failure::Permanent(t) => DestinationError::Rejected(format!("{what}: {t}")),
        S3Failure::PreconditionFailed => {
            DestinationError::Rejected(format!("{what}: precondition failed"))
        }
        S3Failure::NotFound => {
            DestinationError::Rejected(format!("{what}: bucket or upload not found"))
        }
    }
}

impl S3Destination {
    async fn put_small(
        &self,
        key: &str,
        delivery: &Delivery,
        mut body: ByteReader,
    ) -> Result<(), DestinationError> {
        let mut buf = BytesMut::with_capacity(delivery.size as usize);
        fill(&mut body, &mut buf, self.part_size).await?;
        // Drain to end-of-stream so the verifier runs before anything is written.
        let mut probe = BytesMut::with_capacity(1);
        if fill(&mut body, &mut probe, 1).await? != 0 {
            return Err(DestinationError::Verification(
                "source longer than announced".into(),
            ));
        }
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(buf.len() as i64)
            .body(ByteStream::from(buf.freeze()));
        if let Some(ct) = &delivery.content_type {
            req = req.content_type(ct);
        }
        if let Some(md5) = &delivery.content_md5 {
            req = req.content_md5(md5);
        }
        // Checked by its CRC32 (and Content-MD5), not hashed again for the signature.
        req.customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| sdk_err("PutObject", &e))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        key: &str,
        delivery: &Delivery,
        mut body: ByteReader,
    ) -> Result<(), DestinationError> {
        let checkpoint = progress_key(delivery);
        let progress = match self.resumable(key, delivery, &checkpoint).await {
            Some(progress) => progress,
            None => self.start_upload(key, delivery, &checkpoint).await?,
        };
        let upload_id = progress.upload_id.clone();
        let resumed = !progress.parts.is_empty();
        let saver = self
            .checkpoints
            .clone()
            .map(|store| ProgressSaver::start(store, checkpoint.clone(), progress.clone()));
        let mut sent = 0usize;
        let result = self
            .upload_parts(
                key,
                delivery,
                &progress,
                saver.as_ref(),
                &mut body,
                &mut sent,
            )
            .await;
        if let Some(saver) = saver {
            // Waits for the newest progress to be saved: after an interruption the next run
            // resumes from it.
            saver.finish().await;
        }
        if let Err(DestinationError::Interrupted { kept_bytes, .. }) = &result
            && self.checkpoints.is_some()
        {
            tracing::info!(
                key,
                parts_resumed = progress.parts.len(),
                parts_sent = sent,
                kept_bytes,
                "multipart upload stopped at the deadline; left open for the next run"
            );
            return result.map(|_| ());
        }
        let done = match result {
            // Every part was stored before this run: an earlier run may have completed the
            // upload and died before its receipt. Completing it again would fail (the upload is
            // gone) and restart it: the same file written twice.
            Ok(parts) if resumed && sent == 0 && self.completed_before(key, &parts).await? => {
                tracing::info!(
                    bucket = %self.bucket,
                    key,
                    parts = parts.len(),
                    "multipart upload was completed by an earlier run; not written again"
                );
                Ok(())
            }
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| match classify(&e) {
                    // The stored upload is gone (aborted by a lifecycle rule): start over next time.
                    S3Failure::NotFound if resumed => DestinationError::Transient {
                        reason: "resumed multipart upload no longer exists; restarting".into(),
                        retry_after: None,
                    },
                    _ => sdk_err("CompleteMultipartUpload", &e),
                }),
            Err(e) => Err(e),
        };
        match &done {
            Ok(()) => tracing::info!(
                key,
                parts_resumed = progress.parts.len(),
                parts_sent = sent,
                "multipart upload complete"
            ),
            // Without a checkpoint an interrupted upload cannot be resumed: abort it too.
            Err(DestinationError::Interrupted { .. }) => {
                self.abort(key, &upload_id).await;
                return Err(DestinationError::Interrupted {
                    kept_bytes: 0,
                    size: delivery.size,
                });
            }
            Err(_) => self.abort(key, &upload_id).await,
        }
        // A completed upload's checkpoint stays until the receipt is saved (`receipt_saved`):
        // a run that dies in between finds it and does not write the file again.
        if done.is_err()
            && let Some(store) = &self.checkpoints
        {
            let _ = store.delete(&checkpoint).await;
        }
        done
    }

    /// True when `key` holds exactly the multipart upload of `parts`: the ETag S3 gives a
    /// completed upload of those parts. A missing (or, without s3:ListBucket, forbidden) key is
    /// `false`; a failure worth retrying is an error, so nothing is written on a guess.
    async fn completed_before(
        &self,
        key: &str,
        parts: &[CompletedPart],
    ) -> Result<bool, DestinationError> {
        let Some(expected) = multipart_etag(parts) else {
            return Ok(false);
        };
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(head.e_tag().map(|e| e.trim_matches('"')) == Some(expected.as_str())),
            Err(e) => match classify(&e) {
                S3Failure::Transient(_) => Err(sdk_err("HeadObject", &e)),
                _ => Ok(false),
            },
        }
    }

    async fn start_upload(
        &self,
        key: &str,
        delivery: &Delivery,
        checkpoint: &str,
    ) -> Result<UploadProgress, DestinationError> {
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key);
        if let Some(ct) = &delivery.content_type {
            create = create.content_type(ct);
        }
        let upload = create
            .send()
            .await
            .map_err(|e| sdk_err("CreateMultipartUpload", &e))?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| {
                DestinationError::Rejected("CreateMultipartUpload returned no upload id".into())
            })?
            .to_string();
        let progress = UploadProgress {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            upload_id,
            part_size: self.part_size,
            size: delivery.size,
            parts: Vec::new(),
        };
        if let Some(store) = &self.checkpoints {
            save_progress(store.as_ref(), checkpoint, &progress).await;
        }
        Ok(progress)
    }

    /// A previous run's upload for the same delivery, with the leading parts it finished.
    async fn resumable(
        &self,
        key: &str,
        delivery: &Delivery,
        checkpoint: &str,
    ) -> Option<UploadProgress> {
        let store = self.checkpoints.as_ref()?;
        let (progress, _) = store.get_json::<UploadProgress>(checkpoint).await.ok()??;
        let wanted = UploadProgress {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            upload_id: String::new(),
            part_size: self.part_size,
            size: delivery.size,
            parts: Vec::new(),
        };
        if !progress.same_upload(&wanted) {
            return None;
        }
        tracing::info!(
            key,
            parts = progress.parts.len(),
            bytes = progress.parts.len() * self.part_size,
            "resuming multipart upload from parts already stored"
        );
        Some(progress)
    }

    /// Uploads the parts not stored yet, `sent` counting the UploadPart requests started; stops
    /// at the delivery's stop instant with `Interrupted`, having recorded every finished part.
    async fn upload_parts(
        &self,
        key: &str,
        delivery: &Delivery,
        progress: &UploadProgress,
        saver: Option<&ProgressSaver>,
        body: &mut ByteReader,
        sent: &mut usize,
    ) -> Result<Vec<CompletedPart>, DestinationError> {
        let mut parts: Vec<CompletedPart> = progress
            .parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        let mut in_flight: JoinSet<Result<CompletedPart, DestinationError>> = JoinSet::new();
        let buffers = Buffers::default();
        let work = self.send_parts(
            key,
            &progress.upload_id,
            &mut parts,
            &mut in_flight,
            saver,
            body,
            sent,
            &buffers,
        );
        let outcome = match delivery.stop_at {
            None => work.await,
            Some(stop) => tokio::select! {
                r = work => r,
                () = tokio::time::sleep_until(stop) => Err(DestinationError::Interrupted {
                    kept_bytes: 0,
                    size: delivery.size,
                }),
            },
        };
        match outcome {
            Ok(()) => {
                parts.sort_by_key(|p| p.part_number());
                Ok(parts)
            }
            Err(DestinationError::Interrupted { size, .. }) => {
                // Parts still uploading are cancelled (the next run sends them again); the
                // ones that finished meanwhile are kept.
                in_flight.abort_all();
                while let Some(joined) = in_flight.join_next().await {
                    if let Ok(Ok(part)) = joined {
                        parts.push(part);
                    }
                }
                if let Some(saver) = saver {
                    saver.record(&parts);
                }
                let kept = finished_run(&parts).len() as u64 * self.part_size as u64;
                Err(DestinationError::Interrupted {
                    kept_bytes: kept.min(size),
                    size,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the whole body: the bytes of the parts already stored only feed the verifier, the
    /// rest go out as parts, `concurrency` at a time, finished ones appended to `parts`. Part
    /// buffers come from `buffers` and go back to it as their uploads end.
    #[allow(clippy::too_many_arguments)]
    async fn send_parts(
        &self,
        key: &str,
        upload_id: &str,
        parts: &mut Vec<CompletedPart>,
        in_flight: &mut JoinSet<Result<CompletedPart, DestinationError>>,
        saver: Option<&ProgressSaver>,
        body: &mut ByteReader,
        sent: &mut usize,
        buffers: &Buffers,
    ) -> Result<(), DestinationError> {
        let mut number = 0i32;
        // Parts already in S3: read their bytes (the verifier must see every byte) but skip the upload.
        let mut skipped = buffers.take(self.part_size);
        let stored = parts.len();
        for i in 0..stored {
            skipped.clear();
            let n = fill(body, &mut skipped, self.part_size).await?;
            // Only the object's last part is short (when every part was stored before a run
            // died completing the upload); a short read ends the stream, and the verifier
            // checks the whole length there.
            if n != self.part_size && i + 1 != stored {
                return Err(DestinationError::Verification(
                    "source shorter than the parts already uploaded".into(),
                ));
            }
            number += 1;
        }
        buffers.give_back(skipped.freeze());
        loop {
            let mut buf = buffers.take(self.part_size);
            let n = fill(body, &mut buf, self.part_size).await?;
            if n == 0 && number > 0 {
                break;
            }
            number += 1;
            let (client, bucket, key, upload_id) = (
                self.client.clone(),
                self.bucket.clone(),
                key.to_string(),
                upload_id.to_string(),
            );
            let part_number = number;
            let (part, buffers) = (buf.freeze(), buffers.clone());
            *sent += 1;
            in_flight.spawn(async move {
                let out = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(part_number)
                    .content_length(part.len() as i64)
                    .body(ByteStream::from(part.clone()))
                    // Checked by its CRC32, not hashed again for the signature.
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await;
                buffers.give_back(part);
                let out = out.map_err(|e| sdk_err("UploadPart", &e))?;
                Ok(CompletedPart::builder()
                    .part_number(part_number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build())
            });
            // Parts that finished meanwhile are recorded now, not when the window is next full:
            // with several parts in flight the checkpoint would lag the upload by that many.
            while let Some(joined) = in_flight.try_join_next() {
                parts.push(joined_part(joined)?);
                if let Some(saver) = &saver {
                    saver.record(parts);
                }
            }
            while in_flight.len() >= self.concurrency {
                parts.push(join_part(in_flight).await?);
                if let Some(saver) = &saver {
                    saver.record(parts);
                }
            }
            if n < self.part_size {
                // A short part is the last one; one more read confirms end-of-stream (and runs the verifier).
                let mut probe = BytesMut::with_capacity(1);
                if fill(body, &mut probe, 1).await? != 0 {
                    return Err(DestinationError::Verification(
                        "stream continued after a short read".into(),
                    ));
                }
                break;
            }
        }
        while !in_flight.is_empty() {
            parts.push(join_part(in_flight).await?);
            if let Some(saver) = &saver {
                saver.record(parts);
            }
        }
        Ok(())
    }

    async fn abort(&self, key: &str, upload_id: &str) {
        let r = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = r {
            tracing::warn!(bucket = %self.bucket, key, error = %aws_sdk_s3::error::DisplayErrorContext(e), "could not abort multipart upload; a bucket lifecycle rule should clean it");
        }
    }
}

/// Without a checkpoint a crash only costs a restart, so a failed save is not fatal.
async fn save_progress(store: &dyn StateStore, checkpoint: &str, progress: &UploadProgress) {
    if let Err(e) = store
        .put_json(checkpoint, progress, PutMode::Overwrite)
        .await
    {
        tracing::warn!(checkpoint, error = %e, "could not save upload progress; a crash will restart this upload");
    }
}

/// Saves upload progress from a background task, always the newest and one save at a time, so
/// part uploads never wait on the state store (with a slow store they used to stall the source
/// read once per part).
struct ProgressSaver {
    latest: watch::Sender<UploadProgress>,
    task: tokio::task::JoinHandle<()>,
}

impl ProgressSaver {
    /// `progress` is already stored.
    fn start(store: Arc<dyn StateStore>, checkpoint: String, progress: UploadProgress) -> Self {
        let (latest, mut newest) = watch::channel(progress);
        let task = tokio::spawn(async move {
            while newest.changed().await.is_ok() {
                let progress = newest.borrow_and_update().clone();
                save_progress(store.as_ref(), &checkpoint, &progress).await;
            }
        });
        Self { latest, task }
    }

    /// Records the gap-free run of finished parts if it grew.
    fn record(&self, parts: &[CompletedPart]) {
        let run = finished_run(parts);
        self.latest.send_if_modified(|progress| {
            let grew = run.len() > progress.parts.len();
            if grew {
                progress.parts = run;
            }
            grew
        });
    }

    /// Waits for the save in flight, so no checkpoint write lands after the caller deletes it.
    async fn finish(self) {
        drop(self.latest);
        let _ = self.task.await;
    }
}

/// The ETag S3 gives the object a multipart upload of `parts` completes to: the MD5 of the
/// parts' binary MD5s (their ETags), then `-` and the part count. `None` when a part's ETag is
/// not an MD5 (some encryption modes).
fn multipart_etag(parts: &[CompletedPart]) -> Option<String> {
    let mut md5 = Md5::new();
    for part in parts {
        let raw = hex::decode(part.e_tag()?.trim_matches('"')).ok()?;
        if raw.len() != crate::digest::MD5_LEN {
            return None;
        }
        md5.update(&raw);
    }
    Some(format!("{}-{}", hex::encode(md5.finalize()), parts.len()))
}

/// The gap-free run of finished parts 1..=n (what a checkpoint can hold).
fn finished_run(parts: &[CompletedPart]) -> Vec<StoredPart> {
    let mut numbers: Vec<(i32, &str)> = parts
        .iter()
        .filter_map(|p| Some((p.part_number()?, p.e_tag()?)))
        .collect();
    numbers.sort_unstable();
    numbers
        .iter()
        .enumerate()
        .take_while(|(i, (n, _))| *n == *i as i32 + 1)
        .map(|(_, (n, etag))| StoredPart {
            number: *n,
            etag: etag.to_string(),
        })
        .collect()
}

async fn join_part(
    set: &mut JoinSet<Result<CompletedPart, DestinationError>>,
) -> Result<CompletedPart, DestinationError> {
    match set.join_next().await {
        Some(joined) => joined_part(joined),
        None => Err(DestinationError::Transient {
            reason: "no part upload in flight".into(),
            retry_after: None,
        }),
    }
}

fn joined_part(
    joined: Result<Result<CompletedPart, DestinationError>, tokio::task::JoinError>,
) -> Result<CompletedPart, DestinationError> {
    joined.unwrap_or_else(|join| {
        Err(DestinationError::Transient {
            reason: format!("part upload task failed: {join}"),
            retry_after: None,
        })
    })
}

#[async_trait]
impl Destination for S3Destination {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn write(
        &self,
        delivery: &Delivery,
        body: ByteReader,
    ) -> Result<Written, DestinationError> {
        let key = join_path(&self.prefix, &delivery.name);
        if !self.multipart(delivery) {
            self.put_small(&key, delivery, body).await?;
        } else {
            let (part_size, concurrency) =
                plan_parts(delivery.size, self.part_size, self.concurrency);
            let planned = Self {
                part_size,
                concurrency,
                ..self.clone()
            };
            planned.put_multipart(&key, delivery, body).await?;
        }
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| sdk_err("HeadObject", &e))?;
        let bytes = head.content_length().unwrap_or(-1);
        if bytes != delivery.size as i64 {
            return Err(DestinationError::Verification(format!(
                "S3 holds {bytes} bytes, expected {}",
                delivery.size
            )));
        }
        Ok(Written {
            location: format!("s3://{}/{key}", self.bucket),
            bytes: bytes as u64,
            remote_hash: None,
        })
    }

    async fn receipt_saved(&self, delivery: &Delivery) {
        // Only multipart uploads keep a checkpoint (see `put_multipart`).
        if let Some(store) = &self.checkpoints
            && self.multipart(delivery)
        {
            let checkpoint = progress_key(delivery);
            if let Err(e) = store.delete(&checkpoint).await {
                tracing::warn!(checkpoint, error = %e, "could not delete a finished upload's checkpoint");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn parts_grow_past_ten_thousand_and_fewer_go_at_once() {
        // The defaults fit objects up to 10,000 x 5 MiB unchanged.
        assert_eq!(plan_parts(1 << 30, 5 * MIB, 6), (5 * MIB, 6));
        assert_eq!(
            plan_parts(10_000 * 5 * MIB as u64, 5 * MIB, 6),
            (5 * MIB, 6)
        );
        // 100 GiB needs 10.24 MiB parts: 11 MiB, and 2 in flight keep (2 + 1) x 11 <= 7 x 5 MiB.
        let size = 100u64 << 30;
        let (part, concurrency) = plan_parts(size, 5 * MIB, 6);
        assert_eq!((part, concurrency), (11 * MIB, 2));
        assert!(size.div_ceil(part as u64) <= MAX_PARTS);
        assert!(part * (concurrency + 1) <= 5 * MIB * 7);
        // Never fewer than one part in flight, however large.
        assert_eq!(plan_parts(5 << 40, 5 * MIB, 1).1, 1);
    }

    /// An S3 endpoint that accepts every PUT (no emulator is needed to see what is sent).
    async fn accepting_server() -> wiremock::MockServer {
        use wiremock::matchers::method;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .respond_with(ResponseTemplate::new(200).insert_header("ETag", "\"part\""))
            .mount(&server)
            .await;
        server
    }

    /// The destination against `server`, with parts of `part` bytes, `concurrency` in flight.
    fn destination(
        server: &wiremock::MockServer,
        part: usize,
        concurrency: usize,
    ) -> S3Destination {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(server.uri())
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "id", "secret", None, None, "test",
            ))
            // As `AWS_REQUEST_CHECKSUM_CALCULATION=when_required` would set it: the destination
            // computes its checksums anyway.
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .build();
        S3Destination::new(
            aws_sdk_s3::Client::from_conf(conf),
            "bucket",
            "",
            part,
            concurrency,
            None,
        )
    }

    /// Uploads `data` as the parts of one upload; (parts recorded, parts sent).
    async fn send_parts(dest: &S3Destination, data: Vec<u8>, buffers: &Buffers) -> (usize, usize) {
        let mut body: ByteReader = Box::pin(std::io::Cursor::new(data));
        let (mut parts, mut in_flight, mut sent) = (Vec::new(), JoinSet::new(), 0);
        dest.send_parts(
            "key",
            "upload",
            &mut parts,
            &mut in_flight,
            None,
            &mut body,
            &mut sent,
            buffers,
        )
        .await
        .unwrap();
        (parts.len(), sent)
    }

    #[tokio::test]
    async fn part_buffers_come_back_once_their_upload_ends() {
        let server = accepting_server().await;
        let (part, concurrency) = (5 * MIB, 2);
        let dest = destination(&server, part, concurrency);
        let buffers = Buffers::default();
        let (parts, sent) = send_parts(&dest, vec![7u8; 6 * part], &buffers).await;
        assert_eq!((parts, sent), (6, 6));
        // Two parts in flight and one filling: three buffers for six parts, not six.
        assert!(
            buffers.allocated() <= concurrency + 1,
            "{} part buffers allocated for 6 parts",
            buffers.allocated()
        );
    }

    /// The bytes of every PutObject and UploadPart are checked by a CRC32 that S3 verifies, in a
    /// signed header, and not hashed again into the signature (a second SHA-256 of every byte).
    #[tokio::test]
    async fn bodies_are_checked_by_a_signed_crc32_and_not_hashed_into_the_signature() {
        use base64::Engine as _;
        let server = accepting_server().await;
        let dest = destination(&server, 5 * MIB, 2);
        let data: Vec<u8> = (0..5 * MIB + 1000).map(|i| (i % 251) as u8).collect();
        send_parts(&dest, data, &Buffers::default()).await;
        let small = b"a small file".to_vec();
        let delivery = Delivery {
            name: "small".into(),
            size: small.len() as u64,
            content_type: None,
            content_md5: None,
            idempotency_key: "job/s3".into(),
            stop_at: None,
        };
        dest.put_small("small", &delivery, Box::pin(std::io::Cursor::new(small)))
            .await
            .unwrap();

        let requests = server.received_requests().await.unwrap();
        assert_eq!(requests.len(), 3, "two parts and one PutObject");
        for r in &requests {
            let header = |name: &str| {
                r.headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            assert_eq!(
                header("x-amz-content-sha256"),
                "UNSIGNED-PAYLOAD",
                "{}",
                r.url
            );
            let mut crc = flate2::Crc::new();
            crc.update(&r.body);
            assert_eq!(
                header("x-amz-checksum-crc32"),
                base64::engine::general_purpose::STANDARD.encode(crc.sum().to_be_bytes()),
                "{}: the CRC32 of the bytes sent",
                r.url
            );
            let signed = header("authorization");
            assert!(
                signed.contains("x-amz-checksum-crc32"),
                "the checksum header is signed: {signed}"
            );
        }
    }
}
