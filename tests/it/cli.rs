//! The operator's `ferry` command, run as a process the way an operator runs it: help and usage
//! errors (exit 2, one message and the usage, no backtrace even with `RUST_BACKTRACE=1`), and the
//! inspection commands (`jobs`, `show`, `failed`, `find`, `replay`, `run-job`) on a state bucket
//! that a real run filled (Azurite -> SFTP, S3 on moto, an HTTP endpoint): a success, a dead
//! letter, a replayed job, a pending job and a refused pub/sub message; and `sync-views` printing
//! every view's outcome when one of them fails.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_shared::job::{RejectedMessage, now_rfc3339, rejected_message_id};
use ferry_shared::layout::failure_key;
use ferry_shared::state::{PutMode, StateStoreExt};
use serde_json::{Value, json};
use support::pipeline::{Options, Pipeline, job_of};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Respond, ResponseTemplate};

/// Runs `ferry ARGS` with `RUST_BACKTRACE=1` (a user error must still print no backtrace).
fn ferry(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("FERRY_CONFIG_FILE")
        .env_remove("FERRY_LOG_FORMAT")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing both streams when it differs.
fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// A usage error: exit 2, an `error:` line, the usage, no backtrace, nothing on stdout.
fn assert_usage_error(out: &Output, needle: &str) {
    assert_exit(out, 2, needle);
    let err = stderr(out);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    assert!(err.contains("Usage: ferry "), "no usage:\n{err}");
    assert!(
        !err.to_lowercase().contains("backtrace") && !err.contains("panicked"),
        "{err}"
    );
    assert!(stdout(out).is_empty(), "{}", stdout(out));
}

fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The text between `<!-- {marker}:start -->` and `<!-- {marker}:end -->` in README.md.
fn readme_block(marker: &str) -> String {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = format!("<!-- {marker}:start -->\n");
    let from = text.find(&start).expect("start marker") + start.len();
    let to = text[from..]
        .find(&format!("<!-- {marker}:end -->"))
        .expect("end marker")
        + from;
    text[from..to].to_string()
}

#[test]
fn help_shows_every_command_and_usage_errors_exit_2_without_a_backtrace() {
    let help = ferry(&["--help"]);
    assert_exit(&help, 0, "--help");
    let text = stdout(&help);
    for command in [
        "serve",
        "check",
        "jobs",
        "show",
        "failed",
        "find",
        "replay",
        "run-job",
        "sync-views",
        "token-refresh",
        "export-pull",
        "reconcile",
        "state-layout",
    ] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} not listed:\n{text}"
        );
    }
    assert_eq!(
        readme_block("ferry-help"),
        format!("```text\n{text}```\n"),
        "README.md shows an old `ferry --help`: paste `cargo run --bin ferry -- --help` between its ferry-help markers"
    );
    // Per-command help has examples.
    for command in [
        "serve", "jobs", "show", "failed", "find", "replay", "run-job",
    ] {
        let out = ferry(&[command, "--help"]);
        assert_exit(&out, 0, command);
        assert!(
            stdout(&out).contains("Examples:"),
            "{command}: {}",
            stdout(&out)
        );
    }
    // A bad flag, a missing config, a bad value: clap's errors, exit 2.
    let out = ferry(&["jobs", "--frobnicate"]);
    assert_usage_error(&out, "--frobnicate");
    let out = ferry(&["jobs"]);
    assert_usage_error(&out, "--config <FILE>");
    let out = ferry(&["serve", "--config", "x.json", "--concurrency", "0"]);
    assert_exit(&out, 2, "--concurrency 0");
    assert!(stderr(&out).contains("at least 1"), "{}", stderr(&out));
    // `--ingest-only` takes no value: the next flag is still a flag.
    let out = ferry(&[
        "serve",
        "--ingest-only",
        "--config",
        "/nonexistent/ferry.json",
    ]);
    assert_usage_error(&out, "cannot read the config /nonexistent/ferry.json");
    // A config that does not parse: our own message, the same shape.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ferry.json");
    std::fs::write(&bad, r#"{"state": {"bucket": "b"}, "routs": []}"#).unwrap();
    let out = ferry(&["failed", "--config", bad.to_str().unwrap()]);
    assert_usage_error(&out, "unknown field `routs`");
    assert_eq!(
        stderr(&out).matches("error:").count(),
        1,
        "{}",
        stderr(&out)
    );
    // The config also comes from FERRY_CONFIG_FILE.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["jobs"])
        .env("FERRY_CONFIG_FILE", &bad)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_usage_error(&out, "unknown field `routs`");
}

/// Answers 403 while its flag is set, 201 after.
struct Refusing(Arc<AtomicBool>);

impl Respond for Refusing {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        ResponseTemplate::new(if self.0.load(Ordering::SeqCst) {
            403
        } else {
            201
        })
    }
}

/// The copy config in a file, for the process.
fn config_file(p: &Pipeline, dir: &Path) -> PathBuf {
    let path = dir.join("ferry.json");
    std::fs::write(&path, p.copy_config.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn inspection_of_a_real_run_with_a_success_a_dead_letter_and_a_replay() {
    let p = Pipeline::new(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&p, dir.path());
    let config = config.to_str().unwrap();
    // The HTTP endpoint refuses two files (403: not retryable, so dead-lettered at once); the
    // refusal of `fixed.csv` is lifted before its replay.
    Mock::given(method("PUT"))
        .and(path("/files/refused.csv"))
        .respond_with(ResponseTemplate::new(403))
        .with_priority(1)
        .mount(&p.http)
        .await;
    let fixed = Arc::new(AtomicBool::new(true));
    Mock::given(method("PUT"))
        .and(path("/files/fixed.csv"))
        .respond_with(Refusing(fixed.clone()))
        .with_priority(1)
        .mount(&p.http)
        .await;
    let mut sha = std::collections::BTreeMap::new();
    let mut ids = std::collections::BTreeMap::new();
    let mut keys = std::collections::BTreeMap::new();
    for (i, name) in ["ok.csv", "refused.csv", "fixed.csv", "waiting.csv"]
        .into_iter()
        .enumerate()
    {
        sha.insert(name, p.upload(name, 40 + i as u64, 3000 + i as u64).await);
        let (status, answer) = p.notify(name).await;
        assert_eq!(status, 202, "{answer}");
        let (id, key) = job_of(&answer, "all");
        ids.insert(name, id);
        keys.insert(name, key);
    }

    // run-job by id: delivered to all three, exit 0.
    let out = ferry(&["run-job", "--config", config, &ids["ok.csv"]]);
    assert_exit(&out, 0, "run-job ok.csv");
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "{}: completed (3 delivered now, 0 delivered before)",
            keys["ok.csv"]
        )
    );
    // run-job by key of a job that dead-letters: exit 1, the reason on stdout.
    let out = ferry(&["run-job", "--config", config, &keys["refused.csv"]]);
    assert_exit(&out, 1, "run-job refused.csv");
    assert!(
        stdout(&out).starts_with(&format!("{}: dead-lettered: ", keys["refused.csv"])),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("403"), "{}", stdout(&out));
    // Logs went to stderr, as JSON lines (stderr is no terminal here), with a timestamp.
    let log = stderr(&out);
    let first: Value = serde_json::from_str(log.lines().next().expect("log lines")).unwrap();
    assert!(first["timestamp"].is_string(), "{first}");
    // Again: already dead-lettered, still exit 1.
    let out = ferry(&["run-job", "--config", config, &keys["refused.csv"]]);
    assert_exit(&out, 1, "run-job refused.csv again");
    assert!(
        stdout(&out).contains("already dead-lettered"),
        "{}",
        stdout(&out)
    );
    // fixed.csv dead-letters in blob-copy's handler, as in production.
    assert!(
        !p.copy(&keys["fixed.csv"], 1).await,
        "dead-lettered, not redelivered"
    );
    assert!(p.failure(&ids["fixed.csv"]).await.is_some());
    // A pub/sub message refused before it became a job, as export-pull records it.
    let msg_id = rejected_message_id("egretail", "m-77", 77);
    let rejected = RejectedMessage {
        id: msg_id.clone(),
        source: "egretail".into(),
        kind: ferry_shared::job::RejectionKind::RefusedUri,
        reason: "uri host evil.example is not one of the token's blob bases".into(),
        message_id: "m-77".into(),
        sequence_number: 77,
        delivery_count: 1,
        correlation_id: Some("c-77".into()),
        blob_type: Some("Gateway.ItemChanges".into()),
        dead_letter_reason: None,
        dead_letter_description: None,
        body: "{\"uri\":\"https://evil.example/x\"}".into(),
        body_truncated: false,
        rejected_at: now_rfc3339(),
    };
    p.copy
        .state
        .put_json(&failure_key(&msg_id), &rejected, PutMode::Create)
        .await
        .unwrap();

    // jobs: every job with its state, read one key per page.
    let out = ferry(&["jobs", "--config", config, "--json", "--page-size", "1"]);
    assert_exit(&out, 0, "jobs");
    let states: std::collections::BTreeMap<String, String> = json_lines(&out)
        .iter()
        .map(|v| {
            (
                v["job"]["object"]["name"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: std::collections::BTreeMap<String, String> = [
        ("fixed.csv", "failed"),
        ("ok.csv", "done"),
        ("refused.csv", "failed"),
        ("waiting.csv", "pending"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(states, want);
    let out = ferry(&["jobs", "--config", config, "--state", "failed"]);
    assert_exit(&out, 0, "jobs --state failed");
    let text = stdout(&out);
    assert!(text.contains(&ids["refused.csv"]) && text.contains(&ids["fixed.csv"]));
    assert!(!text.contains(&ids["ok.csv"]) && !text.contains(&ids["waiting.csv"]));
    assert!(
        text.contains("2 jobs: 0 pending, 0 done, 2 failed"),
        "{text}"
    );
    let out = ferry(&[
        "jobs",
        "--config",
        config,
        "--route",
        "hmis-zips",
        "--since",
        "1h",
    ]);
    assert!(stdout(&out).contains("0 jobs"), "{}", stdout(&out));

    // show: each destination's receipt with the source's checksum.
    let out = ferry(&["show", "--config", config, "--json", &ids["ok.csv"]]);
    assert_exit(&out, 0, "show ok.csv");
    let shown: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["state"], "done");
    let dests = shown["destinations"].as_array().unwrap();
    assert_eq!(dests.len(), 3);
    for d in dests {
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["receipt"]["sha256"], sha["ok.csv"].as_str(), "{d}");
        assert_eq!(d["receipt"]["bytes"], 3000, "{d}");
    }
    // A dead letter: the failing destination's error, the others' receipts, the attempts.
    let out = ferry(&["show", "--config", config, &ids["refused.csv"]]);
    assert_exit(&out, 0, "show refused.csv");
    let text = stdout(&out);
    assert!(
        text.contains(&format!("job {} (failed)", ids["refused.csv"])),
        "{text}"
    );
    assert!(
        text.contains("  http: FAILED: ") && text.contains("403"),
        "{text}"
    );
    assert!(
        text.contains(&format!("sha256 {}", sha["refused.csv"])),
        "{text}"
    );
    assert!(text.contains("after 1 attempts"), "{text}");
    assert!(
        text.contains(&format!("ferry replay {}", ids["refused.csv"])),
        "{text}"
    );
    let out = ferry(&["show", "--config", config, &msg_id]);
    assert_exit(&out, 0, "show msg");
    assert!(
        stdout(&out).contains("evil.example is not one of"),
        "{}",
        stdout(&out)
    );
    let out = ferry(&["show", "--config", config, "0123456789abcdef"]);
    assert_exit(&out, 1, "show unknown");
    assert!(stderr(&out).contains("no job with id 0123456789abcdef"));

    // failed: both dead letters with reasons, and the refused message.
    let out = ferry(&["failed", "--config", config, "--json", "--page-size", "2"]);
    assert_exit(&out, 0, "failed");
    let letters = json_lines(&out);
    assert_eq!(letters.len(), 3, "{letters:?}");
    let jobs: Vec<&Value> = letters.iter().filter(|l| l["type"] == "job").collect();
    assert_eq!(jobs.len(), 2);
    for j in &jobs {
        assert!(
            j["destinations"]["http"].as_str().unwrap().contains("403"),
            "{j}"
        );
        assert_eq!(j["attempts"], 1);
    }
    let msg = letters.iter().find(|l| l["type"] == "message").unwrap();
    assert_eq!(
        (msg["id"].as_str(), msg["kind"].as_str()),
        (Some(msg_id.as_str()), Some("refused_uri"))
    );
    let out = ferry(&["failed", "--config", config]);
    assert!(
        stdout(&out).contains("2 failed jobs, 1 refused messages"),
        "{}",
        stdout(&out)
    );

    // find: where the file went, with which checksum; nothing for an unknown name.
    let out = ferry(&[
        "find",
        "--config",
        config,
        "--json",
        "--page-size",
        "1",
        "ok.csv",
    ]);
    assert_exit(&out, 0, "find ok.csv");
    let found = json_lines(&out);
    assert_eq!(found.len(), 1, "{found:?}");
    let locations: Vec<&str> = found[0]["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["receipt"]["location"].as_str().unwrap())
        .collect();
    assert!(
        locations.iter().any(|l| l.contains(&p.archive_bucket)),
        "{locations:?}"
    );
    assert!(
        locations.iter().any(|l| l.contains("ok.csv")),
        "{locations:?}"
    );
    let out = ferry(&["find", "--config", config, "ok.csv"]);
    assert!(stdout(&out).contains(&sha["ok.csv"]), "{}", stdout(&out));
    let out = ferry(&["find", "--config", config, "never-sent.csv"]);
    assert_exit(&out, 1, "find unknown");
    assert!(stdout(&out).contains("no job for a file named never-sent.csv"));

    // replay by id alone after the endpoint was fixed: only http is delivered again.
    fixed.store(false, Ordering::SeqCst);
    let out = ferry(&["replay", "--config", config, &ids["fixed.csv"]]);
    assert_exit(&out, 0, "replay fixed.csv");
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "{}: completed (1 delivered now, 2 delivered before)",
            keys["fixed.csv"]
        )
    );
    assert!(
        p.failure(&ids["fixed.csv"]).await.is_none(),
        "dead letter cleared"
    );
    assert_eq!(
        p.http_bodies("fixed.csv").await.len(),
        2,
        "refused once, then delivered"
    );
    let out = ferry(&["show", "--config", config, "--json", &ids["fixed.csv"]]);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&out)).unwrap()["state"],
        "done"
    );
    // A refused message is not a job.
    let out = ferry(&["replay", "--config", config, &msg_id]);
    assert_usage_error(&out, "not a job");
    // --all-failed: the still-refused job fails again (exit 1), the message is left.
    let out = ferry(&[
        "replay",
        "--config",
        config,
        "--all-failed",
        "--route",
        "all",
    ]);
    assert_exit(&out, 1, "replay --all-failed");
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{}: dead-lettered: ", keys["refused.csv"])),
        "{text}"
    );
    assert!(
        text.contains("1 replayed, 0 completed, 1 failed again; 1 refused messages"),
        "{text}"
    );
    let out = ferry(&["failed", "--config", config, "--json"]);
    let ids_left: Vec<String> = json_lines(&out)
        .iter()
        .map(|l| {
            l["job_id"]
                .as_str()
                .or(l["id"].as_str())
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids_left.len(), 2, "{ids_left:?}");
    assert!(ids_left.contains(&ids["refused.csv"]) && ids_left.contains(&msg_id));
    p.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_views_prints_every_views_outcome_then_fails() {
    support::aws_test_env();
    let moto = &ferry_harness::shared().moto;
    let view = support::view::MockView::start("view-password-Cl1!").await;
    view.push(support::view::records(0, 7));
    let lake = support::sinks::s3().await;
    let bucket = support::unique("state");
    moto.create_bucket(&bucket).await.unwrap();
    let view_config = |password: &str| {
        json!({"url": view.url(), "on_behalf_of": support::view::ON_BEHALF_OF, "username": view.user,
            "password": support::file_secret(password), "sink": "lake", "chunk_size": 5})
    };
    let config = json!({
        "state": {"bucket": bucket, "endpoint": {"endpoint_url": moto.endpoint, "force_path_style": true}},
        // Sorted first, so the good view runs after a failure.
        "views": {"a-locked-out": view_config("wrong-password"), "b-cases": view_config("view-password-Cl1!")},
        "sinks": {"lake": lake.config},
        "transfer": {"retries": 1, "initial_backoff_ms": 5, "max_backoff_ms": 50},
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let config = path.to_str().unwrap();

    let out = ferry(&["sync-views", "--config", config]);
    assert_exit(&out, 1, "sync-views");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("view a-locked-out: FAILED: "),
        "{text}"
    );
    assert!(lines[0].contains("401"), "{text}");
    assert!(
        lines[1].starts_with(
            "view b-cases: synced 7 records in 2 chunks (0 skipped), watermark none -> "
        ),
        "{text}"
    );
    assert_eq!(lines[2], "1 of 2 views failed");

    // The same as JSON; the good view has nothing new now.
    let out = ferry(&["sync-views", "--config", config, "--json"]);
    assert_exit(&out, 1, "sync-views --json");
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["failed"], 1);
    let views = answer["views"].as_array().unwrap();
    assert_eq!(views[0]["status"], "failed");
    assert_eq!(
        (views[1]["view"].as_str(), views[1]["records"].as_u64()),
        (Some("b-cases"), Some(0))
    );
    // Only the good one: exit 0.
    let out = ferry(&["sync-views", "--config", config, "b-cases"]);
    assert_exit(&out, 0, "sync-views b-cases");
}
