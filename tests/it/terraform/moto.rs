//! moto's AWS APIs, blocking, for the suite's synchronous tests.

use super::*;

/// moto's AWS APIs for this synchronous suite: the harness's client
/// (`ferry_harness::moto_api`) on a runtime of its own; a call that cannot be made panics with
/// what it was.
pub(super) struct MotoApi {
    pub(super) api: ferry_harness::moto_api::MotoApi,
    pub(super) rt: tokio::runtime::Runtime,
}

impl MotoApi {
    pub(super) fn new(endpoint: &str) -> Self {
        Self {
            api: ferry_harness::moto_api::MotoApi::new(endpoint),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    pub(super) fn run<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> T {
        self.rt
            .block_on(call)
            .unwrap_or_else(|e| panic!("{what}: {e:#}"))
    }

    pub(super) fn send(
        &self,
        service: &str,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> (u16, String) {
        let what = format!("{method} {path}");
        self.run(&what, self.api.send(service, method, path, &[], body))
    }

    pub(super) fn get(&self, service: &str, path: &str) -> (u16, String) {
        self.send(service, reqwest::Method::GET, path, Vec::new())
    }

    pub(super) fn get_ok(&self, service: &str, path: &str) -> String {
        let (status, body) = self.get(service, path);
        assert_eq!(status, 200, "GET {path} ({service}): {body}");
        body
    }

    /// An AWS query-protocol call (IAM, CloudWatch); returns the XML body.
    pub(super) fn query(&self, service: &str, params: &[(&str, &str)]) -> String {
        self.run(
            &format!("{service} {params:?}"),
            self.api.query(service, params),
        )
    }

    /// An AWS JSON-protocol call (SQS, Logs, Secrets Manager), with its status (the suite also
    /// asserts refusals).
    pub(super) fn json(&self, service: &str, target: &str, body: Value) -> (u16, Value) {
        let content_type = if service == "sqs" {
            "application/x-amz-json-1.0"
        } else {
            "application/x-amz-json-1.1"
        };
        let (status, text) = self.run(
            target,
            self.api.send(
                service,
                reqwest::Method::POST,
                "/",
                &[("content-type", content_type), ("x-amz-target", target)],
                body.to_string().into_bytes(),
            ),
        );
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(super) fn queue_attributes(&self, url: &str) -> Value {
        self.run(url, self.api.queue_attributes(url))
    }

    pub(super) fn role_policy_names(&self, role: &str) -> Vec<String> {
        self.run(role, self.api.role_policy_names(role))
    }

    pub(super) fn attached_role_policies(&self, role: &str) -> Vec<String> {
        self.run(role, self.api.attached_role_policies(role))
    }

    pub(super) fn role_policy(&self, role: &str, name: &str) -> Value {
        self.run(role, self.api.get_role_policy(role, name))
    }

    pub(super) fn role_trust_policy(&self, role: &str) -> Value {
        self.run(role, self.api.role_trust_policy(role))
    }
}
