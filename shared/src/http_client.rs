//! The one place HTTP clients are built: every call has connect and read timeouts.

use std::time::Duration;

/// A client for sources and destinations. `read_timeout` resets on every read, so a long
/// streaming download is fine while a stalled one is cut.
pub fn build(read_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(read_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("HTTP client configuration is static and valid")
}

/// Builds request headers from plain values and resolved secrets; secret values are marked
/// sensitive so no debug output shows them. The error names the offending header, never a value.
pub fn header_map(
    headers: &std::collections::BTreeMap<String, String>,
    secret_headers: Vec<(String, secrecy::SecretString)>,
) -> Result<reqwest::header::HeaderMap, String> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    let mut map = HeaderMap::new();
    let name =
        |k: &str| HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("bad header name {k}"));
    for (k, v) in headers {
        let value = HeaderValue::from_str(v).map_err(|_| format!("bad value for header {k}"))?;
        map.insert(name(k)?, value);
    }
    for (k, v) in secret_headers {
        let mut value = HeaderValue::from_str(crate::secret::expose(&v))
            .map_err(|_| format!("bad value for secret header {k}"))?;
        value.set_sensitive(true);
        map.insert(name(&k)?, value);
    }
    Ok(map)
}
