//! The destination contract, run against every implementation on its real server: S3 on moto,
//! SFTP on OpenSSH sshd, HTTP on a mock endpoint, and a local directory.
//!
//! Each destination must: round-trip bytes identically (small, empty, 64 MiB), handle names with
//! spaces, unicode and folders, replace an existing file on overwrite, and leave nothing at the
//! final name (and no stray temporary objects) when the stream fails mid-way or verifies wrong.

use crate::support;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use ferry_shared::dest::{Delivery, Destination, DestinationError};
use ferry_shared::verify::verifying;
use sha2::{Digest, Sha256};
use support::data;
use tokio::io::AsyncReadExt;

const MIB: u64 = 1024 * 1024;

/// Reads back what a destination stored, by the side door of its server.
#[async_trait]
trait Probe: Send + Sync {
    /// (length, sha256 hex) of the file stored under `name`, if any.
    async fn stored(&self, name: &str) -> Option<(u64, String)>;
    /// Every name stored (including temporaries and pending uploads), to catch leftovers.
    async fn everything(&self) -> Vec<String>;
}

fn delivery(name: &str, size: u64) -> Delivery {
    Delivery {
        name: name.to_string(),
        size,
        content_type: Some("application/octet-stream".into()),
        content_md5: None,
        idempotency_key: format!("job:{name}"),
        stop_at: None,
    }
}

async fn put(
    dest: &dyn Destination,
    name: &str,
    seed: u64,
    len: u64,
) -> Result<(), DestinationError> {
    let (body, _) = verifying(data::reader(seed, len, None), len, None);
    dest.write(&delivery(name, len), body)
        .await
        .map(|w| assert_eq!(w.bytes, len))
}

async fn run_suite(kind: &str, dest: Arc<dyn Destination>, probe: &dyn Probe) {
    // Round trips: small, empty, 64 MiB (multipart for S3).
    for (name, seed, len) in [
        ("small.csv", 1, 1000),
        ("empty.xml", 2, 0),
        ("big.zip", 3, 64 * MIB),
    ] {
        put(dest.as_ref(), name, seed, len)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {name}: {e}"));
        assert_eq!(
            probe.stored(name).await,
            Some((len, data::sha256(seed, len))),
            "{kind}: {name} round trip"
        );
    }
    // Names with spaces, unicode and a folder.
    let odd = "sub dir/HMIS Ünïcode ✓ (1).csv";
    put(dest.as_ref(), odd, 4, 4096)
        .await
        .unwrap_or_else(|e| panic!("{kind}: {odd}: {e}"));
    assert_eq!(
        probe.stored(odd).await,
        Some((4096, data::sha256(4, 4096))),
        "{kind}: odd name"
    );
    // Overwrite replaces the content (shorter file, so leftovers of the old one would show).
    put(dest.as_ref(), "small.csv", 5, 300).await.unwrap();
    assert_eq!(
        probe.stored("small.csv").await,
        Some((300, data::sha256(5, 300))),
        "{kind}: overwrite"
    );

    // A stream that breaks mid-way (after 12 MiB: past several S3 parts) leaves nothing.
    let len = 20 * MIB;
    let (body, _) = verifying(data::reader(6, len, Some(12 * MIB)), len, None);
    let err = dest
        .write(&delivery("broken.bin", len), body)
        .await
        .expect_err("broken stream must fail");
    assert!(!format!("{err}").is_empty());
    // A stream shorter than announced fails verification at its end, before any commit.
    let (body, _) = verifying(data::reader(7, 3 * MIB, None), 3 * MIB + 1, None);
    let err = dest
        .write(&delivery("short.bin", 3 * MIB + 1), body)
        .await
        .expect_err("short stream must fail");
    assert!(
        matches!(err, DestinationError::Verification(_)),
        "{kind}: short stream -> {err:?}"
    );
    // And one whose MD5 is wrong.
    let (body, _) = verifying(
        data::reader(8, 1000, None),
        1000,
        Some("AAAAAAAAAAAAAAAAAAAAAA==".into()),
    );
    let err = dest
        .write(&delivery("corrupt.bin", 1000), body)
        .await
        .expect_err("bad md5 must fail");
    assert!(
        matches!(err, DestinationError::Verification(_)),
        "{kind}: md5 -> {err:?}"
    );
    for name in ["broken.bin", "short.bin", "corrupt.bin"] {
        assert_eq!(
            probe.stored(name).await,
            None,
            "{kind}: {name} must not be visible"
        );
    }
    let mut all = probe.everything().await;
    all.sort();
    let mut want = vec![
        "big.zip".to_string(),
        "empty.xml".into(),
        "small.csv".into(),
        odd.into(),
    ];
    want.sort();
    assert_eq!(
        all, want,
        "{kind}: no partial or temporary objects may remain"
    );
}

// ---------- local directory

struct DirProbe(PathBuf);

fn digest_file(path: &std::path::Path) -> Option<(u64, String)> {
    let bytes = std::fs::read(path).ok()?;
    Some((bytes.len() as u64, hex::encode(Sha256::digest(&bytes))))
}

fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
}

#[async_trait]
impl Probe for DirProbe {
    async fn stored(&self, name: &str) -> Option<(u64, String)> {
        digest_file(&self.0.join(name))
    }
    async fn everything(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.0, &self.0, &mut out);
        out
    }
}

#[tokio::test]
async fn local_dir_destination_conforms() {
    support::aws_test_env();
    let dir = tempfile::tempdir().unwrap();
    let dest = support::destination(
        serde_json::json!({"type": "local_dir", "path": dir.path()}),
        "unused",
    )
    .await;
    run_suite("local_dir", dest, &DirProbe(dir.path().to_path_buf())).await;
}

// ---------- SFTP on OpenSSH

#[tokio::test]
async fn sftp_destination_conforms() {
    support::aws_test_env();
    let sshd = &ferry_harness::shared().sshd;
    let folder = sshd.root.join(support::unique("conformance"));
    let dest = support::destination(
        serde_json::json!({"type": "sftp", "host": "127.0.0.1", "port": sshd.port, "username": sshd.user,
            "host_key": sshd.host_key, "private_key": support::file_secret(&sshd.client_key_pem), "directory": folder}),
        "unused",
    )
    .await;
    run_suite("sftp", dest, &DirProbe(folder)).await;
}

// ---------- S3 on moto

struct S3Probe {
    client: aws_sdk_s3::Client,
    bucket: String,
}

#[async_trait]
impl Probe for S3Probe {
    async fn stored(&self, name: &str) -> Option<(u64, String)> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(format!("in/{name}"))
            .send()
            .await
            .ok()?;
        let mut body = out.body.into_async_read();
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            let k = body.read(&mut buf).await.unwrap();
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        Some((n, hex::encode(h.finalize())))
    }
    async fn everything(&self) -> Vec<String> {
        let objects = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .send()
            .await
            .unwrap();
        let mut out: Vec<String> = objects
            .contents()
            .iter()
            .map(|o| o.key().unwrap().trim_start_matches("in/").to_string())
            .collect();
        let uploads = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .send()
            .await
            .unwrap();
        out.extend(
            uploads
                .uploads()
                .iter()
                .map(|u| format!("pending upload {}", u.key().unwrap_or_default())),
        );
        out
    }
}

#[tokio::test]
async fn s3_destination_conforms() {
    support::aws_test_env();
    let moto = &ferry_harness::shared().moto;
    let bucket = support::unique("dest");
    moto.create_bucket(&bucket).await.unwrap();
    let dest = support::destination(
        serde_json::json!({"type": "s3", "bucket": bucket, "prefix": "in/", "part_size_mib": 5,
            "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}}),
        "unused",
    )
    .await;
    run_suite(
        "s3",
        dest,
        &S3Probe {
            client: support::moto_s3().await,
            bucket,
        },
    )
    .await;
}

// ---------- HTTP endpoint (mock server: the receiving system has no emulator)

struct HttpProbe(wiremock::MockServer);

#[async_trait]
impl Probe for HttpProbe {
    async fn stored(&self, name: &str) -> Option<(u64, String)> {
        let path = format!("/upload/{}", percent(name));
        let requests = self.0.received_requests().await.unwrap_or_default();
        let last = requests.iter().rev().find(|r| r.url.path() == path)?;
        Some((
            last.body.len() as u64,
            hex::encode(Sha256::digest(&last.body)),
        ))
    }
    async fn everything(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let p = r.url.path().trim_start_matches("/upload/");
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

fn percent(name: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(name, KEEP).to_string()
}

#[tokio::test]
async fn http_destination_conforms() {
    use wiremock::matchers::{header, method};
    use wiremock::{Mock, ResponseTemplate};
    support::aws_test_env();
    let server = wiremock::MockServer::start().await;
    Mock::given(method("PUT"))
        .and(header("authorization", "Bearer conformance-secret"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    // SAFETY: set before the destination reads it; the name is unique to this test.
    unsafe { std::env::set_var("FERRY_TEST_HTTP_AUTH", "Bearer conformance-secret") };
    let dest = support::destination(
        serde_json::json!({"type": "http", "url": format!("{}/upload/{{name}}", server.uri()), "method": "PUT",
            "headers": {"x-source": "ferry-test"}, "secret_headers": {"Authorization": {"env": "FERRY_TEST_HTTP_AUTH"}}}),
        "unused",
    )
    .await;
    run_suite("http", dest, &HttpProbe(server)).await;
}

// ---------- S3 crash-resume checkpoints never hold up the upload

/// Sets `at_end` when the inner stream reaches its end.
struct SignalAtEnd {
    inner: ferry_shared::ByteReader,
    at_end: tokio::sync::watch::Sender<bool>,
}

impl tokio::io::AsyncRead for SignalAtEnd {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.inner.as_mut().poll_read(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(()))) && buf.filled().len() == before {
            self.at_end.send_replace(true);
        }
        polled
    }
}

#[tokio::test]
async fn s3_part_uploads_never_wait_for_progress_checkpoints() {
    support::aws_test_env();
    let moto = &ferry_harness::shared().moto;
    let bucket = support::unique("ckpt");
    moto.create_bucket(&bucket).await.unwrap();
    let client = support::moto_s3().await;
    let (at_end, open) = tokio::sync::watch::channel(false);
    // The first progress write records the upload id; the later ones wait at the gate.
    let store = Arc::new(support::GatedPuts::new(
        Arc::new(ferry_shared::state::S3StateStore::new(
            client.clone(),
            bucket.clone(),
        )),
        "progress/",
        1,
        open,
    ));
    let dest = ferry_shared::dest::s3::S3Destination::new(
        client,
        &bucket,
        "in/",
        5 * MIB as usize,
        2,
        Some(store.clone()),
    );
    // Checkpoints are held until the whole source was read: an upload that waited for its
    // checkpoint writes would never get there.
    let len = 40 * MIB;
    let body: ferry_shared::ByteReader = Box::pin(SignalAtEnd {
        inner: data::reader(7, len, None),
        at_end,
    });
    let (body, _) = verifying(body, len, None);
    let written = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        dest.write(&delivery("gated.bin", len), body),
    )
    .await
    .expect("the upload waited for a held checkpoint write")
    .unwrap();
    assert_eq!(written.bytes, len);
    let probe = S3Probe {
        client: support::moto_s3().await,
        bucket: bucket.clone(),
    };
    assert_eq!(
        probe.stored("gated.bin").await,
        Some((len, data::sha256(7, len)))
    );
    assert!(
        store.seen() >= 2,
        "progress was checkpointed as parts finished"
    );
    // The checkpoint stays until the receipt is saved; then it goes, and no late progress write
    // brings it back.
    dest.receipt_saved(&delivery("gated.bin", len)).await;
    let left = ferry_shared::state::StateStore::list(store.as_ref(), "progress/")
        .await
        .unwrap();
    assert!(left.is_empty(), "checkpoint left behind: {left:?}");
}

#[tokio::test]
async fn s3_an_upload_completed_by_a_run_that_died_before_its_receipt_is_not_written_again() {
    support::aws_test_env();
    support::logs::init();
    let moto = &ferry_harness::shared().moto;
    let bucket = support::unique("again");
    moto.create_bucket(&bucket).await.unwrap();
    let client = support::moto_s3().await;
    support::enable_versioning(&client, &bucket).await;
    let store: Arc<dyn ferry_shared::state::StateStore> = Arc::new(
        ferry_shared::state::S3StateStore::new(client.clone(), bucket.clone()),
    );
    let dest = ferry_shared::dest::s3::S3Destination::new(
        client.clone(),
        &bucket,
        "in/",
        5 * MIB as usize,
        2,
        Some(store.clone()),
    );
    let len = 12 * MIB + 5;
    let versions = async || {
        client
            .list_object_versions()
            .bucket(&bucket)
            .prefix("in/done.bin")
            .send()
            .await
            .unwrap()
            .versions()
            .len()
    };
    let open_uploads = async || {
        client
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap()
            .uploads()
            .len()
    };
    // The first run completes its upload and dies before the engine saves the receipt (a
    // shutdown's grace can end while CompleteMultipartUpload is in flight): receipt_saved never
    // comes, so the checkpoint holds every part.
    put(&dest, "done.bin", 9, len).await.unwrap();
    assert_eq!(versions().await, 1);
    // The next run reads the source again (its digests go in the receipt) but writes nothing.
    put(&dest, "done.bin", 9, len).await.unwrap();
    assert_eq!(
        versions().await,
        1,
        "the completed upload was written again"
    );
    // Found by the object's ETag, not by completing the upload again: S3 answers a second
    // CompleteMultipartUpload with NoSuchUpload (moto accepts it).
    let found = support::logs::text().lines().any(|l| {
        l.contains("completed by an earlier run") && l.contains(&bucket) && l.contains("done.bin")
    });
    assert!(found, "the finished upload was not recognised by its ETag");
    assert_eq!(open_uploads().await, 0, "an upload was started and left");
    let probe = S3Probe {
        client: client.clone(),
        bucket: bucket.clone(),
    };
    assert_eq!(
        probe.stored("done.bin").await,
        Some((len, data::sha256(9, len)))
    );
    // Once the receipt is saved the checkpoint goes, and a later delivery of the same job (a
    // replay) writes the file again.
    dest.receipt_saved(&delivery("done.bin", len)).await;
    assert!(store.list("progress/").await.unwrap().is_empty());
    put(&dest, "done.bin", 9, len).await.unwrap();
    assert_eq!(versions().await, 2);
}

// ---------- Microsoft Graph (OneDrive / SharePoint) on the stateful fake: Graph has no emulator

struct GraphProbe<'a>(&'a support::graph::GraphFake);

#[async_trait]
impl Probe for GraphProbe<'_> {
    async fn stored(&self, name: &str) -> Option<(u64, String)> {
        self.0.stored(&format!("in/{name}"))
    }
    async fn everything(&self) -> Vec<String> {
        self.0
            .everything()
            .into_iter()
            .map(|n| n.replacen("in/", "", 1))
            .collect()
    }
}

#[tokio::test]
async fn graph_destination_conforms() {
    support::aws_test_env();
    let fake = support::graph::GraphFake::start("ferry-app", "graph-client-secret-0123").await;
    let dest = support::destination(
        fake.config(support::file_secret("graph-client-secret-0123"), "in"),
        "unused",
    )
    .await;
    // Building made no call: the site and library are resolved to the drive at the first
    // delivery, and once for all of them.
    assert_eq!((fake.count("get_site"), fake.count("list_drives")), (0, 0));
    // The fake stores names case-insensitively (as Graph does): compare in lower case.
    run_suite("graph", dest, &LowerCase(GraphProbe(&fake))).await;
    assert_eq!((fake.count("get_site"), fake.count("list_drives")), (1, 1));
    assert_eq!(
        fake.violations(),
        Vec::<String>::new(),
        "protocol rules broken"
    );
    assert_eq!(fake.auth_on_upload_url(), 0);
    assert!(
        fake.count("create_session") >= 2 && fake.count("commit") >= 1,
        "the 64 MiB and 20 MiB files went through upload sessions"
    );
    // The broken 20 MiB stream's session was cancelled, not left to expire.
    assert!(fake.count("cancel") >= 1);
}

/// Looks names up in lower case and lists them as the suite spells them.
struct LowerCase<P>(P);

#[async_trait]
impl<P: Probe> Probe for LowerCase<P> {
    async fn stored(&self, name: &str) -> Option<(u64, String)> {
        self.0.stored(&name.to_lowercase()).await
    }
    async fn everything(&self) -> Vec<String> {
        let listed = self.0.everything().await;
        let spelled = [
            "big.zip",
            "empty.xml",
            "small.csv",
            "sub dir/HMIS Ünïcode ✓ (1).csv",
        ];
        listed
            .into_iter()
            .map(|n| {
                spelled
                    .iter()
                    .find(|s| s.to_lowercase() == n)
                    .map_or(n, |s| s.to_string())
            })
            .collect()
    }
}
