//! A TCP proxy that injects faults per connection: canned HTTP errors, connections cut after N
//! bytes in either direction, or refused connections. Each accepted connection takes the next
//! planned fault; when the plan is empty connections pass through.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What to do with one connection.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Forward both ways.
    Pass,
    /// Read the request head, answer this status with `Retry-After` and close.
    HttpStatus { status: u16, retry_after_secs: u64 },
    /// Forward, but close after this many bytes from the server to the client.
    CutResponseAfter(u64),
    /// Forward, but close after this many bytes from the client to the server.
    CutRequestAfter(u64),
    /// Close at once without a byte.
    Refuse,
    /// Forward, but let at most this many bytes per second through from the server.
    Throttle(u64),
    /// Throttle, and cut the connection after this many bytes from the server.
    ThrottleThenCut { bytes_per_sec: u64, cut_after: u64 },
    /// Forward, but once this many bytes went from the server to the client, signal
    /// `gate.reached`, hold until `gate.release`, then cut the connection. Only the first
    /// connection to get there pauses; later ones with the same gate pass through.
    PauseResponseThenCut(u64, Arc<Gate>),
    /// Forward, once as many connections as the barrier counts are open at once: a client
    /// that opens them one after another waits forever at the first.
    PassWhenOpen(Arc<tokio::sync::Barrier>),
}

/// Lets a test act while a response is held part-way (see `Fault::PauseResponseThenCut`).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// Notified when the response is held.
    pub reached: Notify,
    /// Notify to cut the held connection.
    pub release: Notify,
    fired: AtomicBool,
}

/// The running proxy; dropped = stopped.
pub(crate) struct FaultProxy {
    pub port: u16,
    plan: Arc<Mutex<VecDeque<Fault>>>,
    accepted: Arc<AtomicUsize>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Proxies 127.0.0.1:<new port> to 127.0.0.1:`upstream_port`.
    pub(crate) async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let plan: Arc<Mutex<VecDeque<Fault>>> = Arc::default();
        let accepted: Arc<AtomicUsize> = Arc::default();
        let refusing: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let (p, a, r) = (plan.clone(), accepted.clone(), refusing.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                if r.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let fault = p.lock().unwrap().pop_front().unwrap_or(Fault::Pass);
                tokio::spawn(handle(client, upstream_port, fault));
            }
        });
        Self {
            port,
            plan,
            accepted,
            refusing,
            task,
        }
    }

    /// While true, every new connection is closed at once (the upstream looks down).
    pub(crate) fn set_refusing(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Appends faults for the next connections.
    pub(crate) fn plan(&self, faults: impl IntoIterator<Item = Fault>) {
        self.plan.lock().unwrap().extend(faults);
    }

    /// Drops the faults planned for connections not yet made: the next ones pass.
    pub(crate) fn clear_plan(&self) {
        self.plan.lock().unwrap().clear();
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn handle(mut client: TcpStream, upstream_port: u16, fault: Fault) {
    match fault {
        Fault::Refuse => {}
        Fault::HttpStatus {
            status,
            retry_after_secs,
        } => {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let reply = format!(
                "HTTP/1.1 {status} Injected\r\nRetry-After: {retry_after_secs}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = client.write_all(reply.as_bytes()).await;
            let _ = client.shutdown().await;
        }
        Fault::Pass => pipe(client, upstream_port, None, None).await,
        Fault::CutResponseAfter(n) => pipe(client, upstream_port, None, Some(n)).await,
        Fault::CutRequestAfter(n) => pipe(client, upstream_port, Some(n), None).await,
        Fault::Throttle(rate) => throttled(client, upstream_port, rate, u64::MAX).await,
        Fault::ThrottleThenCut {
            bytes_per_sec,
            cut_after,
        } => throttled(client, upstream_port, bytes_per_sec, cut_after).await,
        Fault::PauseResponseThenCut(n, gate) => {
            pause_then_cut(client, upstream_port, n, gate).await
        }
        Fault::PassWhenOpen(barrier) => {
            barrier.wait().await;
            pipe(client, upstream_port, None, None).await
        }
    }
}

async fn pause_then_cut(client: TcpStream, upstream_port: u16, limit: u64, gate: Arc<Gate>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move { copy_limited(&mut cr, &mut sw, None).await };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if sent + n as u64 >= limit && !gate.fired.swap(true, Ordering::SeqCst) {
                let take = (limit.saturating_sub(sent)) as usize;
                let _ = cw.write_all(&buf[..take]).await;
                let _ = cw.flush().await;
                gate.reached.notify_one();
                gate.release.notified().await;
                return;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            sent += n as u64;
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn pipe(
    client: TcpStream,
    upstream_port: u16,
    up_limit: Option<u64>,
    down_limit: Option<u64>,
) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move { copy_limited(&mut cr, &mut sw, up_limit).await };
    let down = async move { copy_limited(&mut sr, &mut cw, down_limit).await };
    // When either direction hits its limit (or ends), drop both halves: the connection is cut.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn copy_limited<R, W>(r: &mut R, w: &mut W, limit: Option<u64>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let n = match limit {
            Some(l) if sent + n as u64 >= l => {
                let take = (l - sent) as usize;
                let _ = w.write_all(&buf[..take]).await;
                return;
            }
            _ => n,
        };
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
        sent += n as u64;
    }
}

async fn throttled(client: TcpStream, upstream_port: u16, bytes_per_sec: u64, cut_after: u64) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move { copy_limited(&mut cr, &mut sw, None).await };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let started = tokio::time::Instant::now();
        let mut sent = 0u64;
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n.min((cut_after - sent) as usize),
            };
            if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            sent += n as u64;
            let due =
                started + std::time::Duration::from_secs_f64(sent as f64 / bytes_per_sec as f64);
            tokio::time::sleep_until(due).await;
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
