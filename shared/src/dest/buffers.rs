//! Copy buffers: filled from the source in large blocks ([`fill`]), and given back once what was
//! sent from them is done, for the next part or fragment ([`Buffers`]).
//!
//! A fresh buffer of a part's size (5 MiB to S3, 10 MiB to Graph) is a new mapping, which the
//! kernel faults in and zeroes page by page as it fills: about one page fault per 4 KiB copied,
//! 0.5 CPU-s per GiB to S3 (docs/performance.md). A destination takes its buffers here and gives
//! each back when the request that sent it has ended; no more buffers exist at once than without
//! the pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::DestinationError;

/// Reads until `buf` holds `limit` more bytes or the stream ends; returns the bytes read.
pub(crate) async fn fill<R: AsyncRead + Unpin + ?Sized>(
    body: &mut R,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<usize, DestinationError> {
    let start = buf.len();
    buf.reserve(limit);
    while buf.len() < start + limit {
        let want = start + limit - buf.len();
        let n = (&mut *body)
            .take(want as u64)
            .read_buf(buf)
            .await
            .map_err(|e| DestinationError::from_io("reading source", &e))?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.len() - start)
}

/// A pool of copy buffers shared by one upload's tasks.
#[derive(Clone, Default)]
pub(crate) struct Buffers(Arc<Pool>);

#[derive(Default)]
struct Pool {
    returned: Mutex<Vec<BytesMut>>,
    /// Buffers allocated afresh (not taken from `returned`).
    allocated: AtomicUsize,
}

impl Buffers {
    /// An empty buffer of at least `size` bytes: a returned one when there is one.
    pub(crate) fn take(&self, size: usize) -> BytesMut {
        let returned = self
            .0
            .returned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        match returned {
            Some(mut buf) if buf.capacity() >= size => {
                buf.clear();
                buf
            }
            _ => {
                self.0.allocated.fetch_add(1, Ordering::Relaxed);
                BytesMut::with_capacity(size)
            }
        }
    }

    /// How many buffers [`Buffers::take`] has allocated afresh.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.0.allocated.load(Ordering::Relaxed)
    }

    /// Keeps `sent`'s buffer for later, if nothing else holds it any more (an HTTP client drops
    /// its copies of a body when the call ends; one still held for any reason is simply freed).
    pub(crate) fn give_back(&self, sent: Bytes) {
        if let Ok(buf) = sent.try_into_mut() {
            self.0
                .returned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[tokio::test]
    async fn fill_reads_up_to_the_limit_across_reads_and_stops_at_the_end() {
        // Three short reads make up one block; the rest comes short at end of stream.
        let (mut rx, mut tx) = tokio::io::simplex(4);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(b"0123456789").await.unwrap();
            tx.shutdown().await.unwrap();
        });
        let mut buf = BytesMut::new();
        assert_eq!(fill(&mut rx, &mut buf, 6).await.unwrap(), 6);
        assert_eq!(fill(&mut rx, &mut buf, 6).await.unwrap(), 4);
        assert_eq!(&buf[..], b"0123456789");
        writer.await.unwrap();
        assert_eq!(fill(&mut rx, &mut buf, 6).await.unwrap(), 0);
    }

    #[test]
    fn a_buffer_nothing_else_holds_is_used_again() {
        let buffers = Buffers::default();
        let mut buf = buffers.take(MIB);
        buf.extend_from_slice(&[7; 1000]);
        let sent = buf.freeze();
        let at = sent.as_ptr();
        // Still held elsewhere (a body a client kept): not reused.
        let held = sent.clone();
        buffers.give_back(sent);
        assert_ne!(buffers.take(MIB).as_ptr(), at);
        // Released: the next part fills the same memory, emptied.
        buffers.give_back(held);
        let again = buffers.take(MIB);
        assert_eq!((again.as_ptr(), again.len()), (at, 0));
        assert!(again.capacity() >= MIB);
        assert_eq!(
            buffers.allocated(),
            2,
            "the first buffer, and one while it was held"
        );
        // A buffer too small for the size asked is not handed out.
        buffers.give_back(again.freeze());
        assert!(buffers.take(2 * MIB).capacity() >= 2 * MIB);
    }
}
