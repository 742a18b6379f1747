//! Incremental newline-delimited JSON splitter (Ollama, Cohere, HF TGI streams).
//!
//! Only framing happens here: each complete, non-blank line is handed out as raw bytes
//! for the provider adapter to parse, so a malformed line fails exactly one item
//! instead of the whole stream.

use bytes::{Bytes, BytesMut};

/// Stateful NDJSON line splitter; feed it the body as it arrives.
#[derive(Debug, Default)]
pub struct NdjsonDecoder {
    /// Bytes received but not yet handed out; starts at the current line's first byte.
    buf: BytesMut,
    /// Prefix of `buf` already known to hold no `\n`, so a long line arriving in many
    /// small reads is scanned once rather than once per read.
    scanned: usize,
}

impl NdjsonDecoder {
    /// Bytes held while waiting for a line to end (see `SseDecoder::pending_bytes`).
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn new() -> Self {
        Self::default()
    }

    /// Decode one read; each complete non-blank line (trimmed of surrounding whitespace,
    /// including the `\r` of CRLF) is appended to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Bytes>) {
        self.buf.extend_from_slice(input);
        while let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            // The items share the buffer's allocation instead of being copied out.
            let line = self.buf.split_to(self.scanned + pos + 1).freeze();
            self.scanned = 0;
            push_trimmed(line, out);
        }
        self.scanned = self.buf.len();
    }

    /// End of input: a trailing line without its newline is yielded. The decoder is then
    /// ready for a new stream.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        self.scanned = 0;
        push_trimmed(self.buf.split().freeze(), out);
    }
}

fn push_trimmed(line: Bytes, out: &mut Vec<Bytes>) {
    let trimmed = line.trim_ascii();
    if !trimmed.is_empty() {
        out.push(line.slice_ref(trimmed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_kit::{self, chunk_at};
    use proptest::prelude::*;

    fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Bytes> {
        let Ok(out) = test_kit::decode_chunks::<NdjsonDecoder>(chunks);
        out
    }

    fn decode(input: &[u8]) -> Vec<Bytes> {
        decode_chunks([input])
    }

    fn items(lines: &[&str]) -> Vec<Bytes> {
        lines
            .iter()
            .map(|l| Bytes::copy_from_slice(l.as_bytes()))
            .collect()
    }

    /// Ollama-style stream with CRLF, blank lines, padding and no final newline.
    const STREAM: &[u8] = b"{\"message\":{\"content\":\"Ten\"},\"done\":false}\r\n\
        \r\n\
          {\"message\":{\"content\":\"\\n\"},\"done\":false}  \n\
        \n\n\
        {\"done\":true,\"eval_count\":3}";

    fn stream_expected() -> Vec<Bytes> {
        items(&[
            "{\"message\":{\"content\":\"Ten\"},\"done\":false}",
            "{\"message\":{\"content\":\"\\n\"},\"done\":false}",
            "{\"done\":true,\"eval_count\":3}",
        ])
    }

    const COHERE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cohere/chat-stream/upstream-stream.ndjson"
    ));

    #[test]
    fn cohere_fixture() {
        let out = decode(COHERE);
        assert_eq!(out.len(), 4);
        assert!(out[0].starts_with(b"{\"is_finished\":false,\"event_type\":\"stream-start\""));
        assert!(out[3].ends_with(b"}}}"));
        for at in 0..=COHERE.len() {
            assert_eq!(decode_chunks([&COHERE[..at], &COHERE[at..]]), out);
        }
        assert_eq!(decode_chunks(COHERE.chunks(1)), out);
    }

    #[test]
    fn splits_lines() {
        assert_eq!(
            decode(b"{\"a\":1}\n{\"b\":2}\n"),
            items(&["{\"a\":1}", "{\"b\":2}"])
        );
    }

    #[test]
    fn feed_yields_only_complete_lines() {
        let mut decoder = NdjsonDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"{\"a\":1}\n{\"b\"", &mut out);
        assert_eq!(out, items(&["{\"a\":1}"]));
        decoder.feed(b":2}", &mut out);
        assert_eq!(out.len(), 1);
        decoder.feed(b"\r\n", &mut out);
        assert_eq!(out, items(&["{\"a\":1}", "{\"b\":2}"]));
    }

    #[test]
    fn trims_and_skips_blank_lines() {
        assert_eq!(decode(STREAM), stream_expected());
        assert!(decode(b"\n \r\n\t\n\r").is_empty());
    }

    #[test]
    fn finish_yields_trailing_line_and_resets() {
        let mut decoder = NdjsonDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"{\"x\":1}", &mut out);
        assert!(out.is_empty());
        decoder.finish(&mut out);
        assert_eq!(out, items(&["{\"x\":1}"]));
        decoder.finish(&mut out);
        decoder.feed(b"{\"y\":2}\n", &mut out);
        assert_eq!(out, items(&["{\"x\":1}", "{\"y\":2}"]));
    }

    #[test]
    fn invalid_utf8_is_passed_through() {
        assert_eq!(decode(b"\xFF\xFE\n"), vec![Bytes::from_static(b"\xFF\xFE")]);
    }

    #[test]
    fn every_split_point_matches_one_shot() {
        let expected = stream_expected();
        for a in 0..=STREAM.len() {
            for b in a..=STREAM.len() {
                let out = decode_chunks([&STREAM[..a], &STREAM[a..b], &STREAM[b..]]);
                assert_eq!(out, expected, "split at {a} and {b}");
            }
        }
    }

    #[test]
    fn byte_by_byte_matches_one_shot() {
        assert_eq!(decode_chunks(STREAM.chunks(1)), stream_expected());
    }

    proptest! {
        #[test]
        fn arbitrary_chunking_of_valid_input(cuts in prop::collection::vec(any::<usize>(), 0..12)) {
            let chunks = chunk_at(STREAM, &cuts);
            prop_assert_eq!(decode_chunks(chunks.iter().map(Vec::as_slice)), stream_expected());
        }

        #[test]
        fn random_bytes_never_panic_and_chunking_is_irrelevant(
            input in prop::collection::vec(
                prop_oneof![any::<u8>(), Just(b'\n'), Just(b'\r'), Just(b' ')],
                0..200,
            ),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let chunks = chunk_at(&input, &cuts);
            let out = decode_chunks(chunks.iter().map(Vec::as_slice));
            for item in &out {
                prop_assert!(!item.is_empty() && !item.contains(&b'\n'));
            }
            prop_assert_eq!(out, decode(&input));
        }
    }
}
