//! Azure Service Bus over the REST runtime API, peek-lock only: receive
//! (`POST {entity}/messages/head?timeout=N`: 201 with the body, a `BrokerProperties` JSON header and
//! the message's `Location`; 204 when none arrived in time), complete (`DELETE <Location>`),
//! unlock (`PUT <Location>`) and renew (`POST <Location>`). A 404/410 on any of them means the lock
//! was lost: the message comes back and is handled again (job creation is create-once, so nothing
//! is duplicated). The same calls on `{subscription}/$deadletterqueue` read the dead-letter
//! subqueue, whose messages carry the broker's `DeadLetterReason` as a custom property (a header).
//!
//! The connection string comes from the token set: `SharedAccessKeyName` + `SharedAccessKey`
//! (we sign `SharedAccessSignature sr=..&sig=..&se=..&skn=..` per request, HMAC-SHA256 over
//! `urlencode(uri) + "\n" + expiry`) or a ready `SharedAccessSignature`. A 401/403 triggers one
//! token refresh and one more try.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use reqwest::{RequestBuilder, Response};
use serde::Deserialize;
use thiserror::Error;
use url::Url;

use super::connection::{Connection, SbAuth, parse_connection_string, sas_token};
use crate::clock::now_ms;
use crate::http_client::{HttpClass, classify};
use crate::retry::{RetryPolicy, RetryStop, Retryable};
use crate::secret::expose;
use crate::token::cache::TokenCache;
use crate::token::{ExportTokens, TokenError};

/// Lifetime of the SAS tokens we sign for each request.
const SAS_LIFETIME_SECS: u64 = 600;

/// What went wrong talking to Service Bus. Never contains a key or signature.
#[derive(Debug, Error)]
pub enum SbError {
    /// Credentials refused even after a token refresh.
    #[error("service bus refused the credentials (HTTP {status}) even after a token refresh")]
    Unauthorized {
        /// The HTTP status.
        status: u16,
    },
    /// The subscription does not exist (any more).
    #[error("service bus subscription {path} does not exist (HTTP {status})")]
    EntityGone {
        /// The entity path.
        path: String,
        /// The HTTP status.
        status: u16,
    },
    /// 5xx, 429, 408, resets, timeouts.
    #[error("service bus temporarily unavailable: {reason}")]
    Transient {
        /// What happened (secret-free).
        reason: String,
        /// How long the server asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Anything else: bad connection string, a protocol violation, other 4xx.
    #[error("service bus: {0}")]
    Permanent(String),
    /// Tokens could not be had.
    #[error(transparent)]
    Tokens(#[from] TokenError),
}

impl Retryable for SbError {
    fn is_retryable(&self) -> bool {
        match self {
            SbError::Transient { .. } => true,
            SbError::Tokens(e) => e.is_retryable(),
            _ => false,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            SbError::Transient { retry_after, .. } => *retry_after,
            SbError::Tokens(e) => e.retry_after(),
            _ => None,
        }
    }
    fn retries_stopped(self, why: RetryStop) -> Self {
        match self {
            SbError::Transient {
                reason,
                retry_after,
            } => SbError::Transient {
                reason: format!("{reason} ({why})"),
                retry_after,
            },
            SbError::Tokens(e) => SbError::Tokens(e.retries_stopped(why)),
            other => other,
        }
    }
}

/// The subscription addressed by one token set.
struct Subscription {
    conn: Connection,
    /// `topic/subscriptions/name`
    path: String,
    generation: u64,
}

impl Subscription {
    fn from_tokens(tokens: &ExportTokens, topic: Option<&str>) -> Result<Self, SbError> {
        let conn = parse_connection_string(crate::secret::expose(&tokens.connection_string))
            .map_err(|e| SbError::Permanent(e.to_string()))?;
        let sub = tokens.subscription_name.trim_matches('/');
        let has_subs = |p: &str| p.to_ascii_lowercase().contains("/subscriptions/");
        let path = if has_subs(sub) {
            sub.to_string()
        } else if let Some(e) = conn.entity_path.as_deref().filter(|e| has_subs(e)) {
            e.to_string()
        } else {
            let topic = conn.entity_path.as_deref().or(topic).ok_or_else(|| {
                SbError::Permanent(
                    "the connection string has no EntityPath: set `topic` in the source config"
                        .into(),
                )
            })?;
            format!("{topic}/subscriptions/{sub}")
        };
        Ok(Self {
            conn,
            path,
            generation: tokens.generation,
        })
    }

    fn entity_url(&self) -> String {
        format!("{}{}", self.conn.endpoint, self.path)
    }

    fn queue_url(&self, queue: SubQueue) -> String {
        match queue {
            SubQueue::Active => self.entity_url(),
            SubQueue::DeadLetter => format!("{}/$deadletterqueue", self.entity_url()),
        }
    }

    fn authorization(&self) -> Result<HeaderValue, SbError> {
        let token = match &self.conn.auth {
            SbAuth::Signature(sig) => sig.clone(),
            SbAuth::Key { name, key } => sas_token(
                &self.entity_url(),
                name,
                key,
                now_ms() / 1000 + SAS_LIFETIME_SECS,
            ),
        };
        let mut value = HeaderValue::from_str(expose(&token))
            .map_err(|_| SbError::Permanent("connection string key is not header-safe".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// A message's `Location` must point into this subscription before credentials go there.
    fn check_location(&self, location: &str) -> Result<String, SbError> {
        let url = Url::parse(location).map_err(|_| {
            SbError::Permanent("the Location of a received message is not a URL".into())
        })?;
        let ours = &self.conn.endpoint;
        let path = url.path().to_ascii_lowercase();
        let inside = [
            format!("/{}/messages/", self.path),
            format!("/{}/$deadletterqueue/messages/", self.path),
        ]
        .iter()
        .any(|prefix| path.starts_with(&prefix.to_ascii_lowercase()));
        let same_host = url.scheme() == ours.scheme()
            && url.host_str() == ours.host_str()
            && url.port_or_known_default() == ours.port_or_known_default();
        if !same_host || !inside {
            return Err(SbError::Permanent(format!(
                "the Location of a received message ({}://{}{}) is outside the subscription; not sending credentials there",
                url.scheme(),
                url.host_str().unwrap_or(""),
                url.path()
            )));
        }
        Ok(url.to_string())
    }
}

/// `BrokerProperties` of a received message (fields we use; others ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BrokerProperties {
    /// Deliveries so far, this one included.
    pub delivery_count: u32,
    /// Lock token.
    pub lock_token: String,
    /// Message id.
    pub message_id: String,
    /// Sequence number.
    pub sequence_number: i64,
    /// Lock expiry (HTTP date).
    pub locked_until_utc: String,
}

/// Which queue of the subscription to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubQueue {
    /// The subscription itself.
    Active,
    /// Its dead-letter subqueue (`$deadletterqueue`): messages the broker gave up on (e.g.
    /// `MaxDeliveryCountExceeded`) or a receiver dead-lettered.
    DeadLetter,
}

/// A locked message.
#[derive(Debug)]
pub struct Received {
    /// The body (up to the size cap).
    pub body: Bytes,
    /// True when the body was larger than the cap and was cut.
    pub truncated: bool,
    /// Broker properties.
    pub broker: BrokerProperties,
    /// The message's URL for complete/unlock/renew (checked to be inside the subscription).
    pub location: String,
    /// The queue it was read from.
    pub queue: SubQueue,
    /// `DeadLetterReason` of a dead-lettered message (`MaxDeliveryCountExceeded`, or what the
    /// receiver that dead-lettered it said).
    pub dead_letter_reason: Option<String>,
    /// `DeadLetterErrorDescription` of a dead-lettered message.
    pub dead_letter_description: Option<String>,
}

/// How a settle request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Done.
    Ok,
    /// 404/410: the lock expired or was taken by another receiver.
    LockLost,
}

/// A Service Bus subscription client over the shared token cache.
pub struct ServiceBusClient {
    http: reqwest::Client,
    tokens: Arc<TokenCache>,
    topic: Option<String>,
    retry: RetryPolicy,
}

fn transport(e: reqwest::Error) -> SbError {
    SbError::Transient {
        reason: e.without_url().to_string(),
        retry_after: None,
    }
}

impl ServiceBusClient {
    /// A client; `topic` is used when neither the connection string nor the subscription name
    /// says which topic.
    pub fn new(
        http: reqwest::Client,
        tokens: Arc<TokenCache>,
        topic: Option<String>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            http,
            tokens,
            topic,
            retry,
        }
    }

    async fn subscription(&self) -> Result<Subscription, SbError> {
        let tokens = self.tokens.get().await?;
        Subscription::from_tokens(&tokens, self.topic.as_deref())
    }

    /// Sends a request built for the current subscription; a 401/403 gets one token refresh
    /// and one more try.
    async fn send(
        &self,
        build: impl Fn(&Subscription) -> Result<RequestBuilder, SbError>,
    ) -> Result<(Response, Subscription), SbError> {
        let sub = self.subscription().await?;
        let resp = build(&sub)?
            .header(http::header::AUTHORIZATION, sub.authorization()?)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        if !matches!(status, 401 | 403) {
            return Ok((resp, sub));
        }
        drop(resp);
        let fresh = self.tokens.refresh_after_denied(sub.generation).await?;
        tracing::info!(
            generation = fresh.generation,
            "service bus refused the credentials; retrying once with refreshed tokens"
        );
        let sub = Subscription::from_tokens(&fresh, self.topic.as_deref())?;
        let resp = build(&sub)?
            .header(http::header::AUTHORIZATION, sub.authorization()?)
            .send()
            .await
            .map_err(transport)?;
        match resp.status().as_u16() {
            s @ (401 | 403) => Err(SbError::Unauthorized { status: s }),
            _ => Ok((resp, sub)),
        }
    }

    fn failure(resp: &Response, sub: &Subscription, what: &str) -> SbError {
        let status = resp.status().as_u16();
        match (status, classify(resp)) {
            (404 | 410, _) if what == "receive" => SbError::EntityGone {
                path: sub.path.clone(),
                status,
            },
            (s, HttpClass::Retryable { retry_after, .. }) => SbError::Transient {
                reason: format!("{what}: HTTP {s}"),
                retry_after,
            },
            (s, _) => SbError::Permanent(format!("{what}: HTTP {s}")),
        }
    }

    /// Receives and locks the next message, waiting up to `wait` (whole seconds, at least 1).
    pub async fn receive(
        &self,
        wait: Duration,
        max_body: usize,
    ) -> Result<Option<Received>, SbError> {
        self.receive_from(SubQueue::Active, wait, max_body).await
    }

    /// Receives and locks the next message of `queue`, waiting up to `wait` (whole seconds, at
    /// least 1).
    pub async fn receive_from(
        &self,
        queue: SubQueue,
        wait: Duration,
        max_body: usize,
    ) -> Result<Option<Received>, SbError> {
        self.retry
            .run("service bus receive", || {
                self.receive_once(queue, wait, max_body)
            })
            .await
    }

    async fn receive_once(
        &self,
        queue: SubQueue,
        wait: Duration,
        max_body: usize,
    ) -> Result<Option<Received>, SbError> {
        let secs = wait.as_secs().max(1);
        let http = &self.http;
        let (mut resp, sub) = self
            .send(|sub| {
                Ok(http
                    .post(format!("{}/messages/head", sub.queue_url(queue)))
                    .query(&[("timeout", secs.to_string())])
                    .header(http::header::CONTENT_LENGTH, "0"))
            })
            .await?;
        match resp.status().as_u16() {
            204 => return Ok(None),
            200 | 201 => {}
            _ => return Err(Self::failure(&resp, &sub, "receive")),
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let location = header("location").ok_or_else(|| {
            SbError::Permanent("a received message has no Location header".into())
        })?;
        let location = sub.check_location(&location)?;
        let broker = header("brokerproperties")
            .and_then(|b| serde_json::from_str::<BrokerProperties>(&b).ok())
            .unwrap_or_default();
        // Custom properties are headers; a string value comes quoted.
        let property = |name: &str| {
            header(name)
                .map(|v| v.trim().trim_matches('"').to_string())
                .filter(|v| !v.is_empty())
        };
        let (dead_letter_reason, dead_letter_description) = match queue {
            SubQueue::Active => (None, None),
            SubQueue::DeadLetter => (
                property("deadletterreason"),
                property("deadlettererrordescription"),
            ),
        };
        let mut body = BytesMut::new();
        let mut truncated = false;
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > max_body {
                body.extend_from_slice(&chunk[..max_body - body.len()]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(Received {
            body: body.freeze(),
            truncated,
            broker,
            location,
            queue,
            dead_letter_reason,
            dead_letter_description,
        }))
    }

    async fn settle(&self, message: &Received, verb: http::Method) -> Result<Settled, SbError> {
        let what = match verb {
            http::Method::DELETE => "complete",
            http::Method::PUT => "unlock",
            _ => "renew lock",
        };
        let http = &self.http;
        let (resp, sub) = self
            .send(|sub| {
                let url = sub.check_location(&message.location)?;
                Ok(http
                    .request(verb.clone(), url)
                    .header(http::header::CONTENT_LENGTH, "0"))
            })
            .await?;
        match resp.status().as_u16() {
            200..=299 => Ok(Settled::Ok),
            404 | 410 => Ok(Settled::LockLost),
            _ => Err(Self::failure(&resp, &sub, what)),
        }
    }

    /// Completes (deletes) a locked message.
    pub async fn complete(&self, message: &Received) -> Result<Settled, SbError> {
        self.retry
            .run("service bus complete", || {
                self.settle(message, http::Method::DELETE)
            })
            .await
    }

    /// Unlocks a message so it is delivered again.
    pub async fn unlock(&self, message: &Received) -> Result<Settled, SbError> {
        self.retry
            .run("service bus unlock", || {
                self.settle(message, http::Method::PUT)
            })
            .await
    }

    /// Renews a message's lock for another lock duration; one try (the caller renews well
    /// before the lock runs out and tries again at its next turn). `LockLost` (404/410): the
    /// lock expired or was taken; stop working on the message.
    pub async fn renew(&self, message: &Received) -> Result<Settled, SbError> {
        self.settle(message, http::Method::POST).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[test]
    fn subscription_path_from_entity_path_name_or_config() {
        let tokens = |conn: &str, sub: &str| ExportTokens {
            integration: "i".into(),
            generation: 1,
            fetched_at_ms: 0,
            expires_at_ms: 0,
            subscription_name: sub.into(),
            connection_string: SecretString::from(conn.to_string()),
            blob_bases: vec![],
        };
        let key =
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey=b";
        let path = |conn: String, sub: &str, topic: Option<&str>| {
            Subscription::from_tokens(&tokens(&conn, sub), topic).map(|s| s.entity_url())
        };
        assert_eq!(
            path(format!("{key};EntityPath=export"), "tenant", None).unwrap(),
            "https://ns.servicebus.windows.net/export/subscriptions/tenant"
        );
        assert_eq!(
            path(
                format!("{key};EntityPath=export/Subscriptions/tenant"),
                "tenant",
                None
            )
            .unwrap(),
            "https://ns.servicebus.windows.net/export/Subscriptions/tenant"
        );
        assert_eq!(
            path(key.to_string(), "tenant", Some("files")).unwrap(),
            "https://ns.servicebus.windows.net/files/subscriptions/tenant"
        );
        assert!(path(key.to_string(), "tenant", None).is_err());
        let sub =
            Subscription::from_tokens(&tokens(&format!("{key};EntityPath=t"), "s"), None).unwrap();
        assert!(
            sub.check_location(
                "https://ns.servicebus.windows.net/t/subscriptions/s/messages/7/abc"
            )
            .is_ok()
        );
        assert!(
            sub.check_location("https://evil.example/t/subscriptions/s/messages/7/abc")
                .is_err()
        );
        assert!(
            sub.check_location(
                "https://ns.servicebus.windows.net/other/subscriptions/s/messages/7/abc"
            )
            .is_err()
        );
    }
}
