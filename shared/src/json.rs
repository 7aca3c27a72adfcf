//! Reading JSON from the SaaS systems ferry talks to, which do not agree on the case of field
//! names (`lastSubmissionId` / `LastSubmissionID`, `blobType` / `BlobType`). One rule for every
//! such read: names match ASCII case-insensitively, and an object that spells the same name
//! twice is ambiguous, never silently resolved to whichever came first.

use serde_json::{Map, Value};
use thiserror::Error;

/// An object holds the same field name in two spellings (`uri` and `URI`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0} is given twice, in two spellings")]
pub struct Ambiguous(pub String);

/// The value of `name` in `object`, matched case-insensitively; `None` when absent (or when
/// `object` is not an object).
pub fn field_ci<'a>(object: &'a Value, name: &str) -> Result<Option<&'a Value>, Ambiguous> {
    match object.as_object() {
        Some(map) => field_in(map, name),
        None => Ok(None),
    }
}

/// [`field_ci`] on a map.
pub fn field_in<'a>(
    map: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Value>, Ambiguous> {
    let mut found = None;
    for (k, v) in map {
        if k.eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(Ambiguous(name.to_string()));
            }
            found = Some(v);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_match_in_any_case_and_two_spellings_are_ambiguous() {
        let v = json!({"BlobType": "orders", "uri": "a", "URI": "b"});
        assert_eq!(field_ci(&v, "blobType"), Ok(Some(&json!("orders"))));
        assert_eq!(field_ci(&v, "missing"), Ok(None));
        assert_eq!(field_ci(&v, "uri"), Err(Ambiguous("uri".into())));
        assert_eq!(field_ci(&json!([1]), "uri"), Ok(None));
    }
}
