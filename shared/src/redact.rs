//! Keep secrets out of logs, errors, receipts and the message bodies kept under `failed/`.

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

/// Parameters whose values are credentials wherever `name=` appears in text, after any
/// character that cannot be part of a name: SAS signatures, connection-string keys and
/// signatures, OAuth secrets.
const SECRET_TEXT_PARAMS: &[&str] = &[
    "sig",
    "sharedaccesskey",
    "sharedaccesssignature",
    "accountkey",
    "client_secret",
    "access_token",
    "refresh_token",
    "password",
];

/// Parameters whose names are common words: their values are redacted only in a query string
/// or connection string (after `?`, `&` or `;`).
const SECRET_QUERY_ONLY_PARAMS: &[&str] = &["token", "code", "key", "secret"];

/// Characters that end a parameter value in text: query and connection-string separators,
/// quotes, whitespace, and the brackets and commas of surrounding markup.
fn ends_value(c: char) -> bool {
    c.is_whitespace() || "&;\"'<>,()[]{}\\#".contains(c)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
}

/// Redacts the value of every credential-bearing `name=value` parameter in free text, wherever
/// it occurs (any URL in the text, whichever parameter comes first, connection strings,
/// `SharedAccessSignature sr=..&sig=..` headers). Everything else is kept as it is.
pub fn redact_embedded_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut previous: Option<char> = None;
    while let Some(eq) = rest.find('=') {
        let before = &rest[..eq];
        let name_start = before
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_name_char(*c))
            .last()
            .map_or(eq, |(i, _)| i);
        let mut name = &before[name_start..];
        let mut boundary = before[..name_start].chars().next_back().or(previous);
        // A separator written as a JSON escape (`\u0026sig=`) in a body that is not parsed.
        if boundary == Some('\\') && name.len() > 5 {
            let (escape, tail) = name.split_at(5);
            if let Some(sep) = ["u0026", "u003f", "u003b"]
                .iter()
                .position(|e| escape.eq_ignore_ascii_case(e))
            {
                name = tail;
                boundary = Some(['&', '?', ';'][sep]);
            }
        }
        let secret = !name.is_empty()
            && (SECRET_TEXT_PARAMS
                .iter()
                .any(|s| name.eq_ignore_ascii_case(s))
                || (SECRET_QUERY_ONLY_PARAMS
                    .iter()
                    .any(|s| name.eq_ignore_ascii_case(s))
                    && matches!(boundary, Some('?' | '&' | ';'))));
        out.push_str(&rest[..=eq]);
        rest = &rest[eq + 1..];
        if secret {
            let end = rest.find(ends_value).unwrap_or(rest.len());
            if end > 0 {
                out.push_str("REDACTED");
            }
            rest = &rest[end..];
        }
        previous = out.chars().next_back();
    }
    out.push_str(rest);
    out
}

/// Redacts a message body for keeping (e.g. in `failed/`): a JSON body has every string in it
/// (keys and values, nested at any depth) redacted with [`redact_embedded_urls`] and is
/// serialised again, so it stays valid JSON; any other body is redacted as text.
pub fn redact_body(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(value) => serde_json::to_string(&redact_json(value)).unwrap_or_else(|_| {
            // Unreachable for a parsed value; text redaction is the safe fallback.
            redact_embedded_urls(body)
        }),
        Err(_) => redact_embedded_urls(body),
    }
}

fn redact_json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(redact_embedded_urls(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (redact_embedded_urls(&k), redact_json(v)))
                .collect(),
        ),
        other => other,
    }
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
    fn every_secret_parameter_in_text_is_redacted() {
        let t = "a https://a/c/x?sig=FIRST%2B&sv=1 then https://b/c/y?sv=2&sig=SECOND&se=2030 \
                 Endpoint=sb://n/;SharedAccessKeyName=listen;SharedAccessKey=KEY+/=;EntityPath=t \
                 SharedAccessSignature sr=x&sig=HEADERSIG&se=1&skn=k <u>http://h/?code=CODE</u>";
        let r = redact_embedded_urls(t);
        for secret in ["FIRST", "SECOND", "KEY+/=", "HEADERSIG", "CODE"] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        for kept in [
            "sv=1",
            "sv=2",
            "se=2030",
            "SharedAccessKeyName=listen",
            "EntityPath=t",
        ] {
            assert!(r.contains(kept), "{kept} lost in {r}");
        }
        // Common words are parameters only in a query or connection string.
        assert_eq!(
            redact_embedded_urls("exit code=3, key=value"),
            "exit code=3, key=value"
        );
        assert_eq!(redact_embedded_urls("no params"), "no params");
        assert_eq!(redact_embedded_urls("x?sig="), "x?sig=");
        assert_eq!(redact_embedded_urls("designsig=1"), "designsig=1");
    }

    #[test]
    fn json_body_keeps_valid_json_and_loses_every_signature() {
        // Compact JSON, two URLs; in the second `sig` is the first query parameter.
        let body = r#"{"uri":"https://a.blob.core.windows.net/c/1.xml?sv=2021&sig=ONE%2Bx","more":["https://b.blob.core.windows.net/d/2.xml?sig=TWO&se=2030-01-01"],"n":{"conn":"Endpoint=sb://n/;SharedAccessKeyName=k;SharedAccessKey=THREE=","esc":"https://c/x?sv=1\u0026sig=FOUR"},"count":3}"#;
        let r = redact_body(body);
        let v: serde_json::Value = serde_json::from_str(&r).expect("still JSON");
        for secret in ["ONE", "TWO", "THREE", "FOUR"] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        assert_eq!(v["count"], 3);
        assert_eq!(
            v["more"][0],
            "https://b.blob.core.windows.net/d/2.xml?sig=REDACTED&se=2030-01-01"
        );
        assert_eq!(
            v["uri"],
            "https://a.blob.core.windows.net/c/1.xml?sv=2021&sig=REDACTED"
        );
        // Not JSON: redacted as text.
        let t = redact_body("garbage {\"u\":\"http://h/?sv=1\\u0026sig=FIVE\"");
        assert!(!t.contains("FIVE") && t.starts_with("garbage"), "{t}");
    }

    #[test]
    fn url_without_query_is_unchanged() {
        assert_eq!(redact_url("http://h/p"), "http://h/p");
    }
}
