//! View records and their cursor. Records are untrusted: field names are matched without regard
//! to case, `lastSubmissionId` may arrive as a JSON number or a numeric string and is compared
//! numerically, and anything we cannot read unambiguously is refused with a reason.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest cursor accepted, in decimal digits (u128 needs 39; anything longer is not an id).
const MAX_CURSOR_DIGITS: usize = 64;
/// Longest RecordID accepted, in bytes (it goes into headers and keys).
pub const MAX_RECORD_ID_BYTES: usize = 256;

/// A `lastSubmissionId`: a non-negative integer of any size, kept as canonical decimal digits
/// (no sign, no leading zeros) so `"0042"`, `42` and `"42"` are the same cursor and comparison
/// is numeric without a width limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor(String);

/// Why a cursor value was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CursorError {
    /// Not a non-negative integer.
    #[error("lastSubmissionId {0:?} is not a non-negative integer")]
    NotAnInteger(String),
    /// More digits than a cursor may have.
    #[error("lastSubmissionId is longer than {MAX_CURSOR_DIGITS} digits")]
    TooLong,
}

impl Cursor {
    /// Parses decimal digits (leading zeros allowed, nothing else).
    pub fn parse(text: &str) -> Result<Self, CursorError> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CursorError::NotAnInteger(text.chars().take(40).collect()));
        }
        let trimmed = text.trim_start_matches('0');
        if trimmed.len() > MAX_CURSOR_DIGITS {
            return Err(CursorError::TooLong);
        }
        Ok(Cursor(if trimmed.is_empty() {
            "0".to_string()
        } else {
            trimmed.to_string()
        }))
    }

    /// The canonical digits, as sent back to the view in `previouslastsubmissionid`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits left-padded with zeros to at least 20 (every u64), so keys sort numerically.
    pub fn padded(&self) -> String {
        format!("{:0>20}", self.0)
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Ord for Cursor {
    fn cmp(&self, other: &Self) -> Ordering {
        // Canonical digits: a longer number is larger; equal lengths compare digit by digit.
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        cursor_from_json(&value).map_err(serde::de::Error::custom)
    }
}

fn cursor_from_json(value: &serde_json::Value) -> Result<Cursor, CursorError> {
    match value {
        serde_json::Value::String(s) => Cursor::parse(s.trim()),
        // Without serde_json's arbitrary_precision a number beyond u64 arrives as a float and has
        // already lost digits: refuse it rather than compare a rounded value. (Strings of any
        // length are fine.)
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(v) => Ok(Cursor(v.to_string())),
            None => Err(CursorError::NotAnInteger(n.to_string())),
        },
        other => Err(CursorError::NotAnInteger(
            other.to_string().chars().take(40).collect(),
        )),
    }
}

/// One view record: its identity, its cursor, and the whole object as the view sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `RecordID` (a string such as `"000227544"`; a JSON integer is taken as its decimal text).
    pub record_id: String,
    /// `lastSubmissionId`.
    pub cursor: Cursor,
    /// The record object, field names as sent.
    pub body: serde_json::Map<String, serde_json::Value>,
}

/// Why a record was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    /// The record is not a JSON object.
    #[error("not a JSON object: {0}")]
    NotAnObject(String),
    /// A required field is absent.
    #[error("field {0} is missing")]
    Missing(&'static str),
    /// A field is spelled twice in different cases.
    #[error("field {0} appears more than once with different casing")]
    Ambiguous(&'static str),
    #[error(
        "RecordID is empty, longer than {MAX_RECORD_ID_BYTES} bytes, contains control characters, or is not a string or integer"
    )]
    /// The RecordID is unusable.
    BadRecordId,
    /// The lastSubmissionId is unusable.
    #[error(transparent)]
    Cursor(#[from] CursorError),
}

impl Record {
    /// Parses one element of the view's array.
    pub fn from_json(bytes: &[u8]) -> Result<Self, RecordError> {
        let body: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(bytes).map_err(|e| RecordError::NotAnObject(e.to_string()))?;
        let id = field(&body, "RecordID")?.ok_or(RecordError::Missing("RecordID"))?;
        let record_id = match id {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
            _ => return Err(RecordError::BadRecordId),
        };
        if record_id.is_empty()
            || record_id.len() > MAX_RECORD_ID_BYTES
            || record_id.chars().any(char::is_control)
        {
            return Err(RecordError::BadRecordId);
        }
        let cursor = cursor_from_json(
            field(&body, "lastSubmissionId")?.ok_or(RecordError::Missing("lastSubmissionId"))?,
        )?;
        Ok(Record {
            record_id,
            cursor,
            body,
        })
    }

    /// `RecordID:lastSubmissionId`: names this version of this record (idempotency keys).
    pub fn version_key(&self) -> String {
        format!("{}:{}", self.record_id, self.cursor)
    }
}

/// The value of `name`, by the crate's one case-insensitive rule (`crate::json`).
fn field<'a>(
    body: &'a serde_json::Map<String, serde_json::Value>,
    name: &'static str,
) -> Result<Option<&'a serde_json::Value>, RecordError> {
    crate::json::field_in(body, name).map_err(|_| RecordError::Ambiguous(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cursor {
        Cursor::parse(s).unwrap()
    }

    #[test]
    fn cursors_compare_numerically_at_any_width() {
        assert_eq!(c("0042"), c("42"));
        assert!(c("9") < c("10"));
        assert!(c("99999999999999999999999999") > c("18446744073709551615"));
        assert_eq!(c("000").as_str(), "0");
        assert_eq!(c("42").padded(), "00000000000000000042");
        for bad in ["", "-1", "1.5", "1e3", " 1", "0x10", "١٢"] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Cursor::parse(&"1".repeat(65)), Err(CursorError::TooLong));
    }

    #[test]
    fn record_fields_are_case_insensitive_and_cursor_numeric() {
        let r = Record::from_json(br#"{"recordid":"000227544","LASTSUBMISSIONID":"0017","x":1}"#)
            .unwrap();
        assert_eq!(r.record_id, "000227544");
        assert_eq!(r.cursor, c("17"));
        assert_eq!(r.version_key(), "000227544:17");
        let r = Record::from_json(br#"{"RecordID":12,"lastSubmissionId":18446744073709551615}"#)
            .unwrap();
        assert_eq!(
            (r.record_id.as_str(), r.cursor.as_str()),
            ("12", "18446744073709551615")
        );
        assert!(r.body.contains_key("RecordID"), "field names kept as sent");
    }

    #[test]
    fn unreadable_records_are_refused_with_a_reason() {
        let cases: [(&[u8], &str); 7] = [
            (br#"[1]"#, "not a JSON object"),
            (br#"{"lastSubmissionId":1}"#, "RecordID is missing"),
            (br#"{"RecordID":"a"}"#, "lastSubmissionId is missing"),
            (
                br#"{"RecordID":"a","recordId":"b","lastSubmissionId":1}"#,
                "more than once",
            ),
            (
                br#"{"RecordID":"","lastSubmissionId":1}"#,
                "RecordID is empty",
            ),
            (
                br#"{"RecordID":"a","lastSubmissionId":1.5}"#,
                "not a non-negative integer",
            ),
            (
                br#"{"RecordID":"a","lastSubmissionId":1e30}"#,
                "not a non-negative integer",
            ),
        ];
        for (json, want) in cases {
            let e = Record::from_json(json).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(json));
        }
    }
}
