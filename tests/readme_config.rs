//! The README's configuration example is the user's starting point: it must stay valid.

use ferry_shared::config::{Config, DestinationConfig};

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
        DestinationConfig::Sftp { port: 22, .. }
    ));
}
