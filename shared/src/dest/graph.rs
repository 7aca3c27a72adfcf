//! Microsoft Graph: OneDrive and SharePoint document libraries, the destinations many
//! ClientTrack users (nonprofits on Microsoft 365) actually keep their files in.
//!
//! Protocol (design 6a): files up to `simple_upload_max_bytes` (4 MiB) go in one authorised
//! `PUT .../content`; larger ones through an upload session created with `deferCommit`, fed
//! fragments that are multiples of 320 KiB (< 60 MiB) in order, WITHOUT an `Authorization`
//! header (the uploadUrl carries its own token), and committed with an empty `POST {uploadUrl}`
//! only after the whole stream verified. Nothing is visible under the final name before that;
//! any failure cancels the session (`DELETE {uploadUrl}`).
//!
//! Resume: with a checkpoint store the uploadUrl and the confirmed offset are saved under
//! `progress/<job-id>/<destination>.json` after each fragment. The next run asks the session
//! for `nextExpectedRanges`, re-reads the bytes before it only to feed the verifier and the
//! hash, and sends the rest. A 416 means "already there": read the status and go on; a 404
//! means the session expired: start over. The checkpoint outlives the commit until the engine
//! saved the receipt (`receipt_saved`): a session gone after its last byte was confirmed may
//! have been committed by a run that died before its receipt, and the file under its name with
//! our size and quickXorHash settles that without uploading again.
//!
//! Verification: the byte count and the `quickXorHash` (computed on the fly) against the
//! driveItem Graph returns. A drive that reports no hash is recorded as unverified, never as
//! verified; the receipt keeps it as `remote_hash` (`verified: false` when Graph sent none) beside
//! the item's `webUrl` as the location. Graph hashes only after the
//! commit, so an item whose hash does not match is deleted again (best effort).
//!
//! The uploadUrl embeds a bearer-equivalent token: it lives in a `SecretString`, is never
//! logged, and request errors are reported without their URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use quickxorhash::QuickXorHash;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, ReadBuf};

use super::buffers::{Buffers, fill};
use super::{Delivery, Destination, DestinationError, Written, join_path};
use crate::ByteReader;
use crate::azure_ad::{AadClient, AadCredential, AadError};
pub use crate::config::{ConflictBehavior, GraphConfig};
use crate::http_client::HttpClass;
use crate::retry::{RetryPolicy, RetryStop, Retryable, retry_after_header};
use crate::secret::{SecretResolver, expose};
use crate::setup::SetupError;
use crate::state::{PutMode, StateStore, StateStoreExt};

const MIB: u64 = 1024 * 1024;
/// Every upload-session fragment but the last is a multiple of this (320 KiB).
pub const FRAGMENT_UNIT_BYTES: u64 = GraphConfig::FRAGMENT_UNIT_BYTES;
/// The Azure AD scope of app-only Graph tokens.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Longest item path Graph accepts, in characters.
const MAX_PATH_CHARS: usize = 400;

/// Delivers into one drive (OneDrive or a SharePoint document library).
pub struct GraphDestination {
    http: reqwest::Client,
    aad: AadClient,
    graph_url: String,
    /// Where the drive is (id, user or site + library) and, once looked up, its id.
    address: GraphConfig,
    drive: tokio::sync::OnceCell<String>,
    folder: String,
    conflict: ConflictBehavior,
    fragment_bytes: u64,
    simple_max_bytes: u64,
    checkpoints: Option<Arc<dyn StateStore>>,
    retry: RetryPolicy,
}

impl GraphDestination {
    /// Resolves the credentials; no network call. The drive id is looked up at the first
    /// delivery (once per process), so an Azure AD or Graph outage at a cold start stops only the
    /// jobs bound for this drive, not the function and its other destinations; a wrong secret or
    /// a missing `Sites.Selected` grant fails that delivery with the reason, and `ferry check`
    /// finds it before any file moves. `state` keeps resume checkpoints.
    pub async fn from_config(
        name: &str,
        config: &GraphConfig,
        secrets: &SecretResolver,
        state: Option<Arc<dyn StateStore>>,
        retry: RetryPolicy,
    ) -> Result<Self, SetupError> {
        Self::unresolved(name, config, secrets, state, retry).await
    }

    /// `ferry check`: builds the destination and looks its drive up (a token from Azure AD,
    /// then the drive, site or library), the lookup every cold start makes. Writes nothing.
    pub async fn probe_config(
        name: &str,
        config: &GraphConfig,
        secrets: &SecretResolver,
        retry: RetryPolicy,
    ) -> crate::probe::ProbeResult {
        use crate::probe::Problem;
        let dest = Self::unresolved(name, config, secrets, None, retry)
            .await
            .map_err(|e| Problem::setup(&e))?;
        let address = match (&config.drive_id, &config.user, &config.hostname) {
            (Some(id), _, _) => format!("drive_id {id:?}"),
            (None, Some(user), _) => format!("the OneDrive of user {user:?}"),
            _ => format!(
                "site {}{} library {:?}",
                config.hostname.as_deref().unwrap_or(""),
                config.site_path.as_deref().unwrap_or(""),
                config.library.as_deref().unwrap_or("(default)")
            ),
        };
        match dest.resolve_drive().await {
            Ok(_) => Ok(()),
            Err(DestinationError::Unauthorized(m)) => Err(Problem::new(
                format!("access refused while looking up {address}: {m}"),
                "check tenant_id, client_id and the secret or certificate; the app needs Sites.ReadWrite.All or a Sites.Selected write grant on the site (docs/deploy.md)",
            )),
            Err(DestinationError::Transient { reason, .. }) => Err(Problem::new(
                format!("cannot reach Microsoft Graph: {reason}"),
                "check graph_url and that this machine can reach it",
            )),
            Err(e) => Err(Problem::new(
                match e {
                    DestinationError::Rejected(m) => format!("drive not found: {address}: {m}"),
                    other => format!("drive not found: {address}: {other}"),
                },
                "correct drive_id, user or hostname/site_path/library (Graph Explorer: GET /sites/{hostname}:/{site-path}:/drives lists a site's libraries and their ids)",
            )),
        }
    }

    /// The destination with its credentials but without its drive id.
    async fn unresolved(
        name: &str,
        config: &GraphConfig,
        secrets: &SecretResolver,
        state: Option<Arc<dyn StateStore>>,
        retry: RetryPolicy,
    ) -> Result<Self, SetupError> {
        let bad = |e: String| SetupError::Config(format!("graph destination {name:?}: {e}"));
        config.validate().map_err(bad)?;
        let credential = AadCredential::resolve(
            config.client_secret.as_ref(),
            config.certificate.as_ref(),
            config.private_key.as_ref(),
            secrets,
        )
        .await
        .map_err(|e| match e {
            SetupError::Config(m) => bad(m),
            other => other,
        })?;
        let http = crate::http_client::build(Duration::from_secs(config.timeout_secs));
        let aad = AadClient::new(
            http.clone(),
            &config.authority_url,
            &config.tenant_id,
            &config.client_id,
            GRAPH_SCOPE,
            credential,
            retry,
        );
        Ok(Self {
            http,
            aad,
            graph_url: config.graph_url.trim_end_matches('/').to_string(),
            address: config.clone(),
            drive: tokio::sync::OnceCell::new(),
            folder: config.folder.trim_matches('/').to_string(),
            conflict: config.conflict_behavior,
            fragment_bytes: config.fragment_size_mib * MIB,
            simple_max_bytes: config.simple_upload_max_bytes,
            checkpoints: state,
            retry,
        })
    }

    /// The drive id every upload goes to, looked up on first use (a failed lookup is tried
    /// again next time).
    pub async fn drive_id(&self) -> Result<&str, DestinationError> {
        self.drive
            .get_or_try_init(|| async {
                let id = self.resolve_drive().await?;
                tracing::info!(drive_id = %id, "graph drive resolved");
                Ok(id)
            })
            .await
            .map(String::as_str)
    }

    /// The drive id once [`drive_id`](Self::drive_id) found it: `write` asks that first, and
    /// every request below it runs only inside `write`.
    fn resolved_drive(&self) -> &str {
        debug_assert!(
            self.drive.initialized(),
            "drive used before it was looked up"
        );
        self.drive.get().map_or("", String::as_str)
    }

    async fn resolve_drive(&self) -> Result<String, DestinationError> {
        let config = &self.address;
        let g = &self.graph_url;
        let id_of = |v: &Value, what: &str| {
            v.get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| DestinationError::Rejected(format!("{what} has no id")))
        };
        if let Some(id) = &config.drive_id {
            let drive = self
                .call("get drive", |t| {
                    self.http
                        .get(format!("{g}/drives/{}", segment(id)))
                        .bearer_auth(t)
                })
                .await?;
            return id_of(&drive, "drive");
        }
        if let Some(user) = &config.user {
            let drive = self
                .call("get user drive", |t| {
                    self.http
                        .get(format!("{g}/users/{}/drive", segment(user)))
                        .bearer_auth(t)
                })
                .await?;
            return id_of(&drive, "user drive");
        }
        let (Some(host), Some(site_path)) = (&config.hostname, &config.site_path) else {
            return Err(DestinationError::Rejected("no drive address".into()));
        };
        let site = self
            .call("get site", |t| {
                self.http
                    .get(format!(
                        "{g}/sites/{}:/{}",
                        segment(host),
                        encode_path(site_path.trim_matches('/'))
                    ))
                    .bearer_auth(t)
            })
            .await?;
        let site_id = id_of(&site, "site")?;
        match &config.library {
            None => {
                let drive = self
                    .call("get site drive", |t| {
                        self.http
                            .get(format!("{g}/sites/{}/drive", segment(&site_id)))
                            .bearer_auth(t)
                    })
                    .await?;
                id_of(&drive, "site drive")
            }
            Some(library) => {
                let drives = self
                    .call("list site drives", |t| {
                        self.http
                            .get(format!("{g}/sites/{}/drives", segment(&site_id)))
                            .bearer_auth(t)
                    })
                    .await?;
                let found = drives
                    .get("value")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|d| {
                        d.get("name")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.eq_ignore_ascii_case(library))
                    })
                    .ok_or_else(|| {
                        DestinationError::Rejected(format!(
                            "site {host}{site_path} has no document library {library:?}"
                        ))
                    })?;
                id_of(found, "document library")
            }
        }
    }

    /// An authorised Graph request (retried per the policy); a 401 refreshes the token once.
    /// Returns the JSON body of a 2xx answer.
    async fn call<F>(&self, what: &str, build: F) -> Result<Value, DestinationError>
    where
        F: Fn(&str) -> reqwest::RequestBuilder,
    {
        let refreshed = AtomicBool::new(false);
        self.retry
            .run(what, || async {
                loop {
                    let token = self.aad.token().await.map_err(token_error)?;
                    let resp = build(expose(&token))
                        .send()
                        .await
                        .map_err(|e| transport(what, e))?;
                    let status = resp.status().as_u16();
                    if status == 401 && !refreshed.swap(true, Ordering::SeqCst) {
                        tracing::info!(
                            operation = what,
                            "graph refused the access token; refreshing it once"
                        );
                        self.aad.invalidate();
                        continue;
                    }
                    let retry_after = retry_after_header(resp.headers());
                    let body = resp.bytes().await.unwrap_or_default();
                    return match status {
                        200..=299 => Ok(serde_json::from_slice(&body).unwrap_or(Value::Null)),
                        _ => Err(classify(what, status, retry_after, &body)),
                    };
                }
            })
            .await
    }

    /// A request to the session's uploadUrl: never authorised (the URL carries its token).
    /// Returns status, Retry-After and body; only transport failures are errors.
    async fn session_request(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<Duration>, Bytes), UploadError> {
        let resp = request
            .send()
            .await
            .map_err(|e| UploadError::Dest(transport(what, e)))?;
        let status = resp.status().as_u16();
        let retry_after = retry_after_header(resp.headers());
        let body = resp
            .bytes()
            .await
            .map_err(|e| UploadError::Dest(transport(what, e)))?;
        Ok((status, retry_after, body))
    }

    /// `nextExpectedRanges` of a session: the first byte it still needs (`size` when none).
    async fn session_status(&self, session: &Session, size: u64) -> Result<u64, UploadError> {
        let (status, retry_after, body) = self
            .session_request(
                "graph upload session status",
                self.http.get(expose(&session.url)),
            )
            .await?;
        match status {
            200..=299 => next_expected(&body, size).ok_or_else(|| {
                UploadError::Dest(DestinationError::Transient {
                    reason: "graph upload session status has no usable nextExpectedRanges".into(),
                    retry_after: None,
                })
            }),
            404 => Err(UploadError::SessionGone),
            _ => Err(UploadError::Dest(classify(
                "graph upload session status",
                status,
                retry_after,
                &body,
            ))),
        }
    }

    async fn put_simple(
        &self,
        path: &str,
        delivery: &Delivery,
        body: &mut HashingReader,
    ) -> Result<Value, DestinationError> {
        let mut buf = BytesMut::with_capacity(delivery.size as usize);
        let n = fill(body, &mut buf, delivery.size as usize).await?;
        if n as u64 != delivery.size {
            return Err(DestinationError::Verification(format!(
                "source delivered {n} of {} bytes",
                delivery.size
            )));
        }
        // Drain to end-of-stream so the verifier runs before anything is written.
        expect_end(body).await?;
        let bytes = buf.freeze();
        let url = format!("{}:/content", self.item_url(path));
        let conflict = self.conflict.as_graph();
        let content_type = delivery
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        self.call("graph simple upload", |t| {
            self.http
                .put(&url)
                .query(&[("@microsoft.graph.conflictBehavior", conflict)])
                .bearer_auth(t)
                .header(reqwest::header::CONTENT_TYPE, &content_type)
                .body(bytes.clone())
        })
        .await
    }

    fn item_url(&self, path: &str) -> String {
        format!(
            "{}/drives/{}/root:/{}",
            self.graph_url,
            segment(self.resolved_drive()),
            encode_path(path)
        )
    }

    /// Whether `delivery` goes up through an upload session (which checkpoints) rather than in
    /// one `PUT .../content`.
    fn in_session(&self, delivery: &Delivery) -> bool {
        delivery.size > self.simple_max_bytes
    }

    async fn put_session(
        &self,
        path: &str,
        delivery: &Delivery,
        body: &mut HashingReader,
    ) -> Result<Value, DestinationError> {
        let checkpoint = progress_key(delivery);
        let mut session = match self.resumable(path, delivery, &checkpoint).await {
            Some(s) => s,
            None => self.create_session(path, delivery, &checkpoint).await?,
        };
        let resumed_at = session.confirmed;
        let work = self.send_fragments(&mut session, delivery, body, &checkpoint);
        let outcome = match delivery.stop_at {
            None => work.await,
            Some(stop) => tokio::select! {
                r = work => r,
                () = tokio::time::sleep_until(stop) => Err(UploadError::Dest(
                    DestinationError::Interrupted { kept_bytes: 0, size: delivery.size },
                )),
            },
        };
        let outcome = match outcome {
            Ok(()) => {
                let ours = base64::engine::general_purpose::STANDARD.encode(body.hash.finalize());
                self.commit(&session, &ours).await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(item) => {
                tracing::info!(
                    path,
                    resumed_at_bytes = resumed_at,
                    "graph upload session committed"
                );
                // The checkpoint stays until the receipt is saved (`receipt_saved`): a run that
                // dies in between finds the file committed and does not upload it again.
                Ok(item)
            }
            Err(UploadError::Dest(DestinationError::Interrupted { size, .. }))
                if self.checkpoints.is_some() =>
            {
                self.save(&checkpoint, &session).await;
                tracing::info!(
                    path,
                    kept_bytes = session.confirmed,
                    "graph upload stopped at the deadline; session kept for the next run"
                );
                Err(DestinationError::Interrupted {
                    kept_bytes: session.confirmed,
                    size,
                })
            }
            Err(UploadError::SessionGone) => {
                self.forget(&checkpoint).await;
                Err(DestinationError::Transient {
                    reason: "graph upload session expired or was cancelled (404); starting over"
                        .into(),
                    retry_after: None,
                })
            }
            Err(UploadError::Dest(e)) => {
                self.cancel(&session).await;
                self.forget(&checkpoint).await;
                Err(match e {
                    DestinationError::Interrupted { size, .. } => DestinationError::Interrupted {
                        kept_bytes: 0,
                        size,
                    },
                    other => other,
                })
            }
        }
    }

    async fn create_session(
        &self,
        path: &str,
        delivery: &Delivery,
        checkpoint: &str,
    ) -> Result<Session, DestinationError> {
        let url = format!("{}:/createUploadSession", self.item_url(path));
        let body = serde_json::json!({
            "item": {"@microsoft.graph.conflictBehavior": self.conflict.as_graph()},
            "deferCommit": true,
        });
        let answer = self
            .call("graph create upload session", |t| {
                self.http.post(&url).bearer_auth(t).json(&body)
            })
            .await?;
        let upload_url = answer
            .get("uploadUrl")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                DestinationError::Rejected("createUploadSession returned no uploadUrl".into())
            })?;
        let session = Session {
            url: SecretString::from(upload_url.to_string()),
            drive_id: self.resolved_drive().to_string(),
            path: path.to_string(),
            size: delivery.size,
            fragment_bytes: self.fragment_bytes,
            confirmed: 0,
            gone_after_last_byte: false,
        };
        tracing::info!(path, size = delivery.size, "graph upload session created");
        self.save(checkpoint, &session).await;
        Ok(session)
    }

    /// A previous run's session for the same delivery, at the offset it still needs.
    async fn resumable(
        &self,
        path: &str,
        delivery: &Delivery,
        checkpoint: &str,
    ) -> Option<Session> {
        let store = self.checkpoints.as_ref()?;
        let (stored, _) = store.get_json::<StoredSession>(checkpoint).await.ok()??;
        let session = Session::from(stored);
        if (
            session.drive_id.as_str(),
            session.path.as_str(),
            session.size,
            session.fragment_bytes,
        ) != (
            self.resolved_drive(),
            path,
            delivery.size,
            self.fragment_bytes,
        ) {
            self.cancel(&session).await;
            self.forget(checkpoint).await;
            return None;
        }
        match self.session_status(&session, delivery.size).await {
            Ok(next) if next.is_multiple_of(FRAGMENT_UNIT_BYTES) || next == delivery.size => {
                tracing::info!(
                    path,
                    confirmed_bytes = next,
                    "resuming graph upload session from the stored offset"
                );
                Some(Session {
                    confirmed: next,
                    ..session
                })
            }
            Ok(_) | Err(UploadError::Dest(_)) => {
                self.cancel(&session).await;
                self.forget(checkpoint).await;
                None
            }
            Err(UploadError::SessionGone) if session.confirmed == delivery.size => {
                tracing::info!(
                    path,
                    "stored graph upload session is gone after its last byte; the file decides whether it was committed"
                );
                Some(Session {
                    gone_after_last_byte: true,
                    ..session
                })
            }
            Err(UploadError::SessionGone) => {
                tracing::info!(
                    path,
                    "stored graph upload session expired; starting a new one"
                );
                self.forget(checkpoint).await;
                None
            }
        }
    }

    /// Reads the whole body: bytes the session already holds only feed the verifier and the
    /// hash; the rest go out as fragments, the checkpoint updated after each.
    async fn send_fragments(
        &self,
        session: &mut Session,
        delivery: &Delivery,
        body: &mut HashingReader,
        checkpoint: &str,
    ) -> Result<(), UploadError> {
        let size = delivery.size;
        skip(body, session.confirmed)
            .await
            .map_err(UploadError::Dest)?;
        let buffers = Buffers::default();
        while session.confirmed < size {
            if delivery
                .stop_at
                .is_some_and(|s| tokio::time::Instant::now() >= s)
            {
                return Err(UploadError::Dest(DestinationError::Interrupted {
                    kept_bytes: session.confirmed,
                    size,
                }));
            }
            let start = session.confirmed;
            let len = (size - start).min(self.fragment_bytes) as usize;
            let mut buf = buffers.take(len);
            let n = fill(body, &mut buf, len).await.map_err(UploadError::Dest)?;
            if n < len {
                return Err(UploadError::Dest(DestinationError::Verification(format!(
                    "source ended after {} of {size} bytes",
                    start + n as u64
                ))));
            }
            if start + len as u64 == size {
                // Last fragment: the stream must end (and verify) before it leaves.
                expect_end(body).await.map_err(UploadError::Dest)?;
            }
            let fragment = buf.freeze();
            self.put_fragment(session, start, fragment.clone()).await?;
            buffers.give_back(fragment);
            session.confirmed = start + len as u64;
            self.save(checkpoint, session).await;
        }
        expect_end(body).await.map_err(UploadError::Dest)
    }

    /// Sends one fragment (retried per the policy) until the session confirms it holds it.
    async fn put_fragment(
        &self,
        session: &Session,
        start: u64,
        bytes: Bytes,
    ) -> Result<(), UploadError> {
        let size = session.size;
        let end = start + bytes.len() as u64;
        let what = "graph upload fragment";
        self.retry
            .run(what, || async {
                let request = self
                    .http
                    .put(expose(&session.url))
                    .header(reqwest::header::CONTENT_LENGTH, bytes.len())
                    .header(
                        reqwest::header::CONTENT_RANGE,
                        format!("bytes {start}-{}/{size}", end - 1),
                    )
                    .body(bytes.clone());
                let (status, retry_after, body) = self.session_request(what, request).await?;
                let next = match status {
                    200..=299 => next_expected(&body, size).unwrap_or(end),
                    // The range is (partly) there already, e.g. after a lost response.
                    416 => {
                        tracing::info!(start, "graph answered 416; reading the session status");
                        self.session_status(session, size).await?
                    }
                    404 => return Err(UploadError::SessionGone),
                    _ => {
                        return Err(UploadError::Dest(classify(
                            what,
                            status,
                            retry_after,
                            &body,
                        )));
                    }
                };
                if next == end {
                    Ok(())
                } else {
                    Err(UploadError::Dest(DestinationError::Transient {
                        reason: format!(
                            "graph upload session expects byte {next} after a fragment ending at {end}"
                        ),
                        retry_after: None,
                    }))
                }
            })
            .await
    }

    /// `POST {uploadUrl}`: the file appears under its name now, not before.
    /// A retried commit that finds the session gone (404) checks whether the file is there:
    /// an earlier try may have committed with its answer lost. `ours` is the quickXorHash of
    /// the bytes sent.
    async fn commit(&self, session: &Session, ours: &str) -> Result<Value, UploadError> {
        if session.gone_after_last_byte {
            let item = self.committed_item(session, ours).await;
            if item.is_ok() {
                tracing::info!(path = %session.path, "graph upload was committed by an earlier run; not written again");
            }
            return item;
        }
        let what = "graph commit upload";
        let tries = AtomicUsize::new(0);
        let result = self
            .retry
            .run(what, || async {
                tries.fetch_add(1, Ordering::SeqCst);
                let request = self
                    .http
                    .post(expose(&session.url))
                    .header(reqwest::header::CONTENT_LENGTH, 0)
                    .body(Bytes::new());
                let (status, retry_after, body) = self.session_request(what, request).await?;
                match status {
                    200..=299 => Ok(serde_json::from_slice(&body).unwrap_or(Value::Null)),
                    404 => Err(UploadError::SessionGone),
                    _ => Err(UploadError::Dest(classify(
                        what,
                        status,
                        retry_after,
                        &body,
                    ))),
                }
            })
            .await;
        match result {
            Err(UploadError::SessionGone) if tries.load(Ordering::SeqCst) > 1 => {
                let item = self.committed_item(session, ours).await;
                if item.is_ok() {
                    tracing::info!(path = %session.path, "the commit's answer was lost; the file is there");
                }
                item
            }
            other => other,
        }
    }

    /// The file under the session's name when it holds exactly our bytes (size and
    /// quickXorHash): a commit we cannot see the answer of happened. Else the session is gone
    /// and the upload starts over.
    async fn committed_item(&self, session: &Session, ours: &str) -> Result<Value, UploadError> {
        let url = self.item_url(&session.path);
        let item = self
            .call("graph get item", |t| self.http.get(&url).bearer_auth(t))
            .await;
        match item {
            Ok(item)
                if item.get("size").and_then(Value::as_u64) == Some(session.size)
                    && item
                        .pointer("/file/hashes/quickXorHash")
                        .and_then(Value::as_str)
                        == Some(ours) =>
            {
                Ok(item)
            }
            _ => Err(UploadError::SessionGone),
        }
    }

    /// Best effort: an uncancelled session expires on its own.
    async fn cancel(&self, session: &Session) {
        match self
            .session_request(
                "graph cancel upload session",
                self.http.delete(expose(&session.url)),
            )
            .await
        {
            Ok((200..=299 | 404, _, _)) => {
                tracing::info!(path = %session.path, "graph upload session cancelled")
            }
            Ok((status, _, _)) => {
                tracing::warn!(path = %session.path, status, "could not cancel graph upload session; it expires on its own")
            }
            Err(e) => {
                tracing::warn!(path = %session.path, error = %e, "could not cancel graph upload session; it expires on its own")
            }
        }
    }

    /// Best effort: deletes a committed item whose content did not verify.
    async fn delete_item(&self, item: &Value) {
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            tracing::warn!("graph item without id: cannot delete the unverified upload");
            return;
        };
        let url = format!(
            "{}/drives/{}/items/{}",
            self.graph_url,
            segment(self.resolved_drive()),
            segment(id)
        );
        match self
            .call("graph delete unverified item", |t| {
                self.http.delete(&url).bearer_auth(t)
            })
            .await
        {
            Ok(_) => tracing::warn!(
                item = id,
                "deleted an upload whose quickXorHash did not match"
            ),
            Err(e) => {
                tracing::error!(item = id, error = %e, "could not delete an upload whose quickXorHash did not match")
            }
        }
    }

    /// Without a checkpoint a crash only costs a restart, so a failed save is not fatal.
    async fn save(&self, checkpoint: &str, session: &Session) {
        let Some(store) = &self.checkpoints else {
            return;
        };
        if let Err(e) = store
            .put_json(
                checkpoint,
                &StoredSession::from(session),
                PutMode::Overwrite,
            )
            .await
        {
            tracing::warn!(checkpoint, error = %e, "could not save graph upload progress; a crash will restart this upload");
        }
    }

    async fn forget(&self, checkpoint: &str) {
        if let Some(store) = &self.checkpoints {
            let _ = store.delete(checkpoint).await;
        }
    }
}

#[async_trait]
impl Destination for GraphDestination {
    fn kind(&self) -> &'static str {
        "graph"
    }

    async fn write(
        &self,
        delivery: &Delivery,
        body: ByteReader,
    ) -> Result<Written, DestinationError> {
        let path = join_path(&self.folder, &delivery.name);
        check_path(&path)?;
        self.drive_id().await?;
        let mut body = HashingReader {
            inner: body,
            hash: QuickXorHash::new(),
        };
        let item = if !self.in_session(delivery) {
            self.put_simple(&path, delivery, &mut body).await?
        } else {
            self.put_session(&path, delivery, &mut body).await?
        };
        let ours = base64::engine::general_purpose::STANDARD.encode(body.hash.finalize());
        let bytes = item.get("size").and_then(Value::as_u64);
        if bytes != Some(delivery.size) {
            return Err(DestinationError::Verification(format!(
                "graph holds {} bytes, expected {}",
                bytes.map_or("an unknown number of".into(), |b| b.to_string()),
                delivery.size
            )));
        }
        let theirs = item
            .pointer("/file/hashes/quickXorHash")
            .and_then(Value::as_str);
        let web_url = item
            .get("webUrl")
            .and_then(Value::as_str)
            .map(crate::redact::redact_url)
            .unwrap_or_else(|| format!("graph://{}/{path}", self.resolved_drive()));
        let verified = match theirs {
            Some(theirs) if theirs == ours => true,
            Some(theirs) => {
                // Committed already (Graph hashes after the last byte): take the bad copy away.
                self.delete_item(&item).await;
                return Err(DestinationError::Verification(format!(
                    "quickXorHash mismatch: graph has {theirs}, the bytes sent hash to {ours}"
                )));
            }
            None => {
                tracing::warn!(
                    path,
                    "graph returned no quickXorHash: size verified, content unverified"
                );
                false
            }
        };
        Ok(Written {
            location: web_url,
            bytes: delivery.size,
            remote_hash: Some(crate::job::RemoteHash {
                algorithm: "quickXorHash".into(),
                value: ours,
                verified,
            }),
        })
    }

    async fn receipt_saved(&self, delivery: &Delivery) {
        // Only upload sessions keep a checkpoint.
        if self.checkpoints.is_some() && self.in_session(delivery) {
            self.forget(&progress_key(delivery)).await;
        }
    }
}

/// An open upload session; `url` embeds a token.
struct Session {
    url: SecretString,
    drive_id: String,
    path: String,
    size: u64,
    fragment_bytes: u64,
    /// Bytes the session confirmed it holds (0..=size).
    confirmed: u64,
    /// The stored session was gone when this run resumed it, after every byte had been
    /// confirmed: the run that stored it may have committed it (and died before its receipt).
    gone_after_last_byte: bool,
}

/// The checkpoint form of [`Session`] (the state bucket is private; logs never see it).
#[derive(Serialize, Deserialize)]
struct StoredSession {
    upload_url: String,
    drive_id: String,
    path: String,
    size: u64,
    fragment_bytes: u64,
    confirmed_bytes: u64,
}

impl From<&Session> for StoredSession {
    fn from(s: &Session) -> Self {
        Self {
            upload_url: expose(&s.url).to_string(),
            drive_id: s.drive_id.clone(),
            path: s.path.clone(),
            size: s.size,
            fragment_bytes: s.fragment_bytes,
            confirmed_bytes: s.confirmed,
        }
    }
}

impl From<StoredSession> for Session {
    fn from(s: StoredSession) -> Self {
        Self {
            url: SecretString::from(s.upload_url),
            drive_id: s.drive_id,
            path: s.path,
            size: s.size,
            fragment_bytes: s.fragment_bytes,
            confirmed: s.confirmed_bytes,
            gone_after_last_byte: false,
        }
    }
}

/// Session-level failures: a gone session (404) is not retried, the caller starts over.
#[derive(Debug)]
enum UploadError {
    Dest(DestinationError),
    SessionGone,
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::Dest(e) => e.fmt(f),
            UploadError::SessionGone => write!(f, "graph upload session is gone (404)"),
        }
    }
}

impl Retryable for UploadError {
    fn is_retryable(&self) -> bool {
        matches!(self, UploadError::Dest(e) if e.is_retryable())
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            UploadError::Dest(e) => e.retry_after(),
            UploadError::SessionGone => None,
        }
    }
    fn retries_stopped(self, why: RetryStop) -> Self {
        match self {
            UploadError::Dest(e) => UploadError::Dest(e.retries_stopped(why)),
            other => other,
        }
    }
}

impl From<DestinationError> for UploadError {
    fn from(e: DestinationError) -> Self {
        UploadError::Dest(e)
    }
}

/// Counts nothing, hashes everything: the quickXorHash of the bytes read so far.
struct HashingReader {
    inner: ByteReader,
    hash: QuickXorHash,
}

impl AsyncRead for HashingReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.inner.as_mut().poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = polled {
            let new = &buf.filled()[before..];
            self.hash.update(new);
        }
        polled
    }
}

/// Reads and drops `count` bytes (already stored by a resumed session).
async fn skip(body: &mut HashingReader, mut count: u64) -> Result<(), DestinationError> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while count > 0 {
        buf.clear();
        let n = fill(body, &mut buf, count.min(64 * 1024) as usize).await?;
        if n == 0 {
            return Err(DestinationError::Verification(
                "source shorter than the bytes the upload session already holds".into(),
            ));
        }
        count -= n as u64;
    }
    Ok(())
}

/// One more read that must find end-of-stream (it also runs the verifier).
async fn expect_end(body: &mut HashingReader) -> Result<(), DestinationError> {
    let mut probe = BytesMut::with_capacity(1);
    if fill(body, &mut probe, 1).await? != 0 {
        return Err(DestinationError::Verification(
            "source longer than announced".into(),
        ));
    }
    Ok(())
}

/// The delivery's checkpoint key, from its `<job-id>:<destination>` idempotency key.
fn progress_key(delivery: &Delivery) -> String {
    let (job_id, destination) = delivery
        .idempotency_key
        .split_once(':')
        .unwrap_or((delivery.idempotency_key.as_str(), ""));
    crate::layout::progress_key(job_id, destination)
}

/// The first byte a session still needs, from `{"nextExpectedRanges": ["N-"]}`; `size` when
/// it needs none.
fn next_expected(body: &[u8], size: u64) -> Option<u64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let ranges = v.get("nextExpectedRanges")?.as_array()?;
    match ranges.first() {
        None => Some(size),
        Some(r) => r.as_str()?.split('-').next()?.parse().ok(),
    }
}

/// Graph refuses these characters in names, and paths of 400 characters or more.
fn check_path(path: &str) -> Result<(), DestinationError> {
    if let Some(c) = path
        .chars()
        .find(|c| matches!(c, '"' | '*' | ':' | '<' | '>' | '?' | '\\' | '|'))
    {
        return Err(DestinationError::Rejected(format!(
            "OneDrive/SharePoint names cannot contain {c:?}: {path:?}"
        )));
    }
    if path.chars().count() >= MAX_PATH_CHARS {
        return Err(DestinationError::Rejected(format!(
            "path longer than {MAX_PATH_CHARS} characters: {path:?}"
        )));
    }
    Ok(())
}

/// Unreserved characters plus `!` and `,` (legal in a path, and in drive and site ids) stay.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b',')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One percent-encoded path segment.
fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// A `/`-separated path, each segment percent-encoded.
fn encode_path(path: &str) -> String {
    path.split('/').map(segment).collect::<Vec<_>>().join("/")
}

fn transport(what: &str, e: reqwest::Error) -> DestinationError {
    // Without the URL: an uploadUrl carries a token.
    DestinationError::Transient {
        reason: format!("{what}: {}", e.without_url()),
        retry_after: None,
    }
}

fn token_error(e: AadError) -> DestinationError {
    if e.is_retryable() {
        DestinationError::Transient {
            retry_after: e.retry_after(),
            reason: format!("azure ad: {e}"),
        }
    } else {
        DestinationError::Unauthorized(format!("azure ad: {e}"))
    }
}

/// A non-2xx Graph answer as a destination error, with Graph's error code and message.
fn classify(
    what: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> DestinationError {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let code = v
        .pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or("");
    let message: String = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    let reason =
        crate::redact::redact_embedded_urls(&format!("{what}: HTTP {status} {code} {message}"));
    match crate::http_client::classify_parts(status, retry_after) {
        HttpClass::Refused { status: 403 } => DestinationError::Unauthorized(format!(
            "{reason} (app-only access needs Sites.ReadWrite.All or a Sites.Selected write grant on the site: see docs/deploy.md)"
        )),
        HttpClass::Refused { .. } => DestinationError::Unauthorized(reason),
        HttpClass::Retryable { retry_after, .. } => DestinationError::Transient {
            reason,
            retry_after,
        },
        HttpClass::Success | HttpClass::Rejected { .. } => DestinationError::Rejected(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GraphConfig {
        serde_json::from_value(serde_json::json!({
            "drive_id": "b!abc", "tenant_id": "t", "client_id": "c",
            "client_secret": {"env": "X"}
        }))
        .unwrap()
    }

    #[test]
    fn defaults_and_validation() {
        let c = config();
        assert_eq!(c.conflict_behavior, ConflictBehavior::Replace);
        assert_eq!(c.fragment_size_mib, 10);
        assert_eq!(c.simple_upload_max_bytes, 4 * MIB);
        assert!(c.validate().is_ok());
        for (mib, ok) in [
            (5, true),
            (10, true),
            (55, true),
            (4, false),
            (60, false),
            (0, false),
        ] {
            let c = GraphConfig {
                fragment_size_mib: mib,
                ..config()
            };
            assert_eq!(c.validate().is_ok(), ok, "{mib} MiB");
        }
        let two_addresses = GraphConfig {
            user: Some("a@b.org".into()),
            ..config()
        };
        assert!(two_addresses.validate().is_err());
        let too_big = GraphConfig {
            simple_upload_max_bytes: 4 * MIB + 1,
            ..config()
        };
        assert!(too_big.validate().is_err());
        let unknown: Result<GraphConfig, _> = serde_json::from_value(serde_json::json!({
            "drive_id": "d", "tenant_id": "t", "client_id": "c", "client_secret": {"env": "X"}, "drive": "x"
        }));
        assert!(unknown.is_err());
    }

    #[test]
    fn ranges_paths_and_names() {
        assert_eq!(
            next_expected(br#"{"nextExpectedRanges":["26-"]}"#, 100),
            Some(26)
        );
        assert_eq!(
            next_expected(br#"{"nextExpectedRanges":[]}"#, 100),
            Some(100)
        );
        assert_eq!(next_expected(b"{}", 100), None);
        assert_eq!(
            encode_path("a b/Ü ✓ (1).csv"),
            "a%20b/%C3%9C%20%E2%9C%93%20%281%29.csv"
        );
        assert!(check_path("in/ok name.csv").is_ok());
        assert!(check_path("in/what?.csv").is_err());
        assert!(check_path(&"x".repeat(400)).is_err());
    }
}
