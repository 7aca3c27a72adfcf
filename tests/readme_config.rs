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
