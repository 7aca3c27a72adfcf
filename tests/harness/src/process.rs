//! Child-process plumbing shared by all components: a long-lived spawner thread, run
//! directories under one temp folder, readiness waiting and cleanup.
//!
//! Every server is spawned from one dedicated thread that never exits, with
//! `PR_SET_PDEATHSIG(SIGKILL)`: the kernel ties the death signal to the *thread* that
//! forked, so spawning from a short-lived test thread would kill the server as soon as
//! that test ends. Each server runs in its own process group (so its helpers, e.g. the
//! per-connection sshd processes, are killed with it). On Drop a server gets SIGTERM,
//! then SIGKILL; at process exit an `atexit` hook does the same for servers that live
//! in statics (which are never dropped) and removes their run directories.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};

/// How long a server gets to start accepting TCP connections.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// Ports

/// A loopback TCP port that was free a moment ago. Ports handed out by this process
/// are never handed out twice.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("cannot bind a loopback TCP port");
        let port = listener.local_addr().expect("local_addr").port();
        if handed.insert(port) {
            return port;
        }
    }
    panic!("free_port: no fresh loopback port found");
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok()
}

// ---------------------------------------------------------------------------
// Run directories

/// The folder under which every run directory of this harness lives.
fn base_dir() -> PathBuf {
    std::env::temp_dir().join("ferry-harness")
}

fn keep_dirs() -> bool {
    std::env::var_os("FERRY_HARNESS_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Removes run directories left behind by harness processes that no longer exist
/// (e.g. a test binary killed with SIGKILL). Runs once per process.
fn sweep_stale_dirs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let Ok(entries) = fs::read_dir(base_dir()) else {
            return;
        };
        let me = std::process::id();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me || pid_alive(pid) {
                continue;
            }
            let _ = fs::remove_dir_all(entry.path());
        }
    });
}

fn pid_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        return !state.starts_with('Z');
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// A private directory for one server run (data, logs, keys). Removed on Drop and at
/// process exit, unless `FERRY_HARNESS_KEEP=1` is set.
#[derive(Debug)]
pub(crate) struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub(crate) fn new(component: &str) -> anyhow::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        sweep_stale_dirs();
        let base = base_dir();
        fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!(
            "{}-{component}-{n}-{nanos:08x}",
            std::process::id()
        ));
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        register_exit_dir(&path);
        Ok(Self { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        unregister_exit_dir(&self.path);
        if !keep_dirs() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------
// Exit-time cleanup registry

struct ExitRegistry {
    groups: Vec<libc::pid_t>,
    dirs: Vec<PathBuf>,
}

static EXIT_REGISTRY: Mutex<ExitRegistry> = Mutex::new(ExitRegistry {
    groups: Vec::new(),
    dirs: Vec::new(),
});

fn registry() -> std::sync::MutexGuard<'static, ExitRegistry> {
    EXIT_REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn install_exit_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: registering a plain `extern "C"` function with libc's atexit.
        unsafe {
            libc::atexit(exit_hook);
        }
    });
}

extern "C" fn exit_hook() {
    // Never panic across the FFI boundary; take what we can.
    let (groups, dirs) = match EXIT_REGISTRY.try_lock() {
        Ok(mut r) => (std::mem::take(&mut r.groups), std::mem::take(&mut r.dirs)),
        Err(std::sync::TryLockError::Poisoned(p)) => {
            let mut r = p.into_inner();
            (std::mem::take(&mut r.groups), std::mem::take(&mut r.dirs))
        }
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for &pgid in &groups {
        signal_group(pgid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut remaining: Vec<libc::pid_t> = groups.clone();
    while !remaining.is_empty() && Instant::now() < deadline {
        remaining.retain(|&pid| !reap(pid));
        if !remaining.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for &pgid in &groups {
        signal_group(pgid, libc::SIGKILL);
    }
    for &pid in &remaining {
        // Reap so nothing stays a zombie if the process keeps running a little longer.
        // SAFETY: waitpid on our own child pid.
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    if !keep_dirs() {
        for dir in dirs {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Non-blocking reap; true when the process is gone (or not our child any more).
fn reap(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on a pid we spawned.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    rc != 0
}

fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    if pgid > 1 {
        // SAFETY: signalling the process group of a server we spawned.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

fn register_exit_dir(path: &Path) {
    install_exit_hook();
    registry().dirs.push(path.to_path_buf());
}

fn unregister_exit_dir(path: &Path) {
    registry().dirs.retain(|p| p != path);
}

fn register_exit_group(pgid: libc::pid_t) {
    install_exit_hook();
    registry().groups.push(pgid);
}

fn unregister_exit_group(pgid: libc::pid_t) {
    registry().groups.retain(|&p| p != pgid);
}

// ---------------------------------------------------------------------------
// The spawner thread

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("ferry-harness-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop (and the thread that the
                // children's PDEATHSIG is tied to) lasts until the process exits.
                while let Ok(mut req) = rx.recv() {
                    let _ = req.reply.send(req.cmd.spawn());
                }
            })
            .expect("cannot start the harness spawner thread");
        tx
    })
}

/// Spawns `cmd` from the long-lived spawner thread, in its own process group, with
/// PDEATHSIG=SIGKILL so it dies with this process.
fn spawn_guarded(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id();
    cmd.process_group(0);
    // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .send(SpawnRequest { cmd, reply: tx })
        .map_err(|_| io::Error::other("harness spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("harness spawner thread did not answer"))?
}

// ---------------------------------------------------------------------------
// Server processes

/// One running server: killed (whole process group) on Drop.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
}

impl ServerProcess {
    /// Spawns `program args..` with stdout and stderr appended to `log_path`.
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        cwd: &Path,
        log_path: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::spawn_as(name, program, args, cwd, log_path, env, None)
    }

    /// Like `spawn`, but as another user (`(uid, gid)`, set before exec; PDEATHSIG is armed
    /// after the switch, so it survives it): for servers that refuse to run as root.
    pub(crate) fn spawn_as(
        name: &str,
        program: &Path,
        args: &[String],
        cwd: &Path,
        log_path: &Path,
        env: &[(&str, &str)],
        user: Option<(u32, u32)>,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(cwd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        Self::spawn_command(name, cmd, log_path)
    }

    /// Spawns `program` (no arguments) with exactly the environment `env` (nothing inherited
    /// from this process), as a sandbox would start it; stdout and stderr appended to `log_path`.
    pub(crate) fn spawn_clean_env(
        name: &str,
        program: &Path,
        cwd: &Path,
        log_path: &Path,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd).env_clear().envs(env.iter().cloned());
        Self::spawn_command(name, cmd, log_path)
    }

    fn spawn_command(name: &str, mut cmd: Command, log_path: &Path) -> anyhow::Result<Self> {
        let program = PathBuf::from(cmd.get_program());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening log file {}", log_path.display()))?;
        let log2 = log.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let child = spawn_guarded(cmd)
            .with_context(|| format!("{name}: cannot start {}", program.display()))?;
        let pgid = child.id() as libc::pid_t;
        register_exit_group(pgid);
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log_path: log_path.to_path_buf(),
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` when the server has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        match self.child.as_mut() {
            Some(child) => child.try_wait().ok().flatten(),
            None => None,
        }
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// Waits until the server accepts TCP connections on `port`. `Err` (with the tail of
    /// the log) when it exits first or `timeout` passes.
    pub(crate) fn wait_ready(&mut self, port: u16, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "{} exited ({status}) before listening on 127.0.0.1:{port}; log {}:\n{}",
                    self.name,
                    self.log_path.display(),
                    log_tail(&self.log_path)
                );
            }
            if port_open(port) {
                // Make sure it is our server that answered, not something else on the port.
                std::thread::sleep(Duration::from_millis(20));
                if let Some(status) = self.exited() {
                    bail!(
                        "{} exited ({status}) right after 127.0.0.1:{port} opened (port taken?); log {}:\n{}",
                        self.name,
                        self.log_path.display(),
                        log_tail(&self.log_path)
                    );
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not listen on 127.0.0.1:{port} within {:?}; log {}:\n{}",
                    self.name,
                    timeout,
                    self.log_path.display(),
                    log_tail(&self.log_path)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM to the whole process group, SIGKILL after a grace period; reaps the child.
    pub(crate) fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as libc::pid_t;
        if child.try_wait().ok().flatten().is_none() {
            signal_group(pgid, libc::SIGTERM);
            let deadline = Instant::now() + TERM_GRACE;
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Also catches helpers of the group (e.g. sshd per-connection processes).
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait();
        unregister_exit_group(pgid);
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last ~40 lines (at most 8 KiB) of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    const MAX: u64 = 8 * 1024;
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX {
        let _ = f.seek(SeekFrom::Start(len - MAX));
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(40);
    let tail = lines[start..].join("\n");
    if tail.trim().is_empty() {
        "(log is empty)".to_string()
    } else {
        tail
    }
}

/// Runs a short helper command to completion; `Err` with its output when it fails.
pub(crate) fn run_checked(cmd: &mut Command) -> anyhow::Result<std::process::Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        return Err(anyhow!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// Starts a server on a fresh port, retrying on a new port when it dies before it
/// listens (another process may have grabbed the port in between).
pub(crate) fn start_on_free_port<T>(
    attempts: usize,
    mut start: impl FnMut(u16) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut last = None;
    for _ in 0..attempts.max(1) {
        let port = free_port();
        match start(port) {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no attempt made")))
}
