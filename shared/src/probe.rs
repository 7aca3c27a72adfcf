//! What `ferry check` reports about one configured item: OK, or a problem saying what is wrong
//! and how to fix it. Every backend's probe (it lives with the backend: `source/azure_blob.rs`,
//! `dest/sftp.rs`, `sink/postgres.rs`, `view_sync`, `token/service.rs`, ...) returns a
//! [`ProbeResult`]; [`Services::probe_all`](crate::services::Services::probe_all) runs them
//! and turns them into [`ProbeReport`]s. A leaf: it imports nothing above `setup`.
//!
//! Texts in a [`Problem`] are shown to operators and scripts: they never hold a secret (a SAS
//! signature, a password, a key, a token). Probes build them from status codes, error codes and
//! redacted URLs only.

use serde::Serialize;

/// Something a probe found wrong with one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What is wrong, e.g. `the SAS lacks l (list): List Blobs on container "exports" answered 403`.
    pub what: String,
    /// What the operator can do about it.
    pub fix: String,
}

impl Problem {
    /// A problem with its explanation and remedy.
    pub fn new(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            fix: fix.into(),
        }
    }

    /// The item could not even be built from its config (a secret that cannot be read, a key
    /// that does not parse): the setup error says which.
    pub fn setup(e: &crate::setup::SetupError) -> Self {
        match e {
            crate::setup::SetupError::Secret(_) => Self::new(
                e.to_string(),
                "make the secret readable (Secrets Manager name, env variable or file) with the credentials ferry runs with",
            ),
            crate::setup::SetupError::Config(_) => {
                Self::new(e.to_string(), "correct this item's settings in the config")
            }
        }
    }
}

/// What a backend's probe returns: `Ok(())` when the item works as configured.
pub type ProbeResult = Result<(), Problem>;

/// Which part of the config an item belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// The config file itself (parsed and validated).
    Config,
    /// The state bucket.
    State,
    /// An entry of `sources`.
    Source,
    /// An entry of `destinations`.
    Destination,
    /// An entry of `sinks`.
    Sink,
    /// An entry of `views`.
    View,
    /// A route's own settings (its OpenPGP recipient keys).
    Route,
}

impl Section {
    /// The section's word in human output (`source`, `destination`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Section::Config => "config",
            Section::State => "state",
            Section::Source => "source",
            Section::Destination => "destination",
            Section::Sink => "sink",
            Section::View => "view",
            Section::Route => "route",
        }
    }
}

/// The outcome for one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ProbeStatus {
    /// The item works as configured.
    Ok,
    /// It does not: what is wrong and how to fix it.
    Problem {
        /// What is wrong.
        what: String,
        /// How to fix it.
        fix: String,
    },
}

/// One line of `ferry check`: an item, its kind and what its probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeReport {
    /// The config section of the item.
    pub section: Section,
    /// The item's name in the config (the bucket for the state).
    pub name: String,
    /// The item's kind (`azure_blob`, `sftp`, `postgres`, `view`, `s3`, ...).
    pub kind: String,
    /// What its probe found.
    #[serde(flatten)]
    pub status: ProbeStatus,
}

impl ProbeReport {
    /// A report from a probe's result.
    pub fn new(section: Section, name: &str, kind: &str, result: ProbeResult) -> Self {
        Self {
            section,
            name: name.to_string(),
            kind: kind.to_string(),
            status: match result {
                Ok(()) => ProbeStatus::Ok,
                Err(p) => ProbeStatus::Problem {
                    what: p.what,
                    fix: p.fix,
                },
            },
        }
    }

    /// True when the probe found nothing wrong.
    pub fn is_ok(&self) -> bool {
        self.status == ProbeStatus::Ok
    }

    /// The human line: `OK   destination partner (sftp)` or
    /// `FAIL source clienttrack (azure_blob): <what>; fix: <fix>`.
    pub fn line(&self) -> String {
        let item = format!("{} {} ({})", self.section.as_str(), self.name, self.kind);
        match &self.status {
            ProbeStatus::Ok => format!("OK   {item}"),
            ProbeStatus::Problem { what, fix } => format!("FAIL {item}: {what}; fix: {fix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_json_name_the_item_and_the_problem() {
        let ok = ProbeReport::new(Section::Destination, "partner", "sftp", Ok(()));
        assert_eq!(ok.line(), "OK   destination partner (sftp)");
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            serde_json::json!({"section": "destination", "name": "partner", "kind": "sftp", "status": "ok"})
        );
        let bad = ProbeReport::new(
            Section::Source,
            "clienttrack",
            "azure_blob",
            Err(Problem::new("the SAS lacks l (list)", "add l")),
        );
        assert!(!bad.is_ok());
        assert_eq!(
            bad.line(),
            "FAIL source clienttrack (azure_blob): the SAS lacks l (list); fix: add l"
        );
        assert_eq!(
            serde_json::to_value(&bad).unwrap(),
            serde_json::json!({"section": "source", "name": "clienttrack", "kind": "azure_blob",
                "status": "problem", "what": "the SAS lacks l (list)", "fix": "add l"})
        );
    }
}
