//! `make bench`: ferry measured against rclone and the raw limits of the local components, on
//! the same machine in the same run. Prints a table and writes docs/benchmarks.md. Numbers, not
//! asserts: these machines are shared and noisy.
//!
//! Sections: copy throughput and peak RSS (Azurite -> S3/SFTP/local dir/Graph) for ferry, rclone,
//! a plain ranged GET and a plain boto3 multipart PUT (S3: moto, and the `s3s` route to s3s-fs, a
//! server about three times faster than moto: tests/bench/s3s.rs; Graph: the stateful fake of
//! tests/support/graph.rs, started inside this process; rclone has no OneDrive target here, so
//! that row is compared with ferry's own S3 and SFTP rows); at 1 GiB and up, the S3, SFTP and
//! local-dir copies again from a blob without a Content-MD5 (no MD5 to check: SHA-256 only);
//! memory across file sizes; cold start of each Lambda bootstrap under an in-repo Runtime API
//! beside a hello-world `lambda_runtime` bootstrap (tests/bench/hello_bootstrap.rs, same
//! profile); webhook ingest latency vs a raw
//! conditional PutObject; the wide-area profile (tests/bench/wan.rs: the S3 and SFTP copies with
//! every server behind a delay proxy, FERRY_BENCH_RTTS (ms, or ms:Mbit/s per connection for a
//! capped link), FERRY_BENCH_WAN_MIB, FERRY_BENCH_WINDOW_KIB,
//! FERRY_BENCH_WAN_ROUTES). Every copy row has the CPU seconds (user + system of the copy process,
//! from the kernel's accounting that `/usr/bin/time` reads with wait4) and CPU s/GiB; rclone runs
//! with its best flags per path (`rclone_flags`); ferry's copies run on as many tokio worker threads
//! as blob-copy gets at its deployed memory (`DeployedCopy`). The `encrypt` route is a 1 GiB-class OpenPGP
//! copy to SFTP, measured for its peak RSS. Env: FERRY_BENCH_SIZES (MiB, default "64,1024"; add 4096 for 4 GiB);
//! FERRY_BENCH_ONLY (sections, default "copy,wan,coldstart,ingest") and FERRY_BENCH_ROUTES (copy
//! routes, default "s3,sftp,local_dir,graph,encrypt") narrow a run while profiling; FERRY_BENCH_CONFIG
//! (a JSON merge patch over ferry's config) and FERRY_BENCH_CURL_RANGES (MiB per curl request) try
//! other settings; a narrowed or patched run writes
//! target/bench/partial.md instead of docs/benchmarks.md. FERRY_BENCH_PROFILE (default "release")
//! picks the cargo profile whose binaries are measured ("profiling" builds in a fraction of the
//! time and keeps symbols for perf); FERRY_BENCH_PERF=1 records ferry's copies with `perf record`
//! into target/bench/perf-<route>-<MiB>.data (perf-<route>-<MiB>-nomd5.data for the copies from
//! a blob without a Content-MD5), and FERRY_BENCH_PERF_ARGS replaces its sampling options (say
//! `-e page-faults -c 50 --call-graph dwarf,8192` to see where fresh memory faults in).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

#[path = "../support/graph.rs"]
#[allow(dead_code)]
mod graph;
mod measure;
mod runtime_api;
mod s3s;
mod wan;

use measure::{Run, profiled, timed};

const MIB: u64 = 1 << 20;

/// The Graph fake's app secret (a bench-only value; ferry reads it from a secret file).
const GRAPH_SECRET: &str = "bench-graph-client-secret";

/// This process's resident set in MiB: the Graph fake lives here, so this shows what it keeps
/// (it hashes the bytes, but wiremock 0.6 clones every request a mounted mock matched).
fn own_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches(" kB").parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Adds one copy result to the report and the console; returns MB/s.
fn row(report: &mut String, mib: u64, path: &str, tool: &str, r: &Run) -> anyhow::Result<f64> {
    record(
        report,
        (&format!("{mib} MiB"), &format!("{mib:>5} MiB")),
        mib,
        path,
        tool,
        r,
    )
}

/// One copy row: `label` is (the report's first column, the console's line head).
fn record(
    report: &mut String,
    label: (&str, &str),
    mib: u64,
    path: &str,
    tool: &str,
    r: &Run,
) -> anyhow::Result<f64> {
    let speed = mbps(mib * MIB, r.secs);
    let per_gib = cpu_per_gib(mib, r);
    writeln!(
        report,
        "| {} | {path} | {tool} | {:.2} | {speed:.1} | {:.2} | {per_gib:.2} | {:.1} |",
        label.0, r.secs, r.cpu_secs, r.rss_mib
    )?;
    println!(
        "{}  {path:<34} {tool:<28} {:>7.2} s {speed:>8.1} MB/s  CPU {:>6.2} s ({per_gib:.2}/GiB)  RSS {:>7.1} MiB",
        label.1, r.secs, r.cpu_secs, r.rss_mib
    );
    Ok(speed)
}

/// CPU seconds (user + system of the copy process, from the OS's accounting) per GiB copied.
fn cpu_per_gib(mib: u64, r: &Run) -> f64 {
    r.cpu_secs / (mib as f64 / 1024.0)
}

/// rclone's flags for a path: its best settings here, not only the defaults. SFTP: 255 KiB
/// writes (the largest OpenSSH takes) with 64 in flight; S3: ferry's 8 MiB parts with 16 in
/// flight; local dir: 8 parallel ranged reads (rclone's multi-thread download, used only
/// for a local target) from 64 MiB; every path: a 32 MiB read-ahead buffer.
fn rclone_flags(route: &str) -> &'static [&'static str] {
    match route {
        "sftp" => &[
            "--sftp-chunk-size",
            "255k",
            "--sftp-concurrency",
            "64",
            "--buffer-size",
            "32M",
        ],
        "s3" | "s3s" => &[
            "--s3-upload-concurrency",
            "16",
            "--s3-chunk-size",
            "8M",
            "--buffer-size",
            "32M",
        ],
        _ => &[
            "--multi-thread-streams",
            "8",
            "--multi-thread-cutoff",
            "64M",
            "--buffer-size",
            "32M",
        ],
    }
}

/// rclone's on-the-fly S3 remote for the bench's credentials at `endpoint`, bucket `rclone`.
fn rclone_s3(endpoint: &str, name: &str) -> String {
    format!(
        ":s3,provider=Other,env_auth=false,access_key_id=bench,secret_access_key=bench,endpoint='{endpoint}',force_path_style=true:rclone/{name}"
    )
}

/// boto3's plain multipart upload of `file` to the S3 server at `endpoint` (bucket `raw`), as a
/// row (the part uploads and the complete step apart); returns its MB/s.
fn raw_multipart(
    root: &Path,
    report: &mut String,
    (mib, file): (u64, &Path),
    endpoint: &str,
    server: &str,
) -> anyhow::Result<f64> {
    let out = Command::new(root.join(".local/venv/bin/python"))
        .arg(root.join("tests/bench/moto_multipart.py"))
        .args([endpoint, "raw"])
        .arg(file)
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    let secs = v["total_s"].as_f64().unwrap_or(f64::NAN);
    let speed = mbps(mib * MIB, secs);
    writeln!(
        report,
        "| {mib} MiB | local file -> {server} | boto3 multipart PUT (limit): parts {:.2} s + complete {:.2} s | {secs:.2} | {speed:.1} | - | - | - |",
        v["parts_s"].as_f64().unwrap_or(0.0),
        v["complete_s"].as_f64().unwrap_or(0.0),
    )?;
    println!(
        "{mib:>5} MiB  local -> {server:<14} boto3 multipart: parts {} s, complete {} s, {speed:.1} MB/s",
        v["parts_s"], v["complete_s"],
    );
    Ok(speed)
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

fn write_file(path: &Path, mib: u64) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ mib;
    let mut buf = vec![0u8; MIB as usize];
    for _ in 0..mib {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf)?;
    }
    Ok(f.flush()?)
}

struct Env {
    root: PathBuf,
    work: PathBuf,
    c: ferry_harness::Components,
    sas: String,
    config_path: PathBuf,
    config: Value,
    /// A client of the benchmark's moto, for the raw calls and clean-up.
    s3: aws_sdk_s3::Client,
    /// The second S3 server (s3s-fs) and a client of it, when installed: the `s3s` route.
    s3s: Option<(s3s::S3sFs, aws_sdk_s3::Client)>,
    /// blob-copy's memory as deployed, and the tokio worker threads ferry's copies run with:
    /// as many as blob-copy runs at that memory, so that CPU per GiB is the deployed function's.
    deployed: DeployedCopy,
}

/// What blob-copy is given when deployed: its memory (MB, the default in infra/examples) and
/// the worker threads that memory gives it (`process::lambda_worker_threads`).
#[derive(Clone, Copy)]
struct DeployedCopy {
    memory_mb: u64,
    workers: usize,
}

impl DeployedCopy {
    /// Read from the Terraform the project deploys.
    fn read(root: &Path) -> anyhow::Result<Self> {
        let path = root.join("infra/examples/complete/variables.tf");
        let tf = std::fs::read_to_string(&path)?;
        let memory_mb = tf_default(&tf, "blob_copy_memory_size").with_context(|| {
            format!("no default for blob_copy_memory_size in {}", path.display())
        })?;
        Ok(Self {
            memory_mb,
            workers: ferry_shared::process::lambda_worker_threads(memory_mb),
        })
    }
}

/// The number a Terraform `variable "NAME"` block gives as its `default`.
fn tf_default(tf: &str, name: &str) -> Option<u64> {
    let block = tf.split(&format!("variable \"{name}\"")).nth(1)?;
    let block = block.split("\nvariable ").next()?;
    block.lines().find_map(|line| {
        let value = line
            .trim()
            .strip_prefix("default")?
            .trim()
            .strip_prefix('=')?;
        value.trim().parse().ok()
    })
}

impl Env {
    fn ferry(&self) -> PathBuf {
        self.bin("ferry")
    }

    /// `ferry run-job` of `job_key` with `config` on the deployed blob-copy's worker threads,
    /// timed, and recorded by perf into target/bench/perf-<profile>.data when FERRY_BENCH_PERF is
    /// set.
    fn run_job(&self, config: &Path, job_key: &str, profile: &str) -> anyhow::Result<measure::Run> {
        let mut cmd = profiled(
            &self.ferry(),
            &self.work.join(format!("perf-{profile}.data")),
        );
        cmd.env("TOKIO_WORKER_THREADS", self.deployed.workers.to_string());
        timed(cmd.args(["run-job", "--config"]).arg(config).arg(job_key))
    }

    /// A binary of the measured build profile.
    fn bin(&self, name: &str) -> PathBuf {
        bin_dir(&self.root).join(name)
    }

    async fn webhook(&self, file: &str) -> anyhow::Result<Vec<(String, String)>> {
        let services = ferry_shared::services::Services::new(
            ferry_shared::config::Config::from_json(&self.config.to_string())?,
        )
        .await;
        let answer = services
            .webhook()
            .await?
            .handle(ferry_shared::webhook::WebhookRequest {
                method: http::Method::POST,
                query: None,
                headers: [
                    (http::header::CONTENT_TYPE, "application/json".parse()?),
                    ("x-ferry-token".parse()?, "bench-token".parse()?),
                ]
                .into_iter()
                .collect(),
                body: json!({"container": "bench", "file": file})
                    .to_string()
                    .into(),
                correlation_id: "bench".into(),
            })
            .await;
        Ok(answer.body["jobs"]
            .as_array()
            .context("no jobs")?
            .iter()
            .map(|j| {
                (
                    j["route"].as_str().unwrap_or("").to_string(),
                    j["job_key"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect())
    }

    /// Deletes `key` from the buckets the S3 copies of `route` wrote to (frees moto's memory
    /// and s3s-fs's disk before the next copy).
    async fn clean_s3(&self, route: &str, key: &str) {
        let client = match route {
            "s3" => &self.s3,
            "s3s" => match &self.s3s {
                Some((_, c)) => c,
                None => return,
            },
            _ => return,
        };
        for bucket in ["archive", "rclone"] {
            let _ = client.delete_object().bucket(bucket).key(key).send().await;
        }
    }

    fn rclone(&self, source: &str, dest: &str, route: &str) -> anyhow::Result<Run> {
        self.rclone_from(&self.c.azurite.account_url, source, dest, route)
    }

    /// rclone from the Azurite at `account_url` (the proxied one for the wide-area runs).
    fn rclone_from(
        &self,
        account_url: &str,
        source: &str,
        dest: &str,
        route: &str,
    ) -> anyhow::Result<Run> {
        let azure = format!(
            ":azureblob,sas_url='{account_url}/bench?{}':bench/{source}",
            self.sas
        );
        let mut cmd = Command::new("rclone");
        cmd.env_remove("AWS_CA_BUNDLE")
            .args([
                "copyto",
                "--s3-no-head",
                "--retries",
                "1",
                "--config",
                "/dev/null",
            ])
            .args(rclone_flags(route))
            .arg(azure)
            .arg(dest);
        timed(&mut cmd)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // SAFETY: before any other thread reads the environment.
    unsafe {
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "bench"),
            ("AWS_SECRET_ACCESS_KEY", "bench"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("RUST_LOG", "warn"),
        ] {
            std::env::set_var(k, v);
        }
    }
    let root = ferry_harness::repo_root();
    let deployed = DeployedCopy::read(&root)?;
    let only = |var: &str, default: &str| -> Vec<String> {
        std::env::var(var)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .map(|s| s.trim().to_string())
            .collect()
    };
    let sections = only("FERRY_BENCH_ONLY", ALL_SECTIONS);
    // The copy and ingest sections run only `ferry`; the Lambda bootstraps only for cold start.
    let mut needed = vec!["ferry"];
    if sections.iter().any(|s| s == "coldstart") {
        needed.extend(FUNCTIONS);
        needed.push("examples/hello_bootstrap");
    }
    for bin in needed {
        if !bin_dir(&root).join(bin).exists() {
            bail!(
                "build the binaries first: cargo build --profile {p} --workspace --bins && cargo build --profile {p} --example hello_bootstrap",
                p = profile()
            );
        }
    }
    ferry_harness::ensure_installed()?;
    let sizes: Vec<u64> = std::env::var("FERRY_BENCH_SIZES")
        .unwrap_or_else(|_| "64,1024".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let routes = only("FERRY_BENCH_ROUTES", ALL_ROUTES);
    let narrowed = sections.join(",") != ALL_SECTIONS
        || routes.join(",") != ALL_ROUTES
        || std::env::var_os("FERRY_BENCH_CONFIG").is_some();
    let c = ferry_harness::Components::start()?;
    let work = root.join("target/bench");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let admin = c.azurite.admin();
    admin.create_container("bench").await?;
    admin
        .set_access_policy(
            "bench",
            "read",
            "rl",
            SystemTime::now() + Duration::from_secs(7200),
        )
        .await?;
    let sas = admin.container_sas_for_policy("bench", "read");
    for b in ["state", "archive", "rclone", "raw"] {
        c.moto.create_bucket(b).await?;
    }
    let s3s_server = s3s::S3sFs::start(&root, &work.join("s3s"), &["archive", "rclone", "raw"])?;
    let secret = |name: &str, value: &str| -> anyhow::Result<PathBuf> {
        let p = work.join(name);
        std::fs::write(&p, value)?;
        Ok(p)
    };
    let sftp_dir = c.sshd.root.join("bench");
    std::fs::create_dir_all(&sftp_dir)?;
    // Graph has no emulator: the tests' stateful fake (stores only sizes and hashes), with the
    // production fragment size and timeout rather than the tests' small ones.
    let graph_fake = graph::GraphFake::start("ferry-bench", GRAPH_SECRET).await;
    let mut graph_dest = graph_fake.config(
        json!({"file": secret("graph-secret", GRAPH_SECRET)?}),
        "bench",
    );
    for knob in ["fragment_size_mib", "timeout_secs"] {
        graph_dest
            .as_object_mut()
            .context("graph config")?
            .remove(knob);
    }
    let mut config = json!({
        "state": {"bucket": "state", "endpoint": {"endpoint_url": c.moto.endpoint, "force_path_style": true}},
        "webhook": {"token": {"file": secret("token", "bench-token")?}},
        "sources": {"azurite": {"type": "azure_blob", "account_url": c.azurite.account_url, "sas": {"file": secret("sas", &sas)?}}},
        "destinations": {
            "local_dir": {"type": "local_dir", "path": work.join("ferry-out")},
            "s3": {"type": "s3", "bucket": "archive", "endpoint": {"endpoint_url": c.moto.endpoint, "force_path_style": true}},
            "sftp": {"type": "sftp", "host": "127.0.0.1", "port": c.sshd.port, "username": c.sshd.user, "host_key": c.sshd.host_key,
                     "private_key": {"file": secret("key", &c.sshd.client_key_pem)?}, "directory": sftp_dir},
            "graph": graph_dest
        },
        "routes": [
            {"name": "s3", "source": "azurite", "container": "bench", "destinations": ["s3"]},
            {"name": "sftp", "source": "azurite", "container": "bench", "destinations": ["sftp"]},
            {"name": "local_dir", "source": "azurite", "container": "bench", "destinations": ["local_dir"]},
            {"name": "graph", "source": "azurite", "container": "bench", "destinations": ["graph"]},
            {"name": "encrypt", "source": "azurite", "container": "bench", "destinations": ["sftp"],
             "encrypt": {"recipients": [{"armored": bench_recipient(&work)?}]}}
        ]
    });
    if let Some(server) = &s3s_server {
        config["destinations"]["s3s"] = json!({"type": "s3", "bucket": "archive", "endpoint": {"endpoint_url": server.endpoint, "force_path_style": true}});
        config["routes"]
            .as_array_mut()
            .context("routes")?
            .insert(1, json!({"name": "s3s", "source": "azurite", "container": "bench", "destinations": ["s3s"]}));
    }
    // FERRY_BENCH_CONFIG: a JSON merge patch over this config (RFC 7396), to measure other
    // settings without editing the bench, e.g. `{"sources": {"azurite": {"read_ahead_mib": 1}}}`.
    if let Ok(patch) = std::env::var("FERRY_BENCH_CONFIG") {
        merge(
            &mut config,
            &serde_json::from_str(&patch).context("FERRY_BENCH_CONFIG is not JSON")?,
        );
    }
    let config_path = secret("ferry.json", &config.to_string())?;
    let s3 = ferry_shared::s3::client(&ferry_shared::config::S3Endpoint {
        region: None,
        endpoint_url: Some(c.moto.endpoint.clone()),
        force_path_style: true,
    })
    .await;
    let mut s3s = None;
    if let Some(server) = s3s_server {
        let client = ferry_shared::s3::client(&ferry_shared::config::S3Endpoint {
            region: None,
            endpoint_url: Some(server.endpoint.clone()),
            force_path_style: true,
        })
        .await;
        s3s = Some((server, client));
    }
    let env = Env {
        root: root.clone(),
        work: work.clone(),
        c,
        sas,
        config_path,
        config,
        s3,
        s3s,
        deployed,
    };
    let s3 = &env.s3;

    let mut report = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|l| l.strip_prefix("model name\t: ").map(str::to_string))
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:").map(|v| {
                v.trim()
                    .trim_end_matches(" kB")
                    .parse::<f64>()
                    .unwrap_or(0.0)
                    / 1048576.0
            })
        })
        .unwrap_or(0.0);
    let rclone_version = Command::new("rclone")
        .arg("version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    writeln!(report, "# ferry benchmarks\n")?;
    writeln!(
        report,
        "Run: {} UTC by `make bench` (tests/bench/bench.rs). Machine: {} cores ({cpu}), {mem_gib:.0} GiB RAM, shared and noisy. All servers on loopback: Azurite (Node), moto (single-core Python), OpenSSH sshd, and for the `s3s` rows {} (an S3 server in Rust that keeps objects as files, about three times moto's pace: S3 copies measured where moto is not the bound). Reference tool: {rclone_version}. ferry: {} build; its copies run with {} tokio worker thread{}, as blob-copy does at its deployed {} MB (one per vCPU Lambda gives). What bounds each path, with profiles: [performance.md](performance.md).\n",
        ferry_shared::job::now_rfc3339(),
        std::thread::available_parallelism()?.get(),
        env.s3s
            .as_ref()
            .map_or("(not installed: no such rows)", |(server, _)| server
                .version
                .as_str()),
        profile(),
        env.deployed.workers,
        if env.deployed.workers == 1 { "" } else { "s" },
        env.deployed.memory_mb,
    )?;

    // ---- copy throughput and memory
    writeln!(report, "## Copy throughput and peak RSS\n")?;
    writeln!(
        report,
        "| size | path | tool | seconds | MB/s | CPU seconds | CPU s/GiB | peak RSS MiB |\n|---|---|---|---|---|---|---|---|"
    )?;
    let mut summary = Vec::new();
    let copy_sizes: &[u64] = if sections.iter().any(|s| s == "copy") {
        &sizes
    } else {
        &[]
    };
    for &mib in copy_sizes {
        let bytes = mib * MIB;
        let name = format!("export-{mib}.bin");
        let local = work.join(&name);
        write_file(&local, mib)?;
        let t = Instant::now();
        admin.put_blob_from_file("bench", &name, &local).await?;
        eprintln!(
            "uploaded {mib} MiB to Azurite in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        // Raw limits.
        let url = format!("{}/bench/{name}?{}", env.c.azurite.account_url, env.sas);
        let get = timed(
            Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "-H", "Range: bytes=0-"])
                .arg(&url),
        )?;
        let raw_get = row(
            &mut report,
            mib,
            "Azurite -> /dev/null",
            "curl ranged GET (limit)",
            &get,
        )?;
        // Readers with several streams (ferry, rclone to a local dir) can beat one request: the
        // read limit is what Azurite serves to 4 ranged GETs at once, each a quarter of the blob.
        std::fs::write(
            work.join("curl-parallel.cfg"),
            curl_ranges(&url, bytes, bytes.div_ceil(4)),
        )?;
        let parallel_get = timed(
            Command::new("curl")
                .args(["-sf", "--parallel", "--parallel-max", "4", "-K"])
                .arg(work.join("curl-parallel.cfg")),
        )?;
        let raw_parallel_get = row(
            &mut report,
            mib,
            "Azurite -> /dev/null",
            "curl, 4 ranged GETs at once (limit)",
            &parallel_get,
        )?;
        let read_limit = raw_get.max(raw_parallel_get);
        // What this sshd takes from OpenSSH's own client (one channel, 64 requests of 32 KiB in
        // flight), the file read from the page cache: a reference for the write side of the SFTP
        // path, not a limit (a client with several channels can go faster).
        std::fs::write(
            work.join("sftp.batch"),
            format!(
                "put {} {}/raw-{name}\n",
                local.display(),
                sftp_dir.display()
            ),
        )?;
        let sftp_put = timed(
            Command::new("sftp")
                .args(["-q", "-b"])
                .arg(work.join("sftp.batch"))
                .arg("-i")
                .arg(&env.c.sshd.client_key_path)
                .args(["-P", &env.c.sshd.port.to_string()])
                .args([
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                ])
                .arg(format!("{}@127.0.0.1", env.c.sshd.user)),
        )?;
        let _ = std::fs::remove_file(sftp_dir.join(format!("raw-{name}")));
        row(
            &mut report,
            mib,
            "local file -> sftp",
            "OpenSSH sftp put (reference: one channel)",
            &sftp_put,
        )?;
        // What the disk takes for a durable write of the same bytes (the file from the page
        // cache, written in 4 MiB blocks, then one fsync): ferry syncs a local-dir file before
        // it renames it into place and writes the receipt; rclone does not.
        let durable_path = work.join("ferry-out").join(format!("raw-{name}"));
        std::fs::create_dir_all(work.join("ferry-out"))?;
        let durable = timed(
            Command::new("dd")
                .arg(format!("if={}", local.display()))
                .arg(format!("of={}", durable_path.display()))
                .args(["bs=4M", "conv=fsync", "status=none"]),
        )?;
        let _ = std::fs::remove_file(&durable_path);
        let durable_write = row(
            &mut report,
            mib,
            "local file -> local dir",
            "dd, then fsync (limit: durable write)",
            &durable,
        )?;
        // FERRY_BENCH_CURL_RANGES=<MiB>: also read the blob as ranges of that size, one request
        // after the other (what each ranged request costs the server).
        if let Ok(r) = std::env::var("FERRY_BENCH_CURL_RANGES") {
            let r: u64 = r.parse()?;
            std::fs::write(work.join("curl.cfg"), curl_ranges(&url, bytes, r * MIB))?;
            let g = timed(
                Command::new("curl")
                    .args(["-sf", "-K"])
                    .arg(work.join("curl.cfg")),
            )?;
            row(
                &mut report,
                mib,
                "Azurite -> /dev/null",
                &format!("curl {r} MiB ranges, one by one"),
                &g,
            )?;
        }
        // The S3 servers' own limits: boto3's multipart upload of the file, to moto and to
        // s3s-fs (the `s3s` rows' server).
        let mut raw_put = None;
        let mut raw_put_s3s = None;
        if mib == 1024 {
            raw_put = Some(raw_multipart(
                &env.root,
                &mut report,
                (mib, &local),
                &env.c.moto.endpoint,
                "moto",
            )?);
            if let Some((server, _)) = &env.s3s {
                raw_put_s3s = Some(raw_multipart(
                    &env.root,
                    &mut report,
                    (mib, &local),
                    &server.endpoint,
                    "s3s-fs",
                )?);
            }
        }
        std::fs::remove_file(&local)?;
        let raw_key = format!("raw/{name}");
        let _ = s3.delete_object().bucket("raw").key(&raw_key).send().await;
        if let Some((_, client)) = &env.s3s {
            let _ = client
                .delete_object()
                .bucket("raw")
                .key(&raw_key)
                .send()
                .await;
        }
        let jobs = env.webhook(&name).await?;
        // ferry's own (MB/s, RSS MiB) per route at this size: the Graph row's comparison.
        let mut ferry_rows: std::collections::HashMap<String, (f64, f64)> = Default::default();
        // rclone's CPU s/GiB per route at this size: the no-MD5 rows' comparison.
        let mut rclone_cpu: std::collections::HashMap<String, f64> = Default::default();
        for (route, job_key) in jobs.iter().filter(|(r, _)| routes.contains(r)) {
            let fake_rss_before = own_rss_mib();
            let r = env.run_job(&env.config_path, job_key, &format!("{route}-{mib}"))?;
            let path = format!("Azurite -> {route}");
            let ferry_speed = row(&mut report, mib, &path, "ferry", &r)?;
            ferry_rows.insert(route.clone(), (ferry_speed, r.rss_mib));
            if route == "encrypt" {
                summary.push(format!(
                    "{mib} MiB {path} (OpenPGP to one recipient, then SFTP): {ferry_speed:.1} MB/s, CPU s/GiB {:.2}, peak RSS {:.1} MiB",
                    cpu_per_gib(mib, &r),
                    r.rss_mib
                ));
                writeln!(
                    report,
                    "| {mib} MiB | {path} | rclone: none (rclone crypt is not OpenPGP) | - | - | - | - | - |"
                )?;
                let _ = std::fs::remove_file(sftp_dir.join(format!("{name}.pgp")));
                continue;
            }
            if route == "graph" {
                summary.push(graph_summary(
                    &graph_fake,
                    &name,
                    bytes,
                    (ferry_speed, r.rss_mib),
                    &ferry_rows,
                    (fake_rss_before, own_rss_mib()),
                )?);
                writeln!(
                    report,
                    "| {mib} MiB | {path} | rclone: none (no OneDrive target here; compare ferry's S3 and SFTP rows) | - | - | - | - | - |"
                )?;
                continue;
            }
            let dest = match route.as_str() {
                "s3" => rclone_s3(&env.c.moto.endpoint, &name),
                "s3s" => rclone_s3(&env.s3s.as_ref().context("s3s-fs")?.0.endpoint, &name),
                "sftp" => format!(
                    ":sftp,host=127.0.0.1,port={},user={},key_file='{}':{}/rclone-{name}",
                    env.c.sshd.port,
                    env.c.sshd.user,
                    env.c.sshd.client_key_path.display(),
                    sftp_dir.display()
                ),
                _ => env
                    .work
                    .join("rclone-out")
                    .join(&name)
                    .display()
                    .to_string(),
            };
            match env.rclone(&name, &dest, route) {
                Ok(rc) => {
                    let rclone_speed = row(&mut report, mib, &path, "rclone copyto", &rc)?;
                    rclone_cpu.insert(route.clone(), cpu_per_gib(mib, &rc));
                    let limit = match route.as_str() {
                        "s3" => raw_put.map_or(read_limit, |p| p.min(read_limit)),
                        "s3s" => raw_put_s3s.map_or(read_limit, |p| p.min(read_limit)),
                        "local_dir" => durable_write.min(read_limit),
                        _ => read_limit,
                    };
                    summary.push(format!("{mib} MiB {path}: ferry/rclone {:.2}x, ferry/limit {:.2}x; CPU s/GiB ferry {:.2} vs rclone {:.2} ({:.2}x); RSS ferry {:.1} MiB vs rclone {:.1} MiB", ferry_speed / rclone_speed, ferry_speed / limit, cpu_per_gib(mib, &r), cpu_per_gib(mib, &rc), r.cpu_secs / rc.cpu_secs, r.rss_mib, rc.rss_mib));
                }
                Err(e) => {
                    // Keep the reason, never the SAS: the first line rclone printed, redacted.
                    let text = e.to_string();
                    let reason = text
                        .lines()
                        .find(|l| l.contains("Failed") || l.contains("ERROR"))
                        .unwrap_or("see the console");
                    summary.push(format!(
                        "{mib} MiB {path}: rclone failed: {}",
                        ferry_shared::redact::scrub(reason, &[&env.sas])
                    ));
                }
            }
            // Free the disk (and moto's memory) before the next copy: a 4 GiB run keeps ~8 copies.
            let _ = std::fs::remove_file(env.work.join("ferry-out").join(&name));
            let _ = std::fs::remove_file(env.work.join("rclone-out").join(&name));
            let _ = std::fs::remove_file(sftp_dir.join(&name));
            let _ = std::fs::remove_file(sftp_dir.join(format!("rclone-{name}")));
            env.clean_s3(route, &name).await;
        }
        if mib >= 1024 {
            // The same bytes in a blob without a Content-MD5, as many tools upload large files:
            // with no MD5 to check against ferry computes none and hashes SHA-256 only.
            let bare = format!("export-nomd5-{mib}.bin");
            let local = work.join(&bare);
            write_file(&local, mib)?;
            admin
                .put_blob_from_file_opts("bench", &bare, &local, false)
                .await?;
            std::fs::remove_file(&local)?;
            let jobs = env.webhook(&bare).await?;
            let plain = ["s3", "sftp", "local_dir"];
            for (route, job_key) in jobs
                .iter()
                .filter(|(r, _)| routes.contains(r) && plain.contains(&r.as_str()))
            {
                let r = env.run_job(&env.config_path, job_key, &format!("{route}-{mib}-nomd5"))?;
                let path = format!("Azurite -> {route}");
                row(
                    &mut report,
                    mib,
                    &path,
                    "ferry, blob without Content-MD5",
                    &r,
                )?;
                if let Some(rc) = rclone_cpu.get(route) {
                    summary.push(format!(
                        "{mib} MiB {path}, blob without Content-MD5 (no MD5 to check, SHA-256 only): CPU s/GiB ferry {:.2} vs rclone {rc:.2} ({:.2}x)",
                        cpu_per_gib(mib, &r),
                        cpu_per_gib(mib, &r) / rc
                    ));
                }
                let _ = std::fs::remove_file(env.work.join("ferry-out").join(&bare));
                let _ = std::fs::remove_file(sftp_dir.join(&bare));
                let _ = s3.delete_object().bucket("archive").key(&bare).send().await;
            }
            admin.delete_blob("bench", &bare).await?;
        }
        if mib > 64 {
            // The 64 MiB blob stays: the cold-start event names it.
            admin.delete_blob("bench", &name).await?;
        }
    }
    writeln!(
        report,
        "\nRatios (limit = the slower raw side: reading, the faster of one ranged GET and 4 at once; writing, for S3 the boto3 multipart PUT where measured, for a local dir dd with an fsync; SFTP is bounded by the read here):\n"
    )?;
    for s in &summary {
        writeln!(report, "- {s}")?;
        println!("{s}");
    }

    if sections.iter().any(|s| s == "wan") {
        wide_area(&env, &mut report, &sftp_dir).await?;
    }
    if sections.iter().any(|s| s == "coldstart") {
        cold_start(&env, &mut report).await?;
    }
    if sections.iter().any(|s| s == "ingest") {
        ingest(&env, &mut report).await?;
    }
    let out = if narrowed {
        env.work.join("partial.md")
    } else {
        root.join("docs/benchmarks.md")
    };
    std::fs::write(&out, &report)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// A throwaway OpenPGP recipient for the `encrypt` route (its secret key is never kept).
fn bench_recipient(work: &Path) -> anyhow::Result<String> {
    let home = work.join("gnupg");
    std::fs::create_dir_all(&home)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
    let gpg = |args: &[&str]| -> anyhow::Result<Vec<u8>> {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(&home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    };
    gpg(&[
        "--quick-gen-key",
        "bench <bench@ferry.invalid>",
        "default",
        "default",
        "1d",
    ])?;
    let armored = String::from_utf8(gpg(&["--armor", "--export", "bench@ferry.invalid"])?)?;
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(&home)
        .args(["--kill", "gpg-agent"])
        .status();
    Ok(armored)
}

/// The wide-area profile: the same 1 GiB copies (FERRY_BENCH_WAN_MIB) with every server
/// (Azurite, sshd, moto as the S3 destination) behind a delay proxy at each link of
/// FERRY_BENCH_RTTS (default "20,60,20:400": RTT in ms, optionally with a bandwidth cap in
/// Mbit/s per connection and direction), a 4 MiB window per connection and direction
/// (FERRY_BENCH_WINDOW_KIB). The state bucket stays on loopback (in production it is in the
/// function's own region).
async fn wide_area(env: &Env, report: &mut String, sftp_dir: &Path) -> anyhow::Result<()> {
    let mib: u64 = std::env::var("FERRY_BENCH_WAN_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let window = std::env::var("FERRY_BENCH_WINDOW_KIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(4096)
        * 1024;
    let links: Vec<(u64, Option<u64>)> = std::env::var("FERRY_BENCH_RTTS")
        .unwrap_or_else(|_| "20,60,20:400".into())
        .split(',')
        .map(|s| match s.trim().split_once(':') {
            Some((rtt, mbit)) => Ok((rtt.parse()?, Some(mbit.parse()?))),
            None => Ok((s.trim().parse()?, None)),
        })
        .collect::<Result<_, std::num::ParseIntError>>()?;
    let routes: Vec<String> = std::env::var("FERRY_BENCH_WAN_ROUTES")
        .unwrap_or_else(|_| "sftp,s3,s3s".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    writeln!(
        report,
        "\n## Wide-area profile ({mib} MiB; every server behind a delay proxy: fixed one-way delay per chunk, pipelining kept, {} KiB in flight per connection and direction; where a row names a cap, each connection also gets at most that bandwidth per direction)\n",
        window / 1024
    )?;
    writeln!(
        report,
        "| RTT ms (measured), cap | path | tool | seconds | MB/s | CPU seconds | CPU s/GiB | peak RSS MiB |\n|---|---|---|---|---|---|---|---|"
    )?;
    let name = format!("export-wan-{mib}.bin");
    let local = env.work.join(&name);
    write_file(&local, mib)?;
    let admin = env.c.azurite.admin();
    admin.put_blob_from_file("bench", &name, &local).await?;
    std::fs::remove_file(&local)?;
    let jobs = env.webhook(&name).await?;
    let mut summary = Vec::new();
    for (rtt, mbit) in links {
        let link = wan::Link {
            rtt: Duration::from_millis(rtt),
            window,
            rate: mbit.map(|m| m * 1_000_000 / 8),
        };
        let (cap, tag) = match mbit {
            Some(m) => (format!(", {m} Mbit/s per connection"), format!("{rtt}x{m}")),
            None => (String::new(), rtt.to_string()),
        };
        let measured = wan::measured_rtt_ms(link).await?;
        let azurite = wan::DelayProxy::start(env.c.azurite.port, link)?;
        let sshd = wan::DelayProxy::start(env.c.sshd.port, link)?;
        let moto = wan::DelayProxy::start(env.c.moto.port, link)?;
        let s3s = match &env.s3s {
            Some((server, _)) => Some((server, wan::DelayProxy::start(server.port, link)?)),
            None => None,
        };
        let proxied =
            |url: &str, from: u16, to: u16| url.replace(&format!(":{from}"), &format!(":{to}"));
        let account_url = proxied(&env.c.azurite.account_url, env.c.azurite.port, azurite.port);
        let moto_url = proxied(&env.c.moto.endpoint, env.c.moto.port, moto.port);
        let mut config = env.config.clone();
        config["sources"]["azurite"]["account_url"] = json!(account_url);
        config["destinations"]["sftp"]["port"] = json!(sshd.port);
        config["destinations"]["s3"]["endpoint"]["endpoint_url"] = json!(moto_url);
        let s3s_url = s3s
            .as_ref()
            .map(|(server, proxy)| proxied(&server.endpoint, server.port, proxy.port));
        if let Some(url) = &s3s_url {
            config["destinations"]["s3s"]["endpoint"]["endpoint_url"] = json!(url);
        }
        let config_path = env.work.join(format!("ferry-wan-{tag}.json"));
        std::fs::write(&config_path, config.to_string())?;
        for (route, job_key) in jobs.iter().filter(|(r, _)| routes.contains(r)) {
            // The same job runs at every RTT: forget the previous run's receipt, or run-job
            // would find the file delivered and do nothing.
            let job_id = job_key
                .rsplit('/')
                .next()
                .and_then(|f| f.strip_suffix(".json"))
                .context("job key")?;
            for key in [
                ferry_shared::layout::receipt_key(job_id, route),
                ferry_shared::layout::failure_key(job_id),
            ] {
                let _ = env.s3.delete_object().bucket("state").key(key).send().await;
            }
            let path = format!("Azurite -> {route}");
            let label = format!("{rtt} ({measured:.1}){cap}");
            let r = env.run_job(&config_path, job_key, &format!("wan{tag}-{route}-{mib}"))?;
            let console = format!("WAN {label:>12}");
            let ferry_speed = record(report, (&label, &console), mib, &path, "ferry", &r)?;
            let dest = match route.as_str() {
                "s3" => rclone_s3(&moto_url, &name),
                "s3s" => rclone_s3(s3s_url.as_deref().context("s3s-fs")?, &name),
                _ => format!(
                    ":sftp,host=127.0.0.1,port={},user={},key_file='{}':{}/rclone-{name}",
                    sshd.port,
                    env.c.sshd.user,
                    env.c.sshd.client_key_path.display(),
                    sftp_dir.display()
                ),
            };
            match env.rclone_from(&account_url, &name, &dest, route) {
                Ok(rc) => {
                    let rclone_speed =
                        record(report, (&label, &console), mib, &path, "rclone copyto", &rc)?;
                    summary.push(format!(
                        "{mib} MiB {path} at {rtt} ms RTT{cap}: ferry/rclone {:.2}x; CPU s/GiB ferry {:.2} vs rclone {:.2} ({:.2}x); RSS ferry {:.1} MiB vs rclone {:.1} MiB",
                        ferry_speed / rclone_speed,
                        cpu_per_gib(mib, &r),
                        cpu_per_gib(mib, &rc),
                        r.cpu_secs / rc.cpu_secs,
                        r.rss_mib,
                        rc.rss_mib
                    ));
                }
                Err(e) => summary.push(format!(
                    "{mib} MiB {path} at {rtt} ms RTT{cap}: rclone failed: {}",
                    ferry_shared::redact::scrub(
                        e.to_string()
                            .lines()
                            .find(|l| l.contains("ERROR"))
                            .unwrap_or("see the console"),
                        &[&env.sas]
                    )
                )),
            }
            let _ = std::fs::remove_file(sftp_dir.join(&name));
            let _ = std::fs::remove_file(sftp_dir.join(format!("rclone-{name}")));
            env.clean_s3(route, &name).await;
        }
    }
    admin.delete_blob("bench", &name).await?;
    writeln!(report, "\nRatios (wide area):\n")?;
    for s in &summary {
        writeln!(report, "- {s}")?;
        println!("{s}");
    }
    Ok(())
}

fn profile() -> String {
    std::env::var("FERRY_BENCH_PROFILE").unwrap_or_else(|_| "release".into())
}

fn bin_dir(root: &Path) -> PathBuf {
    root.join("target").join(profile())
}

/// The Lambda functions' bootstraps, timed in the cold-start section.
const FUNCTIONS: [&str; 6] = [
    "webhook-ingest",
    "blob-copy",
    "export-pull",
    "token-refresh",
    "view-sync",
    "reconcile",
];

const ALL_SECTIONS: &str = "copy,wan,coldstart,ingest";

/// RFC 7396 merge patch: objects merge key by key, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("an object");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

const ALL_ROUTES: &str = "s3,s3s,sftp,local_dir,graph,encrypt";

/// The Graph row's summary line: checks the fake holds the whole file and no protocol violation
/// (fails the bench otherwise), then compares ferry's Graph copy with ferry's own S3 and SFTP
/// copies of the same size, and shows how this process's RSS (the fake's home) moved meanwhile.
fn graph_summary(
    fake: &graph::GraphFake,
    name: &str,
    bytes: u64,
    (speed, rss): (f64, f64),
    ferry_rows: &std::collections::HashMap<String, (f64, f64)>,
    (fake_before, fake_after): (f64, f64),
) -> anyhow::Result<String> {
    let stored = fake.stored(&format!("bench/{name}"));
    if stored.as_ref().map(|s| s.0) != Some(bytes) {
        bail!("the Graph fake holds {stored:?} for {name}, not {bytes} bytes");
    }
    let violations = fake.violations();
    if !violations.is_empty() {
        bail!("ferry broke Graph protocol rules: {violations:?}");
    }
    let mut line = format!(
        "{} MiB Azurite -> graph: no reference tool (rclone has no OneDrive target here); ferry {speed:.1} MB/s, {rss:.1} MiB RSS",
        bytes / MIB
    );
    for other in ["s3", "sftp"] {
        if let Some((s, r)) = ferry_rows.get(other) {
            write!(
                line,
                "; vs ferry -> {other}: {:.2}x the speed, {r:.1} MiB RSS",
                speed / s
            )?;
        }
    }
    write!(
        line,
        "; the in-process fake ({} fragments received; it hashes them, but wiremock keeps every matched request) moved the bench's own RSS {fake_before:.1} -> {fake_after:.1} MiB",
        fake.count("fragment")
    )?;
    Ok(line)
}

async fn cold_start(env: &Env, report: &mut String) -> anyhow::Result<()> {
    writeln!(
        report,
        "\n## Cold start ({} bootstraps under an in-repo Lambda Runtime API, beside a hello-world `lambda_runtime` bootstrap of the same profile: tests/bench/hello_bootstrap.rs)\n",
        profile()
    )?;
    writeln!(
        report,
        "| function | binary size MiB | exec -> first GET /next (median of 7) ms | vs hello | exec -> first response (median of 7) ms | vs hello | floor: exec -> exit at its first step, no config (median of 7) ms | floor vs hello's GET /next |\n|---|---|---|---|---|---|---|---|"
    )?;
    let hello_bin = bin_dir(&env.root).join("examples").join("hello_bootstrap");
    let scheduled = runtime_api::scheduled_event();
    let mut functions: Vec<(&str, PathBuf, Value)> =
        vec![("hello world", hello_bin, scheduled.clone())];
    for function in FUNCTIONS {
        let event = match function {
            "webhook-ingest" => runtime_api::function_url_event(
                &json!({"container": "bench", "file": "export-64.bin"}).to_string(),
                "bench-token",
            ),
            "blob-copy" => runtime_api::sqs_event("state", "jobs/none/missing.json"),
            // EventBridge Scheduler's input for view-sync: every view (the bench has none).
            "view-sync" => json!({"views": []}),
            // Its schedule's input: every webhook route, default lookback.
            "reconcile" => json!({}),
            _ => scheduled.clone(),
        };
        functions.push((function, env.bin(function), event));
    }
    let mut hello = (f64::NAN, f64::NAN);
    for (function, bin, event) in functions {
        let size = std::fs::metadata(&bin)
            .with_context(|| format!("{} (built by `make bench`)", bin.display()))?
            .len() as f64
            / MIB as f64;
        let mut ready = Vec::new();
        let mut first = Vec::new();
        let mut floor = Vec::new();
        // Rounds alternate between functions only through the outer order; 7 runs each, median.
        for _ in 0..7 {
            let (r, f) =
                runtime_api::cold_start(&bin, &env.config.to_string(), event.clone()).await?;
            ready.push(r);
            first.push(f);
            floor.push(first_step_exit_ms(&bin).await?);
        }
        ready.sort_by(f64::total_cmp);
        first.sort_by(f64::total_cmp);
        floor.sort_by(f64::total_cmp);
        let (r, f, b) = (ready[3], first[3], floor[3]);
        if function == "hello world" {
            hello = (r, f);
        }
        writeln!(
            report,
            "| {function} | {size:.1} | {r:.1} | {:.2}x | {f:.1} | {:.2}x | {b:.1} | {:.2}x |",
            r / hello.0,
            f / hello.1,
            b / hello.0
        )?;
        println!(
            "cold start {function}: {size:.1} MiB, ready {r:.1} ms ({:.2}x hello), first response {f:.1} ms ({:.2}x hello), floor {b:.1} ms ({:.2}x hello's ready)",
            r / hello.0,
            f / hello.1,
            b / hello.0
        );
    }
    Ok(())
}

/// A curl config reading `url` (`bytes` long) to /dev/null as ranges of `range` bytes, one
/// transfer each (`--parallel` runs them at once, else one after the other).
fn curl_ranges(url: &str, bytes: u64, range: u64) -> String {
    let mut cfg = String::new();
    let mut at = 0;
    while at < bytes {
        let end = (at + range).min(bytes) - 1;
        if at > 0 {
            cfg.push_str("next\n");
        }
        cfg.push_str(&format!(
            "url = \"{url}\"\nrange = {at}-{end}\noutput = /dev/null\n"
        ));
        at = end + 1;
    }
    cfg
}

/// Milliseconds from exec to exit of `bin` run with no environment: no config (a ferry function)
/// and no Runtime API (hello world), so it stops at its first step with an error. What remains
/// is loading the binary, the async runtime and one log line: the floor under its cold start.
async fn first_step_exit_ms(bin: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = tokio::process::Command::new(bin)
        .env_clear()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    ensure!(
        !status.success(),
        "{} started without a config or a Runtime API",
        bin.display()
    );
    Ok(ms)
}

async fn ingest(env: &Env, report: &mut String) -> anyhow::Result<()> {
    writeln!(
        report,
        "\n## Webhook ingest latency (16 concurrent clients; 3 alternating rounds of 2,000 requests per path: 200 files x 10)\n"
    )?;
    let ((ingest, raw, head), cpu_ms) = ingest_latency(env).await?;
    writeln!(
        report,
        "| path | p50 ms | p99 ms | requests/s |\n|---|---|---|---|"
    )?;
    writeln!(
        report,
        "| ferry webhook (one route, three destinations: HEAD blob + conditional PutObject) | {:.2} | {:.2} | {:.0} |",
        ingest.0, ingest.1, ingest.2
    )?;
    writeln!(
        report,
        "| raw conditional PutObject to the same moto | {:.2} | {:.2} | {:.0} |",
        raw.0, raw.1, raw.2
    )?;
    writeln!(
        report,
        "| raw Get Blob Properties (HEAD) to the same Azurite | {:.2} | {:.2} | {:.0} |",
        head.0, head.1, head.2
    )?;
    writeln!(
        report,
        "\np99 overhead: {:.2}x the raw PutObject; {:.2}x the slower of the two raw calls ferry makes per webhook (a HEAD for the blob's ETag, then the create-once PutObject).",
        ingest.1 / raw.1,
        ingest.1 / raw.1.max(head.1)
    )?;
    if let Some(ms) = cpu_ms {
        writeln!(
            report,
            "\nferry's own CPU per webhook (user + system of the `ferry serve` process over every round, divided by its requests): {ms:.2} ms. On this 2-core machine it competes with moto, Azurite and the load generator for the same cores."
        )?;
    }
    println!(
        "ingest p50 {:.2} ms p99 {:.2} ms {:.0} req/s; raw p50 {:.2} p99 {:.2} {:.0} req/s; p99 ratio {:.2}x; ferry CPU per webhook {} ms",
        ingest.0,
        ingest.1,
        ingest.2,
        raw.0,
        raw.1,
        raw.2,
        ingest.1 / raw.1,
        cpu_ms.map_or("-".to_string(), |ms| format!("{ms:.2}"))
    );
    Ok(())
}

const INGEST_ROUNDS: usize = 3;
const INGEST_REQUESTS: usize = 2000;

/// Sends `INGEST_REQUESTS` requests, 16 at a time; returns each latency in ms and the wall time.
/// Fails if any request did not get the expected answer.
async fn timed_load<F, Fut>(request: F) -> anyhow::Result<(Vec<f64>, f64)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    use futures_util::StreamExt as _;
    let started = Instant::now();
    let results: Vec<(bool, f64)> = futures_util::stream::iter(0..INGEST_REQUESTS)
        .map(|n| {
            let sent = request(n);
            async move {
                let t = Instant::now();
                let ok = sent.await;
                (ok, t.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let failed = results.iter().filter(|(ok, _)| !ok).count();
    if failed > 0 {
        bail!("{failed} of {INGEST_REQUESTS} requests failed during the ingest benchmark");
    }
    Ok((
        results.into_iter().map(|(_, ms)| ms).collect(),
        started.elapsed().as_secs_f64(),
    ))
}

fn percentiles(mut ms: Vec<f64>, wall: f64) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), ms.len() as f64 / wall)
}

type Latency = (f64, f64, f64);

/// (ferry webhook, raw conditional PutObject, raw Get Blob Properties), each (p50, p99, req/s),
/// and the ferry process's CPU milliseconds per webhook when /proc tells.
async fn ingest_latency(env: &Env) -> anyhow::Result<((Latency, Latency, Latency), Option<f64>)> {
    let admin = env.c.azurite.admin();
    for i in 0..200 {
        admin
            .put_blob(
                "bench",
                &format!("ingest/{i:03}.csv"),
                format!("row {i}\n").as_bytes(),
            )
            .await?;
    }
    // The usual shape: one route delivering to every destination, so one job per webhook (the
    // copy benchmark's one-route-per-destination config would write three).
    let mut config = env.config.clone();
    config["routes"] = json!([{"name": "all", "source": "azurite", "container": "bench",
                               "destinations": ["s3", "sftp", "local_dir"]}]);
    let config_path = env.work.join("ferry-ingest.json");
    std::fs::write(&config_path, config.to_string())?;
    let port = ferry_harness::free_port();
    let mut server = tokio::process::Command::new(env.ferry())
        .args([
            "serve",
            "--ingest-only",
            // The webhook alone, as webhook-ingest runs in AWS: the sweep is another function,
            // and `serve` would run its first pass at start, into the first round's load.
            "--reconcile-every",
            "off",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(env.work.join("ingest-server.log"))?)
        .kill_on_drop(true)
        .spawn()?;
    let started = Instant::now();
    while !ferry_harness::port_open(port) {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("ferry serve did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/");
    // Rounds alternate the three paths so that drift on a shared machine (another tenant, moto's
    // growing heap) hits all of them alike; percentiles are over every round's samples.
    let mut samples: [(Vec<f64>, f64); 3] = Default::default();
    for _round in 0..INGEST_ROUNDS {
        let ferry = timed_load(|n| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let body =
                    json!({"container": "bench", "file": format!("ingest/{:03}.csv", n % 200)});
                let r = http
                    .post(url)
                    .header("x-ferry-token", "bench-token")
                    .json(&body)
                    .send()
                    .await;
                r.is_ok_and(|r| r.status().is_success())
            }
        })
        .await?;
        let raw = timed_load(|n| {
            let s3 = env.s3.clone();
            async move {
                let r = s3
                    .put_object()
                    .bucket("raw")
                    .key(format!("jobs/raw/{:03}.json", n % 200))
                    .if_none_match("*")
                    .body(aws_sdk_s3::primitives::ByteStream::from_static(b"{}"))
                    .send()
                    .await;
                // A duplicate's 412 is the answer we want, as for ferry's duplicates.
                r.is_ok()
                    || r.is_err_and(|e| {
                        e.raw_response()
                            .is_some_and(|resp| resp.status().as_u16() == 412)
                    })
            }
        })
        .await?;
        let head = timed_load(|n| {
            let http = http.clone();
            let url = format!(
                "{}/bench/ingest/{:03}.csv?{}",
                env.c.azurite.account_url,
                n % 200,
                env.sas
            );
            async move {
                let r = http
                    .head(url)
                    .header("x-ms-version", "2021-08-06")
                    .send()
                    .await;
                r.is_ok_and(|r| r.status().is_success())
            }
        })
        .await?;
        for (acc, (ms, secs)) in samples.iter_mut().zip([ferry, raw, head]) {
            acc.0.extend(ms);
            acc.1 += secs;
        }
    }
    // Its CPU over every round, all of it spent on the ferry requests (the other paths do not
    // reach it): the Lambda bill of a webhook, and what it takes from moto on a shared machine.
    let cpu_ms = server
        .id()
        .and_then(process_cpu_secs)
        .map(|s| s * 1000.0 / (INGEST_ROUNDS * INGEST_REQUESTS) as f64);
    server.kill().await?;
    let [ferry, raw, head] = samples.map(|(ms, secs)| percentiles(ms, secs));
    Ok(((ferry, raw, head), cpu_ms))
}

/// CPU seconds (user + system, all threads) a live process has used so far (/proc/PID/stat).
fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // utime and stime are fields 14 and 15 of the line, so 12 and 13 after the command name
    // (in parentheses, and it may hold spaces).
    let mut after = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = after.next()?.parse().ok()?;
    let stime: u64 = after.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
}
