//! Splits a JSON array of objects, arriving in arbitrary byte pieces, into its elements without
//! holding more than one element in memory.
//!
//! serde_json's `StreamDeserializer` reads a sequence of top-level values, not the elements of
//! one outer array, and the streaming JSON crates bring a full pull-parser API for what is here
//! a small state machine: the splitter only finds element boundaries (tracking strings, escapes
//! and nesting depth); each element is then parsed and fully validated by serde_json.

use thiserror::Error;

/// Why the response is not a JSON array of objects.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SplitError {
    /// Not JSON of the expected shape at `offset` (bytes from the start of the response).
    #[error("malformed JSON array at byte {offset}: {reason}")]
    Malformed {
        /// Bytes from the start of the response.
        offset: u64,
        /// What happened (secret-free).
        reason: String,
    },
    /// One element is larger than the configured limit.
    #[error("record {index} is larger than {max} bytes")]
    TooLarge {
        /// Position of the record in the response, from 0.
        index: u64,
        /// The limit, in bytes.
        max: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before `[` (whitespace and a UTF-8 BOM allowed).
    Start,
    /// After `[`: an element or `]`.
    Open,
    /// Inside an element.
    Element,
    /// After an element: `,` or `]`.
    AfterElement,
    /// After `,`: an element.
    AfterComma,
    /// After `]`: whitespace only.
    Done,
}

/// Incremental splitter; feed it bytes, it hands out complete elements.
#[derive(Debug)]
pub struct ArraySplitter {
    state: State,
    depth: u32,
    in_string: bool,
    escape: bool,
    element: Vec<u8>,
    max_element: usize,
    offset: u64,
    elements: u64,
}

impl ArraySplitter {
    /// A splitter that refuses elements over `max_element` bytes.
    pub fn new(max_element: usize) -> Self {
        Self {
            state: State::Start,
            depth: 0,
            in_string: false,
            escape: false,
            element: Vec::new(),
            max_element,
            offset: 0,
            elements: 0,
        }
    }

    /// Elements completed so far.
    pub fn elements(&self) -> u64 {
        self.elements
    }

    /// Consumes `input`, calling `emit` with every element it completes (the bytes of one JSON
    /// object). Stops at the first error, from the input or from `emit`.
    pub fn feed<E: From<SplitError>>(
        &mut self,
        input: &[u8],
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            let at = self.offset + i as u64;
            match self.state {
                State::Element => {
                    // Scan ahead within this element as far as this input goes.
                    let start = i;
                    let mut end = None;
                    while i < input.len() {
                        let b = input[i];
                        if self.in_string {
                            if self.escape {
                                self.escape = false;
                            } else if b == b'\\' {
                                self.escape = true;
                            } else if b == b'"' {
                                self.in_string = false;
                            }
                        } else {
                            match b {
                                b'"' => self.in_string = true,
                                b'{' | b'[' => self.depth += 1,
                                b'}' | b']' => {
                                    self.depth -= 1;
                                    if self.depth == 0 {
                                        end = Some(i);
                                        break;
                                    }
                                }
                                _ => {}
                            }
                        }
                        i += 1;
                    }
                    let stop = end.map_or(input.len(), |e| e + 1);
                    if self.element.len() + (stop - start) > self.max_element {
                        return Err(SplitError::TooLarge {
                            index: self.elements + 1,
                            max: self.max_element,
                        }
                        .into());
                    }
                    self.element.extend_from_slice(&input[start..stop]);
                    if end.is_some() {
                        self.elements += 1;
                        self.state = State::AfterElement;
                        let r = emit(&self.element);
                        self.element.clear();
                        r?;
                        i = stop;
                    }
                    continue;
                }
                _ if b.is_ascii_whitespace() => {}
                State::Start if b == b'[' => self.state = State::Open,
                // A UTF-8 byte order mark (EF BB BF) before the array.
                State::Start if at < 3 && [0xEF, 0xBB, 0xBF][at as usize] == b => {}
                State::Open if b == b']' => self.state = State::Done,
                State::Open | State::AfterComma if b == b'{' => {
                    self.state = State::Element;
                    continue; // the element scanner takes this byte
                }
                State::AfterElement if b == b',' => self.state = State::AfterComma,
                State::AfterElement if b == b']' => self.state = State::Done,
                state => {
                    let expected = match state {
                        State::Start => "'[' (the view must answer a JSON array)",
                        State::Open => "a record object or ']'",
                        State::AfterElement => "',' or ']'",
                        State::AfterComma => "a record object",
                        State::Done => "nothing after the closing ']'",
                        State::Element => unreachable!("handled above"),
                    };
                    return Err(SplitError::Malformed {
                        offset: at,
                        reason: format!("expected {expected}, found {}", show(b)),
                    }
                    .into());
                }
            }
            i += 1;
        }
        self.offset += input.len() as u64;
        Ok(())
    }

    /// Checks that the input ended right after a complete array.
    pub fn finish(&self) -> Result<(), SplitError> {
        if self.state == State::Done {
            return Ok(());
        }
        Err(SplitError::Malformed {
            offset: self.offset,
            reason: match self.state {
                State::Start => "empty response (expected a JSON array)".into(),
                State::Element => format!("response ended inside record {}", self.elements + 1),
                _ => "response ended before the closing ']'".into(),
            },
        })
    }
}

fn show(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pieces: &[&[u8]], max: usize) -> Result<Vec<String>, SplitError> {
        let mut s = ArraySplitter::new(max);
        let mut out = Vec::new();
        for p in pieces {
            s.feed(p, |e: &[u8]| {
                out.push(String::from_utf8(e.to_vec()).unwrap());
                Ok::<_, SplitError>(())
            })?;
        }
        s.finish()?;
        Ok(out)
    }

    const DOC: &str =
        "\u{feff} [ {\"a\":\"x]}\\\"{\"} ,\n{\"b\":[1,{\"c\":[]}],\"d\":\"\\\\\"},{}\t] \n";

    #[test]
    fn splits_at_every_possible_byte_boundary() {
        let want = vec![
            "{\"a\":\"x]}\\\"{\"}".to_string(),
            "{\"b\":[1,{\"c\":[]}],\"d\":\"\\\\\"}".into(),
            "{}".into(),
        ];
        let bytes = DOC.as_bytes();
        assert_eq!(split(&[bytes], 1 << 20).unwrap(), want);
        for cut in 0..bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(split(&[a, b], 1 << 20).unwrap(), want, "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(split(&singles, 1 << 20).unwrap(), want);
    }

    #[test]
    fn empty_array_and_malformed_inputs() {
        assert_eq!(split(&[b" [ ] "], 10).unwrap(), Vec::<String>::new());
        let cases: [(&[u8], &str); 8] = [
            (b"", "empty response"),
            (b"{\"a\":1}", "expected '['"),
            (b"[1,2]", "expected a record object or ']'"),
            (b"[{},]", "expected a record object"),
            (b"[{} {}]", "expected ',' or ']'"),
            (b"[{}] x", "nothing after"),
            (b"[{\"a\":\"1", "ended inside record 1"),
            (b"[{},{}", "before the closing"),
        ];
        for (input, want) in cases {
            let e = split(&[input], 100).unwrap_err().to_string();
            assert!(
                e.contains(want),
                "{:?}: {e}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn oversized_element_is_refused() {
        let e = split(&[b"[{\"a\":1},{\"b\":\"", b"0123456789\"}]"], 12).unwrap_err();
        assert_eq!(e, SplitError::TooLarge { index: 2, max: 12 });
    }
}
