//! A local directory: write to a hidden temporary file beside the target, fsync, check the
//! size, then rename into place.

use std::path::PathBuf;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::{Delivery, Destination, DestinationError, Written};
use crate::ByteReader;

/// Bytes moved per read/write while copying.
const COPY_BUFFER: usize = 1 << 20;

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
            let mut file = tokio::fs::File::create(&temp)
                .await
                .map_err(|e| io_err("create temporary file", e))?;
            // Large reads and writes: each tokio file write is a blocking-pool round trip.
            let mut body = tokio::io::BufReader::with_capacity(COPY_BUFFER, &mut body);
            let copied = tokio::io::copy_buf(&mut body, &mut file)
                .await
                .map_err(|e| io_err("write", e))?;
            file.flush().await.map_err(|e| io_err("flush", e))?;
            file.sync_all().await.map_err(|e| io_err("fsync", e))?;
            let on_disk = file.metadata().await.map_err(|e| io_err("stat", e))?.len();
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
