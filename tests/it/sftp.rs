//! SFTP-specific behaviour of `ferry_shared::dest::sftp` against a real OpenSSH sshd from the
//! test harness (moved out of the crate's unit tests so `make unit` starts no sshd). Round
//! trips, odd names, 64 MiB and broken streams are in the shared destination conformance suite
//! (tests/destination_conformance.rs).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_shared::ByteReader;
use ferry_shared::dest::sftp::{SftpAuth, SftpDestination, SftpSettings};
use ferry_shared::dest::{Delivery, Destination as _, DestinationError, Written};
use ferry_shared::source::SourceError;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, ReadBuf};

use crate::support;
use crate::support::fault_proxy::{Fault, FaultProxy};

struct Server {
    sshd: ferry_harness::Sshd,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        Self {
            sshd: ferry_harness::Sshd::start().expect("start sshd (scripts/install-components.sh)"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Settings that work: pinned host key, the authorized client key, files under `root()`.
    fn settings(&self) -> SftpSettings {
        SftpSettings {
            host: "127.0.0.1".into(),
            port: self.sshd.port,
            username: self.sshd.user.clone(),
            host_key: self.sshd.host_key.clone(),
            auth: SftpAuth::PrivateKey(self.sshd.client_key_pem.clone().into()),
            directory: self.root().display().to_string(),
            timeout: Duration::from_secs(10),
        }
    }

    fn destination(&self) -> SftpDestination {
        SftpDestination::new(self.settings()).unwrap()
    }

    fn root(&self) -> PathBuf {
        self.sshd.root.join("upload")
    }

    /// A fresh ed25519 key pair; returns (private key text, public key line).
    fn keygen(&self, name: &str) -> (String, String) {
        let path = self.dir.path().join(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "ferry-test", "-f"])
            .arg(&path)
            .status()
            .expect("run ssh-keygen");
        assert!(status.success(), "ssh-keygen failed");
        (
            std::fs::read_to_string(&path).unwrap(),
            std::fs::read_to_string(path.with_extension("pub")).unwrap(),
        )
    }
}

fn delivery(name: &str, size: u64) -> Delivery {
    Delivery {
        name: name.into(),
        size,
        content_type: None,
        content_md5: None,
        idempotency_key: "test".into(),
        stop_at: None,
    }
}

fn body(data: &[u8]) -> ByteReader {
    Box::pin(std::io::Cursor::new(data.to_vec()))
}

/// A reader whose first read fails with the error it holds.
struct Broken(Option<std::io::Error>);

impl AsyncRead for Broken {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(self
            .0
            .take()
            .unwrap_or_else(|| std::io::Error::other("read after the failure"))))
    }
}

/// Yields `good` bytes, then fails the way a dropped source does.
fn fails_after(good: usize) -> ByteReader {
    let broken = std::io::Error::other(SourceError::Transient {
        reason: "connection reset".into(),
        retry_after: None,
    });
    Box::pin(std::io::Cursor::new(vec![7u8; good]).chain(Broken(Some(broken))))
}

/// Temporary files left anywhere under `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(leftovers(&path));
        } else if path.to_string_lossy().ends_with(".part") {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn location_names_user_host_and_path() {
    let server = Server::start();
    let written = server
        .destination()
        .write(&delivery("in box/a.txt", 1), body(b"a"))
        .await
        .unwrap();
    let s = &server.sshd;
    let want = format!(
        "sftp://{}@127.0.0.1:{}{}/in box/a.txt",
        s.user,
        s.port,
        server.root().display()
    );
    assert_eq!(written.location, want);
}

#[tokio::test]
async fn overwrite_replaces_content_with_and_without_posix_rename() {
    let server = Server::start();
    let mut dest = server.destination();
    let path = server.root().join("sub/report.txt");
    for (posix_rename, data) in [
        (true, &b"first version"[..]),
        (true, &b"second, longer version"[..]),
        (false, &b"third"[..]),
    ] {
        dest = dest.with_posix_rename(posix_rename);
        dest.write(&delivery("sub/report.txt", data.len() as u64), body(data))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
    assert!(leftovers(&server.root()).is_empty());
}

#[tokio::test]
async fn failed_body_keeps_the_old_file_and_leaves_no_temporary() {
    let server = Server::start();
    let dest = server.destination();
    let root = server.root();
    let e = dest
        .write(&delivery("broken/new.bin", 2 << 20), fails_after(1 << 20))
        .await
        .unwrap_err();
    assert!(
        matches!(e, DestinationError::Source(SourceError::Transient { .. })),
        "{e:?}"
    );
    assert!(!root.join("broken/new.bin").exists());
    // Over an existing file: the old content stays.
    dest.write(&delivery("broken/old.bin", 3), body(b"old"))
        .await
        .unwrap();
    dest.write(&delivery("broken/old.bin", 2 << 20), fails_after(1 << 20))
        .await
        .unwrap_err();
    assert_eq!(std::fs::read(root.join("broken/old.bin")).unwrap(), b"old");
    // A file where a folder should be: refused for good.
    let e = dest
        .write(&delivery("broken/old.bin/inner.txt", 1), body(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(e, DestinationError::Rejected(_)), "{e:?}");
    // A short stream without a verifier in front is caught by the size check.
    let e = dest
        .write(&delivery("broken/short.bin", 10), body(b"12345"))
        .await
        .unwrap_err();
    assert!(matches!(e, DestinationError::Verification(_)), "{e:?}");
    assert!(!root.join("broken/short.bin").exists());
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
}

#[tokio::test]
async fn stopped_at_the_deadline_leaves_nothing_behind() {
    let server = Server::start();
    let root = server.root();
    // A source that yields 1 MiB and then stalls: only the stop instant ends the upload.
    let (mut feed, stalled) = tokio::io::duplex(64 * 1024);
    let feeder = tokio::spawn(async move {
        feed.write_all(&vec![1u8; 1 << 20]).await.unwrap();
        feed
    });
    let stop = tokio::time::Instant::now() + Duration::from_millis(500);
    let e = server
        .destination()
        .write(
            &Delivery {
                stop_at: Some(stop),
                ..delivery("late/big.bin", 8 << 20)
            },
            Box::pin(stalled),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            DestinationError::Interrupted {
                kept_bytes: 0,
                size
            } if size == 8 << 20
        ),
        "{e:?}"
    );
    drop(feeder.await.unwrap());
    assert!(!root.join("late/big.bin").exists());
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
}

#[tokio::test]
async fn wrong_host_key_is_untrusted_and_names_the_key_seen() {
    let server = Server::start();
    let (_, other) = server.keygen("other_host_key");
    let dest = SftpDestination::new(SftpSettings {
        host_key: other,
        ..server.settings()
    })
    .unwrap();
    let e = dest
        .write(&delivery("x.txt", 1), body(b"x"))
        .await
        .unwrap_err();
    let real = server.dir.path().join("real_host_key.pub");
    std::fs::write(&real, &server.sshd.host_key).unwrap();
    let seen = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&real)
        .output()
        .unwrap()
        .stdout;
    let seen = String::from_utf8(seen).unwrap();
    let fingerprint = seen.split_whitespace().nth(1).unwrap();
    match e {
        DestinationError::UntrustedHost(msg) => assert!(msg.contains(fingerprint), "{msg}"),
        other => panic!("expected UntrustedHost, got {other:?}"),
    }
    assert!(
        !server.root().exists(),
        "nothing written to an untrusted host"
    );
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized() {
    let server = Server::start();
    let (stranger, _) = server.keygen("stranger_key");
    let password = "not-the-password-7d1e";
    for auth in [
        SftpAuth::PrivateKey(stranger.into()),
        SftpAuth::Password(password.into()),
    ] {
        let dest = SftpDestination::new(SftpSettings {
            auth,
            ..server.settings()
        })
        .unwrap();
        let e = dest
            .write(&delivery("x.txt", 1), body(b"x"))
            .await
            .unwrap_err();
        assert!(matches!(e, DestinationError::Unauthorized(_)), "{e:?}");
        assert!(!e.to_string().contains(password));
    }
}

/// Writes `data` as `name`, the body arriving in 256 KiB pieces `pause_ms` apart: a copy long
/// enough for the extra writers to log in and join it.
async fn write_paced(
    dest: &SftpDestination,
    name: &str,
    data: &[u8],
    pause_ms: u64,
) -> Result<Written, DestinationError> {
    let (mut feed, out) = tokio::io::duplex(256 * 1024);
    let (pieces, pause) = (data.to_vec(), Duration::from_millis(pause_ms));
    tokio::spawn(async move {
        for piece in pieces.chunks(256 * 1024) {
            if feed.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    });
    dest.write(&delivery(name, data.len() as u64), Box::pin(out))
        .await
}

/// Logins sshd accepted so far (its log).
fn logins(server: &Server) -> usize {
    std::fs::read_to_string(&server.sshd.log_path)
        .unwrap_or_default()
        .matches("Accepted publickey")
        .count()
}

/// SFTP sessions (channels) sshd started so far, counted per client connection (its source
/// port), in the order the connections first opened one.
fn sessions_per_connection(server: &Server) -> Vec<usize> {
    let log = std::fs::read_to_string(&server.sshd.log_path).unwrap_or_default();
    let mut per: Vec<(String, usize)> = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix("Starting session: subsystem 'sftp' for ") else {
            continue;
        };
        let port = rest.split(" port ").nth(1).unwrap_or_default();
        let port = port
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        match per.iter_mut().find(|(p, _)| *p == port) {
            Some((_, n)) => *n += 1,
            None => per.push((port, 1)),
        }
    }
    per.into_iter().map(|(_, n)| n).collect()
}

/// A destination writing to `server` through a proxy on `port`, a large file over up to
/// `connections` SSH connections.
fn through(server: &Server, port: u16, connections: usize) -> SftpDestination {
    SftpDestination::new(SftpSettings {
        port,
        ..server.settings()
    })
    .unwrap()
    .with_write_connections(connections)
}

#[tokio::test]
async fn a_large_file_is_written_over_connections_of_its_own_and_arrives_whole() {
    let server = Server::start();
    let proxy = FaultProxy::start(server.sshd.port).await;
    let data = support::data::bytes(41, 16 << 20);
    let before = logins(&server);
    let dest = through(&server, proxy.port, 4);
    write_paced(&dest, "wide/big.bin", &data, 10).await.unwrap();
    let big = std::fs::read(server.root().join("wide/big.bin")).unwrap();
    assert!(big == data, "16 MiB written by 4 connections differ");
    assert_eq!(proxy.accepted(), 4, "one connection per writer");
    assert_eq!(logins(&server) - before, 4, "each writer logged in");
    assert_eq!(
        sessions_per_connection(&server),
        [2, 2, 2, 2],
        "two SFTP channels on each connection"
    );

    // A small file keeps one connection; so does a destination set to one (its writers are
    // channels of that connection).
    dest.write(&delivery("wide/small.bin", 3), body(b"abc"))
        .await
        .unwrap();
    assert_eq!(proxy.accepted(), 5);
    let one = through(&server, proxy.port, 1);
    write_paced(&one, "wide/one.bin", &data, 2).await.unwrap();
    assert!(std::fs::read(server.root().join("wide/one.bin")).unwrap() == data);
    assert_eq!(
        proxy.accepted(),
        6,
        "write_connections 1 opens one connection"
    );
    assert_eq!(logins(&server) - before, 6);
    assert_eq!(
        sessions_per_connection(&server),
        [2, 2, 2, 2, 1, 4],
        "the small file had one channel; with one connection, 4 channels of it"
    );
    assert!(leftovers(&server.root()).is_empty());
}

#[tokio::test]
async fn writers_the_server_does_not_let_in_become_channels_and_are_not_tried_again() {
    let server = Server::start();
    let proxy = FaultProxy::start(server.sshd.port).await;
    // The first connection passes; the next three are closed at once (a limit on logins).
    proxy.plan([Fault::Pass, Fault::Refuse, Fault::Refuse, Fault::Refuse]);
    let data = support::data::bytes(42, 12 << 20);
    let before = logins(&server);
    let dest = through(&server, proxy.port, 4);
    write_paced(&dest, "limited/big.bin", &data, 5)
        .await
        .unwrap();
    assert!(std::fs::read(server.root().join("limited/big.bin")).unwrap() == data);
    assert_eq!(proxy.accepted(), 4, "three more connections were tried");
    assert_eq!(logins(&server) - before, 1, "only the first got in");
    assert_eq!(
        sessions_per_connection(&server),
        [4],
        "the three writers that were refused are channels of the first connection"
    );
    // The next write of the same process does not knock again: one connection, 4 channels.
    write_paced(&dest, "limited/next.bin", &data, 1)
        .await
        .unwrap();
    assert!(std::fs::read(server.root().join("limited/next.bin")).unwrap() == data);
    assert_eq!(proxy.accepted(), 5, "no more refused logins");
    assert_eq!(sessions_per_connection(&server), [4, 4]);
    assert!(leftovers(&server.root()).is_empty());
}

#[tokio::test]
async fn a_cut_on_one_of_the_extra_connections_fails_the_write_and_keeps_the_old_file() {
    let server = Server::start();
    let proxy = FaultProxy::start(server.sshd.port).await;
    let dest = through(&server, proxy.port, 4);
    dest.write(&delivery("cut/file.bin", 3), body(b"old"))
        .await
        .unwrap();
    // The second connection of the next write is cut once 1 MiB went up it.
    proxy.plan([Fault::Pass, Fault::CutRequestAfter(1 << 20)]);
    let data = support::data::bytes(43, 16 << 20);
    let e = write_paced(&dest, "cut/file.bin", &data, 5)
        .await
        .unwrap_err();
    assert!(
        matches!(e, DestinationError::Transient { .. }),
        "a cut connection is worth a retry: {e:?}"
    );
    let root = server.root();
    assert_eq!(std::fs::read(root.join("cut/file.bin")).unwrap(), b"old");
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
    // The retry (no fault planned) delivers every byte.
    write_paced(&dest, "cut/file.bin", &data, 1).await.unwrap();
    assert!(std::fs::read(root.join("cut/file.bin")).unwrap() == data);
}
