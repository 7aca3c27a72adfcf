//! PostgreSQL on a free loopback port, in a fresh cluster under a run directory (`initdb`, then
//! `postgres -D`). The binaries come from the machine (Debian's `postgresql` package, installed
//! by `scripts/install-components.sh` when missing). PostgreSQL refuses to run as root, so as
//! root the cluster belongs to, and the server runs as, the `postgres` system user (else
//! `nobody`).

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::process::{READY_TIMEOUT, RunDir, ServerProcess, run_checked, start_on_free_port};

/// A running PostgreSQL server. Killed on Drop; its data directory goes with the run directory.
#[derive(Debug)]
pub struct Postgres {
    /// The loopback TCP port it listens on.
    pub port: u16,
    /// `127.0.0.1`
    pub host: String,
    /// Superuser created by initdb (password authentication over TCP).
    pub user: String,
    /// Its password.
    pub password: String,
    /// A database that exists (`postgres`).
    pub dbname: String,
    /// `postgres://user:password@127.0.0.1:PORT/postgres`
    pub url: String,
    /// Folder of the PostgreSQL binaries used.
    pub bin_dir: PathBuf,
    /// Folder of the server's unix socket (trust authentication there).
    pub socket_dir: PathBuf,
    /// The server's log file (printed when a test fails to reach it).
    pub log_path: PathBuf,
    process: ServerProcess,
    dir: RunDir,
}

/// Where the server binaries are: `$FERRY_PG_BIN_DIR`, the newest `/usr/lib/postgresql/*/bin`,
/// else the folder of `initdb` on `PATH` (symlinks resolved).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(d) = std::env::var_os("FERRY_PG_BIN_DIR").filter(|v| !v.is_empty()) {
        let d = PathBuf::from(d);
        if has(&d) {
            return Ok(d);
        }
        bail!(
            "FERRY_PG_BIN_DIR={} has no initdb and postgres",
            d.display()
        );
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Ok(d);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let initdb = dir.join("initdb");
        if initdb.is_file()
            && let Some(parent) = fs::canonicalize(&initdb)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
            && has(&parent)
        {
            return Ok(parent);
        }
    }
    bail!(
        "no PostgreSQL server binaries (initdb, postgres) found: run scripts/install-components.sh (Debian package postgresql)"
    )
}

/// (uid, gid) to run the server as when we are root.
fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        let c = CString::new(name).expect("static name");
        // SAFETY: getpwnam_r writes into our buffers; we read the ids only on success.
        unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut buf = vec![0 as libc::c_char; 16 * 1024];
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwnam_r(
                c.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            );
            if rc == 0 && !result.is_null() {
                return Ok(Some((pwd.pw_uid, pwd.pw_gid)));
            }
        }
    }
    bail!("running as root, but neither a `postgres` nor a `nobody` user exists to run PostgreSQL")
}

fn chown(path: &Path, user: Option<(u32, u32)>) -> anyhow::Result<()> {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

impl Postgres {
    /// Creates a cluster and starts the server on a free port.
    pub fn start() -> anyhow::Result<Self> {
        crate::ensure_installed()?;
        let bin = bin_dir()?;
        start_on_free_port(2, |port| Self::start_on(&bin, port))
    }

    fn start_on(bin: &Path, port: u16) -> anyhow::Result<Self> {
        let dir = RunDir::new("postgres")?;
        let d = dir.path();
        let user = server_user()?;
        // The server user must reach its folders; the run directory is created 0755 by default,
        // but be explicit in case of a strict umask.
        fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
        let data = d.join("data");
        let socket_dir = d.join("socket");
        for folder in [&data, &socket_dir] {
            fs::create_dir(folder)?;
            fs::set_permissions(folder, fs::Permissions::from_mode(0o700))?;
            chown(folder, user)?;
        }
        let password = format!("ferry-pg-{:016x}", random_u64());
        let pwfile = d.join("pwfile");
        fs::write(&pwfile, format!("{password}\n"))?;
        fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))?;
        chown(&pwfile, user)?;

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "ferry",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .current_dir(d)
            .env("TZ", "UTC");
        if let Some((uid, gid)) = user {
            initdb.uid(uid).gid(gid);
        }
        run_checked(&mut initdb).context("initdb")?;
        let _ = fs::remove_file(&pwfile);

        let log_path = d.join("postgres.log");
        let args = [
            "-D".to_string(),
            data.to_string_lossy().into_owned(),
            "-p".into(),
            port.to_string(),
            "-k".into(),
            socket_dir.to_string_lossy().into_owned(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            // A throwaway cluster: durability buys nothing, speed does.
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            "synchronous_commit=off".into(),
            "-c".into(),
            "full_page_writes=off".into(),
        ];
        let mut process = ServerProcess::spawn_as(
            "postgres",
            &bin.join("postgres"),
            &args,
            d,
            &log_path,
            &[("TZ", "UTC")],
            user,
        )?;
        process.wait_ready(port, READY_TIMEOUT)?;
        // The port opens before recovery ends; connections then get "starting up".
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        while !fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("ready to accept connections")
        {
            if std::time::Instant::now() > deadline || !process.is_running() {
                bail!(
                    "postgres did not become ready; log {}:\n{}",
                    log_path.display(),
                    crate::process::log_tail(&log_path)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Ok(Self {
            port,
            host: "127.0.0.1".into(),
            user: "ferry".into(),
            url: format!("postgres://ferry:{password}@127.0.0.1:{port}/postgres"),
            password,
            dbname: "postgres".into(),
            bin_dir: bin.to_path_buf(),
            socket_dir,
            log_path,
            process,
            dir,
        })
    }

    /// The server process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The run directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
