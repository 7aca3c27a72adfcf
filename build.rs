//! Detects what `tests/it/terraform/` needs: the `terraform` binary on `PATH` and a filesystem
//! mirror holding the hashicorp/aws provider. When both exist it sets `cfg(ferry_terraform)`,
//! and the tests run; otherwise they are compiled but marked ignored with the reason, so a
//! machine without Terraform reports them as skipped, never as passed.
//!
//! The mirror is looked for, in order: `$FERRY_TF_MIRROR`; the `path` named in
//! `infra/terraform.rc` (the CLI config kept in the repository); a directory named
//! `registry.terraform.io` found within five levels of `/` (its parent is the mirror). The
//! mirror found is passed to the tests as `FERRY_TF_MIRROR`, and the one `infra/terraform.rc`
//! names as `FERRY_TF_RC_MIRROR`: the tests read both instead of searching again.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ferry_terraform)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=infra/terraform.rc");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=FERRY_TF_MIRROR");

    let terraform = find_on_path("terraform");
    // The mirror infra/terraform.rc names, for the tests to compare with the one found (they use
    // the repository's CLI config as is when both agree, else a copy pointing at the found one).
    if let Some(manifest) = std::env::var_os("CARGO_MANIFEST_DIR")
        && let Some(named) =
            mirror_in_cli_config(&PathBuf::from(manifest).join("infra/terraform.rc"))
    {
        println!("cargo::rustc-env=FERRY_TF_RC_MIRROR={}", named.display());
    }
    let mirror = find_mirror();
    if let Some(mirror) = &mirror {
        println!("cargo::rustc-env=FERRY_TF_MIRROR={}", mirror.display());
    }
    if terraform.is_some() && mirror.is_some() {
        println!("cargo::rustc-cfg=ferry_terraform");
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A mirror is usable when it holds at least one version of hashicorp/aws.
fn has_aws_provider(mirror: &Path) -> bool {
    std::fs::read_dir(mirror.join("registry.terraform.io/hashicorp/aws"))
        .is_ok_and(|mut versions| versions.next().is_some())
}

fn find_mirror() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FERRY_TF_MIRROR").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return has_aws_provider(&dir).then_some(dir);
    }
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    if let Some(dir) = mirror_in_cli_config(&manifest.join("infra/terraform.rc"))
        && has_aws_provider(&dir)
    {
        return Some(dir);
    }
    // The same search the design guide documents: find / -maxdepth 5 -type d -name registry.terraform.io
    let out = Command::new("find")
        .args([
            "/",
            "-maxdepth",
            "5",
            "-type",
            "d",
            "-name",
            "registry.terraform.io",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| Path::new(line.trim()).parent().map(Path::to_path_buf))
        .find(|dir| has_aws_provider(dir))
}

/// The `path = "..."` of the `filesystem_mirror` block of a Terraform CLI config.
fn mirror_in_cli_config(file: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(file).ok()?;
    let block = &text[text.find("filesystem_mirror")?..];
    block.lines().find_map(|line| {
        let line = line.trim();
        let rest = line
            .strip_prefix("path")?
            .trim_start()
            .strip_prefix('=')?
            .trim();
        Some(PathBuf::from(rest.trim_matches('"')))
    })
}
