//! Incremental splitter for a streamed top-level JSON array.
//!
//! Gemini's `streamGenerateContent` without `alt=sse` sends one JSON array whose
//! elements arrive over time (`[{...}\r\n,\r\n{...}]`), cut at arbitrary byte positions.
//! This decoder finds each complete top-level element by bracket matching that respects
//! strings and escapes, and hands out its raw bytes; parsing the element is left to the
//! caller. Only the array's own punctuation is validated, so that a broken stream is
//! reported where it breaks rather than as a confusing parse error later.

use bytes::{Bytes, BytesMut};
use std::fmt;

/// One output of [`JsonArrayDecoder::feed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonArrayItem {
    /// The raw bytes of one complete top-level element, without surrounding whitespace.
    Element(Bytes),
    /// The closing `]` of the top-level array arrived; pushed once.
    End,
}

/// The stream is not a well-formed JSON array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonArrayError(pub String);

impl fmt::Display for JsonArrayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON array stream: {}", self.0)
    }
}

impl std::error::Error for JsonArrayError {}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `[`.
    #[default]
    Start,
    /// After `[`: an element or `]`.
    FirstOrEnd,
    /// After `,`: an element is required.
    Element,
    /// Inside an object or array element; `stack` holds the expected closers.
    Container,
    /// Inside a string, either a top-level element or within a container.
    Str { escaped: bool },
    /// Inside a number or literal (`true`, `false`, `null`) element.
    Scalar,
    /// After an element: `,` or `]`.
    CommaOrEnd,
    /// After the closing `]`: only whitespace may follow.
    Done,
}

/// Stateful top-level JSON array splitter; feed it the body as it arrives.
#[derive(Debug, Default)]
pub struct JsonArrayDecoder {
    state: State,
    /// Closing bytes (`}` or `]`) expected for the containers open in the current element.
    stack: Vec<u8>,
    /// Bytes of the current element that arrived in earlier reads.
    element: BytesMut,
    /// Set once the stream is known to be broken; later reads report the same error.
    failed: Option<JsonArrayError>,
}

impl JsonArrayDecoder {
    /// Bytes held while waiting for an element to close (see `SseDecoder::pending_bytes`).
    pub fn pending_bytes(&self) -> usize {
        self.element.len()
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_scalar_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

fn describe(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", char::from(b))
    } else {
        format!("byte 0x{b:02x}")
    }
}

impl JsonArrayDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decode one read; complete elements, then `End` once the array closes, are
    /// appended to `out`. After an error the stream is unusable and every later call
    /// returns the same error.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<JsonArrayItem>,
    ) -> Result<(), JsonArrayError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.scan(input, out).inspect_err(|err| {
            self.failed = Some(err.clone());
        })
    }

    fn scan(&mut self, input: &[u8], out: &mut Vec<JsonArrayItem>) -> Result<(), JsonArrayError> {
        // Start of the current element within `input`, while one is open in this read.
        let mut start = self.in_element().then_some(0);
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Start => match b {
                    b'[' => self.state = State::FirstOrEnd,
                    _ if is_ws(b) => {}
                    _ => return Err(JsonArrayError(format!("invalid start: {}", describe(b)))),
                },
                State::FirstOrEnd if b == b']' => {
                    self.state = State::Done;
                    out.push(JsonArrayItem::End);
                }
                State::FirstOrEnd | State::Element => {
                    if !is_ws(b) {
                        self.state = match b {
                            b'{' => {
                                self.stack.push(b'}');
                                State::Container
                            }
                            b'[' => {
                                self.stack.push(b']');
                                State::Container
                            }
                            b'"' => State::Str { escaped: false },
                            _ if is_scalar_byte(b) => State::Scalar,
                            _ => {
                                return Err(JsonArrayError(format!(
                                    "expected an element, found {}",
                                    describe(b)
                                )))
                            }
                        };
                        start = Some(i);
                    }
                }
                State::Container => match b {
                    b'"' => self.state = State::Str { escaped: false },
                    b'{' => self.stack.push(b'}'),
                    b'[' => self.stack.push(b']'),
                    b'}' | b']' => {
                        if self.stack.pop() != Some(b) {
                            return Err(JsonArrayError(format!("mismatched {}", describe(b))));
                        }
                        if self.stack.is_empty() {
                            self.emit(input, &mut start, i + 1, out);
                        }
                    }
                    _ => {}
                },
                State::Str { escaped: true } => self.state = State::Str { escaped: false },
                State::Str { escaped: false } => {
                    // String bodies are most of the payload; skip to the next byte that
                    // matters instead of stepping through the state machine per byte.
                    match input[i..].iter().position(|&c| c == b'"' || c == b'\\') {
                        None => i = input.len(),
                        Some(off) => {
                            i += off;
                            if input[i] == b'\\' {
                                self.state = State::Str { escaped: true };
                            } else if self.stack.is_empty() {
                                self.emit(input, &mut start, i + 1, out);
                            } else {
                                self.state = State::Container;
                            }
                        }
                    }
                }
                State::Scalar => {
                    if !is_scalar_byte(b) {
                        self.emit(input, &mut start, i, out);
                        // The delimiter belongs to the array, not the scalar.
                        continue;
                    }
                }
                State::CommaOrEnd => match b {
                    b',' => self.state = State::Element,
                    b']' => {
                        self.state = State::Done;
                        out.push(JsonArrayItem::End);
                    }
                    _ if is_ws(b) => {}
                    _ => {
                        return Err(JsonArrayError(format!(
                            "expected ',' or ']', found {}",
                            describe(b)
                        )))
                    }
                },
                State::Done => {
                    if !is_ws(b) {
                        return Err(JsonArrayError(format!(
                            "trailing data after the array: {}",
                            describe(b)
                        )));
                    }
                }
            }
            i += 1;
        }
        if let Some(s) = start {
            self.element.extend_from_slice(&input[s..]);
        }
        Ok(())
    }

    fn in_element(&self) -> bool {
        matches!(
            self.state,
            State::Container | State::Str { .. } | State::Scalar
        )
    }

    /// Completes the current element, which ends just before `input[end]`.
    fn emit(
        &mut self,
        input: &[u8],
        start: &mut Option<usize>,
        end: usize,
        out: &mut Vec<JsonArrayItem>,
    ) {
        let head = &input[start.take().unwrap_or(0)..end];
        let element = if self.element.is_empty() {
            Bytes::copy_from_slice(head)
        } else {
            self.element.extend_from_slice(head);
            self.element.split().freeze()
        };
        out.push(JsonArrayItem::Element(element));
        self.state = State::CommaOrEnd;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_kit::{self, chunk_at};
    use proptest::prelude::*;

    const GEMINI: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gemini/chat-stream/upstream-stream.json"
    ));

    /// Nested containers, escapes that look like structure, scalars and odd spacing.
    const TRICKY: &[u8] = r#" [ {"a":"\"]}","b":[1,{"c":"\\"}],"d":"[{"} ,
        [ [] , {} ] ,"x\\\"y" , 12.5e-3,true ,null,
        {"u":"\u00e9 \ud83d\ude00","e":"€"}
    ]  "#
        .as_bytes();

    fn elem(s: &str) -> JsonArrayItem {
        JsonArrayItem::Element(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn tricky_expected() -> Vec<JsonArrayItem> {
        vec![
            elem(r#"{"a":"\"]}","b":[1,{"c":"\\"}],"d":"[{"}"#),
            elem("[ [] , {} ]"),
            elem(r#""x\\\"y""#),
            elem("12.5e-3"),
            elem("true"),
            elem("null"),
            elem(r#"{"u":"\u00e9 \ud83d\ude00","e":"€"}"#),
            JsonArrayItem::End,
        ]
    }

    fn decode_chunks<'a>(
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<JsonArrayItem>, JsonArrayError> {
        test_kit::decode_chunks::<JsonArrayDecoder>(chunks)
    }

    fn decode(input: &[u8]) -> Result<Vec<JsonArrayItem>, JsonArrayError> {
        decode_chunks([input])
    }

    fn error_of(input: &[u8]) -> String {
        decode(input).expect_err("input must be rejected").0
    }

    #[test]
    fn gemini_fixture() {
        let out = decode(GEMINI).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[2], JsonArrayItem::End);
        let texts: Vec<serde_json::Value> = out[..2]
            .iter()
            .map(|item| match item {
                JsonArrayItem::Element(bytes) => serde_json::from_slice(bytes).unwrap(),
                JsonArrayItem::End => panic!("End before the elements"),
            })
            .collect();
        assert_eq!(
            texts[0]["candidates"][0]["content"]["parts"][0]["text"],
            "Ten"
        );
        assert_eq!(
            texts[1]["candidates"][0]["content"]["parts"][0]["text"],
            "."
        );
        assert_eq!(texts[1]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(texts[1]["usageMetadata"]["candidatesTokenCount"], 2);
    }

    #[test]
    fn gemini_fixture_every_split_point() {
        let expected = decode(GEMINI).unwrap();
        for a in 0..=GEMINI.len() {
            let out = decode_chunks([&GEMINI[..a], &GEMINI[a..]]).unwrap();
            assert_eq!(out, expected, "split at {a}");
        }
        assert_eq!(decode_chunks(GEMINI.chunks(1)).unwrap(), expected);
    }

    #[test]
    fn tricky_one_shot() {
        assert_eq!(decode(TRICKY).unwrap(), tricky_expected());
    }

    #[test]
    fn tricky_every_split_point() {
        let expected = tricky_expected();
        for a in 0..=TRICKY.len() {
            for b in a..=TRICKY.len() {
                let out = decode_chunks([&TRICKY[..a], &TRICKY[a..b], &TRICKY[b..]]).unwrap();
                assert_eq!(out, expected, "split at {a} and {b}");
            }
        }
    }

    #[test]
    fn tricky_byte_by_byte() {
        assert_eq!(decode_chunks(TRICKY.chunks(1)).unwrap(), tricky_expected());
    }

    #[test]
    fn elements_are_yielded_as_soon_as_complete() {
        let mut decoder = JsonArrayDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"[{\"a\":1}", &mut out).unwrap();
        assert_eq!(out, vec![elem("{\"a\":1}")]);
        decoder.feed(b",\r\n{\"b\":", &mut out).unwrap();
        assert_eq!(out.len(), 1);
        decoder.feed(b"2}", &mut out).unwrap();
        assert_eq!(out.len(), 2);
        decoder.feed(b"]\n", &mut out).unwrap();
        assert_eq!(
            out,
            vec![elem("{\"a\":1}"), elem("{\"b\":2}"), JsonArrayItem::End]
        );
        decoder.feed(b" \r\n\t", &mut out).unwrap();
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn scalar_is_completed_by_its_delimiter() {
        let mut decoder = JsonArrayDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"[12", &mut out).unwrap();
        assert!(out.is_empty());
        decoder.feed(b"3", &mut out).unwrap();
        assert!(out.is_empty());
        decoder.feed(b"]", &mut out).unwrap();
        assert_eq!(out, vec![elem("123"), JsonArrayItem::End]);
    }

    #[test]
    fn empty_array() {
        assert_eq!(decode(b" [ ] ").unwrap(), vec![JsonArrayItem::End]);
        assert_eq!(decode(b"[]").unwrap(), vec![JsonArrayItem::End]);
    }

    #[test]
    fn incomplete_input_is_not_an_error() {
        assert_eq!(decode(b"").unwrap(), vec![]);
        assert_eq!(decode(b"  [ {\"a\":\"\\").unwrap(), vec![]);
    }

    #[test]
    fn invalid_start() {
        assert!(error_of(b"{\"error\":{}}").contains("invalid start"));
        assert!(error_of(b"  x").contains("invalid start"));
        assert!(error_of(b"\xEF\xBB\xBF[]").contains("invalid start"));
    }

    #[test]
    fn trailing_data_is_rejected() {
        assert!(error_of(b"[1] 2").contains("trailing"));
        assert!(error_of(b"[]]").contains("trailing"));
    }

    #[test]
    fn malformed_punctuation_is_rejected() {
        assert!(error_of(b"[1,]").contains("expected an element"));
        assert!(error_of(b"[,1]").contains("expected an element"));
        assert!(error_of(b"[1 2]").contains("expected ','"));
        assert!(error_of(b"[{} {}]").contains("expected ','"));
        assert!(error_of(b"[\"a\"\"b\"]").contains("expected ','"));
        assert!(error_of(b"[{]}").contains("mismatched"));
        assert!(error_of(b"[[}]").contains("mismatched"));
    }

    #[test]
    fn errors_are_sticky() {
        let mut decoder = JsonArrayDecoder::new();
        let mut out = Vec::new();
        let err = decoder.feed(b"nope", &mut out).unwrap_err();
        assert_eq!(decoder.feed(b"[1]", &mut out), Err(err.clone()));
        assert!(out.is_empty());
        assert_eq!(
            err.to_string(),
            "invalid JSON array stream: invalid start: 'n'"
        );
    }

    #[test]
    fn elements_before_an_error_are_kept() {
        let mut decoder = JsonArrayDecoder::new();
        let mut out = Vec::new();
        assert!(decoder.feed(b"[1,{\"a\":2}}", &mut out).is_err());
        assert_eq!(out, vec![elem("1"), elem("{\"a\":2}")]);
    }

    /// Arbitrary JSON values, serialized with random spacing by the caller.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".*".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".*", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_chunking_of_fixtures(cuts in prop::collection::vec(any::<usize>(), 0..12)) {
            let chunks = chunk_at(TRICKY, &cuts);
            prop_assert_eq!(decode_chunks(chunks.iter().map(Vec::as_slice)).unwrap(), tricky_expected());
            let chunks = chunk_at(GEMINI, &cuts);
            prop_assert_eq!(
                decode_chunks(chunks.iter().map(Vec::as_slice)).unwrap(),
                decode(GEMINI).unwrap()
            );
        }

        #[test]
        fn generated_arrays_round_trip(
            values in prop::collection::vec(json_value(), 0..6),
            pretty in any::<bool>(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let separator = if pretty { "\r\n,\r\n" } else { "," };
            let rendered: Vec<String> = values
                .iter()
                .map(|v| if pretty { serde_json::to_string_pretty(v) } else { serde_json::to_string(v) })
                .collect::<Result<_, _>>()
                .unwrap();
            let input = format!("[{}]", rendered.join(separator));
            let chunks = chunk_at(input.as_bytes(), &cuts);
            let out = decode_chunks(chunks.iter().map(Vec::as_slice)).unwrap();
            let mut expected: Vec<JsonArrayItem> = rendered.iter().map(|r| elem(r)).collect();
            expected.push(JsonArrayItem::End);
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn random_bytes_never_panic_and_chunking_is_irrelevant(
            input in prop::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    prop::sample::select(b"[]{},\"\\ 1".to_vec()),
                ],
                0..200,
            ),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let chunks = chunk_at(&input, &cuts);
            let mut decoder = JsonArrayDecoder::new();
            let mut chunked = Vec::new();
            let mut chunked_result = Ok(());
            for chunk in &chunks {
                chunked_result = decoder.feed(chunk, &mut chunked);
                if chunked_result.is_err() {
                    break;
                }
            }
            let mut one_shot = Vec::new();
            let one_shot_result = JsonArrayDecoder::new().feed(&input, &mut one_shot);
            prop_assert_eq!(chunked, one_shot);
            prop_assert_eq!(chunked_result.is_ok(), one_shot_result.is_ok());
        }
    }
}
