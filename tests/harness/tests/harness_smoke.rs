//! Starts the real local components and checks the harness behaviours the integration
//! tests rely on.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use ferry_harness::{Moto, Sshd, port_open, shared};
use md5::{Digest, Md5};
use sha2::Sha256;

fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{:x}", n & 0xffff_ffff_ffff)
}

fn md5_b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_policy_sas_reads_until_policy_removed() {
    let az = &shared().azurite;
    let admin = az.admin();
    let container = unique("policy");
    admin.create_container(&container).await.unwrap();
    // Idempotent.
    admin.create_container(&container).await.unwrap();

    let data = b"RecordID,Name\n000227544,hello\n".to_vec();
    let put = admin
        .put_blob(&container, "exports/a file.csv", &data)
        .await
        .unwrap();
    assert_eq!(put.content_md5.as_deref(), Some(md5_b64(&data).as_str()));
    assert!(!put.etag.is_empty());

    let expiry = SystemTime::now() + Duration::from_secs(3600);
    admin
        .set_access_policy(&container, "keep-me", "l", expiry)
        .await
        .unwrap();
    admin
        .set_access_policy(&container, "reader", "rl", expiry)
        .await
        .unwrap();
    let ids: Vec<String> = admin
        .access_policies(&container)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(ids, ["keep-me", "reader"]);

    let sas = admin.container_sas_for_policy(&container, "reader");
    assert!(sas.contains("sr=c") && sas.contains("si=reader") && sas.contains("sig="));
    assert!(!sas.starts_with('?'));
    let url = format!("{}?{sas}", az.blob_url(&container, "exports/a file.csv"));

    let resp = http().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let md5_header = resp
        .headers()
        .get("content-md5")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(md5_header, Some(md5_b64(&data)));
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());

    // List Blobs with the same SAS (it has `l`).
    let list = http()
        .get(format!(
            "{}?restype=container&comp=list&{sas}",
            az.container_url(&container)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    assert!(
        list.text()
            .await
            .unwrap()
            .contains("<Name>exports/a file.csv</Name>")
    );
    assert_eq!(
        admin.list_blobs(&container).await.unwrap(),
        ["exports/a file.csv"]
    );

    admin
        .remove_access_policy(&container, "reader")
        .await
        .unwrap();
    let resp = http().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let ids: Vec<String> = admin
        .access_policies(&container)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(ids, ["keep-me"]);

    admin
        .delete_blob(&container, "exports/a file.csv")
        .await
        .unwrap();
    assert!(admin.list_blobs(&container).await.unwrap().is_empty());
    admin.delete_container(&container).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_adhoc_sas_expiry_and_scope() {
    let az = &shared().azurite;
    let admin = az.admin();
    let container = unique("adhoc");
    admin.create_container(&container).await.unwrap();
    admin.put_blob(&container, "a.xml", b"<a/>").await.unwrap();
    admin.put_blob(&container, "b.xml", b"<b/>").await.unwrap();

    let later = SystemTime::now() + Duration::from_secs(600);
    let earlier = SystemTime::now() - Duration::from_secs(600);
    let get = |blob: &str, sas: String| {
        let url = format!("{}?{sas}", az.blob_url(&container, blob));
        async move { http().get(url).send().await.unwrap().status().as_u16() }
    };

    assert_eq!(
        get("a.xml", admin.container_sas(&container, "r", later)).await,
        200
    );
    assert_eq!(
        get("a.xml", admin.container_sas(&container, "r", earlier)).await,
        403
    );
    assert_eq!(
        get("a.xml", admin.blob_sas(&container, "a.xml", "r", later)).await,
        200
    );
    assert_eq!(
        get("a.xml", admin.blob_sas(&container, "a.xml", "r", earlier)).await,
        403
    );
    // A blob SAS is for that blob only.
    assert_eq!(
        get("b.xml", admin.blob_sas(&container, "a.xml", "r", later)).await,
        403
    );
    // A tampered signature is refused.
    let bad = admin
        .container_sas(&container, "r", later)
        .replace("sig=", "sig=AAAA");
    assert_eq!(get("a.xml", bad).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_block_upload_of_64_mib_file_is_byte_identical() {
    let az = &shared().azurite;
    let admin = az.admin();
    let container = unique("big");
    admin.create_container(&container).await.unwrap();

    // 64 MiB + a partial block of pseudo-random bytes.
    let size: usize = 64 * 1024 * 1024 + 12_345;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let (mut md5, mut sha) = (Md5::new(), Sha256::new());
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < size {
        let n = chunk.len().min(size - written);
        for b in &mut chunk[..n] {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = (state >> 24) as u8;
        }
        md5.update(&chunk[..n]);
        sha.update(&chunk[..n]);
        file.write_all(&chunk[..n]).unwrap();
        written += n;
    }
    file.flush().unwrap();
    let want_md5 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(md5.finalize())
    };
    let want_sha = sha.finalize();

    let started = Instant::now();
    let put = admin
        .put_blob_from_file(&container, "big.bin", file.path())
        .await
        .unwrap();
    eprintln!("uploaded {size} bytes in {:?}", started.elapsed());
    assert_eq!(put.size, size as u64);
    assert_eq!(put.content_md5.as_deref(), Some(want_md5.as_str()));

    let props = admin.blob_properties(&container, "big.bin").await.unwrap();
    assert_eq!(props.size, size as u64);
    assert_eq!(props.content_md5.as_deref(), Some(want_md5.as_str()));
    assert_eq!(props.etag, put.etag);

    let expiry = SystemTime::now() + Duration::from_secs(3600);
    let sas = admin.blob_sas(&container, "big.bin", "r", expiry);
    let mut resp = http()
        .get(format!("{}?{sas}", az.blob_url(&container, "big.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (mut got, mut sha) = (0usize, Sha256::new());
    while let Some(c) = resp.chunk().await.unwrap() {
        got += c.len();
        sha.update(&c);
    }
    assert_eq!(got, size);
    assert_eq!(sha.finalize(), want_sha);

    // Without MD5, as many large uploads arrive.
    let put = admin
        .put_blob_from_file_opts(&container, "nomd5.bin", file.path(), false)
        .await
        .unwrap();
    assert_eq!(put.content_md5, None);
    let props = admin
        .blob_properties(&container, "nomd5.bin")
        .await
        .unwrap();
    assert_eq!(props.content_md5, None);
    assert_eq!(props.size, size as u64);

    admin.delete_container(&container).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_empty_blobs() {
    let admin = shared().azurite.admin();
    let container = unique("empty");
    admin.create_container(&container).await.unwrap();
    let put = admin.put_blob(&container, "empty.csv", b"").await.unwrap();
    assert_eq!(put.size, 0);
    assert!(
        admin
            .get_blob(&container, "empty.csv")
            .await
            .unwrap()
            .is_empty()
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let put = admin
        .put_blob_from_file(&container, "empty.bin", file.path())
        .await
        .unwrap();
    assert_eq!(put.size, 0);
    assert_eq!(put.content_md5.as_deref(), Some(md5_b64(b"").as_str()));
    let props = admin
        .blob_properties(&container, "empty.bin")
        .await
        .unwrap();
    assert_eq!(props.size, 0);
    let mut names = admin.list_blobs(&container).await.unwrap();
    names.sort();
    assert_eq!(names, ["empty.bin", "empty.csv"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_bucket_create_and_reset() {
    // A private instance: reset would disturb other tests on the shared one.
    let moto = tokio::task::spawn_blocking(Moto::start)
        .await
        .unwrap()
        .unwrap();
    let bucket = unique("bucket");
    moto.create_bucket(&bucket).await.unwrap();
    moto.create_bucket(&bucket).await.unwrap();
    let url = format!("{}/{bucket}", moto.endpoint);
    assert_eq!(http().get(&url).send().await.unwrap().status(), 200);
    let put = http()
        .put(format!("{url}/state/x.json"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    moto.reset().await.unwrap();
    assert_eq!(http().get(&url).send().await.unwrap().status(), 404);

    // The shared instance answers too.
    let shared_moto = &shared().moto;
    let b = unique("shared");
    shared_moto.create_bucket(&b).await.unwrap();
    let status = http()
        .get(format!("{}/{b}", shared_moto.endpoint))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

#[test]
fn sshd_sftp_put_with_verified_host_key() {
    let sshd = &shared().sshd;
    assert!(sshd.host_key.starts_with("ssh-ed25519 AAAA"));
    assert_eq!(sshd.host_key.split(' ').count(), 2);
    assert!(
        sshd.client_key_pem
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
    );
    assert!(sshd.root.is_absolute() && sshd.root.is_dir());

    let dir = sshd.root.join(unique("in"));
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), b"hello sftp\n").unwrap();
    let batch = format!(
        "mkdir {dir}\nput {local} {dir}/hello.txt\nls {dir}\n",
        dir = dir.display(),
        local = local.path().display()
    );
    let out = sshd.sftp_batch(&batch).unwrap();
    assert!(out.contains("hello.txt"), "{out}");
    assert_eq!(
        std::fs::read(dir.join("hello.txt")).unwrap(),
        b"hello sftp\n"
    );
}

#[test]
fn sshd_kill_and_restart_keep_port_and_keys() {
    let mut sshd = Sshd::start().unwrap();
    let (port, key) = (sshd.port, sshd.host_key.clone());
    assert!(sshd.is_running());
    sshd.sftp_batch(&format!("ls {}\n", sshd.root.display()))
        .unwrap();

    let started = Instant::now();
    sshd.kill();
    eprintln!("kill took {:?}", started.elapsed());
    assert!(!sshd.is_running());
    assert!(!port_open(port));
    assert!(sshd.sftp_batch("ls /\n").is_err());

    let started = Instant::now();
    sshd.restart().unwrap();
    eprintln!("restart took {:?}", started.elapsed());
    assert_eq!((sshd.port, sshd.host_key.clone()), (port, key));
    // Strict host key checking against the same known_hosts still passes.
    sshd.sftp_batch(&format!("ls {}\n", sshd.root.display()))
        .unwrap();
    // Restart while running works too.
    sshd.restart().unwrap();
    assert!(port_open(port));
}

#[test]
fn servers_outlive_the_thread_that_started_them_and_die_on_drop() {
    // PDEATHSIG is tied to the spawning thread: the harness must spawn from its own
    // long-lived thread, or this server would die when the helper thread ends.
    let moto = std::thread::spawn(|| Moto::start().unwrap())
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = moto.pid().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(port_open(moto.port));
    let (port, dir) = (moto.port, moto.dir().to_path_buf());
    drop(moto);
    assert!(!port_open(port));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!dir.exists());
}

/// Not a test on its own: run in a child process by `nothing_survives_the_process`.
#[test]
fn nothing_survives_the_process() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness-child"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut pids = Vec::new();
    let mut dirs = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("PIDS") | Some("PRIVATE") => pids.extend(words.map(|w| w.parse::<i32>().unwrap())),
            Some("DIRS") => dirs.extend(words.map(std::path::PathBuf::from)),
            _ => {}
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(pids.len(), 4, "child did not report its servers");
    let deadline = Instant::now() + Duration::from_secs(10);
    // Gone, or a zombie waiting for init to reap it.
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    };
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let survivors: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(survivors.is_empty(), "servers survived: {survivors:?}");
    for d in &dirs {
        assert!(!d.exists(), "run dir left behind: {}", d.display());
    }
}

#[test]
fn postgres_starts_unprivileged_with_password_auth_and_dies_with_its_handle() {
    let pg = ferry_harness::Postgres::start().unwrap();
    let pid = pg.pid().unwrap();
    let psql = |password: &str| {
        Command::new(pg.bin_dir.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                &pg.user,
            ])
            .args([
                "-d",
                &pg.dbname,
                "-At",
                "-c",
                "select current_user, version()",
            ])
            .env("PGPASSWORD", password)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let ok = psql(&pg.password);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ferry|PostgreSQL"));
    let wrong = psql("not-the-password");
    assert!(
        !wrong.status.success(),
        "password authentication is enforced"
    );
    // PostgreSQL refuses root; as root the harness runs it as an unprivileged user.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(uid, 0);
    let dir = pg.dir().to_path_buf();
    drop(pg);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!dir.exists(), "run directory removed");
}
