//! File-name templates: how a route renames what it delivers (`AGENCY_HMIS_{date}.zip`,
//! `{date:%Y/%m}/{name}`, `{stem}.{ext}.pgp`).
//!
//! A template is parsed and checked when the config loads: unknown placeholders, a bad date
//! format, or a template that could render an unsafe or empty name (traversal, control
//! characters, an empty path segment when an optional part is empty) are refused then, not at
//! delivery. A job keeps the template and its creation time, so every retry and replay renders
//! the same name, whatever day it runs.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};

use crate::names;

/// The values a template can use for one delivery.
#[derive(Debug, Clone, Copy)]
pub struct NameParts<'a> {
    /// The name as it would be delivered without a template (decompressed files already lost
    /// their `.gz`), relative, possibly with folders.
    pub path: &'a str,
    /// Container (or bucket) the file came from.
    pub container: &'a str,
    /// The pub/sub export's blob type; empty for webhook files.
    pub blob_type: &'a str,
    /// Route name.
    pub route: &'a str,
    /// Job id.
    pub job_id: &'a str,
    /// When the job was created (the file announced): the date placeholders' time.
    pub created: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Path,
    Name,
    Stem,
    Ext,
    Container,
    BlobType,
    Route,
    JobId,
    /// A strftime format, checked at parse time.
    Date(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate {
    source: String,
    pieces: Vec<Piece>,
}

/// Why a template was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// `{` without `}`, or a lone `}`.
    #[error("name_template {0:?}: unbalanced brace (write {{{{ or }}}} for a literal one)")]
    Braces(String),
    /// A placeholder ferry does not know.
    #[error(
        "name_template {template:?}: unknown placeholder {{{name}}}; use name, path, stem, ext, container, blob_type, route, job_id, date, time or date:FORMAT"
    )]
    Unknown {
        /// The template.
        template: String,
        /// The placeholder.
        name: String,
    },
    /// A date format chrono cannot render.
    #[error("name_template {template:?}: bad date format {format:?}")]
    DateFormat {
        /// The template.
        template: String,
        /// The format.
        format: String,
    },
    /// The template can render a name the safety rules refuse.
    #[error("name_template {template:?} can render an unsafe name ({example:?}: {reason})")]
    Unsafe {
        /// The template.
        template: String,
        /// A name it renders.
        example: String,
        /// Why that name is refused.
        reason: String,
    },
}

impl NameTemplate {
    /// Parses and checks a template.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '}' => return Err(TemplateError::Braces(template.into())),
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => inner.push(c),
                            None => return Err(TemplateError::Braces(template.into())),
                        }
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Self::placeholder(template, &inner)?);
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        let parsed = Self {
            source: template.to_string(),
            pieces,
        };
        parsed.check()?;
        Ok(parsed)
    }

    fn placeholder(template: &str, inner: &str) -> Result<Piece, TemplateError> {
        let format = |f: &str| -> Result<Piece, TemplateError> {
            if f.is_empty() || StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
                return Err(TemplateError::DateFormat {
                    template: template.into(),
                    format: f.into(),
                });
            }
            Ok(Piece::Date(f.to_string()))
        };
        Ok(match inner {
            "path" => Piece::Path,
            "name" => Piece::Name,
            "stem" => Piece::Stem,
            "ext" => Piece::Ext,
            "container" => Piece::Container,
            "blob_type" => Piece::BlobType,
            "route" => Piece::Route,
            "job_id" => Piece::JobId,
            "date" => format("%Y-%m-%d")?,
            "time" => format("%H%M%S")?,
            other => match other.strip_prefix("date:") {
                Some(f) => format(f)?,
                None => {
                    return Err(TemplateError::Unknown {
                        template: template.into(),
                        name: other.into(),
                    });
                }
            },
        })
    }

    /// Renders worst cases (the optional parts empty, or holding dots) and refuses the template
    /// when any rendering breaks the name rules.
    fn check(&self) -> Result<(), TemplateError> {
        let created = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .expect("fixed time")
            .with_timezone(&Utc);
        let samples = [
            ("dir/report.csv", "exports", "Gateway.ItemChanges"),
            ("report", "exports", ""),
            (".hidden", "c", ""),
            ("a.b.c", "c", "x"),
        ];
        for (path, container, blob_type) in samples {
            let parts = NameParts {
                path,
                container,
                blob_type,
                route: "route",
                job_id: "0123456789abcdef",
                created,
            };
            let example = self.render_unchecked(&parts);
            if let Err(e) = names::validate_object_name("name", &example, names::MAX_NAME_BYTES) {
                return Err(TemplateError::Unsafe {
                    template: self.source.clone(),
                    example,
                    reason: e.to_string(),
                });
            }
        }
        Ok(())
    }

    fn render_unchecked(&self, p: &NameParts<'_>) -> String {
        let name = p.path.rsplit('/').next().unwrap_or(p.path);
        // `.hidden` has no extension: its stem is the whole name.
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
            _ => (name, ""),
        };
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Path => out.push_str(p.path),
                Piece::Name => out.push_str(name),
                Piece::Stem => out.push_str(stem),
                Piece::Ext => out.push_str(ext),
                Piece::Container => out.push_str(p.container),
                Piece::BlobType => out.push_str(p.blob_type),
                Piece::Route => out.push_str(p.route),
                Piece::JobId => out.push_str(p.job_id),
                Piece::Date(f) => out.push_str(&p.created.format(f).to_string()),
            }
        }
        out
    }

    /// Renders a delivery's name, checked like any name.
    pub fn render(&self, parts: &NameParts<'_>) -> Result<String, names::NameError> {
        let out = self.render_unchecked(parts);
        names::validate_object_name("rendered name", &out, names::MAX_NAME_BYTES)?;
        Ok(out)
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &str) -> NameParts<'_> {
        NameParts {
            path,
            container: "exports",
            blob_type: "",
            route: "hmis",
            job_id: "abc123",
            created: DateTime::parse_from_rfc3339("2026-11-29T23:59:58Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn renders_each_placeholder() {
        let t = |s: &str| {
            NameTemplate::parse(s)
                .unwrap()
                .render(&parts("in/HMIS data.zip"))
                .unwrap()
        };
        assert_eq!(t("AGENCY_HMIS_{date}.zip"), "AGENCY_HMIS_2026-11-29.zip");
        assert_eq!(t("{date:%Y/%m}/{name}"), "2026/11/HMIS data.zip");
        assert_eq!(t("{stem}.{ext}.pgp"), "HMIS data.zip.pgp");
        assert_eq!(t("{path}"), "in/HMIS data.zip");
        assert_eq!(
            t("{container}-{route}-{job_id}-{time}"),
            "exports-hmis-abc123-235958"
        );
        assert_eq!(t("{{literal}}_{name}"), "{literal}_HMIS data.zip");
    }

    #[test]
    fn refuses_what_could_render_unsafe_or_is_malformed() {
        for (bad, want) in [
            ("../{name}", "unsafe name"),
            ("/abs/{name}", "unsafe name"),
            ("x/{blob_type}/{name}", "unsafe name"),
            ("{ext}", "unsafe name"),
            ("{name}{date:%n}", "unsafe name"),
            ("{nope}", "unknown placeholder {nope}"),
            ("{name", "unbalanced brace"),
            ("name}", "unbalanced brace"),
            ("{date:%Q}", "bad date format"),
        ] {
            match NameTemplate::parse(bad) {
                Err(e) => assert!(e.to_string().contains(want), "{bad}: {e}"),
                Ok(t) => panic!("{bad} accepted: {t:?}"),
            }
        }
        // A stem is never empty (`.hidden` is all stem): fine on its own.
        assert!(NameTemplate::parse("{stem}").is_ok());
    }

    #[test]
    fn the_date_is_the_jobs_not_todays() {
        let t = NameTemplate::parse("{date}_{name}").unwrap();
        let mut p = parts("a.csv");
        let first = t.render(&p).unwrap();
        // The same job rendered again on another day: same name.
        assert_eq!(t.render(&p).unwrap(), first);
        p.created = DateTime::parse_from_rfc3339("2026-11-30T00:00:01Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(t.render(&p).unwrap(), "2026-11-30_a.csv");
    }
}
