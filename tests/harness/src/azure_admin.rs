//! A small Azure Blob admin client (Shared Key auth) and service SAS generator, for
//! preparing test data in Azurite (or any account whose key is known).
//!
//! Protocol notes:
//! - Shared Key string-to-sign (versions 2015-02-21+): VERB, Content-Encoding,
//!   Content-Language, Content-Length (empty when 0), Content-MD5, Content-Type, Date
//!   (empty: `x-ms-date` is used), If-Modified-Since, If-Match, If-None-Match,
//!   If-Unmodified-Since, Range, each followed by `\n`; then the sorted `x-ms-*` headers
//!   as `name:value\n`; then the canonicalized resource `/<account><encoded path>` and
//!   one `\n<lowercase param>:<decoded value>` per query parameter, sorted. With
//!   path-style emulator URLs the path itself starts with the account name, so it
//!   appears twice: `/devstoreaccount1/devstoreaccount1/container`.
//! - Service SAS string-to-sign (versions 2020-12-06+): sp, st, se,
//!   `/blob/<account>/<container>[/<blob>]`, si, sip, spr, sv, sr, snapshot time, ses,
//!   rscc, rscd, rsce, rscl, rsct, joined by `\n`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode, Url};
use sha2::Sha256;
use tokio::io::AsyncReadExt;

/// The storage service version used for requests and SAS tokens.
pub(crate) const API_VERSION: &str = "2025-01-05";
/// Block size used by [`AzureAdmin::put_blob_from_file`].
pub(crate) const BLOCK_SIZE: usize = 4 * 1024 * 1024;
/// Put Block requests in flight at once.
const BLOCKS_IN_FLIGHT: usize = 4;

/// Characters kept as-is in a path (blob names keep their `/`).
const PATH_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');
/// Characters kept as-is in a query value.
const QUERY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Shared Key admin client for one storage account.
#[derive(Clone)]
pub struct AzureAdmin {
    http: reqwest::Client,
    /// Account URL without a trailing slash.
    base: Url,
    account: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for AzureAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureAdmin")
            .field("base", &self.base.as_str())
            .field("account", &self.account)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// What a blob upload produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutBlobResult {
    /// The blob's ETag, with its quotes as the service sent it.
    /// The ETag the service gave the new blob (quoted).
    pub etag: String,
    /// Base64 MD5 of the content, when the blob has one.
    pub content_md5: Option<String>,
    /// Size in bytes.
    pub size: u64,
}

/// Properties of an existing blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobProperties {
    /// The blob's ETag (quoted).
    pub etag: String,
    /// Base64 MD5 of the content, when the blob has one.
    pub content_md5: Option<String>,
    /// Size in bytes.
    pub size: u64,
}

/// A stored access policy of a container (values as the service returns them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// The policy's id (what a SAS names in `si`).
    pub id: String,
    /// When it starts to be valid.
    pub start: Option<String>,
    /// When it stops being valid.
    pub expiry: Option<String>,
    /// Its permission letters (`rl`, `rld`).
    pub permission: Option<String>,
}

impl AzureAdmin {
    /// `account_url`: e.g. `http://127.0.0.1:10000/devstoreaccount1` (path-style) or
    /// `https://acct.blob.core.windows.net`; `key_b64`: the account key.
    pub fn new(account_url: &str, account: &str, key_b64: &str) -> anyhow::Result<Self> {
        let mut base = Url::parse(account_url).context("invalid account URL")?;
        let path = base.path().trim_end_matches('/').to_string();
        base.set_path(&path);
        base.set_query(None);
        let key = B64.decode(key_b64).context("account key is not base64")?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .build()
            .context("building HTTP client")?;
        Ok(Self {
            http,
            base,
            account: account.to_string(),
            key,
        })
    }

    /// The storage account name.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The account URL (no trailing slash).
    pub fn account_url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    /// The container's URL (no SAS).
    pub fn container_url(&self, container: &str) -> String {
        self.url_for(Some(container), None).to_string()
    }

    /// Blob URL with the name percent-encoded (`/` kept).
    pub fn blob_url(&self, container: &str, blob: &str) -> String {
        self.url_for(Some(container), Some(blob)).to_string()
    }

    fn url_for(&self, container: Option<&str>, blob: Option<&str>) -> Url {
        let mut path = self.base.path().trim_end_matches('/').to_string();
        if let Some(c) = container {
            path.push('/');
            path.extend(utf8_percent_encode(c, PATH_SET));
            if let Some(b) = blob {
                path.push('/');
                path.extend(utf8_percent_encode(b, PATH_SET));
            }
        }
        let mut url = self.base.clone();
        url.set_path(&path);
        url
    }

    // -----------------------------------------------------------------------
    // Containers

    /// Creates a private container; succeeds when it already exists.
    pub async fn create_container(&self, name: &str) -> anyhow::Result<()> {
        let resp = self
            .send(
                Method::PUT,
                Some(name),
                None,
                &[("restype", "container".into())],
                &[],
                Vec::new(),
            )
            .await?;
        if resp.status() == StatusCode::CONFLICT {
            return Ok(());
        }
        expect_success(resp, &format!("Create Container {name}")).await?;
        Ok(())
    }

    /// Deletes a container; succeeds when it does not exist.
    pub async fn delete_container(&self, name: &str) -> anyhow::Result<()> {
        let resp = self
            .send(
                Method::DELETE,
                Some(name),
                None,
                &[("restype", "container".into())],
                &[],
                Vec::new(),
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        expect_success(resp, &format!("Delete Container {name}")).await?;
        Ok(())
    }

    /// Names of all blobs in a container (follows `NextMarker`).
    pub async fn list_blobs(&self, container: &str) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![
                ("restype", "container".to_string()),
                ("comp", "list".to_string()),
            ];
            if !marker.is_empty() {
                query.push(("marker", marker.clone()));
            }
            let resp = self
                .send(Method::GET, Some(container), None, &query, &[], Vec::new())
                .await?;
            let body = expect_success(resp, &format!("List Blobs {container}"))
                .await?
                .text()
                .await?;
            for blob in crate::xml::elements(&body, "Blob") {
                if let Some(name) = crate::xml::elements(blob, "Name").first() {
                    names.push(crate::xml::unescape(name));
                }
            }
            marker = crate::xml::elements(&body, "NextMarker")
                .first()
                .map(|m| crate::xml::unescape(m))
                .unwrap_or_default();
            if marker.is_empty() {
                return Ok(names);
            }
        }
    }

    // -----------------------------------------------------------------------
    // Blobs

    /// Single Put Blob (block blob); the service computes the Content-MD5.
    pub async fn put_blob(
        &self,
        container: &str,
        name: &str,
        data: &[u8],
    ) -> anyhow::Result<PutBlobResult> {
        let resp = self
            .send(
                Method::PUT,
                Some(container),
                Some(name),
                &[],
                &[
                    ("x-ms-blob-type", "BlockBlob".into()),
                    ("Content-Type", "application/octet-stream".into()),
                ],
                data.to_vec(),
            )
            .await?;
        let resp = expect_success(resp, &format!("Put Blob {container}/{name}")).await?;
        Ok(PutBlobResult {
            etag: header(&resp, "etag").unwrap_or_default(),
            content_md5: header(&resp, "content-md5"),
            size: data.len() as u64,
        })
    }

    /// Uploads a file as 4 MiB Put Block calls (a few in flight) plus Put Block List,
    /// reading the file in blocks (never whole). Sets the blob's Content-MD5, computed
    /// on the fly.
    pub async fn put_blob_from_file(
        &self,
        container: &str,
        name: &str,
        path: impl AsRef<Path>,
    ) -> anyhow::Result<PutBlobResult> {
        self.put_blob_from_file_opts(container, name, path.as_ref(), true)
            .await
    }

    /// Like [`put_blob_from_file`](Self::put_blob_from_file); with `set_md5 = false`
    /// the blob ends up without a Content-MD5 (as large uploads by many tools do).
    pub async fn put_blob_from_file_opts(
        &self,
        container: &str,
        name: &str,
        path: &Path,
        set_md5: bool,
    ) -> anyhow::Result<PutBlobResult> {
        let mut file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let mut md5 = Md5::new();
        let mut ids: Vec<String> = Vec::new();
        let mut size = 0u64;
        let mut inflight: tokio::task::JoinSet<anyhow::Result<()>> = tokio::task::JoinSet::new();
        loop {
            let mut buf = vec![0u8; BLOCK_SIZE];
            let n = read_full(&mut file, &mut buf)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            md5.update(&buf);
            size += n as u64;
            // Same-length ids for every block of a blob, as the service requires.
            let id = B64.encode(format!("ferry-block-{:08}", ids.len()));
            ids.push(id.clone());
            while inflight.len() >= BLOCKS_IN_FLIGHT {
                join_one(&mut inflight).await?;
            }
            let this = self.clone();
            let (c, b) = (container.to_string(), name.to_string());
            inflight.spawn(async move { this.put_block(&c, &b, &id, buf).await });
            if n < BLOCK_SIZE {
                break;
            }
        }
        while !inflight.is_empty() {
            join_one(&mut inflight).await?;
        }

        let mut xml = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
        for id in &ids {
            let _ = write!(xml, "<Latest>{id}</Latest>");
        }
        xml.push_str("</BlockList>");
        let md5_b64 = B64.encode(md5.finalize());
        let mut headers = vec![
            ("Content-Type", "application/xml".to_string()),
            (
                "x-ms-blob-content-type",
                "application/octet-stream".to_string(),
            ),
        ];
        if set_md5 {
            headers.push(("x-ms-blob-content-md5", md5_b64.clone()));
        }
        let resp = self
            .send(
                Method::PUT,
                Some(container),
                Some(name),
                &[("comp", "blocklist".into())],
                &headers,
                xml.into_bytes(),
            )
            .await?;
        let resp = expect_success(resp, &format!("Put Block List {container}/{name}")).await?;
        Ok(PutBlobResult {
            etag: header(&resp, "etag").unwrap_or_default(),
            content_md5: set_md5.then_some(md5_b64),
            size,
        })
    }

    async fn put_block(
        &self,
        container: &str,
        name: &str,
        id: &str,
        data: Vec<u8>,
    ) -> anyhow::Result<()> {
        let resp = self
            .send(
                Method::PUT,
                Some(container),
                Some(name),
                &[("comp", "block".into()), ("blockid", id.to_string())],
                &[],
                data,
            )
            .await?;
        expect_success(resp, &format!("Put Block {container}/{name}")).await?;
        Ok(())
    }

    /// Whole blob content (for small test blobs).
    pub async fn get_blob(&self, container: &str, name: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self
            .send(
                Method::GET,
                Some(container),
                Some(name),
                &[],
                &[],
                Vec::new(),
            )
            .await?;
        let resp = expect_success(resp, &format!("Get Blob {container}/{name}")).await?;
        Ok(resp.bytes().await?.to_vec())
    }

    /// Get Blob Properties (HEAD).
    pub async fn blob_properties(
        &self,
        container: &str,
        name: &str,
    ) -> anyhow::Result<BlobProperties> {
        let resp = self
            .send(
                Method::HEAD,
                Some(container),
                Some(name),
                &[],
                &[],
                Vec::new(),
            )
            .await?;
        let resp = expect_success(resp, &format!("Get Blob Properties {container}/{name}")).await?;
        Ok(BlobProperties {
            etag: header(&resp, "etag").unwrap_or_default(),
            content_md5: header(&resp, "content-md5"),
            size: header(&resp, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
    }

    /// Deletes a blob (and its snapshots).
    pub async fn delete_blob(&self, container: &str, name: &str) -> anyhow::Result<()> {
        let resp = self
            .send(
                Method::DELETE,
                Some(container),
                Some(name),
                &[],
                &[("x-ms-delete-snapshots", "include".into())],
                Vec::new(),
            )
            .await?;
        expect_success(resp, &format!("Delete Blob {container}/{name}")).await?;
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Stored access policies

    /// The container's stored access policies (Get Container ACL).
    pub async fn access_policies(&self, container: &str) -> anyhow::Result<Vec<AccessPolicy>> {
        Ok(self.get_acl(container).await?.0)
    }

    async fn get_acl(
        &self,
        container: &str,
    ) -> anyhow::Result<(Vec<AccessPolicy>, Option<String>)> {
        let resp = self
            .send(
                Method::GET,
                Some(container),
                None,
                &[("restype", "container".into()), ("comp", "acl".into())],
                &[],
                Vec::new(),
            )
            .await?;
        let resp = expect_success(resp, &format!("Get Container ACL {container}")).await?;
        let public = header(&resp, "x-ms-blob-public-access");
        let body = resp.text().await?;
        let policies = crate::xml::elements(&body, "SignedIdentifier")
            .into_iter()
            .map(|si| {
                let field = |tag: &str| {
                    crate::xml::elements(si, tag)
                        .first()
                        .map(|v| crate::xml::unescape(v))
                };
                AccessPolicy {
                    id: field("Id").unwrap_or_default(),
                    start: field("Start").filter(|v| !v.is_empty()),
                    expiry: field("Expiry").filter(|v| !v.is_empty()),
                    permission: field("Permission").filter(|v| !v.is_empty()),
                }
            })
            .collect();
        Ok((policies, public))
    }

    async fn put_acl(
        &self,
        container: &str,
        policies: &[AccessPolicy],
        public_access: Option<String>,
    ) -> anyhow::Result<()> {
        let mut xml = String::from(r#"<?xml version="1.0" encoding="utf-8"?><SignedIdentifiers>"#);
        for p in policies {
            let _ = write!(
                xml,
                "<SignedIdentifier><Id>{}</Id><AccessPolicy>",
                crate::xml::escape(&p.id)
            );
            for (tag, value) in [
                ("Start", &p.start),
                ("Expiry", &p.expiry),
                ("Permission", &p.permission),
            ] {
                if let Some(v) = value {
                    let _ = write!(xml, "<{tag}>{}</{tag}>", crate::xml::escape(v));
                }
            }
            xml.push_str("</AccessPolicy></SignedIdentifier>");
        }
        xml.push_str("</SignedIdentifiers>");
        let mut headers = vec![("Content-Type", "application/xml".to_string())];
        if let Some(p) = public_access {
            headers.push(("x-ms-blob-public-access", p));
        }
        let resp = self
            .send(
                Method::PUT,
                Some(container),
                None,
                &[("restype", "container".into()), ("comp", "acl".into())],
                &headers,
                xml.into_bytes(),
            )
            .await?;
        expect_success(resp, &format!("Set Container ACL {container}")).await?;
        Ok(())
    }

    /// Adds or replaces the stored access policy `id` (e.g. permissions `"rl"`), valid
    /// from a few minutes ago until `expiry`. Other policies are kept (at most 5 per
    /// container).
    pub async fn set_access_policy(
        &self,
        container: &str,
        id: &str,
        permissions: &str,
        expiry: SystemTime,
    ) -> anyhow::Result<()> {
        let (mut policies, public) = self.get_acl(container).await?;
        policies.retain(|p| p.id != id);
        policies.push(AccessPolicy {
            id: id.to_string(),
            start: Some(format_iso8601(SystemTime::now() - Duration::from_secs(300))),
            expiry: Some(format_iso8601(expiry)),
            permission: Some(permissions.to_string()),
        });
        self.put_acl(container, &policies, public).await
    }

    /// Removes the stored access policy `id` (every SAS that names it stops working).
    pub async fn remove_access_policy(&self, container: &str, id: &str) -> anyhow::Result<()> {
        let (mut policies, public) = self.get_acl(container).await?;
        let before = policies.len();
        policies.retain(|p| p.id != id);
        if policies.len() == before {
            bail!("container {container} has no access policy {id:?}");
        }
        self.put_acl(container, &policies, public).await
    }

    // -----------------------------------------------------------------------
    // Service SAS (query strings without a leading '?')

    /// Container SAS bound to a stored access policy: `sv=..&sr=c&si=..&sig=..`.
    pub fn container_sas_for_policy(&self, container: &str, policy_id: &str) -> String {
        self.service_sas(container, None, None, None, Some(policy_id))
    }

    /// Ad-hoc container SAS with `sp`/`se` (no stored policy).
    pub fn container_sas(&self, container: &str, permissions: &str, expiry: SystemTime) -> String {
        self.service_sas(container, None, Some(permissions), Some(expiry), None)
    }

    /// Ad-hoc blob SAS (`sr=b`).
    pub fn blob_sas(
        &self,
        container: &str,
        blob: &str,
        permissions: &str,
        expiry: SystemTime,
    ) -> String {
        self.service_sas(container, Some(blob), Some(permissions), Some(expiry), None)
    }

    fn service_sas(
        &self,
        container: &str,
        blob: Option<&str>,
        permissions: Option<&str>,
        expiry: Option<SystemTime>,
        identifier: Option<&str>,
    ) -> String {
        let sp = permissions.unwrap_or("");
        let se = expiry.map(format_iso8601).unwrap_or_default();
        let si = identifier.unwrap_or("");
        let sr = if blob.is_some() { "b" } else { "c" };
        let mut resource = format!("/blob/{}/{container}", self.account);
        if let Some(b) = blob {
            resource.push('/');
            resource.push_str(b);
        }
        let string_to_sign = [
            sp,
            "", // st
            &se,
            &resource,
            si,
            "", // sip
            "", // spr
            API_VERSION,
            sr,
            "", // snapshot time
            "", // ses
            "", // rscc
            "", // rscd
            "", // rsce
            "", // rscl
            "", // rsct
        ]
        .join("\n");
        let sig = self.sign(&string_to_sign);

        let mut params: Vec<(&str, &str)> = vec![("sv", API_VERSION)];
        if !sp.is_empty() {
            params.push(("sp", sp));
        }
        if !se.is_empty() {
            params.push(("se", &se));
        }
        params.push(("sr", sr));
        if !si.is_empty() {
            params.push(("si", si));
        }
        params.push(("sig", &sig));
        encode_query(&params)
    }

    // -----------------------------------------------------------------------
    // Shared Key requests

    fn sign(&self, string_to_sign: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(string_to_sign.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }

    /// Sends a Shared Key signed request. `headers` names are matched case-insensitively
    /// for the standard string-to-sign slots; `x-ms-*` names must be lowercase.
    async fn send(
        &self,
        method: Method,
        container: Option<&str>,
        blob: Option<&str>,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut url = self.url_for(container, blob);
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if !pairs.is_empty() {
            url.set_query(Some(&encode_query(&pairs)));
        }

        let date = httpdate::fmt_http_date(SystemTime::now());
        let mut all_headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        all_headers.push(("x-ms-date".into(), date));
        all_headers.push(("x-ms-version".into(), API_VERSION.into()));

        let get = |name: &str| -> String {
            all_headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let content_length = if body.is_empty() {
            String::new()
        } else {
            body.len().to_string()
        };
        let mut to_sign = format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n\n{}\n{}\n{}\n{}\n{}\n",
            method.as_str(),
            get("Content-Encoding"),
            get("Content-Language"),
            content_length,
            get("Content-MD5"),
            get("Content-Type"),
            get("If-Modified-Since"),
            get("If-Match"),
            get("If-None-Match"),
            get("If-Unmodified-Since"),
            get("Range"),
        );
        let mut ms: Vec<(String, String)> = all_headers
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-ms-"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        ms.sort();
        for (k, v) in &ms {
            let _ = writeln!(to_sign, "{k}:{v}");
        }
        let _ = write!(to_sign, "/{}{}", self.account, url.path());
        let mut params: Vec<(String, &str)> = query
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
            .collect();
        params.sort();
        for (k, v) in &params {
            let _ = write!(to_sign, "\n{k}:{v}");
        }
        let auth = format!("SharedKey {}:{}", self.account, self.sign(&to_sign));

        let mut req = self.http.request(method.clone(), url);
        for (k, v) in &all_headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = req.header("Authorization", auth);
        if method == Method::PUT || method == Method::POST {
            // hyper sends no Content-Length for an empty body; the service requires one
            // on PUT (Azurite answers 400, Azure 411).
            if body.is_empty() {
                req = req.header("Content-Length", "0");
            }
            req = req.body(body);
        }
        req.send()
            .await
            .with_context(|| format!("{method} {}", self.base))
    }
}

async fn join_one(set: &mut tokio::task::JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    match set.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(anyhow!("upload task failed: {e}")),
        None => Ok(()),
    }
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn expect_success(resp: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let code = header(&resp, "x-ms-error-code").unwrap_or_default();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(2000).collect();
    bail!("{what}: HTTP {status} {code}: {body}")
}

fn encode_query(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_SET)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `YYYY-MM-DDThh:mm:ssZ` (UTC, whole seconds), the format SAS `se`/`st` and access
/// policies use.
pub fn format_iso8601(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_formats_utc() {
        assert_eq!(format_iso8601(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(format_iso8601(t), "2023-11-14T22:13:20Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format_iso8601(t), "2000-02-29T00:00:00Z");
        let t = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(format_iso8601(t), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn sas_has_expected_fields() {
        let admin = AzureAdmin::new(
            "http://127.0.0.1:1/devstoreaccount1",
            "devstoreaccount1",
            crate::ACCOUNT_KEY,
        )
        .unwrap();
        let sas = admin.container_sas_for_policy("c1", "pol");
        assert!(sas.starts_with(&format!("sv={API_VERSION}&sr=c&si=pol&sig=")));
        let sas = admin.blob_sas("c1", "a b.txt", "r", UNIX_EPOCH);
        assert!(sas.contains("&sp=r&se=1970-01-01T00%3A00%3A00Z&sr=b&sig="));
        assert_eq!(
            admin.blob_url("c1", "dir/a b.txt"),
            "http://127.0.0.1:1/devstoreaccount1/c1/dir/a%20b.txt"
        );
    }
}
