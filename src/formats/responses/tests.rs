//! A Responses request with reasoning through the Anthropic driver and back, against
//! Anthropic's documented extended-thinking answers (tests/fixtures/responses/).

use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};

use super::request::{echo, to_chat};
use super::response::{from_chat, Meta};
use super::stream::ResponsesEvents;
use crate::codec::sse::SseDecoder;
use crate::config::ai_proxy::{ModelOptions, RouteType};
use crate::providers::anthropic::Anthropic;
use crate::providers::testkit::{ctx, fixture, fixture_config, fixture_json};
use crate::providers::{StreamTranslate, Translate};

const DIR: &str = "responses/anthropic-thinking";
const MODEL: &str = "claude-sonnet-4-5";

fn client() -> Map<String, Value> {
    fixture_json(&format!("{DIR}/client-request.json"))
        .as_object()
        .unwrap()
        .clone()
}

fn driver() -> (Anthropic, ModelOptions) {
    let config = fixture_config("anthropic/chat/config.json");
    let options = config.model.options.clone().unwrap();
    (Anthropic::from_config(&config).unwrap(), options)
}

fn meta<'a>(echo: &'a Map<String, Value>) -> Meta<'a> {
    Meta {
        request_id: "r1",
        model: MODEL,
        created: 7,
        echo,
    }
}

/// Anthropic's answer through the driver, as a Response object.
fn answer(echo: &Map<String, Value>) -> Value {
    let (driver, options) = driver();
    let raw = fixture(&format!("{DIR}/upstream-response.json"));
    let chat = driver
        .response(
            &ctx(RouteType::Chat, MODEL, false, &options),
            Bytes::from(raw),
        )
        .unwrap();
    serde_json::from_slice(&from_chat(&chat.body, &meta(echo)).unwrap()).unwrap()
}

/// A translated stream's events: name and data.
pub(super) fn events_of(out: &[u8]) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    SseDecoder::new().feed(out, &mut events);
    events
        .into_iter()
        .map(|e| (e.event.unwrap(), serde_json::from_str(&e.data).unwrap()))
        .collect()
}

fn assert_echoed(response: &Value) {
    assert_eq!(response["instructions"], "Answer with the number only.");
    assert_eq!(response["reasoning"]["effort"], "medium");
    assert_eq!(response["metadata"], json!({"team": "math"}));
    assert_eq!(response["tools"][0]["name"], "gcd");
    assert_eq!(response["tool_choice"], "auto");
    assert_eq!(response["temperature"], 1);
    assert_eq!(response["top_p"], 1.0);
    // The route configures max_tokens: 64, which is what the provider was asked for.
    assert_eq!(response["max_output_tokens"], 64);
    assert_eq!(response["previous_response_id"], Value::Null);
    assert_eq!(response["parallel_tool_calls"], true);
    assert_eq!(response["text"]["format"]["type"], "text");
    assert_eq!(response["store"], false);
}

#[test]
fn reasoning_effort_reaches_anthropic_as_thinking() {
    let (driver, options) = driver();
    let chat = to_chat(&client(), "anthropic").unwrap();
    let upstream = driver
        .request(&ctx(RouteType::Chat, MODEL, false, &options), chat)
        .unwrap();
    assert_eq!(upstream["thinking"]["type"], "enabled");
    assert_eq!(upstream["system"], "Answer with the number only.");
}

#[test]
fn thinking_becomes_a_reasoning_item_and_the_request_is_echoed() {
    let (_, options) = driver();
    let r = answer(&echo(&client(), &options));
    assert_eq!(r["model"], "claude-sonnet-4-5-20250929");
    let reasoning = &r["output"][0];
    assert_eq!(reasoning["type"], "reasoning");
    assert_eq!(reasoning["id"], "rs_r1_0");
    assert!(reasoning["summary"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("I need the GCD"));
    let blocks: Value =
        serde_json::from_str(reasoning["encrypted_content"].as_str().unwrap()).unwrap();
    assert_eq!(
        blocks[0]["signature"],
        "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL"
    );
    assert_eq!(r["output"][1]["content"][0]["text"], "21");
    assert_echoed(&r);
}

#[test]
fn a_reasoning_item_sent_back_keeps_its_signature_for_the_next_turn() {
    let (driver, options) = driver();
    let r = answer(&Map::new());
    // The client's next turn: the previous output items, a call and its result.
    let mut input = vec![json!({"role": "user", "content": "gcd?"})];
    input.extend(r["output"].as_array().unwrap().iter().cloned());
    input.push(
        json!({"type": "function_call", "call_id": "toolu_1", "name": "gcd", "arguments": "{}"}),
    );
    input.push(json!({"type": "function_call_output", "call_id": "toolu_1", "output": "21"}));
    let mut body = client();
    body.insert("input".into(), Value::Array(input));
    let chat = to_chat(&body, "anthropic").unwrap();
    let messages = chat["messages"].as_array().unwrap();
    // system, user, one assistant turn (reasoning + text + call), the tool result.
    assert_eq!(messages.len(), 4, "{messages:?}");
    let turn = &messages[2];
    assert_eq!(turn["content"], "21");
    assert_eq!(turn["tool_calls"][0]["id"], "toolu_1");
    assert!(turn["reasoning_content"]
        .as_str()
        .unwrap()
        .starts_with("I need"));
    let upstream = driver
        .request(&ctx(RouteType::Chat, MODEL, false, &options), chat)
        .unwrap();
    let blocks = &upstream["messages"][1]["content"];
    assert_eq!(blocks[0]["type"], "thinking", "{upstream}");
    assert_eq!(
        blocks[0]["signature"],
        "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvLEczmEsUjavL"
    );
}

fn stream_events(split: usize) -> Vec<(String, Value)> {
    let (driver, options) = driver();
    let echo = echo(&client(), &options);
    // to_chat asks for usage on every stream.
    let mut c = ctx(RouteType::Chat, MODEL, true, &options);
    c.include_usage = true;
    let inner = driver.stream(&c);
    let mut s = ResponsesEvents::new(inner, meta(&echo));
    let raw = fixture(&format!("{DIR}/upstream-stream.txt"));
    let mut out = BytesMut::new();
    s.feed(&raw.as_bytes()[..split], &mut out).unwrap();
    s.feed(&raw.as_bytes()[split..], &mut out).unwrap();
    s.finish(&mut out).unwrap();
    events_of(&out)
}

#[test]
fn streamed_thinking_becomes_reasoning_summary_events() {
    let raw = fixture(&format!("{DIR}/upstream-stream.txt"));
    let events = stream_events(raw.len());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[2].1["item"]["type"], "reasoning");
    assert_eq!(events[4].1["item_id"], "rs_r1_0");
    assert_eq!(events[4].1["summary_index"], 0);
    let text = "I need the GCD of 1071 and 462. 1071 = 2 x 462 + 147; 462 = 3 x 147 + 21; 147 = 7 x 21. So 21.";
    assert_eq!(events[6].1["text"], text);
    let item = &events[8].1["item"];
    assert_eq!(item["summary"][0]["text"], text);
    let blocks: Value = serde_json::from_str(item["encrypted_content"].as_str().unwrap()).unwrap();
    assert_eq!(
        blocks,
        json!([{"type": "thinking", "thinking": text,
                "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}])
    );
    assert_eq!(events[9].1["output_index"], 1);
    let done = &events[15].1["response"];
    assert_eq!(done["output"][0]["type"], "reasoning");
    assert_eq!(done["output"][1]["content"][0]["text"], "21");
    assert_eq!(done["usage"]["output_tokens"], 86);
    assert_echoed(done);
    assert_echoed(&events[0].1["response"]);
}

#[test]
fn a_thinking_stream_split_anywhere_gives_the_same_events() {
    let raw = fixture(&format!("{DIR}/upstream-stream.txt"));
    let whole = stream_events(raw.len());
    for cut in (0..raw.len()).step_by(7) {
        assert_eq!(stream_events(cut), whole, "cut at {cut}");
    }
}
