//! What the complete example deployed on moto, and the assertions on it: the state bucket,
//! queues and notifications, functions and their config, roles against the state layout,
//! alarms and the dashboard.

use super::*;

pub(super) struct Deployed {
    pub(super) bucket: String,
    pub(super) bucket_arn: String,
    pub(super) jobs_url: String,
    pub(super) dlq_url: String,
    /// ferry function -> deployed name.
    pub(super) names: BTreeMap<String, String>,
    /// secret key (`webhook-token`, `sources/clienttrack/sas`, ...) -> ARN.
    pub(super) secrets: BTreeMap<String, String>,
    /// ferry function -> the secret ARNs its module was given (`function_secret_arns` output).
    pub(super) function_secrets: BTreeMap<String, BTreeSet<String>>,
    pub(super) packages: BTreeMap<String, PathBuf>,
    /// moto's endpoint, which FERRY_CONFIG's S3 endpoints must name.
    pub(super) endpoint: String,
}

pub(super) fn function_arn(name: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}")
}

pub(super) fn queue_arn(name: &str) -> String {
    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")
}

impl Deployed {
    pub(super) fn from_outputs(
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

    pub(super) fn name(&self, f: &str) -> &str {
        &self.names[f]
    }

    pub(super) fn assert_state_bucket(&self, api: &MotoApi) {
        let b = &self.bucket;
        let versioning = api.get_ok("s3", &format!("/{b}?versioning"));
        assert_eq!(
            xml::first(&versioning, "Status").as_deref(),
            Some("Enabled"),
            "versioning: {versioning}"
        );

        let sse = api.get_ok("s3", &format!("/{b}?encryption"));
        assert_eq!(
            xml::first(&sse, "SSEAlgorithm").as_deref(),
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
                xml::first(&pab, flag).as_deref(),
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
            let id = xml::first(rule, "ID").unwrap_or_default();
            let summary = format!(
                "prefix={} status={} expire_days={} noncurrent_days={} abort_mpu_days={}",
                xml::first(rule, "Prefix").unwrap_or_default(),
                xml::first(rule, "Status").unwrap_or_default(),
                xml::first(&xml::first(rule, "Expiration").unwrap_or_default(), "Days")
                    .unwrap_or_default(),
                xml::first(rule, "NoncurrentDays").unwrap_or_default(),
                xml::first(rule, "DaysAfterInitiation").unwrap_or_default(),
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

    pub(super) fn assert_queues_and_notification(&self, api: &MotoApi) {
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
        assert_eq!(xml::first(c, "Queue"), Some(jobs_arn));
        assert_eq!(
            xml::texts(c, "Event"),
            vec!["s3:ObjectCreated:*".to_string()]
        );
        let rules: BTreeMap<String, String> = c
            .split("<FilterRule>")
            .skip(1)
            .map(|r| {
                (
                    xml::first(r, "Name").unwrap().to_lowercase(),
                    xml::first(r, "Value").unwrap(),
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

    pub(super) fn assert_functions(&self, api: &MotoApi) {
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
                json!(base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&zip))),
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

    pub(super) fn assert_config(&self, name: &str, config: &Value) {
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

    pub(super) fn assert_function_url(&self, api: &MotoApi, webhook_url: &str) {
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

    pub(super) fn assert_event_source_mapping(&self, api: &MotoApi) {
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

    pub(super) fn assert_schedules(&self, api: &MotoApi, schedule_names: &Value) {
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

    pub(super) fn assert_iam(&self, api: &MotoApi) {
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
    pub(super) fn assert_state_grants_match_layout(&self, api: &MotoApi) {
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

    pub(super) fn assert_logs_and_alarms(&self, api: &MotoApi, topic_arn: &str) {
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
            let actions = xml::first(chunk, "AlarmActions").unwrap_or_default();
            assert!(
                actions.contains(topic_arn),
                "alarm {name} notifies the alarm topic: {chunk}"
            );
            let dims = xml::texts(
                &xml::first(chunk, "Dimensions").unwrap_or_default(),
                "Value",
            );
            alarms.insert(
                name,
                format!(
                    "{}/{} {} {}",
                    xml::first(chunk, "Namespace").unwrap_or_default(),
                    xml::first(chunk, "MetricName").unwrap_or_default(),
                    xml::first(chunk, "ComparisonOperator").unwrap_or_default(),
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
    pub(super) fn assert_dashboard(&self, api: &MotoApi, dashboard_name: &str) {
        assert_eq!(dashboard_name, NAME);
        let xml = api.query(
            "monitoring",
            &[
                ("Action", "GetDashboard"),
                ("Version", "2010-08-01"),
                ("DashboardName", dashboard_name),
            ],
        );
        let body = xml::first(&xml, "DashboardBody").unwrap_or_else(|| panic!("{xml}"));
        let body: Value = serde_json::from_str(&xml::unescape(&body)).unwrap();
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

    pub(super) fn assert_secrets_hold_no_value(&self, api: &MotoApi) {
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
    pub(super) fn probe_notification(&self, api: &MotoApi) {
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

    pub(super) fn assert_destroyed(&self, api: &MotoApi) {
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

pub(super) fn assert_state_holds_no_secret_value(
    tf: &Terraform,
    dir: &Path,
    env: &[(String, String)],
) {
    let state: Value = serde_json::from_str(&tf.ok_env(dir, &["show", "-json"], env)).unwrap();
    pub(super) fn walk(module: &Value, types: &mut Vec<String>) {
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

pub(super) fn collect_secret_refs(v: &Value, out: &mut Vec<String>) {
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
