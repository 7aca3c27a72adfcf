//! A local directory: write to a hidden temporary file beside the target, fsync, check the
//! size, then rename into place.
//!
//! The file is written in blocks of [`COPY_BUFFER`] bytes, each by one write on the blocking
//! pool while the next block fills from the source: two buffers, one thread hand-off per block.
//! (tokio's `File` took a blocking-pool round trip per source chunk, each after a copy into a
//! buffer of its own: a 1 GiB copy spent about a fifth of its CPU switching threads.)
//!
//! Behind the writes, the disk catches up: each block's write-back starts as soon as it is
//! written, and once a block is [`WRITE_BEHIND`] bytes behind the newest it is waited for and
//! dropped from the page cache (Linux; elsewhere the final fsync does it all). So the final
//! fsync waits for a few MiB, not the whole file, and a copy of any size holds a few MiB of the
//! page cache, reusing the same pages, instead of filling the cache with a file it will not read
//! again (pushing out what the machine does read, and on a VM touching fresh memory all the way).

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

/// How far behind the newest written byte the disk may be before a write waits for it.
const WRITE_BEHIND: u64 = 8 << 20;

/// A file being written front to back, in blocks, with its write-back kept close behind.
struct BlockFile {
    file: std::fs::File,
    /// Bytes written.
    written: u64,
    /// Bytes below this offset are on disk and out of the page cache.
    settled: u64,
}

impl BlockFile {
    fn new(file: std::fs::File) -> Self {
        Self {
            file,
            written: 0,
            settled: 0,
        }
    }

    /// Appends `block`, starts its write-back, and settles what is [`WRITE_BEHIND`] behind.
    fn append(&mut self, block: &[u8]) -> std::io::Result<()> {
        self.file.write_all(block)?;
        let start = self.written;
        self.written += block.len() as u64;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd as _;
            let fd = self.file.as_raw_fd();
            // SAFETY: `fd` is this open file's descriptor; the call takes only integers.
            let started = unsafe {
                libc::sync_file_range(
                    fd,
                    start as libc::off64_t,
                    block.len() as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            write_back_result(started)?;
            let behind = self.written.saturating_sub(WRITE_BEHIND);
            if behind > self.settled {
                let (from, len) = (
                    self.settled as libc::off64_t,
                    (behind - self.settled) as libc::off64_t,
                );
                // SAFETY: as above.
                let waited = unsafe {
                    libc::sync_file_range(
                        fd,
                        from,
                        len,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    )
                };
                // A write-back error reported here is reported once: the final fsync on this
                // descriptor would not see it again, so it must fail the copy now.
                write_back_result(waited)?;
                // Dropping clean pages from the cache is advice; it cannot lose data.
                // SAFETY: as above.
                unsafe { libc::posix_fadvise(fd, from, len, libc::POSIX_FADV_DONTNEED) };
                self.settled = behind;
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = start;
        Ok(())
    }

    /// Syncs data and metadata to disk.
    fn sync(self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

/// What a `sync_file_range` return value means for the copy: a file system without the call
/// leaves the whole write-back to the final fsync (`Ok`); any other failure (an I/O error, a
/// full disk) is the write's own error.
#[cfg(target_os = "linux")]
fn write_back_result(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        return Ok(());
    }
    classify_write_back(std::io::Error::last_os_error())
}

#[cfg(target_os = "linux")]
fn classify_write_back(e: std::io::Error) -> std::io::Result<()> {
    match e.raw_os_error() {
        Some(libc::ENOSYS | libc::EINVAL | libc::ESPIPE | libc::EOPNOTSUPP) => Ok(()),
        _ => Err(e),
    }
}

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
    let mut file = Some(BlockFile::new(
        blocking(move || std::fs::File::create(path))
            .await
            .map_err(|e| io_err("create temporary file", e))?,
    ));
    // The block being written and the block filling; a write hands both back when done.
    let mut writing: Option<JoinHandle<std::io::Result<(BlockFile, BytesMut)>>> = None;
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
            f.append(&block)?;
            Ok((f, block))
        }));
    }
    let file = file.expect("the last write gave the file back");
    blocking(move || file.sync())
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::copy_to_file;

    const MIB: usize = 1 << 20;

    /// Bytes of the file at `path` now in the page cache (mincore of a mapping of it).
    fn cached_bytes(path: &std::path::Path) -> usize {
        use std::os::fd::AsRawFd as _;
        let file = std::fs::File::open(path).expect("open");
        let len = file.metadata().expect("stat").len() as usize;
        // SAFETY: a read-only shared mapping of an open file of `len` bytes, unmapped before
        // return; mincore writes one byte per page into a vector of that many bytes.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED, "mmap");
            let mut pages = vec![0u8; len.div_ceil(page)];
            assert_eq!(libc::mincore(addr, len, pages.as_mut_ptr()), 0, "mincore");
            libc::munmap(addr, len);
            pages.iter().filter(|p| *p & 1 == 1).count() * page
        }
    }

    /// A write-back the disk failed fails the copy (the final fsync would not report it again);
    /// a file system without `sync_file_range` only leaves the write-back to that fsync.
    #[test]
    fn a_failed_write_back_is_an_error_and_a_missing_call_is_not() {
        use super::classify_write_back;
        for errno in [libc::EIO, libc::ENOSPC, libc::EDQUOT] {
            let e = classify_write_back(std::io::Error::from_raw_os_error(errno));
            assert_eq!(e.map_err(|e| e.raw_os_error()), Err(Some(errno)));
        }
        for errno in [libc::ENOSYS, libc::EINVAL, libc::ESPIPE, libc::EOPNOTSUPP] {
            assert!(classify_write_back(std::io::Error::from_raw_os_error(errno)).is_ok());
        }
    }

    /// A copy leaves only the last few MiB of its file in the page cache, so a copy of any size
    /// holds a few MiB of it, and the final fsync has only those to wait for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_copy_keeps_only_its_last_blocks_in_the_page_cache() {
        let dir = tempfile::tempdir().expect("temp dir");
        // SAFETY: statfs fills the struct it is given.
        let fs_type = unsafe {
            let mut fs = std::mem::zeroed::<libc::statfs>();
            let c_path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes())
                .expect("path without NUL");
            assert_eq!(libc::statfs(c_path.as_ptr(), &mut fs), 0, "statfs");
            fs.f_type
        };
        if fs_type == libc::TMPFS_MAGIC {
            eprintln!("skipped: the temp dir is on tmpfs, where the page cache is the storage");
            return;
        }
        let data: Vec<u8> = (0..48 * MIB as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let path = dir.path().join("copy.part");
        let mut body: crate::ByteReader = Box::pin(std::io::Cursor::new(data.clone()));
        let copied = copy_to_file(&mut body, &path).await.expect("copy");
        assert_eq!(copied, data.len() as u64);
        assert!(
            std::fs::read(&path).expect("read back") == data,
            "bytes differ"
        );
        // Reading it back above cached it all again: copy once more, then look.
        let again = dir.path().join("again.part");
        let mut body: crate::ByteReader = Box::pin(std::io::Cursor::new(data));
        copy_to_file(&mut body, &again).await.expect("copy");
        let cached = cached_bytes(&again);
        assert!(
            cached <= 16 * MIB,
            "{} MiB of the 48 MiB file still in the page cache",
            cached / MIB
        );
    }
}
