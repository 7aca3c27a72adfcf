//! OpenSSH sshd (SFTP via internal-sftp) on a free loopback port, with its own host
//! key and a client key for the current user.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::process::{READY_TIMEOUT, RunDir, ServerProcess, run_checked, start_on_free_port};

const SSHD_BIN: &str = "/usr/sbin/sshd";

/// A running sshd. Killed (with its per-connection processes) on Drop.
#[derive(Debug)]
pub struct Sshd {
    /// The loopback TCP port it listens on.
    pub port: u16,
    /// The server's public host key: `ssh-ed25519 AAAA...` (no comment).
    pub host_key: String,
    /// The user to log in as (the current user).
    pub user: String,
    /// The client's private key, OpenSSH format (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub client_key_pem: String,
    /// The same private key as a file (mode 0600).
    pub client_key_path: PathBuf,
    /// The client's public key line (`ssh-ed25519 AAAA... comment`).
    pub client_public_key: String,
    /// A known_hosts file naming this server (`[127.0.0.1]:PORT ssh-ed25519 ...`).
    pub known_hosts_path: PathBuf,
    /// An empty directory (absolute path) the user can write into: point SFTP
    /// destinations here.
    pub root: PathBuf,
    /// sshd's own log (`-e`, LogLevel VERBOSE: one line per SFTP session opened).
    pub log_path: PathBuf,
    config_path: PathBuf,
    authorized_keys_path: PathBuf,
    process: Option<ServerProcess>,
    dir: RunDir,
}

impl Sshd {
    /// Generates keys and a config, then starts sshd on a free port.
    pub fn start() -> anyhow::Result<Self> {
        crate::ensure_installed()?;
        if !Path::new(SSHD_BIN).exists() {
            bail!("{SSHD_BIN} is missing: run scripts/install-components.sh");
        }
        start_on_free_port(2, Self::start_on)
    }

    /// Starts on a given port (e.g. a fixed one for the demo).
    pub fn start_on_port(port: u16) -> anyhow::Result<Self> {
        crate::ensure_installed()?;
        Self::start_on(port)
    }

    fn start_on(port: u16) -> anyhow::Result<Self> {
        let dir = RunDir::new("sshd")?;
        let d = dir.path();
        let user = current_user()?;

        let host_key_path = d.join("host_ed25519");
        let client_key_path = d.join("client_ed25519");
        keygen(&host_key_path, "ferry-harness-host")?;
        keygen(&client_key_path, "ferry-harness-client")?;
        let host_pub = read_trimmed(&host_key_path.with_extension("pub"))?;
        let host_key = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let client_public_key = read_trimmed(&client_key_path.with_extension("pub"))?;
        let client_key_pem = fs::read_to_string(&client_key_path)?;

        let authorized_keys_path = d.join("authorized_keys");
        fs::write(&authorized_keys_path, format!("{client_public_key}\n"))?;
        let known_hosts_path = d.join("known_hosts");
        fs::write(
            &known_hosts_path,
            format!("[127.0.0.1]:{port} {host_key}\n"),
        )?;
        let root = d.join("files");
        fs::create_dir_all(&root)?;

        // As root, sshd needs its privilege separation directory.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        }

        let log_path = d.join("sshd.log");
        let config_path = d.join("sshd_config");
        write_config(&config_path, port, &host_key_path, d, &authorized_keys_path)?;

        let mut sshd = Self {
            port,
            host_key,
            user,
            client_key_pem,
            client_key_path,
            client_public_key,
            known_hosts_path,
            root,
            log_path,
            config_path,
            authorized_keys_path,
            process: None,
            dir,
        };
        sshd.spawn()?;
        Ok(sshd)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let args = [
            "-D".to_string(),
            "-e".to_string(),
            "-f".to_string(),
            self.config_path.to_string_lossy().into_owned(),
        ];
        let mut process = ServerProcess::spawn(
            "sshd",
            Path::new(SSHD_BIN),
            &args,
            self.dir.path(),
            &self.log_path,
            &[],
        )?;
        process.wait_ready(self.port, READY_TIMEOUT)?;
        self.process = Some(process);
        Ok(())
    }

    /// Stops sshd and every connection it serves (SIGTERM, then SIGKILL, to the whole
    /// process group): in-flight SFTP sessions break, new connections are refused.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// (Re)starts sshd on the same port with the same keys and files.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
            .with_context(|| format!("restarting sshd on port {}", self.port))
    }

    /// Whether the server process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ServerProcess::is_running)
    }

    /// The server process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ServerProcess::pid)
    }

    /// Authorizes another public key line (e.g. one a test generated).
    pub fn add_authorized_key(&self, public_key_line: &str) -> anyhow::Result<()> {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&self.authorized_keys_path)?;
        writeln!(f, "{}", public_key_line.trim())?;
        Ok(())
    }

    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA...`, a known_hosts line for this server.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_key)
    }

    /// Runs the OpenSSH `sftp` client in batch mode (`-b`) against this server, with
    /// the client key and strict host key checking; returns its stdout.
    pub fn sftp_batch(&self, batch: &str) -> anyhow::Result<String> {
        let batch_path = self.dir.path().join(format!(
            "batch-{}.txt",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs::write(&batch_path, batch)?;
        let out = run_checked(
            Command::new("sftp")
                .arg("-i")
                .arg(&self.client_key_path)
                .arg("-P")
                .arg(self.port.to_string())
                .arg("-o")
                .arg("StrictHostKeyChecking=yes")
                .arg("-o")
                .arg(format!(
                    "UserKnownHostsFile={}",
                    self.known_hosts_path.display()
                ))
                .arg("-o")
                .arg("IdentitiesOnly=yes")
                .arg("-o")
                .arg("BatchMode=yes")
                .arg("-o")
                .arg("ConnectTimeout=10")
                .arg("-b")
                .arg(&batch_path)
                .arg(format!("{}@127.0.0.1", self.user)),
        );
        let _ = fs::remove_file(&batch_path);
        Ok(String::from_utf8_lossy(&out?.stdout).into_owned())
    }
}

fn keygen(path: &Path, comment: &str) -> anyhow::Result<()> {
    run_checked(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
    )
    .context("ssh-keygen (Debian package openssh-client)")?;
    Ok(())
}

fn read_trimmed(path: &Path) -> anyhow::Result<String> {
    Ok(fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

fn write_config(
    config_path: &Path,
    port: u16,
    host_key: &Path,
    dir: &Path,
    authorized_keys: &Path,
) -> anyhow::Result<()> {
    let base = format!(
        "# generated by ferry-harness
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {pid}
AuthorizedKeysFile {authorized_keys}
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UseDNS no
# Tests open many connections at once (default 10:30:100 drops some at random).
MaxStartups 200
MaxSessions 100
LoginGraceTime 30
Subsystem sftp internal-sftp
LogLevel VERBOSE
",
        host_key = host_key.display(),
        pid = dir.join("sshd.pid").display(),
        authorized_keys = authorized_keys.display(),
    );
    // OpenSSH >= 9.8 penalises sources that fail auth or crash sessions; fault tests do
    // that on purpose from 127.0.0.1. Older versions do not know the option.
    let with_penalties_off = format!("{base}PerSourcePenalties no\n");
    fs::write(config_path, &with_penalties_off)?;
    if config_ok(config_path).is_ok() {
        return Ok(());
    }
    fs::write(config_path, &base)?;
    config_ok(config_path).context("sshd rejected the generated config")
}

fn config_ok(config_path: &Path) -> anyhow::Result<()> {
    run_checked(Command::new(SSHD_BIN).arg("-t").arg("-f").arg(config_path))?;
    Ok(())
}

/// Name of the effective user (from the passwd database, else `$USER`).
fn current_user() -> anyhow::Result<String> {
    // SAFETY: getpwuid_r writes into our buffers; we read pw_name only on success.
    unsafe {
        let uid = libc::geteuid();
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
            let name = std::ffi::CStr::from_ptr(pwd.pw_name).to_string_lossy();
            return Ok(name.into_owned());
        }
    }
    std::env::var("USER").context("cannot determine the current user name")
}
