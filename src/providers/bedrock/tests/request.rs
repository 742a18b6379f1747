//! OpenAI requests -> Converse / InvokeModel bodies.

use super::*;

#[test]
fn chat_and_tools_requests_match_fixtures() {
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, false, &options);
    for case in ["chat", "tools"] {
        let out = driver()
            .request(&c, merged(&format!("bedrock/{case}/client-request.json")))
            .unwrap();
        let expected = fixture_json(&format!("bedrock/{case}/upstream-request.json"));
        assert_eq!(out, expected, "{case}");
    }
}

#[test]
fn sampling_stop_top_k_guardrails_and_performance_are_mapped() {
    let mut options = options();
    options.bedrock.as_mut().unwrap().performance_config_latency = Some("optimized".into());
    let c = ctx(RouteType::Chat, MODEL, false, &options);
    let body = json!({
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 10, "temperature": 0.5, "top_p": 0.7, "top_k": 40,
        "stop": "END",
        "guardrailConfig": {"guardrailIdentifier": "gr-1", "guardrailVersion": "1"},
        "bedrock": {"additionalModelRequestFields": {"foo": 1}}
    });
    let out = driver()
        .request(&c, body.as_object().unwrap().clone())
        .unwrap();
    assert_eq!(
        out["inferenceConfig"],
        json!({"maxTokens": 10, "temperature": 0.5, "topP": 0.7, "stopSequences": ["END"]})
    );
    assert_eq!(
        out["additionalModelRequestFields"],
        json!({"foo": 1, "top_k": 40})
    );
    // kong-tests: "Bedrock guardrails: request guardrailConfig is copied".
    assert_eq!(
        out["guardrailConfig"],
        json!({"guardrailIdentifier": "gr-1", "guardrailVersion": "1"})
    );
    assert_eq!(out["performanceConfig"], json!({"latency": "optimized"}));
    assert!(out.get("bedrock").is_none() && out.get("top_k").is_none());
}

#[test]
fn no_top_k_no_additional_fields_and_no_empty_inference_config() {
    let out = chat(json!({"messages": [{"role": "user", "content": "hi"}]}));
    assert!(out.get("additionalModelRequestFields").is_none());
    assert!(out.get("inferenceConfig").is_none());
    assert!(out.get("toolConfig").is_none());
    assert!(out.get("system").is_none());
    assert_eq!(out["anthropic_version"], DEFAULT_ANTHROPIC_VERSION);
}

#[test]
fn consecutive_roles_are_merged_and_tool_results_grouped() {
    let out = chat(json!({"messages": [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "thinking", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "t2", "type": "function", "function": {"name": "g", "arguments": ""}}
        ]},
        {"role": "tool", "tool_call_id": "t1", "content": "{\"ok\":true}"},
        {"role": "tool", "tool_call_id": "t2", "content": "plain text"},
        {"role": "user", "content": "next"}
    ]}));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
            {"role": "assistant", "content": [
                {"text": "thinking"},
                {"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}},
                {"toolUse": {"toolUseId": "t2", "name": "g", "input": {}}}
            ]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "t1", "content": [{"json": {"ok": true}}]}},
                {"toolResult": {"toolUseId": "t2", "content": [{"text": "plain text"}]}},
                {"text": "next"}
            ]}
        ])
    );
}

#[test]
fn non_json_tool_arguments_get_kongs_400() {
    let err = chat_err(json!({"messages": [
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{nope"}}
        ]}
    ]}));
    assert_eq!(
        err,
        "failed to decode function response arguments from assistant's message, not JSON format"
    );
}

#[test]
fn system_prompts_on_unsupported_models_get_kongs_400() {
    let options = options();
    let model = "amazon.titan-text-express-v1";
    let c = ctx(RouteType::Chat, model, false, &options);
    let body =
        json!({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]});
    let err = driver()
        .request(&c, body.as_object().unwrap().clone())
        .unwrap_err();
    assert!(matches!(err, GatewayError::BadRequest(_)));
    assert_eq!(
        err.to_string(),
        "system prompts are unsupported for model 'amazon.titan-text-express-v1"
    );
}

#[test]
fn images_become_image_blocks() {
    let out = chat(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/AAAA"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "low"}}
    ]}]}));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"text": "what is this?"},
            {"image": {"format": "jpeg", "source": {"bytes": "/9j/AAAA"}}},
            {"image": {"format": "png", "source": {"bytes": "iVBORw0K"}}}
        ])
    );
    let err = chat_err(json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    ]}]}));
    assert!(err.contains("base64 data URLs"), "{err}");
    let err = chat_err(json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}
    ]}]}));
    assert!(err.contains("image/tiff"), "{err}");
}

#[test]
fn tool_choice_maps_to_converse_tool_choice() {
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let with = |choice: Value| {
        chat(
            json!({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": choice}),
        )
    };
    assert_eq!(
        with(json!("auto"))["toolConfig"]["toolChoice"],
        json!({"auto": {}})
    );
    assert_eq!(
        with(json!("required"))["toolConfig"]["toolChoice"],
        json!({"any": {}})
    );
    assert_eq!(
        with(json!({"type": "function", "function": {"name": "f"}}))["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "f"}})
    );
    let spec = &with(json!("auto"))["toolConfig"]["tools"][0]["toolSpec"];
    assert_eq!(
        spec,
        &json!({"name": "f", "inputSchema": {"json": {"type": "object", "properties": {}}}})
    );
    // No "none" in Bedrock: the tools are dropped...
    assert!(with(json!("none")).get("toolConfig").is_none());
    // ...unless the history holds tool blocks, which Converse only accepts with toolConfig.
    let out = chat(json!({
        "messages": [
            {"role": "assistant", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t", "content": "1"}
        ],
        "tools": tools, "tool_choice": "none"
    }));
    assert_eq!(out["toolConfig"]["tools"][0]["toolSpec"]["name"], "f");
    assert!(out["toolConfig"].get("toolChoice").is_none());
    // Empty tools -> no toolConfig (kong-tests: "empty/nil tools -> nil").
    assert!(
        chat(json!({"messages": [{"role": "user", "content": "x"}], "tools": []}))
            .get("toolConfig")
            .is_none()
    );
}

#[test]
fn completions_prompt_is_one_user_message() {
    let options = options();
    let c = ctx(RouteType::Completions, MODEL, false, &options);
    let body = json!({"prompt": "Say hi", "max_tokens": 5});
    let out = driver()
        .request(&c, body.as_object().unwrap().clone())
        .unwrap();
    assert_eq!(
        out["messages"],
        json!([{"role": "user", "content": [{"text": "Say hi"}]}])
    );
    assert_eq!(out["inferenceConfig"], json!({"maxTokens": 5}));
}

#[test]
fn embeddings_requests_use_titan_or_cohere_bodies() {
    let mut options = options();
    options.bedrock.as_mut().unwrap().embeddings_normalize = true;
    let d = driver();
    let embed = |model: &str, options: &ModelOptions, body: Value| {
        let c = ctx(RouteType::Embeddings, model, false, options);
        d.request(&c, body.as_object().unwrap().clone())
    };
    let out = embed(
        "amazon.titan-embed-text-v2:0",
        &options,
        json!({"input": "hello", "dimensions": 256}),
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"inputText": "hello", "dimensions": 256, "normalize": true})
    );
    options.embeddings_dimensions = Some(512);
    let out = embed(
        "amazon.titan-embed-text-v2:0",
        &options,
        json!({"input": ["hello"]}),
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"inputText": "hello", "dimensions": 512, "normalize": true})
    );
    let out = embed(
        "amazon.titan-embed-text-v1",
        &options,
        json!({"input": "hello"}),
    )
    .unwrap();
    assert_eq!(out, json!({"inputText": "hello"}));
    let err = embed(
        "amazon.titan-embed-text-v2:0",
        &options,
        json!({"input": ["a", "b"]}),
    )
    .unwrap_err();
    assert!(matches!(err, GatewayError::BadRequest(_)));
    let out = embed(
        "cohere.embed-english-v3",
        &options,
        json!({"input": ["a", "b"]}),
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"texts": ["a", "b"], "input_type": "search_document"})
    );
    let out = embed("cohere.embed-english-v3", &options, json!({"input": "a"})).unwrap();
    assert_eq!(out["texts"], json!(["a"]));
    assert!(embed("cohere.embed-english-v3", &options, json!({"input": [1]})).is_err());
}
