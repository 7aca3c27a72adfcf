//! Keep secrets out of logs, errors and receipts.

/// Query parameters whose values are credentials (SAS signatures, tokens, keys).
const SECRET_QUERY_PARAMS: &[&str] = &[
    "sig",
    "token",
    "access_token",
    "code",
    "key",
    "password",
    "secret",
    "client_secret",
];

/// Returns `url` with the value of every credential-bearing query parameter replaced by `REDACTED`.
/// Works on anything that looks like a URL or a bare query string; never fails.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.find('?') {
        Some(i) => (&url[..=i], &url[i + 1..]),
        None if url.contains('=') && !url.contains("://") => ("", url),
        None => return url.to_string(),
    };
    let (query, fragment) = match query.find('#') {
        Some(i) => (&query[..i], &query[i..]),
        None => (query, ""),
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _))
                if SECRET_QUERY_PARAMS
                    .iter()
                    .any(|s| k.eq_ignore_ascii_case(s)) =>
            {
                format!("{k}=REDACTED")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{head}{}{fragment}", redacted.join("&"))
}

/// Replaces every occurrence of each known secret value in `text` (belt and braces for
/// error texts that came from third-party code).
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(*s, "REDACTED");
    }
    redact_embedded_urls(&out)
}

/// Redacts any `sig=` style parameter that appears inside free text.
pub fn redact_embedded_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.contains('=') && (word.contains('?') || word.contains('&')) {
            out.push_str(&redact_url(word));
        } else {
            out.push_str(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_removed_and_other_sas_fields_kept() {
        let url = "https://a.blob.core.windows.net/c/b.zip?sv=2021&si=read&sr=c&sig=abc%2Bdef";
        let r = redact_url(url);
        assert_eq!(
            r,
            "https://a.blob.core.windows.net/c/b.zip?sv=2021&si=read&sr=c&sig=REDACTED"
        );
    }

    #[test]
    fn bare_query_and_embedded_text_are_redacted() {
        assert_eq!(redact_url("sv=1&sig=zzz"), "sv=1&sig=REDACTED");
        let t = "error sending request for http://h/c?sv=1&sig=topsecret now";
        assert!(!redact_embedded_urls(t).contains("topsecret"));
        assert!(!scrub("password hunter22 leaked", &["hunter22"]).contains("hunter22"));
    }

    #[test]
    fn url_without_query_is_unchanged() {
        assert_eq!(redact_url("http://h/p"), "http://h/p");
    }
}
