//! An SFTP server (russh + russh-sftp): one SSH connection per write (a large file gets more
//! writers: connections of their own, else channels), the server's host key pinned, the body
//! streamed with pipelined writes into a hidden temporary file beside the target, its size
//! checked on the server, then renamed into place.
//!
//! Replacing an existing file: SFTP v3 `RENAME` refuses an existing target, so the first try
//! is a plain rename (the common case: a new file) and, when that fails, the file is moved
//! with OpenSSH's `posix-rename@openssh.com` extension, which replaces the target atomically.
//! russh-sftp's high-level session does not expose extensions, so that request goes over a
//! second SFTP channel on the same connection, opened only when needed. A server without the
//! extension (or refusing a second channel) gets remove-then-rename: for that short window no
//! file is at the final name, and a crash inside it leaves the new content only in the
//! temporary file.
//!
//! At the delivery's stop instant (the invocation deadline) an upload stops between reads and
//! removes its temporary file: SFTP deliveries are not resumed, the next run starts over.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelStream, Disconnect, client};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::fs::Metadata;
use russh_sftp::client::{RawSftpSession, SftpSession};
use russh_sftp::protocol::{OpenFlags, Packet, StatusCode};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Delivery, Destination, DestinationError, Written, join_path};
use crate::ByteReader;
use crate::probe::{ProbeResult, Problem};
use crate::secret::expose;

/// Bytes read from the source per step; russh-sftp splits them into pipelined write requests.
const CHUNK: usize = 256 * 1024;
/// Write requests in flight per SFTP channel (32 KiB each, OpenSSH's own numbers): bounds
/// memory, keeps the link busy.
const WRITES_IN_FLIGHT: usize = 64;
/// Writers of one large file when it has a single connection: SFTP channels of it, each its own
/// chunks at their offsets. A server sizes each channel's flow-control window on its own
/// (OpenSSH: 2 MiB), so on a long link one channel moves at most window / round trip; more
/// channels multiply that. A channel the server refuses (MaxSessions) is simply not used.
const WRITE_CHANNELS: usize = 4;
/// SFTP channels per connection when a large file has connections of its own
/// (`write_connections`): two channel windows (2 x 2 MiB at OpenSSH) fill a TCP window of
/// about 4 MiB per round trip, where one channel would leave half of it idle.
const CHANNELS_PER_CONNECTION: usize = 2;
/// SSH ciphers in order of preference: AES-GCM first (hardware AES on every Lambda CPU, through
/// aws-lc-rs: a fraction of ChaCha20-Poly1305's CPU per byte, which russh prefers by default),
/// then the rest of russh's defaults for servers without it.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_128_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];
/// Files smaller than this are written over one channel.
const MULTI_WRITER_FROM: u64 = 8 * 1024 * 1024;
const POSIX_RENAME: &str = "posix-rename@openssh.com";
/// Longest file-name part kept in a temporary name (NAME_MAX is 255 bytes on most servers).
const TEMP_NAME_KEEP: usize = 200;

/// How the client proves who it is.
pub enum SftpAuth {
    /// Password authentication.
    Password(SecretString),
    /// Public-key authentication with this private key: OpenSSH (`-----BEGIN OPENSSH PRIVATE
    /// KEY-----`) or PKCS#8 PEM text, unencrypted.
    PrivateKey(SecretString),
}

/// Everything an SFTP destination needs, secrets already resolved.
pub struct SftpSettings {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Login user.
    pub username: String,
    /// The server's public host key, OpenSSH form (`ssh-ed25519 AAAA... [comment]`); a
    /// `known_hosts`-style line with a leading host field is accepted too.
    pub host_key: String,
    /// Credentials.
    pub auth: SftpAuth,
    /// Remote folder the files go under (absolute, or relative to the login directory).
    pub directory: String,
    /// Limit for connecting, authenticating and each SFTP request.
    pub timeout: Duration,
}

enum Credentials {
    Password(SecretString),
    Key(Arc<PrivateKey>),
}

/// Delivers files to an SFTP server.
pub struct SftpDestination {
    host: String,
    port: u16,
    username: String,
    host_key: PublicKey,
    credentials: Credentials,
    directory: String,
    timeout: Duration,
    /// Try `posix-rename@openssh.com` to replace an existing file (tests turn it off to
    /// exercise the remove-then-rename fallback).
    posix_rename: bool,
    /// SSH connections that write one large file (see `SftpConfig::write_connections`).
    write_connections: usize,
    /// Connections a write still tries: `write_connections` until the server once let fewer
    /// in, then that many, for the life of the process (each refused login may count against
    /// the account on the server).
    connections_let_in: AtomicUsize,
}

impl SftpDestination {
    /// Builds the destination from its config, resolving its credential (with both a private
    /// key and a password configured, the key is used). The host key and private key are parsed
    /// here, so a bad one fails at cold start.
    pub async fn from_config(
        config: &crate::config::SftpConfig,
        secrets: &crate::secret::SecretResolver,
    ) -> Result<Self, crate::setup::SetupError> {
        use crate::setup::SetupError;
        let crate::config::SftpConfig {
            host,
            port,
            username,
            ..
        } = config;
        let auth = match (&config.private_key, &config.password) {
            (Some(key), _) => SftpAuth::PrivateKey(secrets.resolve(key).await?),
            (None, Some(password)) => SftpAuth::Password(secrets.resolve(password).await?),
            (None, None) => {
                return Err(SetupError::Config(format!(
                    "sftp destination {username}@{host}:{port}: set password or private_key"
                )));
            }
        };
        Self::new(SftpSettings {
            host: host.clone(),
            port: *port,
            username: username.clone(),
            host_key: config.host_key.clone(),
            auth,
            directory: config.directory.clone(),
            timeout: Duration::from_secs(config.timeout_secs),
        })
        .map(|d| d.with_write_connections(config.write_connections.into()))
        .map_err(|e| SetupError::Config(format!("sftp destination {username}@{host}:{port}: {e}")))
    }

    /// Checks the pinned host key and parses the private key; no network traffic.
    pub fn new(settings: SftpSettings) -> Result<Self, DestinationError> {
        let host_key = parse_host_key(&settings.host_key)?;
        let credentials = match settings.auth {
            SftpAuth::Password(p) => Credentials::Password(p),
            SftpAuth::PrivateKey(pem) => {
                let key = russh::keys::decode_secret_key(expose(&pem), None).map_err(|e| {
                    // The key error names the problem (encrypted, corrupt, unsupported), never
                    // the key material.
                    DestinationError::Rejected(format!("unusable private key: {e}"))
                })?;
                Credentials::Key(Arc::new(key))
            }
        };
        Ok(Self {
            host: settings.host,
            port: settings.port,
            username: settings.username,
            host_key,
            credentials,
            directory: settings.directory,
            timeout: settings.timeout.max(Duration::from_secs(1)),
            posix_rename: true,
            write_connections: 1,
            connections_let_in: AtomicUsize::new(1),
        })
    }

    /// Writes a file of 8 MiB or more over up to `n` SSH connections (1 to
    /// `SFTP_MAX_WRITE_CONNECTIONS`; 1, the default of `new`, means 4 channels of one).
    pub fn with_write_connections(mut self, n: usize) -> Self {
        self.write_connections = n.clamp(1, usize::from(crate::config::SFTP_MAX_WRITE_CONNECTIONS));
        self.connections_let_in = AtomicUsize::new(self.write_connections);
        self
    }

    /// With `false`, an existing file is replaced by remove-then-rename instead of trying
    /// `posix-rename@openssh.com` first: the fallback for servers without the extension (tests
    /// use it to exercise that path on OpenSSH).
    pub fn with_posix_rename(mut self, posix_rename: bool) -> Self {
        self.posix_rename = posix_rename;
        self
    }

    /// Secret-free `sftp://user@host:port/path` (home-relative paths as `/~/path`).
    fn location(&self, path: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/~/{path}")
        };
        format!("sftp://{}@{host}:{}{path}", self.username, self.port)
    }

    /// Runs one network step under the timeout.
    async fn bounded<F: Future>(&self, what: &str, fut: F) -> Result<F::Output, DestinationError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| DestinationError::Transient {
                reason: format!(
                    "{what}: no answer from {}:{} within {}s",
                    self.host,
                    self.port,
                    self.timeout.as_secs()
                ),
                retry_after: None,
            })
    }

    fn sftp_config(&self) -> russh_sftp::client::Config {
        russh_sftp::client::Config {
            max_concurrent_writes: WRITES_IN_FLIGHT,
            request_timeout_secs: self.timeout.as_secs(),
            ..Default::default()
        }
    }

    /// Connects, checks the host key, authenticates and opens the SFTP session.
    async fn connect(&self) -> Result<Connection, DestinationError> {
        let config = Arc::new(client::Config {
            nodelay: true,
            keepalive_interval: Some(Duration::from_secs(15)),
            preferred: russh::Preferred {
                cipher: std::borrow::Cow::Borrowed(CIPHERS),
                ..Default::default()
            },
            ..Default::default()
        });
        let handler = PinnedHostKey {
            expected: self.host_key.clone(),
        };
        let mut ssh = self
            .bounded(
                "connect",
                client::connect(config, (self.host.as_str(), self.port), handler),
            )
            .await?
            .map_err(|e| self.connect_error(e))?;

        let (method, result) = match &self.credentials {
            Credentials::Password(password) => (
                "password",
                self.bounded(
                    "authenticate",
                    ssh.authenticate_password(&self.username, expose(password)),
                )
                .await?,
            ),
            Credentials::Key(key) => {
                let hash = if key.algorithm().is_rsa() {
                    // `None` from the server (no server-sig-algs) leaves the legacy ssh-rsa.
                    self.bounded("negotiate RSA signature", ssh.best_supported_rsa_hash())
                        .await?
                        .map_err(|e| ssh_error("negotiate RSA signature", e))?
                        .flatten()
                } else {
                    None
                };
                (
                    "publickey",
                    self.bounded(
                        "authenticate",
                        ssh.authenticate_publickey(
                            &self.username,
                            PrivateKeyWithHashAlg::new(key.clone(), hash),
                        ),
                    )
                    .await?,
                )
            }
        };
        match result.map_err(|e| ssh_error("authenticate", e))? {
            client::AuthResult::Success => {}
            client::AuthResult::Failure {
                remaining_methods,
                partial_success,
            } => {
                let why = if partial_success {
                    "accepted but asked for more"
                } else {
                    "rejected"
                };
                return Err(DestinationError::Unauthorized(format!(
                    "{}:{} {why} {method} authentication for user {:?} (server offers: {:?})",
                    self.host, self.port, self.username, remaining_methods
                )));
            }
        }

        let stream = self.open_subsystem(&ssh).await?;
        let sftp = self
            .bounded(
                "start SFTP",
                SftpSession::new_with_config(stream, self.sftp_config()),
            )
            .await?
            .map_err(|e| sftp_error("start SFTP", e))?;
        Ok(Connection { ssh, sftp })
    }

    fn connect_error(&self, e: SshError) -> DestinationError {
        match e {
            SshError::UntrustedHost { seen } => DestinationError::UntrustedHost(format!(
                "{}:{} presented host key {seen}, not the pinned {}",
                self.host,
                self.port,
                self.host_key.fingerprint(HashAlg::Sha256)
            )),
            SshError::Ssh(e) => ssh_error(&format!("connect to {}:{}", self.host, self.port), e),
        }
    }

    async fn open_subsystem(
        &self,
        ssh: &client::Handle<PinnedHostKey>,
    ) -> Result<ChannelStream<client::Msg>, DestinationError> {
        let channel = self
            .bounded("open channel", ssh.channel_open_session())
            .await?
            .map_err(|e| ssh_error("open channel", e))?;
        self.bounded(
            "request SFTP subsystem",
            channel.request_subsystem(true, "sftp"),
        )
        .await?
        .map_err(|e| ssh_error("request SFTP subsystem", e))?;
        Ok(channel.into_stream())
    }

    /// `Some(metadata)`, or `None` when nothing is at `path`.
    async fn stat(
        &self,
        sftp: &SftpSession,
        path: &str,
    ) -> Result<Option<Metadata>, DestinationError> {
        match self.bounded("stat", sftp.metadata(path)).await? {
            Ok(meta) => Ok(Some(meta)),
            Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(None),
            Err(e) => Err(sftp_error(&format!("stat {path}"), e)),
        }
    }

    /// Creates `dir` and its missing parents (tolerating a concurrent writer creating them).
    async fn ensure_dir(&self, sftp: &SftpSession, dir: &str) -> Result<(), DestinationError> {
        let absolute = dir.starts_with('/');
        let parts: Vec<&str> = dir
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        let prefixes: Vec<String> = (1..=parts.len())
            .map(|n| {
                let p = parts[..n].join("/");
                if absolute { format!("/{p}") } else { p }
            })
            .collect();
        // Walk up to the deepest folder that exists (usually the first stat answers it all).
        let mut existing = prefixes.len();
        while existing > 0 {
            let path = &prefixes[existing - 1];
            match self.stat(sftp, path).await? {
                Some(meta) if meta.is_dir() => break,
                Some(_) => {
                    return Err(DestinationError::Rejected(format!(
                        "{path} exists and is not a directory"
                    )));
                }
                None => existing -= 1,
            }
        }
        for path in &prefixes[existing..] {
            if let Err(e) = self
                .bounded("create directory", sftp.create_dir(path.as_str()))
                .await?
            {
                match self.stat(sftp, path).await? {
                    Some(meta) if meta.is_dir() => {}
                    _ => return Err(sftp_error(&format!("create directory {path}"), e)),
                }
            }
        }
        Ok(())
    }

    /// Opens the writers of one large file beyond the first and sends each on `tx` once it has
    /// `temp` (already created) open: connections of their own first (`write_connections - 1`
    /// of them, at once, each with `CHANNELS_PER_CONNECTION` channels), then channels of the
    /// first connection: its share, and the writers of connections the server did not let in.
    /// With one connection, `WRITE_CHANNELS - 1` channels of it. Once the server refused a
    /// connection, later writes of this process try only as many as it let in.
    async fn open_writers(
        &self,
        ssh: &client::Handle<PinnedHostKey>,
        temp: &str,
        tx: mpsc::UnboundedSender<Writer>,
    ) {
        let own = self.connections_let_in.load(Ordering::Relaxed) - 1;
        let mut connecting: FuturesUnordered<_> =
            (0..own).map(|_| self.connection_writers(temp)).collect();
        let (mut joined, mut connected) = (0, 0);
        let mut refused = None;
        while let Some(writers) = connecting.next().await {
            match writers {
                Ok(writers) => {
                    connected += 1;
                    for writer in writers {
                        if tx.send(writer).is_err() {
                            return;
                        }
                        joined += 1;
                    }
                }
                Err(e) => refused = Some(e),
            }
        }
        if let Some(e) = refused {
            self.connections_let_in
                .store(1 + connected, Ordering::Relaxed);
            tracing::warn!(
                host = %self.host,
                let_in = 1 + connected,
                write_connections = self.write_connections,
                error = %e,
                "the SFTP server let in fewer connections for one write; this process now opens \
                 only as many and writes over SFTP channels instead (set write_connections to \
                 match the server)"
            );
        }
        // The first connection's channels make up the rest: up to `CHANNELS_PER_CONNECTION`
        // per connection in all, and at least `WRITE_CHANNELS` writers.
        let wanted = WRITE_CHANNELS.max((1 + connected) * CHANNELS_PER_CONNECTION) - 1;
        while joined < wanted {
            let Some(writer) = self.channel_writer(ssh, temp).await else {
                tracing::debug!(
                    granted = joined,
                    wanted,
                    "the server granted fewer writers; writing over the others"
                );
                return;
            };
            if tx.send(writer).is_err() {
                return;
            }
            joined += 1;
        }
    }

    /// `temp` (already created) opened for writing on `sftp`.
    async fn open_temp(
        &self,
        sftp: &SftpSession,
        temp: &str,
    ) -> Result<russh_sftp::client::fs::File, DestinationError> {
        self.bounded(
            "open temporary file",
            sftp.open_with_flags(temp, OpenFlags::WRITE),
        )
        .await?
        .map_err(|e| sftp_error(&format!("open {temp}"), e))
    }

    /// A connection of its own with `temp` open for writing on `CHANNELS_PER_CONNECTION`
    /// channels (fewer if the server grants fewer). The first writer owns the connection.
    async fn connection_writers(&self, temp: &str) -> Result<Vec<Writer>, DestinationError> {
        let conn = self.connect().await?;
        let file = match self.open_temp(&conn.sftp, temp).await {
            Ok(file) => file,
            Err(e) => {
                conn.close().await;
                return Err(e);
            }
        };
        let mut more = Vec::new();
        while more.len() + 1 < CHANNELS_PER_CONNECTION {
            match self.channel_writer(&conn.ssh, temp).await {
                Some(writer) => more.push(writer),
                None => break,
            }
        }
        let mut writers = vec![Writer {
            file,
            sftp: conn.sftp,
            ssh: Some(conn.ssh),
        }];
        writers.extend(more);
        Ok(writers)
    }

    /// Another SFTP channel of `ssh` with `temp` open for writing, if the server grants one.
    async fn channel_writer(
        &self,
        ssh: &client::Handle<PinnedHostKey>,
        temp: &str,
    ) -> Option<Writer> {
        let stream = self.open_subsystem(ssh).await.ok()?;
        let sftp = self
            .bounded(
                "start SFTP",
                SftpSession::new_with_config(stream, self.sftp_config()),
            )
            .await
            .ok()?
            .ok()?;
        match self.open_temp(&sftp, temp).await {
            Ok(file) => Some(Writer {
                file,
                sftp,
                ssh: None,
            }),
            Err(_) => {
                let _ = sftp.close().await;
                None
            }
        }
    }

    /// Streams `body` into the new file `temp`, reading it to the end, and returns the size
    /// the server reports for the closed file. A large file gets more writers as they open
    /// (`open_writers`); chunk `i` goes to writer `i mod n` at its own offset.
    async fn upload(
        &self,
        conn: &Connection,
        temp: &str,
        delivery: &Delivery,
        body: &mut ByteReader,
    ) -> Result<u64, DestinationError> {
        let sftp = &conn.sftp;
        let mut first = self
            .bounded(
                "create temporary file",
                sftp.open_with_flags(
                    temp,
                    OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
                ),
            )
            .await?
            .map_err(|e| sftp_error(&format!("create {temp}"), e))?;
        let (tx, mut joining) = mpsc::unbounded_channel();
        let mut more = Vec::new();
        let result = {
            let write = self.write_all(&mut first, &mut joining, &mut more, temp, delivery, body);
            if delivery.size >= MULTI_WRITER_FROM {
                // The copy starts at once on the first writer; the opener runs beside it and
                // stops with it.
                let opener = async {
                    self.open_writers(&conn.ssh, temp, tx).await;
                    std::future::pending().await
                };
                tokio::select! {
                    r = write => r,
                    r = opener => r,
                }
            } else {
                drop(tx);
                write.await
            }
        };
        joining.close();
        while let Ok(late) = joining.try_recv() {
            more.push(late);
        }
        futures_util::future::join_all(more.into_iter().map(Writer::close)).await;
        result?;
        let on_server = self
            .stat(sftp, temp)
            .await?
            .and_then(|m| m.size)
            .ok_or_else(|| DestinationError::Transient {
                reason: format!("{temp} has no size after writing"),
                retry_after: None,
            })?;
        if on_server != delivery.size {
            return Err(DestinationError::Verification(format!(
                "server holds {on_server} bytes, expected {}",
                delivery.size
            )));
        }
        Ok(on_server)
    }

    /// Writes `body` round-robin over `first` and the writers in `more` (handles of the same
    /// file), taking in each writer from `joining` as it arrives, and closes every handle.
    async fn write_all(
        &self,
        first: &mut russh_sftp::client::fs::File,
        joining: &mut mpsc::UnboundedReceiver<Writer>,
        more: &mut Vec<Writer>,
        temp: &str,
        delivery: &Delivery,
        body: &mut ByteReader,
    ) -> Result<(), DestinationError> {
        let mut buf = vec![0u8; CHUNK];
        let mut copied = 0u64;
        let mut chunk_no = 0usize;
        loop {
            // Whole chunks (fewer, fuller write requests); reading to EOF matters: a verifying
            // body reports size/MD5 problems only there.
            let read = fill(body, &mut buf);
            let read = match delivery.stop_at {
                None => read.await,
                Some(stop) => tokio::select! {
                    r = read => r,
                    () = tokio::time::sleep_until(stop) => {
                        return Err(DestinationError::Interrupted {
                            kept_bytes: 0,
                            size: delivery.size,
                        });
                    }
                },
            };
            let n = read.map_err(|e| DestinationError::from_io("read source", &e))?;
            if n == 0 {
                break;
            }
            copied += n as u64;
            if copied > delivery.size {
                return Err(DestinationError::Verification(format!(
                    "source delivered more than the expected {} bytes",
                    delivery.size
                )));
            }
            while let Ok(writer) = joining.try_recv() {
                more.push(writer);
            }
            let file = match chunk_no % (more.len() + 1) {
                0 => &mut *first,
                i => &mut more[i - 1].file,
            };
            chunk_no += 1;
            let offset = copied - n as u64;
            self.bounded("write", async {
                file.seek(std::io::SeekFrom::Start(offset)).await?;
                file.write_all(&buf[..n]).await
            })
            .await?
            .map_err(|e| DestinationError::from_io(&format!("write {temp}"), &e))?;
        }
        if copied != delivery.size {
            return Err(DestinationError::Verification(format!(
                "source delivered {copied} bytes, expected {}",
                delivery.size
            )));
        }
        // Flush waits for every write to be acknowledged (and fsyncs when the server offers
        // fsync@openssh.com); shutdown closes the handle and waits for the answer. All writers
        // at once: on a long link each answer is a round trip.
        let files = std::iter::once(first).chain(more.iter_mut().map(|w| &mut w.file));
        futures_util::future::try_join_all(files.map(|file| async move {
            self.bounded("flush", file.flush())
                .await?
                .map_err(|e| DestinationError::from_io(&format!("flush {temp}"), &e))?;
            self.bounded("close", file.shutdown())
                .await?
                .map_err(|e| DestinationError::from_io(&format!("close {temp}"), &e))
        }))
        .await?;
        Ok(())
    }

    /// Moves `temp` to `target`, replacing an existing file.
    async fn rename_into_place(
        &self,
        conn: &Connection,
        temp: &str,
        target: &str,
    ) -> Result<(), DestinationError> {
        let refused = match self
            .bounded("rename", conn.sftp.rename(temp, target))
            .await?
        {
            Ok(()) => return Ok(()),
            // SFTP v3 servers answer a rename onto an existing file with a generic failure.
            Err(SftpError::Status(s)) if s.status_code == StatusCode::Failure => {
                SftpError::Status(s)
            }
            Err(e) => return Err(sftp_error(&format!("rename {temp} to {target}"), e)),
        };
        if self.posix_rename
            && let Some(control) = self.posix_rename_session(&conn.ssh).await
        {
            let result = self.posix_rename_with(&control, temp, target).await;
            let _ = control.close_session();
            return result;
        }
        // Fallback: remove the old file, then rename (a short window with no file there).
        match self.stat(&conn.sftp, target).await? {
            Some(meta) if !meta.is_dir() => {}
            _ => return Err(sftp_error(&format!("rename {temp} to {target}"), refused)),
        }
        self.bounded("remove old file", conn.sftp.remove_file(target))
            .await?
            .map_err(|e| sftp_error(&format!("remove {target}"), e))?;
        self.bounded("rename", conn.sftp.rename(temp, target))
            .await?
            .map_err(|e| sftp_error(&format!("rename {temp} to {target}"), e))
    }

    /// A second SFTP channel for the `posix-rename@openssh.com` request, if the server
    /// offers the extension (and the channel).
    async fn posix_rename_session(
        &self,
        ssh: &client::Handle<PinnedHostKey>,
    ) -> Option<RawSftpSession> {
        let stream = match self.open_subsystem(ssh).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "no second SFTP channel; replacing by remove and rename");
                return None;
            }
        };
        let raw = RawSftpSession::new_with_config(stream, self.sftp_config());
        let version = self.bounded("start SFTP", raw.init()).await.ok()?.ok()?;
        if version.extensions.get(POSIX_RENAME).map(String::as_str) == Some("1") {
            Some(raw)
        } else {
            let _ = raw.close_session();
            None
        }
    }

    async fn posix_rename_with(
        &self,
        raw: &RawSftpSession,
        temp: &str,
        target: &str,
    ) -> Result<(), DestinationError> {
        let mut data = Vec::with_capacity(8 + temp.len() + target.len());
        for s in [temp, target] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        let context = format!("replace {target} with {temp}");
        match self
            .bounded("rename", raw.extended(POSIX_RENAME, data))
            .await?
        {
            Ok(Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
            Ok(Packet::Status(s)) => Err(sftp_error(&context, SftpError::Status(s))),
            Ok(_) => Err(sftp_error(&context, SftpError::UnexpectedPacket)),
            Err(e) => Err(sftp_error(&context, e)),
        }
    }

    /// Best-effort removal of the temporary file after a failure.
    async fn discard(&self, sftp: &SftpSession, temp: &str) {
        match self.bounded("remove", sftp.remove_file(temp)).await {
            Ok(Ok(())) => {}
            Ok(Err(SftpError::Status(s))) if s.status_code == StatusCode::NoSuchFile => {}
            Ok(Err(e)) => {
                tracing::warn!(path = temp, error = %e, "could not remove temporary file")
            }
            Err(e) => tracing::warn!(path = temp, error = %e, "could not remove temporary file"),
        }
    }
}

impl SftpDestination {
    /// `ferry check`: connects (the pinned host key, then the credentials), checks that
    /// `directory` exists, and writes a small probe file there under a temporary name, renames
    /// it and deletes it: the three things a delivery does. Leaves nothing behind that it could
    /// delete.
    pub async fn probe(&self) -> ProbeResult {
        let conn = self.connect().await.map_err(|e| self.connect_problem(e))?;
        let result = self.probe_directory(&conn.sftp).await;
        conn.close().await;
        result
    }

    fn connect_problem(&self, e: DestinationError) -> Problem {
        let server = format!("{}:{}", self.host, self.port);
        match e {
            DestinationError::UntrustedHost(m) => Problem::new(
                format!("host key mismatch: {m}"),
                format!(
                    "if the server's key was changed on purpose, confirm the offered fingerprint with its administrator and put that key in host_key (`ssh-keyscan -p {} {}`); otherwise do not connect: someone may be in between",
                    self.port, self.host
                ),
            ),
            DestinationError::Unauthorized(m) => Problem::new(
                format!("authentication refused: {m}"),
                "check username and the private key or password secret; for a key, the server must list its public key in the user's authorized_keys",
            ),
            other => Problem::new(
                format!("cannot open an SFTP session on {server}: {other}"),
                "check host and port, and that this machine can reach the server (firewall, allow-list)",
            ),
        }
    }

    async fn probe_directory(&self, sftp: &SftpSession) -> ProbeResult {
        let dir = if self.directory.is_empty() {
            "."
        } else {
            self.directory.as_str()
        };
        let user = &self.username;
        let stat_problem = |e: DestinationError| {
            Problem::new(
                format!("cannot look up directory {dir}: {e}"),
                "check directory",
            )
        };
        match self.stat(sftp, dir).await.map_err(stat_problem)? {
            None => {
                return Err(Problem::new(
                    format!(
                        "directory {dir} does not exist on {}:{}",
                        self.host, self.port
                    ),
                    format!("create it (writable by {user}) or correct directory in the config"),
                ));
            }
            Some(meta) if !meta.is_dir() => {
                return Err(Problem::new(
                    format!("{dir} on {}:{} is not a directory", self.host, self.port),
                    "correct directory in the config",
                ));
            }
            Some(_) => {}
        }
        let not_writable = |step: &str, e: DestinationError| {
            let reason = match e {
                DestinationError::Rejected(m) | DestinationError::Transient { reason: m, .. } => m,
                other => other.to_string(),
            };
            Problem::new(
                format!("directory {dir} is not writable by {user}: {step} failed: {reason}"),
                format!(
                    "let {user} create, rename and delete files in {dir} (or choose a directory it may write to)"
                ),
            )
        };
        let name = format!("ferry-check-{:016x}", rand::random::<u64>());
        let temp = join_path(&self.directory, &format!(".{name}.part"));
        let target = join_path(&self.directory, &format!(".{name}"));
        let mut file = self
            .bounded(
                "create probe file",
                sftp.open_with_flags(
                    temp.as_str(),
                    OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
                ),
            )
            .await
            .map_err(|e| not_writable("create a file", e))?
            .map_err(|e| not_writable("create a file", sftp_error(&format!("create {temp}"), e)))?;
        let written = async {
            file.write_all(b"ferry check\n").await?;
            file.shutdown().await
        };
        let written = self.bounded("write probe file", written).await;
        let written = match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DestinationError::from_io(&format!("write {temp}"), &e)),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            self.discard(sftp, &temp).await;
            return Err(not_writable("write a file", e));
        }
        let renamed = match self
            .bounded("rename", sftp.rename(temp.as_str(), target.as_str()))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(sftp_error(&format!("rename {temp} to {target}"), e)),
            Err(e) => Err(e),
        };
        if let Err(e) = renamed {
            self.discard(sftp, &temp).await;
            return Err(not_writable("rename a file", e));
        }
        match self
            .bounded("remove", sftp.remove_file(target.as_str()))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(not_writable(
                "delete a file",
                sftp_error(
                    &format!("remove {target} (left behind: delete it by hand)"),
                    e,
                ),
            )),
            Err(e) => Err(not_writable("delete a file", e)),
        }
    }
}

#[async_trait]
impl Destination for SftpDestination {
    fn kind(&self) -> &'static str {
        "sftp"
    }

    async fn write(
        &self,
        delivery: &Delivery,
        mut body: ByteReader,
    ) -> Result<Written, DestinationError> {
        let target = join_path(&self.directory, &delivery.name);
        let (prefix, file_name) = match target.rfind('/') {
            Some(i) => target.split_at(i + 1),
            None => ("", target.as_str()),
        };
        let temp = format!("{prefix}{}", temp_name(file_name));

        let conn = self.connect().await?;
        let result = async {
            self.ensure_dir(&conn.sftp, prefix).await?;
            let committed = async {
                let bytes = self.upload(&conn, &temp, delivery, &mut body).await?;
                self.rename_into_place(&conn, &temp, &target).await?;
                Ok(bytes)
            }
            .await;
            if committed.is_err() {
                // The file handle is already closed (or its close queued) on this channel, so
                // the server handles the removal after it.
                self.discard(&conn.sftp, &temp).await;
            }
            committed
        }
        .await;
        conn.close().await;
        let bytes = result?;
        tracing::debug!(path = %target, bytes, "sftp write committed");
        Ok(Written {
            location: self.location(&target),
            bytes,
            remote_hash: None,
        })
    }
}

/// Reads into `buf` until it is full or the body ends; the bytes read.
async fn fill(body: &mut ByteReader, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match body.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

struct Connection {
    ssh: client::Handle<PinnedHostKey>,
    sftp: SftpSession,
}

/// A writer of one large file beyond the first: the file open on an SFTP channel of the first
/// connection, or of a connection of its own, which one of its writers owns (`ssh`) and closes
/// once every writer's file is closed.
struct Writer {
    file: russh_sftp::client::fs::File,
    sftp: SftpSession,
    ssh: Option<client::Handle<PinnedHostKey>>,
}

impl Writer {
    async fn close(self) {
        match self.ssh {
            Some(ssh) => {
                Connection {
                    ssh,
                    sftp: self.sftp,
                }
                .close()
                .await;
            }
            None => {
                let _ = self.sftp.close().await;
            }
        }
    }
}

impl Connection {
    async fn close(self) {
        let _ = self.sftp.close().await;
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.ssh.disconnect(Disconnect::ByApplication, "", "en"),
        )
        .await;
    }
}

/// `.<file>.ferry-<random>.part`, the file part shortened to stay within NAME_MAX.
fn temp_name(file_name: &str) -> String {
    let mut keep = file_name.len().min(TEMP_NAME_KEEP);
    while !file_name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(
        ".{}.ferry-{:016x}.part",
        &file_name[..keep],
        rand::random::<u64>()
    )
}

fn parse_host_key(text: &str) -> Result<PublicKey, DestinationError> {
    let text = text.trim();
    PublicKey::from_openssh(text)
        .or_else(|first| match text.split_once(char::is_whitespace) {
            // `host ssh-ed25519 AAAA...` as ssh-keyscan prints it.
            Some((_, rest)) => PublicKey::from_openssh(rest.trim_start()).map_err(|_| first),
            None => Err(first),
        })
        .map_err(|e| {
            DestinationError::Rejected(format!(
                "host_key is not an OpenSSH public key (`ssh-ed25519 AAAA...`): {e}"
            ))
        })
}

/// Accepts only the pinned host key.
struct PinnedHostKey {
    expected: PublicKey,
}

#[derive(Debug)]
enum SshError {
    Ssh(russh::Error),
    UntrustedHost { seen: String },
}

impl From<russh::Error> for SshError {
    fn from(e: russh::Error) -> Self {
        SshError::Ssh(e)
    }
}

impl client::Handler for PinnedHostKey {
    type Error = SshError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // A certificate is judged by the key it certifies: pinning trusts a key, not a CA.
        let seen = server_public_key.public_key();
        if seen.key_data() == self.expected.key_data() {
            Ok(true)
        } else {
            Err(SshError::UntrustedHost {
                seen: format!("{} {}", seen.algorithm(), seen.fingerprint(HashAlg::Sha256)),
            })
        }
    }
}

fn ssh_error(context: &str, e: russh::Error) -> DestinationError {
    use russh::Error as E;
    match e {
        E::WrongServerSig => DestinationError::UntrustedHost(format!(
            "{context}: the server's key-exchange signature did not verify"
        )),
        E::NoCommonAlgo { .. } | E::UnknownAlgo | E::Version | E::InvalidConfig(_) => {
            DestinationError::Rejected(format!("{context}: {e}"))
        }
        _ => DestinationError::Transient {
            reason: format!("{context}: {e}"),
            retry_after: None,
        },
    }
}

fn sftp_error(context: &str, e: SftpError) -> DestinationError {
    let permanent = matches!(
        &e,
        SftpError::Status(s) if matches!(
            s.status_code,
            StatusCode::PermissionDenied
                | StatusCode::NoSuchFile
                | StatusCode::OpUnsupported
                | StatusCode::BadMessage
        )
    );
    if permanent {
        DestinationError::Rejected(format!("{context}: {e}"))
    } else {
        DestinationError::Transient {
            reason: format!("{context}: {e}"),
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Checks that need no server. The behaviour against a real sshd (writes, overwrites,
    //! broken bodies, the stop instant, host keys and credentials) is in tests/it/sftp.rs, so
    //! `make unit` starts no sshd.

    use super::*;

    #[test]
    fn settings_are_checked_without_leaking_secrets() {
        let settings = |host_key: &str, auth| SftpSettings {
            host: "h".into(),
            port: 22,
            username: "u".into(),
            host_key: host_key.into(),
            auth,
            directory: "/in".into(),
            timeout: Duration::from_secs(5),
        };
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5NtdHJK2UvmJYsz8yfrbrwOPUll2yiynap4cHSHR8R";
        let e = SftpDestination::new(settings(
            "ssh-ed25519 AAAA",
            SftpAuth::Password("pw".into()),
        ))
        .err()
        .unwrap();
        assert!(matches!(e, DestinationError::Rejected(_)));
        let e = SftpDestination::new(settings(
            key,
            SftpAuth::PrivateKey("s3cret-key-text".into()),
        ))
        .err()
        .unwrap();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        // ssh-keyscan form, and the home-relative location form.
        let mut dest = SftpDestination::new(settings(
            &format!("example.org {key}"),
            SftpAuth::Password("pw".into()),
        ))
        .unwrap();
        assert_eq!(dest.location("/in/a b.txt"), "sftp://u@h:22/in/a b.txt");
        dest.host = "::1".into();
        assert_eq!(dest.location("in/a"), "sftp://u@[::1]:22/~/in/a");
    }

    #[test]
    fn temporary_names_are_hidden_and_bounded() {
        let t = temp_name("report.csv");
        assert!(
            t.starts_with(".report.csv.ferry-") && t.ends_with(".part"),
            "{t}"
        );
        let long = "é".repeat(200);
        assert!(temp_name(&long).len() <= 255);
    }
}
