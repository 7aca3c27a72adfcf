//! OpenPGP encryption before upload (a route's `encrypt`), on real components: files go from
//! Azurite through the webhook and blob-copy to OpenSSH SFTP and S3 (moto), and what lands there
//! is decrypted with the system's `gpg`, by each recipient's own keyring, to the byte-identical
//! source. Keys are generated at test time in temporary GnuPG homes (never committed); unusable
//! keys (expired, revoked, sign-only, garbage) are refused where encryption is built (blob-copy's
//! cold start, `ferry check`) with a message naming the key, and a private key already when the
//! config loads. Without `gpg` the tests say so and return.

use crate::support;

use serde_json::json;
use sha2::{Digest, Sha256};
use support::gpg::{Keyring, have_gpg, key_material};
use support::pipeline::{MIB, Options, Pipeline, job_of};

#[tokio::test]
async fn encrypted_delivery_to_sftp_and_s3_decrypts_with_gpg_for_each_recipient() {
    if !have_gpg() {
        return;
    }
    let alice = Keyring::new(
        "Alice <alice@partner.test>",
        "future-default",
        "default",
        "never",
        None,
    );
    let bob = Keyring::encrypting("Bob <bob@partner.test>", "2y");
    let p = Pipeline::new(Options {
        all_route_destinations: Some(vec!["sftp", "s3"]),
        encrypt: Some(json!({"recipients": [
            {"armored": alice.public_armored()},
            support::file_secret(&bob.public_armored()),
        ]})),
        ..Options::default()
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    for (name, seed, len) in [
        ("empty.csv", 1u64, 0u64),
        ("daily HMIS.csv", 2, 300_000),
        ("big export.xml", 3, 64 * MIB),
    ] {
        let source_sha = p.upload(name, seed, len).await;
        let (status, answer) = p.notify(name).await;
        assert_eq!(status, 202, "{answer}");
        let (job_id, job_key) = job_of(&answer, "all");
        assert!(!p.copy(&job_key, 1).await, "{name} asked for redelivery");
        let receipts = p.receipts(&job_id).await;
        assert_eq!(receipts.len(), 2, "{receipts:?}");
        let delivered = format!("{name}.pgp");
        let on_sftp = p
            .sftp_file(&delivered)
            .unwrap_or_else(|| panic!("SFTP has {delivered}"));
        let on_s3 = p
            .s3_object(&delivered)
            .await
            .unwrap_or_else(|| panic!("S3 has {delivered}"));
        assert!(p.sftp_file(name).is_none(), "no plaintext copy on SFTP");
        for (dest, ciphertext) in [("sftp", &on_sftp), ("s3", &on_s3)] {
            let r = &receipts[dest];
            // The receipt describes what the destination holds, and what was encrypted.
            assert_eq!(r.transform.map(|t| t.as_str()), Some("pgp"), "{r:?}");
            assert_eq!(r.bytes, ciphertext.len() as u64, "{r:?}");
            assert_eq!(r.sha256, hex::encode(Sha256::digest(ciphertext)), "{r:?}");
            let plain = r.plaintext.as_ref().expect("plaintext in receipt");
            assert_eq!(
                (plain.bytes, plain.sha256.as_str()),
                (len, source_sha.as_str())
            );
            assert_ne!(r.sha256, source_sha, "{dest} holds ciphertext");
            // Each recipient decrypts on their own.
            for ring in [&alice, &bob] {
                assert_eq!(
                    ring.decrypt_sha(ciphertext, work.path()),
                    source_sha,
                    "{} decrypts {name} from {dest}",
                    ring.uid
                );
            }
        }
    }
    p.assert_logs_clean();
    let mut secrets = key_material(&alice.secret_armored());
    secrets.extend(key_material(&bob.secret_armored()));
    support::logs::assert_no_secrets(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_name_template_names_the_encrypted_file() {
    if !have_gpg() {
        return;
    }
    let carol = Keyring::encrypting("Carol <carol@partner.test>", "never");
    let p = Pipeline::new(Options {
        all_route_destinations: Some(vec!["sftp"]),
        name_template: Some("AGENCY_{name}.pgp"),
        encrypt: Some(json!({"recipients": [{"armored": carol.public_armored()}]})),
        ..Options::default()
    })
    .await;
    let sha = p.upload("hmis.zip", 9, 10_000).await;
    let (_, answer) = p.notify("hmis.zip").await;
    let (_, key) = job_of(&answer, "all");
    assert!(!p.copy(&key, 1).await);
    let ciphertext = p.sftp_file("AGENCY_hmis.zip.pgp").expect("templated name");
    let work = tempfile::tempdir().unwrap();
    assert_eq!(carol.decrypt_sha(&ciphertext, work.path()), sha);
}

/// An inline key is checked against the time of the load (blob-copy's cold start), not of some
/// earlier check: a key that expired in between is refused, not encrypted to.
#[tokio::test]
async fn an_inline_key_is_checked_for_its_expiry_at_the_time_of_the_load() {
    if !have_gpg() {
        return;
    }
    let soon = Keyring::encrypting("Soon Gone <soon@partner.test>", "2d");
    let p = Pipeline::new(Options {
        all_route_destinations: Some(vec!["sftp"]),
        encrypt: Some(json!({"recipients": [{"armored": soon.public_armored()}]})),
        ..Options::default()
    })
    .await;
    let services = support::services(&p.copy_config).await;
    let encrypt = services.config.routes[0]
        .encrypt
        .as_ref()
        .expect("the route encrypts");
    let now = std::time::SystemTime::now();
    let loaded = encrypt
        .load_at(&services.secrets, now)
        .await
        .expect("usable now");
    assert_eq!(loaded.keys()[0].fingerprint(), soon.fingerprint());
    let later = now + std::time::Duration::from_secs(3 * 24 * 3600);
    let e = encrypt
        .load_at(&services.secrets, later)
        .await
        .expect_err("expired by then")
        .to_string();
    assert!(
        e.contains("recipients[0]") && e.contains("expired at") && e.contains(&soon.fingerprint()),
        "{e}"
    );
}

#[tokio::test]
async fn unusable_recipient_keys_are_refused_naming_the_key() {
    if !have_gpg() {
        return;
    }
    let good = Keyring::encrypting("Good <good@partner.test>", "never");
    let expired = Keyring::new(
        "Old Partner <old@partner.test>",
        "default",
        "default",
        "1d",
        Some("20200101T000000"),
    );
    let signer = Keyring::new(
        "Signer <sign@partner.test>",
        "ed25519",
        "sign",
        "never",
        None,
    );
    let revoked = Keyring::encrypting("Gone <gone@partner.test>", "never");
    revoked.revoke();
    let p = Pipeline::new(Options {
        all_route_destinations: Some(vec!["sftp"]),
        encrypt: Some(json!({"recipients": [{"armored": good.public_armored()}]})),
        ..Options::default()
    })
    .await;
    // Each key is checked where encryption is built (blob-copy's cold start): the config itself
    // loads, so the functions that never encrypt start and verify no key.
    let with = |recipient: serde_json::Value| {
        let mut config = p.copy_config.clone();
        config["routes"][0]["encrypt"] =
            json!({"recipients": [{"armored": good.public_armored()}, recipient]});
        config
    };
    let build = |config: serde_json::Value| async move {
        ferry_shared::config::Config::from_json(&config.to_string())
            .expect("the config loads: the keys are checked where they are used");
        match support::services(&config).await.engine().await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    };
    let secret = good.secret_armored();
    for (recipient, wanted) in [
        (
            json!({"armored": expired.public_armored()}),
            vec![
                "expired at 2020-01-02".to_string(),
                expired.fingerprint(),
                "Old Partner <old@partner.test>".into(),
            ],
        ),
        (
            json!({"armored": signer.public_armored()}),
            vec!["no usable encryption key".into(), signer.fingerprint()],
        ),
        (
            json!({"armored": revoked.public_armored()}),
            vec!["is revoked".into(), revoked.fingerprint()],
        ),
        (
            json!({"armored": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n-----END PGP PUBLIC KEY BLOCK-----\n"}),
            vec!["not an armored OpenPGP public key".into()],
        ),
    ] {
        let e = build(with(recipient)).await.unwrap_err();
        assert!(
            e.contains("route \"all\"") && e.contains("recipients[1]"),
            "{e}"
        );
        for w in &wanted {
            assert!(e.contains(w.as_str()), "{w:?} not in {e}");
        }
    }
    assert_eq!(
        build(with(json!({"armored": good.public_armored()}))).await,
        Ok(())
    );
    // A private key, and text with no public key block, are refused when the config loads, by
    // every function, before any parser can echo the text.
    for (recipient, wanted) in [
        (json!({"armored": secret}), "private key"),
        (
            json!({"armored": "mQGNBGsNgdcBDACs"}),
            "not an armored OpenPGP public key",
        ),
    ] {
        let e = ferry_shared::config::Config::from_json(&with(recipient).to_string())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("route \"all\"") && e.contains("recipients[1]") && e.contains(wanted),
            "{e}"
        );
        for line in key_material(&secret) {
            assert!(!e.contains(&line), "key material in the error");
        }
    }
    // Behind a secret reference the key is checked at blob-copy's cold start.
    let mut config = p.copy_config.clone();
    config["routes"][0]["encrypt"] =
        json!({"recipients": [support::file_secret(&expired.public_armored())]});
    let services = support::services(&config).await;
    let e = services.engine().await.err().expect("refused").to_string();
    assert!(
        e.contains("expired") && e.contains(&expired.fingerprint()) && e.contains("route \"all\""),
        "{e}"
    );
    // ferry check reports it on the route, with what to do.
    let reports = services
        .probe_all(ferry_shared::services::PROBE_TIMEOUT)
        .await;
    let route = reports
        .iter()
        .find(|r| r.section == ferry_shared::probe::Section::Route && r.name == "all")
        .expect("a report for the route's keys");
    assert!(
        route.line().starts_with("FAIL route all (encrypt): ")
            && route.line().contains(&expired.fingerprint())
            && route.line().contains("gpg --export"),
        "{}",
        route.line()
    );
    let mut config = p.copy_config.clone();
    config["routes"][0]["encrypt"] = json!({"recipients": []});
    let e = ferry_shared::config::Config::from_json(&config.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least one recipient"), "{e}");
}
