//! An S3 bucket. Small files go in one PutObject (with Content-MD5 when known, so S3 checks it
//! too); larger ones as a multipart upload with a bounded number of parts in flight, completed
//! only after the whole stream verified, aborted on any failure: readers never see half a file.

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;

use super::{Delivery, Destination, DestinationError, Written, join_path};
use crate::ByteReader;
use crate::s3::{S3Failure, classify};

/// Delivers into a bucket under a key prefix.
pub struct S3Destination {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    part_size: usize,
    concurrency: usize,
}

impl S3Destination {
    /// `part_size` bytes per multipart part (>= 5 MiB), `concurrency` parts in flight.
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: &str,
        prefix: &str,
        part_size: usize,
        concurrency: usize,
    ) -> Self {
        Self {
            client,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            part_size: part_size.max(5 * 1024 * 1024),
            concurrency: concurrency.max(1),
        }
    }
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

/// Reads until `buf` holds `limit` bytes or the stream ends; returns bytes read.
async fn fill(
    body: &mut ByteReader,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<usize, DestinationError> {
    let start = buf.len();
    while buf.len() < limit {
        let want = limit - buf.len();
        let mut chunk = (&mut *body).take(want as u64);
        let n = chunk
            .read_buf(buf)
            .await
            .map_err(|e| DestinationError::from_io("reading source", &e))?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.len() - start)
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
        req.send().await.map_err(|e| sdk_err("PutObject", &e))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        key: &str,
        delivery: &Delivery,
        mut body: ByteReader,
    ) -> Result<(), DestinationError> {
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
        let result = self.upload_parts(key, &upload_id, &mut body).await;
        match result {
            Ok(parts) => {
                let done = self
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
                    .await;
                if let Err(e) = done {
                    self.abort(key, &upload_id).await;
                    return Err(sdk_err("CompleteMultipartUpload", &e));
                }
                Ok(())
            }
            Err(e) => {
                self.abort(key, &upload_id).await;
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        body: &mut ByteReader,
    ) -> Result<Vec<CompletedPart>, DestinationError> {
        let mut in_flight: JoinSet<Result<CompletedPart, DestinationError>> = JoinSet::new();
        let mut parts = Vec::new();
        let mut number = 0i32;
        loop {
            let mut buf = BytesMut::with_capacity(self.part_size);
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
            in_flight.spawn(async move {
                let out = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(part_number)
                    .content_length(buf.len() as i64)
                    .body(ByteStream::from(buf.freeze()))
                    .send()
                    .await
                    .map_err(|e| sdk_err("UploadPart", &e))?;
                Ok(CompletedPart::builder()
                    .part_number(part_number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build())
            });
            while in_flight.len() >= self.concurrency {
                parts.push(join_part(&mut in_flight).await?);
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
            parts.push(join_part(&mut in_flight).await?);
        }
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
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

async fn join_part(
    set: &mut JoinSet<Result<CompletedPart, DestinationError>>,
) -> Result<CompletedPart, DestinationError> {
    match set.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(join)) => Err(DestinationError::Transient {
            reason: format!("part upload task failed: {join}"),
            retry_after: None,
        }),
        None => Err(DestinationError::Transient {
            reason: "no part upload in flight".into(),
            retry_after: None,
        }),
    }
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
        if (delivery.size as usize) < self.part_size {
            self.put_small(&key, delivery, body).await?;
        } else {
            self.put_multipart(&key, delivery, body).await?;
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
        })
    }
}
