//! What every ferry process sets up before anything else: the heap policy, and for a Lambda
//! function its logs and metrics.
//!
//! The heap policy. ferry's copy buffers are large and short-lived (8 MiB S3 parts, 2 MiB read
//! ranges, 10 MiB Graph fragments). With glibc's defaults, freeing such a buffer raises the
//! allocator's mmap threshold (up to 32 MiB), after which buffers of that size are carved from
//! the heap arenas and stay resident once freed: a 1 GiB copy to S3 peaked at 70 MiB RSS with
//! about 40 MiB live. A fixed threshold keeps every allocation of [`LARGE_ALLOCATION`] bytes or
//! more in a mapping of its own, returned to the OS when it is freed (the same 1 GiB copy peaks
//! at 50 MiB). Measured in docs/performance.md.

/// Allocations at least this large get their own mapping (glibc's `M_MMAP_THRESHOLD`).
pub const LARGE_ALLOCATION: usize = 256 * 1024;

/// Fixes the allocator's mmap threshold at [`LARGE_ALLOCATION`] (glibc only; elsewhere a no-op).
/// Call it first in `main`, before threads start allocating.
pub fn bound_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_ALLOCATION as libc::c_int);
    }
}

/// A Lambda function's start: the heap policy, JSON log lines on stdout, and EMF metric lines on
/// stdout (Lambda ships them to CloudWatch Logs, which makes them metrics).
pub fn init_lambda() {
    bound_heap();
    crate::telemetry::init();
    crate::metrics::set_output(crate::metrics::Output::Stdout);
}

#[cfg(test)]
mod tests {
    /// Resident set of this process in KiB.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .expect("VmRSS")
    }

    /// Runs in a child process of its own (other tests allocate meanwhile in this one): frees
    /// 8 MiB buffers from several threads, as a copy does, then holds 64 MiB and frees it.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_copy_buffers_go_back_to_the_os() {
        const MIB: usize = 1 << 20;
        if std::env::var_os("FERRY_HEAP_CHILD").is_none() {
            let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
                .args([
                    "--exact",
                    "process::tests::freed_copy_buffers_go_back_to_the_os",
                    "--nocapture",
                ])
                .env("FERRY_HEAP_CHILD", "1")
                .output()
                .expect("run the child");
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        super::bound_heap();
        let churn = |_| {
            std::thread::spawn(|| {
                for i in 0..8u8 {
                    let buf = vec![i; 8 * MIB];
                    std::hint::black_box(&buf);
                }
            })
        };
        for t in (0..4).map(churn).collect::<Vec<_>>() {
            t.join().expect("thread");
        }
        let before = rss_kib();
        let held: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i + 1; 8 * MIB]).collect();
        std::hint::black_box(&held);
        let peak = rss_kib();
        drop(held);
        let after = rss_kib();
        eprintln!("RSS {before} -> {peak} -> {after} KiB");
        assert!(
            peak >= before + 60 * 1024,
            "64 MiB not resident: {before} -> {peak} KiB"
        );
        assert!(
            after <= before + 4 * 1024,
            "64 MiB freed but RSS stayed at {after} KiB (from {before}, peak {peak})"
        );
    }
}
