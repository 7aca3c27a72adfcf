//! A route's record loading (`records`): which sink the lines of its files go to, how the lines
//! are read, and the caps that keep a bad or hostile file from filling memory. Checked at load
//! (`validate`); `Config::validate` checks that the sink exists. The loading itself is
//! `crate::records`.

use serde::{Deserialize, Serialize};

/// Load every line of the route's files into a record sink, besides (or instead of) delivering
/// the files. Each line becomes one record keyed by the file's `correlationId` (pub/sub exports;
/// the job id for webhook files) and its line number, so a rerun applies nothing twice. A gzip'd
/// file (`contentEncoding: gzip`, or a webhook file named `*.gz`) is decompressed first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordsConfig {
    /// Name of the sink (in `sinks`) the records go to.
    pub sink: String,
    /// How each line is read: `jsonl` (every line one JSON object) or `xml_lines` (every line
    /// one XML element, loaded as `{"xml": "<the line>"}`).
    pub format: RecordFormat,
    /// Lines per chunk handed to the sink at once (one PostgreSQL statement, one S3 object).
    /// One chunk is held in memory at a time.
    #[serde(default = "default_chunk_lines")]
    pub chunk_lines: usize,
    /// Longest line accepted, in bytes (after decompression); a longer line is a bad line.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Most bytes of one file accepted (after decompression); a larger file is refused.
    #[serde(default = "default_max_total_bytes")]
    pub max_total_bytes: u64,
}

/// How the lines of a file are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    /// JSON Lines (`application/x-jsonlines`): each non-empty line is one JSON object.
    Jsonl,
    /// XML lines (`application/x-xmllines`): each non-empty line is one XML element.
    XmlLines,
}

impl RecordFormat {
    /// The name used in receipts and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordFormat::Jsonl => "jsonl",
            RecordFormat::XmlLines => "xml_lines",
        }
    }
}

impl RecordsConfig {
    /// Sane chunk size and caps (the sink's existence is checked by `Config::validate`).
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=100_000).contains(&self.chunk_lines) {
            return Err("records.chunk_lines must be 1..=100000".into());
        }
        if !(64..=(64 << 20)).contains(&self.max_line_bytes) {
            return Err("records.max_line_bytes must be 64..=67108864 (64 MiB)".into());
        }
        if self.max_total_bytes < self.max_line_bytes as u64 || self.max_total_bytes > 64 << 30 {
            return Err(
                "records.max_total_bytes must be at least max_line_bytes and at most 64 GiB".into(),
            );
        }
        Ok(())
    }
}

fn default_chunk_lines() -> usize {
    1000
}
fn default_max_line_bytes() -> usize {
    1 << 20
}
fn default_max_total_bytes() -> u64 {
    1 << 30
}
