//! One retry policy for every network call: bounded exponential backoff with jitter that honours
//! a server's `Retry-After`, and only for errors that say they are retryable.

use std::future::Future;
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable as _};

use crate::config::TransferConfig;

/// Implemented by every error enum at a seam: can the same request succeed if sent again?
pub trait Retryable {
    /// True for 5xx, 429, 408, connection resets and timeouts.
    fn is_retryable(&self) -> bool;
    /// How long the server asked us to wait, if it did.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// Backoff settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub retries: usize,
    /// First delay.
    pub initial: Duration,
    /// Largest delay, also the cap on a server's Retry-After.
    pub max: Duration,
}

impl RetryPolicy {
    /// The policy from a transfer config.
    pub fn from_config(c: &TransferConfig) -> Self {
        Self {
            retries: c.retries,
            initial: Duration::from_millis(c.initial_backoff_ms),
            max: Duration::from_millis(c.max_backoff_ms),
        }
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, or retries are spent.
    pub async fn run<T, E, F, Fut>(&self, what: &str, op: F) -> Result<T, E>
    where
        E: Retryable + std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_max_times(self.retries)
            .with_jitter();
        let max = self.max;
        op.retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &E| e.is_retryable())
            .adjust(move |e: &E, next| next.map(|d| e.retry_after().map_or(d, |ra| ra.min(max))))
            .notify(|e: &E, wait: Duration| {
                tracing::warn!(operation = what, wait_ms = wait.as_millis() as u64, error = %e, "retrying");
            })
            .await
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::from_config(&TransferConfig::default())
    }
}

/// Parses a `Retry-After` header value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Whether an HTTP status is worth retrying on an idempotent request.
pub fn status_is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// The `Retry-After` of a response, if any.
pub fn retry_after_header(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct E(bool, Option<Duration>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "e")
        }
    }
    impl Retryable for E {
        fn is_retryable(&self) -> bool {
            self.0
        }
        fn retry_after(&self) -> Option<Duration> {
            self.1
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            retries: 3,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn retries_retryable_errors_until_success() {
        let calls = AtomicUsize::new(0);
        let r: Result<u32, E> = fast()
            .run("t", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(E(true, Some(Duration::from_secs(60))))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn stops_at_first_permanent_error_and_after_budget() {
        let calls = AtomicUsize::new(0);
        let r: Result<(), E> = fast()
            .run("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E(false, None))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        calls.store(0, Ordering::SeqCst);
        let _: Result<(), E> = fast()
            .run("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E(true, None))
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert!(status_is_retryable(503) && status_is_retryable(429) && !status_is_retryable(404));
    }
}
