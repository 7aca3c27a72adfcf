//! A second S3 server for the benchmark: s3s-fs (crates.io `s3s-fs`, an S3 server in Rust that
//! keeps each object as a file). moto is single-threaded Python and its CompleteMultipartUpload
//! alone takes 10-16 s for 1 GiB here, so every copy to moto ends at moto's pace, whatever the
//! tool does. The `s3s` rows send the same copies to a server about three times as fast (it still
//! hashes every byte twice and copies the parts again at the complete step, on the same cores),
//! to show more of what the tools themselves do against S3. `make bench` installs it into
//! .local/s3s (the Makefile names the version); without it the rows are skipped, and the run says
//! so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running s3s-fs on a loopback port, killed on drop. Its buckets are folders of `root`.
pub(crate) struct S3sFs {
    pub port: u16,
    pub endpoint: String,
    /// What the binary says of itself (`s3s-fs --version`), for the report's header.
    pub version: String,
    child: Child,
}

impl S3sFs {
    pub(crate) fn bin(repo: &Path) -> PathBuf {
        repo.join(".local/s3s/bin/s3s-fs")
    }

    /// Starts s3s-fs over `root` with the bench's credentials and `buckets`; `None` (and a line
    /// on stderr saying why) when it is not installed.
    pub(crate) fn start(
        repo: &Path,
        root: &Path,
        buckets: &[&str],
    ) -> anyhow::Result<Option<Self>> {
        let bin = Self::bin(repo);
        if !bin.exists() {
            eprintln!(
                "s3s-fs is not installed at {} (`make bench` installs it): the s3s rows are skipped",
                bin.display()
            );
            return Ok(None);
        }
        for b in buckets {
            std::fs::create_dir_all(root.join(b))?;
        }
        let version = Command::new(&bin).arg("--version").output()?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        let port = ferry_harness::free_port();
        let log_path = root.with_extension("log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "bench", "--secret-key", "bench"])
            .arg(root)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Self {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            version,
            child,
        };
        let started = Instant::now();
        while !ferry_harness::port_open(port) {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "s3s-fs exited at start ({status}): {}",
                    ferry_harness::log_tail(&log_path)
                );
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("s3s-fs did not listen on {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Some(server))
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
