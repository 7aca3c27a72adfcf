//! What every ferry process sets up before anything else: the heap policy, and for a Lambda
//! function its tokio runtime (a worker thread per vCPU), logs and metrics.
//!
//! The heap policy, three settings of glibc's allocator, measured in docs/performance.md:
//!
//! - **A fixed mmap threshold.** ferry's copy buffers are large and short-lived (5 MiB S3 parts,
//!   10 MiB Graph fragments). With glibc's defaults, freeing such a buffer raises the allocator's
//!   mmap threshold (up to 32 MiB), after which buffers of that size are carved from the heap and
//!   stay resident once freed: a 1 GiB copy to S3 peaked at 70 MiB RSS with about 40 MiB live.
//!   Fixed at [`LARGE_ALLOCATION`], every allocation that large gets a mapping of its own,
//!   returned to the OS when freed.
//! - **The threshold sits above hyper's read buffers, and there is one arena.** hyper reads each
//!   HTTP response into a buffer that grows to 408 KiB and, while the chunks it handed out still
//!   pin it, allocates a fresh one: about 2,600 of them per GiB read. In mappings of their own
//!   (the threshold was 256 KiB) each was a new mapping the kernel faulted in and zeroed, page by
//!   page: 97 % of a copy's page faults and about 0.9 CPU-s per GiB. Below the threshold they are
//!   reused from the heap. One arena instead of glibc's eight per core keeps the freed ones
//!   shared by every thread rather than cached per thread (with the default arenas the S3 copy's
//!   peak rose to the 64 MiB bound), and up to [`KEPT_FREE`] stays free at the top of the heap
//!   (glibc's default, 128 KiB, gave a freed read buffer back to the OS, only for the next one to
//!   fault it in again).

/// Allocations at least this large get their own mapping (glibc's `M_MMAP_THRESHOLD`): above
/// hyper's largest read buffer (400 KiB + 8 KiB), below ferry's part and fragment buffers.
pub const LARGE_ALLOCATION: usize = 512 * 1024;

/// Free memory at the top of the heap kept for reuse rather than given back (glibc's
/// `M_TRIM_THRESHOLD`): a few read buffers.
pub const KEPT_FREE: usize = 4 * LARGE_ALLOCATION;

/// Fixes the allocator's mmap threshold at [`LARGE_ALLOCATION`], its arenas at one and its trim
/// threshold at [`KEPT_FREE`] (glibc only; elsewhere a no-op). Call it first in `main`, before
/// threads start allocating.
pub fn bound_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_ALLOCATION as libc::c_int);
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEPT_FREE as libc::c_int);
    }
}

/// A Lambda function's logs and metrics: JSON log lines on stdout, and EMF metric lines on stdout
/// (Lambda ships them to CloudWatch Logs, which makes them metrics). Call it first in the future
/// [`function_runtime`] runs.
pub fn init_lambda() {
    crate::telemetry::init();
    crate::metrics::set_output(crate::metrics::Output::Stdout);
}

/// Memory (MB) at which Lambda gives a function the equivalent of one vCPU. Below it the function
/// gets a share of one; above it more, up to six at 10,240 MB.
const MB_PER_VCPU: u64 = 1_769;

/// The most vCPUs Lambda gives a function.
const MAX_VCPUS: u64 = 6;

/// The worker threads a Lambda function of `memory_mb` runs: one per vCPU it is given, at least
/// one. The bench copies with as many, so that its CPU figures are the deployed function's.
pub fn lambda_worker_threads(memory_mb: u64) -> usize {
    memory_mb.div_ceil(MB_PER_VCPU).clamp(1, MAX_VCPUS) as usize
}

/// [`lambda_worker_threads`] for the `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` Lambda sets. `None` when
/// the size is not known (not in Lambda): tokio's default, one per core the machine shows.
fn lambda_workers(memory_mb: Option<&str>) -> Option<usize> {
    Some(lambda_worker_threads(memory_mb?.trim().parse().ok()?))
}

/// A Lambda function's tokio runtime, built after the heap policy ([`bound_heap`]) so that no
/// thread allocates before it. Its worker threads are [`lambda_workers`]: the guest shows two
/// cores whatever the memory size, but below 1,769 MB the function has less than one vCPU, and a
/// second worker only adds hand-offs between threads (measured: 4-15 % of the SFTP copy's CPU,
/// docs/performance.md). `TOKIO_WORKER_THREADS`, when set, wins, as tokio reads it.
pub fn function_runtime() -> tokio::runtime::Runtime {
    bound_heap();
    runtime_in(|name| std::env::var(name).ok())
}

/// [`function_runtime`]'s runtime in an environment read through `var`.
fn runtime_in(var: impl Fn(&str) -> Option<String>) -> tokio::runtime::Runtime {
    let workers = match var("TOKIO_WORKER_THREADS") {
        Some(_) => None,
        None => lambda_workers(var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").as_deref()),
    };
    runtime_with(workers)
}

fn runtime_with(workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder.build().expect("the tokio runtime starts")
}

#[cfg(test)]
mod runtime_tests {
    use super::*;

    #[test]
    fn a_function_gets_a_worker_per_vcpu_lambda_gives_it() {
        let workers = |mb: &str| lambda_workers(Some(mb));
        for (mb, want) in [
            ("128", 1),
            ("512", 1),
            ("1769", 1),
            ("1770", 2),
            ("3008", 2),
            ("5307", 3),
            ("10240", 6),
        ] {
            assert_eq!(workers(mb), Some(want), "{mb} MB");
        }
        assert_eq!(lambda_workers(None), None, "not in Lambda: tokio's default");
        assert_eq!(lambda_workers(Some("lots")), None);
    }

    #[test]
    fn a_function_runtime_runs_the_workers_its_memory_size_gives() {
        let workers = |env: &'static [(&'static str, &'static str)]| {
            runtime_in(|name| {
                env.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            })
            .metrics()
            .num_workers()
        };
        assert_eq!(workers(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")]), 1);
        assert_eq!(workers(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4000")]), 3);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    const MIB: usize = 1 << 20;

    /// Resident set of this process in KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .expect("VmRSS")
    }

    /// Page faults this process has taken that needed no disk (a fresh page zeroed, say).
    fn minor_faults() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage fills the struct it is given.
        let usage = unsafe {
            assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0);
            usage.assume_init()
        };
        usage.ru_minflt
    }

    /// Whether this is the child process that `in_child` started for `test`. The heap policy is
    /// per process and other tests allocate meanwhile, so each heap test runs alone in a child
    /// process: the parent runs it and passes on its output when it fails.
    fn in_child(test: &str) -> bool {
        if std::env::var_os("FERRY_HEAP_CHILD").is_some() {
            return true;
        }
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", test, "--nocapture"])
            .env("FERRY_HEAP_CHILD", "1")
            .output()
            .expect("run the child");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        false
    }

    /// Frees 8 MiB buffers from several threads, as a copy does, then holds 64 MiB and frees it.
    #[test]
    fn freed_copy_buffers_go_back_to_the_os() {
        if !in_child("process::tests::freed_copy_buffers_go_back_to_the_os") {
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

    /// hyper's read buffers, as a copy churns them: 408 KiB each, filled, a few pinned at a time
    /// by the chunks handed out, allocated on one thread and freed on another. Reused from the
    /// heap, they cost no page faults; each in a fresh mapping, every page of every one faults.
    #[test]
    fn read_buffers_are_reused_not_faulted_in_afresh() {
        if !in_child("process::tests::read_buffers_are_reused_not_faulted_in_afresh") {
            return;
        }
        const READ_BUFFER: usize = 408 * 1024;
        const EACH: usize = 100;
        super::bound_heap();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(3);
        let freer = std::thread::spawn(move || rx.into_iter().count());
        let faults = minor_faults();
        for i in 0..EACH * 4 {
            tx.send(vec![i as u8 | 1; READ_BUFFER]).expect("freer");
        }
        drop(tx);
        assert_eq!(freer.join().expect("freer"), EACH * 4);
        let faults = minor_faults() - faults;
        let pages = (EACH * 4 * READ_BUFFER / 4096) as i64;
        eprintln!("{faults} page faults for {pages} pages written");
        assert!(
            faults < pages / 10,
            "{faults} page faults for {pages} pages written: read buffers are not reused"
        );
    }
}
