//! `ferry-demo` (`make demo`): the whole webhook-triggered export copy on local components. Starts Azurite,
//! moto and sshd, uploads a sample HMIS export zip to a container guarded by a stored access
//! policy, fires the webhook, and shows the file delivered to SFTP and S3 with its receipts.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use ferry_shared::config::Config;
use ferry_shared::job::Receipt;
use ferry_shared::layout::receipt_key;
use ferry_shared::services::Services;
use ferry_shared::state::StateStoreExt;
use sha2::{Digest, Sha256};

use crate::LocalRunner;

const CONTAINER: &str = "clienttrack-exports";
const POLICY: &str = "ferry-read";

/// Renders row `i` of one CSV file.
type RowFn = fn(usize) -> String;

/// Builds a small zip of HMIS-style CSV files (the kind of export ClientTrack produces).
pub fn sample_export_zip() -> anyhow::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let files: [(&str, &str, RowFn); 3] = [
        (
            "Client.csv",
            "PersonalID,FirstName,LastName,DOB,VeteranStatus,DateCreated",
            |i| {
                format!(
                    "{:06},First{i},Last{i},19{:02}-0{}-1{},{},2026-11-0{}",
                    100000 + i,
                    50 + i % 40,
                    1 + i % 9,
                    i % 9,
                    i % 2,
                    1 + i % 9
                )
            },
        ),
        (
            "Enrollment.csv",
            "EnrollmentID,PersonalID,ProjectID,EntryDate,HouseholdID",
            |i| {
                format!(
                    "E{:07},{:06},P{:03},2026-10-{:02},H{:06}",
                    i,
                    100000 + i,
                    i % 17,
                    1 + i % 28,
                    i / 3
                )
            },
        ),
        (
            "Exit.csv",
            "ExitID,EnrollmentID,PersonalID,ExitDate,Destination",
            |i| {
                format!(
                    "X{:07},E{:07},{:06},2026-11-{:02},{}",
                    i,
                    i,
                    100000 + i,
                    1 + i % 20,
                    100 + i % 30
                )
            },
        ),
    ];
    for (name, header, row) in files {
        zip.start_file(name, options)?;
        writeln!(zip, "{header}")?;
        for i in 0..2000 {
            writeln!(zip, "{}", row(i))?;
        }
    }
    Ok(zip.finish()?.into_inner())
}

pub(crate) fn write_secret(
    dir: &Path,
    name: &str,
    value: &str,
) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(value.as_bytes())?;
    Ok(path)
}

/// Runs the demo; returns when the file is delivered everywhere (or fails with the reason).
pub async fn run() -> anyhow::Result<()> {
    println!("== ferry demo: webhook-triggered export copy on local components");
    ferry_harness::ensure_installed()?;
    let started = Instant::now();
    let azurite = ferry_harness::Azurite::start()?;
    let moto = ferry_harness::Moto::start()?;
    let sshd = ferry_harness::Sshd::start()?;
    println!(
        "   components up in {:.1}s: Azurite {}, moto {}, sshd 127.0.0.1:{}",
        started.elapsed().as_secs_f64(),
        azurite.account_url,
        moto.endpoint,
        sshd.port
    );
    moto.create_bucket("ferry-state").await?;
    moto.create_bucket("customer-archive").await?;

    let azure = azurite.admin();
    azure.create_container(CONTAINER).await?;
    azure
        .set_access_policy(
            CONTAINER,
            POLICY,
            "rl",
            SystemTime::now() + Duration::from_secs(86_400),
        )
        .await?;
    let sas = azure.container_sas_for_policy(CONTAINER, POLICY);
    let zip = sample_export_zip()?;
    let blob = "HMIS_export 2026-11-22.zip";
    azure.put_blob(CONTAINER, blob, &zip).await?;
    let source_sha = hex::encode(Sha256::digest(&zip));
    println!(
        "1. uploaded {CONTAINER}/{blob} ({} bytes, sha256 {}…) readable through stored access policy {POLICY:?}",
        zip.len(),
        &source_sha[..16]
    );

    let work = ferry_harness::repo_root().join(".local/demo");
    let secrets = work.join("secrets");
    std::fs::create_dir_all(&secrets)?;
    let token = format!("demo-{:x}", rand_u64());
    let token_file = write_secret(&secrets, "webhook-token", &token)?;
    let sas_file = write_secret(&secrets, "clienttrack-sas", &sas)?;
    let sftp_dir = sshd.root.join("inbound");
    let config = serde_json::json!({
        "state": {"bucket": "ferry-state", "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}},
        "webhook": {"token": {"file": token_file}},
        "sources": {"clienttrack": {"type": "azure_blob", "account_url": azurite.account_url, "sas": {"file": sas_file}}},
        "destinations": {
            "partner-sftp": {"type": "sftp", "host": "127.0.0.1", "port": sshd.port, "username": sshd.user,
                             "host_key": sshd.host_key, "private_key": {"file": sshd.client_key_path}, "directory": sftp_dir},
            "archive-s3": {"type": "s3", "bucket": "customer-archive", "prefix": "clienttrack/",
                           "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}}
        },
        "routes": [{"name": "hmis-exports", "source": "clienttrack", "container": CONTAINER,
                    "file_glob": "*.zip", "name_contains": "HMIS", "destinations": ["partner-sftp", "archive-s3"]}]
    });
    let config_path = work.join("ferry.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
    println!(
        "2. wrote config {} (secrets referenced by file, never inline)",
        config_path.display()
    );

    let services = Services::new(Config::from_json(&config.to_string())?).await;
    let runner = LocalRunner::start(
        &services,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Duration::from_secs(2),
    )
    .await?;
    let addr = runner
        .webhook_addr
        .context("the demo config has a webhook section")?;
    let url = format!("http://{addr}/webhook");
    let http = reqwest::Client::new();
    let body = serde_json::json!({"container": CONTAINER, "file": blob});
    let first = http
        .post(&url)
        .header("x-ferry-token", &token)
        .json(&body)
        .send()
        .await?;
    let status = first.status();
    let answer: serde_json::Value = first.json().await?;
    println!("3. POST {url} -> {status} {answer}");
    if status.as_u16() != 202 {
        bail!("webhook was not accepted");
    }
    let job_id = answer["jobs"][0]["job_id"]
        .as_str()
        .context("no job id")?
        .to_string();
    let again = http
        .post(&url)
        .header("x-ferry-token", &token)
        .json(&body)
        .send()
        .await?;
    println!(
        "   same webhook again -> {} {}",
        again.status(),
        again.text().await?
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut receipts = Vec::new();
    for dest in ["partner-sftp", "archive-s3"] {
        loop {
            if let Some((r, _)) = services
                .state
                .get_json::<Receipt>(&receipt_key(&job_id, dest))
                .await?
            {
                receipts.push(r);
                break;
            }
            if Instant::now() > deadline {
                bail!("no receipt for {dest} after 60 s; see the log lines above");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!("4. delivered:");
    for r in &receipts {
        println!(
            "   {} -> {} ({} bytes, md5 {}, checked against source: {}, sha256 {}…, {} ms)",
            r.destination,
            r.location,
            r.bytes,
            r.md5.as_deref().unwrap_or("not computed"),
            r.md5_verified_against_source,
            &r.sha256[..16],
            r.duration_ms
        );
    }
    let on_sftp = std::fs::read(sftp_dir.join(blob))?;
    let same = hex::encode(Sha256::digest(&on_sftp)) == source_sha;
    println!(
        "5. file on the SFTP server: {} bytes, identical to the source: {same}",
        on_sftp.len()
    );
    println!(
        "   receipt objects: s3://ferry-state/{}",
        receipt_key(&job_id, "*")
    );
    println!(
        "== demo done in {:.1}s; components stopped",
        started.elapsed().as_secs_f64()
    );
    if !same || receipts.iter().any(|r| r.sha256 != source_sha) {
        bail!("delivered bytes differ from the source");
    }
    drop(runner);
    Ok(())
}

pub(crate) fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}
