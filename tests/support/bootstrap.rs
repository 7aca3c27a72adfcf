//! The functions' real `bootstrap` binaries for tests that run them as Lambda would
//! (tests/lambda_box.rs): built once per test process with the dev profile (dependencies at
//! opt-level 1, see Cargo.toml), found through cargo's own artifact messages (so any
//! `CARGO_TARGET_DIR` works), and packaged as Lambda zips.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Every ferry function, by the name Terraform and the layout use.
pub(crate) const FUNCTIONS: [&str; 6] = [
    "webhook-ingest",
    "blob-copy",
    "view-sync",
    "token-refresh",
    "export-pull",
    "reconcile",
];

/// `$CARGO build --workspace --bins --tests` (once per process); function -> executable.
///
/// `--workspace --tests` on purpose: cargo unifies dependency features over what one command
/// builds, so this reuses every dependency `cargo test --workspace` (`make test`) compiled,
/// while `--bins -p <function>...` resolves a narrower feature set and compiles the AWS SDK and
/// its HTTP stack a second time (3-4 minutes on a cold 2-core machine). The function binaries
/// are the same source either way: what `make build` packages.
pub(crate) fn build() -> &'static BTreeMap<String, PathBuf> {
    static BUILT: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(super::terraform::repo_root())
            .args([
                "build",
                "--workspace",
                "--bins",
                "--tests",
                "--message-format=json-render-diagnostics",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        let out = cmd.output().expect("cannot run cargo build");
        assert!(
            out.status.success(),
            "cargo build of the bootstraps failed ({}); see its messages above",
            out.status
        );
        let mut bins = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let name = msg["target"]["name"].as_str().unwrap_or_default();
            let is_bin = msg["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"));
            // `--tests` also builds each binary's unit-test harness, reported as a `bin` target
            // too: only the artifact built without the test profile is the bootstrap.
            let is_test_harness = msg["profile"]["test"].as_bool().unwrap_or(true);
            if msg["reason"] == "compiler-artifact"
                && is_bin
                && !is_test_harness
                && FUNCTIONS.contains(&name)
                && let Some(exe) = msg["executable"].as_str()
            {
                bins.insert(name.to_string(), PathBuf::from(exe));
            }
        }
        for f in FUNCTIONS {
            assert!(
                bins.contains_key(f),
                "cargo built no binary for {f}: {bins:?}"
            );
        }
        bins
    })
}

/// Writes `<dir>/<function>.zip` holding the function's binary as `bootstrap`, for every
/// function; function -> zip path.
pub(crate) fn package_all(dir: &Path) -> BTreeMap<String, PathBuf> {
    let bins = build();
    std::thread::scope(|s| {
        let handles: Vec<_> = bins
            .iter()
            .map(|(f, bin)| {
                s.spawn(move || {
                    let zip = super::terraform::bootstrap_zip(
                        &std::fs::read(bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display())),
                    );
                    let path = dir.join(format!("{f}.zip"));
                    std::fs::write(&path, zip).unwrap();
                    (f.clone(), path)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}
