//! A local directory: write to a hidden temporary file beside the target, fsync, check the
//! size, then rename into place.
//!
//! The file is written in blocks of [`COPY_BUFFER`] bytes, each by one write on the blocking
//! pool while the next block fills from the source: two buffers, one thread hand-off per block.
//! (tokio's `File` took a blocking-pool round trip per source chunk, each after a copy into a
//! buffer of its own: a 1 GiB copy spent about a fifth of its CPU switching threads.)

use std::io::Write as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::BytesMut;
use tokio::task::JoinHandle;

use super::buffers::fill;
use super::{Delivery, Destination, DestinationError, Written};
use crate::ByteReader;

/// Bytes per write while copying.
const COPY_BUFFER: usize = 1 << 20;

/// Runs `op` on the blocking pool.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    finished(tokio::task::spawn_blocking(op)).await
}

async fn finished<T>(task: JoinHandle<std::io::Result<T>>) -> std::io::Result<T> {
    task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Copies `body` into a new file at `temp`, synced to disk; returns the bytes copied.
async fn copy_to_file(body: &mut ByteReader, temp: &Path) -> Result<u64, DestinationError> {
    let path = temp.to_path_buf();
    let mut file = Some(
        blocking(move || std::fs::File::create(path))
            .await
            .map_err(|e| io_err("create temporary file", e))?,
    );
    // The block being written and the block filling; a write hands both back when done.
    let mut writing: Option<JoinHandle<std::io::Result<(std::fs::File, BytesMut)>>> = None;
    let mut spare = BytesMut::with_capacity(COPY_BUFFER);
    let mut copied = 0u64;
    loop {
        let mut block = std::mem::take(&mut spare);
        block.clear();
        let n = fill(body, &mut block, COPY_BUFFER).await?;
        if let Some(write) = writing.take() {
            let (f, written) = finished(write).await.map_err(|e| io_err("write", e))?;
            (file, spare) = (Some(f), written);
        }
        if n == 0 {
            break;
        }
        copied += n as u64;
        let mut f = file.take().expect("the previous write gave the file back");
        writing = Some(tokio::task::spawn_blocking(move || {
            f.write_all(&block)?;
            Ok((f, block))
        }));
    }
    let file = file.expect("the last write gave the file back");
    blocking(move || file.sync_all())
        .await
        .map_err(|e| io_err("fsync", e))?;
    Ok(copied)
}

/// Delivers into a directory on this machine.
pub struct LocalDirDestination {
    root: PathBuf,
}

impl LocalDirDestination {
    /// Builds the destination from its config.
    pub fn from_config(config: &crate::config::LocalDirConfig) -> Self {
        Self::new(&config.path)
    }

    /// Files go under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `ferry check`: the folder (created on first write when missing) can take a file: a
    /// probe file is created in it, or in its nearest existing parent, and removed again.
    pub async fn probe(&self) -> crate::probe::ProbeResult {
        use crate::probe::Problem;
        let mut dir = self.root.as_path();
        while !dir.exists() {
            match dir.parent() {
                Some(parent) => dir = parent,
                None => break,
            }
        }
        if !dir.is_dir() {
            return Err(Problem::new(
                format!("{} is not a directory", dir.display()),
                "correct path in the config",
            ));
        }
        let probe = dir.join(format!(".ferry-check-{:016x}", rand::random::<u64>()));
        tokio::fs::write(&probe, b"ferry check\n")
            .await
            .map_err(|e| {
                Problem::new(
                    format!("cannot write in {}: {e}", dir.display()),
                    "let the user ferry runs as write in the folder, or choose another path",
                )
            })?;
        let _ = tokio::fs::remove_file(&probe).await;
        Ok(())
    }
}

fn io_err(context: &str, e: std::io::Error) -> DestinationError {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            DestinationError::Rejected(format!("{context}: {e}"))
        }
        _ => DestinationError::from_io(context, &e),
    }
}

#[async_trait]
impl Destination for LocalDirDestination {
    fn kind(&self) -> &'static str {
        "local_dir"
    }

    async fn write(
        &self,
        delivery: &Delivery,
        mut body: ByteReader,
    ) -> Result<Written, DestinationError> {
        let target = self.root.join(&delivery.name);
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| io_err("create directory", e))?;
        let file_name = target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file");
        let temp = parent.join(format!(
            ".{file_name}.ferry-{:016x}.part",
            rand::random::<u64>()
        ));
        let result = async {
            let copied = copy_to_file(&mut body, &temp).await?;
            let on_disk = tokio::fs::metadata(&temp)
                .await
                .map_err(|e| io_err("stat", e))?
                .len();
            if on_disk != delivery.size || copied != delivery.size {
                return Err(DestinationError::Verification(format!(
                    "wrote {on_disk} bytes, expected {}",
                    delivery.size
                )));
            }
            tokio::fs::rename(&temp, &target)
                .await
                .map_err(|e| io_err("rename into place", e))?;
            Ok(on_disk)
        }
        .await;
        match result {
            Ok(bytes) => Ok(Written {
                location: format!("file://{}", target.display()),
                bytes,
                remote_hash: None,
            }),
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }
}
