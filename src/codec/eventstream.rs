//! Incremental decoder for AWS event-stream framing (`application/vnd.amazon.eventstream`),
//! as used by Bedrock `ConverseStream`.
//!
//! Framing and CRC checks are delegated to `aws-smithy-eventstream`; this module only
//! buffers reads for it, bounds what a corrupt length prefix can make us buffer, and
//! reduces each message to the headers the gateway routes on plus the payload.

use aws_smithy_eventstream::frame::{write_message_to, DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::{Buf, Bytes, BytesMut};
use std::fmt;

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMessage {
    /// `:message-type`: `event`, `exception` or `error`.
    pub message_type: Option<String>,
    /// `:event-type`, e.g. `contentBlockDelta`.
    pub event_type: Option<String>,
    /// `:exception-type` (e.g. `throttlingException`); for `error` messages, which carry
    /// no such header, their `:error-code` so callers have a single place to look.
    pub exception_type: Option<String>,
    /// The payload (JSON for Bedrock). For an `error` message with an empty payload, its
    /// `:error-message` header, so the reason is not lost.
    pub body: Bytes,
}

/// The stream is corrupt (bad CRC, impossible lengths, malformed headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStreamError(pub String);

impl fmt::Display for EventStreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid event stream: {}", self.0)
    }
}

impl std::error::Error for EventStreamError {}

/// The smallest frame: 12-byte prelude plus 4-byte message CRC.
const MIN_FRAME_LEN: u32 = 16;
/// The protocol's maximum message size. The frame decoder trusts the length prefix until
/// the whole frame has arrived (only then is the prelude CRC checked), so without this
/// bound a corrupt prefix would make us buffer up to 4 GiB.
const MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;
const PRELUDE_LEN: usize = 12;

/// Stateful event-stream decoder; feed it the body as it arrives.
#[derive(Debug, Default)]
pub struct EventStreamDecoder {
    frames: MessageFrameDecoder,
    buf: BytesMut,
    /// The frame decoder has consumed the current frame's prelude from `buf`.
    mid_frame: bool,
    /// Set once the stream is known to be corrupt; framing cannot be recovered, so later
    /// reads report the same error.
    failed: Option<EventStreamError>,
}

impl EventStreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decode one read; complete messages are appended to `out`.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<EventMessage>,
    ) -> Result<(), EventStreamError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.buf.extend_from_slice(input);
        self.drain(out).inspect_err(|err| {
            self.failed = Some(err.clone());
            self.buf = BytesMut::new();
        })
    }

    fn drain(&mut self, out: &mut Vec<EventMessage>) -> Result<(), EventStreamError> {
        loop {
            if !self.mid_frame && self.buf.len() >= PRELUDE_LEN {
                let total_len = (&self.buf[..4]).get_u32();
                if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&total_len) {
                    return Err(EventStreamError(format!(
                        "frame length {total_len} outside {MIN_FRAME_LEN}..={MAX_FRAME_LEN}"
                    )));
                }
            }
            let before = self.buf.len();
            match self.frames.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Complete(message)) => {
                    self.mid_frame = false;
                    out.push(to_event_message(message));
                }
                Ok(DecodedFrame::Incomplete) => {
                    self.mid_frame |= self.buf.len() < before;
                    return Ok(());
                }
                Err(err) => return Err(EventStreamError(err.to_string())),
            }
        }
    }
}

fn to_event_message(message: Message) -> EventMessage {
    let header = |name: &str| {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| h.value().as_string().ok())
            .map(|v| v.as_str().to_owned())
    };
    let message_type = header(":message-type");
    let is_error = message_type.as_deref() == Some("error");
    let exception_type = header(":exception-type").or_else(|| {
        if is_error {
            header(":error-code")
        } else {
            None
        }
    });
    let mut body = message.payload().clone();
    if is_error && body.is_empty() {
        if let Some(reason) = header(":error-message") {
            body = Bytes::from(reason);
        }
    }
    EventMessage {
        event_type: header(":event-type"),
        message_type,
        exception_type,
        body,
    }
}

fn string_header(name: &'static str, value: &str) -> Header {
    Header::new(name, HeaderValue::String(value.to_owned().into()))
}

fn encode(kind_header: Header, message_type: &str, body: &[u8]) -> Bytes {
    // Header order follows what Bedrock sends, so encoded mocks match real captures.
    let message = Message::new(Bytes::copy_from_slice(body))
        .add_header(kind_header)
        .add_header(string_header(":content-type", "application/json"))
        .add_header(string_header(":message-type", message_type));
    let mut buf = BytesMut::new();
    write_message_to(&message, &mut buf)
        .expect("event type name or body exceeds the event-stream size limits");
    buf.freeze()
}

/// Encode one event message (used by the bundled mock provider and tests): headers
/// `:event-type=<event_type>`, `:content-type=application/json`, `:message-type=event`.
///
/// # Panics
/// If `event_type` is longer than 32767 bytes or `body` does not fit a frame (4 GiB):
/// both are programming errors, never upstream data.
pub fn encode_event(event_type: &str, body: &[u8]) -> Bytes {
    encode(string_header(":event-type", event_type), "event", body)
}

/// Encode an exception message (`:exception-type=<name>`, `:message-type=exception`).
///
/// # Panics
/// Under the same conditions as [`encode_event`].
pub fn encode_exception(exception_type: &str, body: &[u8]) -> Bytes {
    encode(
        string_header(":exception-type", exception_type),
        "exception",
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_kit::{self, chunk_at};
    use proptest::prelude::*;

    const BEDROCK: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bedrock/chat-stream/upstream-stream.bin"
    ));
    const BEDROCK_DECODED: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bedrock/chat-stream/upstream-stream.decoded.json"
    ));

    fn event(event_type: &str, body: &str) -> EventMessage {
        EventMessage {
            message_type: Some("event".to_owned()),
            event_type: Some(event_type.to_owned()),
            exception_type: None,
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    /// `(event type, body)` pairs listed in the fixture's `upstream-stream.decoded.json`.
    fn bedrock_events() -> Vec<(String, String)> {
        let decoded: serde_json::Value = serde_json::from_str(BEDROCK_DECODED).unwrap();
        decoded
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["headers"][":message-type"], "event");
                assert_eq!(m["headers"][":content-type"], "application/json");
                (
                    m["headers"][":event-type"].as_str().unwrap().to_owned(),
                    m["body"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn bedrock_expected() -> Vec<EventMessage> {
        bedrock_events()
            .iter()
            .map(|(event_type, body)| event(event_type, body))
            .collect()
    }

    fn decode_chunks<'a>(
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<EventMessage>, EventStreamError> {
        test_kit::decode_chunks::<EventStreamDecoder>(chunks)
    }

    fn decode(input: &[u8]) -> Result<Vec<EventMessage>, EventStreamError> {
        decode_chunks([input])
    }

    /// A synthetic stream mixing events, an empty body and an exception.
    fn synthetic() -> (Vec<u8>, Vec<EventMessage>) {
        let mut input = Vec::new();
        input.extend_from_slice(&encode_event("messageStart", b"{\"role\":\"assistant\"}"));
        input.extend_from_slice(&encode_event(
            "contentBlockDelta",
            "{\"t\":\"\u{e9}\u{1f600}\"}".as_bytes(),
        ));
        input.extend_from_slice(&encode_event("ping", b""));
        input.extend_from_slice(&encode_exception(
            "throttlingException",
            b"{\"message\":\"slow down\"}",
        ));
        let expected = vec![
            event("messageStart", "{\"role\":\"assistant\"}"),
            event("contentBlockDelta", "{\"t\":\"\u{e9}\u{1f600}\"}"),
            event("ping", ""),
            EventMessage {
                message_type: Some("exception".to_owned()),
                event_type: None,
                exception_type: Some("throttlingException".to_owned()),
                body: Bytes::from_static(b"{\"message\":\"slow down\"}"),
            },
        ];
        (input, expected)
    }

    fn encode_message(message: &Message) -> Vec<u8> {
        let mut buf = Vec::new();
        write_message_to(message, &mut buf).unwrap();
        buf
    }

    #[test]
    fn bedrock_fixture_decodes_as_documented() {
        let expected = bedrock_expected();
        assert_eq!(expected.len(), 6);
        assert_eq!(decode(BEDROCK).unwrap(), expected);
    }

    #[test]
    fn encode_event_reproduces_the_bedrock_capture() {
        let encoded: Vec<u8> = bedrock_events()
            .iter()
            .flat_map(|(event_type, body)| encode_event(event_type, body.as_bytes()))
            .collect();
        assert_eq!(encoded, BEDROCK);
    }

    #[test]
    fn bedrock_fixture_every_split_point() {
        let expected = bedrock_expected();
        for a in 0..=BEDROCK.len() {
            let out = decode_chunks([&BEDROCK[..a], &BEDROCK[a..]]).unwrap();
            assert_eq!(out, expected, "split at {a}");
        }
        assert_eq!(decode_chunks(BEDROCK.chunks(1)).unwrap(), expected);
    }

    #[test]
    fn synthetic_round_trip() {
        let (input, expected) = synthetic();
        assert_eq!(decode(&input).unwrap(), expected);
    }

    #[test]
    fn synthetic_every_split_point() {
        let (input, expected) = synthetic();
        for a in (0..=input.len()).step_by(3) {
            for b in a..=input.len() {
                let out = decode_chunks([&input[..a], &input[a..b], &input[b..]]).unwrap();
                assert_eq!(out, expected, "split at {a} and {b}");
            }
        }
        assert_eq!(decode_chunks(input.chunks(1)).unwrap(), expected);
    }

    #[test]
    fn messages_are_yielded_as_soon_as_complete() {
        let frame = encode_event("a", b"{}");
        let mut decoder = EventStreamDecoder::new();
        let mut out = Vec::new();
        decoder.feed(&frame[..frame.len() - 1], &mut out).unwrap();
        assert!(out.is_empty());
        let mut rest = frame[frame.len() - 1..].to_vec();
        rest.extend_from_slice(&frame[..5]);
        decoder.feed(&rest, &mut out).unwrap();
        assert_eq!(out, vec![event("a", "{}")]);
        decoder.feed(&frame[5..], &mut out).unwrap();
        assert_eq!(out, vec![event("a", "{}"), event("a", "{}")]);
    }

    #[test]
    fn error_messages_surface_code_and_reason() {
        let message = Message::new(Bytes::new())
            .add_header(string_header(":message-type", "error"))
            .add_header(string_header(":error-code", "InternalFailure"))
            .add_header(string_header(":error-message", "boom"));
        assert_eq!(
            decode(&encode_message(&message)).unwrap(),
            vec![EventMessage {
                message_type: Some("error".to_owned()),
                event_type: None,
                exception_type: Some("InternalFailure".to_owned()),
                body: Bytes::from_static(b"boom"),
            }]
        );
    }

    #[test]
    fn non_string_and_missing_headers_are_none() {
        let message = Message::new(Bytes::from_static(b"x"))
            .add_header(Header::new(":message-type", HeaderValue::Bool(true)))
            .add_header(Header::new(":event-type", HeaderValue::Int32(3)));
        assert_eq!(
            decode(&encode_message(&message)).unwrap(),
            vec![EventMessage {
                message_type: None,
                event_type: None,
                exception_type: None,
                body: Bytes::from_static(b"x"),
            }]
        );
        let bare = Message::new(Bytes::new());
        assert_eq!(
            decode(&encode_message(&bare)).unwrap()[0].message_type,
            None
        );
    }

    #[test]
    fn payload_crc_mismatch_is_an_error() {
        let mut frame = encode_event("a", b"{\"k\":1}").to_vec();
        let last_payload_byte = frame.len() - 5;
        frame[last_payload_byte] ^= 1;
        let err = decode(&frame).unwrap_err();
        assert!(err.0.contains("checksum"), "{err}");
    }

    #[test]
    fn prelude_crc_mismatch_is_an_error() {
        let mut frame = encode_event("a", b"{}").to_vec();
        frame[8] ^= 0xff;
        assert!(decode(&frame).unwrap_err().0.contains("checksum"));
    }

    #[test]
    fn impossible_lengths_are_rejected_before_buffering() {
        let mut decoder = EventStreamDecoder::new();
        let mut out = Vec::new();
        let err = decoder
            .feed(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0], &mut out)
            .unwrap_err();
        assert!(err.0.contains("frame length"), "{err}");
        assert!(decode(&[0, 0, 0, 15, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn errors_are_sticky() {
        let mut frame = encode_event("a", b"{}").to_vec();
        frame[8] ^= 0xff;
        let mut decoder = EventStreamDecoder::new();
        let mut out = Vec::new();
        let err = decoder.feed(&frame, &mut out).unwrap_err();
        assert_eq!(decoder.feed(&encode_event("b", b"{}"), &mut out), Err(err));
        assert!(out.is_empty());
    }

    #[test]
    fn messages_before_a_corrupt_frame_are_kept() {
        let mut input = encode_event("a", b"{}").to_vec();
        let mut bad = encode_event("b", b"{}").to_vec();
        bad[20] ^= 1;
        input.extend_from_slice(&bad);
        let mut decoder = EventStreamDecoder::new();
        let mut out = Vec::new();
        assert!(decoder.feed(&input, &mut out).is_err());
        assert_eq!(out, vec![event("a", "{}")]);
    }

    #[test]
    fn error_display() {
        assert_eq!(
            EventStreamError("x".to_owned()).to_string(),
            "invalid event stream: x"
        );
    }

    /// Feeds every chunk, stopping at the first error, and reports what came out.
    fn feed_all(chunks: &[Vec<u8>]) -> (Vec<EventMessage>, bool) {
        let mut decoder = EventStreamDecoder::new();
        let mut out = Vec::new();
        let ok = chunks.iter().all(|c| decoder.feed(c, &mut out).is_ok());
        (out, ok)
    }

    proptest! {
        #[test]
        fn arbitrary_chunking_of_valid_input(cuts in prop::collection::vec(any::<usize>(), 0..12)) {
            let chunks = chunk_at(BEDROCK, &cuts);
            prop_assert_eq!(feed_all(&chunks), (bedrock_expected(), true));
        }

        #[test]
        fn generated_events_round_trip(
            events in prop::collection::vec(
                ("[a-zA-Z]{1,20}", prop::collection::vec(any::<u8>(), 0..300)),
                0..6,
            ),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let input: Vec<u8> = events
                .iter()
                .flat_map(|(event_type, body)| encode_event(event_type, body))
                .collect();
            let expected: Vec<EventMessage> = events
                .iter()
                .map(|(event_type, body)| EventMessage {
                    body: Bytes::copy_from_slice(body),
                    ..event(event_type, "")
                })
                .collect();
            prop_assert_eq!(feed_all(&chunk_at(&input, &cuts)), (expected, true));
        }

        #[test]
        fn random_bytes_never_panic(
            input in prop::collection::vec(any::<u8>(), 0..300),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let chunked = feed_all(&chunk_at(&input, &cuts));
            prop_assert_eq!(chunked, feed_all(&[input]));
        }

        #[test]
        fn corrupted_frames_never_panic(
            flips in prop::collection::vec((any::<usize>(), 1..=255u8), 1..4),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut input = BEDROCK.to_vec();
            for (at, mask) in flips {
                let at = at % input.len();
                input[at] ^= mask;
            }
            let chunked = feed_all(&chunk_at(&input, &cuts));
            prop_assert_eq!(chunked, feed_all(&[input]));
        }
    }
}
