//! The reconciliation sweep on real components: Azurite lists the container (paged, and
//! refusing a SAS without `l`), moto holds the jobs, blob-copy delivers them to a local HTTP
//! endpoint that counts what it received. The sweep must find exactly the blobs whose webhook
//! never came, and the webhook and the sweep together must never deliver a file twice.

use crate::support;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use ferry_shared::reconcile::{RouteSweep, SweepOptions};
use serde_json::json;
use support::pipeline::{Options, Pipeline, job_of};

/// A pipeline whose "all" route delivers to the HTTP endpoint only.
async fn pipeline() -> Pipeline {
    Pipeline::new(Options {
        all_route_destinations: Some(vec!["http"]),
        ..Options::default()
    })
    .await
}

/// Waits until Azurite's clock (whole seconds in List Blobs) has moved past `t`.
async fn next_second() -> SystemTime {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    t
}

fn route<'a>(summary: &'a ferry_shared::reconcile::SweepSummary, name: &str) -> &'a RouteSweep {
    summary
        .routes
        .iter()
        .find(|r| r.route == name)
        .unwrap_or_else(|| panic!("no {name} in {summary:?}"))
}

#[tokio::test]
async fn sweep_creates_exactly_the_missed_jobs_and_nothing_is_delivered_twice() {
    let p = pipeline().await;
    // Older than the window: left alone.
    for i in 0..5 {
        p.upload(&format!("old-{i:02}.csv"), 1000 + i, 300).await;
    }
    let since = next_second().await;
    let mut names = Vec::new();
    let mut shas = Vec::new();
    for i in 0..200u64 {
        let name = format!("export-{i:04}.csv");
        shas.push(p.upload(&name, i, 200 + i).await);
        names.push(name);
    }
    // Names the webhook would refuse: in the window, taken by the route's (empty) glob.
    let unsafe_names = [
        "invoice\u{202E}vsc.exe",
        "zero\u{200B}width.csv",
        "   ",
        "bidi\u{2066}iso\u{2069}.csv",
    ];
    for (i, name) in unsafe_names.iter().enumerate() {
        p.upload(name, 5000 + i as u64, 100).await;
    }
    // 150 announced and delivered by their webhooks; 50 never announced.
    for name in &names[..150] {
        let (status, answer) = p.notify(name).await;
        assert_eq!(status, 202, "{answer}");
        let (_, key) = job_of(&answer, "all");
        assert!(!p.copy(&key, 1).await, "{name} delivered");
    }

    let mut config = p.copy_config.clone();
    config["reconcile"] = json!({"page_size": 80, "concurrency": 8});
    let services = support::services(&config).await;
    let reconciler = services.reconciler().await.unwrap();

    // A dry run through the operator's CLI counts, writes nothing.
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("ferry.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "reconcile",
            "--route",
            "all",
            "--dry-run",
            "--lookback",
            "1h",
            "--json",
            "--config",
        ])
        .arg(&config_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Logs go to stderr: stdout is the summary alone.
    let dry: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is the summary");
    assert_eq!(dry["dry_run"], true);
    let dry_all = &dry["routes"][0];
    assert_eq!(
        (
            dry_all["route"].as_str(),
            dry_all["would_create"].as_u64(),
            dry_all["already_known"].as_u64()
        ),
        (Some("all"), Some(55), Some(150)),
        "the 50 unannounced and the 5 older blobs (1 h lookback): {dry_all}"
    );
    assert_eq!(dry_all["created"], 0);
    assert_eq!(
        p.copy.state.list("jobs/all/").await.unwrap().len(),
        150,
        "a dry run writes nothing"
    );

    let options = SweepOptions {
        since: Some(since),
        correlation_id: "sweep-1".into(),
        ..SweepOptions::default()
    };
    let summary = reconciler.sweep(&options).await.unwrap();
    let all = route(&summary, "all");
    assert_eq!(all.pages, 3, "209 blobs at 80 a page: {all:?}");
    assert_eq!(all.listed, 209);
    assert_eq!(all.outside_lookback, 5, "{all:?}");
    assert_eq!(all.refused_name, unsafe_names.len() as u64, "{all:?}");
    assert_eq!(all.already_known, 150, "{all:?}");
    assert_eq!(all.created, 50, "{all:?}");
    assert_eq!(all.not_taken, 0);
    assert!(all.error.is_none());
    // The other route takes only HMIS zips: none here.
    let hmis = route(&summary, "hmis-zips");
    assert_eq!((hmis.listed, hmis.not_taken, hmis.created), (209, 209, 0));

    // Exactly the 50 unannounced files got jobs: the ids the webhook would have used.
    let mut created: BTreeSet<String> = all.job_keys.iter().cloned().collect();
    assert_eq!(created.len(), 50);
    let jobs: BTreeSet<String> = p
        .copy
        .state
        .list("jobs/all/")
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(jobs.len(), 200, "150 from webhooks + 50 from the sweep");
    for key in &created {
        assert!(!p.copy(key, 1).await, "{key} delivered");
    }
    for (name, sha) in names.iter().zip(&shas) {
        let bodies = p.http_bodies(name).await;
        assert_eq!(bodies.len(), 1, "{name} delivered exactly once");
        assert_eq!(
            &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bodies[0])),
            sha,
            "{name} bytes"
        );
    }
    for i in 0..5 {
        assert!(
            p.http_bodies(&format!("old-{i:02}.csv")).await.is_empty(),
            "outside the window"
        );
    }

    // A second sweep finds everything known.
    let again = reconciler
        .sweep(&SweepOptions {
            correlation_id: "sweep-2".into(),
            ..options.clone()
        })
        .await
        .unwrap();
    let all2 = route(&again, "all");
    assert_eq!((all2.created, all2.already_known), (0, 200), "{all2:?}");

    // A late webhook for a swept file: the same job, a duplicate, no second delivery.
    let late = &names[170];
    let (status, answer) = p.notify(late).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate")),
        "{answer}"
    );
    let (_, key) = job_of(&answer, "all");
    assert!(created.remove(&key), "the webhook names the sweep's job");
    assert!(!p.copy(&key, 2).await);
    assert_eq!(p.http_bodies(late).await.len(), 1, "still one delivery");

    // Unsafe names: counted, logged, never a job.
    let logs = support::logs::text();
    assert!(
        logs.contains("reconcile: blob not delivered: unsafe name"),
        "refusals are logged"
    );
    assert!(logs.contains("U+202E"), "the reason names the character");
    assert!(
        logs.contains("reconcile created jobs for missed webhooks"),
        "the alarm's line"
    );
    p.assert_logs_clean();
}

#[tokio::test]
async fn a_sas_without_list_permission_is_one_clear_error_and_writes_nothing() {
    let p = pipeline().await;
    p.upload("never-announced.csv", 7, 100).await;
    let admin = ferry_harness::shared().azurite.admin();
    // Read but not list: what a ClientTrack policy set up for webhooks alone allows.
    let read_only = admin.container_sas(
        &p.container,
        "r",
        SystemTime::now() + Duration::from_secs(3600),
    );
    let mut config = p.copy_config.clone();
    config["sources"]["clienttrack"]["sas"] = support::file_secret(&read_only);
    let services = support::services(&config).await;
    let reconciler = services.reconciler().await.unwrap();
    let summary = reconciler
        .sweep(&SweepOptions {
            routes: vec!["all".into()],
            correlation_id: "no-list".into(),
            ..SweepOptions::default()
        })
        .await
        .unwrap();
    let all = route(&summary, "all");
    let error = all.error.as_deref().expect("the route failed");
    assert!(error.contains("`l` (list) permission"), "{error}");
    assert!(
        error.contains("AuthorizationPermissionMismatch"),
        "Azurite's own refusal: {error}"
    );
    assert!(error.contains(&p.container), "{error}");
    assert_eq!((all.pages, all.created), (0, 0));
    assert!(
        p.copy.state.list("jobs/").await.unwrap().is_empty(),
        "nothing written"
    );
    // The function reports it as its error (the schedule's error alarm sees it).
    let e = reconcile::report(&summary).unwrap_err().to_string();
    assert!(
        e.contains("route \"all\"") && e.contains("`l` (list)"),
        "{e}"
    );
    let sig = read_only
        .split('&')
        .find_map(|kv| kv.strip_prefix("sig="))
        .unwrap();
    support::logs::assert_no_secrets(&[sig]);
    // An unknown route is refused before anything is listed.
    let e = reconciler
        .sweep(&SweepOptions {
            routes: vec!["nope".into()],
            ..SweepOptions::default()
        })
        .await
        .unwrap_err();
    assert!(e.contains("no webhook route named \"nope\""), "{e}");
}
