//! The Terraform files themselves: module and example folders, `.tf` files, top-level blocks.

use super::*;

pub(super) fn module_and_example_dirs(infra: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for group in ["modules", "examples"] {
        for entry in std::fs::read_dir(infra.join(group)).unwrap_or_else(|e| panic!("{group}: {e}"))
        {
            let path = entry.unwrap().path();
            if path.is_dir()
                && std::fs::read_dir(&path)
                    .unwrap()
                    .any(|f| f.unwrap().path().extension().is_some_and(|e| e == "tf"))
            {
                dirs.push(path);
            }
        }
    }
    dirs.sort();
    assert!(
        dirs.iter().any(|d| d.ends_with("examples/complete")),
        "infra/examples/complete is missing"
    );
    dirs
}

pub(super) fn tf_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            (path.extension()? == "tf").then(|| {
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&path).unwrap(),
                )
            })
        })
        .collect();
    files.sort();
    files
}

/// Top-level blocks of a `terraform fmt`-formatted file: (kind, label(s) joined by '.', body).
pub(super) fn hcl_blocks(text: &str) -> Vec<(String, String, String)> {
    let mut blocks = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if !line.starts_with(' ') && !line.starts_with('#') && line.trim_end().ends_with('{') {
            let header = line.trim_end().trim_end_matches('{').trim();
            let mut parts = header.split_whitespace();
            let kind = parts.next().unwrap_or_default().to_string();
            let label = parts
                .map(|p| p.trim_matches('"'))
                .collect::<Vec<_>>()
                .join(".");
            let mut body = String::new();
            i += 1;
            while i < lines.len() && lines[i] != "}" {
                body.push_str(lines[i]);
                body.push('\n');
                i += 1;
            }
            blocks.push((kind, label, body));
        }
        i += 1;
    }
    blocks
}
