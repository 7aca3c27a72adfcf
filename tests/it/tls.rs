//! ferry's HTTP clients, and the AWS SDK's, trust the roots `ferry_shared::tls` reads (the system's
//! CA bundle, read once per process): checked against OpenSSL's own TLS server with a CA made for
//! the test.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferry_shared::http_client;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills the server when the test ends, however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn clients_trust_the_ca_bundle_they_are_given_and_the_system_roots_are_read() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: no openssl binary to run a TLS server with a test CA");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    // A P-256 key, unencrypted, for the CA and for the server.
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ferry test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ];
    openssl(d, &[&["req", "-x509", "-new"][..], &key, &ca].concat());
    let leaf = [
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ];
    openssl(d, &[&["req", "-new"][..], &key, &leaf].concat());
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let _server = Server(
        Command::new("openssl")
            .current_dir(d)
            .args([
                "s_server", "-www", "-quiet", "-cert", "leaf.pem", "-key", "leaf.key",
            ])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "s_server never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("https://localhost:{port}/");

    let tls = ferry_shared::tls::client_tls_from(&d.join("ca.pem"));
    assert_eq!(tls.roots(), 1, "the bundle holds one CA");
    let trusting = http_client::with_tls(Duration::from_secs(10), &tls);
    let answer = trusting
        .get(&url)
        .send()
        .await
        .expect("TLS with the test CA");
    assert_eq!(answer.status(), 200);
    // s_server serves one connection at a time: let this one go.
    drop((answer, trusting));

    // The AWS SDK's client trusts the same roots: given the test CA, the TLS handshake succeeds
    // and the request reaches the server (which answers an HTML page, not S3's XML).
    let dispatch = |client| async move {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .endpoint_url(format!("https://localhost:{port}"))
            .force_path_style(true)
            .http_client(client)
            .build();
        let err = aws_sdk_s3::Client::from_conf(conf)
            .list_objects_v2()
            .bucket("b")
            .send()
            .await
            .expect_err("s_server is no S3");
        let text = format!("{:?}", aws_sdk_s3::error::DisplayErrorContext(&err));
        match err {
            aws_sdk_s3::error::SdkError::DispatchFailure(_) => Err(text),
            _ => Ok(text),
        }
    };
    let through = dispatch(ferry_shared::http_client::aws_http_client_from(
        &d.join("ca.pem"),
    ))
    .await;
    assert!(
        through.is_ok(),
        "the SDK's client did not trust the CA it was given: {through:?}"
    );
    let refused = dispatch(ferry_shared::http_client::aws_http_client()).await;
    let text = refused.expect_err("the SDK's client trusts the test CA, not a system root");
    assert!(
        text.contains("UnknownIssuer") || text.contains("certificate"),
        "not a certificate error: {text}"
    );

    // The process's roots are the system's bundle, which does not hold the test CA.
    assert!(
        ferry_shared::tls::client_tls().roots() > 10,
        "the system's CA bundle was not read"
    );
    let system = http_client::build(Duration::from_secs(10));
    let err = system
        .get(&url)
        .send()
        .await
        .expect_err("the test CA is not a system root");
    let text = format!("{:?}", err);
    assert!(
        text.contains("UnknownIssuer") || text.contains("certificate"),
        "not a certificate error: {text}"
    );
}
