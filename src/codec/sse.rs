//! Incremental Server-Sent Events decoder.
//!
//! Follows the WHATWG `text/event-stream` parsing rules so that every provider's SSE
//! dialect (OpenAI, Anthropic, Gemini with `alt=sse`, Mistral, ...) decodes the same way,
//! however the network happens to chunk the body: a read may end mid-line, mid-UTF-8
//! sequence or between the `\r` and `\n` of a CRLF.
//!
//! Two deliberate departures from the browser `EventSource`:
//! - `id` is the id carried by the event's own lines, not the sticky "last event ID":
//!   the gateway re-emits events and never reconnects, so a sticky id would only
//!   stamp stale ids onto later events.
//! - An event that has an `event:` name but no `data:` line is still dispatched (with
//!   empty data), because some providers signal stream phases that way.

use std::ops::Range;

use smallvec::SmallVec;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; `None` when absent or empty (the spec's default "message").
    pub event: Option<String>,
    /// All `data:` lines of the event joined with `"\n"`.
    pub data: String,
    /// The `id:` field of this event, if it had one.
    pub id: Option<String>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What starts each event [`plain_data_events`] accepts; its payload follows.
pub const DATA_PREFIX: &[u8] = b"data: ";

/// Payload positions of the events of one read; inline room for a typical read's events.
pub type Payloads = SmallVec<[Range<usize>; 32]>;

/// A read made only of whole single-line `data: <payload>\n\n` events, the shape every
/// OpenAI-compatible server writes, as text with each payload's position: a caller that would
/// re-frame each payload as `data: <payload>\n\n` can pass such a read on as it came, without
/// decoding it. `None` for anything else (other fields, comments, `\r`, several data lines, an
/// empty payload, an event cut by the read, invalid UTF-8), which goes through [`SseDecoder`],
/// and only between events (see [`SseDecoder::is_between_events`]); a caller that passes such a
/// read on tells the decoder ([`SseDecoder::passed_events`]).
pub fn plain_data_events(input: &[u8]) -> Option<(&str, Payloads)> {
    let text = std::str::from_utf8(input).ok()?;
    let mut payloads = Payloads::new();
    let mut at = 0;
    while at < input.len() {
        let rest = input[at..].strip_prefix(DATA_PREFIX)?;
        let end = memchr::memchr2(b'\n', b'\r', rest)?;
        if end == 0 || rest[end] != b'\n' || rest.get(end + 1) != Some(&b'\n') {
            return None;
        }
        let start = at + DATA_PREFIX.len();
        payloads.push(start..start + end);
        at = start + end + 2;
    }
    Some((text, payloads))
}

/// Stateful SSE decoder; feed it the body as it arrives.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of a line whose terminator has not arrived yet.
    line: Vec<u8>,
    /// The previous read ended in `\r`, so a leading `\n` in the next one belongs to it.
    pending_cr: bool,
    /// Whether a line has been seen yet; only the stream's first line may carry a BOM.
    started: bool,
    /// `data:` values, each followed by `\n` as in the spec's data buffer, so it is
    /// non-empty exactly when a data line was seen. Reused across events so only the
    /// dispatched event's own `String` is allocated.
    data: String,
    event: Option<String>,
    id: Option<String>,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing of an event is held: a read of whole events may then bypass the decoder
    /// (see [`plain_data_events`]) without changing what it decodes. A read that starts with
    /// `data: ` carries no BOM, so this holds at the stream's start too.
    pub fn is_between_events(&self) -> bool {
        !self.pending_cr
            && self.line.is_empty()
            && self.data.is_empty()
            && self.event.is_none()
            && self.id.is_none()
    }

    /// The caller passed a read of whole events on itself: the stream has started, so a BOM at
    /// the start of a later read is data, as it would be had the decoder read them.
    pub fn passed_events(&mut self) {
        self.started = true;
    }

    /// Bytes held while waiting for a line or event to complete, so callers can refuse an
    /// upstream that never ends its events.
    pub fn pending_bytes(&self) -> usize {
        self.line.len() + self.data.len()
    }

    /// Decode one read; complete events are appended to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<SseEvent>) {
        let mut rest = input;
        if self.pending_cr {
            if let Some((&first, tail)) = rest.split_first() {
                if first == b'\n' {
                    rest = tail;
                }
                self.pending_cr = false;
            }
        }

        while let Some(end) = memchr::memchr2(b'\n', b'\r', rest) {
            let terminator = rest[end];
            let head = &rest[..end];
            if self.line.is_empty() {
                self.process_line(head, out);
            } else {
                // Take the buffer out so `process_line` can borrow `self` mutably, then
                // put it back to keep its capacity.
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.process_line(&line, out);
                line.clear();
                self.line = line;
            }

            rest = &rest[end + 1..];
            if terminator == b'\r' {
                match rest.split_first() {
                    Some((b'\n', tail)) => rest = tail,
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
        }
        self.line.extend_from_slice(rest);
    }

    /// End of input: a pending event without its closing blank line is dispatched
    /// (providers sometimes omit it). The decoder is then ready for a new stream.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            let mut line = std::mem::take(&mut self.line);
            self.process_line(&line, out);
            line.clear();
            self.line = line;
        }
        self.dispatch(out);
        self.pending_cr = false;
        self.started = false;
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        let line = if self.started {
            line
        } else {
            self.started = true;
            line.strip_prefix(BOM).unwrap_or(line)
        };

        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(b":") {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                // `from_utf8` checks valid (the usual) input faster than the lossy walk.
                match std::str::from_utf8(value) {
                    Ok(text) => self.data.push_str(text),
                    Err(_) => self.data.push_str(&String::from_utf8_lossy(value)),
                }
                self.data.push('\n');
            }
            b"event" => set_field(&mut self.event, value),
            // The spec ignores ids containing NUL: they could not be echoed back in a
            // `Last-Event-ID` header.
            b"id" if !value.contains(&0) => set_field(&mut self.id, value),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take().filter(|name| !name.is_empty());
        let id = self.id.take();
        if !self.data.is_empty() || event.is_some() {
            // The buffer goes out as the event's data (a fresh one of its size takes its
            // place): one allocation per event either way, and no copy.
            let fresh = String::with_capacity(self.data.capacity());
            let mut data = std::mem::replace(&mut self.data, fresh);
            // The buffer holds a `\n` after every data line; the last one is not data.
            if data.ends_with('\n') {
                data.pop();
            }
            out.push(SseEvent { event, data, id });
        }
        self.data.clear();
    }
}

/// Overwrites an optional field in place so a repeated field reuses its allocation.
fn set_field(slot: &mut Option<String>, value: &[u8]) {
    let value = String::from_utf8_lossy(value);
    match slot {
        Some(existing) => {
            existing.clear();
            existing.push_str(&value);
        }
        None => *slot = Some(value.into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_kit::{self, chunk_at};
    use proptest::prelude::*;

    fn ev(event: Option<&str>, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
            id: id.map(str::to_owned),
        }
    }

    fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<SseEvent> {
        let Ok(out) = test_kit::decode_chunks::<SseDecoder>(chunks);
        out
    }

    fn decode(input: &[u8]) -> Vec<SseEvent> {
        decode_chunks([input])
    }

    /// Exercises every line ending, comments, multi-line data, multi-byte UTF-8 and
    /// an unterminated last event.
    const MIXED: &[u8] = "\u{feff}: keep-alive\r\n\
        event: message_start\r\ndata: {\"a\":1}\r\n\r\n\
        data: line one\rdata: line two\r\r\
        id: 7\ndata: h\u{e9}llo \u{1f600}\n\n\
        event: ping\n\n\
        data: [DONE]"
        .as_bytes();

    fn mixed_expected() -> Vec<SseEvent> {
        vec![
            ev(Some("message_start"), "{\"a\":1}", None),
            ev(None, "line one\nline two", None),
            ev(None, "h\u{e9}llo \u{1f600}", Some("7")),
            ev(Some("ping"), "", None),
            ev(None, "[DONE]", None),
        ]
    }

    const ANTHROPIC: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/anthropic/chat-stream/upstream-stream.txt"
    ));

    #[test]
    fn anthropic_fixture() {
        let out = decode(ANTHROPIC);
        let names: Vec<_> = out.iter().map(|e| e.event.as_deref()).collect();
        assert_eq!(
            names,
            [
                Some("message_start"),
                Some("content_block_start"),
                Some("ping"),
                Some("content_block_delta"),
                Some("content_block_delta"),
                Some("content_block_stop"),
                Some("message_delta"),
                Some("message_stop"),
            ]
        );
        assert_eq!(out[2].data, "{\"type\":\"ping\"}");
        assert!(out.iter().all(|e| e.id.is_none()));
        for at in 0..=ANTHROPIC.len() {
            assert_eq!(decode_chunks([&ANTHROPIC[..at], &ANTHROPIC[at..]]), out);
        }
        assert_eq!(decode_chunks(ANTHROPIC.chunks(1)), out);
    }

    #[test]
    fn single_event() {
        assert_eq!(decode(b"data: hello\n\n"), vec![ev(None, "hello", None)]);
    }

    #[test]
    fn feed_dispatches_only_on_blank_line() {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"event: a\ndata: 1\n", &mut out);
        assert!(out.is_empty());
        decoder.feed(b"\n", &mut out);
        assert_eq!(out, vec![ev(Some("a"), "1", None)]);
    }

    #[test]
    fn mixed_one_shot() {
        assert_eq!(decode(MIXED), mixed_expected());
    }

    #[test]
    fn data_lines_join_with_newline() {
        assert_eq!(
            decode(b"data: a\ndata:\ndata: b\n\n"),
            vec![ev(None, "a\n\nb", None)]
        );
    }

    #[test]
    fn only_one_leading_space_is_removed() {
        assert_eq!(
            decode(b"data:x\n\ndata:  y\n\ndata:\tz\n\n"),
            vec![
                ev(None, "x", None),
                ev(None, " y", None),
                ev(None, "\tz", None)
            ]
        );
    }

    #[test]
    fn value_may_contain_colons() {
        assert_eq!(
            decode(b"data: {\"k\": \"a:b\"}\n\n"),
            vec![ev(None, "{\"k\": \"a:b\"}", None)]
        );
    }

    #[test]
    fn field_without_colon_has_empty_value() {
        assert_eq!(decode(b"data\n\n"), vec![ev(None, "", None)]);
        assert_eq!(decode(b"data\ndata\n\n"), vec![ev(None, "\n", None)]);
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        assert_eq!(
            decode(b": comment\nretry: 100\nfoo: bar\ndata: x\n:another\n\n"),
            vec![ev(None, "x", None)]
        );
    }

    #[test]
    fn events_without_data_or_name_are_not_dispatched() {
        assert!(decode(b": only a comment\n\n").is_empty());
        assert!(decode(b"id: 3\n\n").is_empty());
        assert!(decode(b"event:\n\n").is_empty());
        assert!(decode(b"\n\n\r\n\r").is_empty());
    }

    #[test]
    fn named_event_without_data_is_dispatched_with_empty_data() {
        assert_eq!(
            decode(b"event: done\nid: 9\n\n"),
            vec![ev(Some("done"), "", Some("9"))]
        );
    }

    #[test]
    fn empty_event_name_means_default() {
        assert_eq!(decode(b"event:\ndata: x\n\n"), vec![ev(None, "x", None)]);
    }

    #[test]
    fn later_fields_override_earlier_ones() {
        assert_eq!(
            decode(b"event: a\nevent: b\nid: 1\nid: 2\ndata: x\n\n"),
            vec![ev(Some("b"), "x", Some("2"))]
        );
    }

    #[test]
    fn fields_do_not_leak_into_the_next_event() {
        assert_eq!(
            decode(b"event: a\nid: 1\ndata: x\n\ndata: y\n\n"),
            vec![ev(Some("a"), "x", Some("1")), ev(None, "y", None)]
        );
    }

    #[test]
    fn id_with_nul_is_ignored() {
        assert_eq!(
            decode(b"id: 1\nid: a\0b\ndata: x\n\n"),
            vec![ev(None, "x", Some("1"))]
        );
    }

    #[test]
    fn field_names_are_case_sensitive() {
        assert!(decode(b"Data: x\n\n").is_empty());
    }

    #[test]
    fn bom_is_stripped_only_at_stream_start() {
        assert_eq!(
            decode(b"\xEF\xBB\xBFdata: x\n\n"),
            vec![ev(None, "x", None)]
        );
        // Later in the stream the BOM is part of the field name, which is then unknown.
        assert!(decode(b"\n\xEF\xBB\xBFdata: x\n\n").is_empty());
    }

    #[test]
    fn finish_dispatches_unterminated_event() {
        assert_eq!(decode(b"data: a\n"), vec![ev(None, "a", None)]);
        assert_eq!(decode(b"data: a"), vec![ev(None, "a", None)]);
        assert_eq!(decode(b"data: a\r"), vec![ev(None, "a", None)]);
        assert!(decode(b"").is_empty());
    }

    #[test]
    fn finish_resets_for_a_new_stream() {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        decoder.feed(b"data: a\r", &mut out);
        decoder.finish(&mut out);
        decoder.feed(b"\xEF\xBB\xBF\ndata: b\n\n", &mut out);
        assert_eq!(out, vec![ev(None, "a", None), ev(None, "b", None)]);
    }

    #[test]
    fn cr_split_from_lf_is_one_line_ending() {
        let out = decode_chunks([&b"data: a\r"[..], b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(out, vec![ev(None, "a\nb", None)]);
    }

    #[test]
    fn empty_feed_keeps_pending_cr() {
        let out = decode_chunks([&b"data: a\r"[..], b"", b"\n", b"data: b\n\n"]);
        assert_eq!(out, vec![ev(None, "a\nb", None)]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(
            decode(b"event: \xFFx\ndata: a\xC3\n\n"),
            vec![ev(Some("\u{fffd}x"), "a\u{fffd}", None)]
        );
    }

    #[test]
    fn utf8_split_across_reads() {
        let input = "data: \u{1f600}\n\n".as_bytes();
        for at in 6..10 {
            let out = decode_chunks([&input[..at], &input[at..]]);
            assert_eq!(out, vec![ev(None, "\u{1f600}", None)], "split at {at}");
        }
    }

    #[test]
    fn every_split_point_matches_one_shot() {
        let expected = mixed_expected();
        for at in 0..=MIXED.len() {
            assert_eq!(
                decode_chunks([&MIXED[..at], &MIXED[at..]]),
                expected,
                "split at {at}"
            );
        }
        for a in 0..=MIXED.len() {
            for b in a..=MIXED.len() {
                let out = decode_chunks([&MIXED[..a], &MIXED[a..b], &MIXED[b..]]);
                assert_eq!(out, expected, "split at {a} and {b}");
            }
        }
    }

    #[test]
    fn byte_by_byte_matches_one_shot() {
        assert_eq!(decode_chunks(MIXED.chunks(1)), mixed_expected());
    }

    proptest! {
        #[test]
        fn arbitrary_chunking_of_valid_input(cuts in prop::collection::vec(any::<usize>(), 0..12)) {
            let chunks = chunk_at(MIXED, &cuts);
            prop_assert_eq!(decode_chunks(chunks.iter().map(Vec::as_slice)), mixed_expected());
        }

        #[test]
        fn generated_events_round_trip(
            events in prop::collection::vec(
                (
                    prop::option::of("[a-z_]{1,10}"),
                    prop::collection::vec("[^\r\n]{0,20}", 1..4),
                    prop::option::of("[0-9a-z]{1,6}"),
                ),
                0..6,
            ),
            crlf in any::<bool>(),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut input = String::new();
            let mut expected = Vec::new();
            for (event, lines, id) in &events {
                if let Some(event) = event {
                    input.push_str(&format!("event: {event}{eol}"));
                }
                if let Some(id) = id {
                    input.push_str(&format!("id: {id}{eol}"));
                }
                for line in lines {
                    input.push_str(&format!("data: {line}{eol}"));
                }
                input.push_str(eol);
                expected.push(SseEvent {
                    event: event.clone(),
                    data: lines.join("\n"),
                    id: id.clone(),
                });
            }
            let chunks = chunk_at(input.as_bytes(), &cuts);
            prop_assert_eq!(decode_chunks(chunks.iter().map(Vec::as_slice)), expected);
        }

        #[test]
        fn random_bytes_never_panic_and_chunking_is_irrelevant(
            input in prop::collection::vec(
                prop_oneof![any::<u8>(), Just(b'\n'), Just(b'\r'), Just(b':')],
                0..200,
            ),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let chunks = chunk_at(&input, &cuts);
            prop_assert_eq!(decode_chunks(chunks.iter().map(Vec::as_slice)), decode(&input));
        }
    }
}
