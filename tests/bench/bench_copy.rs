//! Copy benchmark: one blob of SIZE_MIB (default 1024) from Azurite to DEST (`local_dir`, `s3`,
//! `sftp`) through the real `ferry run-job` binary, measured with `/usr/bin/time -v` for peak RSS.
//! Prints MB/s and peak RSS; not a test (machines are shared and noisy).
//!
//! cargo run --release --example bench_copy -- [SIZE_MIB] [DEST]

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let size_mib: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let dest = args.get(2).cloned().unwrap_or_else(|| "local_dir".into());
    // SAFETY: single-threaded at this point; the child processes inherit these.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    let root = ferry_harness::repo_root();
    let bin = root.join("target/release/ferry");
    if !bin.exists() {
        bail!("build the release binary first: cargo build --release --bin ferry");
    }
    ferry_harness::ensure_installed()?;
    let c = ferry_harness::Components::start()?;
    let work = tempfile::tempdir_in(root.join(".local"))?;
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
    let blob = work.path().join("blob.bin");
    {
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&blob)?);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..size_mib {
            for chunk in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&buf)?;
        }
    }
    let t = Instant::now();
    admin
        .put_blob_from_file("bench", "export.bin", &blob)
        .await?;
    eprintln!(
        "uploaded {size_mib} MiB to Azurite in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    std::fs::remove_file(&blob)?;
    c.moto.create_bucket("state").await?;
    c.moto.create_bucket("archive").await?;
    let sas_file = work.path().join("sas");
    std::fs::write(&sas_file, &sas)?;
    let key_file = work.path().join("key");
    std::fs::write(&key_file, &c.sshd.client_key_pem)?;
    let token_file = work.path().join("token");
    std::fs::write(&token_file, "bench-token")?;
    let out_dir = work.path().join("out");
    let config = serde_json::json!({
        "state": {"bucket": "state", "endpoint": {"endpoint_url": c.moto.endpoint, "force_path_style": true}},
        "webhook": {"token": {"file": token_file}},
        "sources": {"azurite": {"type": "azure_blob", "account_url": c.azurite.account_url, "sas": {"file": sas_file}}},
        "destinations": {
            "local_dir": {"type": "local_dir", "path": out_dir},
            "s3": {"type": "s3", "bucket": "archive", "endpoint": {"endpoint_url": c.moto.endpoint, "force_path_style": true}},
            "sftp": {"type": "sftp", "host": "127.0.0.1", "port": c.sshd.port, "username": c.sshd.user, "host_key": c.sshd.host_key,
                     "private_key": {"file": key_file}, "directory": c.sshd.root.join("bench")}
        },
        "routes": [{"name": "bench", "source": "azurite", "container": "bench", "destinations": [dest]}]
    });
    let config_path = work.path().join("ferry.json");
    std::fs::write(&config_path, config.to_string())?;
    let services = ferry_shared::services::Services::build(
        ferry_shared::config::Config::from_json(&config.to_string())?,
    )
    .await?;
    let webhook = services.webhook().await?;
    let answer = webhook
        .handle(ferry_shared::webhook::WebhookRequest {
            method: http::Method::POST,
            query: None,
            headers: [
                (http::header::CONTENT_TYPE, "application/json".parse()?),
                ("x-ferry-token".parse()?, "bench-token".parse()?),
            ]
            .into_iter()
            .collect(),
            body: serde_json::json!({"container": "bench", "file": "export.bin"})
                .to_string()
                .into(),
            correlation_id: "bench".into(),
        })
        .await;
    let job_key = answer.body["jobs"][0]["job_key"]
        .as_str()
        .context("no job")?
        .to_string();
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(&bin)
        .args(["run-job", "--config"])
        .arg(&config_path)
        .arg(&job_key)
        .env("RUST_LOG", "warn")
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("run-job failed: {stderr}");
    }
    let rss_kib: u64 = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .context("no RSS line")?
        .parse()?;
    let mb = (size_mib << 20) as f64 / 1e6;
    println!(
        "copy {size_mib} MiB azurite -> {dest}: {secs:.2} s, {:.1} MB/s, peak RSS {:.1} MiB ({})",
        mb / secs,
        rss_kib as f64 / 1024.0,
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(())
}
