//! moto's AWS APIs over plain HTTP (IAM, STS, SQS, Secrets Manager, Lambda), for tests that run
//! the deployed functions against a moto with IAM enforcement on (design.md 6e).
//!
//! While enforcement is off moto routes a request by the service named in the `Authorization`
//! header and checks nothing, so a fixed header per service is enough. Once it is on
//! ([`MotoApi::enforce_iam`]) moto looks the access key up and verifies the SigV4 signature: a
//! [`MotoApi::signed`] client signs every request with an IAM user's key (see
//! [`MotoApi::create_admin_user`]). Only the calls the tests make are here, which is why this
//! signs plain HTTP with `aws-sigv4` instead of pulling one AWS SDK crate per service.

use std::fmt;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;
use serde_json::{Value, json};

use crate::moto::REGION;

/// An access key moto knows: an IAM user's (no session token) or an assumed role's.
#[derive(Clone)]
pub struct AccessKey {
    /// `AKIA...` (user) or `ASIA...` (assumed role).
    pub access_key_id: String,
    /// The secret half; never printed.
    pub secret_access_key: String,
    /// Set for temporary (STS) credentials.
    pub session_token: Option<String>,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl AccessKey {
    /// The variables a Lambda sandbox sets for its execution role.
    pub fn lambda_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("AWS_ACCESS_KEY_ID".to_string(), self.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                self.secret_access_key.clone(),
            ),
        ];
        if let Some(token) = &self.session_token {
            env.push(("AWS_SESSION_TOKEN".to_string(), token.clone()));
        }
        env
    }
}

/// A client of one moto server; unsigned (set-up before enforcement) or signed with a key.
#[derive(Clone, Debug)]
pub struct MotoApi {
    endpoint: String,
    http: reqwest::Client,
    key: Option<AccessKey>,
}

impl MotoApi {
    /// An unsigned client (moto accepts it while IAM enforcement is off).
    pub fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(60))
                .build()
                .expect("building an HTTP client"),
            key: None,
        }
    }

    /// The same server, every request SigV4-signed with `key`.
    pub fn signed(&self, key: AccessKey) -> Self {
        Self {
            key: Some(key),
            ..self.clone()
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends one request for `service`; returns status and body text.
    pub async fn send(
        &self,
        service: &str,
        method: reqwest::Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path_and_query}", self.endpoint);
        let mut req = self.http.request(method.clone(), &url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match &self.key {
            None => {
                req = req.header(
                    "Authorization",
                    format!(
                        "AWS4-HMAC-SHA256 Credential=test/20250101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=00"
                    ),
                );
            }
            Some(key) => {
                for (name, value) in
                    sign_headers(key, service, method.as_str(), &url, headers, &body)?
                {
                    req = req.header(name, value);
                }
            }
        }
        let resp = req
            .body(body)
            .send()
            .await
            .with_context(|| format!("moto {service}: {method} {path_and_query}"))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.unwrap_or_default()))
    }

    /// An AWS query-protocol call (IAM, STS): the XML body of a 2xx answer, else `Err`.
    pub async fn query(&self, service: &str, params: &[(&str, &str)]) -> anyhow::Result<String> {
        let body = form_encode(params);
        let (status, text) = self
            .send(
                service,
                reqwest::Method::POST,
                "/",
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )],
                body.into_bytes(),
            )
            .await?;
        if !(200..300).contains(&status) {
            bail!("moto {service} {params:?}: HTTP {status}: {text}");
        }
        Ok(text)
    }

    /// An AWS JSON-protocol call (SQS, Secrets Manager): the JSON body of a 2xx answer, else `Err`.
    pub async fn json(&self, service: &str, target: &str, body: &Value) -> anyhow::Result<Value> {
        let content_type = if service == "sqs" {
            "application/x-amz-json-1.0"
        } else {
            "application/x-amz-json-1.1"
        };
        let (status, text) = self
            .send(
                service,
                reqwest::Method::POST,
                "/",
                &[("content-type", content_type), ("x-amz-target", target)],
                body.to_string().into_bytes(),
            )
            .await?;
        if !(200..300).contains(&status) {
            bail!("moto {service} {target}: HTTP {status}: {text}");
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("moto {target}: not JSON: {text}"))
    }

    /// Turns IAM enforcement on for every later request (`POST /moto-api/reset-auth`, body `0`).
    /// Keys that exist stay valid; moto's dummy keys are refused from then on.
    pub async fn enforce_iam(&self) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/moto-api/reset-auth", self.endpoint))
            .header("Content-Type", "text/plain")
            .body("0")
            .send()
            .await
            .context("moto: POST /moto-api/reset-auth")?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("moto: reset-auth: HTTP {status}: {text}");
        }
        Ok(())
    }

    /// `sts:AssumeRole` of `role_arn`; the temporary credentials a Lambda sandbox would get.
    pub async fn assume_role(&self, role_arn: &str, session: &str) -> anyhow::Result<AccessKey> {
        let xml = self
            .query(
                "sts",
                &[
                    ("Action", "AssumeRole"),
                    ("Version", "2011-06-15"),
                    ("RoleArn", role_arn),
                    ("RoleSessionName", session),
                    ("DurationSeconds", "3600"),
                ],
            )
            .await?;
        let field = |tag: &str| {
            crate::xml::first(&xml, tag)
                .with_context(|| format!("AssumeRole answer without {tag}: {xml}"))
        };
        Ok(AccessKey {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: Some(field("SessionToken")?),
        })
    }

    /// Creates IAM user `name` allowed everything (`*` on `*`) and returns its new access key:
    /// the test's own identity once enforcement is on.
    pub async fn create_admin_user(&self, name: &str) -> anyhow::Result<AccessKey> {
        let iam = |action: &'static str| [("Action", action), ("Version", "2010-05-08")];
        let mut create = iam("CreateUser").to_vec();
        create.push(("UserName", name));
        self.query("iam", &create).await?;
        let policy =
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
                .to_string();
        let mut put = iam("PutUserPolicy").to_vec();
        put.extend([
            ("UserName", name),
            ("PolicyName", "admin"),
            ("PolicyDocument", &policy),
        ]);
        self.query("iam", &put).await?;
        let mut key = iam("CreateAccessKey").to_vec();
        key.push(("UserName", name));
        let xml = self.query("iam", &key).await?;
        Ok(AccessKey {
            access_key_id: crate::xml::first(&xml, "AccessKeyId")
                .context("CreateAccessKey: no key id")?,
            secret_access_key: crate::xml::first(&xml, "SecretAccessKey")
                .context("CreateAccessKey: no secret")?,
            session_token: None,
        })
    }

    /// An inline policy of a role, parsed.
    pub async fn get_role_policy(&self, role: &str, policy: &str) -> anyhow::Result<Value> {
        let xml = self
            .query(
                "iam",
                &[
                    ("Action", "GetRolePolicy"),
                    ("Version", "2010-05-08"),
                    ("RoleName", role),
                    ("PolicyName", policy),
                ],
            )
            .await?;
        let doc =
            crate::xml::first(&xml, "PolicyDocument").context("GetRolePolicy: no document")?;
        policy_document(&doc).with_context(|| format!("policy {role}/{policy}"))
    }

    /// The names of a role's inline policies.
    pub async fn role_policy_names(&self, role: &str) -> anyhow::Result<Vec<String>> {
        let xml = self
            .query(
                "iam",
                &[
                    ("Action", "ListRolePolicies"),
                    ("Version", "2010-05-08"),
                    ("RoleName", role),
                ],
            )
            .await?;
        let names = crate::xml::elements(&xml, "PolicyNames");
        Ok(names
            .first()
            .map(|n| crate::xml::texts(n, "member"))
            .unwrap_or_default())
    }

    /// The ARNs of the managed policies attached to a role.
    pub async fn attached_role_policies(&self, role: &str) -> anyhow::Result<Vec<String>> {
        let xml = self
            .query(
                "iam",
                &[
                    ("Action", "ListAttachedRolePolicies"),
                    ("Version", "2010-05-08"),
                    ("RoleName", role),
                ],
            )
            .await?;
        Ok(crate::xml::texts(&xml, "PolicyArn"))
    }

    /// A role's trust (assume-role) policy, parsed.
    pub async fn role_trust_policy(&self, role: &str) -> anyhow::Result<Value> {
        let xml = self
            .query(
                "iam",
                &[
                    ("Action", "GetRole"),
                    ("Version", "2010-05-08"),
                    ("RoleName", role),
                ],
            )
            .await?;
        let doc = crate::xml::first(&xml, "AssumeRolePolicyDocument")
            .with_context(|| format!("GetRole {role}: no trust policy: {xml}"))?;
        policy_document(&doc).with_context(|| format!("trust policy of {role}"))
    }

    /// Creates or replaces an inline policy of a role.
    pub async fn put_role_policy(
        &self,
        role: &str,
        policy: &str,
        document: &Value,
    ) -> anyhow::Result<()> {
        let doc = document.to_string();
        self.query(
            "iam",
            &[
                ("Action", "PutRolePolicy"),
                ("Version", "2010-05-08"),
                ("RoleName", role),
                ("PolicyName", policy),
                ("PolicyDocument", &doc),
            ],
        )
        .await
        .map(drop)
    }

    /// Lambda `GetFunctionConfiguration`: environment, role, timeout, memory, code hash.
    pub async fn function_configuration(&self, name: &str) -> anyhow::Result<Value> {
        let (status, text) = self
            .send(
                "lambda",
                reqwest::Method::GET,
                &format!("/2015-03-31/functions/{name}/configuration"),
                &[],
                Vec::new(),
            )
            .await?;
        if status != 200 {
            bail!("GetFunctionConfiguration {name}: HTTP {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("GetFunctionConfiguration {name}"))
    }

    /// Secrets Manager `PutSecretValue` (a string value).
    pub async fn put_secret_value(&self, secret_id: &str, value: &str) -> anyhow::Result<()> {
        self.json(
            "secretsmanager",
            "secretsmanager.PutSecretValue",
            &json!({"SecretId": secret_id, "SecretString": value}),
        )
        .await
        .map(drop)
    }

    /// SQS `ReceiveMessage` (up to 10, long poll up to `wait_secs`), with every system attribute.
    pub async fn receive_messages(
        &self,
        queue_url: &str,
        wait_secs: u32,
    ) -> anyhow::Result<Vec<Value>> {
        let v = self
            .json(
                "sqs",
                "AmazonSQS.ReceiveMessage",
                &json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 10,
                        "WaitTimeSeconds": wait_secs, "AttributeNames": ["All"],
                        "MessageSystemAttributeNames": ["All"]}),
            )
            .await?;
        Ok(v["Messages"].as_array().cloned().unwrap_or_default())
    }

    /// SQS `GetQueueAttributes` (all of them).
    pub async fn queue_attributes(&self, queue_url: &str) -> anyhow::Result<Value> {
        let v = self
            .json(
                "sqs",
                "AmazonSQS.GetQueueAttributes",
                &json!({"QueueUrl": queue_url, "AttributeNames": ["All"]}),
            )
            .await?;
        Ok(v["Attributes"].clone())
    }

    /// S3 `DeleteBucketPolicy`.
    pub async fn delete_bucket_policy(&self, bucket: &str) -> anyhow::Result<()> {
        let (status, text) = self
            .send(
                "s3",
                reqwest::Method::DELETE,
                &format!("/{bucket}?policy"),
                &[],
                Vec::new(),
            )
            .await?;
        if !(200..300).contains(&status) {
            bail!("DeleteBucketPolicy {bucket}: HTTP {status}: {text}");
        }
        Ok(())
    }
}

/// The headers (`authorization`, `x-amz-date`, `x-amz-security-token`) that sign a request.
fn sign_headers(
    key: &AccessKey,
    service: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let identity: Identity = Credentials::new(
        &key.access_key_id,
        &key.secret_access_key,
        key.session_token.clone(),
        None,
        "moto-test",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .context("SigV4 signing parameters")?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .context("SigV4: request")?;
    let (instructions, _) = sign(request, &params)
        .context("SigV4: signing")?
        .into_parts();
    let (headers, _) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name(), h.value().to_string()))
        .collect())
}

/// `application/x-www-form-urlencoded` as Python's `urlencode` writes it (`-_.~` kept): moto
/// checks the signature over the body it re-encodes from the parsed form, so the bytes must match.
fn form_encode(params: &[(&str, &str)]) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const FORM: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, FORM),
                utf8_percent_encode(v, FORM)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A policy document as IAM returns it: URL-encoded JSON (AWS and moto alike), or plain JSON.
pub fn policy_document(text: &str) -> anyhow::Result<Value> {
    let text = if text.trim_start().starts_with('{') {
        text.to_string()
    } else {
        percent_decode(text)
    };
    serde_json::from_str(&text).with_context(|| format!("policy document {text}"))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}
