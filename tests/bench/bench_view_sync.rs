//! View-sync benchmark: a mock view of N records (default 100000) synced into SINK (`postgres`,
//! `s3`, `http`) by the real `ferry sync-views` binary, measured with `/usr/bin/time -v` for peak
//! RSS. Runs N/10 first, so the two peaks show whether memory stays flat as the view grows.
//! Prints records/s and peak RSS; not a test (machines are shared and noisy).
//!
//! cargo build --release --bin ferry && cargo run --release --example bench_view_sync -- [N] [SINK] [CHUNK]

#[path = "../support/view.rs"]
#[allow(dead_code)]
mod view;

use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};

const PASSWORD: &str = "bench-view-password";

struct Measured {
    secs: f64,
    rss_kib: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let sink = args.get(2).cloned().unwrap_or_else(|| "postgres".into());
    let chunk: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1000);
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
    let moto = ferry_harness::Moto::start()?;
    let pg = ferry_harness::Postgres::start()?;
    let receiver = view::Receiver::start("Bearer bench-receiver").await;
    let work = tempfile::tempdir()?;
    let secret = |name: &str, value: &str| -> anyhow::Result<serde_json::Value> {
        let path = work.path().join(name);
        std::fs::write(&path, value)?;
        Ok(serde_json::json!({"file": path}))
    };
    moto.create_bucket("lake").await?;
    let sinks = serde_json::json!({
        "postgres": {"type": "postgres", "host": "127.0.0.1", "port": pg.port, "user": pg.user,
                     "password": secret("pg", &pg.password)?, "dbname": pg.dbname, "table": "bench_rows"},
        "s3": {"type": "s3_jsonl", "bucket": "lake", "prefix": "views/",
               "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}},
        "http": {"type": "http", "url": receiver.url(), "concurrency": 8,
                 "secret_headers": {"Authorization": secret("auth", "Bearer bench-receiver")?}},
    });
    if sinks.get(&sink).is_none() {
        bail!("SINK must be postgres, s3 or http");
    }

    let mut results = Vec::new();
    for (round, size) in [(0, n / 10), (1, n)] {
        let mock = view::MockView::start(PASSWORD).await;
        let t = Instant::now();
        mock.push(view::records(0, size));
        let bytes: usize = mock.all().iter().map(|r| r.to_string().len() + 2).sum();
        let state = format!("state-{round}");
        moto.create_bucket(&state).await?;
        let config = serde_json::json!({
            "state": {"bucket": state, "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}},
            "views": {format!("bench{round}"): {"url": mock.url(), "on_behalf_of": view::ON_BEHALF_OF,
                "username": mock.user, "password": secret("view", PASSWORD)?, "sink": sink, "chunk_size": chunk}},
            "sinks": sinks,
        });
        let config_path = work.path().join(format!("ferry-{round}.json"));
        std::fs::write(&config_path, config.to_string())?;
        eprintln!(
            "view of {size} records ({:.1} MB of JSON) ready in {:.1}s",
            bytes as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
        let m = run(&bin, &config_path)?;
        println!(
            "view sync {size} records ({:.1} MB) -> {sink}, chunk {chunk}: {:.2} s, {:.0} records/s, peak RSS {:.1} MiB",
            bytes as f64 / 1e6,
            m.secs,
            size as f64 / m.secs,
            m.rss_kib as f64 / 1024.0
        );
        results.push((size, m));
    }
    if sink == "postgres" {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user={} password={} dbname={}",
                pg.port, pg.user, pg.password, pg.dbname
            ),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(conn);
        let rows: i64 = client
            .query_one(
                "SELECT count(*) FROM bench_rows WHERE view_name = 'bench1'",
                &[],
            )
            .await?
            .get(0);
        if rows as u64 != n {
            bail!("PostgreSQL holds {rows} rows, expected {n}");
        }
        eprintln!("checked: PostgreSQL holds all {rows} rows");
    }
    if sink == "s3" {
        // The same view through a plain requests + boto3 script (tests/bench/view_sync_reference.py).
        let mock = view::MockView::start(PASSWORD).await;
        mock.push(view::records(0, n));
        moto.create_bucket("reference").await?;
        let t = Instant::now();
        let out = Command::new("/usr/bin/time")
            .arg("-v")
            .arg(root.join(".local/venv/bin/python"))
            .arg(root.join("tests/bench/view_sync_reference.py"))
            .args([
                &mock.url(),
                &mock.user,
                PASSWORD,
                view::ON_BEHALF_OF,
                &moto.endpoint,
                "reference",
                &chunk.to_string(),
            ])
            .output()?;
        let secs = t.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("reference script failed: {stderr}");
        }
        let rss_kib: u64 = stderr
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Maximum resident set size (kbytes): ")
            })
            .context("no RSS line")?
            .parse()?;
        let ferry = &results[1].1;
        println!(
            "reference (python requests + boto3) {n} records -> s3: {secs:.2} s, {:.0} records/s, peak RSS {:.1} MiB; ferry/reference speed {:.2}x",
            n as f64 / secs,
            rss_kib as f64 / 1024.0,
            secs / ferry.secs
        );
    }
    let (small, big) = (&results[0].1, &results[1].1);
    println!(
        "peak RSS {:.1} MiB at {} records vs {:.1} MiB at {} records",
        small.rss_kib as f64 / 1024.0,
        results[0].0,
        big.rss_kib as f64 / 1024.0,
        results[1].0
    );
    Ok(())
}

fn run(bin: &std::path::Path, config: &std::path::Path) -> anyhow::Result<Measured> {
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(bin)
        .args(["sync-views", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("sync-views failed: {stderr}");
    }
    let rss_kib: u64 = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .context("no RSS line")?
        .parse()?;
    Ok(Measured { secs, rss_kib })
}
