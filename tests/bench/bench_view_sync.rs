//! View-sync benchmark: a mock view of N records (default 100000) synced into SINK (`postgres`,
//! `s3`, `http`) by the real `ferry sync-views` binary, measured with `/usr/bin/time -v` for peak
//! RSS. Runs N/10 first, so the two peaks show whether memory stays flat as the view grows.
//! Prints records/s and peak RSS; not a test (machines are shared and noisy).
//!
//! Both the s3 and the postgres sink are also run through a plain Python script doing the same
//! (tests/bench/view_sync_reference.py); `--append FILE` adds the rows to a report (`make bench`
//! appends to docs/benchmarks.md).
//!
//! cargo build --release --bin ferry && cargo run --example bench_view_sync -- [N] [SINK] [CHUNK] [--append FILE]

mod measure;

#[path = "../support/view.rs"]
#[allow(dead_code)]
mod view;

use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use measure::{Run, profiled, timed};

const PASSWORD: &str = "bench-view-password";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().collect();
    let report = match args.iter().position(|a| a == "--append") {
        Some(i) => {
            let path = args.get(i + 1).context("--append needs a file")?.into();
            args.drain(i..i + 2);
            Some::<std::path::PathBuf>(path)
        }
        None => None,
    };
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
    let profile = std::env::var("FERRY_BENCH_PROFILE").unwrap_or_else(|_| "release".into());
    let bin = root.join("target").join(&profile).join("ferry");
    if !bin.exists() {
        bail!("build the binary first: cargo build --profile {profile} --bin ferry");
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
            "view sync {size} records ({:.1} MB) -> {sink}, chunk {chunk}: {:.2} s ({:.2} s CPU), {:.0} records/s, peak RSS {:.1} MiB",
            bytes as f64 / 1e6,
            m.secs,
            m.cpu_secs,
            size as f64 / m.secs,
            m.rss_mib
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
    let mut reference = None;
    if sink == "s3" || sink == "postgres" {
        // The same view through a plain requests + boto3 (+ psycopg) script, same chunk size.
        let mock = view::MockView::start(PASSWORD).await;
        mock.push(view::records(0, n));
        moto.create_bucket("reference").await?;
        let mut cmd = Command::new(root.join(".local/venv/bin/python"));
        cmd.arg(root.join("tests/bench/view_sync_reference.py"))
            .args([
                &mock.url(),
                &mock.user,
                PASSWORD,
                view::ON_BEHALF_OF,
                &moto.endpoint,
                "reference",
                &chunk.to_string(),
            ]);
        if sink == "postgres" {
            cmd.arg(format!(
                "host=127.0.0.1 port={} user={} password={} dbname={}",
                pg.port, pg.user, pg.password, pg.dbname
            ));
        }
        let m = timed(&mut cmd).context("reference script")?;
        let ferry = &results[1].1;
        println!(
            "reference (python requests + boto3{}) {n} records -> {sink}: {:.2} s ({:.2} s CPU), {:.0} records/s, peak RSS {:.1} MiB; ferry/reference speed {:.2}x",
            if sink == "postgres" { " + psycopg" } else { "" },
            m.secs,
            m.cpu_secs,
            n as f64 / m.secs,
            m.rss_mib,
            m.secs / ferry.secs
        );
        reference = Some(m);
    }
    let mut floor = None;
    if sink == "s3" {
        // The floor both tools share: the same PutObjects (one JSONL object of CHUNK records and
        // one watermark object per chunk), sent one after another straight from the SDK.
        let s3 = ferry_shared::s3::client(&ferry_shared::config::S3Endpoint {
            region: None,
            endpoint_url: Some(moto.endpoint.clone()),
            force_path_style: true,
        })
        .await;
        let records = view::records(0, chunk as u64);
        let body: String = records.iter().map(|r| format!("{r}\n")).collect();
        let chunks = n.div_ceil(chunk as u64);
        let t = Instant::now();
        for i in 0..chunks {
            for (key, bytes) in [
                (format!("floor/{i}.jsonl"), body.clone().into_bytes()),
                (
                    "floor/watermark.json".to_string(),
                    format!("{{\"value\":{i}}}").into_bytes(),
                ),
            ] {
                s3.put_object()
                    .bucket("lake")
                    .key(key)
                    .body(aws_sdk_s3::primitives::ByteStream::from(bytes))
                    .send()
                    .await?;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "floor: {} sequential PutObjects to moto ({chunks} chunks x 2): {secs:.2} s; ferry/floor {:.2}x the time",
            chunks * 2,
            results[1].1.secs / secs
        );
        floor = Some((chunks * 2, secs));
    }
    if let Some(report) = &report {
        append_report(report, &sink, chunk, &results, reference.as_ref())?;
        if let Some((puts, secs)) = floor {
            use std::fmt::Write as _;
            let mut text = std::fs::read_to_string(report)?;
            writeln!(
                text,
                "| {n} | {sink} | floor: the same {puts} PutObjects sent one after another from the Rust SDK (no view, no parsing) | {secs:.2} | | {:.0} | | |",
                n as f64 / secs
            )?;
            std::fs::write(report, text)?;
        }
    }
    let (small, big) = (&results[0].1, &results[1].1);
    println!(
        "peak RSS {:.1} MiB at {} records vs {:.1} MiB at {} records",
        small.rss_mib, results[0].0, big.rss_mib, results[1].0
    );
    Ok(())
}

fn run(bin: &std::path::Path, config: &std::path::Path) -> anyhow::Result<Run> {
    let mut cmd = profiled(
        bin,
        &ferry_harness::repo_root().join(".local/perf-view-sync.data"),
    );
    timed(
        cmd.args(["sync-views", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn"),
    )
    .context("sync-views")
}

/// Appends this sink's rows to the `make bench` report (docs/benchmarks.md), writing the
/// section heading before the first sink.
fn append_report(
    path: &std::path::Path,
    sink: &str,
    chunk: usize,
    results: &[(u64, Run)],
    reference: Option<&Run>,
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    if !text.contains("## View sync") {
        writeln!(
            text,
            "\n## View sync (mock view in-process, moto for state and S3; chunk {chunk}; `cargo run --example bench_view_sync -- N SINK`)\n"
        )?;
        writeln!(
            text,
            "| records | sink | tool | seconds | CPU seconds | records/s | peak RSS MiB | ferry/reference |\n|---|---|---|---|---|---|---|---|"
        )?;
    }
    for (records, m) in results {
        writeln!(
            text,
            "| {records} | {sink} | ferry `sync-views` (streamed, lease, CAS watermark per chunk) | {:.2} | {:.2} | {:.0} | {:.1} | |",
            m.secs,
            m.cpu_secs,
            *records as f64 / m.secs,
            m.rss_mib
        )?;
    }
    if let (Some(r), Some((records, ferry))) = (reference, results.last()) {
        writeln!(
            text,
            "| {records} | {sink} | plain Python (tests/bench/view_sync_reference.py: whole view in memory, no lease, no CAS) | {:.2} | {:.2} | {:.0} | {:.1} | {:.2}x |",
            r.secs,
            r.cpu_secs,
            *records as f64 / r.secs,
            r.rss_mib,
            r.secs / ferry.secs
        )?;
    }
    std::fs::write(path, text)?;
    Ok(())
}
