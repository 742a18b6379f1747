use super::*;
use crate::config::ai_proxy::ModelOptions;
use crate::providers::testkit::{
    ctx, fixture, fixture_config, fixture_json, run_pieces, run_stream, run_truncated, sse_payloads,
};
use actix_web::http::StatusCode;
use proptest::prelude::*;

const MODEL: &str = "claude-3-5-sonnet-20241022";

fn config() -> AiProxyConfig {
    fixture_config("anthropic/chat/config.json")
}

fn driver() -> Anthropic {
    Anthropic::from_config(&config()).unwrap()
}

fn options() -> ModelOptions {
    config().model.options.unwrap()
}

fn body(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn translate(route: RouteType, stream: bool, client: Value) -> Value {
    let options = options();
    let c = ctx(route, MODEL, stream, &options);
    driver().request(&c, body(client)).unwrap()
}

fn chat(client: Value) -> Value {
    translate(RouteType::Chat, false, client)
}

fn respond(route: RouteType, raw: &str) -> Result<(Value, Usage), String> {
    let options = options();
    let c = ctx(route, MODEL, false, &options);
    let t = driver().response(&c, Bytes::from(raw.to_string()))?;
    Ok((serde_json::from_slice(&t.body).unwrap(), t.usage))
}

/// A chat fixture case's translated response; its message must be the expected one.
fn chat_case(case: &str) -> (Value, Usage, Value) {
    let raw = fixture(&format!("anthropic/{case}/upstream-response.json"));
    let (v, usage) = respond(RouteType::Chat, &raw).unwrap();
    let expected = fixture_json(&format!("anthropic/{case}/expected-response.json"));
    assert_eq!(
        v["choices"][0]["message"],
        expected["choices"][0]["message"]
    );
    (v, usage, expected)
}

/// Every split point, and byte by byte, must give the same client stream.
fn stream_all_ways(route: RouteType, include_usage: bool, input: &str) -> (Vec<Value>, Usage) {
    let options = options();
    let mut c = ctx(route, MODEL, true, &options);
    c.include_usage = include_usage;
    let mut s = driver().stream(&c);
    let whole = run_stream(s.as_mut(), input.as_bytes(), 0);
    let usage = s.usage();
    for split in 0..=input.len() {
        let mut s = driver().stream(&c);
        assert_eq!(
            run_stream(s.as_mut(), input.as_bytes(), split),
            whole,
            "split {split}"
        );
        assert_eq!(s.usage(), usage);
    }
    let mut s = driver().stream(&c);
    assert_eq!(
        run_pieces(s.as_mut(), input.as_bytes(), 1),
        whole,
        "byte by byte"
    );
    (sse_payloads(&whole), usage)
}

// --- config, URL, headers ------------------------------------------------------------------

#[test]
fn config_without_anthropic_version_is_rejected_with_kongs_text() {
    let mut config = config();
    config.model.options.as_mut().unwrap().anthropic_version = None;
    let err = Anthropic::from_config(&config).err().unwrap().to_string();
    assert_eq!(
        err,
        "must set 'model.options.anthropic_version' for anthropic provider"
    );
}

#[test]
fn chat_and_completions_are_supported_but_not_embeddings() {
    let d = driver();
    assert!(d.supports(RouteType::Chat));
    assert!(d.supports(RouteType::Completions));
    assert!(!d.supports(RouteType::Embeddings));
}

#[test]
fn urls_default_to_messages_and_complete_and_upstream_url_is_used_as_is() {
    let mut options = options();
    let d = driver();
    let c = ctx(RouteType::Chat, MODEL, false, &options);
    assert_eq!(
        d.url(&c).unwrap(),
        "https://api.anthropic.com:443/v1/messages"
    );
    let c = ctx(RouteType::Completions, MODEL, false, &options);
    assert_eq!(
        d.url(&c).unwrap(),
        "https://api.anthropic.com:443/v1/complete"
    );
    options.upstream_path = Some("/custom/messages".into());
    let c = ctx(RouteType::Chat, MODEL, false, &options);
    assert_eq!(
        d.url(&c).unwrap(),
        "https://api.anthropic.com:443/custom/messages"
    );
    options.upstream_url = Some("http://mock:8080/anthropic/v1/messages".into());
    let c = ctx(RouteType::Chat, "a/../../b", false, &options);
    assert_eq!(d.url(&c).unwrap(), "http://mock:8080/anthropic/v1/messages");
}

#[test]
fn anthropic_version_header_is_set_from_the_options() {
    let mut options = options();
    let d = driver();
    let mut headers = Vec::new();
    d.headers(&ctx(RouteType::Chat, MODEL, false, &options), &mut headers);
    assert_eq!(
        headers,
        vec![(VERSION_HEADER, HeaderValue::from_static("2023-06-01"))]
    );
    // A templated version is resolved per request.
    options.anthropic_version = Some("2024-01-01".into());
    let mut headers = Vec::new();
    d.headers(&ctx(RouteType::Chat, MODEL, false, &options), &mut headers);
    assert_eq!(headers[0].1, "2024-01-01");
}

// --- requests ------------------------------------------------------------------------------

#[test]
fn chat_request_matches_fixture() {
    let out = chat(fixture_json("anthropic/chat/client-request.json"));
    let mut expected = fixture_json("anthropic/chat/upstream-request.json");
    // Deviation from Kong 3.9, which drops `top_p` and `stop`: top_p is forwarded; the only
    // stop sequence ("\n\n") is whitespace, which Anthropic rejects, so it is left out.
    expected["top_p"] = json!(0.9);
    assert_eq!(out, expected);
}

#[test]
fn tools_request_matches_fixture() {
    let out = chat(fixture_json("anthropic/tools/client-request.json"));
    assert_eq!(out, fixture_json("anthropic/tools/upstream-request.json"));
}

/// kong-tests.md 03-anthropic: tool_choice conversion sent upstream.
#[test]
fn tool_choice_mapping_matches_fixture() {
    let mapping = fixture_json("anthropic/tools/tool_choice-mapping.json");
    for (choice, expected) in mapping.as_object().unwrap() {
        let choice: Value =
            serde_json::from_str(choice).unwrap_or_else(|_| Value::String(choice.clone()));
        let mut client = fixture_json("anthropic/tools/client-request.json");
        client["tool_choice"] = choice.clone();
        assert_eq!(&chat(client)["tool_choice"], expected, "{choice}");
    }
    let mut client = fixture_json("anthropic/tools/client-request.json");
    client["tool_choice"] = json!("sometimes");
    assert!(chat(client).get("tool_choice").is_none());
}

#[test]
fn parallel_tool_calls_false_disables_parallel_tool_use() {
    let mut client = fixture_json("anthropic/tools/client-request.json");
    client["parallel_tool_calls"] = json!(false);
    assert_eq!(
        chat(client.clone())["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    client.as_object_mut().unwrap().remove("tool_choice");
    assert_eq!(
        chat(client)["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
}

#[test]
fn images_systems_and_merged_turns_match_fixture() {
    let out = translate(
        RouteType::Chat,
        true,
        fixture_json("anthropic/images/client-request.json"),
    );
    assert_eq!(out, fixture_json("anthropic/images/upstream-request.json"));
}

#[test]
fn tool_results_and_following_user_text_become_one_user_turn() {
    let out = chat(json!({"messages": [
        {"role": "user", "content": "Weather in Paris and Lyon?"},
        {"role": "assistant", "content": "Checking both.", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "w", "arguments": "{\"c\":\"Paris\"}"}},
            {"id": "t2", "type": "function", "function": {"name": "now", "arguments": ""}}
        ]},
        {"role": "tool", "tool_call_id": "t1", "content": "18C"},
        {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "noon"}]},
        {"role": "user", "content": "Thanks"}
    ]}));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris and Lyon?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "t1", "name": "w", "input": {"c": "Paris"}},
                {"type": "tool_use", "id": "t2", "name": "now", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "noon"}]},
                {"type": "text", "text": "Thanks"}
            ]}
        ])
    );
}

#[test]
fn sampling_knobs_stop_user_and_max_completion_tokens_are_forwarded() {
    let out = chat(json!({
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 77, "temperature": 0.1, "top_p": 0.5, "top_k": 3,
        "stop": "STOP", "user": "u1", "n": 2, "seed": 7
    }));
    assert_eq!(
        out,
        json!({
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 77, "temperature": 0.1, "top_p": 0.5, "top_k": 3,
            "stop_sequences": ["STOP"], "metadata": {"user_id": "u1"}, "stream": false
        })
    );
}

#[test]
fn max_tokens_defaults_when_neither_client_nor_config_sets_it() {
    let out = chat(json!({"messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
    let out = translate(RouteType::Completions, false, json!({"prompt": "hi"}));
    assert_eq!(out["max_tokens_to_sample"], DEFAULT_MAX_TOKENS);
}

#[test]
fn untranslatable_requests_are_400s() {
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, false, &options);
    let cases = [
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
        json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
        json!({"messages": "not a list"}),
    ];
    for case in cases {
        match driver().request(&c, body(case.clone())) {
            Err(GatewayError::BadRequest(m)) => {
                assert!(
                    m.starts_with("error transforming to anthropic://llm/v1/chat: "),
                    "{m}"
                )
            }
            other => panic!("{case}: {other:?}"),
        }
    }
}

#[test]
fn completions_request_matches_fixture_with_the_human_turn_anthropic_requires() {
    let client = fixture_json("anthropic/completions/client-request.json");
    let options = options();
    let c = ctx(RouteType::Completions, "claude-2.1", false, &options);
    let out = driver().request(&c, body(client)).unwrap();
    let mut expected = fixture_json("anthropic/completions/upstream-request.json");
    // Deviation from Kong: `/v1/complete` rejects a prompt that does not start with
    // "\n\nHuman:", which Kong's "Human: ..." does.
    expected["prompt"] = json!("\n\nHuman: Say hi to Bob.\n\nAssistant:");
    assert_eq!(out, expected);
    let pre = "\n\nHuman: hi\n\nAssistant:";
    let out = translate(RouteType::Completions, true, json!({"prompt": pre}));
    assert_eq!(out["prompt"], pre);
    assert_eq!(out["stream"], true);
}

// --- responses -----------------------------------------------------------------------------

#[test]
fn chat_response_is_openai_shaped() {
    let (v, usage, expected) = chat_case("chat");
    // OpenAI-correct deviation from Kong 3.9's raw `end_turn`.
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"], expected["usage"]);
    assert_eq!(usage, Usage::new(25, 4));
    assert_eq!(v["model"], expected["model"]);
    assert_eq!(v["object"], "chat.completion");
    // Kong 3.9 has neither; the policy wants both.
    assert_eq!(v["id"], "msg_01ABC");
    assert_eq!(v["created"], 1_700_000_000);
}

#[test]
fn tool_use_response_becomes_tool_calls() {
    let (v, usage, _) = chat_case("tools");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(usage, Usage::new(50, 30));
}

#[test]
fn tool_only_answer_has_null_content() {
    let raw = r#"{"id":"m","model":"c","content":[{"type":"thinking","thinking":"hm"},{"type":"tool_use","id":"","name":"f","input":{}}],"stop_reason":"tool_use"}"#;
    let (v, _) = respond(RouteType::Chat, raw).unwrap();
    let message = &v["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"][0]["id"], "call_test_0");
    assert_eq!(message["tool_calls"][0]["function"]["arguments"], "{}");
}

#[test]
fn text_blocks_are_joined() {
    let raw = r#"{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"stop_reason":"end_turn"}"#;
    let (v, _) = respond(RouteType::Chat, raw).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "ab");
    // No upstream id or model: the request's.
    assert_eq!(v["id"], "chatcmpl-test");
    assert_eq!(v["model"], MODEL);
}

/// kong-tests.md 03-anthropic: upstream without usage. Policy deviation: a zero usage
/// object instead of Kong's string "no usage data returned from upstream".
#[test]
fn missing_usage_is_a_zero_usage_object() {
    let (v, usage, expected) = chat_case("no-usage");
    assert_eq!(expected["usage"], "no usage data returned from upstream");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
    );
    assert_eq!(usage, Usage::default());
}

/// kong-tests.md 03-anthropic: malformed usage still answers 200 (zeros, not Kong's `{}`).
#[test]
fn malformed_usage_is_zeros_and_cache_tokens_count_as_prompt() {
    let raw = r#"{"content":[],"usage":"lots"}"#;
    assert_eq!(respond(RouteType::Chat, raw).unwrap().1, Usage::default());
    let raw = r#"{"content":[],"usage":{"input_tokens":"x","output_tokens":5}}"#;
    assert_eq!(respond(RouteType::Chat, raw).unwrap().1, Usage::new(0, 5));
    let raw = r#"{"content":[],"usage":{"input_tokens":3,"cache_creation_input_tokens":4,"cache_read_input_tokens":5,"output_tokens":6}}"#;
    assert_eq!(
        respond(RouteType::Chat, raw).unwrap().1,
        Usage::new(12, 6).with_cache(5, 4)
    );
}

/// kong-tests.md 03-anthropic: upstream 200 without `content`.
#[test]
fn missing_content_fails_with_kongs_reason() {
    let err = respond(RouteType::Chat, r#"{"model":"m","stop_reason":"end_turn"}"#).unwrap_err();
    assert_eq!(err, "'content' not in anthropic://llm/v1/chat response");
    let err = respond(RouteType::Chat, "<html>").unwrap_err();
    assert_eq!(err, "failed to decode anthropic://llm/v1/chat response");
}

#[test]
fn stop_reasons_map_to_openai_finish_reasons() {
    for (reason, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("something_new", "stop"),
    ] {
        let raw = format!(r#"{{"content":[],"stop_reason":"{reason}"}}"#);
        let (v, _) = respond(RouteType::Chat, &raw).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], finish, "{reason}");
    }
    let (v, _) = respond(RouteType::Chat, r#"{"content":[],"stop_reason":null}"#).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[test]
fn completions_response_is_text_completion() {
    let (v, usage) = respond(
        RouteType::Completions,
        &fixture("anthropic/completions/upstream-response.json"),
    )
    .unwrap();
    let expected = fixture_json("anthropic/completions/expected-response.json");
    assert_eq!(v["choices"][0]["text"], expected["choices"][0]["text"]);
    // OpenAI-correct deviation from Kong 3.9's raw `stop_sequence`.
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["model"], "claude-2.1");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["id"], "compl_1");
    assert_eq!(v["usage"]["total_tokens"], 0);
    assert_eq!(usage, Usage::default());
    let err = respond(RouteType::Completions, r#"{"stop_reason":"max_tokens"}"#).unwrap_err();
    assert_eq!(err, "'completion' not in anthropic://llm/v1/chat response");
}

/// kong-tests.md 03-anthropic: 401 passes through with `error.type: authentication_error`.
#[test]
fn error_bodies_pass_through() {
    let raw = Bytes::from(fixture("anthropic/errors/upstream-401.json"));
    assert_eq!(driver().error(StatusCode::UNAUTHORIZED, raw.clone()), raw);
    let html = driver().error(
        StatusCode::INTERNAL_SERVER_ERROR,
        Bytes::from_static(b"<h1>down</h1>"),
    );
    let v: Value = serde_json::from_slice(&html).unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("<h1>down</h1>"));
}

// --- streams -------------------------------------------------------------------------------

#[test]
fn chat_stream_at_every_split_gives_openai_chunks() {
    let input = fixture("anthropic/chat-stream/upstream-stream.txt");
    let (got, usage) = stream_all_ways(RouteType::Chat, false, &input);
    let kong = sse_payloads(&fixture("anthropic/chat-stream/expected-client-stream.txt"));
    // Kong's opening chunk, its two text chunks (Kong's empty content_block_start chunk has no
    // OpenAI meaning and is not sent), then the OpenAI-correct finish chunk and [DONE].
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(
        got[0]["choices"][0]["delta"],
        kong[0]["choices"][0]["delta"]
    );
    assert_eq!(
        got[1]["choices"][0]["delta"],
        kong[2]["choices"][0]["delta"]
    );
    assert_eq!(
        got[2]["choices"][0]["delta"],
        kong[3]["choices"][0]["delta"]
    );
    assert_eq!(got[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(got[3]["choices"][0]["delta"], json!({}));
    assert_eq!(got[4], "[DONE]");
    for chunk in &got[..4] {
        assert_eq!(chunk["id"], "msg_s1");
        assert_eq!(chunk["model"], MODEL);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["created"], 1_700_000_000);
    }
    // message_delta's output count is cumulative: 3, not Kong's 1 + 3.
    assert_eq!(usage, Usage::new(25, 3));
}

#[test]
fn chat_stream_usage_chunk_when_asked() {
    let input = fixture("anthropic/chat-stream/upstream-stream.txt");
    let (got, _) = stream_all_ways(RouteType::Chat, true, &input);
    assert_eq!(got.len(), 6);
    assert_eq!(got[4]["choices"], json!([]));
    assert_eq!(
        got[4]["usage"],
        json!({"prompt_tokens": 25, "completion_tokens": 3, "total_tokens": 28})
    );
    assert_eq!(got[5], "[DONE]");
}

#[test]
fn tool_calls_are_streamed_with_id_name_and_arguments() {
    let input = fixture("anthropic/chat-stream-tools/upstream-stream.txt");
    let (got, usage) = stream_all_ways(RouteType::Chat, false, &input);
    let deltas: Vec<&Value> = got.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(got.len(), 9, "{got:?}");
    assert_eq!(*deltas[0], json!({"role": "assistant", "content": ""}));
    assert_eq!(deltas[1]["content"], "Let me check.");
    assert_eq!(
        deltas[2]["tool_calls"],
        json!([{"index": 0, "id": "toolu_01T1x", "type": "function", "function": {"name": "get_weather", "arguments": ""}}])
    );
    assert_eq!(
        deltas[3]["tool_calls"][0]["function"]["arguments"],
        "{\"city\": \"Par"
    );
    assert_eq!(deltas[4]["tool_calls"][0]["function"]["arguments"], "is\"}");
    assert_eq!(deltas[4]["tool_calls"][0]["index"], 0);
    assert_eq!(deltas[5]["tool_calls"][0]["id"], "toolu_01T2y");
    assert_eq!(deltas[5]["tool_calls"][0]["index"], 1);
    assert_eq!(
        deltas[6]["tool_calls"],
        json!([{"index": 1, "function": {"arguments": "{}"}}])
    );
    assert_eq!(got[7]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(got[8], "[DONE]");
    assert_eq!(usage, Usage::new(482, 89).with_cache(10, 0));
}

#[test]
fn completions_stream_gives_text_completion_chunks() {
    let input = fixture("anthropic/completions-stream/upstream-stream.txt");
    let (got, usage) = stream_all_ways(RouteType::Completions, false, &input);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0]["object"], "text_completion");
    assert_eq!(got[0]["id"], "cmpl-test");
    assert_eq!(got[0]["model"], "claude-2.0");
    assert_eq!(got[0]["choices"][0]["text"], " Hello");
    assert_eq!(got[1]["choices"][0]["text"], "!");
    assert_eq!(got[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(got[3], "[DONE]");
    assert_eq!(usage, Usage::default());
}

#[test]
fn completions_stream_takes_the_upstream_id_when_it_has_one() {
    let options = options();
    let c = ctx(RouteType::Completions, "claude-2.1", true, &options);
    let mut s = driver().stream(&c);
    let input = "event: completion\ndata: {\"type\":\"completion\",\"id\":\"compl_9\",\"completion\":\"Hi\",\"stop_reason\":\"max_tokens\"}\n\n";
    let got = sse_payloads(&run_stream(s.as_mut(), input.as_bytes(), 5));
    assert_eq!(got[0]["id"], "compl_9");
    assert_eq!(got[0]["choices"][0]["text"], "Hi");
    assert_eq!(got[1]["id"], "compl_9");
    assert_eq!(got[1]["choices"][0]["finish_reason"], "length");
}

#[test]
fn error_event_ends_the_stream_with_its_message() {
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, true, &options);
    let mut s = driver().stream(&c);
    let mut out = BytesMut::new();
    let input = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
                 event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
    let err = s.feed(input.as_bytes(), &mut out).unwrap_err();
    assert_eq!(err, StreamError("Overloaded".into()));
    // What came before the error is still delivered.
    let got = sse_payloads(std::str::from_utf8(&out).unwrap());
    assert_eq!(got[0]["choices"][0]["delta"]["content"], "Hi");
    assert_eq!(got[0]["choices"][0]["delta"]["role"], "assistant");
}

#[test]
fn cut_off_stream_is_a_truncation_error_and_done_is_written_once() {
    let input = fixture("anthropic/chat-stream/upstream-stream.txt");
    let cut = input.find("event: message_delta").unwrap();
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, true, &options);
    let mut s = driver().stream(&c);
    let (text, err) = run_truncated(s.as_mut(), &input.as_bytes()[..cut], 7);
    let got = sse_payloads(&text);
    // The text before the cut was relayed; no invented finish reason, no [DONE].
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got
        .iter()
        .all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert_eq!(err, crate::providers::stream::TRUNCATED);
    // Events after message_stop are ignored; [DONE] is written once.
    let mut s = driver().stream(&c);
    let trailing = format!("{input}event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"late\"}}}}\n\n");
    let text = run_stream(s.as_mut(), trailing.as_bytes(), 3);
    assert_eq!(text.matches("[DONE]").count(), 1);
    assert!(!text.contains("late"));
}

#[test]
fn unknown_events_and_deltas_are_skipped_and_thinking_is_reasoning() {
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, true, &options);
    let mut s = driver().stream(&c);
    let input = "event: future_event\ndata: {\"type\":\"future_event\",\"x\":1}\n\n\
                 event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
                 event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hm\"}}\n\n\
                 event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":5,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n\
                 event: ping\n\n\
                 event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\n\
                 event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let got = sse_payloads(&run_stream(s.as_mut(), input.as_bytes(), 11));
    // The thinking delta as `reasoning_content`, then the framing a stream always has.
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0]["choices"][0]["delta"]["reasoning_content"], "hm");
    assert!(got[0]["choices"][0]["delta"].get("content").is_none());
    assert_eq!(got[1]["choices"][0]["finish_reason"], "stop");
    assert_eq!(got[2], "[DONE]");
}

#[test]
fn undecodable_event_is_a_stream_error() {
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, true, &options);
    let mut s = driver().stream(&c);
    let mut out = BytesMut::new();
    let err = s
        .feed(b"event: message_start\ndata: {nope\n\n", &mut out)
        .unwrap_err();
    assert!(
        err.0.starts_with("undecodable anthropic stream event"),
        "{err}"
    );
}

proptest! {
    #[test]
    fn random_bytes_and_chunkings_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..512),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        completions in any::<bool>(),
    ) {
        let options = options();
        let route = if completions { RouteType::Completions } else { RouteType::Chat };
        let c = ctx(route, MODEL, true, &options);
        let mut s = driver().stream(&c);
        let mut out = BytesMut::new();
        let mut rest: &[u8] = &data;
        for cut in cuts {
            let at = if rest.is_empty() { 0 } else { cut % rest.len() };
            let (head, tail) = rest.split_at(at);
            let _ = s.feed(head, &mut out);
            rest = tail;
        }
        let _ = s.feed(rest, &mut out);
        let _ = s.finish(&mut out);
        let _ = driver().response(&c, Bytes::from(data.clone()));
    }

    #[test]
    fn random_events_in_the_anthropic_shape_never_panic(
        kinds in proptest::collection::vec(0usize..9, 0..20),
        index in 0u64..4,
        text in ".{0,8}",
    ) {
        let names = ["message_start", "content_block_start", "content_block_delta",
            "content_block_stop", "message_delta", "message_stop", "completion", "ping", "error"];
        let mut input = String::new();
        for k in kinds {
            let name = names[k];
            let data = json!({"type": name, "index": index, "message": {"id": text, "usage": {"input_tokens": 1}},
                "content_block": {"type": if k % 2 == 0 { "text" } else { "tool_use" }, "text": text, "id": "", "name": text, "input": {}},
                "delta": {"type": "input_json_delta", "partial_json": text, "stop_reason": "max_tokens"},
                "usage": {"output_tokens": 2}, "completion": text});
            input.push_str(&format!("event: {name}\ndata: {data}\n\n"));
        }
        let options = options();
        let c = ctx(RouteType::Chat, MODEL, true, &options);
        let mut s = driver().stream(&c);
        let mut out = BytesMut::new();
        let _ = s.feed(input.as_bytes(), &mut out);
        let _ = s.finish(&mut out);
    }
}

#[test]
fn thinking_and_signatures_come_back_as_reasoning_and_thinking_blocks() {
    let raw = r#"{"id":"msg_1","model":"c","content":[
        {"type":"thinking","thinking":"Let me add.","signature":"sig-1"},
        {"type":"redacted_thinking","data":"opaque"},
        {"type":"text","text":"14"}],
        "stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":9}}"#;
    let (v, _) = respond(RouteType::Chat, raw).unwrap();
    let m = &v["choices"][0]["message"];
    assert_eq!(m["content"], "14");
    assert_eq!(m["reasoning_content"], "Let me add.");
    assert_eq!(
        m["thinking_blocks"],
        json!([{"type": "thinking", "thinking": "Let me add.", "signature": "sig-1"},
               {"type": "redacted_thinking", "data": "opaque"}])
    );
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, true, &options);
    let mut s = driver().stream(&c);
    let input = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":2}}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hm\"}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"sig-2\"}}\n\n\
        event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\n\
        event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let got = sse_payloads(&run_stream(s.as_mut(), input.as_bytes(), 7));
    let deltas: Vec<&Value> = got.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(deltas[1]["reasoning_content"], "Hm");
    assert_eq!(deltas[2]["thinking_blocks"][0]["signature"], "sig-2");
}

#[test]
fn thinking_blocks_reasoning_effort_and_cache_control_reach_anthropic() {
    let out = chat(json!({
        "model": MODEL, "max_tokens": 1000, "reasoning_effort": "high",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Long rules",
                                            "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [{"type": "text", "text": "add 2 and 12",
                                          "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": null,
             "thinking_blocks": [{"type": "thinking", "thinking": "Use add.", "signature": "sig-1"}],
             "tool_calls": [{"id": "toolu_1", "type": "function",
                             "function": {"name": "add", "arguments": "{\"a\":2}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "14"}]
    }));
    assert_eq!(
        out["thinking"],
        json!({"type": "enabled", "budget_tokens": 16384})
    );
    assert_eq!(out["max_tokens"], 17384, "raised above the budget");
    assert_eq!(
        out["system"],
        json!([{"type": "text", "text": "Long rules", "cache_control": {"type": "ephemeral"}}])
    );
    assert_eq!(
        out["messages"][0]["content"][0]["cache_control"]["type"],
        "ephemeral"
    );
    let assistant = &out["messages"][1]["content"];
    assert_eq!(
        assistant[0],
        json!({"type": "thinking", "thinking": "Use add.", "signature": "sig-1"})
    );
    assert_eq!(assistant[1]["type"], "tool_use");
    // Without cache markers the system prompt stays a string.
    let plain = chat(json!({"model": MODEL, "messages": [
        {"role": "system", "content": "a"}, {"role": "user", "content": "b"}]}));
    assert_eq!(plain["system"], "a");
    assert!(plain.get("thinking").is_none());
}

#[test]
fn cache_control_on_tools_and_tool_results_reaches_anthropic() {
    let cc = json!({"type": "ephemeral", "ttl": "1h"});
    let out = chat(json!({"model": MODEL, "messages": [
        {"role": "user", "content": "add"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "t1",
            "type": "function", "function": {"name": "add", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1",
         "content": [{"type": "text", "text": "14", "cache_control": cc}]}],
        "tools": [{"type": "function", "function": {"name": "add"}, "cache_control": cc}]}));
    assert_eq!(out["tools"][0]["cache_control"], cc);
    assert_eq!(
        out["messages"][2]["content"][0]["content"][0],
        json!({"type": "text", "text": "14", "cache_control": cc})
    );
}

#[test]
fn response_format_is_a_forced_tool_call_whose_input_is_the_content() {
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
    let out = chat(
        json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}}),
    );
    assert_eq!(out["tools"][0]["name"], RESPONSE_FORMAT_TOOL);
    assert_eq!(out["tools"][0]["input_schema"], schema);
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": RESPONSE_FORMAT_TOOL})
    );
    let raw = r#"{"content":[{"type":"tool_use","id":"t","name":"json_response","input":{"n":14}}],
        "stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}"#;
    let (v, _) = respond(RouteType::Chat, raw).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], r#"{"n":14}"#);
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, true, &options);
    let mut s = driver().stream(&c);
    let input = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"json_response\",\"input\":{}}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"n\\\":\"}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"14}\"}}\n\n\
        event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"}}\n\n\
        event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let got = sse_payloads(&run_stream(s.as_mut(), input.as_bytes(), 5));
    let text: String = got
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, r#"{"n":14}"#);
    assert!(got
        .iter()
        .all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()));
    assert!(got
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
}

#[test]
fn with_thinking_a_json_schema_is_anthropics_own_structured_output() {
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}},
                        "required": ["n"], "additionalProperties": false});
    let out = chat(json!({"model": MODEL, "reasoning_effort": "medium",
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}}));
    assert_eq!(out["thinking"]["type"], "enabled");
    assert_eq!(
        out["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema}})
    );
    // No forced tool call, which Anthropic refuses while thinking.
    assert!(out.get("tool_choice").is_none(), "{out}");
    assert!(out.get("tools").is_none(), "{out}");
    // The answer is text in the schema, after the thinking.
    let raw = r#"{"content":[{"type":"thinking","thinking":"n is 14","signature":"s"},
        {"type":"text","text":"{\"n\":14}"}],
        "stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":2}}"#;
    let (v, _) = respond(RouteType::Chat, raw).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], r#"{"n":14}"#);
    assert_eq!(v["choices"][0]["message"]["reasoning_content"], "n is 14");

    // json_object has no schema to give: a clear gateway 400, not Anthropic's.
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, false, &options);
    let e = driver()
        .request(
            &c,
            body(json!({"model": MODEL, "reasoning_effort": "low",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_object"}})),
        )
        .unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("json_object") && message.contains("reasoning_effort"),
        "{message}"
    );
    // Without thinking, both still emulate with the forced tool.
    let out = chat(
        json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_object"}}),
    );
    assert_eq!(out["tools"][0]["name"], RESPONSE_FORMAT_TOOL);
    assert!(out.get("output_config").is_none());
}

#[test]
fn thinking_forces_the_sampling_anthropic_requires() {
    let out = chat(
        json!({"model": MODEL, "reasoning_effort": "low", "temperature": 0.2,
        "top_p": 0.5, "top_k": 5, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(out["temperature"], 1.0);
    assert_eq!(out["top_p"], 0.95);
    assert!(out.get("top_k").is_none());
    let plain = chat(json!({"model": MODEL, "temperature": 0.2, "top_k": 5,
        "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(plain["temperature"], 0.2);
    assert_eq!(plain["top_k"], 5);
}

#[test]
fn response_format_with_client_tools_is_a_clear_400() {
    let body = |choice: Value| {
        json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
               "response_format": {"type": "json_object"}, "tool_choice": choice,
               "tools": [{"type": "function", "function": {"name": "add"}}]})
    };
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, false, &options);
    let err = driver()
        .request(&c, body(json!("auto")).as_object().unwrap().clone())
        .unwrap_err();
    match err {
        GatewayError::BadRequest(m) => {
            assert!(
                m.contains("response_format cannot be combined with tools"),
                "{m}"
            )
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    let out = chat(body(json!("none")));
    assert_eq!(out["tool_choice"]["name"], RESPONSE_FORMAT_TOOL);
}
