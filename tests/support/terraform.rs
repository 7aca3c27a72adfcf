//! Running Terraform from the tests (tests/terraform.rs, tests/lambda_box.rs): a runner that
//! uses the repository's CLI config (`infra/terraform.rc`, provider from the local filesystem
//! mirror), kills a command that hangs, and works in temporary copies of `infra/`; plus the zip
//! writer for Lambda packages.
//!
//! Terraform runs in temporary copies of `infra/`, so no `.terraform/`, lock file or state lands
//! in the source tree, and a state left by `make deploy` is never used.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// moto's region.
const REGION: &str = "us-east-1";
/// Longest any single terraform command may take (apply against moto takes about 90 s).
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `terraform` with the repository's CLI config (provider from the local mirror).
pub(crate) struct Terraform {
    cli_config: PathBuf,
    _generated: Option<tempfile::TempDir>,
}

impl Terraform {
    /// A runner whose CLI config points at the provider mirror `build.rs` found.
    pub(crate) fn new() -> Self {
        let repo_rc = repo_root().join("infra/terraform.rc");
        let mirror = std::env::var("FERRY_TF_MIRROR")
            .ok()
            .or(option_env!("FERRY_TF_MIRROR").map(String::from))
            .expect("no provider mirror (build.rs should have marked this test ignored)");
        let named = option_env!("FERRY_TF_RC_MIRROR").unwrap_or_default();
        if named == mirror {
            return Self {
                cli_config: repo_rc,
                _generated: None,
            };
        }
        // build.rs found the mirror somewhere else: same config, other path.
        let text = std::fs::read_to_string(&repo_rc).expect("infra/terraform.rc");
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("terraform.rc");
        std::fs::write(
            &rc,
            text.replace(&format!("\"{named}\""), &format!("\"{mirror}\"")),
        )
        .unwrap();
        note(&format!(
            "provider mirror {mirror} differs from infra/terraform.rc; using a copy pointing at it"
        ));
        Self {
            cli_config: rc,
            _generated: Some(dir),
        }
    }

    /// The `terraform` command for `dir`, with a clean Terraform environment plus `env`.
    pub(crate) fn command(&self, dir: &Path, args: &[&str], env: &[(String, String)]) -> Command {
        let mut cmd = Command::new("terraform");
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env_remove("TF_DATA_DIR")
            .env_remove("TF_WORKSPACE");
        for (k, _) in std::env::vars() {
            if k.starts_with("TF_VAR_") || k.starts_with("TF_CLI_ARGS") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs terraform to completion, or kills it after [`COMMAND_TIMEOUT`] (a provider waiting
    /// for a state moto never reports would otherwise hang the test).
    pub(crate) fn run_env(&self, dir: &Path, args: &[&str], env: &[(String, String)]) -> Output {
        let logs = tempfile::tempdir().unwrap();
        let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
        let mut child = self
            .command(dir, args, env)
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run terraform {args:?}: {e}"));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "terraform {} in {} did not finish within {COMMAND_TIMEOUT:?}; last output:\n{}\n{}",
                    args.join(" "),
                    dir.display(),
                    tail(&std::fs::read(&out_path).unwrap_or_default(), 40),
                    tail(&std::fs::read(&err_path).unwrap_or_default(), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        Output {
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
        }
    }

    /// [`Terraform::run_env`] without extra environment.
    pub(crate) fn run(&self, dir: &Path, args: &[&str]) -> Output {
        self.run_env(dir, args, &[])
    }

    /// Runs terraform and panics with its output unless it succeeds; its stdout.
    pub(crate) fn ok_env(&self, dir: &Path, args: &[&str], env: &[(String, String)]) -> String {
        let out = self.run_env(dir, args, env);
        assert!(
            out.status.success(),
            "terraform {} in {} failed ({}):\n{}\n{}",
            args.join(" "),
            dir.display(),
            out.status,
            tail(&out.stdout, 80),
            tail(&out.stderr, 60)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `init -backend=false` + `validate`: `Err` with the output when either fails or warns.
    pub(crate) fn init_and_validate(&self, dir: &Path) -> Result<(), String> {
        let name = dir.display().to_string();
        let out = self.run(
            dir,
            &["init", "-backend=false", "-input=false", "-no-color"],
        );
        if !out.status.success() {
            return Err(format!(
                "{name}: init failed:\n{}{}",
                tail(&out.stdout, 30),
                tail(&out.stderr, 30)
            ));
        }
        let out = self.run(dir, &["validate", "-json", "-no-color"]);
        let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "{name}: validate output is not JSON ({e}): {}",
                tail(&out.stderr, 30)
            )
        })?;
        if report["valid"] != json!(true) || report["warning_count"] != json!(0) {
            return Err(format!("{name}: validate: {report:#}"));
        }
        Ok(())
    }

    /// Environment for runs against moto: fixed credentials, no profile or CA bundle from the
    /// host (moto is plain HTTP).
    pub(crate) fn with_moto_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", REGION),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_PROFILE", ""),
            ("AWS_SESSION_TOKEN", ""),
            ("AWS_CA_BUNDLE", ""),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// Copies the `*.tf` files of `infra/` and its JSON data files (e.g. `state-layout.json`), and
/// nothing else (no state, lock file, tfvars or `.terraform/` a local deploy may have left), to
/// `<dest>/infra`.
pub(crate) fn copy_infra(dest: &Path) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if path.is_dir() {
                if !name.starts_with('.') {
                    copy(&path, &to.join(&*name));
                }
            } else if name.ends_with(".tf")
                || (name.ends_with(".json") && !name.ends_with(".tfvars.json"))
            {
                std::fs::copy(&path, to.join(&*name)).unwrap();
            }
        }
    }
    let target = dest.join("infra");
    copy(&repo_root().join("infra"), &target);
    target
}

/// The repository root (the root package's manifest directory).
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "[terraform] {line}");
}

/// The last `lines` lines of a command's output.
pub(crate) fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A Lambda package: a zip holding one executable (mode 0755) `bootstrap` with `content`.
pub(crate) fn bootstrap_zip(content: &[u8]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .unix_permissions(0o755)
        .large_file(content.len() >= u32::MAX as usize);
    zip.start_file("bootstrap", options).expect("zip entry");
    zip.write_all(content).expect("zip write");
    zip.finish().expect("zip finish").into_inner()
}

/// A package whose `bootstrap` fails if ever run; stands in for a function that has not been
/// built (moto stores the package but never executes it).
pub(crate) fn placeholder_zip() -> Vec<u8> {
    bootstrap_zip(b"#!/bin/sh\necho 'ferry placeholder package: build the real one with make build' >&2\nexit 1\n")
}
