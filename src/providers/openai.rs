//! OpenAI, and the OpenAI wire format that Azure, Mistral (`openai` format) and Llama2
//! (`openai` format) share: the request is forwarded almost untouched, a 200 body is returned
//! byte for byte once validated, and stream events pass through.

use std::ops::Range;
use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;
use serde::Deserialize;
use serde_json::{Map, Value};
use smallvec::SmallVec;

use super::oai::{self, Usage};
use super::{
    endpoint_url, ApiEndpoint, RequestCtx, StreamError, StreamTranslate, Translate, Translated,
};
use crate::codec::sse::{self, SseDecoder, SseEvent};
use crate::config::ai_proxy::{AiProxyConfig, ModelOptions, RouteType};
use crate::error::GatewayError;

pub const DEFAULT_BASE: &str = "https://api.openai.com:443";

pub struct OpenAi;

impl Translate for OpenAi {
    fn api_base(&self, _options: &ModelOptions) -> Option<String> {
        Some(DEFAULT_BASE.to_string())
    }

    fn from_config(config: &AiProxyConfig) -> Result<Self, super::DriverError> {
        let _ = config;
        Ok(OpenAi)
    }

    fn supports(&self, _route_type: RouteType) -> bool {
        true
    }

    fn url(&self, ctx: &RequestCtx<'_>) -> Result<String, GatewayError> {
        Ok(endpoint_url(ctx, DEFAULT_BASE, route_path(ctx.route_type)))
    }

    fn api_endpoint(&self, ctx: &RequestCtx<'_>) -> Option<ApiEndpoint> {
        Some(ApiEndpoint {
            base: ApiEndpoint::base(ctx, &format!("{DEFAULT_BASE}/v1")),
            query: Vec::new(),
        })
    }

    fn request(
        &self,
        ctx: &RequestCtx<'_>,
        body: Map<String, Value>,
    ) -> Result<Value, GatewayError> {
        Ok(request(ctx, body))
    }

    fn openai_body(&self, _route_type: RouteType) -> bool {
        true
    }

    fn response(&self, ctx: &RequestCtx<'_>, body: Bytes) -> Result<Translated, String> {
        response(ctx.route_type, body)
    }

    fn stream(&self, _ctx: &RequestCtx<'_>) -> Box<dyn StreamTranslate> {
        Box::new(PassthroughStream::default())
    }
}

/// The OpenAI path of a route type ([`endpoint_url`] puts a configured `upstream_path` in its
/// place).
pub fn route_path(route_type: RouteType) -> &'static str {
    match route_type {
        RouteType::Completions => "/v1/completions",
        RouteType::Embeddings => "/v1/embeddings",
        _ => "/v1/chat/completions",
    }
}

/// Every top-level field [`request`] reads or sets.
pub const REQUEST_FIELDS: [&str; 7] = [
    "model",
    "top_k",
    "thinking",
    "dimensions",
    "stream",
    "max_tokens",
    "max_completion_tokens",
];

/// OpenAI-format request: `model` set to the effective model, `stream` explicit, `top_k`
/// dropped (OpenAI has no such field); reasoning models take `max_completion_tokens`. An
/// Anthropic-format client's `thinking` budget is removed too: it reaches OpenAI-format APIs as
/// `reasoning_effort`, and OpenAI rejects unknown parameters.
pub fn request(ctx: &RequestCtx<'_>, mut body: Map<String, Value>) -> Value {
    body.insert("model".into(), Value::String(ctx.model.to_string()));
    body.remove("top_k");
    body.remove("thinking");
    if ctx.route_type == RouteType::Embeddings {
        if let Some(dimensions) = ctx.options.embeddings_dimensions {
            body.insert("dimensions".into(), dimensions.into());
        }
        body.remove("stream");
        return Value::Object(body);
    }
    body.insert("stream".into(), Value::Bool(ctx.stream));
    if is_reasoning_model(ctx.model) && !body.contains_key("max_completion_tokens") {
        if let Some(max) = body.remove("max_tokens") {
            body.insert("max_completion_tokens".into(), max);
        }
    }
    Value::Object(body)
}

/// o-series and gpt-5 models reject `max_tokens` (OpenAI API reference).
fn is_reasoning_model(model: &str) -> bool {
    ["o1", "o3", "o4", "gpt-5"]
        .iter()
        .any(|p| model.starts_with(p))
}

/// Just enough of an OpenAI answer to validate it and read its usage, without building it.
#[derive(Deserialize)]
struct Shape {
    choices: Option<serde::de::IgnoredAny>,
    data: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    usage: Option<UsageShape>,
}

#[derive(Deserialize, Default)]
struct UsageShape {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// A valid OpenAI answer is returned byte for byte; one without `choices` (or `data` for
/// embeddings) is a transformation failure with Kong's reason text.
pub fn response(route_type: RouteType, body: Bytes) -> Result<Translated, String> {
    // A valid UTF-8 answer (nearly all) is checked once, not key by key; `from_slice` reads the
    // rest, which may carry invalid bytes in a string nothing reads, as before.
    let shape: Result<Shape, _> = match std::str::from_utf8(&body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(&body),
    };
    let shape = shape.map_err(|_| format!("failed to decode {} response", route_type.as_str()))?;
    let present = match route_type {
        RouteType::Embeddings => shape.data.is_some(),
        _ => shape.choices.is_some(),
    };
    if !present {
        let field = if route_type == RouteType::Embeddings {
            "data"
        } else {
            "choices"
        };
        return Err(format!("'{field}' not in {} response", route_type.as_str()));
    }
    let usage = shape.usage.unwrap_or_default();
    Ok(Translated {
        body,
        usage: Usage::new(usage.prompt_tokens, usage.completion_tokens),
    })
}

/// Re-frames upstream SSE: every `data:` payload goes out unchanged, comments and
/// `event:`-only frames are dropped, and a `[DONE]` is added if the upstream forgot it.
#[derive(Default)]
pub struct PassthroughStream {
    decoder: SseDecoder,
    events: Vec<SseEvent>,
    done_sent: bool,
    /// A chunk with a non-null `finish_reason` went by: a missing `[DONE]` after it is only a
    /// server that omits it, not a cut stream.
    finish_seen: bool,
    usage: Usage,
}

impl PassthroughStream {
    fn emit(&mut self, out: &mut BytesMut) -> Result<(), StreamError> {
        for event in self.events.drain(..) {
            if self.done_sent || event.data.is_empty() {
                continue;
            }
            if event.data == "[DONE]" {
                oai::write_done(out);
                self.done_sent = true;
                continue;
            }
            Self::inspect(&event.data, &mut self.usage, &mut self.finish_seen)?;
            oai::write_raw_event(out, event.data.as_bytes());
        }
        Ok(())
    }

    /// Only the rare event that carries usage or an error is parsed; the rest goes out as
    /// bytes.
    fn inspect(data: &str, usage: &mut Usage, finish_seen: &mut bool) -> Result<(), StreamError> {
        if values_of(data, &USAGE_KEY).any(|v| v.starts_with('{')) {
            read_usage(data, usage);
        }
        if values_of(data, &ERROR_KEY).any(|v| !v.starts_with("null")) && is_error_event(data) {
            return Err(StreamError(error_message(data)));
        }
        *finish_seen |= values_of(data, &FINISH_KEY).any(|v| !v.starts_with("null"));
        Ok(())
    }

    /// A read of whole plain `data:` events goes out as it came, which is what `emit` would
    /// write for it: no per-event copy, allocation or re-framing (~3 % of a pass-through
    /// stream's instructions when each read is one event, loadtest/instructions.sh --stream).
    /// `false` if the read is not one (or holds a `[DONE]` before its end): the decoder takes
    /// it.
    fn pass_whole(&mut self, input: &[u8], out: &mut BytesMut) -> Result<bool, StreamError> {
        if self.done_sent || !self.decoder.is_between_events() {
            return Ok(false);
        }
        let Some((text, payloads)) = sse::plain_data_events(input) else {
            return Ok(false);
        };
        let Some(last) = payloads.len().checked_sub(1) else {
            return Ok(true);
        };
        let done = |i: usize| &text[payloads[i].clone()] == "[DONE]";
        if (0..last).any(done) {
            return Ok(false);
        }
        self.decoder.passed_events();
        if let Err((i, e)) = self.inspect_read(text, &payloads) {
            // The events before the error went out, as `emit` writes them.
            out.extend_from_slice(&input[..payloads[i].start - sse::DATA_PREFIX.len()]);
            return Err(e);
        }
        self.done_sent = done(last);
        out.extend_from_slice(input);
        Ok(true)
    }

    /// [`Self::inspect`] for a read of whole events (`text[payloads[i]]` each, none a `[DONE]`
    /// but maybe the last): each key is searched once over the whole read, and only the events
    /// where one says something (usage, an error, a finish) are inspected, in order. A key lies
    /// inside one payload (it holds no newline), and what follows a key at a payload's end is
    /// `\n\ndata: `, so each event's verdict is the one a search of that event alone gives
    /// (one search per event and key was ~15 % of a pass-through stream, session 8). On an
    /// error, the index of the event that carried it.
    fn inspect_read(
        &mut self,
        text: &str,
        payloads: &[Range<usize>],
    ) -> Result<(), (usize, StreamError)> {
        let mut events: SmallVec<[usize; 4]> = SmallVec::new();
        let mut note = |(key_at, _): (usize, &str)| {
            events.push(payloads.partition_point(|p| p.end <= key_at));
        };
        keys_and_values(text, &USAGE_KEY)
            .filter(|(_, v)| v.starts_with('{'))
            .for_each(&mut note);
        keys_and_values(text, &ERROR_KEY)
            .filter(|(_, v)| !v.starts_with("null"))
            .for_each(&mut note);
        // Once a finish went by, a later one changes nothing.
        if !self.finish_seen {
            keys_and_values(text, &FINISH_KEY)
                .filter(|(_, v)| !v.starts_with("null"))
                .for_each(&mut note);
        }
        events.sort_unstable();
        events.dedup();
        for i in events {
            let data = &text[payloads[i].clone()];
            Self::inspect(data, &mut self.usage, &mut self.finish_seen).map_err(|e| (i, e))?;
        }
        Ok(())
    }
}

/// The text after each `"key":` in a JSON document, at any depth, whatever the whitespace
/// around the colon (Python's `json.dumps` writes `"usage": {`; pretty printers add newlines).
/// A quoted string followed by a colon is always a key, and a key's quote inside a string value
/// is escaped, so this finds keys only, without parsing. Callers confirm with serde what they
/// act on.
pub(crate) fn values_of<'a>(
    json: &'a str,
    quoted_key: &'a Finder<'static>,
) -> impl Iterator<Item = &'a str> {
    keys_and_values(json, quoted_key).map(|(_, value)| value)
}

/// [`values_of`], with where each key starts.
fn keys_and_values<'a>(
    json: &'a str,
    quoted_key: &'a Finder<'static>,
) -> impl Iterator<Item = (usize, &'a str)> {
    let len = quoted_key.needle().len();
    let mut from = 0;
    // `find` from a moving offset, not `find_iter`: the iterator copies the searcher on every
    // call (~8 % of this scan's cost, callgrind).
    std::iter::from_fn(move || loop {
        let at = from + quoted_key.find(&json.as_bytes()[from..])?;
        // The key ends in an ASCII quote, so `at + len` is a character boundary.
        from = at + len;
        // JSON's whitespace is ASCII; `trim_start` would test every character for Unicode's.
        if let Some(rest) = json[from..].trim_ascii_start().strip_prefix(':') {
            return Some((at, rest.trim_ascii_start()));
        }
    })
}

// Built once: a searcher built per event and key was ~2 % of a pass-through stream's CPU.
static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"usage\""));
static ERROR_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"error\""));
static FINISH_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"finish_reason\""));

fn read_usage(data: &str, usage: &mut Usage) {
    #[derive(Deserialize)]
    struct WithUsage {
        usage: Option<UsageShape>,
    }
    if let Ok(WithUsage { usage: Some(u) }) = serde_json::from_str(data) {
        *usage = Usage::new(u.prompt_tokens, u.completion_tokens);
    }
}

/// An event whose top-level `error` is set (not one with an `error` key deeper down).
fn is_error_event(data: &str) -> bool {
    #[derive(Deserialize)]
    struct WithError {
        error: Option<serde::de::IgnoredAny>,
    }
    matches!(serde_json::from_str(data), Ok(WithError { error: Some(_) }))
}

fn error_message(data: &str) -> String {
    serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| "upstream sent an error event".to_string())
}

impl StreamTranslate for PassthroughStream {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), StreamError> {
        if self.pass_whole(input, out)? {
            return Ok(());
        }
        self.decoder.feed(input, &mut self.events);
        self.emit(out)?;
        super::stream::check_pending(self.decoder.pending_bytes())
    }

    fn finish(&mut self, out: &mut BytesMut) -> Result<(), StreamError> {
        self.decoder.finish(&mut self.events);
        self.emit(out)?;
        if !self.done_sent {
            if !self.finish_seen {
                return Err(StreamError(super::stream::TRUNCATED.into()));
            }
            oai::write_done(out);
            self.done_sent = true;
        }
        Ok(())
    }

    fn usage(&self) -> Usage {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ai_proxy::ModelOptions;
    use crate::providers::testkit::{
        ctx, fixture, fixture_config, fixture_json, run_stream, run_truncated, sse_payloads,
    };

    fn driver() -> OpenAi {
        OpenAi::from_config(&fixture_config("openai/chat/config.json")).unwrap()
    }

    #[test]
    fn chat_request_matches_fixture() {
        let options = ModelOptions::default();
        let ctx = ctx(RouteType::Chat, "gpt-4o-mini", false, &options);
        let client = fixture_json("openai/chat/client-request.json");
        let out = driver()
            .request(&ctx, client.as_object().unwrap().clone())
            .unwrap();
        assert_eq!(out, fixture_json("openai/chat/upstream-request.json"));
        assert_eq!(
            driver().url(&ctx).unwrap(),
            "https://api.openai.com:443/v1/chat/completions"
        );
    }

    #[test]
    fn completions_request_matches_fixture() {
        let options = ModelOptions::default();
        let client = fixture_json("openai/completions/client-request.json");
        let model = client["model"].as_str().unwrap().to_string();
        let ctx = ctx(RouteType::Completions, &model, false, &options);
        let out = driver()
            .request(&ctx, client.as_object().unwrap().clone())
            .unwrap();
        assert_eq!(
            out,
            fixture_json("openai/completions/upstream-request.json")
        );
        assert!(driver().url(&ctx).unwrap().ends_with("/v1/completions"));
    }

    #[test]
    fn top_k_is_dropped_and_reasoning_models_get_max_completion_tokens() {
        let options = ModelOptions::default();
        let ctx = ctx(RouteType::Chat, "o3-mini", true, &options);
        let body = serde_json::json!({"messages": [], "top_k": 3, "max_tokens": 9,
                                      "thinking": {"type": "enabled", "budget_tokens": 2048}});
        let out = request(&ctx, body.as_object().unwrap().clone());
        assert_eq!(
            out,
            serde_json::json!({"model": "o3-mini", "messages": [], "stream": true, "max_completion_tokens": 9})
        );
    }

    #[test]
    fn valid_response_is_returned_byte_for_byte() {
        let raw = fixture("openai/chat/upstream-response.json");
        let t = response(RouteType::Chat, Bytes::from(raw.clone())).unwrap();
        assert_eq!(t.body, raw.as_bytes());
        let expected = fixture_json("openai/chat/upstream-response.json");
        assert_eq!(
            t.usage.total_tokens,
            expected["usage"]["total_tokens"].as_u64().unwrap()
        );
    }

    /// Invalid UTF-8 in a string nothing reads passes, and usage is still read; in a key it is
    /// a decode failure. Both as `from_slice` alone decides.
    #[test]
    fn invalid_utf8_fails_only_where_it_is_read() {
        let body = b"{\"choices\":[{\"message\":{\"content\":\"\xff\"}}],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}";
        let t = response(RouteType::Chat, Bytes::from_static(body)).unwrap();
        assert_eq!(&t.body[..], &body[..]);
        assert_eq!(t.usage, Usage::new(2, 3));
        let err =
            response(RouteType::Chat, Bytes::from_static(b"{\"ch\xffoices\":[]}")).unwrap_err();
        assert_eq!(err, "failed to decode llm/v1/chat response");
    }

    #[test]
    fn response_without_choices_fails_with_kongs_reason() {
        let raw = fixture("openai/errors/upstream-200-bad.json");
        let err = response(RouteType::Chat, Bytes::from(raw)).unwrap_err();
        assert_eq!(err, "'choices' not in llm/v1/chat response");
        let err = response(RouteType::Chat, Bytes::from_static(b"{not json")).unwrap_err();
        assert_eq!(err, "failed to decode llm/v1/chat response");
    }

    #[test]
    fn stream_passes_payloads_through_at_every_split() {
        let input = fixture("openai/chat-stream/upstream-stream.txt");
        let expected = sse_payloads(&fixture("openai/chat-stream/expected-client-stream.txt"));
        for split in 0..input.len() {
            let mut s = PassthroughStream::default();
            let got = run_stream(&mut s, input.as_bytes(), split);
            assert_eq!(sse_payloads(&got), expected, "split at {split}");
        }
    }

    /// Python's `json.dumps` default separators (`", "`, `": "`), as OpenAI-compatible servers
    /// written in Python send them.
    const SPACED_USAGE_STREAM: &str = "data: {\"id\": \"c1\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"hi\"}, \"finish_reason\": \"stop\"}], \"usage\": null}\n\ndata: {\"id\": \"c1\", \"choices\": [], \"usage\": {\"prompt_tokens\": 7, \"completion_tokens\": 3, \"total_tokens\": 10}}\n\ndata: [DONE]\n\n";

    #[test]
    fn stream_usage_is_read_from_the_last_chunk_whatever_the_spacing() {
        let compact = SPACED_USAGE_STREAM.replace(": ", ":").replace(", ", ",");
        // Pretty-printed JSON across lines is one SSE event when each line is a `data:` line.
        let pretty = "data: {\ndata:   \"choices\": [],\ndata:   \"usage\" :\ndata:     {\"prompt_tokens\": 7, \"completion_tokens\": 3}\ndata: }\n\ndata: [DONE]\n\n";
        for (name, input) in [
            ("spaced", SPACED_USAGE_STREAM),
            ("compact", compact.as_str()),
            ("pretty", pretty),
        ] {
            for split in [1, 17, input.len() / 2] {
                let mut s = PassthroughStream::default();
                run_stream(&mut s, input.as_bytes(), split);
                assert_eq!(s.usage(), Usage::new(7, 3), "{name} split at {split}");
            }
        }
    }

    #[test]
    fn a_spaced_or_pretty_error_event_ends_the_stream_and_a_nested_error_key_does_not() {
        for event in [
            "data: {\"error\": {\"message\": \"overloaded\"}}\n\n",
            "data: {\ndata:   \"error\" : {\"message\": \"overloaded\"}\ndata: }\n\n",
            "data: {\"id\": \"x\", \"error\": {\"message\": \"overloaded\"}}\n\n",
        ] {
            let mut s = PassthroughStream::default();
            let err = s.feed(event.as_bytes(), &mut BytesMut::new()).unwrap_err();
            assert_eq!(err.0, "overloaded", "{event}");
        }
        let nested = "data: {\"choices\": [{\"delta\": {\"content\": \"\\\"error\\\": 1\"}, \"logprobs\": {\"error\": 1}}]}\n\n";
        let mut s = PassthroughStream::default();
        let mut out = BytesMut::new();
        s.feed(nested.as_bytes(), &mut out).unwrap();
        assert!(!out.is_empty());
    }

    #[test]
    fn non_stream_usage_is_read_from_spaced_and_pretty_bodies() {
        for body in [
            "{\"choices\": [], \"usage\": {\"prompt_tokens\": 5, \"completion_tokens\": 2}}",
            "{\n  \"choices\": [],\n  \"usage\" : {\n    \"prompt_tokens\": 5,\n    \"completion_tokens\": 2\n  }\n}",
        ] {
            let t = response(RouteType::Chat, Bytes::from(body)).unwrap();
            assert_eq!(t.usage, Usage::new(5, 2), "{body}");
        }
    }

    #[test]
    fn stream_without_done_gets_one_only_after_a_finish_reason() {
        let finished = b"data: {\"choices\":[{\"finish_reason\": \"stop\"}]}\n\n";
        let got = run_stream(&mut PassthroughStream::default(), finished, 3);
        assert_eq!(
            got,
            "data: {\"choices\":[{\"finish_reason\": \"stop\"}]}\n\ndata: [DONE]\n\n"
        );
        let cut = b"data: {\"choices\":[{\"finish_reason\":null}]}\n\n";
        let (got, err) = run_truncated(&mut PassthroughStream::default(), cut, 3);
        assert_eq!(got, "data: {\"choices\":[{\"finish_reason\":null}]}\n\n");
        assert_eq!(err, crate::providers::stream::TRUNCATED);
    }

    #[test]
    fn an_event_that_never_ends_is_refused_before_memory_grows_without_bound() {
        let mut s = PassthroughStream::default();
        let mut out = BytesMut::new();
        s.feed(b"data: {\"x\":\"", &mut out).unwrap();
        let chunk = vec![b'a'; 1024 * 1024];
        let err = (0..32)
            .find_map(|_| s.feed(&chunk, &mut out).err())
            .expect("refused after 16 MiB");
        assert!(err.0.contains("larger than"), "{err}");
    }

    #[test]
    fn stream_error_event_stops_the_stream() {
        let mut s = PassthroughStream::default();
        let mut out = BytesMut::new();
        let err = s
            .feed(
                b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n",
                &mut out,
            )
            .unwrap_err();
        assert_eq!(err.0, "overloaded");
    }

    /// What a pass-through stream writes for `input` read in pieces cut at `cuts`: the bytes,
    /// the error that ended it (if any) and the usage it counted.
    fn relay_in_reads(input: &[u8], cuts: &[usize]) -> (Vec<u8>, Option<String>, Usage) {
        let mut stream = PassthroughStream::default();
        let mut out = BytesMut::new();
        let mut from = 0;
        let mut result = Ok(());
        for end in cuts.iter().copied().chain([input.len()]) {
            if end <= from {
                continue;
            }
            result = stream.feed(&input[from..end], &mut out);
            from = end;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = stream.finish(&mut out);
        }
        (out.to_vec(), result.err().map(|e| e.0), stream.usage())
    }

    const EVENTS: &[&str] = &[
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
        "data: {\"error\":{\"message\":\"boom\"}}\n\n",
        "data: [DONE]\n\n",
        ": keep-alive\n\n",
        "event: ping\ndata: {\"x\":1}\n\n",
        "data: {\"a\":1}\r\n\r\n",
        "data:{\"no_space\":1}\n\n",
        "data: \n\n",
        "data: {\"text\":\"d\u{e9}j\u{e0} vu\"}\n\n",
        "data: first\ndata: second\n\n",
        "id: 7\ndata: {\"b\":2}\n\n",
        "\u{feff}data: {\"bom\":1}\n\n",
    ];

    proptest::proptest! {
        /// Whole reads take the pass-through fast path, one-byte reads never do: both write
        /// the same bytes, end the same way and count the same usage, whatever the events.
        #[test]
        fn whole_reads_relay_as_the_decoder_frames_them(
            picks in proptest::collection::vec(0..EVENTS.len(), 1..10),
            cuts in proptest::collection::vec(0usize..2000, 0..4),
        ) {
            let input: String = picks.iter().map(|&i| EVENTS[i]).collect();
            let input = input.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            let bytewise: Vec<usize> = (1..input.len()).collect();
            let (out, error, usage) = relay_in_reads(input, &cuts);
            let (out_1, error_1, usage_1) = relay_in_reads(input, &bytewise);
            proptest::prop_assert_eq!(out, out_1);
            proptest::prop_assert_eq!(error, error_1);
            proptest::prop_assert_eq!(usage, usage_1);
        }
    }

    /// A first read that took the fast path started the stream: a BOM at the start of the next
    /// read is data, as when the decoder reads every byte.
    #[test]
    fn a_bom_after_a_passed_first_read_is_data() {
        let bom_event = EVENTS.iter().find(|e| e.starts_with('\u{feff}')).unwrap();
        let input = [EVENTS[0], bom_event].concat();
        let bytewise: Vec<usize> = (1..input.len()).collect();
        let passed = relay_in_reads(input.as_bytes(), &[EVENTS[0].len()]);
        assert_eq!(passed, relay_in_reads(input.as_bytes(), &bytewise));
        assert_eq!(passed.0, EVENTS[0].as_bytes());
    }

    /// A read of plain events (content, usage, finish and `[DONE]`), the stream's first
    /// included, takes the fast path: its bytes go out untouched and are still inspected.
    #[test]
    fn plain_reads_skip_the_decoder() {
        let mut stream = PassthroughStream::default();
        assert!(stream.decoder.is_between_events());
        let mut out = BytesMut::new();
        let read = [EVENTS[0], EVENTS[2], EVENTS[1], EVENTS[4]].concat();
        assert!(stream.pass_whole(read.as_bytes(), &mut out).unwrap());
        assert_eq!(&out[..], read.as_bytes());
        assert!(stream.done_sent && stream.finish_seen);
        assert_eq!(stream.usage(), Usage::new(3, 4));
    }
}
