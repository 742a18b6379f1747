//! Test helpers every provider's tests share: fixture loading, a request context, and the
//! ways of feeding a stream translator (split in two, in fixed-size pieces, at random cuts).

use bytes::BytesMut;
use serde_json::Value;

use super::{RequestCtx, StreamTranslate};
use crate::config::ai_proxy::{AiProxyConfig, ModelOptions, RouteType};

/// A file under `tests/fixtures/`, as bytes (Bedrock's event streams are binary).
pub fn fixture_bytes(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

pub fn fixture(path: &str) -> String {
    String::from_utf8(fixture_bytes(path)).unwrap()
}

pub fn fixture_json(path: &str) -> Value {
    serde_json::from_str(&fixture(path)).unwrap()
}

/// A plugin config fixture (`<provider>/<case>/config.json`).
pub fn fixture_config(path: &str) -> AiProxyConfig {
    serde_json::from_str(&fixture(path)).unwrap()
}

pub fn ctx<'a>(
    route_type: RouteType,
    model: &'a str,
    stream: bool,
    options: &'a ModelOptions,
) -> RequestCtx<'a> {
    RequestCtx {
        route_type,
        model,
        stream,
        include_usage: false,
        options,
        client_query: "",
        request_id: "test",
        created: 1_700_000_000,
    }
}

/// Feeds `input` split at `split` and returns the client bytes.
pub fn run_stream(t: &mut dyn StreamTranslate, input: &[u8], split: usize) -> String {
    let mut out = BytesMut::new();
    t.feed(&input[..split], &mut out).unwrap();
    t.feed(&input[split..], &mut out).unwrap();
    t.finish(&mut out).unwrap();
    String::from_utf8(out.to_vec()).unwrap()
}

/// Feeds a stream that ends before the provider's end marker: returns what the client got and
/// the error that must end it (the stream actor then writes an error event and `[DONE]`).
pub fn run_truncated(t: &mut dyn StreamTranslate, input: &[u8], split: usize) -> (String, String) {
    let mut out = BytesMut::new();
    t.feed(&input[..split], &mut out).unwrap();
    t.feed(&input[split..], &mut out).unwrap();
    let err = t.finish(&mut out).unwrap_err();
    (String::from_utf8(out.to_vec()).unwrap(), err.0)
}

/// Feeds `input` to a fresh translator from `new` split at every byte, and hands `check` the
/// client's payloads (see [`sse_payloads`]), the split and the translator (for its usage).
pub fn at_every_split<T: StreamTranslate>(
    input: &str,
    mut new: impl FnMut() -> T,
    mut check: impl FnMut(&[Value], usize, &T),
) {
    for split in 0..=input.len() {
        let mut s = new();
        let got = sse_payloads(&run_stream(&mut s, input.as_bytes(), split));
        check(&got, split, &s);
    }
}

/// Feeds `input` in pieces of `size` bytes (1: byte by byte) and returns the client bytes.
pub fn run_pieces(t: &mut dyn StreamTranslate, input: &[u8], size: usize) -> String {
    let mut out = BytesMut::new();
    for piece in input.chunks(size) {
        t.feed(piece, &mut out).unwrap();
    }
    t.finish(&mut out).unwrap();
    String::from_utf8(out.to_vec()).unwrap()
}

/// Feeds arbitrary `data` cut at the (clamped, sorted) `cuts`, ignoring errors: for property
/// tests that only ask that nothing panics.
pub fn feed_at_cuts(t: &mut dyn StreamTranslate, data: &[u8], cuts: &[usize]) {
    let mut out = BytesMut::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|&x| x.min(data.len())).collect();
    cuts.sort_unstable();
    let mut at = 0;
    for cut in cuts.into_iter().chain([data.len()]) {
        let _ = t.feed(&data[at..cut], &mut out);
        at = cut;
    }
    let _ = t.finish(&mut out);
}

/// The JSON payloads of an SSE text (`[DONE]` as a string).
pub fn sse_payloads(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data:"))
        .map(|d| {
            let d = d.trim();
            if d == "[DONE]" {
                Value::String(d.into())
            } else {
                serde_json::from_str(d).unwrap()
            }
        })
        .collect()
}

/// The shared completions-stream fixtures' text ("Hi", " Bob", cut by the token limit) as the
/// client must see it: two `text_completion` chunks, a `length` finish, `[DONE]`.
pub fn assert_hi_bob_completion(got: &[Value], split: usize) {
    assert_eq!(got.len(), 4, "split {split}");
    assert_eq!(got[0]["object"], "text_completion");
    assert_eq!(got[0]["choices"][0]["text"], "Hi");
    assert_eq!(got[1]["choices"][0]["text"], " Bob");
    assert_eq!(got[2]["choices"][0]["finish_reason"], "length");
    assert_eq!(got[3], "[DONE]");
}

/// The shared tool-call stream fixtures' call (`add` with `{"a":2}`, id `call_test_0`) as the
/// client must see it from the call's first chunk: its start, its arguments, a `tool_calls`
/// finish, `[DONE]`.
pub fn assert_add_tool_call(got: &[Value], split: usize) {
    assert_eq!(got.len(), 4, "split {split}");
    let start = &got[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(start["id"], "call_test_0");
    assert_eq!(start["type"], "function");
    assert_eq!(start["function"]["name"], "add");
    let args = &got[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"];
    assert_eq!(args, r#"{"a":2}"#);
    assert_eq!(got[2]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(got[3], "[DONE]");
}
