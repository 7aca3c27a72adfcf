//! Terraform checks of `infra/` (issue 6).
//!
//! - `terraform fmt -check`, and `init` + `validate` of every module and example, with the AWS
//!   provider taken from the local filesystem mirror through the repository's CLI config
//!   (`infra/terraform.rc`).
//! - `apply` of `infra/examples/complete` against a private moto server, assertions on what moto
//!   then holds (read back through moto's own AWS APIs: SQS, Lambda, IAM, S3, Scheduler, Logs,
//!   CloudWatch, Secrets Manager), a second `plan -detailed-exitcode` that must show no drift, a
//!   probe of the S3 -> SQS notification, and `destroy`.
//!
//! Where `terraform` or the provider mirror is missing, `build.rs` leaves `cfg(ferry_terraform)`
//! unset and these tests are reported as ignored with the reason, never as passed.
//!
//! The apply configures every feature (an Azure Blob and a pub/sub source, S3, SFTP and HTTP
//! destinations, a webhook and a pub/sub route, a view with an S3 sink, an HTTP sink), so all
//! five functions deploy; a drift check compares each role's state-bucket grants with
//! `infra/state-layout.json`, which the code generates (issue 15).
//!
//! Terraform runs in temporary copies of `infra/` (support/terraform.rs), so no `.terraform/`,
//! lock file or state lands in the source tree, and a state left by `make deploy` is never used.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::Digest as _;
use support::terraform::{Terraform, copy_infra, placeholder_zip, repo_root, tail};

/// Name prefix the apply test deploys under (also checks that the prefix reaches every name).
const NAME: &str = "ferrytf";
/// moto's fixed account id.
const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

const FUNCTIONS: [&str; 6] = [
    "webhook-ingest",
    "blob-copy",
    "view-sync",
    "token-refresh",
    "export-pull",
    "reconcile",
];
const SCHEDULED: [(&str, &str); 4] = [
    ("view-sync", "rate(5 minutes)"),
    ("token-refresh", "rate(10 minutes)"),
    ("export-pull", "rate(1 minute)"),
    ("reconcile", "rate(1 hour)"),
];
const MODULES: [&str; 7] = [
    "blob-copy",
    "lambda-function",
    "schedule",
    "scheduled-function",
    "state-bucket",
    "webhook-ingest",
    "wiring",
];
/// The pub/sub source's `max_decompressed_bytes` in the apply's config (2 GiB): blob-copy's /tmp
/// must hold one staged file of that size plus headroom.
const MAX_DECOMPRESSED_BYTES: u64 = 2 << 30;
/// blob-copy's ephemeral storage for that: 2048 MB + 256 MB headroom.
const BLOB_COPY_EPHEMERAL_MB: u64 = 2304;

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(ferry_terraform),
    ignore = "terraform or its AWS provider mirror not found on this machine"
)]
fn infra_is_terraform_fmt_clean() {
    let tf = Terraform::new();
    let work = tempfile::tempdir().unwrap();
    let infra = copy_infra(work.path());
    let out = tf.run(
        work.path(),
        &["fmt", "-check", "-recursive", "-diff", "infra"],
    );
    assert!(
        out.status.success(),
        "terraform fmt -check -recursive infra found unformatted files (run `terraform fmt -recursive infra`):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(infra.join("examples/complete/main.tf").is_file());
}

#[test]
#[cfg_attr(
    not(ferry_terraform),
    ignore = "terraform or its AWS provider mirror not found on this machine"
)]
fn every_module_and_example_inits_and_validates() {
    let started = Instant::now();
    let tf = Terraform::new();
    let work = tempfile::tempdir().unwrap();
    let infra = copy_infra(work.path());
    let dirs = module_and_example_dirs(&infra);

    // Two at a time: each validate loads the (large) provider schema.
    let failures: Vec<String> = std::thread::scope(|s| {
        let chunks: Vec<Vec<PathBuf>> = dirs
            .chunks(dirs.len().div_ceil(2))
            .map(<[PathBuf]>::to_vec)
            .collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let tf = &tf;
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|dir| tf.init_and_validate(dir).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("validate thread"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "init/validate failed:\n{}",
        failures.join("\n\n")
    );
    note(&format!(
        "terraform init + validate of {} modules/examples: {:.0?}",
        dirs.len(),
        started.elapsed()
    ));
}

/// Conventions the issue asks for, checked on the files themselves (needs no terraform): every
/// module and example has versions.tf with the pinned versions, typed and described variables,
/// described outputs, and nothing in the example stores a secret value.
#[test]
fn modules_declare_versions_types_and_descriptions() {
    let infra = repo_root().join("infra");
    let dirs = module_and_example_dirs(&infra);
    let mut problems = Vec::new();
    for dir in &dirs {
        let rel = dir.strip_prefix(&infra).unwrap().display().to_string();
        match std::fs::read_to_string(dir.join("versions.tf")) {
            Ok(v) => {
                for needle in [
                    r#"required_version = ">= 1.5""#,
                    r#"source  = "hashicorp/aws""#,
                    r#"version = "~> 5.0""#,
                ] {
                    if !v.contains(needle) {
                        problems.push(format!("{rel}/versions.tf lacks {needle}"));
                    }
                }
            }
            Err(_) => problems.push(format!("{rel} has no versions.tf")),
        }
        for (file, text) in tf_files(dir) {
            for (kind, name, body) in hcl_blocks(&text) {
                let top = |attr: &str| body.lines().any(|l| l.starts_with(&format!("  {attr} ")));
                match kind.as_str() {
                    "variable" => {
                        if !top("type") {
                            problems.push(format!("{rel}/{file}: variable {name} has no type"));
                        }
                        if !top("description") {
                            problems
                                .push(format!("{rel}/{file}: variable {name} has no description"));
                        }
                    }
                    "output" if !top("description") => {
                        problems.push(format!("{rel}/{file}: output {name} has no description"));
                    }
                    "resource" if name.starts_with("aws_secretsmanager_secret_version") => {
                        problems.push(format!(
                            "{rel}/{file}: {name}: secret values must not pass through Terraform"
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    for module in MODULES {
        if !dirs.contains(&infra.join("modules").join(module)) {
            problems.push(format!("module {module} is missing"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
#[cfg_attr(
    not(ferry_terraform),
    ignore = "terraform or its AWS provider mirror not found on this machine"
)]
fn complete_example_applies_to_moto_without_drift_and_destroys() {
    let started = Instant::now();
    let tf = Terraform::new();
    let moto = ferry_harness::Moto::start().expect("start moto");
    let api = MotoApi::new(&moto.endpoint);
    let work = tempfile::tempdir().unwrap();
    let infra = copy_infra(work.path());
    let example = infra.join("examples/complete");

    // Packages: the real cargo-lambda builds where present, else placeholders (moto stores the
    // code but never runs it).
    let mut packages = BTreeMap::new();
    for f in FUNCTIONS {
        let built = repo_root()
            .join("target/lambda")
            .join(f)
            .join("bootstrap.zip");
        let path = if built.is_file() {
            note(&format!("using the built package {}", built.display()));
            built
        } else {
            let path = work.path().join(format!("{f}.zip"));
            std::fs::write(&path, placeholder_zip()).unwrap();
            note(&format!(
                "{} not built (make build): using a placeholder zip for {f}; moto never runs the code",
                built.display()
            ));
            path
        };
        packages.insert(f.to_string(), path);
    }
    let mut vars = full_config_vars();
    let extra = json!({
        "aws_endpoint_url": moto.endpoint,
        "name": NAME,
        "region": REGION,
        "lambda_packages": packages,
        "state_bucket_force_destroy": true,
        "secret_recovery_window_in_days": 0,
        // moto 5.2 does not implement the SQS RedriveAllowPolicy attribute (the provider would
        // wait for it forever); everything else is applied exactly as for AWS.
        "restrict_dlq_to_jobs_queue": false,
    });
    vars.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    std::fs::write(example.join("test.auto.tfvars.json"), vars.to_string()).unwrap();
    let env = tf.with_moto_env();

    // Meanwhile, in a second copy: a route naming a destination that does not exist must stop
    // the plan with the precondition's message (runs while the apply below waits on moto).
    let negative_work = tempfile::tempdir().unwrap();
    let negative_dir = copy_infra(negative_work.path()).join("examples/complete");
    std::fs::write(negative_dir.join("test.auto.tfvars.json"), vars.to_string()).unwrap();
    let bad = json!({"routes": [{"name": "hmis", "source": "clienttrack", "container": "exports", "destinations": ["nowhere"]}]});
    std::fs::write(negative_dir.join("bad-routes.json"), bad.to_string()).unwrap();
    let negative = {
        let env = env.clone();
        std::thread::spawn(move || {
            let tf = Terraform::new();
            tf.ok_env(&negative_dir, &["init", "-input=false", "-no-color"], &env);
            tf.run_env(
                &negative_dir,
                &[
                    "plan",
                    "-input=false",
                    "-no-color",
                    "-var-file=bad-routes.json",
                ],
                &env,
            )
        })
    };

    tf.ok_env(&example, &["init", "-input=false", "-no-color"], &env);
    let t = Instant::now();
    tf.ok_env(
        &example,
        &[
            "apply",
            "-auto-approve",
            "-input=false",
            "-no-color",
            "-parallelism=20",
        ],
        &env,
    );
    note(&format!(
        "terraform apply against moto: {:.0?}",
        t.elapsed()
    ));

    let out = negative.join().expect("negative plan thread");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("Routes name destinations")
            && stderr.contains("nowhere"),
        "a route to an unknown destination must fail the plan; got {:?}:\n{stderr}",
        out.status
    );

    let outputs: Value =
        serde_json::from_str(&tf.ok_env(&example, &["output", "-json"], &env)).unwrap();
    let out = |k: &str| outputs[k]["value"].clone();
    let deployed = Deployed::from_outputs(&out, &packages, &moto.endpoint);

    deployed.assert_state_bucket(&api);
    deployed.assert_queues_and_notification(&api);
    deployed.assert_functions(&api);
    deployed.assert_function_url(&api, out("webhook_url").as_str().unwrap());
    deployed.assert_event_source_mapping(&api);
    deployed.assert_schedules(&api, &out("schedule_names"));
    deployed.assert_iam(&api);
    deployed.assert_state_grants_match_layout(&api);
    deployed.assert_logs_and_alarms(&api, out("alarm_topic_arn").as_str().unwrap());
    deployed.assert_dashboard(&api, out("dashboard_name").as_str().unwrap());
    deployed.assert_secrets_hold_no_value(&api);
    assert_state_holds_no_secret_value(&tf, &example, &env);

    // Second plan: no drift.
    let t = Instant::now();
    let out = tf.run_env(
        &example,
        &[
            "plan",
            "-detailed-exitcode",
            "-input=false",
            "-no-color",
            "-parallelism=20",
        ],
        &env,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "the second plan must show no changes (exit 0):\n{}{}",
        tail(&out.stdout, 120),
        tail(&out.stderr, 40)
    );
    note(&format!("second plan (no drift): {:.0?}", t.elapsed()));

    deployed.probe_notification(&api);

    let t = Instant::now();
    tf.ok_env(
        &example,
        // No refresh: the plan just before showed the state matches moto (the probe only
        // removed the bucket policy, and deleting it again is a no-op).
        &[
            "destroy",
            "-auto-approve",
            "-input=false",
            "-no-color",
            "-refresh=false",
            "-parallelism=20",
        ],
        &env,
    );
    note(&format!("terraform destroy: {:.0?}", t.elapsed()));
    deployed.assert_destroyed(&api);
    note(&format!(
        "apply/plan/destroy test total: {:.0?}",
        started.elapsed()
    ));
}

/// The example's config variables with every feature configured, so all five functions deploy:
/// an Azure Blob and a pub/sub source, S3 + SFTP + HTTP + Graph destinations, a webhook and a pub/sub
/// route (decompressing), a view delivering to an S3 sink, and an HTTP sink no view names (its
/// secret must reach no function).
fn full_config_vars() -> Value {
    json!({
        "sources": {"clienttrack": {"account_url": "http://127.0.0.1:10000/devstoreaccount1"}},
        "pubsub_sources": {"egretail": {
            "tenant_service_url": "http://127.0.0.1:18080",
            "integration_name": "ferry-files",
            "aad": {"tenant_id": "tenant", "client_id": "ferry-client", "scope": "api://eg/.default",
                    "authority_url": "http://127.0.0.1:18081"},
            "stop_when_idle": true,
            "receive_timeout_secs": 1,
            "max_decompressed_bytes": MAX_DECOMPRESSED_BYTES,
        }},
        "s3_destinations": {"archive": {"bucket": "customer-archive", "prefix": "clienttrack/"}},
        "sftp_destinations": {"partner": {"host": "127.0.0.1", "port": 2222, "username": "ferry",
            "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReplaceWithTheServersRealHostKey",
            "directory": "/upload"}},
        "http_destinations": {"intake": {"url": "http://127.0.0.1:18082/files/{name}", "method": "POST",
            "headers": {"X-Source": "ferry"}, "secret_headers": ["Authorization"]}},
        "graph_destinations": {"sharepoint": {"tenant_id": "tenant", "client_id": "graph-client",
            "hostname": "contoso.sharepoint.com", "site_path": "/sites/hmis", "library": "Documents",
            "folder": "in"}},
        "routes": [
            {"name": "hmis", "source": "clienttrack", "container": "exports", "file_glob": "*.zip",
             "name_contains": "HMIS", "destinations": ["archive", "partner", "intake", "sharepoint"]},
            {"name": "items", "source": "egretail", "blob_types": ["Gateway.ItemChanges"],
             "decompress": true, "destinations": ["archive"], "encrypt_recipients": ["partner"]},
            {"name": "item-rows", "source": "egretail", "blob_types": ["Gateway.ItemChanges"],
             "records": {"sink": "records", "format": "jsonl"}},
            {"name": "price-lake", "source": "egretail", "blob_types": ["Gateway.PriceChanges"],
             "records": {"sink": "lake", "format": "xml_lines", "chunk_lines": 500}},
        ],
        "views": {"cases": {"url": "http://127.0.0.1:18083/api/view/cases", "on_behalf_of": "ops",
            "username": "svc", "sink": "lake", "chunk_size": 100}},
        "s3_jsonl_sinks": {"lake": {"bucket": "customer-lake", "prefix": "views/"}},
        "http_sinks": {"records": {"url": "http://127.0.0.1:18084/records",
            "secret_headers": ["Authorization"]}},
    })
}

// ------------------------------------------------------------------------------------------------
// What the example deployed, and the assertions on it
// ------------------------------------------------------------------------------------------------

struct Deployed {
    bucket: String,
    bucket_arn: String,
    jobs_url: String,
    dlq_url: String,
    /// ferry function -> deployed name.
    names: BTreeMap<String, String>,
    /// secret key (`webhook-token`, `sources/clienttrack/sas`, ...) -> ARN.
    secrets: BTreeMap<String, String>,
    /// ferry function -> the secret ARNs its module was given (`function_secret_arns` output).
    function_secrets: BTreeMap<String, BTreeSet<String>>,
    packages: BTreeMap<String, PathBuf>,
    /// moto's endpoint, which FERRY_CONFIG's S3 endpoints must name.
    endpoint: String,
}

fn function_arn(name: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}")
}

fn queue_arn(name: &str) -> String {
    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")
}

impl Deployed {
    fn from_outputs(
        out: &dyn Fn(&str) -> Value,
        packages: &BTreeMap<String, PathBuf>,
        endpoint: &str,
    ) -> Self {
        let map = |v: Value| -> BTreeMap<String, String> {
            serde_json::from_value(v).expect("map output")
        };
        let bucket = out("state_bucket").as_str().unwrap().to_string();
        let names = map(out("function_names"));
        assert_eq!(
            names.keys().map(String::as_str).collect::<BTreeSet<_>>(),
            FUNCTIONS.into_iter().collect(),
            "function_names output"
        );
        for (f, name) in &names {
            assert_eq!(
                name,
                &format!("{NAME}-{f}"),
                "function name carries the prefix"
            );
        }
        let roles = map(out("role_names"));
        assert_eq!(
            roles, names,
            "role_names output: each role is named as its function"
        );
        let role_arns = map(out("role_arns"));
        for (f, name) in &names {
            assert_eq!(
                role_arns[f],
                format!("arn:aws:iam::{ACCOUNT}:role/{name}"),
                "role_arns output"
            );
        }
        let function_secrets: BTreeMap<String, BTreeSet<String>> =
            serde_json::from_value(out("function_secret_arns")).expect("function_secret_arns");
        assert_eq!(
            function_secrets.keys().collect::<BTreeSet<_>>(),
            names.keys().collect(),
            "function_secret_arns output covers the deployed functions"
        );
        Self {
            bucket_arn: format!("arn:aws:s3:::{bucket}"),
            bucket,
            jobs_url: out("jobs_queue_url").as_str().unwrap().to_string(),
            dlq_url: out("dlq_url").as_str().unwrap().to_string(),
            names,
            secrets: map(out("secret_arns")),
            function_secrets,
            packages: packages.clone(),
            endpoint: endpoint.to_string(),
        }
    }

    fn name(&self, f: &str) -> &str {
        &self.names[f]
    }

    fn assert_state_bucket(&self, api: &MotoApi) {
        let b = &self.bucket;
        let versioning = api.get_ok("s3", &format!("/{b}?versioning"));
        assert_eq!(
            xml_first(&versioning, "Status").as_deref(),
            Some("Enabled"),
            "versioning: {versioning}"
        );

        let sse = api.get_ok("s3", &format!("/{b}?encryption"));
        assert_eq!(
            xml_first(&sse, "SSEAlgorithm").as_deref(),
            Some("AES256"),
            "encryption: {sse}"
        );

        let pab = api.get_ok("s3", &format!("/{b}?publicAccessBlock"));
        for flag in [
            "BlockPublicAcls",
            "IgnorePublicAcls",
            "BlockPublicPolicy",
            "RestrictPublicBuckets",
        ] {
            assert_eq!(
                xml_first(&pab, flag).as_deref(),
                Some("true"),
                "{flag}: {pab}"
            );
        }

        let policy: Value =
            serde_json::from_str(&api.get_ok("s3", &format!("/{b}?policy"))).unwrap();
        let deny = statements(&policy);
        assert!(
            deny.iter().any(|s| s.effect == "Deny"
                && s.condition["Bool"]["aws:SecureTransport"] == json!("false")
                && s.resources.contains(&self.bucket_arn)),
            "bucket policy must deny plain-HTTP access: {policy}"
        );

        let lifecycle = api.get_ok("s3", &format!("/{b}?lifecycle"));
        let mut rules = BTreeMap::new();
        for rule in lifecycle.split("<Rule>").skip(1) {
            let id = xml_first(rule, "ID").unwrap_or_default();
            let summary = format!(
                "prefix={} status={} expire_days={} noncurrent_days={} abort_mpu_days={}",
                xml_first(rule, "Prefix").unwrap_or_default(),
                xml_first(rule, "Status").unwrap_or_default(),
                xml_first(&xml_first(rule, "Expiration").unwrap_or_default(), "Days")
                    .unwrap_or_default(),
                xml_first(rule, "NoncurrentDays").unwrap_or_default(),
                xml_first(rule, "DaysAfterInitiation").unwrap_or_default(),
            );
            rules.insert(id, summary);
        }
        let expected: BTreeMap<String, String> = [
            (
                "all-housekeeping",
                "prefix= status=Enabled expire_days= noncurrent_days=30 abort_mpu_days=7",
            ),
            (
                "expire-jobs",
                "prefix=jobs/ status=Enabled expire_days=30 noncurrent_days= abort_mpu_days=",
            ),
            (
                "expire-done",
                "prefix=done/ status=Enabled expire_days=90 noncurrent_days= abort_mpu_days=",
            ),
            (
                "expire-failed",
                "prefix=failed/ status=Enabled expire_days=90 noncurrent_days= abort_mpu_days=",
            ),
            (
                "expire-progress",
                "prefix=progress/ status=Enabled expire_days=7 noncurrent_days= abort_mpu_days=",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            rules, expected,
            "lifecycle rules (watermarks/, leases/, tokens/, inbox/ must never expire)"
        );
    }

    fn assert_queues_and_notification(&self, api: &MotoApi) {
        let jobs = api.queue_attributes(&self.jobs_url);
        let dlq = api.queue_attributes(&self.dlq_url);
        let jobs_arn = queue_arn(&format!("{NAME}-jobs"));
        let dlq_arn = queue_arn(&format!("{NAME}-jobs-dlq"));
        assert_eq!(jobs["QueueArn"], json!(jobs_arn));
        assert_eq!(dlq["QueueArn"], json!(dlq_arn));

        let redrive: Value = serde_json::from_str(
            jobs["RedrivePolicy"]
                .as_str()
                .expect("jobs queue has a redrive policy"),
        )
        .unwrap();
        assert_eq!(
            redrive["deadLetterTargetArn"],
            json!(dlq_arn),
            "redrive target: {redrive}"
        );
        assert_eq!(
            redrive["maxReceiveCount"]
                .as_u64()
                .or_else(|| redrive["maxReceiveCount"].as_str()?.parse().ok()),
            Some(6),
            "maxReceiveCount = transfer.max_attempts (5) + 1: {redrive}"
        );
        let visibility: u64 = jobs["VisibilityTimeout"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            visibility,
            6 * 900,
            "visibility timeout = 6 x blob-copy's 900 s timeout"
        );
        assert_eq!(jobs["SqsManagedSseEnabled"], json!("true"));
        assert_eq!(dlq["SqsManagedSseEnabled"], json!("true"));
        assert_eq!(
            dlq["MessageRetentionPeriod"],
            json!("1209600"),
            "DLQ keeps messages 14 days"
        );

        let policy: Value =
            serde_json::from_str(jobs["Policy"].as_str().expect("jobs queue policy")).unwrap();
        let stmts = statements(&policy);
        assert_eq!(stmts.len(), 1, "{policy}");
        let s = &stmts[0];
        assert_eq!(s.effect, "Allow");
        assert_eq!(s.actions, vec!["sqs:SendMessage".to_string()]);
        assert_eq!(s.resources, vec![jobs_arn.clone()]);
        assert_eq!(s.principal, json!({"Service": "s3.amazonaws.com"}));
        assert_eq!(
            s.condition["ArnEquals"]["aws:SourceArn"],
            json!(self.bucket_arn),
            "only the state bucket may send"
        );

        let n = api.get_ok("s3", &format!("/{}?notification", self.bucket));
        let configs: Vec<&str> = n.split("<QueueConfiguration>").skip(1).collect();
        assert_eq!(configs.len(), 1, "one queue notification: {n}");
        let c = configs[0];
        assert_eq!(xml_first(c, "Queue"), Some(jobs_arn));
        assert_eq!(xml_all(c, "Event"), vec!["s3:ObjectCreated:*".to_string()]);
        let rules: BTreeMap<String, String> = c
            .split("<FilterRule>")
            .skip(1)
            .map(|r| {
                (
                    xml_first(r, "Name").unwrap().to_lowercase(),
                    xml_first(r, "Value").unwrap(),
                )
            })
            .collect();
        assert_eq!(
            rules.get("prefix").map(String::as_str),
            Some("jobs/"),
            "{n}"
        );
        assert_eq!(
            rules.get("suffix").map(String::as_str),
            Some(".json"),
            "{n}"
        );
        assert!(!n.contains("LambdaFunctionConfiguration") && !n.contains("TopicConfiguration"));
    }

    fn assert_functions(&self, api: &MotoApi) {
        for f in FUNCTIONS {
            let name = self.name(f);
            let (status, body) = api.get("lambda", &format!("/2015-03-31/functions/{name}"));
            assert_eq!(status, 200, "GetFunction {name}: {body}");
            let c = &serde_json::from_str::<Value>(&body).unwrap()["Configuration"];
            assert_eq!(c["Runtime"], json!("provided.al2023"), "{name}");
            assert_eq!(c["Handler"], json!("bootstrap"), "{name}");
            assert_eq!(c["Architectures"], json!(["x86_64"]), "{name}");
            assert_eq!(
                c["Role"],
                json!(format!("arn:aws:iam::{ACCOUNT}:role/{name}")),
                "{name}"
            );
            let zip = std::fs::read(&self.packages[f]).unwrap();
            assert_eq!(
                c["CodeSha256"],
                json!(base64(&sha2::Sha256::digest(&zip))),
                "{name} runs the package given to Terraform"
            );
            let vars = &c["Environment"]["Variables"];
            assert_eq!(vars["RUST_LOG"], json!("info"), "{name}");
            // Lambda caps the environment (names and values) at 4 KiB; this config has every
            // feature, with moto's ARNs (as long as AWS's but for the account and region).
            let env_bytes: usize = vars
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| k.len() + v.as_str().unwrap_or_default().len())
                .sum();
            assert!(
                env_bytes <= 4096,
                "{name}: environment is {env_bytes} bytes"
            );
            if f == "blob-copy" {
                note(&format!(
                    "environment of {name} with every feature configured: {env_bytes} of 4096 bytes"
                ));
            }
            // moto stores and returns EphemeralStorage: /tmp is sized for blob-copy's staged
            // decompressed files only.
            let ephemeral = if f == "blob-copy" {
                BLOB_COPY_EPHEMERAL_MB
            } else {
                512
            };
            assert_eq!(
                c["EphemeralStorage"]["Size"].as_u64(),
                Some(ephemeral),
                "{name}: ephemeral storage (MB)"
            );
            let config_text = vars["FERRY_CONFIG"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no FERRY_CONFIG"));
            if let Err(e) = ferry_shared::config::Config::from_json(config_text) {
                panic!("{name}: FERRY_CONFIG is not a valid ferry config: {e}\n{config_text}");
            }
            let config: Value = serde_json::from_str(config_text).unwrap();
            self.assert_config(name, &config);
        }
        let cfg = |f: &str| -> Value {
            let body = api.get_ok("lambda", &format!("/2015-03-31/functions/{}", self.name(f)));
            serde_json::from_str::<Value>(&body).unwrap()["Configuration"].clone()
        };
        let blob = cfg("blob-copy");
        assert_eq!(
            (blob["Timeout"].as_u64(), blob["MemorySize"].as_u64()),
            (Some(900), Some(1024))
        );
        let hook = cfg("webhook-ingest");
        assert_eq!(hook["Timeout"].as_u64(), Some(15));
    }

    fn assert_config(&self, name: &str, config: &Value) {
        let secret = |key: &str| json!({"secrets_manager": {"id": self.secrets[key]}});
        let endpoint = json!({"endpoint_url": self.endpoint, "force_path_style": true});
        // The whole config: null optional fields and ferry's defaults (port 22, method PUT,
        // empty prefix, no headers) are omitted; every S3 client of ferry's goes to moto.
        let expected = json!({
            "state": {"bucket": self.bucket, "endpoint": endpoint},
            "webhook": {"token": secret("webhook-token")},
            "sources": {
                "clienttrack": {"type": "azure_blob", "account_url": "http://127.0.0.1:10000/devstoreaccount1",
                                "sas": secret("sources/clienttrack/sas")},
                "egretail": {"type": "pubsub_export", "tenant_service_url": "http://127.0.0.1:18080",
                             "integration_name": "ferry-files",
                             "aad": {"tenant_id": "tenant", "client_id": "ferry-client", "scope": "api://eg/.default",
                                     "authority_url": "http://127.0.0.1:18081",
                                     "client_secret": secret("sources/egretail/aad-client-secret")},
                             "stop_when_idle": true, "receive_timeout_secs": 1,
                             "max_decompressed_bytes": MAX_DECOMPRESSED_BYTES},
            },
            "destinations": {
                "archive": {"type": "s3", "bucket": "customer-archive", "prefix": "clienttrack/", "endpoint": endpoint},
                "partner": {"type": "sftp", "host": "127.0.0.1", "port": 2222, "username": "ferry",
                            "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReplaceWithTheServersRealHostKey",
                            "directory": "/upload", "private_key": secret("destinations/partner/private-key")},
                "intake": {"type": "http", "url": "http://127.0.0.1:18082/files/{name}", "method": "POST",
                           "headers": {"X-Source": "ferry"},
                           "secret_headers": {"Authorization": secret("destinations/intake/headers/authorization")}},
                "sharepoint": {"type": "graph", "hostname": "contoso.sharepoint.com", "site_path": "/sites/hmis",
                               "library": "Documents", "folder": "in", "tenant_id": "tenant",
                               "client_id": "graph-client", "client_secret": secret("destinations/sharepoint/client-secret")},
            },
            "routes": [
                {"name": "hmis", "source": "clienttrack", "container": "exports", "file_glob": "*.zip",
                 "name_contains": "HMIS", "destinations": ["archive", "partner", "intake", "sharepoint"]},
                {"name": "items", "source": "egretail", "blob_types": ["Gateway.ItemChanges"],
                 "decompress": true, "destinations": ["archive"],
                 "encrypt": {"recipients": [secret("routes/items/pgp-recipients/partner")]}},
                {"name": "item-rows", "source": "egretail", "blob_types": ["Gateway.ItemChanges"],
                 "records": {"sink": "records", "format": "jsonl"}},
                {"name": "price-lake", "source": "egretail", "blob_types": ["Gateway.PriceChanges"],
                 "records": {"sink": "lake", "format": "xml_lines", "chunk_lines": 500}},
            ],
            "transfer": {"max_attempts": 5},
            "views": {"cases": {"url": "http://127.0.0.1:18083/api/view/cases", "on_behalf_of": "ops",
                                "username": "svc", "password": secret("views/cases/password"),
                                "sink": "lake", "chunk_size": 100}},
            "sinks": {
                "lake": {"type": "s3_jsonl", "bucket": "customer-lake", "prefix": "views/", "endpoint": endpoint},
                "records": {"type": "http", "url": "http://127.0.0.1:18084/records",
                            "secret_headers": {"Authorization": secret("sinks/records/headers/authorization")}},
            },
        });
        assert_eq!(config, &expected, "{name}: FERRY_CONFIG");
        // Every secret reference is an ARN of a secret this deployment created.
        let mut refs = Vec::new();
        collect_secret_refs(config, &mut refs);
        let known: BTreeSet<&String> = self.secrets.values().collect();
        assert_eq!(
            refs.len(),
            self.secrets.len(),
            "{name}: secret references {refs:?}"
        );
        for r in &refs {
            assert!(
                known.contains(r),
                "{name}: config references unknown secret {r}"
            );
        }
    }

    fn assert_function_url(&self, api: &MotoApi, webhook_url: &str) {
        let name = self.name("webhook-ingest");
        // moto answers GetFunctionUrlConfig with 201 (AWS: 200).
        let (status, body) = api.get("lambda", &format!("/2021-10-31/functions/{name}/url"));
        assert!(
            matches!(status, 200 | 201),
            "GetFunctionUrlConfig {name}: {status} {body}"
        );
        let url: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            url["AuthType"],
            json!("NONE"),
            "ferry authenticates the webhook itself: {url}"
        );
        assert_eq!(url["FunctionUrl"], json!(webhook_url));
        assert_eq!(url["InvokeMode"], json!("BUFFERED"));
        assert!(webhook_url.starts_with("https://"));

        let policy: Value = serde_json::from_str(
            &api.get_ok("lambda", &format!("/2015-03-31/functions/{name}/policy")),
        )
        .unwrap();
        let policy: Value = serde_json::from_str(policy["Policy"].as_str().unwrap()).unwrap();
        let raw = policy["Statement"].as_array().unwrap();
        let url_grant = raw.iter().any(|s| {
            s["Action"] == json!("lambda:InvokeFunctionUrl")
                && s["Effect"] == json!("Allow")
                && (s["FunctionUrlAuthType"] == json!("NONE")
                    || s["Condition"]["StringEquals"]["lambda:FunctionUrlAuthType"]
                        == json!("NONE"))
        });
        assert!(
            url_grant,
            "public lambda:InvokeFunctionUrl for auth NONE: {policy}"
        );
        assert!(
            raw.iter()
                .any(|s| s["Action"] == json!("lambda:InvokeFunction")
                    && s["Sid"] == json!("AllowPublicInvokeForFunctionUrl")),
            "lambda:InvokeFunction, which function URLs need since October 2025: {policy}"
        );
        // No other function is reachable from outside.
        for f in FUNCTIONS.iter().filter(|f| **f != "webhook-ingest") {
            let (status, body) = api.get(
                "lambda",
                &format!("/2021-10-31/functions/{}/url", self.name(f)),
            );
            assert_eq!(status, 404, "{f} must have no function URL: {body}");
        }
    }

    fn assert_event_source_mapping(&self, api: &MotoApi) {
        let arn = function_arn(self.name("blob-copy"));
        let body = api.get_ok(
            "lambda",
            &format!("/2015-03-31/event-source-mappings/?FunctionName={arn}"),
        );
        let list: Value = serde_json::from_str(&body).unwrap();
        let mappings = list["EventSourceMappings"].as_array().unwrap();
        assert_eq!(mappings.len(), 1, "{body}");
        let m = &mappings[0];
        assert_eq!(
            m["EventSourceArn"],
            json!(queue_arn(&format!("{NAME}-jobs")))
        );
        assert_eq!(
            m["FunctionResponseTypes"],
            json!(["ReportBatchItemFailures"])
        );
        assert_eq!(m["BatchSize"], json!(1));
        assert_eq!(m["State"], json!("Enabled"));
        let all: Value =
            serde_json::from_str(&api.get_ok("lambda", "/2015-03-31/event-source-mappings/"))
                .unwrap();
        assert_eq!(
            all["EventSourceMappings"].as_array().unwrap().len(),
            1,
            "only blob-copy consumes a queue"
        );
    }

    fn assert_schedules(&self, api: &MotoApi, schedule_names: &Value) {
        for (f, expression) in SCHEDULED {
            let name = self.name(f);
            assert_eq!(schedule_names[f], json!(name), "schedule_names output");
            let body = api.get_ok("scheduler", &format!("/schedules/{name}?groupName=default"));
            let s: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(s["ScheduleExpression"], json!(expression), "{body}");
            assert_eq!(s["State"], json!("ENABLED"));
            assert_eq!(s["FlexibleTimeWindow"]["Mode"], json!("OFF"));
            assert_eq!(
                s["Target"]["Arn"],
                json!(function_arn(name)),
                "{f} schedule invokes {f}"
            );
            assert_eq!(
                s["Target"]["RoleArn"],
                json!(format!("arn:aws:iam::{ACCOUNT}:role/{name}-scheduler"))
            );
            assert_eq!(s["Target"]["RetryPolicy"]["MaximumRetryAttempts"], json!(2));
        }
        let (status, _) = api.get(
            "scheduler",
            &format!("/schedules/{}?groupName=default", self.name("blob-copy")),
        );
        assert_eq!(status, 404, "blob-copy is queue-driven, not scheduled");
    }

    fn assert_iam(&self, api: &MotoApi) {
        let b = &self.bucket_arn;
        // S3 outside the state bucket (whose grants `assert_state_grants_match_layout` checks):
        // blob-copy the S3 destination of its routes, view-sync the S3 sink of its view.
        let mut expected_s3: BTreeMap<&str, BTreeMap<String, BTreeSet<String>>> =
            FUNCTIONS.iter().map(|f| (*f, BTreeMap::new())).collect();
        expected_s3.get_mut("blob-copy").unwrap().insert(
            "arn:aws:s3:::customer-archive/clienttrack/*".into(),
            [
                "s3:AbortMultipartUpload",
                "s3:GetObject",
                "s3:ListMultipartUploadParts",
                "s3:PutObject",
            ]
            .map(String::from)
            .into(),
        );
        // ... and, write only, the S3 sink its routes' records load into.
        expected_s3.get_mut("blob-copy").unwrap().insert(
            "arn:aws:s3:::customer-lake/views/*".into(),
            ["s3:PutObject".to_string()].into(),
        );
        expected_s3.get_mut("view-sync").unwrap().insert(
            "arn:aws:s3:::customer-lake/views/*".into(),
            ["s3:PutObject".to_string()].into(),
        );
        // Exactly the secrets each function's code resolves for this config (the HTTP sink
        // `records` is named by no view but by a route's records: its header secret reaches
        // blob-copy only; the route's OpenPGP recipient key too).
        let aad = "sources/egretail/aad-client-secret";
        let expected_secrets: BTreeMap<&str, BTreeSet<String>> = [
            (
                "webhook-ingest",
                vec!["webhook-token", "sources/clienttrack/sas"],
            ),
            (
                "blob-copy",
                vec![
                    "sources/clienttrack/sas",
                    aad,
                    "destinations/partner/private-key",
                    "destinations/intake/headers/authorization",
                    "destinations/sharepoint/client-secret",
                    "sinks/records/headers/authorization",
                    "routes/items/pgp-recipients/partner",
                ],
            ),
            ("view-sync", vec!["views/cases/password"]),
            ("token-refresh", vec![aad]),
            ("export-pull", vec![aad]),
            ("reconcile", vec!["sources/clienttrack/sas"]),
        ]
        .into_iter()
        .map(|(f, keys)| {
            (
                f,
                keys.into_iter().map(|k| self.secrets[k].clone()).collect(),
            )
        })
        .collect();

        for f in FUNCTIONS {
            let role = self.name(f);
            let trust = api.role_trust_policy(role);
            assert_eq!(
                statements(&trust)[0].principal,
                json!({"Service": "lambda.amazonaws.com"}),
                "{role}"
            );
            assert_eq!(
                api.role_policy_names(role),
                vec!["ferry".to_string()],
                "{role}: one inline policy"
            );
            assert!(
                api.attached_role_policies(role).is_empty(),
                "{role}: no managed policies"
            );
            let policy = api.role_policy(role, "ferry");
            let stmts = statements(&policy);

            let mut s3: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let mut secrets = BTreeSet::new();
            let mut sqs = BTreeSet::new();
            let mut logs = BTreeSet::new();
            for s in &stmts {
                assert_eq!(s.effect, "Allow", "{role}: {policy}");
                for r in &s.resources {
                    assert!(
                        r != "*" && !r.ends_with(":*:*"),
                        "{role}: unscoped resource {r}"
                    );
                }
                for a in &s.actions {
                    assert!(!a.contains('*'), "{role}: wildcard action {a}");
                    let service = a.split(':').next().unwrap();
                    for r in &s.resources {
                        match (service, a.as_str()) {
                            // The state bucket: checked against the layout below.
                            ("s3", _) if r == b || r.starts_with(&format!("{b}/")) => {}
                            ("s3", _) => {
                                s3.entry(r.clone()).or_default().insert(a.clone());
                            }
                            ("secretsmanager", "secretsmanager:GetSecretValue") => {
                                secrets.insert(r.clone());
                            }
                            ("sqs", _) => {
                                sqs.insert(r.clone());
                            }
                            ("logs", _) => {
                                logs.insert(r.clone());
                            }
                            _ => panic!("{role}: unexpected action {a} on {r}"),
                        }
                    }
                }
            }
            assert_eq!(
                s3, expected_s3[f],
                "{role}: S3 permissions outside the state bucket, by prefix"
            );
            assert_eq!(secrets, expected_secrets[f], "{role}: readable secrets");
            assert_eq!(
                secrets, self.function_secrets[f],
                "{role}: readable secrets = function_secret_arns output"
            );
            let expect_sqs: BTreeSet<String> = if f == "blob-copy" {
                [queue_arn(&format!("{NAME}-jobs"))].into()
            } else {
                BTreeSet::new()
            };
            assert_eq!(sqs, expect_sqs, "{role}: SQS permissions");
            assert_eq!(
                logs,
                [format!(
                    "arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{role}:*"
                )]
                .into(),
                "{role}: may write its own log group only"
            );
        }

        for (f, _) in SCHEDULED {
            let role = format!("{}-scheduler", self.name(f));
            let trust = api.role_trust_policy(&role);
            let t = &statements(&trust)[0];
            assert_eq!(
                t.principal,
                json!({"Service": "scheduler.amazonaws.com"}),
                "{role}"
            );
            assert_eq!(
                t.condition["StringEquals"]["aws:SourceAccount"],
                json!(ACCOUNT),
                "{role}"
            );
            let policy = api.role_policy(&role, "invoke");
            let stmts = statements(&policy);
            assert_eq!(stmts.len(), 1, "{role}: {policy}");
            assert_eq!(stmts[0].actions, vec!["lambda:InvokeFunction".to_string()]);
            let arn = function_arn(self.name(f));
            assert_eq!(
                stmts[0].resources.iter().cloned().collect::<BTreeSet<_>>(),
                [arn.clone(), format!("{arn}:*")].into(),
                "{role} may invoke its own function only"
            );
        }
    }

    /// The drift check of issue 15: for every deployed role, the (S3 action, state-bucket
    /// prefix) pairs of its inline policy are exactly the grants `infra/state-layout.json`
    /// (generated from shared/src/layout.rs) gives its function, after `only_with` filtering (this
    /// config has a pub/sub source, so `only_with: "pubsub_sources"` grants apply); and the role
    /// may list the bucket exactly when it reads from it.
    fn assert_state_grants_match_layout(&self, api: &MotoApi) {
        let layout: Value = serde_json::from_str(
            &std::fs::read_to_string(repo_root().join("infra/state-layout.json")).unwrap(),
        )
        .unwrap();
        let has_pubsub = true;
        let b = &self.bucket_arn;
        let mut problems = Vec::new();
        for (f, name) in &self.names {
            let grants = layout["functions"][f]
                .as_array()
                .unwrap_or_else(|| panic!("state-layout.json has no grants for {f}"));
            let mut expected = BTreeSet::new();
            for g in grants {
                let applies = match g["only_with"].as_str() {
                    None => true,
                    Some("pubsub_sources") => has_pubsub,
                    Some(other) => panic!("unknown only_with {other:?} in state-layout.json"),
                };
                if !applies {
                    continue;
                }
                for a in g["actions"].as_array().unwrap() {
                    let action = match a.as_str().unwrap() {
                        "get" => "s3:GetObject",
                        "put" => "s3:PutObject",
                        "delete" => "s3:DeleteObject",
                        other => panic!("unknown action {other:?} in state-layout.json"),
                    };
                    expected.insert((
                        action.to_string(),
                        g["prefix"].as_str().unwrap().to_string(),
                    ));
                }
            }
            let reads = expected.iter().any(|(a, _)| a == "s3:GetObject");

            let policy = api.role_policy(name, "ferry");
            let mut granted = BTreeSet::new();
            let mut lists = false;
            for s in statements(&policy) {
                for r in &s.resources {
                    for a in s.actions.iter().filter(|a| a.starts_with("s3:")) {
                        if r == b {
                            lists |= a == "s3:ListBucket";
                            if a != "s3:ListBucket" {
                                problems.push(format!("{f}: {a} on the whole state bucket"));
                            }
                        } else if let Some(key) = r.strip_prefix(&format!("{b}/")) {
                            let prefix = key.strip_suffix('*').unwrap_or(key);
                            granted.insert((a.clone(), prefix.to_string()));
                        }
                    }
                }
            }
            if granted != expected {
                problems.push(format!(
                    "{f}: role grants {:?} that the layout does not, and lacks {:?}",
                    granted.difference(&expected).collect::<Vec<_>>(),
                    expected.difference(&granted).collect::<Vec<_>>()
                ));
            }
            if lists != reads {
                problems.push(format!(
                    "{f}: s3:ListBucket on the state bucket is {lists}, but the function {} (ListBucket turns a missing key's 403 into 404)",
                    if reads { "reads" } else { "does not read" }
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "deployed IAM grants drifted from infra/state-layout.json:\n{}",
            problems.join("\n")
        );
    }

    fn assert_logs_and_alarms(&self, api: &MotoApi, topic_arn: &str) {
        let (_, groups) = api.json(
            "logs",
            "Logs_20140328.DescribeLogGroups",
            json!({"logGroupNamePrefix": format!("/aws/lambda/{NAME}-")}),
        );
        let retention: BTreeMap<String, Value> = groups["logGroups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["logGroupName"].as_str().unwrap().to_string(),
                    g["retentionInDays"].clone(),
                )
            })
            .collect();
        let expected: BTreeMap<String, Value> = FUNCTIONS
            .iter()
            .map(|f| (format!("/aws/lambda/{}", self.name(f)), json!(30)))
            .collect();
        assert_eq!(
            retention, expected,
            "one log group per function, 30 days retention"
        );

        let xml = api.query(
            "monitoring",
            &[
                ("Action", "DescribeAlarms"),
                ("Version", "2010-08-01"),
                ("AlarmNamePrefix", NAME),
            ],
        );
        let mut alarms = BTreeMap::new();
        for chunk in xml.split("<AlarmName>").skip(1) {
            let name = chunk[..chunk.find("</AlarmName>").unwrap()].to_string();
            let actions = xml_first(chunk, "AlarmActions").unwrap_or_default();
            assert!(
                actions.contains(topic_arn),
                "alarm {name} notifies the alarm topic: {chunk}"
            );
            let dims = xml_all(&xml_first(chunk, "Dimensions").unwrap_or_default(), "Value");
            alarms.insert(
                name,
                format!(
                    "{}/{} {} {}",
                    xml_first(chunk, "Namespace").unwrap_or_default(),
                    xml_first(chunk, "MetricName").unwrap_or_default(),
                    xml_first(chunk, "ComparisonOperator").unwrap_or_default(),
                    dims.join(",")
                ),
            );
        }
        let mut expected: BTreeMap<String, String> = FUNCTIONS
            .iter()
            .map(|f| {
                let n = self.name(f);
                (
                    format!("{n}-errors"),
                    format!("AWS/Lambda/Errors GreaterThanOrEqualToThreshold {n}"),
                )
            })
            .collect();
        expected.insert(
            format!("{NAME}-jobs-dlq-not-empty"),
            format!("AWS/SQS/ApproximateNumberOfMessagesVisible GreaterThanOrEqualToThreshold {NAME}-jobs-dlq"),
        );
        // On ferry's own EMF metrics, by the Function-only dimension set.
        for (alarm, metric, function) in [
            ("delivery-failures", "DeliveryFailures", "blob-copy"),
            ("dead-letters", "JobsDeadLettered", "blob-copy"),
            ("view-lag", "WatermarkAge", "view-sync"),
            ("missed-webhooks", "ReconcileCreated", "reconcile"),
            (
                "dead-lettered-exports",
                "ExportDeadLettersDrained",
                "export-pull",
            ),
        ] {
            expected.insert(
                format!("{NAME}-{alarm}"),
                format!(
                    "ferry/{metric} GreaterThanOrEqualToThreshold {}",
                    self.name(function)
                ),
            );
        }
        assert_eq!(
            alarms, expected,
            "alarms on DLQ depth, on each function's errors, on missed webhooks and dead-lettered exports, on delivery failures, dead letters and view lag"
        );
        // No log metric filters: every alarm reads ferry's EMF metrics.
        for function in ["reconcile", "export-pull"] {
            let (_, filters) = api.json(
                "logs",
                "Logs_20140328.DescribeMetricFilters",
                json!({"logGroupName": format!("/aws/lambda/{}", self.name(function))}),
            );
            assert_eq!(filters["metricFilters"], json!([]), "{filters}");
        }
    }

    /// The dashboard's widgets chart ferry's metrics of the deployed functions (by SEARCH over
    /// their dimensions) and AWS's: queue age, DLQ depth, each function's errors, throttles and
    /// p95 duration.
    fn assert_dashboard(&self, api: &MotoApi, dashboard_name: &str) {
        assert_eq!(dashboard_name, NAME);
        let xml = api.query(
            "monitoring",
            &[
                ("Action", "GetDashboard"),
                ("Version", "2010-08-01"),
                ("DashboardName", dashboard_name),
            ],
        );
        let body = xml_first(&xml, "DashboardBody").unwrap_or_else(|| panic!("{xml}"));
        let body: Value = serde_json::from_str(&xml_unescape(&body)).unwrap();
        let widgets = body["widgets"].as_array().unwrap();
        let titles: Vec<&str> = widgets
            .iter()
            .map(|w| w["properties"]["title"].as_str().unwrap())
            .collect();
        // Every expression and metric array of every widget, as text.
        let charted: Vec<String> = widgets
            .iter()
            .flat_map(|w| w["properties"]["metrics"].as_array().unwrap().clone())
            .map(|m| m.to_string())
            .collect();
        let charts = |needle: &str| charted.iter().any(|m| m.contains(needle));
        for (metric, function) in [
            ("FilesDelivered", "blob-copy"),
            ("BytesDelivered", "blob-copy"),
            ("DeliveryFailures", "blob-copy"),
            ("JobsDeadLettered", "blob-copy"),
            ("DeliveryDuration", "blob-copy"),
            ("WebhookRequests", "webhook-ingest"),
            ("WatermarkAge", "view-sync"),
            ("ViewRecordsSynced", "view-sync"),
        ] {
            let search = charted
                .iter()
                .find(|m| m.contains(&format!("MetricName=\\\"{metric}\\\"")))
                .unwrap_or_else(|| panic!("no widget charts {metric}: {charted:#?}"));
            assert!(
                search.contains("SEARCH(")
                    && search.contains("{ferry,Function,")
                    && search.contains(&format!("Function=\\\"{}\\\"", self.name(function))),
                "{metric} is searched in namespace ferry for {function}: {search}"
            );
        }
        let jobs_queue = format!("{NAME}-jobs");
        let dlq = format!("{NAME}-jobs-dlq");
        assert!(
            charted
                .iter()
                .any(|m| m.contains("ApproximateAgeOfOldestMessage")
                    && m.contains(&format!("\"{jobs_queue}\""))),
            "queue age of {jobs_queue}: {charted:#?}"
        );
        assert!(
            charted
                .iter()
                .any(|m| m.contains("ApproximateNumberOfMessagesVisible")
                    && m.contains(&format!("\"{dlq}\""))),
            "DLQ depth of {dlq}: {charted:#?}"
        );
        for f in FUNCTIONS {
            let name = self.name(f);
            for metric in ["Errors", "Throttles"] {
                assert!(
                    charts(&format!(
                        "[\"AWS/Lambda\",\"{metric}\",\"FunctionName\",\"{name}\""
                    )),
                    "{metric} of {name}: {charted:#?}"
                );
            }
            assert!(
                charted.iter().any(|m| m
                    .contains(&format!("\"Duration\",\"FunctionName\",\"{name}\""))
                    && m.contains("\"p95\"")),
                "p95 duration of {name}: {charted:#?}"
            );
        }
        assert!(
            titles.iter().any(|t| t.starts_with("View lag")),
            "{titles:?}"
        );
    }

    fn assert_secrets_hold_no_value(&self, api: &MotoApi) {
        assert_eq!(
            self.secrets
                .keys()
                .map(String::as_str)
                .collect::<BTreeSet<_>>(),
            [
                "webhook-token",
                "sources/clienttrack/sas",
                "sources/egretail/aad-client-secret",
                "destinations/partner/private-key",
                "destinations/sharepoint/client-secret",
                "destinations/intake/headers/authorization",
                "views/cases/password",
                "sinks/records/headers/authorization",
                "routes/items/pgp-recipients/partner",
            ]
            .into()
        );
        for (key, arn) in &self.secrets {
            let (status, described) = api.json(
                "secretsmanager",
                "secretsmanager.DescribeSecret",
                json!({"SecretId": arn}),
            );
            assert_eq!(status, 200, "{key}: {described}");
            assert_eq!(described["Name"], json!(format!("{NAME}/{key}")));
            let (_, versions) = api.json(
                "secretsmanager",
                "secretsmanager.ListSecretVersionIds",
                json!({"SecretId": arn}),
            );
            assert_eq!(
                versions["Versions"],
                json!([]),
                "{key}: Terraform must not create a secret version"
            );
            let (status, value) = api.json(
                "secretsmanager",
                "secretsmanager.GetSecretValue",
                json!({"SecretId": arn}),
            );
            assert!(
                status >= 400
                    && value["__type"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("ResourceNotFound"),
                "{key}: no value may exist until an operator puts one: {status} {value}"
            );
        }
    }

    /// Objects created under jobs/ (and only there, with the .json suffix) reach the jobs queue.
    fn probe_notification(&self, api: &MotoApi) {
        // moto evaluates bucket policies without their conditions, so the TLS-only Deny (which
        // real S3 applies only to plain-HTTP requests) blocks every write to moto's plain-HTTP
        // endpoint. The policy itself was asserted above; remove it from moto for the probe.
        let status = api
            .send(
                "s3",
                reqwest::Method::DELETE,
                &format!("/{}?policy", self.bucket),
                Vec::new(),
            )
            .0;
        assert!(status < 300, "delete bucket policy in moto: {status}");
        let probes = [
            "done/probe/archive.json",
            "failed/probe.json",
            "jobs/hmis/probe.txt",
            "jobs/hmis/probe.json",
        ];
        for key in probes {
            let (status, body) = api.send(
                "s3",
                reqwest::Method::PUT,
                &format!("/{}/{key}", self.bucket),
                b"{}".to_vec(),
            );
            assert_eq!(status, 200, "PUT {key}: {body}");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut keys = BTreeSet::new();
        while Instant::now() < deadline {
            let (_, received) = api.json(
                "sqs",
                "AmazonSQS.ReceiveMessage",
                json!({"QueueUrl": self.jobs_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1}),
            );
            for m in received["Messages"].as_array().into_iter().flatten() {
                let body: Value = serde_json::from_str(m["Body"].as_str().unwrap()).unwrap();
                for r in body["Records"].as_array().into_iter().flatten() {
                    keys.insert(percent_decode(r["s3"]["object"]["key"].as_str().unwrap()));
                }
            }
            if !keys.is_empty() {
                // Give a stray notification for the other probes a moment to show up too.
                std::thread::sleep(Duration::from_millis(500));
                let (_, more) = api.json(
                    "sqs",
                    "AmazonSQS.ReceiveMessage",
                    json!({"QueueUrl": self.jobs_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1}),
                );
                for m in more["Messages"].as_array().into_iter().flatten() {
                    let body: Value = serde_json::from_str(m["Body"].as_str().unwrap()).unwrap();
                    for r in body["Records"].as_array().into_iter().flatten() {
                        keys.insert(percent_decode(r["s3"]["object"]["key"].as_str().unwrap()));
                    }
                }
                break;
            }
        }
        assert_eq!(
            keys,
            ["jobs/hmis/probe.json".to_string()].into(),
            "only new objects under jobs/ ending in .json are notified to the jobs queue"
        );
    }

    fn assert_destroyed(&self, api: &MotoApi) {
        for f in FUNCTIONS {
            let (status, _) = api.get("lambda", &format!("/2015-03-31/functions/{}", self.name(f)));
            assert_eq!(status, 404, "{f} still exists after destroy");
        }
        let (status, _) = api.json(
            "sqs",
            "AmazonSQS.GetQueueAttributes",
            json!({"QueueUrl": self.jobs_url, "AttributeNames": ["All"]}),
        );
        assert!(status >= 400, "jobs queue still exists after destroy");
        let (status, _) = api.send(
            "s3",
            reqwest::Method::HEAD,
            &format!("/{}", self.bucket),
            Vec::new(),
        );
        assert_eq!(status, 404, "state bucket still exists after destroy");
        let roles = api.query("iam", &[("Action", "ListRoles"), ("Version", "2010-05-08")]);
        assert!(
            !roles.contains(&format!("<RoleName>{NAME}-")),
            "IAM roles left after destroy"
        );
    }
}

fn assert_state_holds_no_secret_value(tf: &Terraform, dir: &Path, env: &[(String, String)]) {
    let state: Value = serde_json::from_str(&tf.ok_env(dir, &["show", "-json"], env)).unwrap();
    fn walk(module: &Value, types: &mut Vec<String>) {
        for r in module["resources"].as_array().into_iter().flatten() {
            types.push(r["type"].as_str().unwrap_or_default().to_string());
            let values = r["values"].to_string();
            assert!(
                !values.contains("\"secret_string\"") && !values.contains("\"secret_binary\""),
                "{} holds a secret value in the state",
                r["address"]
            );
        }
        for child in module["child_modules"].as_array().into_iter().flatten() {
            walk(child, types);
        }
    }
    let mut types = Vec::new();
    walk(&state["values"]["root_module"], &mut types);
    assert!(
        types.iter().any(|t| t == "aws_secretsmanager_secret"),
        "secrets are managed: {types:?}"
    );
    assert!(
        !types
            .iter()
            .any(|t| t == "aws_secretsmanager_secret_version"),
        "no secret version (value) may be managed by Terraform"
    );
    let raw = std::fs::read_to_string(dir.join("terraform.tfstate")).unwrap();
    assert!(
        !raw.contains("secret_string"),
        "terraform.tfstate mentions secret_string"
    );
}

fn collect_secret_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(id) = map.get("secrets_manager").and_then(|s| s["id"].as_str()) {
                out.push(id.to_string());
            }
            map.values().for_each(|v| collect_secret_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_secret_refs(v, out)),
        _ => {}
    }
}

// ------------------------------------------------------------------------------------------------
// IAM policy documents
// ------------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Statement {
    effect: String,
    actions: Vec<String>,
    resources: Vec<String>,
    principal: Value,
    condition: Value,
}

fn string_list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

fn statements(policy: &Value) -> Vec<Statement> {
    let list = match &policy["Statement"] {
        Value::Array(items) => items.clone(),
        one @ Value::Object(_) => vec![one.clone()],
        other => panic!("policy without statements: {other} in {policy}"),
    };
    list.iter()
        .map(|s| Statement {
            effect: s["Effect"].as_str().unwrap_or_default().to_string(),
            actions: string_list(&s["Action"]),
            resources: string_list(&s["Resource"]),
            principal: s["Principal"].clone(),
            condition: s["Condition"].clone(),
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// moto's AWS APIs over plain HTTP
// ------------------------------------------------------------------------------------------------

/// Talks to moto's AWS APIs directly. moto routes a request by the service named in the
/// credential scope of the `Authorization` header and does not check signatures, so a fixed
/// header per service is enough (no SDK per service needed).
struct MotoApi {
    endpoint: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl MotoApi {
    fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn auth(service: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=test/20250101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=00"
        )
    }

    fn send(
        &self,
        service: &str,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> (u16, String) {
        let req = self
            .http
            .request(method.clone(), format!("{}{path}", self.endpoint))
            .header("Authorization", Self::auth(service))
            .body(body);
        self.rt.block_on(async {
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        })
    }

    fn get(&self, service: &str, path: &str) -> (u16, String) {
        self.send(service, reqwest::Method::GET, path, Vec::new())
    }

    fn get_ok(&self, service: &str, path: &str) -> String {
        let (status, body) = self.get(service, path);
        assert_eq!(status, 200, "GET {path} ({service}): {body}");
        body
    }

    /// An AWS query-protocol call (IAM, CloudWatch); returns the XML body.
    fn query(&self, service: &str, params: &[(&str, &str)]) -> String {
        let req = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("Authorization", Self::auth(service))
            .form(params);
        let (status, body) = self.rt.block_on(async {
            let resp = req.send().await.expect("query request");
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        });
        assert_eq!(status, 200, "{service} {params:?}: {body}");
        body
    }

    /// An AWS JSON-protocol call (SQS, Logs, Secrets Manager).
    fn json(&self, service: &str, target: &str, body: Value) -> (u16, Value) {
        let content_type = if service == "sqs" {
            "application/x-amz-json-1.0"
        } else {
            "application/x-amz-json-1.1"
        };
        let req = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("Authorization", Self::auth(service))
            .header("X-Amz-Target", target)
            .header("Content-Type", content_type)
            .body(body.to_string());
        self.rt.block_on(async {
            let resp = req.send().await.expect("json request");
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }

    fn queue_attributes(&self, url: &str) -> Value {
        let (status, v) = self.json(
            "sqs",
            "AmazonSQS.GetQueueAttributes",
            json!({"QueueUrl": url, "AttributeNames": ["All"]}),
        );
        assert_eq!(status, 200, "GetQueueAttributes {url}: {v}");
        v["Attributes"].clone()
    }

    fn role_policy_names(&self, role: &str) -> Vec<String> {
        let xml = self.query(
            "iam",
            &[
                ("Action", "ListRolePolicies"),
                ("Version", "2010-05-08"),
                ("RoleName", role),
            ],
        );
        xml_all(
            &xml_first(&xml, "PolicyNames").unwrap_or_default(),
            "member",
        )
    }

    fn attached_role_policies(&self, role: &str) -> Vec<String> {
        let xml = self.query(
            "iam",
            &[
                ("Action", "ListAttachedRolePolicies"),
                ("Version", "2010-05-08"),
                ("RoleName", role),
            ],
        );
        xml_all(&xml, "PolicyArn")
    }

    fn role_policy(&self, role: &str, name: &str) -> Value {
        let xml = self.query(
            "iam",
            &[
                ("Action", "GetRolePolicy"),
                ("Version", "2010-05-08"),
                ("RoleName", role),
                ("PolicyName", name),
            ],
        );
        policy_document(
            &xml_first(&xml, "PolicyDocument").unwrap_or_else(|| panic!("{role}/{name}: {xml}")),
        )
    }

    fn role_trust_policy(&self, role: &str) -> Value {
        let xml = self.query(
            "iam",
            &[
                ("Action", "GetRole"),
                ("Version", "2010-05-08"),
                ("RoleName", role),
            ],
        );
        policy_document(
            &xml_first(&xml, "AssumeRolePolicyDocument").unwrap_or_else(|| panic!("{role}: {xml}")),
        )
    }
}

/// IAM returns policy documents URL-encoded (AWS and moto alike).
fn policy_document(text: &str) -> Value {
    let text = if text.trim_start().starts_with('{') {
        text.to_string()
    } else {
        percent_decode(text)
    };
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("policy document {text}: {e}"))
}

// ------------------------------------------------------------------------------------------------
// Files
// ------------------------------------------------------------------------------------------------

fn module_and_example_dirs(infra: &Path) -> Vec<PathBuf> {
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

fn tf_files(dir: &Path) -> Vec<(String, String)> {
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
fn hcl_blocks(text: &str) -> Vec<(String, String, String)> {
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

// ------------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------------

/// Prints a line that shows even when the test passes (the harness captures `println!`/`eprintln!`).
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "[terraform test] {line}");
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Inner text of every `<tag>...</tag>` (no attributes), unescaped.
fn xml_all(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(xml_unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    out
}

fn xml_first(xml: &str, tag: &str) -> Option<String> {
    xml_all(xml, tag).into_iter().next()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("percent-decoded UTF-8")
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn placeholder_zip_and_helpers_are_well_formed() {
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64(b"foob"), "Zm9vYg==");
    assert_eq!(percent_decode("jobs%2Fhmis%2Fa.json"), "jobs/hmis/a.json");
    assert_eq!(
        xml_all("<a><b>1</b><b>x&amp;y</b></a>", "b"),
        vec!["1", "x&y"]
    );
    let zip = placeholder_zip();
    assert_eq!(&zip[..4], b"PK\x03\x04");
    assert_eq!(&zip[zip.len() - 22..zip.len() - 18], b"PK\x05\x06");
}
