//! The file notification in a message body: `blobType`, `correlationId`, `contentType`,
//! `contentEncoding`, `uri`, `properties`. Field casing varies between the vendor's docs
//! (camelCase) and its sample (PascalCase), so names are matched case-insensitively. The body is
//! untrusted: every field is checked before it becomes part of a job.

use serde_json::Value;

use crate::json::field_ci;

/// Longest accepted `blobType` / `correlationId`.
const MAX_ID_CHARS: usize = 256;

/// A parsed, checked notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNotice {
    /// e.g. `Gateway.ItemChanges`.
    pub blob_type: String,
    /// The file's correlation id (job ids derive from it).
    pub correlation_id: String,
    /// e.g. `application/x-jsonlines`; `None` when absent or empty.
    pub content_type: Option<String>,
    /// `Some("gzip")` or `None` (absent, empty or `identity`).
    pub content_encoding: Option<String>,
    /// The blob URL without token (checked against the token's bases separately).
    pub uri: String,
    /// Free-form properties, kept as given.
    pub properties: Value,
}

/// Parses a message body; `Err` is the reason it is poison.
pub fn parse(body: &[u8]) -> Result<FileNotice, String> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    if !value.is_object() {
        return Err("body is not a JSON object".into());
    }
    let text = |name: &str, required: bool| -> Result<Option<String>, String> {
        match field_ci(&value, name).map_err(|e| e.to_string())? {
            None | Some(Value::Null) if !required => Ok(None),
            None | Some(Value::Null) => Err(format!("{name} is missing")),
            Some(Value::String(s)) if s.trim().is_empty() && required => {
                Err(format!("{name} is empty"))
            }
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                Err(format!("{name} contains a control character"))
            }
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(format!("{name} is not a string")),
        }
    };
    let blob_type = text("blobType", true)?.unwrap_or_default();
    let correlation_id = text("correlationId", true)?.unwrap_or_default();
    for (name, v) in [("blobType", &blob_type), ("correlationId", &correlation_id)] {
        if v.chars().count() > MAX_ID_CHARS {
            return Err(format!("{name} is longer than {MAX_ID_CHARS} characters"));
        }
    }
    let uri = text("uri", true)?.unwrap_or_default();
    let content_type = text("contentType", false)?;
    let content_encoding = match text("contentEncoding", false)? {
        None => None,
        Some(e) if e.eq_ignore_ascii_case("identity") => None,
        Some(e) if e.eq_ignore_ascii_case("gzip") => Some("gzip".to_string()),
        Some(e) => {
            return Err(format!(
                "contentEncoding {e:?} is not supported (only gzip)"
            ));
        }
    };
    let properties = field_ci(&value, "properties")
        .map_err(|e| e.to_string())?
        .cloned()
        .unwrap_or(Value::Null);
    Ok(FileNotice {
        blob_type,
        correlation_id,
        content_type,
        content_encoding,
        uri,
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_in_two_spellings_is_poison_not_first_come() {
        let body = br#"{"blobType":"T","correlationId":"c","uri":"https://a/c/x.jsonl","URI":"https://evil/c/y.jsonl"}"#;
        assert_eq!(
            parse(body).unwrap_err(),
            "uri is given twice, in two spellings"
        );
    }

    #[test]
    fn camel_and_pascal_case_parse_alike() {
        let camel = br#"{"blobType":"Gateway.ItemChanges","correlationId":"c-1","contentType":"application/x-jsonlines","contentEncoding":"gzip","uri":"https://a/c/x.jsonl.gz","properties":{"storeId":7}}"#;
        let pascal = "\u{feff}{\"BlobType\":\"Gateway.ItemChanges\",\"CorrelationId\":\"c-1\",\"ContentType\":\"application/x-jsonlines\",\"ContentEncoding\":\"GZIP\",\"Uri\":\"https://a/c/x.jsonl.gz\",\"Properties\":{\"storeId\":7}}";
        let a = parse(camel).unwrap();
        assert_eq!(a, parse(pascal.as_bytes()).unwrap());
        assert_eq!(a.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(a.properties["storeId"], 7);
        let plain =
            parse(br#"{"blobType":"t","correlationId":"c","contentEncoding":"","uri":"u"}"#)
                .unwrap();
        assert_eq!((plain.content_encoding, plain.content_type), (None, None));
    }

    #[test]
    fn poison_has_a_reason() {
        for (body, reason) in [
            (&b"not json"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (br#"{"correlationId":"c","uri":"u"}"#, "blobType is missing"),
            (
                br#"{"blobType":"t","correlationId":"","uri":"u"}"#,
                "correlationId is empty",
            ),
            (
                br#"{"blobType":"t","correlationId":"c","uri":7}"#,
                "uri is not a string",
            ),
            (
                br#"{"blobType":"t","correlationId":"c","uri":"u","contentEncoding":"br"}"#,
                "not supported",
            ),
            (
                br#"{"blobType":"t","correlationId":"a\nb","uri":"u"}"#,
                "control character",
            ),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.contains(reason), "{e}");
        }
    }
}
