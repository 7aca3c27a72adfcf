//! Validation of untrusted names (blob names, containers, route names) before they become
//! paths or object keys anywhere.

use thiserror::Error;

/// Longest blob name Azure accepts, and so the longest we pass on.
pub const MAX_NAME_BYTES: usize = 1024;

/// Why a name was refused; the text is shown to the caller.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    #[error("{field} is empty")]
    Empty {
        /// Which name (`file`, `container`, `route name`...).
        field: &'static str,
    },
    /// The name is longer than the limit for its kind.
    #[error("{field} is longer than {max} bytes")]
    TooLong {
        /// Which name.
        field: &'static str,
        /// The limit, in bytes.
        max: usize,
    },
    /// The name is only whitespace.
    #[error("{field} is only whitespace: unsafe name")]
    Blank {
        /// Which name.
        field: &'static str,
    },
    /// The name contains a control character (a newline could forge log lines or headers).
    #[error("{field} contains a control character: unsafe name")]
    ControlCharacter {
        /// Which name.
        field: &'static str,
    },
    /// Bidirectional overrides/isolates and zero-width characters let a name display as
    /// something it is not (`invoice\u{202E}piz.exe` shows as `invoiceexe.zip`).
    #[error(
        "{field} contains U+{code_point:04X}, a bidirectional-control or zero-width character that makes a name display as something it is not: unsafe name"
    )]
    InvisibleCharacter {
        /// Which name.
        field: &'static str,
        /// The offending character.
        code_point: u32,
    },
    /// The name contains a backslash (a folder separator on Windows shares).
    #[error("{field} contains a backslash: unsafe name")]
    Backslash {
        /// Which name.
        field: &'static str,
    },
    /// The name starts with `/`.
    #[error("{field} is an absolute path: unsafe name")]
    Absolute {
        /// Which name.
        field: &'static str,
    },
    /// The name has a `.` or `..` segment (path traversal).
    #[error("{field} contains a '..' or '.' path segment: unsafe name")]
    DotSegment {
        /// Which name.
        field: &'static str,
    },
    /// The name has an empty segment (`a//b`, a trailing `/`).
    #[error("{field} contains an empty path segment: unsafe name")]
    EmptySegment {
        /// Which name.
        field: &'static str,
    },
    /// Not a valid Azure container name.
    #[error("{field} must be 3-63 lowercase letters, digits or single hyphens")]
    BadContainer {
        /// Which name.
        field: &'static str,
    },
}

/// True for the characters that change how a name displays without being seen: zero-width
/// space/joiners and marks (U+200B-U+200F), bidirectional embeddings and overrides
/// (U+202A-U+202E), isolates (U+2066-U+2069) and the byte-order mark / zero-width no-break space
/// (U+FEFF).
pub fn is_invisible_control(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Checks a relative object name such as `exports/2026/HMIS data.zip`.
/// Unicode and spaces are fine; traversal, absolute paths, backslashes, control characters,
/// bidirectional/zero-width characters and whitespace-only names are not.
pub fn validate_object_name(field: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { field });
    }
    if name.len() > max {
        return Err(NameError::TooLong { field, max });
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter { field });
    }
    if let Some(c) = name.chars().find(|c| is_invisible_control(*c)) {
        return Err(NameError::InvisibleCharacter {
            field,
            code_point: c as u32,
        });
    }
    if name.trim().is_empty() {
        return Err(NameError::Blank { field });
    }
    if name.contains('\\') {
        return Err(NameError::Backslash { field });
    }
    if name.starts_with('/') {
        return Err(NameError::Absolute { field });
    }
    for segment in name.split('/') {
        match segment {
            "" => return Err(NameError::EmptySegment { field }),
            "." | ".." => return Err(NameError::DotSegment { field }),
            _ => {}
        }
    }
    Ok(())
}

/// Checks an Azure container name (also what a route matches on).
pub fn validate_container(field: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { field });
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter { field });
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let ok_shape = (3..=63).contains(&name.len())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    // `$root` and `$logs` are Azure's reserved containers; we never read them.
    if !(ok_chars && ok_shape) {
        return Err(NameError::BadContainer { field });
    }
    Ok(())
}

/// Checks a name that becomes one segment of a state key (route, destination, view names).
pub fn validate_key_segment(field: &'static str, name: &str) -> Result<(), NameError> {
    validate_object_name(field, name, 128)?;
    if name.contains('/') {
        return Err(NameError::EmptySegment { field });
    }
    Ok(())
}

/// Compiles a route's file glob: `*` stays within one folder level, `**` crosses them.
pub fn compile_glob(glob: &str) -> Result<globset::GlobMatcher, globset::Error> {
    Ok(globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .build()?
        .compile_matcher())
}

/// Characters a name keeps as they are when it goes into a URL path: the unreserved ones and `/`
/// between folders; everything else is percent-encoded (blob paths, HTTP destination names).
pub const URL_PATH_KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_star_stays_in_folder() {
        let g = compile_glob("*.zip").unwrap();
        assert!(g.is_match("a b.zip"));
        assert!(!g.is_match("dir/a.zip"));
        assert!(compile_glob("**/*.zip").unwrap().is_match("dir/sub/a.zip"));
        assert!(compile_glob("[").is_err());
    }

    #[test]
    fn accepts_unicode_spaces_and_folders() {
        assert!(validate_object_name("file", "2026/HMIS Ünïcode ✓.zip", MAX_NAME_BYTES).is_ok());
    }

    #[test]
    fn refuses_traversal_and_friends() {
        let cases = [
            ("../etc/passwd", NameError::DotSegment { field: "file" }),
            ("a/../../b", NameError::DotSegment { field: "file" }),
            ("/etc/passwd", NameError::Absolute { field: "file" }),
            ("a\\b", NameError::Backslash { field: "file" }),
            ("a\nb", NameError::ControlCharacter { field: "file" }),
            ("a\0b", NameError::ControlCharacter { field: "file" }),
            ("a//b", NameError::EmptySegment { field: "file" }),
            ("", NameError::Empty { field: "file" }),
            ("   ", NameError::Blank { field: "file" }),
            ("\n", NameError::ControlCharacter { field: "file" }),
            (
                "invoice\u{202E}piz.exe",
                NameError::InvisibleCharacter {
                    field: "file",
                    code_point: 0x202E,
                },
            ),
            (
                "a\u{200B}.csv",
                NameError::InvisibleCharacter {
                    field: "file",
                    code_point: 0x200B,
                },
            ),
            (
                "\u{FEFF}a.csv",
                NameError::InvisibleCharacter {
                    field: "file",
                    code_point: 0xFEFF,
                },
            ),
            (
                "a\u{2066}b\u{2069}.csv",
                NameError::InvisibleCharacter {
                    field: "file",
                    code_point: 0x2066,
                },
            ),
        ];
        for (name, want) in cases {
            assert_eq!(
                validate_object_name("file", name, MAX_NAME_BYTES),
                Err(want),
                "{name:?}"
            );
        }
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert!(matches!(
            validate_object_name("file", &long, MAX_NAME_BYTES),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn every_bidi_and_zero_width_code_point_is_refused_and_said_so() {
        for cp in (0x200B..=0x200F)
            .chain(0x202A..=0x202E)
            .chain(0x2066..=0x2069)
            .chain([0xFEFF])
        {
            let name = format!("report{}.csv", char::from_u32(cp).unwrap());
            let e = validate_object_name("file", &name, MAX_NAME_BYTES).unwrap_err();
            assert!(e.to_string().contains(&format!("U+{cp:04X}")), "{e}");
            assert!(e.to_string().ends_with("unsafe name"), "{e}");
        }
        // Neighbours that are ordinary characters stay accepted.
        for ok in ["a\u{2010}b.csv", "a\u{2070}.csv", "caf\u{E9}.csv"] {
            assert!(
                validate_object_name("file", ok, MAX_NAME_BYTES).is_ok(),
                "{ok:?}"
            );
        }
        assert_eq!(
            NameError::Blank { field: "file" }.to_string(),
            "file is only whitespace: unsafe name"
        );
    }

    #[test]
    fn container_rules() {
        assert!(validate_container("container", "exports-2026").is_ok());
        for bad in ["Ex", "ab", "a--b", "-ab", "ab-", "a_b", "a/b", "a..b"] {
            assert!(validate_container("container", bad).is_err(), "{bad}");
        }
    }
}
