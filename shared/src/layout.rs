//! The state bucket layout: every key ferry writes, and which function reads, writes or deletes
//! below which prefix. This is the one description of it: the key builders below are the only
//! place a state key is spelled, `infra/state-layout.json` (which the Terraform grants are built
//! from) and the permissions table in docs/deploy.md are generated from [`layout_json`] and
//! [`permissions_table`], and tests fail when either drifts.
//!
//! A leaf: it imports nothing else of ferry.

use serde::Serialize;

/// A top-level prefix of the state bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Prefix {
    /// `jobs/<route>/<job-id>.json`: transfer jobs; S3 notifies the jobs queue of each new one.
    Jobs,
    /// `done/<job-id>/<destination>.json`: one receipt per delivered destination.
    Done,
    /// `failed/<id>.json`: dead-lettered jobs and refused pub/sub messages.
    Failed,
    /// `progress/<job-id>/<destination>.json`: resume checkpoint of a delivery, until its receipt.
    Progress,
    /// `watermarks/<view>.json`: last delivered cursor of a view.
    Watermarks,
    /// `leases/view-sync-<view>.json`: who is syncing a view right now.
    Leases,
    /// `tokens/<source>.json`: the current rotating tokens of a pub/sub export source.
    Tokens,
}

impl Prefix {
    /// Every prefix, in layout order.
    pub const ALL: [Prefix; 7] = [
        Prefix::Jobs,
        Prefix::Done,
        Prefix::Failed,
        Prefix::Progress,
        Prefix::Watermarks,
        Prefix::Leases,
        Prefix::Tokens,
    ];

    /// The prefix as it appears in keys, with its trailing `/`.
    pub fn as_str(self) -> &'static str {
        match self {
            Prefix::Jobs => "jobs/",
            Prefix::Done => "done/",
            Prefix::Failed => "failed/",
            Prefix::Progress => "progress/",
            Prefix::Watermarks => "watermarks/",
            Prefix::Leases => "leases/",
            Prefix::Tokens => "tokens/",
        }
    }

    /// The shape of the keys below it.
    pub fn key_shape(self) -> &'static str {
        match self {
            Prefix::Jobs => "jobs/<route>/<job-id>.json",
            Prefix::Done => "done/<job-id>/<destination>.json",
            Prefix::Failed => "failed/<job-id or msg-id>.json",
            Prefix::Progress => "progress/<job-id>/<destination>.json",
            Prefix::Watermarks => "watermarks/<view>.json",
            Prefix::Leases => "leases/view-sync-<view>.json",
            Prefix::Tokens => "tokens/<source>.json",
        }
    }

    /// What is kept there.
    pub fn holds(self) -> &'static str {
        match self {
            Prefix::Jobs => {
                "transfer jobs (one per route and file); a new one notifies the jobs queue"
            }
            Prefix::Done => "receipt per delivered destination: bytes, md5, sha256, location",
            Prefix::Failed => {
                "dead-lettered jobs and refused pub/sub messages, with a secret-free reason"
            }
            Prefix::Progress => {
                "resume checkpoint of a large delivery, kept until its receipt is saved"
            }
            Prefix::Watermarks => "last delivered cursor of a view (compare-and-swap)",
            Prefix::Leases => "lease of a view sync run (create-once, compare-and-swap)",
            Prefix::Tokens => "current rotating tokens of a pub/sub export source",
        }
    }
}

/// An operation on objects below a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Read objects (`s3:GetObject`).
    Get,
    /// Create or replace objects, conditionally or not (`s3:PutObject`).
    Put,
    /// Delete objects (`s3:DeleteObject`).
    Delete,
}

/// When a grant is needed beyond "the function is deployed".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnlyWith {
    /// The config has at least one pub/sub export source.
    PubsubSources,
}

/// One function's access below one prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// The prefix.
    pub prefix: Prefix,
    /// What the function does there.
    pub actions: &'static [Access],
    /// Needed only when the config has this; `None`: always.
    pub only_with: Option<OnlyWith>,
}

/// The deployed functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Function {
    /// Function URL -> jobs.
    WebhookIngest,
    /// Jobs queue -> deliveries.
    BlobCopy,
    /// Scheduled view sync.
    ViewSync,
    /// Scheduled token refresh.
    TokenRefresh,
    /// Scheduled Service Bus drain.
    ExportPull,
    /// Scheduled sweep of the webhook routes' containers for missed webhooks.
    Reconcile,
}

use Access::{Delete, Get, Put};

const fn always(prefix: Prefix, actions: &'static [Access]) -> Grant {
    Grant {
        prefix,
        actions,
        only_with: None,
    }
}

// Each grant names the code that needs it.

/// webhook::WebhookService writes jobs create-once; a duplicate is the 412.
const WEBHOOK_INGEST: &[Grant] = &[always(Prefix::Jobs, &[Put])];

const BLOB_COPY: &[Grant] = &[
    // engine::TransferEngine: load the job, check and write receipts and dead letters.
    always(Prefix::Jobs, &[Get]),
    always(Prefix::Done, &[Get, Put]),
    always(Prefix::Failed, &[Get, Put]),
    // dest::s3 (and every resumable destination): checkpoints, deleted when done.
    always(Prefix::Progress, &[Get, Put, Delete]),
    // token::cache: pub/sub sources read the tokens and refresh them on a 401/403.
    Grant {
        prefix: Prefix::Tokens,
        actions: &[Get, Put],
        only_with: Some(OnlyWith::PubsubSources),
    },
];

/// view_sync::lease: the lease and the watermark, both compare-and-swap.
const VIEW_SYNC: &[Grant] = &[
    always(Prefix::Watermarks, &[Get, Put]),
    always(Prefix::Leases, &[Get, Put]),
];

/// token::cache::refresh_if_due.
const TOKEN_REFRESH: &[Grant] = &[always(Prefix::Tokens, &[Get, Put])];

const EXPORT_PULL: &[Grant] = &[
    // pubsub::pull: a job per wanted file, a record per refused message.
    always(Prefix::Jobs, &[Put]),
    always(Prefix::Failed, &[Put]),
    // The Service Bus connection string comes with the tokens.
    always(Prefix::Tokens, &[Get, Put]),
];

/// reconcile::Reconciler: a job per blob whose webhook never came, create-once like the webhook
/// (a duplicate is the 412); a dry run (`ferry reconcile --dry-run`) only checks that the job exists.
const RECONCILE: &[Grant] = &[always(Prefix::Jobs, &[Get, Put])];

impl Function {
    /// Every function, in deployment order.
    pub const ALL: [Function; 6] = [
        Function::WebhookIngest,
        Function::BlobCopy,
        Function::ViewSync,
        Function::TokenRefresh,
        Function::ExportPull,
        Function::Reconcile,
    ];

    /// The function's name (crate, binary, Terraform key).
    pub fn name(self) -> &'static str {
        match self {
            Function::WebhookIngest => "webhook-ingest",
            Function::BlobCopy => "blob-copy",
            Function::ViewSync => "view-sync",
            Function::TokenRefresh => "token-refresh",
            Function::ExportPull => "export-pull",
            Function::Reconcile => "reconcile",
        }
    }

    /// The function with this name.
    pub fn from_name(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    /// What the function does in the state bucket.
    pub fn grants(self) -> &'static [Grant] {
        match self {
            Function::WebhookIngest => WEBHOOK_INGEST,
            Function::BlobCopy => BLOB_COPY,
            Function::ViewSync => VIEW_SYNC,
            Function::TokenRefresh => TOKEN_REFRESH,
            Function::ExportPull => EXPORT_PULL,
            Function::Reconcile => RECONCILE,
        }
    }

    /// Whether the function may do `access` on `key`, by its grants (with every conditional
    /// grant counted as present).
    pub fn may(self, access: Access, key: &str) -> bool {
        self.grants()
            .iter()
            .any(|g| key.starts_with(g.prefix.as_str()) && g.actions.contains(&access))
    }
}

/// `jobs/<route>/<job-id>.json`
pub fn job_key(route: &str, id: &str) -> String {
    format!("{}{route}/{id}.json", Prefix::Jobs.as_str())
}

/// `done/<job-id>/<destination>.json`
pub fn receipt_key(id: &str, destination: &str) -> String {
    format!("{}{id}/{destination}.json", Prefix::Done.as_str())
}

/// `done/<job-id>/records/<sink>.json`: the receipt of a route's record loading (a
/// destination name cannot contain `/`, so it never collides with a destination's receipt).
pub fn records_receipt_key(id: &str, sink: &str) -> String {
    format!("{}{id}/records/{sink}.json", Prefix::Done.as_str())
}

/// `failed/<id>.json`
pub fn failure_key(id: &str) -> String {
    format!("{}{id}.json", Prefix::Failed.as_str())
}

/// `progress/<job-id>/<destination>.json`
pub fn progress_key(job_id: &str, destination: &str) -> String {
    format!("{}{job_id}/{destination}.json", Prefix::Progress.as_str())
}

/// `watermarks/<view>.json`
pub fn watermark_key(view: &str) -> String {
    format!("{}{view}.json", Prefix::Watermarks.as_str())
}

/// `leases/view-sync-<view>.json`
pub fn lease_key(view: &str) -> String {
    format!("{}view-sync-{view}.json", Prefix::Leases.as_str())
}

/// `tokens/<source>.json`
pub fn token_key(source: &str) -> String {
    format!("{}{source}.json", Prefix::Tokens.as_str())
}

/// The layout as data, for Terraform (`infra/state-layout.json`): the prefixes, and per
/// function the list of `{prefix, actions, only_with}` grants.
pub fn layout_json() -> serde_json::Value {
    let prefixes: serde_json::Map<String, serde_json::Value> = Prefix::ALL
        .iter()
        .map(|p| {
            (
                p.as_str().to_string(),
                serde_json::json!({"key": p.key_shape(), "holds": p.holds()}),
            )
        })
        .collect();
    let functions: serde_json::Map<String, serde_json::Value> = Function::ALL
        .iter()
        .map(|f| {
            let grants: Vec<_> = f
                .grants()
                .iter()
                .map(|g| {
                    serde_json::json!({
                        "prefix": g.prefix.as_str(),
                        "actions": g.actions,
                        "only_with": g.only_with,
                    })
                })
                .collect();
            (f.name().to_string(), serde_json::Value::Array(grants))
        })
        .collect();
    serde_json::json!({
        "_comment": "Generated from shared/src/layout.rs by `cargo run --bin ferry -- state-layout > infra/state-layout.json`; tests fail when it drifts.",
        "prefixes": prefixes,
        "functions": functions,
    })
}

/// `infra/state-layout.json` as committed: pretty JSON and a final newline.
pub fn layout_file() -> String {
    let mut text = serde_json::to_string_pretty(&layout_json()).unwrap_or_default();
    text.push('\n');
    text
}

/// The per-function permissions table of docs/deploy.md (Markdown): one row per prefix, one
/// column per function.
pub fn permissions_table() -> String {
    let mut out = String::from("| prefix | keys | ");
    out.push_str(
        &Function::ALL
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(" | "),
    );
    out.push_str(" |\n|---|---|");
    out.push_str(&"---|".repeat(Function::ALL.len()));
    out.push('\n');
    for p in Prefix::ALL {
        out.push_str(&format!("| `{}` | `{}` |", p.as_str(), p.key_shape()));
        for f in Function::ALL {
            let cell = f
                .grants()
                .iter()
                .find(|g| g.prefix == p)
                .map(|g| {
                    let mut s = g
                        .actions
                        .iter()
                        .map(|a| match a {
                            Get => "get",
                            Put => "put",
                            Delete => "delete",
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    if g.only_with == Some(OnlyWith::PubsubSources) {
                        s.push_str(" (with pub/sub sources)");
                    }
                    s
                })
                .unwrap_or_default();
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_start_with_their_prefix() {
        assert!(job_key("r", "i").starts_with(Prefix::Jobs.as_str()));
        assert_eq!(receipt_key("i", "d"), "done/i/d.json");
        assert_eq!(failure_key("i"), "failed/i.json");
        assert_eq!(progress_key("i", "d"), "progress/i/d.json");
        assert_eq!(watermark_key("v"), "watermarks/v.json");
        assert_eq!(lease_key("v"), "leases/view-sync-v.json");
        assert_eq!(token_key("s"), "tokens/s.json");
    }

    #[test]
    fn functions_round_trip_by_name_and_grants_are_checked() {
        for f in Function::ALL {
            assert_eq!(Function::from_name(f.name()), Some(f));
        }
        assert!(Function::WebhookIngest.may(Access::Put, "jobs/r/x.json"));
        assert!(!Function::WebhookIngest.may(Access::Get, "jobs/r/x.json"));
        assert!(!Function::ViewSync.may(Access::Get, "tokens/s.json"));
    }

    /// The committed `infra/state-layout.json`, which the Terraform grants are built from, is
    /// exactly what this module declares.
    #[test]
    fn committed_layout_file_matches_the_code() {
        let committed = include_str!("../../infra/state-layout.json");
        assert_eq!(
            committed,
            layout_file(),
            "infra/state-layout.json is stale: run `cargo run --bin ferry -- state-layout > infra/state-layout.json`"
        );
    }
}
