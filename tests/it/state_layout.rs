//! The state bucket layout has one description, `shared/src/layout.rs`. These checks fail when
//! anything that restates it drifts: the tables in README.md and docs/deploy.md, the JSON
//! Terraform builds the IAM grants from, or code that spells a state key by hand instead of
//! calling the layout's key builders. (The deployed grants themselves are compared with the
//! layout in tests/terraform.rs, and enforced by IAM in tests/lambda_box.rs.)

use std::path::{Path, PathBuf};

use ferry_shared::layout::{Prefix, layout_file, permissions_table};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The text between `<!-- {marker}:start -->` and `<!-- {marker}:end -->`.
fn between(file: &Path, marker: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let start = format!("<!-- {marker}:start -->\n");
    let end = format!("<!-- {marker}:end -->");
    let from = text
        .find(&start)
        .unwrap_or_else(|| panic!("{}: no {start:?}", file.display()))
        + start.len();
    let to = text[from..]
        .find(&end)
        .unwrap_or_else(|| panic!("{}: no {end:?}", file.display()))
        + from;
    text[from..to].to_string()
}

/// Files that show the permissions table, and the marker it stands between.
const DOCS: &[(&str, &str)] = &[
    ("README.md", "state-layout"),
    ("docs/deploy.md", "permissions"),
];

#[test]
fn docs_show_the_layout_the_code_declares() {
    let table = permissions_table();
    for (file, marker) in DOCS {
        assert_eq!(
            between(&repo().join(file), marker),
            table,
            "{file} is stale: paste `cargo run --bin ferry -- state-layout --markdown` between its {marker} markers"
        );
    }
    assert_eq!(
        std::fs::read_to_string(repo().join("infra/state-layout.json")).unwrap(),
        layout_file(),
        "infra/state-layout.json is stale: `cargo run --bin ferry -- state-layout > infra/state-layout.json`"
    );
}

/// No production code writes `"jobs/…"`, `format!("done/…")` and the like itself.
#[test]
fn state_keys_are_spelled_only_in_the_layout_module() {
    let mut offenders = Vec::new();
    for dir in ["shared/src", "functions", "src"] {
        walk(&repo().join(dir), &mut |path, text| {
            // The layout itself, and the state conformance suite: it tests a store's semantics
            // with arbitrary keys, not the layout (a plain module so the lib's unit tests and the
            // S3 suite share it).
            if path.ends_with("shared/src/layout.rs")
                || path.ends_with("shared/src/state/conformance.rs")
            {
                return;
            }
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for p in Prefix::ALL {
                    if code.contains(&format!("\"{}", p.as_str())) {
                        offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        });
    }
    assert!(
        offenders.is_empty(),
        "state keys spelled outside shared/src/layout.rs (use its key builders or Prefix):\n{}",
        offenders.join("\n")
    );
}

/// Calls `f` with every `.rs` file under `dir`, its text cut at `#[cfg(test)]` (unit tests may
/// use literal keys to check the builders).
fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &str)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, f);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            let production = text.split("#[cfg(test)]").next().unwrap_or("");
            f(&path, production);
        }
    }
}
