//! Blob URLs from messages are untrusted: a URL is fetched (with a token) only when it lies under
//! one of the token's blob base URLs — same scheme, host and port, path below the base path
//! (case-insensitive) — and has no dot segments, credentials, query or odd characters. Anything
//! else is refused, so a token never travels to a host or container it was not issued for.

use percent_encoding::percent_decode_str;
use thiserror::Error;
use url::Url;

use crate::names;

/// Why a message's blob URL was refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum UriRefusal {
    /// Not an absolute URL.
    #[error("uri is not a valid absolute URL")]
    Invalid,
    /// Neither http nor https.
    #[error("uri scheme {0:?} is not http or https")]
    Scheme(String),
    /// Whitespace, a control character or a backslash anywhere in it.
    #[error("uri contains whitespace, a control character or a backslash")]
    BadCharacter,
    /// User info, a query or a fragment (a notification must not bring its own SAS).
    #[error("uri carries user info, a query or a fragment")]
    ExtraParts,
    /// A `.` or `..` path segment (it could climb out of the token's container).
    #[error("uri contains a '.' or '..' path segment")]
    DotSegment,
    /// Not below any blob base URL the token service handed out.
    #[error("uri {uri} is not under any of the token's blob base URLs ({bases})")]
    OutsideBases {
        /// The refused URI (it carries no credentials).
        uri: String,
        /// The allowed bases, without their SAS.
        bases: String,
    },
    /// Below a base, but the blob name breaks the name rules.
    #[error("uri names an unusable blob: {0}")]
    BadName(String),
}

/// A checked blob URL and where it lies under its base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The URL, normalised by the parser, without credentials.
    pub url: String,
    /// Last path segment of the base (the container).
    pub container: String,
    /// Decoded blob name below the base, validated as a relative object name.
    pub name: String,
}

/// Parses and checks an untrusted URL (no base involved yet).
pub fn check(raw: &str) -> Result<Url, UriRefusal> {
    if raw
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return Err(UriRefusal::BadCharacter);
    }
    // The parser resolves `..` (also `%2e%2e`) silently: look at the raw segments first.
    if let Some((_, after_scheme)) = raw.split_once("://") {
        let path = after_scheme
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .split_once('/')
            .map_or("", |(_, p)| p);
        for segment in path.split('/') {
            let decoded = percent_decode_str(segment).decode_utf8_lossy();
            if decoded == "." || decoded == ".." {
                return Err(UriRefusal::DotSegment);
            }
        }
    }
    let url = Url::parse(raw).map_err(|_| UriRefusal::Invalid)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UriRefusal::Scheme(url.scheme().to_string()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UriRefusal::Invalid);
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(UriRefusal::ExtraParts);
    }
    Ok(url)
}

/// The encoded part of `uri`'s path below `base`, when `uri` has the base's scheme, host and
/// port and its path continues the base path at a segment boundary (case-insensitively).
pub fn relative_to<'a>(base: &Url, uri: &'a Url) -> Option<&'a str> {
    if base.scheme() != uri.scheme()
        || !base
            .host_str()?
            .eq_ignore_ascii_case(uri.host_str().unwrap_or(""))
        || base.port_or_known_default() != uri.port_or_known_default()
    {
        return None;
    }
    let base_path = base.path().trim_end_matches('/');
    let path = uri.path();
    let head = path.get(..base_path.len())?;
    if !head.eq_ignore_ascii_case(base_path) {
        return None;
    }
    let rest = path[base_path.len()..].strip_prefix('/')?;
    (!rest.is_empty()).then_some(rest)
}

/// Decodes and validates a blob name (it becomes a destination path).
pub fn blob_name(encoded: &str) -> Result<String, UriRefusal> {
    let name = percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| UriRefusal::BadName("not UTF-8".into()))?
        .into_owned();
    names::validate_object_name("blob name", &name, names::MAX_NAME_BYTES)
        .map_err(|e| UriRefusal::BadName(e.to_string()))?;
    Ok(name)
}

/// The last segment of a base URL's path (its container).
pub fn container_of(base: &Url) -> String {
    base.path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn under(base: &str, uri: &str) -> Result<String, UriRefusal> {
        let url = check(uri)?;
        let base = Url::parse(base).unwrap();
        let rest = relative_to(&base, &url).ok_or(UriRefusal::OutsideBases {
            uri: uri.into(),
            bases: String::new(),
        })?;
        blob_name(rest)
    }

    #[test]
    fn accepts_urls_below_the_base_case_insensitively() {
        let base = "https://acct.blob.core.windows.net/export";
        assert_eq!(
            under(
                base,
                "https://ACCT.blob.core.windows.net/Export/2026/a%20b.jsonl.gz"
            )
            .unwrap(),
            "2026/a b.jsonl.gz"
        );
        assert_eq!(
            under(
                "http://127.0.0.1:10000/devstoreaccount1/exp/",
                "http://127.0.0.1:10000/devstoreaccount1/exp/x.xml"
            )
            .unwrap(),
            "x.xml"
        );
    }

    #[test]
    fn refuses_other_hosts_containers_ports_schemes_and_traversal() {
        let base = "https://acct.blob.core.windows.net/export";
        let outside = |u: &str| matches!(under(base, u), Err(UriRefusal::OutsideBases { .. }));
        assert!(outside("https://evil.example/export/a.xml"));
        assert!(outside(
            "https://acct.blob.core.windows.net.evil.example/export/a.xml"
        ));
        assert!(outside("https://acct.blob.core.windows.net/exports/a.xml"));
        assert!(outside("https://acct.blob.core.windows.net/other/a.xml"));
        assert!(outside(
            "https://acct.blob.core.windows.net:8443/export/a.xml"
        ));
        assert!(outside("http://acct.blob.core.windows.net/export/a.xml"));
        assert!(outside("https://acct.blob.core.windows.net/export"));
        for dots in [
            "https://acct.blob.core.windows.net/export/../other/a.xml",
            "https://acct.blob.core.windows.net/export/%2e%2e/other/a.xml",
            "https://acct.blob.core.windows.net/export/.%2E/other/a.xml",
            "https://acct.blob.core.windows.net/export/./a.xml",
        ] {
            assert_eq!(under(base, dots), Err(UriRefusal::DotSegment), "{dots}");
        }
        assert_eq!(
            under(base, "https://acct.blob.core.windows.net/export/a%2F..%2Fb"),
            Err(UriRefusal::BadName(
                "blob name contains a '..' or '.' path segment: unsafe name".into()
            ))
        );
        assert_eq!(
            under(base, "https://u:p@acct.blob.core.windows.net/export/a"),
            Err(UriRefusal::ExtraParts)
        );
        assert_eq!(
            under(base, "https://acct.blob.core.windows.net/export/a?sig=x"),
            Err(UriRefusal::ExtraParts)
        );
        assert_eq!(
            under(base, "https://acct.blob.core.windows.net/export/a\\b"),
            Err(UriRefusal::BadCharacter)
        );
        assert_eq!(
            under(base, "file:///etc/passwd"),
            Err(UriRefusal::Scheme("file".into()))
        );
        assert_eq!(under(base, "not a url"), Err(UriRefusal::BadCharacter));
        assert_eq!(under(base, "/export/a"), Err(UriRefusal::Invalid));
    }
}
