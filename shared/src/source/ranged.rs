//! Parallel ranged reads reassembled in order: a large object is cut into fixed-size ranges,
//! up to `streams` of them are fetched at once (each by its own task, which resumes its own
//! range after a broken connection), and their bytes are handed out strictly in file order.
//!
//! Memory stays bounded: a range task holds at most its own range, and a new range starts only
//! when the oldest one has been read to its end, so at most `streams x range_bytes` bytes are
//! buffered however large the object is. The source decides how one range is fetched; this
//! module only schedules, orders and checks that every range delivered exactly its length.

use std::collections::VecDeque;
use std::future::Future;
use std::io;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

/// How a large object is read: `streams` ranged requests at once, each of `range_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParallelReads {
    /// Ranged requests in flight at once; 1 reads the object with one request.
    pub streams: usize,
    /// Bytes per ranged request; objects no larger than this are read with one request.
    pub range_bytes: u64,
}

impl Default for ParallelReads {
    /// 4 streams of 2 MiB (an 8 MiB window): see docs/performance.md for the measurements.
    fn default() -> Self {
        Self {
            streams: 4,
            range_bytes: 2 << 20,
        }
    }
}

impl ParallelReads {
    /// True when an object of `size` bytes is worth reading in ranges.
    pub fn applies_to(&self, size: u64) -> bool {
        self.streams > 1 && self.range_bytes > 0 && size > self.range_bytes
    }
}

/// Where one range task delivers its bytes (in order, or one error and nothing after it).
pub type RangeSender = mpsc::UnboundedSender<io::Result<Bytes>>;

/// Aborts the range task when the reader is dropped (a delivery that stops early).
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Active {
    rx: mpsc::UnboundedReceiver<io::Result<Bytes>>,
    /// Bytes this range must deliver, and bytes seen so far.
    len: u64,
    seen: u64,
    start: u64,
    _task: Task,
}

struct Window<F> {
    fetch: F,
    plan: ParallelReads,
    size: u64,
    next_start: u64,
    active: VecDeque<Active>,
}

impl<F, Fut> Window<F>
where
    F: Fn(u64, u64, RangeSender) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn fill(&mut self) {
        while self.active.len() < self.plan.streams && self.next_start < self.size {
            let start = self.next_start;
            let end = (start + self.plan.range_bytes).min(self.size);
            let (tx, rx) = mpsc::unbounded_channel();
            let task = Task(tokio::spawn((self.fetch)(start, end, tx)));
            self.active.push_back(Active {
                rx,
                len: end - start,
                seen: 0,
                start,
                _task: task,
            });
            self.next_start = end;
        }
    }

    async fn next(mut self) -> Result<Option<(Bytes, Self)>, io::Error> {
        loop {
            self.fill();
            let Some(front) = self.active.front_mut() else {
                return Ok(None);
            };
            match front.rx.recv().await {
                Some(Ok(bytes)) => {
                    front.seen += bytes.len() as u64;
                    if front.seen > front.len {
                        return Err(io::Error::other(format!(
                            "range at byte {} delivered more than its {} bytes",
                            front.start, front.len
                        )));
                    }
                    return Ok(Some((bytes, self)));
                }
                Some(Err(e)) => return Err(e),
                None if front.seen == front.len => {
                    self.active.pop_front();
                }
                None => {
                    return Err(io::Error::other(format!(
                        "range at byte {} ended after {} of its {} bytes",
                        front.start, front.seen, front.len
                    )));
                }
            }
        }
    }
}

/// The object's bytes, in order, read as ranges of `plan.range_bytes` by up to `plan.streams`
/// tasks at once. `fetch(start, end, tx)` must send the bytes `start..end` in order (resuming
/// on its own after a broken connection) or an error, then return.
pub fn ordered<F, Fut>(
    size: u64,
    plan: ParallelReads,
    fetch: F,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static
where
    F: Fn(u64, u64, RangeSender) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let window = Window {
        fetch,
        plan: ParallelReads {
            streams: plan.streams.max(1),
            range_bytes: plan.range_bytes.max(1),
        },
        size,
        next_start: 0,
        active: VecDeque::new(),
    };
    futures_util::stream::try_unfold(window, Window::next)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::Duration;

    use futures_util::TryStreamExt as _;

    use super::*;

    fn byte_at(i: u64) -> u8 {
        (i.wrapping_mul(31) ^ (i >> 8)) as u8
    }

    /// A fake source: each range answers in small chunks after a delay that makes later
    /// ranges finish first, so the order comes from the window, not from timing.
    fn fake(
        started: Arc<AtomicUsize>,
        consumed: Arc<AtomicU64>,
        window: Arc<AtomicUsize>,
        plan: ParallelReads,
    ) -> impl Fn(u64, u64, RangeSender) -> futures_util::future::BoxFuture<'static, ()> {
        move |start, end, tx| {
            let n = started.fetch_add(1, Ordering::SeqCst) + 1;
            // Ranges started minus ranges fully consumed: never more than `streams`.
            let done = (consumed.load(Ordering::SeqCst) / plan.range_bytes) as usize;
            window.fetch_max(n - done, Ordering::SeqCst);
            Box::pin(async move {
                let delay = 20u64.saturating_sub(start / plan.range_bytes * 5);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let mut at = start;
                while at < end {
                    let to = (at + 1000).min(end);
                    let chunk: Vec<u8> = (at..to).map(byte_at).collect();
                    if tx.send(Ok(Bytes::from(chunk))).is_err() {
                        return;
                    }
                    at = to;
                }
            })
        }
    }

    #[tokio::test]
    async fn ranges_finishing_out_of_order_come_out_in_order_within_the_window() {
        let plan = ParallelReads {
            streams: 3,
            range_bytes: 10_000,
        };
        let size = 95_001;
        let (started, consumed, window) = (Arc::default(), Arc::default(), Arc::default());
        let stream = ordered(
            size,
            plan,
            fake(
                Arc::clone(&started),
                Arc::clone(&consumed),
                Arc::clone(&window),
                plan,
            ),
        );
        let mut out = Vec::new();
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.try_next().await.unwrap() {
            out.extend_from_slice(&chunk);
            consumed.store(out.len() as u64, Ordering::SeqCst);
        }
        let want: Vec<u8> = (0..size).map(byte_at).collect();
        assert!(out == want, "bytes out of order or missing");
        assert_eq!(started.load(Ordering::SeqCst), 10, "ten ranges, each once");
        assert!(
            window.load(Ordering::SeqCst) <= 3,
            "more than `streams` ranges in memory: {}",
            window.load(Ordering::SeqCst)
        );
    }

    #[tokio::test]
    async fn a_range_that_ends_short_or_fails_is_an_error_not_a_short_file() {
        let plan = ParallelReads {
            streams: 2,
            range_bytes: 100,
        };
        let short = ordered(250, plan, |start, end, tx: RangeSender| async move {
            let len = if start == 100 {
                end - start - 1
            } else {
                end - start
            };
            let _ = tx.send(Ok(Bytes::from(vec![0u8; len as usize])));
        });
        let err = short.map_ok(|b| b.to_vec()).try_concat().await.unwrap_err();
        assert!(
            err.to_string().contains("ended after 99 of its 100"),
            "{err}"
        );

        let failing = ordered(250, plan, |start, end, tx: RangeSender| async move {
            if start == 200 {
                let _ = tx.send(Err(io::Error::other("ETag changed")));
            } else {
                let _ = tx.send(Ok(Bytes::from(vec![0u8; (end - start) as usize])));
            }
        });
        let err = failing
            .map_ok(|b| b.to_vec())
            .try_concat()
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "ETag changed");
    }

    #[test]
    fn small_objects_and_one_stream_keep_one_request() {
        let plan = ParallelReads::default();
        assert!(!plan.applies_to(plan.range_bytes));
        assert!(plan.applies_to(plan.range_bytes + 1));
        let one = ParallelReads { streams: 1, ..plan };
        assert!(!one.applies_to(1 << 40));
    }
}
