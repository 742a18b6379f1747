//! Bedrock answers -> OpenAI answers.

use super::*;

#[test]
fn chat_and_tools_responses_match_fixtures() {
    for case in ["chat", "tools"] {
        let raw = fixture(&format!("bedrock/{case}/upstream-response.json"));
        let v = translate(RouteType::Chat, MODEL, &raw);
        let expected = fixture_json(&format!("bedrock/{case}/expected-response.json"));
        let mut choice = expected["choices"][0].clone();
        choice["logprobs"] = Value::Null;
        assert_eq!(v["choices"], json!([choice]), "{case}");
        assert_eq!(v["usage"], expected["usage"], "{case}");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], MODEL);
        // OpenAI-correct: id and created exist (Kong 3.9 leaves them out).
        assert_eq!(v["id"], "chatcmpl-test");
        assert_eq!(v["created"], 1_700_000_000);
    }
}

#[test]
fn text_blocks_are_joined_and_empty_input_is_an_empty_object() {
    let raw = json!({
        "output": {"message": {"role": "assistant", "content": [
            {"toolUse": {"toolUseId": "a", "name": "f", "input": {}}},
            {"text": "one "}, {"reasoningContent": {"reasoningText": {"text": "hm"}}}, {"text": "two"},
            {"toolUse": {"toolUseId": "b", "name": "g"}}
        ]}},
        "stopReason": "tool_use"
    });
    let v = translate(RouteType::Chat, MODEL, &raw.to_string());
    let m = &v["choices"][0]["message"];
    assert_eq!(m["content"], "one two");
    assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{}");
    assert_eq!(m["tool_calls"][1]["function"]["arguments"], "{}");
    assert_eq!(m["tool_calls"][1]["id"], "b");
    // No usage from Bedrock -> zero usage object.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
    );
}

#[test]
fn stop_reasons_map_to_openai_finish_reasons() {
    for (reason, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("something_new", "stop"),
    ] {
        let raw =
            json!({"output": {"message": {"content": [{"text": "x"}]}}, "stopReason": reason});
        let v = translate(RouteType::Chat, MODEL, &raw.to_string());
        assert_eq!(v["choices"][0]["finish_reason"], finish, "{reason}");
    }
}

#[test]
fn guardrail_trace_is_copied() {
    let raw = json!({"output": {"message": {"content": [{"text": "blocked"}]}},
                         "stopReason": "guardrail_intervened", "trace": {"guardrail": {"x": 1}}});
    let v = translate(RouteType::Chat, MODEL, &raw.to_string());
    assert_eq!(v["trace"], json!({"guardrail": {"x": 1}}));
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
}

#[test]
fn empty_or_undecodable_answers_fail_with_kongs_reasons() {
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, false, &options);
    let d = driver();
    for raw in [
        r#"{"output":{"message":{"role":"assistant","content":[]}},"stopReason":"max_tokens"}"#,
        r#"{"stopReason":"end_turn"}"#,
    ] {
        assert_eq!(d.response(&c, Bytes::from(raw)).unwrap_err(), NO_CANDIDATES);
    }
    assert_eq!(
        d.response(&c, Bytes::from_static(b"<html>")).unwrap_err(),
        "failed to decode llm/v1/chat response"
    );
}

#[test]
fn completions_answer_is_a_text_completion() {
    let v = translate(
        RouteType::Completions,
        MODEL,
        &fixture("bedrock/chat/upstream-response.json"),
    );
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["id"], "cmpl-test");
    assert_eq!(v["choices"][0]["text"], "10.");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 25);
}

#[test]
fn embeddings_answers_become_embedding_lists() {
    let v = translate(
        RouteType::Embeddings,
        "amazon.titan-embed-text-v2:0",
        r#"{"embedding":[0.5,-0.25],"inputTextTokenCount":3}"#,
    );
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["embedding"], json!([0.5, -0.25]));
    assert_eq!(v["data"][0]["object"], "embedding");
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    assert_eq!(v["model"], "amazon.titan-embed-text-v2:0");
    let v = translate(
        RouteType::Embeddings,
        "cohere.embed-english-v3",
        r#"{"id":"x","response_type":"embeddings_floats","embeddings":[[1.0],[2.0]],"texts":["a","b"]}"#,
    );
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][1]["embedding"], json!([2.0]));
    let options = options();
    let c = ctx(
        RouteType::Embeddings,
        "amazon.titan-embed-text-v2:0",
        false,
        &options,
    );
    assert_eq!(
        driver()
            .response(&c, Bytes::from_static(b"{}"))
            .unwrap_err(),
        "'embedding' not in bedrock response"
    );
}

#[test]
fn error_bodies_pass_through() {
    let raw = Bytes::from(fixture("bedrock/errors/upstream-403.json"));
    assert_eq!(
        driver().error(actix_web::http::StatusCode::FORBIDDEN, raw.clone()),
        raw
    );
}
