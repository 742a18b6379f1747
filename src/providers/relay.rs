//! The answer of an OpenAI-API route type (responses, files, assistants, audio, images) on
//! the providers that speak that API: bytes pass through untouched (typed Responses events
//! with their `event:` lines, assistants run events, audio, file downloads), while an SSE
//! answer is watched for its usage and for its end, so a cut stream still ends with an error
//! event the SDKs raise.

use actix_web::http::header::HeaderValue;
use bytes::{BufMut, BytesMut};
use serde_json::Value;

use super::oai::Usage;
use super::stream::{check_pending, TRUNCATED};
use super::{StreamError, StreamTranslate};
use crate::codec::sse::{SseDecoder, SseEvent};

/// Usage in either OpenAI naming: `input_tokens`/`output_tokens` (Responses, images,
/// transcriptions, realtime) or `prompt_tokens`/`completion_tokens`.
pub fn usage_of(value: &Value) -> Option<Usage> {
    let usage = value.get("usage").filter(|u| u.is_object())?;
    let count = |a: &str, b: &str| {
        usage
            .get(a)
            .or_else(|| usage.get(b))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Some(Usage::new(
        count("input_tokens", "prompt_tokens"),
        count("output_tokens", "completion_tokens"),
    ))
}

/// Event types that end a Responses (`response.*`) or assistants-run (`done`) stream.
fn is_terminal(event: &SseEvent) -> bool {
    matches!(
        event.event.as_deref(),
        Some("response.completed" | "response.failed" | "response.incomplete" | "error" | "done")
    ) || event.data == "[DONE]"
}

#[derive(Default)]
pub struct RelayStream {
    /// Set when the answer is SSE: events are decoded alongside the byte copy.
    sse: Option<SseDecoder>,
    events: Vec<SseEvent>,
    ended: bool,
    usage: Usage,
    sequence: u64,
}

impl RelayStream {
    fn observe(&mut self) {
        for event in self.events.drain(..) {
            self.ended |= is_terminal(&event);
            let completed = event.event.as_deref() == Some("response.completed");
            if !completed && !event.data.contains("\"sequence_number\"") {
                continue;
            }
            let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            if let Some(n) = value["sequence_number"].as_u64() {
                self.sequence = n;
            }
            if let Some(usage) = value
                .get("response")
                .filter(|_| completed)
                .and_then(usage_of)
            {
                self.usage = usage;
            }
        }
    }
}

impl StreamTranslate for RelayStream {
    fn content_type(&mut self, content_type: Option<&HeaderValue>) {
        let sse = content_type
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"));
        if sse {
            self.sse = Some(SseDecoder::new());
        }
    }

    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), StreamError> {
        out.extend_from_slice(input);
        let Some(decoder) = &mut self.sse else {
            return Ok(());
        };
        decoder.feed(input, &mut self.events);
        let pending = decoder.pending_bytes();
        self.observe();
        check_pending(pending)
    }

    fn finish(&mut self, _out: &mut BytesMut) -> Result<(), StreamError> {
        let Some(decoder) = &mut self.sse else {
            return Ok(());
        };
        decoder.finish(&mut self.events);
        self.observe();
        if self.ended {
            Ok(())
        } else {
            Err(StreamError(TRUNCATED.into()))
        }
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    /// A typed `error` event as the Responses API sends it (no `[DONE]` in that protocol); a
    /// binary body has no way to carry an error, so it just ends.
    fn write_error(&mut self, out: &mut BytesMut, message: &str) {
        if self.sse.is_none() {
            return;
        }
        let event = serde_json::json!({
            "type": "error",
            "code": "gateway_error",
            "message": message,
            "param": null,
            "sequence_number": self.sequence + 1,
        });
        out.put_slice(b"event: error\ndata: ");
        out.put_slice(event.to_string().as_bytes());
        out.put_slice(b"\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: &str = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0}\n\n\
event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\",\"sequence_number\":1}\n\n\
event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":5,\"total_tokens\":8}}}\n\n";

    fn sse() -> RelayStream {
        let mut s = RelayStream::default();
        s.content_type(Some(&HeaderValue::from_static(
            "text/event-stream; charset=utf-8",
        )));
        s
    }

    #[test]
    fn typed_events_pass_byte_for_byte_at_every_split_and_usage_is_read() {
        for split in 0..EVENTS.len() {
            let mut s = sse();
            let mut out = BytesMut::new();
            s.feed(&EVENTS.as_bytes()[..split], &mut out).unwrap();
            s.feed(&EVENTS.as_bytes()[split..], &mut out).unwrap();
            s.finish(&mut out).unwrap();
            assert_eq!(&out[..], EVENTS.as_bytes(), "split at {split}");
            assert_eq!(s.usage(), Usage::new(3, 5));
        }
    }

    #[test]
    fn a_cut_stream_is_an_error_with_a_typed_error_event() {
        let cut = &EVENTS[..EVENTS.find("event: response.completed").unwrap()];
        let mut s = sse();
        let mut out = BytesMut::new();
        s.feed(cut.as_bytes(), &mut out).unwrap();
        assert_eq!(s.finish(&mut out).unwrap_err().0, TRUNCATED);
        let mut err = BytesMut::new();
        s.write_error(&mut err, "boom");
        let text = String::from_utf8(err.to_vec()).unwrap();
        assert!(text.starts_with("event: error\ndata: {"), "{text}");
        assert!(text.contains("\"sequence_number\":2"), "{text}");
        assert!(!text.contains("[DONE]"));
    }

    #[test]
    fn binary_bodies_pass_through_and_never_get_text_appended() {
        let mut s = RelayStream::default();
        s.content_type(Some(&HeaderValue::from_static("audio/mpeg")));
        let mut out = BytesMut::new();
        s.feed(&[0xff, 0xfb, 0x00], &mut out).unwrap();
        s.finish(&mut out).unwrap();
        s.write_error(&mut out, "boom");
        assert_eq!(&out[..], &[0xff, 0xfb, 0x00]);
    }

    #[test]
    fn usage_reads_both_namings() {
        let v = serde_json::json!({"usage": {"input_tokens": 2, "output_tokens": 3}});
        assert_eq!(usage_of(&v), Some(Usage::new(2, 3)));
        let v = serde_json::json!({"usage": {"prompt_tokens": 4, "total_tokens": 4}});
        assert_eq!(usage_of(&v), Some(Usage::new(4, 0)));
        assert_eq!(usage_of(&serde_json::json!({"usage": null})), None);
    }
}
