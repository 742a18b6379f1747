//! Native formats, same provider (`llm_format` gemini | bedrock | cohere | huggingface |
//! anthropic with the matching provider): the client's own API request passes through
//! untouched. This module recognises the operation from the path suffix (Kong's rule), reads
//! the model from the path, builds the provider path for it, and reads token usage out of the
//! native answer or stream (for the access log) without changing a byte of it.

use base64::Engine;
use bytes::BytesMut;
use serde_json::{json, Value};

use crate::codec::eventstream::{encode_exception, EventMessage, EventStreamDecoder};
use crate::codec::json_array::{JsonArrayDecoder, JsonArrayItem};
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::config::ai_proxy::ProviderName;
use crate::providers::oai::Usage;
use crate::providers::{StreamError, StreamTranslate};

/// One native call, read from the client's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeCall {
    /// The operation as the provider names it (`generateContent`, `converse-stream`, `rerank`).
    pub operation: &'static str,
    /// The model named in the path (URL-unescaped), if the API puts it there.
    pub model: Option<String>,
    /// Streams by its operation (Anthropic streams by its body's `stream` instead).
    pub stream: bool,
    /// The API version segment the client used (`v1beta`, `v2`), where the API has one.
    pub version: Option<String>,
}

/// `countTokens` is no Kong operation; the Gemini API and Vertex have it, and the
/// google-genai SDK's `count_tokens` calls it.
const GEMINI_OPERATIONS: [&str; 5] = [
    "generateContent",
    "streamGenerateContent",
    "embedContent",
    "batchEmbedContents",
    "countTokens",
];
const BEDROCK_OPERATIONS: [&str; 4] = [
    "converse",
    "converse-stream",
    "invoke",
    "invoke-with-response-stream",
];

/// The operations a provider's native format serves, for error messages.
pub fn supported(provider: ProviderName) -> &'static str {
    match provider {
        ProviderName::Gemini => ".../models/{model}:generateContent | :streamGenerateContent | :embedContent | :batchEmbedContents | :countTokens",
        ProviderName::Bedrock => ".../model/{model}/converse | /converse-stream | /invoke | /invoke-with-response-stream, or .../rerank",
        ProviderName::Cohere => ".../v1/rerank | .../v2/rerank",
        ProviderName::Huggingface => ".../generate | .../generate_stream",
        ProviderName::Anthropic => ".../v1/messages | .../v1/messages/count_tokens",
        _ => "none",
    }
}

fn unescape(s: &str) -> String {
    url::form_urlencoded::parse(format!("m={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Recognises the native operation at the end of `path`.
pub fn parse(provider: ProviderName, path: &str) -> Option<NativeCall> {
    let path = path.trim_end_matches('/');
    let call = |operation, model: Option<String>, stream, version: Option<&str>| NativeCall {
        operation,
        model,
        stream,
        version: version.map(str::to_string),
    };
    match provider {
        ProviderName::Gemini => {
            let (before, tail) = path.rsplit_once("/models/")?;
            let (model, op) = tail.rsplit_once(':')?;
            let operation = GEMINI_OPERATIONS.into_iter().find(|o| *o == op)?;
            let version = before
                .rsplit('/')
                .find(|s| s.starts_with("v1"))
                .filter(|_| !before.contains("/projects/"));
            let stream = operation == "streamGenerateContent";
            (!model.is_empty() && !model.contains('/'))
                .then(|| call(operation, Some(unescape(model)), stream, version))
        }
        ProviderName::Bedrock => {
            if path.ends_with("/rerank") || path == "/rerank" {
                return Some(call("rerank", None, false, None));
            }
            let (rest, op) = path.rsplit_once('/')?;
            let operation = BEDROCK_OPERATIONS.into_iter().find(|o| *o == op)?;
            let (before, model) = rest.rsplit_once('/')?;
            (before.ends_with("/model") || before == "/model").then_some(())?;
            let stream = operation.ends_with("-stream");
            (!model.is_empty()).then(|| call(operation, Some(unescape(model)), stream, None))
        }
        ProviderName::Cohere => ["v1", "v2"]
            .into_iter()
            .find(|v| path.ends_with(&format!("/{v}/rerank")))
            .map(|v| call("rerank", None, false, Some(v))),
        ProviderName::Huggingface => {
            if path.ends_with("/generate_stream") {
                Some(call("generate_stream", None, true, None))
            } else if path.ends_with("/generate") {
                Some(call("generate", None, false, None))
            } else {
                None
            }
        }
        ProviderName::Anthropic => match super::anthropic::Operation::from_path(path)? {
            super::anthropic::Operation::Messages => Some(call("messages", None, false, None)),
            super::anthropic::Operation::CountTokens => {
                Some(call("count_tokens", None, false, None))
            }
        },
        _ => None,
    }
}

/// Token counts found in one native JSON document (an answer, a stream event or chunk): every
/// provider's usage shape, so one reader serves all native formats. Fields that are absent stay
/// `None` (a stream reports input and output tokens in different events).
pub fn usage_of(v: &Value) -> (Option<u64>, Option<u64>) {
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
    // Bedrock `invoke-with-response-stream`: the last chunk's totals for the whole call.
    if let Some(m) = v.get("amazon-bedrock-invocationMetrics") {
        return (n(m, "inputTokenCount"), n(m, "outputTokenCount"));
    }
    if let Some(u) = v.get("usageMetadata") {
        // Gemini: thinking tokens are billed as output.
        let output =
            n(u, "candidatesTokenCount").map(|c| c + n(u, "thoughtsTokenCount").unwrap_or(0));
        return (n(u, "promptTokenCount"), output);
    }
    let usage = v
        .get("usage")
        .or_else(|| v.get("message").and_then(|m| m.get("usage")));
    if let Some(u) = usage {
        if u.get("inputTokens").is_some() || u.get("outputTokens").is_some() {
            return (n(u, "inputTokens"), n(u, "outputTokens"));
        }
        // Anthropic (also Bedrock invoke of Claude): cache reads and writes are input too.
        let input = n(u, "input_tokens").map(|i| {
            i + n(u, "cache_read_input_tokens").unwrap_or(0)
                + n(u, "cache_creation_input_tokens").unwrap_or(0)
        });
        return (input, n(u, "output_tokens"));
    }
    if let Some(units) = v.get("meta").and_then(|m| m.get("billed_units")) {
        return (n(units, "input_tokens"), n(units, "output_tokens"));
    }
    if let Some(details) = v.get("details") {
        return (None, n(details, "generated_tokens"));
    }
    (None, None)
}

/// Token usage of a complete native answer.
pub fn usage(body: &[u8]) -> Usage {
    let mut acc = UsageAcc::default();
    match serde_json::from_slice::<Value>(body) {
        // Gemini's non-SSE stream is a JSON array of chunks.
        Ok(Value::Array(items)) => items.iter().for_each(|v| acc.add(v)),
        Ok(v) => acc.add(&v),
        Err(_) => {}
    }
    acc.usage()
}

#[derive(Debug, Default, Clone, Copy)]
struct UsageAcc {
    input: u64,
    output: u64,
    /// The provider's last frame (or an error of its own) was seen: the stream is complete.
    ended: bool,
}

/// Whether a native frame is the provider's last one, or its own error: Anthropic's
/// `message_stop` (also inside Bedrock invoke chunks), Bedrock invoke's metrics, Gemini's
/// `finishReason`, TGI's final event (with the whole `generated_text`), any `error`.
fn is_last(v: &Value) -> bool {
    let present = |v: Option<&Value>| v.is_some_and(|v| !v.is_null());
    present(v.get("error"))
        || v.get("type").and_then(Value::as_str) == Some("message_stop")
        || present(v.get("amazon-bedrock-invocationMetrics"))
        || present(v.pointer("/candidates/0/finishReason"))
        || present(v.get("generated_text"))
}

impl UsageAcc {
    /// Counts are cumulative in every native stream, so the latest value wins.
    fn add(&mut self, v: &Value) {
        // Bedrock `invoke-with-response-stream` wraps each model chunk as base64 `bytes`.
        if let Some(bytes) = v.get("bytes").and_then(Value::as_str) {
            if let Ok(chunk) = base64::engine::general_purpose::STANDARD.decode(bytes) {
                self.add_bytes(&chunk);
            }
            return;
        }
        self.ended |= is_last(v);
        let (input, output) = usage_of(v);
        if let Some(i) = input {
            self.input = i;
        }
        if let Some(o) = output {
            self.output = o;
        }
    }

    fn add_bytes(&mut self, data: &[u8]) {
        if let Ok(v) = serde_json::from_slice::<Value>(data) {
            self.add(&v);
        }
    }

    fn usage(&self) -> Usage {
        Usage::new(self.input, self.output)
    }
}

/// How a native stream is framed, by provider and operation.
enum Framing {
    Sse(SseDecoder, Vec<SseEvent>),
    JsonArray(JsonArrayDecoder, Vec<JsonArrayItem>),
    EventStream(EventStreamDecoder, Vec<EventMessage>),
}

/// A native stream: every byte passes through untouched; the frames are decoded on the side
/// only to read the usage for the access log.
pub struct NativeStream {
    provider: ProviderName,
    framing: Framing,
    usage: UsageAcc,
    /// Decoding failed (the client still gets every byte); usage stops being read.
    blind: bool,
    /// The last byte passed through that was not whitespace, and whether the bytes so far end
    /// with a blank line: where an error event can be appended cleanly.
    last: Option<u8>,
    at_boundary: bool,
}

impl NativeStream {
    /// `sse` is whether Gemini was asked for SSE (`alt=sse`); other providers have one framing.
    pub fn new(provider: ProviderName, sse: bool) -> NativeStream {
        let framing = match provider {
            ProviderName::Bedrock => Framing::EventStream(EventStreamDecoder::new(), Vec::new()),
            ProviderName::Gemini if !sse => Framing::JsonArray(JsonArrayDecoder::new(), Vec::new()),
            _ => Framing::Sse(SseDecoder::new(), Vec::new()),
        };
        NativeStream {
            provider,
            framing,
            usage: UsageAcc::default(),
            blind: false,
            last: None,
            at_boundary: true,
        }
    }

    fn track(&mut self, input: &[u8]) {
        if let Some(&b) = input.iter().rev().find(|b| !b.is_ascii_whitespace()) {
            self.last = Some(b);
        }
        if !input.is_empty() {
            let mut tail = input.iter().rev().filter(|b| **b != b'\r');
            self.at_boundary = matches!((tail.next(), tail.next()), (Some(b'\n'), Some(b'\n')))
                || (self.at_boundary && input.iter().all(u8::is_ascii_whitespace));
        }
    }

    /// The error in the provider's own stream shape, which its SDK raises: Anthropic's `error`
    /// event, Gemini's `{"error": {...}}` element (SSE event, or last JSON-array element), an
    /// AWS event-stream exception, TGI's `{"error": ...}` event. Empty when the stream cannot
    /// take one cleanly (cut inside a Gemini array element) or is already complete.
    fn error_frame(&self, message: &str) -> Vec<u8> {
        let gemini = json!({"error": {"code": 500, "message": message, "status": "INTERNAL"}});
        let sse = |event: Option<&str>, data: Value| {
            let mut out = if self.at_boundary {
                String::new()
            } else {
                "\n\n".into()
            };
            if let Some(name) = event {
                out.push_str(&format!("event: {name}\n"));
            }
            out.push_str(&format!("data: {data}\n\n"));
            out.into_bytes()
        };
        match (&self.framing, self.provider) {
            (Framing::EventStream(..), _) => {
                let body = json!({ "message": message }).to_string();
                encode_exception("internalServerException", body.as_bytes()).to_vec()
            }
            (Framing::JsonArray(..), _) => match self.last {
                None => format!("[{gemini}]").into_bytes(),
                Some(b'[' | b',') => format!("{gemini}]").into_bytes(),
                Some(b'}') => format!(",{gemini}]").into_bytes(),
                _ => Vec::new(),
            },
            (Framing::Sse(..), ProviderName::Anthropic) => sse(
                Some("error"),
                json!({"type": "error", "error": {"type": "api_error", "message": message}}),
            ),
            (Framing::Sse(..), ProviderName::Gemini) => sse(None, gemini),
            (Framing::Sse(..), _) => {
                sse(None, json!({"error": message, "error_type": "generation"}))
            }
        }
    }

    fn observe(&mut self, input: &[u8]) {
        if self.blind {
            return;
        }
        let usage = &mut self.usage;
        let ok = match &mut self.framing {
            Framing::Sse(decoder, events) => {
                decoder.feed(input, events);
                events
                    .drain(..)
                    .for_each(|e| usage.add_bytes(e.data.as_bytes()));
                decoder.pending_bytes() <= crate::providers::stream::MAX_PENDING
            }
            Framing::JsonArray(decoder, items) => {
                let ok = decoder.feed(input, items).is_ok();
                for item in items.drain(..) {
                    match item {
                        JsonArrayItem::Element(bytes) => usage.add_bytes(&bytes),
                        JsonArrayItem::End => usage.ended = true,
                    }
                }
                ok && decoder.pending_bytes() <= crate::providers::stream::MAX_PENDING
            }
            Framing::EventStream(decoder, messages) => {
                let ok = decoder.feed(input, messages).is_ok();
                for m in messages.drain(..) {
                    // Converse streams end with `metadata`; exceptions are the provider's own.
                    usage.ended |= m.event_type.as_deref() == Some("metadata")
                        || m.message_type.as_deref() != Some("event");
                    usage.add_bytes(&m.body);
                }
                ok
            }
        };
        self.blind = !ok;
    }
}

impl StreamTranslate for NativeStream {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), StreamError> {
        out.extend_from_slice(input);
        self.track(input);
        self.observe(input);
        Ok(())
    }

    /// A stream that stops before the provider's last frame was cut (the connection closed
    /// early): it fails, so the client gets an error instead of a silently short answer.
    fn finish(&mut self, _out: &mut BytesMut) -> Result<(), StreamError> {
        if self.blind || self.usage.ended {
            return Ok(());
        }
        Err(StreamError(
            "the provider's stream ended before its last event".into(),
        ))
    }

    fn usage(&self) -> Usage {
        self.usage.usage()
    }

    /// A native client's SDK reads only its provider's framing: the error goes in that.
    fn write_error(&mut self, out: &mut BytesMut, message: &str) {
        out.extend_from_slice(&self.error_frame(message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::eventstream::encode_event;

    #[test]
    fn gemini_operations_models_and_versions() {
        let c = parse(
            ProviderName::Gemini,
            "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent",
        )
        .unwrap();
        assert_eq!(c.operation, "streamGenerateContent");
        assert_eq!(c.model.as_deref(), Some("gemini-2.0-flash"));
        assert!(c.stream);
        assert_eq!(c.version.as_deref(), Some("v1beta"));
        let c = parse(
            ProviderName::Gemini,
            "/g/v1/models/text-embedding-004:batchEmbedContents",
        )
        .unwrap();
        assert_eq!((c.operation, c.stream), ("batchEmbedContents", false));
        let c = parse(
            ProviderName::Gemini,
            "/g/v1beta/models/gemini-2.0-flash:countTokens",
        );
        assert_eq!(
            c.map(|c| (c.operation, c.stream)),
            Some(("countTokens", false))
        );
        assert!(parse(ProviderName::Gemini, "/g/v1beta/models/x:predict").is_none());
        assert!(parse(ProviderName::Gemini, "/g/v1beta/models/:generateContent").is_none());
        let vertex = parse(
            ProviderName::Gemini,
            "/v/v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash:generateContent",
        )
        .unwrap();
        assert_eq!(vertex.version, None);
    }

    #[test]
    fn bedrock_operations_unescape_the_model() {
        let c = parse(
            ProviderName::Bedrock,
            "/bedrock/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream",
        )
        .unwrap();
        assert_eq!(
            c.model.as_deref(),
            Some("anthropic.claude-3-haiku-20240307-v1:0")
        );
        assert!(c.stream);
        let arn = parse(
            ProviderName::Bedrock,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x/invoke",
        )
        .unwrap();
        assert_eq!(
            arn.model.as_deref(),
            Some("arn:aws:bedrock:us-east-1:1:inference-profile/us.x")
        );
        assert_eq!(
            parse(ProviderName::Bedrock, "/b/rerank").unwrap().operation,
            "rerank"
        );
        assert!(parse(ProviderName::Bedrock, "/b/model/x/chat").is_none());
        assert!(parse(ProviderName::Bedrock, "/b/x/converse").is_none());
    }

    #[test]
    fn cohere_huggingface_and_anthropic_paths() {
        assert_eq!(
            parse(ProviderName::Cohere, "/c/v2/rerank")
                .unwrap()
                .version
                .as_deref(),
            Some("v2")
        );
        assert!(parse(ProviderName::Cohere, "/c/v1/chat").is_none());
        assert!(
            parse(ProviderName::Huggingface, "/hf/generate_stream")
                .unwrap()
                .stream
        );
        assert_eq!(
            parse(ProviderName::Huggingface, "/hf/generate")
                .unwrap()
                .operation,
            "generate"
        );
        assert_eq!(
            parse(ProviderName::Anthropic, "/a/v1/messages/count_tokens")
                .unwrap()
                .operation,
            "count_tokens"
        );
        assert!(parse(ProviderName::Openai, "/v1/messages").is_none());
    }

    #[test]
    fn usage_from_every_native_shape() {
        let cases = [
            (
                json!({"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "thoughtsTokenCount": 2}}),
                (Some(3), Some(6)),
            ),
            (
                json!({"usage": {"inputTokens": 5, "outputTokens": 6}}),
                (Some(5), Some(6)),
            ),
            (
                json!({"usage": {"input_tokens": 7, "output_tokens": 8, "cache_read_input_tokens": 10}}),
                (Some(17), Some(8)),
            ),
            (
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}),
                (Some(9), Some(1)),
            ),
            (
                json!({"type": "message_delta", "usage": {"output_tokens": 12}}),
                (None, Some(12)),
            ),
            (
                json!({"meta": {"billed_units": {"search_units": 1}}}),
                (None, None),
            ),
            (
                json!({"details": {"generated_tokens": 20}}),
                (None, Some(20)),
            ),
        ];
        for (v, expected) in cases {
            assert_eq!(usage_of(&v), expected, "{v}");
        }
        assert_eq!(usage(br#"[{"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1}},{"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":5}}]"#), Usage::new(1, 5));
    }

    #[test]
    fn streams_pass_bytes_untouched_and_read_usage_at_any_split() {
        let sse = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":12}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let mut frames = encode_event("contentBlockDelta", br#"{"delta":{"text":"hi"}}"#).to_vec();
        frames.extend_from_slice(&encode_event(
            "metadata",
            br#"{"usage":{"inputTokens":4,"outputTokens":2}}"#,
        ));
        let array = br#"[{"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":1}}, {"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":3}}]"#;
        // invoke-with-response-stream: Claude's own events, base64 in `chunk` events; the
        // last one's invocation metrics are the totals.
        let b64 = |v: Value| {
            let bytes = base64::engine::general_purpose::STANDARD.encode(v.to_string());
            encode_event("chunk", json!({ "bytes": bytes }).to_string().as_bytes()).to_vec()
        };
        let mut invoke = b64(json!({"type": "message_start",
                                    "message": {"usage": {"input_tokens": 7, "output_tokens": 1}}}));
        invoke.extend(b64(json!({"type": "content_block_delta",
                                 "delta": {"type": "text_delta", "text": "hi"}})));
        invoke.extend(b64(
            json!({"type": "message_stop", "amazon-bedrock-invocationMetrics":
            {"inputTokenCount": 8, "outputTokenCount": 5, "invocationLatency": 9}}),
        ));
        for (provider, sse_flag, input, expected) in [
            (
                ProviderName::Anthropic,
                true,
                sse.as_bytes(),
                Usage::new(9, 12),
            ),
            (ProviderName::Bedrock, false, &frames[..], Usage::new(4, 2)),
            (ProviderName::Bedrock, false, &invoke[..], Usage::new(8, 5)),
            (ProviderName::Gemini, false, &array[..], Usage::new(2, 3)),
        ] {
            for cut in 0..input.len() {
                let mut s = NativeStream::new(provider, sse_flag);
                let mut out = BytesMut::new();
                s.feed(&input[..cut], &mut out).unwrap();
                s.feed(&input[cut..], &mut out).unwrap();
                s.finish(&mut out).unwrap();
                assert_eq!(&out[..], input);
                assert_eq!(s.usage(), expected, "{provider:?} cut at {cut}");
            }
        }
    }

    fn failed(provider: ProviderName, sse: bool, sent: &[u8]) -> Vec<u8> {
        let mut s = NativeStream::new(provider, sse);
        let mut out = BytesMut::new();
        s.feed(sent, &mut out).unwrap();
        assert!(s.finish(&mut out).is_err(), "a cut stream is a failure");
        out.clear();
        s.write_error(&mut out, "upstream idle");
        out.to_vec()
    }

    #[test]
    fn a_failed_stream_ends_with_an_error_in_the_clients_own_format() {
        let anthropic = failed(ProviderName::Anthropic, true, b"event: ping\ndata: {}\n\n");
        let mut events = Vec::new();
        SseDecoder::new().feed(&anthropic, &mut events);
        assert_eq!(events[0].event.as_deref(), Some("error"));
        let data: Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(data["error"]["message"], "upstream idle");
        // Cut mid-event: a blank line first, so the error is an event of its own.
        let cut = failed(ProviderName::Gemini, true, b"data: {\"candidates\"");
        assert!(cut.starts_with(b"\n\ndata: {\"error\""), "{cut:?}");

        let array = failed(ProviderName::Gemini, false, b"[{\"candidates\": []}");
        let whole = [&b"[{\"candidates\": []}"[..], &array].concat();
        let v: Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(v[1]["error"]["message"], "upstream idle");
        let after_comma = failed(ProviderName::Gemini, false, b"[{\"candidates\": []},");
        assert!(after_comma.starts_with(b"{\"error\""), "{after_comma:?}");
        assert!(failed(ProviderName::Gemini, false, b"[{\"cand").is_empty());

        let bedrock = failed(ProviderName::Bedrock, false, b"");
        let mut messages = Vec::new();
        EventStreamDecoder::new()
            .feed(&bedrock, &mut messages)
            .unwrap();
        assert_eq!(
            messages[0].exception_type.as_deref(),
            Some("internalServerException")
        );
    }
}
