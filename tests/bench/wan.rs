//! A wide-area link on loopback for the benchmarks: a TCP proxy that delays every chunk by a
//! fixed one-way time in each direction and keeps at most one window of bytes in flight per
//! direction, the way a long TCP path does (netem is not available on these machines).
//!
//! Pipelining is preserved: each chunk is stamped when it arrives and forwarded once its own
//! deadline passes, so chunks travel back to back instead of queueing behind one sleep. The
//! window models TCP flow control: a chunk's bytes count against the window from the moment
//! it is read until its acknowledgement would be back (forwarded + one more one-way delay), so
//! one connection moves at most `window / RTT`. The proxy's own socket buffers are kept small
//! so the kernel adds little window of its own.
//!
//! A link may also have a bandwidth per connection and direction (the share of a path one TCP
//! flow gets): each chunk then leaves a bottleneck of that rate in arrival order (it waits for
//! the chunks ahead of it, then for its own length at the rate) before its one-way delay starts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// Receive buffer of the proxy's sockets: small, so the window below is what bounds a stream.
const SOCKET_BUFFER: u32 = 128 * 1024;
/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;

/// One simulated path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Link {
    /// Round-trip time added (half each way).
    pub rtt: Duration,
    /// Bytes in flight per connection and direction (the TCP window of the path).
    pub window: usize,
    /// Bytes per second per connection and direction; `None`: no cap.
    pub rate: Option<u64>,
}

/// A running proxy to one upstream port; stopped when dropped.
pub(crate) struct DelayProxy {
    /// The port clients connect to.
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DelayProxy {
    /// Proxies 127.0.0.1:<new port> to 127.0.0.1:`upstream` over `link`.
    pub(crate) fn start(upstream: u16, link: Link) -> anyhow::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(SOCKET_BUFFER)?;
        socket.set_reuseaddr(true)?;
        socket.bind("127.0.0.1:0".parse()?)?;
        let listener: TcpListener = socket.listen(1024)?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(server) = connect(upstream).await {
                        carry(client, server, link).await;
                    }
                });
            }
        });
        Ok(Self { port, task })
    }
}

async fn connect(port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(SOCKET_BUFFER)?;
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
}

async fn carry(client: TcpStream, server: TcpStream, link: Link) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // Either direction ending (EOF or error) ends the connection, as a closed socket would.
    tokio::select! {
        () = one_way(cr, sw, link) => {}
        () = one_way(sr, cw, link) => {}
    }
}

/// Moves bytes from `from` to `to`, each chunk `rtt / 2` after it arrived, at most
/// `link.window` bytes unacknowledged.
async fn one_way(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
) {
    let delay = link.rtt / 2;
    let rate = link.rate;
    let window = Arc::new(Semaphore::new(link.window));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(Instant, u32)>();
    let reader = {
        let window = window.clone();
        async move {
            // When the bottleneck is free again (a capped link).
            let mut free_at = Instant::now();
            loop {
                // Wait for room in the window before reading: unread bytes stay in the (small)
                // socket buffer and the sender is held back, as on a full TCP window.
                let Ok(permit) = window.acquire_many(CHUNK as u32).await else {
                    return;
                };
                permit.forget();
                let mut buf = vec![0u8; CHUNK];
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                // Give back what this read did not use.
                window.add_permits(CHUNK - n);
                buf.truncate(n);
                let mut sent_at = Instant::now();
                if let Some(rate) = rate {
                    free_at =
                        free_at.max(sent_at) + Duration::from_secs_f64(n as f64 / rate as f64);
                    sent_at = free_at;
                }
                if tx.send((sent_at + delay, buf)).is_err() {
                    return;
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, buf)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&buf).await.is_err() {
                return;
            }
            // The receiver's acknowledgement takes another one-way delay to come back.
            if ack_tx
                .send((Instant::now() + delay, buf.len() as u32))
                .is_err()
            {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let acks = async move {
        while let Some((due, n)) = ack_rx.recv().await {
            tokio::time::sleep_until(due).await;
            window.add_permits(n as usize);
        }
    };
    // The writer finishes the queue after the reader saw EOF; acks run beside both.
    tokio::select! {
        _ = async { tokio::join!(reader, writer) } => {}
        () = acks => {}
    }
}

/// The round trip a small request/answer sees through `proxy` to a local echo server, in ms
/// (median of 5): the check that the proxy adds what it claims.
pub(crate) async fn measured_rtt_ms(link: Link) -> anyhow::Result<f64> {
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let echo_port = echo.local_addr()?.port();
    let server = tokio::spawn(async move {
        if let Ok((mut s, _)) = echo.accept().await {
            let mut b = [0u8; 64];
            while let Ok(n) = s.read(&mut b).await {
                if n == 0 || s.write_all(&b[..n]).await.is_err() {
                    break;
                }
            }
        }
    });
    let proxy = DelayProxy::start(echo_port, link)?;
    let mut c = TcpStream::connect(("127.0.0.1", proxy.port)).await?;
    c.set_nodelay(true)?;
    let mut times = Vec::new();
    let mut b = [0u8; 1];
    for _ in 0..5 {
        let t = std::time::Instant::now();
        c.write_all(b"x").await?;
        c.read_exact(&mut b).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(c);
    server.abort();
    times.sort_by(f64::total_cmp);
    Ok(times[2])
}
