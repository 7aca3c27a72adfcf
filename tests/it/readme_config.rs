//! The README's configuration examples are the user's starting point: they must stay valid.

use ferry_shared::config::{Config, DestinationConfig, SftpConfig};

#[test]
fn readme_config_example_parses_and_validates() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```json\n")
        .expect("a json block in the README")
        + "```json\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let config =
        Config::from_json(&readme[start..end]).unwrap_or_else(|e| panic!("README example: {e}"));
    assert_eq!(config.routes.len(), 2);
    assert!(matches!(
        config.destinations["partner-sftp"],
        DestinationConfig::Sftp(SftpConfig { port: 22, .. })
    ));
}

#[test]
fn every_readme_config_example_validates() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```json\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 2, "webhook and pub/sub examples");
    for block in blocks {
        Config::from_json(block).unwrap_or_else(|e| panic!("README example: {e}\n{block}"));
    }
}

/// The generated JSON Schema (docs/config.schema.json) is what editors validate configs with:
/// it must accept every README example and refuse what ferry refuses (an unknown field, a
/// missing required one, a wrong kind). Checked with the `jsonschema` package that moto's venv
/// (`make setup`) brings; skipped, saying why, where that is missing.
#[test]
fn the_generated_schema_accepts_the_examples_and_refuses_typos() {
    let root = env!("CARGO_MANIFEST_DIR");
    let python = format!("{root}/.local/venv/bin/python");
    let probe = std::process::Command::new(&python)
        .args(["-c", "import jsonschema"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "skipped: {python} with the jsonschema package is missing (make setup installs it)"
        );
        return;
    }
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let mut cases: Vec<(String, bool)> = readme
        .split("```json\n")
        .skip(1)
        .map(|b| (b.split("```").next().unwrap().to_string(), true))
        .collect();
    let example: serde_json::Value = serde_json::from_str(&cases[0].0).unwrap();
    let mut typo = example.clone();
    typo["transfer"]["max_atempts"] = 3.into();
    let mut missing = example.clone();
    missing["destinations"]["archive"]
        .as_object_mut()
        .unwrap()
        .remove("bucket");
    let mut kind = example.clone();
    kind["destinations"]["archive"]["type"] = "ftp".into();
    for bad in [typo, missing, kind] {
        assert!(
            Config::from_json(&bad.to_string()).is_err(),
            "ferry refuses it too"
        );
        cases.push((bad.to_string(), false));
    }
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
for line in sys.stdin:
    case = json.loads(line)
    try:
        jsonschema.validate(json.loads(case), schema)
        print("valid")
    except jsonschema.ValidationError as e:
        print("invalid: " + e.message.replace("\n", " "))
"#;
    let input: String = cases
        .iter()
        .map(|(c, _)| serde_json::to_string(c).unwrap() + "\n")
        .collect();
    let mut child = std::process::Command::new(&python)
        .args(["-c", script, &format!("{root}/docs/config.schema.json")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let verdicts: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(verdicts.len(), cases.len(), "{verdicts:?}");
    for ((case, want_valid), verdict) in cases.iter().zip(&verdicts) {
        assert_eq!(
            verdict == "valid",
            *want_valid,
            "schema verdict {verdict:?} for {case}"
        );
    }
}
