//! Features mapped both ways: reasoning, cache points, thinking, `response_format`.

use super::*;

#[test]
fn reasoning_cache_points_and_thinking_budget_map_both_ways() {
    let out = chat(
        json!({"model": MODEL, "max_tokens": 500, "reasoning_effort": "low",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "add",
                                          "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": null,
             "thinking_blocks": [{"type": "thinking", "thinking": "Use add.", "signature": "sig"}],
             "tool_calls": [{"id": "t1", "type": "function",
                             "function": {"name": "add", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "14"}]}),
    );
    assert_eq!(
        out["messages"][0]["content"],
        json!([{"text": "add"}, {"cachePoint": {"type": "default"}}])
    );
    assert_eq!(
        out["messages"][1]["content"][0],
        json!({"reasoningContent": {"reasoningText": {"text": "Use add.", "signature": "sig"}}})
    );
    assert_eq!(
        out["additionalModelRequestFields"]["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(out["inferenceConfig"]["maxTokens"], 1524);

    let v = translate(
        RouteType::Chat,
        MODEL,
        r#"{"output":{"message":{"role":"assistant","content":[
            {"reasoningContent":{"reasoningText":{"text":"Think.","signature":"s1"}}},
            {"text":"14"}]}},"stopReason":"end_turn",
            "usage":{"inputTokens":10,"outputTokens":5,"cacheReadInputTokens":100,"cacheWriteInputTokens":20}}"#,
    );
    let m = &v["choices"][0]["message"];
    assert_eq!(m["content"], "14");
    assert_eq!(m["reasoning_content"], "Think.");
    assert_eq!(m["thinking_blocks"][0]["signature"], "s1");
    assert_eq!(v["usage"]["prompt_tokens"], 130);
    assert_eq!(
        v["usage"]["prompt_tokens_details"],
        json!({"cached_tokens": 100, "cache_write_tokens": 20})
    );

    let input = stream_bytes(&[
        ("messageStart", json!({"role": "assistant"})),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Hm"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "s2"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"text": "14"}}),
        ),
        ("messageStop", json!({"stopReason": "end_turn"})),
    ]);
    let got = run(RouteType::Chat, &input, 5);
    let deltas: Vec<&Value> = got.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert!(
        deltas.iter().any(|d| d["reasoning_content"] == "Hm"),
        "{got:?}"
    );
    assert!(
        deltas
            .iter()
            .any(|d| d["thinking_blocks"][0]["signature"] == "s2"),
        "{got:?}"
    );
    assert!(deltas.iter().all(|d| d["content"] != "Hm"));
}

#[test]
fn response_format_is_a_forced_tool_call_whose_input_is_the_content() {
    let out = chat(
        json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_object"}}),
    );
    assert_eq!(
        out["toolConfig"]["tools"][0]["toolSpec"]["name"],
        "json_response"
    );
    assert_eq!(
        out["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "json_response"}})
    );
    let v = translate(
        RouteType::Chat,
        MODEL,
        r#"{"output":{"message":{"content":[{"toolUse":{"toolUseId":"t","name":"json_response","input":{"n":14}}}]}},
            "stopReason":"tool_use","usage":{"inputTokens":1,"outputTokens":2}}"#,
    );
    assert_eq!(v["choices"][0]["message"]["content"], r#"{"n":14}"#);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let input = stream_bytes(&[
        ("messageStart", json!({"role": "assistant"})),
        (
            "contentBlockStart",
            json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t", "name": "json_response"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": "{\"n\":"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": "14}"}}}),
        ),
        ("messageStop", json!({"stopReason": "tool_use"})),
    ]);
    let got = run(RouteType::Chat, &input, 9);
    let text: String = got
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, r#"{"n":14}"#);
    assert!(
        got.iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop"),
        "{got:?}"
    );
}

#[test]
fn cache_control_on_system_tools_assistant_and_tool_results_becomes_cache_points() {
    let cc = json!({"type": "ephemeral"});
    let point = json!({"cachePoint": {"type": "default"}});
    let out = chat(json!({"model": MODEL, "messages": [
        {"role": "system", "content": [{"type": "text", "text": "rules", "cache_control": cc}]},
        {"role": "user", "content": "add"},
        {"role": "assistant", "content": [{"type": "text", "text": "ok", "cache_control": cc}]},
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function",
            "function": {"name": "add", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1",
         "content": [{"type": "text", "text": "14", "cache_control": cc}]}],
        "tools": [{"type": "function", "function": {"name": "add"}, "cache_control": cc},
                  {"type": "function", "function": {"name": "sub"}}]}));
    assert_eq!(out["system"], json!([{"text": "rules"}, point]));
    assert_eq!(
        out["messages"][1]["content"],
        json!([{"text": "ok"}, point])
    );
    assert_eq!(out["messages"][4]["content"][1], point);
    let tools = &out["toolConfig"]["tools"];
    assert_eq!(tools[0]["toolSpec"]["name"], "add");
    assert_eq!(tools[1], point);
    assert_eq!(tools[2]["toolSpec"]["name"], "sub");
}

#[test]
fn with_claude_thinking_a_json_schema_is_converse_structured_output() {
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}},
                        "required": ["n"], "additionalProperties": false});
    let out = chat(json!({"model": MODEL, "reasoning_effort": "low",
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}}));
    assert_eq!(
        out["additionalModelRequestFields"]["thinking"]["type"],
        "enabled"
    );
    let format = &out["outputConfig"]["textFormat"];
    assert_eq!(format["type"], "json_schema");
    let definition = &format["structure"]["jsonSchema"];
    assert_eq!(definition["name"], "n");
    // Converse takes the schema as a JSON string.
    let sent: Value = serde_json::from_str(definition["schema"].as_str().unwrap()).unwrap();
    assert_eq!(sent, schema);
    // No forced tool call, which Claude refuses while thinking.
    assert!(out.get("toolConfig").is_none(), "{out}");

    let e = chat_err(json!({"model": MODEL, "reasoning_effort": "low",
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_object"}}));
    assert!(
        e.contains("json_object") && e.contains("reasoning_effort"),
        "{e}"
    );
    // Without thinking, the forced tool still carries the JSON.
    let out = chat(
        json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_object"}}),
    );
    assert_eq!(
        out["toolConfig"]["tools"][0]["toolSpec"]["name"],
        RESPONSE_FORMAT_TOOL
    );
    assert!(out.get("outputConfig").is_none());
}

#[test]
fn thinking_forces_claude_sampling_and_the_matched_stop_sequence_comes_back() {
    let out = chat(
        json!({"model": MODEL, "reasoning_effort": "low", "temperature": 0.2,
        "top_p": 0.5, "top_k": 5, "stop": ["STOP"],
        "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(out["inferenceConfig"]["temperature"], 1.0);
    assert_eq!(out["inferenceConfig"]["topP"], 0.95);
    assert!(out["additionalModelRequestFields"].get("top_k").is_none());
    assert_eq!(
        out["additionalModelResponseFieldPaths"],
        json!(["/stop_sequence"])
    );
    let plain = chat(json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}));
    assert!(plain.get("additionalModelResponseFieldPaths").is_none());

    let answer = translate(
        RouteType::Chat,
        MODEL,
        r#"{"output": {"message": {"role": "assistant", "content": [{"text": "a"}]}},
            "stopReason": "stop_sequence",
            "additionalModelResponseFields": {"stop_sequence": "STOP"}}"#,
    );
    assert_eq!(answer["choices"][0]["stop_reason"], "STOP");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let input = stream_bytes(&[
        ("messageStart", json!({"role": "assistant"})),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "a"}}),
        ),
        (
            "messageStop",
            json!({"stopReason": "stop_sequence",
                               "additionalModelResponseFields": {"stop_sequence": "STOP"}}),
        ),
    ]);
    let chunks = run(RouteType::Chat, &input, 7);
    let last = chunks
        .iter()
        .rev()
        .find(|c| c["choices"][0]["finish_reason"] == "stop");
    assert_eq!(last.unwrap()["choices"][0]["stop_reason"], "STOP");
}

#[test]
fn response_format_with_client_tools_is_refused() {
    let err = chat_err(
        json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "add"}}]}),
    );
    assert!(
        err.contains("response_format cannot be combined with tools"),
        "{err}"
    );
}
