//! One retry policy for every network call: bounded exponential backoff with jitter that honours
//! a server's `Retry-After`, and only for errors that say they are retryable. Besides the retry
//! count, a total time budget per operation (like object_store's `retry_timeout`) and, when the
//! caller has one, a deadline bound it: no retry starts whose wait would pass either, and the
//! error returned then says so.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable as _};
use tokio::time::Instant;

/// Implemented by every error enum at a seam: can the same request succeed if sent again?
pub trait Retryable {
    /// True for 5xx, 429, 408, connection resets and timeouts.
    fn is_retryable(&self) -> bool;
    /// How long the server asked us to wait, if it did.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// This error, saying that retrying stopped early (`why`): the variant that carries the
    /// retryable reason appends `why` to it, so the final error names the spent budget.
    fn retries_stopped(self, why: RetryStop) -> Self
    where
        Self: Sized;
}

/// Why [`RetryPolicy::run`] gave up on a retryable error before its retry count was used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryStop {
    /// The next wait would have ended after the operation's total retry budget.
    BudgetSpent {
        /// The budget (`transfer.retry_budget_secs`).
        budget: Duration,
        /// Tries made.
        tries: usize,
    },
    /// The next wait would have ended after the caller's deadline.
    DeadlineNear {
        /// Tries made.
        tries: usize,
    },
}

impl std::fmt::Display for RetryStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryStop::BudgetSpent { budget, tries } => write!(
                f,
                "retry budget of {}s spent after {tries} tries",
                budget.as_secs_f64()
            ),
            RetryStop::DeadlineNear { tries } => write!(
                f,
                "stopped retrying after {tries} tries: the next wait would pass the invocation deadline"
            ),
        }
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
    /// Total time one operation may take, tries and waits together: no retry starts whose wait
    /// would end after it.
    pub budget: Duration,
    /// When set, no retry starts whose wait would end after this instant.
    pub deadline: Option<Instant>,
}

impl RetryPolicy {
    /// Retries after the first try, unless configured (`transfer.retries`).
    pub const DEFAULT_RETRIES: usize = 4;
    /// First delay, unless configured (`transfer.initial_backoff_ms`).
    pub const DEFAULT_INITIAL: Duration = Duration::from_millis(200);
    /// Largest delay, unless configured (`transfer.max_backoff_ms`).
    pub const DEFAULT_MAX: Duration = Duration::from_secs(20);
    /// Total time of one operation, unless configured (`transfer.retry_budget_secs`).
    pub const DEFAULT_BUDGET: Duration = Duration::from_secs(300);

    /// The same policy, never waiting past `deadline` (`None`: no deadline).
    pub fn until(self, deadline: Option<Instant>) -> Self {
        Self { deadline, ..self }
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, or retries are spent; or
    /// until the next wait would pass the budget or the deadline, and then the error says so.
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
        let (max, budget, deadline) = (self.max, self.budget, self.deadline);
        let started = Instant::now();
        let stopped: Mutex<Option<RetryStop>> = Mutex::new(None);
        let mut tries = 0usize;
        let result = op
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &E| e.is_retryable())
            .adjust(|e: &E, next| {
                tries += 1;
                let wait = next.map(|d| e.retry_after().map_or(d, |ra| ra.min(max)))?;
                let resume = Instant::now() + wait;
                let stop = if resume > started + budget {
                    Some(RetryStop::BudgetSpent { budget, tries })
                } else if deadline.is_some_and(|d| resume >= d) {
                    Some(RetryStop::DeadlineNear { tries })
                } else {
                    None
                };
                match stop {
                    Some(stop) => {
                        *stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop);
                        None
                    }
                    None => Some(wait),
                }
            })
            .notify(|e: &E, wait: Duration| {
                crate::metrics::add(
                    "Retries",
                    crate::metrics::Unit::Count,
                    1.0,
                    &[("Operation", what)],
                );
                tracing::warn!(operation = what, wait_ms = wait.as_millis() as u64, error = %e, "retrying");
            })
            .await;
        let stopped = stopped.into_inner().unwrap_or_else(|p| p.into_inner());
        result.map_err(|e| match stopped {
            Some(why) => {
                tracing::warn!(operation = what, error = %e, "{why}");
                e.retries_stopped(why)
            }
            None => e,
        })
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: Self::DEFAULT_RETRIES,
            initial: Self::DEFAULT_INITIAL,
            max: Self::DEFAULT_MAX,
            budget: Self::DEFAULT_BUDGET,
            deadline: None,
        }
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
    struct E(bool, Option<Duration>, Option<RetryStop>);
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
        fn retries_stopped(self, why: RetryStop) -> Self {
            E(self.0, self.1, Some(why))
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            retries: 3,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
            budget: Duration::from_secs(300),
            deadline: None,
        }
    }

    /// Runs an operation that always fails retryably; returns (calls, final error).
    async fn always_failing(policy: RetryPolicy, retry_after: Option<Duration>) -> (usize, E) {
        let calls = AtomicUsize::new(0);
        let r: Result<(), E> = policy
            .run("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E(true, retry_after, None))
            })
            .await;
        (calls.load(Ordering::SeqCst), r.unwrap_err())
    }

    #[tokio::test]
    async fn budget_stops_retries_and_the_error_says_so() {
        // Many retries allowed, but every wait is >= 20 ms and the budget is 60 ms: at most
        // 60 / 20 + 1 = 4 tries fit, however fast each try is.
        let policy = RetryPolicy {
            retries: 1000,
            initial: Duration::from_millis(20),
            max: Duration::from_millis(20),
            budget: Duration::from_millis(60),
            deadline: None,
        };
        let (calls, e) = always_failing(policy, None).await;
        assert!((1..=4).contains(&calls), "{calls} tries");
        let why = e.2.expect("the error says why retrying stopped");
        assert_eq!(
            why,
            RetryStop::BudgetSpent {
                budget: Duration::from_millis(60),
                tries: calls
            }
        );
        assert!(
            why.to_string().contains("retry budget of 0.06s spent"),
            "{why}"
        );
        // A zero budget allows the first try only.
        let (calls, e) = always_failing(
            RetryPolicy {
                budget: Duration::ZERO,
                ..policy
            },
            None,
        )
        .await;
        assert_eq!(calls, 1);
        assert!(matches!(e.2, Some(RetryStop::BudgetSpent { tries: 1, .. })));
    }

    #[tokio::test]
    async fn a_retry_after_that_passes_the_budget_is_not_waited_for() {
        // The server asks for 30 s (capped to max = 30 s); the budget is 10 s: give up at once
        // instead of sleeping into it.
        let policy = RetryPolicy {
            retries: 5,
            initial: Duration::from_millis(1),
            max: Duration::from_secs(30),
            budget: Duration::from_secs(10),
            deadline: None,
        };
        let (calls, e) = always_failing(policy, Some(Duration::from_secs(30))).await;
        assert_eq!(calls, 1);
        assert!(matches!(e.2, Some(RetryStop::BudgetSpent { .. })));
    }

    #[tokio::test]
    async fn never_sleeps_past_the_deadline() {
        let now = Instant::now();
        // Deadline already here: one try, and the error names the deadline.
        let (calls, e) = always_failing(fast().until(Some(now)), None).await;
        assert_eq!(calls, 1);
        assert_eq!(e.2, Some(RetryStop::DeadlineNear { tries: 1 }));
        // A Retry-After of 20 s with the deadline 5 s away: no wait.
        let policy = RetryPolicy {
            max: Duration::from_secs(60),
            ..fast()
        }
        .until(Some(now + Duration::from_secs(5)));
        let (calls, e) = always_failing(policy, Some(Duration::from_secs(20))).await;
        assert_eq!(calls, 1);
        assert!(e.2.unwrap().to_string().contains("deadline"));
        // A far deadline and a large budget change nothing: all retries are made.
        let (calls, e) =
            always_failing(fast().until(Some(now + Duration::from_secs(3600))), None).await;
        assert_eq!((calls, e.2), (4, None));
    }

    #[tokio::test]
    async fn retries_retryable_errors_until_success() {
        let calls = AtomicUsize::new(0);
        let r: Result<u32, E> = fast()
            .run("t", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(E(true, Some(Duration::from_secs(60)), None))
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
                Err(E(false, None, None))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        calls.store(0, Ordering::SeqCst);
        let _: Result<(), E> = fast()
            .run("t", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E(true, None, None))
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
