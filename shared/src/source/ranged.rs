//! Parallel ranged reads reassembled in order: a large object is cut into fixed-size ranges,
//! up to `streams` of them are fetched at once (each by its own task, which resumes its own
//! range after a broken connection), and their bytes are handed out strictly in file order.
//!
//! Memory stays bounded: a range task may hold at most `ahead_bytes` that the reader has not
//! taken yet; a task further ahead stops reading its connection (TCP holds the rest on the
//! server's side) until the reader catches up, and a new range starts only when the oldest one
//! has been read to its end. So at most `streams x ahead_bytes` bytes are buffered however large
//! the object and its ranges are, and ranges can be large (few requests: each one costs a round
//! trip and the server's per-request work). The source decides how one range is fetched; this
//! module only schedules, orders and checks that every range delivered exactly its length.

use std::collections::VecDeque;
use std::future::Future;
use std::io;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{Semaphore, mpsc};

/// How a large object is read: `streams` ranged requests at once, each of `range_bytes`, each
/// holding at most `ahead_bytes` the reader has not taken yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParallelReads {
    /// Ranged requests in flight at once; 1 reads the object with one request.
    pub streams: usize,
    /// Bytes per ranged request; objects no larger than this are read with one request.
    pub range_bytes: u64,
    /// Bytes one range may hold ahead of the reader before it stops reading its connection.
    pub ahead_bytes: u64,
}

impl Default for ParallelReads {
    /// 4 streams of 16 MiB ranges, each at most 1 MiB ahead of the reader (a 4 MiB buffer): see
    /// docs/performance.md for the measurements.
    fn default() -> Self {
        Self {
            streams: 4,
            range_bytes: 16 << 20,
            ahead_bytes: 1 << 20,
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
pub struct RangeSender {
    tx: mpsc::UnboundedSender<io::Result<Bytes>>,
    /// Bytes this range may still hand on before the reader takes some (`ahead_bytes` at most).
    room: std::sync::Arc<Semaphore>,
    ahead: u32,
}

/// The reader is gone (the delivery stopped early): nobody wants the rest of the range.
#[derive(Debug)]
pub struct ReaderGone;

impl RangeSender {
    /// Hands `bytes` on once the range has room for them: a range further ahead than
    /// `ahead_bytes` waits here, and does not read its connection meanwhile.
    pub async fn send(&self, bytes: Bytes) -> Result<(), ReaderGone> {
        let permits = held(bytes.len(), self.ahead);
        self.room
            .acquire_many(permits)
            .await
            .map_err(|_| ReaderGone)?
            .forget();
        self.tx.send(Ok(bytes)).map_err(|_| ReaderGone)
    }

    /// Ends the range with `error` (the reader fails with it once it reaches this range).
    pub fn fail(&self, error: io::Error) {
        let _ = self.tx.send(Err(error));
    }
}

/// The room a chunk of `len` bytes takes: never more than the whole room, so a chunk larger
/// than `ahead_bytes` still passes (alone).
fn held(len: usize, ahead: u32) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX).min(ahead)
}

/// Aborts the range task when the reader is dropped (a delivery that stops early).
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Active {
    rx: mpsc::UnboundedReceiver<io::Result<Bytes>>,
    room: std::sync::Arc<Semaphore>,
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
    /// Room per range, in bytes (a semaphore counts in `u32`).
    fn ahead(&self) -> u32 {
        u32::try_from(self.plan.ahead_bytes.min(self.plan.range_bytes)).unwrap_or(u32::MAX)
    }

    fn fill(&mut self) {
        while self.active.len() < self.plan.streams && self.next_start < self.size {
            let start = self.next_start;
            let end = (start + self.plan.range_bytes).min(self.size);
            let (tx, rx) = mpsc::unbounded_channel();
            let ahead = self.ahead();
            let room = std::sync::Arc::new(Semaphore::new(ahead as usize));
            let sender = RangeSender {
                tx,
                room: room.clone(),
                ahead,
            };
            let task = Task(tokio::spawn((self.fetch)(start, end, sender)));
            self.active.push_back(Active {
                rx,
                room,
                len: end - start,
                seen: 0,
                start,
                _task: task,
            });
            self.next_start = end;
        }
    }

    async fn next(mut self) -> Result<Option<(Bytes, Self)>, io::Error> {
        let ahead = self.ahead();
        loop {
            self.fill();
            let Some(front) = self.active.front_mut() else {
                return Ok(None);
            };
            match front.rx.recv().await {
                Some(Ok(bytes)) => {
                    front.seen += bytes.len() as u64;
                    front.room.add_permits(held(bytes.len(), ahead) as usize);
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
            ahead_bytes: plan.ahead_bytes.max(1),
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
                    if tx.send(Bytes::from(chunk)).await.is_err() {
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
            ahead_bytes: 10_000,
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
            ahead_bytes: 100,
        };
        let short = ordered(250, plan, |start, end, tx: RangeSender| async move {
            let len = if start == 100 {
                end - start - 1
            } else {
                end - start
            };
            let _ = tx.send(Bytes::from(vec![0u8; len as usize])).await;
        });
        let err = short.map_ok(|b| b.to_vec()).try_concat().await.unwrap_err();
        assert!(
            err.to_string().contains("ended after 99 of its 100"),
            "{err}"
        );

        let failing = ordered(250, plan, |start, end, tx: RangeSender| async move {
            if start == 200 {
                tx.fail(io::Error::other("ETag changed"));
            } else {
                let _ = tx
                    .send(Bytes::from(vec![0u8; (end - start) as usize]))
                    .await;
            }
        });
        let err = failing
            .map_ok(|b| b.to_vec())
            .try_concat()
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "ETag changed");
    }

    #[tokio::test]
    async fn a_range_ahead_of_the_reader_stops_reading_once_its_room_is_full() {
        // Ranges of 40 chunks, each range allowed 5 chunks ahead of the reader.
        let plan = ParallelReads {
            streams: 3,
            range_bytes: 40_000,
            ahead_bytes: 5_000,
        };
        let sent: Arc<Vec<AtomicU64>> = Arc::new((0..3).map(|_| AtomicU64::new(0)).collect());
        let counts = Arc::clone(&sent);
        let stream = ordered(120_000, plan, move |start, end, tx: RangeSender| {
            let counts = Arc::clone(&counts);
            async move {
                let mut at = start;
                while at < end {
                    if tx.send(Bytes::from(vec![7u8; 1000])).await.is_err() {
                        return;
                    }
                    at += 1000;
                    counts[(start / 40_000) as usize].fetch_add(1000, Ordering::SeqCst);
                }
            }
        });
        let mut stream = std::pin::pin!(stream);
        let first = stream.try_next().await.unwrap().unwrap();
        assert_eq!(first.len(), 1000);
        // Every task runs as far as it may while the reader holds still.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let held: Vec<u64> = sent.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        assert_eq!(
            held,
            [6_000, 5_000, 5_000],
            "the first range: the chunk taken plus its room; the others: their room only"
        );
        let mut total = first.len();
        while let Some(chunk) = stream.try_next().await.unwrap() {
            total += chunk.len();
        }
        assert_eq!(total, 120_000, "every byte once the reader moves on");
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
