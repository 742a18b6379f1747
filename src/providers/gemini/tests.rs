use super::*;
use crate::config::ai_proxy::GeminiOptions;
use crate::providers::testkit::{
    ctx, fixture, fixture_config, fixture_json, run_pieces, run_stream, run_truncated, sse_payloads,
};
use proptest::prelude::*;

fn driver() -> Gemini {
    Gemini::from_config(&fixture_config("gemini/chat/config.json")).unwrap()
}

fn vertex_options() -> ModelOptions {
    ModelOptions {
        gemini: Some(GeminiOptions {
            api_endpoint: Some("us-central1-aiplatform.googleapis.com".into()),
            project_id: Some("my-project".into()),
            location_id: Some("us-central1".into()),
            endpoint_id: None,
        }),
        ..ModelOptions::default()
    }
}

fn body(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn translate(route: RouteType, model: &str, v: Value) -> Result<Value, GatewayError> {
    let options = ModelOptions::default();
    driver().request(&ctx(route, model, false, &options), body(v))
}

fn chat(v: Value) -> Value {
    translate(RouteType::Chat, "gemini-1.5-flash", v).unwrap()
}

fn bad_request(v: Value) -> String {
    match translate(RouteType::Chat, "gemini-1.5-flash", v).unwrap_err() {
        GatewayError::BadRequest(m) => m,
        other => panic!("expected a 400, got {other:?}"),
    }
}

fn respond(route: RouteType, raw: &str) -> Result<Value, String> {
    let options = ModelOptions::default();
    let t = driver().response(
        &ctx(route, "gemini-1.5-flash", false, &options),
        Bytes::from(raw.to_string()),
    )?;
    Ok(serde_json::from_slice(&t.body).unwrap())
}

// --- URLs -----------------------------------------------------------------------------

#[test]
fn ai_studio_urls_per_route_and_stream() {
    let options = ModelOptions::default();
    let d = driver();
    let url = |route, stream| {
        d.url(&ctx(route, "gemini-1.5-flash", stream, &options))
            .unwrap()
    };
    let base = "https://generativelanguage.googleapis.com/v1beta/models/gemini-1.5-flash";
    assert_eq!(
        url(RouteType::Chat, false),
        format!("{base}:generateContent")
    );
    // We always ask for SSE; Kong 3.9 took the JSON-array stream (which we also read).
    assert_eq!(
        url(RouteType::Chat, true),
        format!("{base}:streamGenerateContent?alt=sse")
    );
    assert_eq!(
        url(RouteType::Completions, false),
        format!("{base}:generateContent")
    );
    assert_eq!(
        url(RouteType::Embeddings, false),
        format!("{base}:batchEmbedContents")
    );
}

#[test]
fn vertex_urls_use_project_location_and_publisher() {
    let options = vertex_options();
    let d = driver();
    let base = "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-1.5-flash";
    let c = ctx(RouteType::Chat, "gemini-1.5-flash", false, &options);
    assert_eq!(d.url(&c).unwrap(), format!("{base}:generateContent"));
    let c = ctx(RouteType::Chat, "gemini-1.5-flash", true, &options);
    assert_eq!(
        d.url(&c).unwrap(),
        format!("{base}:streamGenerateContent?alt=sse")
    );
    let c = ctx(RouteType::Embeddings, "gemini-1.5-flash", false, &options);
    assert_eq!(d.url(&c).unwrap(), format!("{base}:predict"));
}

#[test]
fn partial_vertex_options_mean_ai_studio_and_bad_endpoints_are_refused() {
    let mut options = vertex_options();
    options.gemini.as_mut().unwrap().project_id = None;
    let c = ctx(RouteType::Chat, "m", false, &options);
    assert!(driver()
        .url(&c)
        .unwrap()
        .starts_with("https://generativelanguage.googleapis.com/v1beta/models/"));
    let mut based = c.options.clone();
    based.upstream_url = Some("http://127.0.0.1:9".into());
    let mut b = c;
    b.options = &based;
    assert!(driver()
        .url(&b)
        .unwrap()
        .starts_with("http://127.0.0.1:9/v1beta/models/"));
    let mut options = vertex_options();
    options.gemini.as_mut().unwrap().api_endpoint = Some("evil.test/x?".into());
    let c = ctx(RouteType::Chat, "m", false, &options);
    assert!(matches!(driver().url(&c), Err(GatewayError::BadRequest(_))));
}

#[test]
fn model_names_cannot_change_the_path() {
    let options = ModelOptions::default();
    let d = driver();
    let c = ctx(RouteType::Chat, "../../x?y=1#", false, &options);
    assert_eq!(
            d.url(&c).unwrap(),
            "https://generativelanguage.googleapis.com/v1beta/models/..%2F..%2Fx%3Fy%3D1%23:generateContent"
        );
    let c = ctx(RouteType::Chat, "..", false, &options);
    assert!(d
        .url(&c)
        .unwrap()
        .ends_with("/models/%2E%2E:generateContent"));
    // The resource-name form clients sometimes send.
    let c = ctx(RouteType::Chat, "models/gemini-2.0-flash", false, &options);
    assert!(d
        .url(&c)
        .unwrap()
        .ends_with("/models/gemini-2.0-flash:generateContent"));
}

#[test]
fn upstream_url_is_used_as_is_with_alt_sse_only_when_streaming_and_absent() {
    let d = driver();
    let mut options = vertex_options();
    options.upstream_url = Some("http://mock:8080/v1/chat/completions".into());
    let c = ctx(RouteType::Chat, "gemini-1.5-pro", false, &options);
    assert_eq!(d.url(&c).unwrap(), "http://mock:8080/v1/chat/completions");
    let c = ctx(RouteType::Chat, "gemini-1.5-pro", true, &options);
    assert_eq!(
        d.url(&c).unwrap(),
        "http://mock:8080/v1/chat/completions?alt=sse"
    );
    options.upstream_url = Some("http://mock/x:streamGenerateContent?alt=sse&k=1".into());
    let c = ctx(RouteType::Chat, "gemini-1.5-pro", true, &options);
    assert_eq!(
        d.url(&c).unwrap(),
        "http://mock/x:streamGenerateContent?alt=sse&k=1"
    );
}

#[test]
fn upstream_path_replaces_the_path() {
    let d = driver();
    let options = ModelOptions {
        upstream_path: Some("//v1beta/models/custom:generateContent".into()),
        ..ModelOptions::default()
    };
    let c = ctx(RouteType::Chat, "gemini-1.5-flash", true, &options);
    assert_eq!(
        d.url(&c).unwrap(),
        "https://generativelanguage.googleapis.com/v1beta/models/custom:generateContent?alt=sse"
    );
}

#[test]
fn upstream_gets_accept_encoding_identity() {
    let options = ModelOptions::default();
    let mut headers = Vec::new();
    driver().headers(&ctx(RouteType::Chat, "m", false, &options), &mut headers);
    assert_eq!(
        headers,
        vec![(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity")
        )]
    );
}

// --- Requests -------------------------------------------------------------------------

#[test]
fn chat_request_matches_fixture() {
    let out = chat(fixture_json("gemini/chat/client-request.json"));
    assert_eq!(out, fixture_json("gemini/chat/upstream-request.json"));
}

#[test]
fn multimodal_request_matches_fixture_with_real_mime_types() {
    let out = chat(fixture_json("gemini/multimodal/client-request.json"));
    let mut expected = fixture_json("gemini/multimodal/upstream-request.json");
    // Deviation from Kong's `image/generic`: Gemini wants an IANA type, and `.jpg` says it.
    expected["contents"][0]["parts"][2]["fileData"]["mimeType"] = json!("image/jpeg");
    assert_eq!(out, expected);
    let out = chat(json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "gs://bucket/object"}}
    ]}]}));
    assert_eq!(
        out["contents"][0]["parts"][0],
        json!({"fileData": {"mimeType": "image/generic", "fileUri": "gs://bucket/object"}})
    );
}

#[test]
fn tools_request_matches_fixture() {
    let out = chat(fixture_json("gemini/tools/client-request.json"));
    assert_eq!(out, fixture_json("gemini/tools/upstream-request.json"));
    // No tools -> no `tools` key (Kong: "no tools -> nil").
    let out = chat(json!({"messages": [{"role": "user", "content": "hi"}]}));
    assert!(out.get("tools").is_none());
}

#[test]
fn tool_round_trip_names_results_after_their_calls() {
    let out = chat(fixture_json("gemini/tool-round-trip/client-request.json"));
    assert_eq!(
        out,
        fixture_json("gemini/tool-round-trip/upstream-request.json")
    );
}

#[test]
fn tool_choice_maps_to_function_calling_config() {
    let cases = [
        (json!("auto"), json!({"mode": "AUTO"})),
        (json!("none"), json!({"mode": "NONE"})),
        (json!("required"), json!({"mode": "ANY"})),
        (
            json!({"type": "function", "function": {"name": "add"}}),
            json!({"mode": "ANY", "allowedFunctionNames": ["add"]}),
        ),
    ];
    for (choice, expected) in cases {
        let out = chat(json!({
            "messages": [{"role": "user", "content": "2+2?"}],
            "tools": [{"type": "function", "function": {"name": "add"}}],
            "tool_choice": choice,
        }));
        assert_eq!(
            out["toolConfig"],
            json!({"functionCallingConfig": expected})
        );
    }
    // Kong forwards a native `tool_config` when there is no `tool_choice`.
    let native = json!({"function_calling_config": {"mode": "ANY"}});
    let out = chat(json!({"messages": [{"role": "user", "content": "x"}], "tool_config": native}));
    assert_eq!(out["toolConfig"], native);
}

#[test]
fn generation_config_maps_sampling_n_and_response_format() {
    let out = chat(json!({
        "messages": [{"role": "user", "content": "x"}],
        "max_completion_tokens": 10, "top_p": 0.9, "top_k": 40, "stop": "END", "n": 2,
        "presence_penalty": 0.5, "frequency_penalty": 0.25, "seed": 7,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
    }));
    assert_eq!(
        out["generationConfig"],
        json!({
            "maxOutputTokens": 10, "topP": 0.9, "topK": 40, "stopSequences": ["END"],
            "candidateCount": 2, "presencePenalty": 0.5, "frequencyPenalty": 0.25, "seed": 7,
            "responseMimeType": "application/json", "responseSchema": {"type": "object"},
        })
    );
    let out = chat(json!({
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_object"},
    }));
    assert_eq!(
        out["generationConfig"],
        json!({"responseMimeType": "application/json"})
    );
    // A stream reads one candidate only, so `n` is not forwarded then.
    let options = ModelOptions::default();
    let c = ctx(RouteType::Chat, "m", true, &options);
    let out = driver()
        .request(
            &c,
            body(json!({"messages": [{"role": "user", "content": "x"}], "n": 3})),
        )
        .unwrap();
    assert_eq!(out["generationConfig"], json!({}));
}

#[test]
fn systems_join_as_parts_and_same_roles_merge() {
    let out = chat(json!({"messages": [
        {"role": "system", "content": "A."},
        {"role": "developer", "content": [{"type": "text", "text": "B."}]},
        {"content": "one"},
        {"role": "user", "content": "two"},
    ]}));
    assert_eq!(
        out,
        json!({
            "contents": [{"role": "user", "parts": [{"text": "one"}, {"text": "two"}]}],
            "systemInstruction": {"parts": [{"text": "A."}, {"text": "B."}]},
            "generationConfig": {},
        })
    );
}

#[test]
fn audio_and_pdf_parts_become_inline_data() {
    let out = chat(json!({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
    ]}]}));
    assert_eq!(
        out["contents"][0]["parts"],
        json!([
            {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
        ])
    );
}

#[test]
fn malformed_parts_get_kongs_error_texts() {
    let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
    let prefix = "error transforming to gemini://llm/v1/chat: ";
    assert_eq!(
        bad_request(user(json!([{"type": "text"}]))),
        format!("{prefix}message part type is 'text' but is missing .text block")
    );
    assert_eq!(
        bad_request(user(json!([{"type": "image_url", "image_url": {}}]))),
        format!("{prefix}message part type is 'image_url' but is missing .image_url.url block")
    );
    assert_eq!(
        bad_request(user(json!([{"type": "video", "video": {}}]))),
        format!("{prefix}cannot transform part of type 'video' to Gemini format")
    );
    assert_eq!(
        bad_request(user(json!([]))),
        format!("{prefix}message at position 1 does not match expected array format")
    );
    assert_eq!(
            bad_request(user(json!([{"text": "no type"}]))),
            format!("{prefix}message at position 1, part at position 1 does not match expected OpenAI format")
        );
    assert!(bad_request(user(
        json!([{"type": "image_url", "image_url": {"url": "data:x"}}])
    ))
    .contains("image URL is less than 10 bytes"));
    let err = translate(
        RouteType::Chat,
        "gemini-1.0-pro",
        json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{prefix}system prompts aren't supported on gemini-1.0 models")
    );
}

#[test]
fn completions_prompt_is_one_user_turn() {
    let out = translate(
        RouteType::Completions,
        "gemini-1.5-flash",
        json!({"prompt": "Explain zero.", "max_tokens": 5}),
    )
    .unwrap();
    assert_eq!(
        out,
        json!({
            "contents": [{"role": "user", "parts": [{"text": "Explain zero."}]}],
            "generationConfig": {"maxOutputTokens": 5},
        })
    );
}

#[test]
fn embeddings_requests_for_ai_studio_and_vertex() {
    let options = ModelOptions {
        embeddings_dimensions: Some(256),
        ..ModelOptions::default()
    };
    let c = ctx(RouteType::Embeddings, "text-embedding-004", false, &options);
    let out = driver()
        .request(&c, body(json!({"input": ["a", "b"]})))
        .unwrap();
    assert_eq!(
        out,
        json!({"requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 256},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 256},
        ]})
    );
    let out = driver().request(&c, body(json!({"input": "a"}))).unwrap();
    assert_eq!(out["requests"].as_array().unwrap().len(), 1);

    let options = vertex_options();
    let c = ctx(RouteType::Embeddings, "text-embedding-005", false, &options);
    let out = driver()
        .request(&c, body(json!({"input": "a", "dimensions": 64})))
        .unwrap();
    assert_eq!(
        out,
        json!({"instances": [{"content": "a"}], "parameters": {"outputDimensionality": 64}})
    );

    let err = driver()
        .request(&c, body(json!({"input": [[1, 2]]})))
        .unwrap_err();
    assert!(
        err.to_string().contains("token arrays are not supported"),
        "{err}"
    );
}

// --- Responses ------------------------------------------------------------------------

#[test]
fn chat_response_matches_fixture_plus_id_and_created() {
    let v = respond(
        RouteType::Chat,
        &fixture("gemini/chat/upstream-response.json"),
    )
    .unwrap();
    let expected = fixture_json("gemini/chat/expected-response.json");
    assert_eq!(
        v["choices"][0]["message"],
        expected["choices"][0]["message"]
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"], expected["usage"]);
    assert_eq!(v["object"], "chat.completion");
    // The request model, not upstream's `modelVersion`.
    assert_eq!(v["model"], "gemini-1.5-flash");
    // OpenAI-correct additions (Kong 3.12): id and created.
    assert_eq!(v["id"], "chatcmpl-test");
    assert_eq!(v["created"], 1_700_000_000);
}

#[test]
fn tool_call_response_has_ids_types_and_finish_reason() {
    let v = respond(
        RouteType::Chat,
        &fixture("gemini/tools/upstream-response.json"),
    )
    .unwrap();
    let expected = fixture_json("gemini/tools/expected-response.json");
    let got = &v["choices"][0]["message"]["tool_calls"][0];
    let want = &expected["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(got["function"], want["function"]);
    // Policy over Kong's quirk: id, type and finish_reason `tool_calls`; content null.
    assert_eq!(got["id"], "call_test_0");
    assert_eq!(got["type"], "function");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"], expected["usage"]);
}

#[test]
fn thought_signatures_ride_in_the_tool_call_id() {
    let raw = r#"{"candidates":[{"content":{"role":"model","parts":[
            {"text":"thinking...","thought":true},
            {"functionCall":{"name":"add","args":{"a":1}},"thoughtSignature":"c2ln"},
            {"functionCall":{"name":"add","args":{"a":2}}}]},"finishReason":"STOP"}]}"#;
    let v = respond(RouteType::Chat, raw).unwrap();
    let calls = &v["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls[0]["id"], "call_test_0__thought__c2ln");
    assert_eq!(calls[1]["id"], "call_test_1");
    assert_eq!(calls[1]["function"]["arguments"], r#"{"a":2}"#);
    // Thought summaries are not answer text.
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
}

#[test]
fn no_candidates_is_kongs_transformation_failure() {
    let raw = fixture("gemini/errors/no-candidates-200.json");
    let err = respond(RouteType::Chat, &raw).unwrap_err();
    let expected = fixture_json("gemini/errors/expected-500.json");
    let message = expected["error"]["message"].as_str().unwrap();
    assert_eq!(
        format!("transformation failed from type gemini://llm/v1/chat: {err}"),
        message
    );
    assert_eq!(respond(RouteType::Chat, "<html>").unwrap_err(), UNDECODABLE);
    assert_eq!(
        respond(RouteType::Chat, r#"{"candidates":null}"#).unwrap_err(),
        NO_CANDIDATES
    );
}

#[test]
fn finish_reasons_map_to_openai_values() {
    let cases = [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("SOMETHING_NEW", "stop"),
    ];
    for (gemini, openai) in cases {
        let raw = format!(r#"{{"candidates":[{{"finishReason":"{gemini}"}}]}}"#);
        let v = respond(RouteType::Chat, &raw).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], openai, "{gemini}");
        // No content at all (a blocked answer): empty text, zero usage object.
        assert_eq!(v["choices"][0]["message"]["content"], "");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        );
    }
}

#[test]
fn several_candidates_become_several_choices_and_thoughts_count_as_completion() {
    let raw = r#"{"candidates":[
            {"content":{"parts":[{"text":"a"},{"text":"b"}]},"finishReason":"STOP","index":0},
            {"content":{"parts":[{"text":"c"}]},"finishReason":"MAX_TOKENS","index":1}],
            "usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":4,"thoughtsTokenCount":5,"totalTokenCount":12}}"#;
    let v = respond(RouteType::Chat, raw).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "ab");
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(v["choices"][1]["message"]["content"], "c");
    assert_eq!(v["choices"][1]["finish_reason"], "length");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12,
               "completion_tokens_details": {"reasoning_tokens": 5}})
    );
}

#[test]
fn completions_response_is_a_text_completion() {
    let v = respond(
        RouteType::Completions,
        &fixture("gemini/chat/upstream-response.json"),
    )
    .unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["id"], "cmpl-test");
    assert_eq!(v["choices"][0]["text"], "10.");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 20);
}

#[test]
fn embeddings_responses_from_every_shape() {
    let batch = r#"{"embeddings":[{"values":[0.1,0.2]},{"values":[0.3]}]}"#;
    let v = respond(RouteType::Embeddings, batch).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][1]["embedding"], json!([0.3]));
    assert_eq!(v["model"], "gemini-1.5-flash");
    assert_eq!(v["usage"], json!({"prompt_tokens": 0, "total_tokens": 0}));

    let single = r#"{"embedding":{"values":[1.0]}}"#;
    let v = respond(RouteType::Embeddings, single).unwrap();
    assert_eq!(v["data"][0]["embedding"], json!([1.0]));

    let vertex = r#"{"predictions":[
            {"embeddings":{"values":[0.5],"statistics":{"token_count":6,"truncated":false}}},
            {"embeddings":{"values":[0.6],"statistics":{"token_count":4.0}}}]}"#;
    let options = ModelOptions::default();
    let c = ctx(RouteType::Embeddings, "text-embedding-005", false, &options);
    let t = driver()
        .response(&c, Bytes::from_static(vertex.as_bytes()))
        .unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(v["usage"], json!({"prompt_tokens": 10, "total_tokens": 10}));
    assert_eq!(t.usage, Usage::new(10, 0));

    let err = respond(RouteType::Embeddings, r#"{"candidates":[]}"#).unwrap_err();
    assert_eq!(err, "no embeddings received from Gemini");
}

// --- Streams --------------------------------------------------------------------------

fn stream_ctx(options: &ModelOptions) -> RequestCtx<'_> {
    ctx(RouteType::Chat, "gemini-1.5-flash", true, options)
}

/// Every split point, plus byte by byte, gives the same client stream.
fn all_splits(c: &RequestCtx<'_>, input: &str) -> Vec<Value> {
    let first = sse_payloads(&run_stream(&mut GeminiStream::new(c), input.as_bytes(), 0));
    for split in 1..=input.len() {
        let got = run_stream(&mut GeminiStream::new(c), input.as_bytes(), split);
        assert_eq!(sse_payloads(&got), first, "split at {split}");
    }
    let bytewise = run_pieces(&mut GeminiStream::new(c), input.as_bytes(), 1);
    assert_eq!(sse_payloads(&bytewise), first, "byte by byte");
    first
}

fn assert_kong_stream(got: &[Value]) {
    let expected = sse_payloads(&fixture("gemini/chat-stream/expected-client-stream.txt"));
    // Kong's two content chunks, then (policy) a finish chunk with the mapped reason
    // instead of Kong's raw "STOP" on the last content chunk, then [DONE].
    assert_eq!(got.len(), 4);
    assert_eq!(got[0]["choices"][0]["delta"]["role"], "assistant");
    for i in 0..2 {
        assert_eq!(
            got[i]["choices"][0]["delta"]["content"],
            expected[i]["choices"][0]["delta"]["content"]
        );
        assert_eq!(got[i]["model"], expected[i]["model"]);
        assert_eq!(got[i]["object"], "chat.completion.chunk");
        assert_eq!(got[i]["id"], "chatcmpl-test");
    }
    assert_eq!(got[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(got[3], "[DONE]");
}

#[test]
fn json_array_stream_at_every_split_matches_kong() {
    let options = ModelOptions::default();
    let c = stream_ctx(&options);
    let input = fixture("gemini/chat-stream/upstream-stream.json");
    assert_kong_stream(&all_splits(&c, &input));
    let mut s = GeminiStream::new(&c);
    run_stream(&mut s, input.as_bytes(), 7);
    // Usage is set from the last event, not added.
    assert_eq!(s.usage(), Usage::new(18, 2));
}

#[test]
fn sse_stream_at_every_split_matches_kong() {
    let options = ModelOptions::default();
    let c = stream_ctx(&options);
    let input = fixture("gemini/chat-stream-sse/upstream-stream.txt");
    assert_kong_stream(&all_splits(&c, &input));
}

#[test]
fn stream_usage_chunk_when_asked() {
    let options = ModelOptions::default();
    let mut c = stream_ctx(&options);
    c.include_usage = true;
    let input = fixture("gemini/chat-stream-sse/upstream-stream.txt");
    let got = sse_payloads(&run_stream(&mut GeminiStream::new(&c), input.as_bytes(), 3));
    assert_eq!(
        got[3]["usage"],
        json!({"prompt_tokens": 18, "completion_tokens": 2, "total_tokens": 20})
    );
    assert_eq!(got[3]["choices"], json!([]));
    assert_eq!(got[4], "[DONE]");
}

#[test]
fn tool_call_stream_is_streamed_with_ids() {
    let options = ModelOptions::default();
    let c = stream_ctx(&options);
    let input = fixture("gemini/tools-stream/upstream-stream.txt");
    let got = all_splits(&c, &input);
    let expected = sse_payloads(&fixture("gemini/tools-stream/expected-client-stream.txt"));
    assert_eq!(got, expected);
}

#[test]
fn a_whole_json_answer_on_a_stream_is_read_as_one_event() {
    let options = ModelOptions::default();
    let c = stream_ctx(&options);
    let input = fixture("gemini/tools/upstream-response.json");
    let got = all_splits(&c, &input);
    assert_eq!(got.len(), 4);
    let call = &got[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "check_stock");
    assert_eq!(call["id"], "call_test_0");
    assert_eq!(
        got[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
        r#"{"product_name":"NewPhone"}"#
    );
    assert_eq!(got[2]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(got[3], "[DONE]");
}

#[test]
fn completions_stream_gives_text_completion_chunks() {
    let options = ModelOptions::default();
    let c = ctx(RouteType::Completions, "gemini-1.5-flash", true, &options);
    let input = fixture("gemini/chat-stream/upstream-stream.json");
    let got = all_splits(&c, &input);
    assert_eq!(got[0]["object"], "text_completion");
    assert_eq!(got[0]["choices"][0]["text"], "Ten");
    assert_eq!(got[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(got[3], "[DONE]");
}

#[test]
fn stream_errors_and_blocked_prompts() {
    let options = ModelOptions::default();
    let c = stream_ctx(&options);
    let mut s = GeminiStream::new(&c);
    let mut out = BytesMut::new();
    let err = s
        .feed(
            b"data: {\"error\":{\"code\":503,\"message\":\"overloaded\"}}\n\n",
            &mut out,
        )
        .unwrap_err();
    assert_eq!(err.0, "overloaded");

    let mut s = GeminiStream::new(&c);
    let err = s.feed(b"[{\"candidates\":[]}}", &mut out).unwrap_err();
    assert!(err.0.starts_with("gemini stream: "), "{}", err.0);

    let blocked = "data: {\"promptFeedback\":{\"blockReason\":\"SAFETY\"}}\n\n";
    let got = sse_payloads(&run_stream(
        &mut GeminiStream::new(&c),
        blocked.as_bytes(),
        5,
    ));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(got[0]["choices"][0]["delta"]["role"], "assistant");

    // An empty body is a truncated answer, not an empty one.
    let (text, err) = run_truncated(&mut GeminiStream::new(&c), b"", 0);
    assert!(text.is_empty());
    assert_eq!(err, crate::providers::stream::TRUNCATED);
}

proptest! {
    #[test]
    fn random_input_never_panics(
        data in proptest::collection::vec(any::<u8>(), 0..512),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        framing in 0u8..3,
    ) {
        let options = ModelOptions::default();
        let c = stream_ctx(&options);
        let mut s = GeminiStream::new(&c);
        let mut out = BytesMut::new();
        let mut input = match framing {
            0 => b"[".to_vec(),
            1 => b"{".to_vec(),
            _ => b"data: ".to_vec(),
        };
        input.extend_from_slice(&data);
        for chunk in crate::codec::test_kit::chunk_at(&input, &cuts) {
            if s.feed(&chunk, &mut out).is_err() {
                break;
            }
        }
        let _ = s.finish(&mut out);
        let _ = driver().response(&c, Bytes::from(data.clone()));
    }

    #[test]
    fn random_json_events_never_panic(text in "\\PC{0,64}", n in any::<u64>(), f in any::<bool>()) {
        let options = ModelOptions::default();
        let c = stream_ctx(&options);
        let event = json!({"candidates": [{"content": {"parts": [
            {"text": text}, {"functionCall": {"name": text, "args": n}}, {"thought": f}
        ]}, "finishReason": text}], "usageMetadata": {"promptTokenCount": n, "candidatesTokenCount": n, "thoughtsTokenCount": n}});
        let input = format!("data: {event}\n\n");
        let mut s = GeminiStream::new(&c);
        let mut out = BytesMut::new();
        let _ = s.feed(input.as_bytes(), &mut out);
        let _ = s.finish(&mut out);
        let _ = driver().response(&c, Bytes::from(event.to_string()));
    }
}

// --- Vertex service-account tokens ------------------------------------------------------

fn service_account() -> String {
    fixture("gemini/vertex/test-service-account.json")
}

fn vertex_driver() -> Gemini {
    let config: AiProxyConfig = serde_json::from_value(json!({
        "route_type": "llm/v1/chat",
        "auth": {"gcp_use_service_account": true, "gcp_service_account_json": service_account()},
        "model": {"provider": "gemini", "name": "gemini-1.5-flash", "options": {"gemini": {
            "api_endpoint": "us-central1-aiplatform.googleapis.com",
            "project_id": "my-project", "location_id": "us-central1"}}},
    }))
    .unwrap();
    Gemini::from_config(&config).unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn ai_studio_has_no_token_source() {
    assert!(driver().token_source().is_none());
}

#[test]
fn exchange_request_posts_a_verifiable_rs256_assertion() {
    let source = vertex_driver().token_source().unwrap();
    let now = unix_now();
    let req = source.exchange_request(now).unwrap();
    assert_eq!(req.method, actix_web::http::Method::POST);
    assert_eq!(req.url, "https://oauth2.googleapis.com/token");
    assert!(req.headers.contains(&(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded")
    )));
    let body = std::str::from_utf8(&req.body).unwrap();
    let assertion = body
        .strip_prefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=")
        .unwrap();

    let public = fixture("gemini/vertex/test-public-key.pem");
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(public.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["https://oauth2.googleapis.com/token"]);
    let data = jsonwebtoken::decode::<Value>(assertion, &key, &validation).unwrap();
    let claims = data.claims;
    assert_eq!(
        claims["iss"],
        "gateway-test@test-project.iam.gserviceaccount.com"
    );
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );
    assert_eq!(claims["iat"], now);
    assert_eq!(claims["exp"], now + 3600);
    assert_eq!(
        data.header.kid.as_deref(),
        Some("0000000000000000000000000000000000000000")
    );
}

#[test]
fn tokens_are_cached_until_a_minute_before_expiry() {
    let source = vertex_driver().token_source().unwrap();
    assert_eq!(source.cached(1000), None);
    let token = source
        .store(
            br#"{"access_token":"ya29.t","expires_in":3599,"token_type":"Bearer"}"#,
            1000,
        )
        .unwrap();
    assert_eq!(token, "ya29.t");
    assert_eq!(source.cached(1000).as_deref(), Some("ya29.t"));
    assert_eq!(source.cached(1000 + 3599 - 61).as_deref(), Some("ya29.t"));
    assert_eq!(source.cached(1000 + 3599 - 60), None);
    let err = source
        .store(b"{\"error\":\"invalid_grant\"}", 1000)
        .unwrap_err();
    assert!(matches!(err, GatewayError::Identity(_)));
    // A wild lifetime from the wire does not overflow.
    let huge = format!(r#"{{"access_token":"t2","expires_in":{}}}"#, u64::MAX);
    assert_eq!(source.store(huge.as_bytes(), u64::MAX).unwrap(), "t2");
}

#[test]
fn service_account_problems_are_config_errors_without_secrets() {
    let config = |sa: &str| -> AiProxyConfig {
        serde_json::from_value(json!({
            "route_type": "llm/v1/chat",
            "auth": {"gcp_use_service_account": true, "gcp_service_account_json": sa},
            "model": {"provider": "gemini", "name": "gemini-1.5-flash"},
        }))
        .unwrap()
    };
    let err = Gemini::from_config(&config("{\"private_key\": \"SECRET\""))
        .err()
        .unwrap()
        .to_string();
    assert!(!err.contains("SECRET"), "{err}");
    let err = Gemini::from_config(&config(
            r#"{"client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n"}"#,
        ))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("private_key is not an RSA private key"),
        "{err}"
    );
    assert!(!err.contains("SECRET"));
    // A custom token_uri is honoured.
    let mut sa: Value = serde_json::from_str(&service_account()).unwrap();
    sa["token_uri"] = json!("https://sts.example.test/token");
    let d = Gemini::from_config(&config(&sa.to_string())).unwrap();
    let req = d
        .token_source()
        .unwrap()
        .exchange_request(unix_now())
        .unwrap();
    assert_eq!(req.url, "https://sts.example.test/token");
}

#[test]
fn thoughts_are_reasoning_and_reasoning_effort_is_a_thinking_budget() {
    let v = respond(
        RouteType::Chat,
        r#"{"candidates":[{"content":{"parts":[{"text":"Pondering.","thought":true},{"text":"14"}]},
            "finishReason":"STOP"}],
            "usageMetadata":{"promptTokenCount":30,"candidatesTokenCount":1,"thoughtsTokenCount":7,"cachedContentTokenCount":20}}"#,
    )
    .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "14");
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        "Pondering."
    );
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        7
    );
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 20);
    let out = chat(
        json!({"model": "gemini-2.5-flash", "reasoning_effort": "medium",
        "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(
        out["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 4096, "includeThoughts": true})
    );
    let off = chat(
        json!({"model": "gemini-2.5-flash", "reasoning_effort": "none",
        "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(
        off["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 0, "includeThoughts": false})
    );
}
