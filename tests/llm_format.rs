//! `llm_format`: provider-native client formats through the real binary against the bundled
//! mock, driven by the providers' official SDKs (Anthropic, Google GenAI, boto3) and raw HTTP.

mod common;

use common::*;
use serde_json::{json, Value};

/// One route's plugin config: `llm_format`, `auth` and `model` as YAML flow text.
fn plugin(format: &str, auth: &str, model: &str) -> String {
    format!("route_type: llm/v1/chat\nllm_format: {format}\nauth: {auth}\nmodel: {model}")
}

fn anthropic_routes(m: u16) -> String {
    deck(&[
        (
            "claude-openai",
            "/claude-openai",
            &plugin(
                "anthropic",
                "{header_name: Authorization, header_value: \"Bearer sk-gateway-openai\"}",
                &format!("{{provider: openai, name: gpt-4o-mini, options: {{upstream_url: \"http://127.0.0.1:{m}/v1/chat/completions\"}}}}"),
            ),
        ),
        (
            "claude-bedrock",
            "/claude-bedrock",
            &plugin(
                "anthropic",
                "{aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: gateway-secret}",
                &format!("{{provider: bedrock, name: anthropic.claude-3-haiku-20240307-v1:0, options: {{bedrock: {{aws_region: us-east-1}}, upstream_url: \"http://127.0.0.1:{m}\"}}}}"),
            ),
        ),
    ])
}

/// The mock's requests since the last clear.
fn mock_requests(mock: &Proc) -> Vec<Value> {
    let r = request(mock.port, "GET", "/__mock/requests", &[], b"");
    r.json().as_array().cloned().unwrap_or_default()
}

fn check_anthropic_sdk(gw: &Proc, mock: &Proc, route: &str, provider_label: &str) {
    mock_clear(mock);
    let out: Value =
        serde_json::from_str(&run_python("anthropic_client.py", &[&gw.url(route)])).unwrap();

    let create = &out["create"];
    assert_eq!(create["type"], "message", "{out}");
    assert_eq!(create["role"], "assistant");
    assert!(create["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(create["stop_reason"], "end_turn");
    assert_eq!(
        create["content"][0]["text"],
        format!("Mock {provider_label} reply to: Say hello")
    );
    // The mock counts words: "You are terse." + "Say hello" = 5 prompt words, 6 reply words.
    assert_eq!(create["usage"]["input_tokens"], 5, "{out}");
    assert_eq!(create["usage"]["output_tokens"], 6);

    let stream = &out["stream"];
    assert_eq!(
        stream["text"],
        format!("Mock {provider_label} reply to: Stream hello")
    );
    let events: Vec<&str> = stream["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"message_start"), "{events:?}");
    assert_eq!(events.last(), Some(&"message_stop"), "{events:?}");
    for needed in [
        "content_block_start",
        "text",
        "content_block_stop",
        "message_delta",
    ] {
        assert!(events.contains(&needed), "{needed} missing in {events:?}");
    }
    assert_eq!(stream["final"]["stop_reason"], "end_turn");
    assert_eq!(stream["final"]["usage"]["output_tokens"], 6, "{out}");
    assert_eq!(stream["final"]["usage"]["input_tokens"], 2, "{out}");

    let first = &out["tools"]["first"];
    assert_eq!(first["stop_reason"], "tool_use", "{out}");
    let call = tool_use(first);
    assert_eq!(call["name"], "add");
    assert_eq!(call["input"], json!({"a": 2, "b": 12}));
    let second = &out["tools"]["second"];
    assert_eq!(second["stop_reason"], "end_turn");
    assert_eq!(
        second["content"][0]["text"],
        format!("Mock {provider_label} reply to: What is 2 + 12?")
    );
    let streamed = &out["stream_tools"];
    assert_eq!(streamed["stop_reason"], "tool_use", "{out}");
    let call = tool_use(streamed);
    assert_eq!(call["input"], json!({"a": 2, "b": 12}));

    let counted = out["count_tokens"].as_u64().unwrap();
    assert!((5..100).contains(&counted), "{counted}");

    assert_eq!(out["bad_request"]["status"], 400, "{out}");
    assert_eq!(out["bad_request"]["body"]["type"], "error", "{out}");
    assert_eq!(
        out["bad_request"]["body"]["error"]["message"],
        "messages[0].role: must be 'user' or 'assistant'"
    );

    // count_tokens and the refused request never reach the provider: 5 calls did.
    let seen = mock_requests(mock);
    assert_eq!(seen.len(), 5, "{seen:?}");
    // The tool round trip reached the provider with the call's id and the tool's answer.
    let round_trip = seen[3]["body"].to_string();
    let id = tool_use(first)["id"].as_str().unwrap().to_string();
    // (Gemini and Cohere v1 tie results to the call by function name, Ollama by position.)
    let names_call = round_trip.contains(&id)
        || round_trip.contains("functionResponse")
        || round_trip.contains("tool_results")
        || round_trip.contains(r#""role":"tool""#);
    assert!(names_call && round_trip.contains("14"), "{round_trip}");
    for r in &seen {
        let text = r.to_string();
        assert!(
            !text.contains("sk-ant-client-secret"),
            "client key leaked: {text}"
        );
        assert!(r["headers"].get("anthropic-version").is_none(), "{text}");
        assert!(
            !r["query"].as_str().unwrap_or("").contains("beta"),
            "{text}"
        );
    }
}

/// The first `tool_use` block of a message.
fn tool_use(message: &Value) -> &Value {
    message["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap_or_else(|| panic!("no tool_use in {message}"))
}

#[test]
fn anthropic_sdk_through_openai_and_bedrock_routes() {
    let mock = start_mock();
    let gw = start_gateway(&write_deck(&anthropic_routes(mock.port)), &[]);
    check_anthropic_sdk(&gw, &mock, "/claude-openai", "openai");
    let seen = mock_requests(&mock);
    // The route's model replaced the SDK's claude-* model; the gateway's key was sent.
    assert_eq!(seen[0]["body"]["model"], "gpt-4o-mini");
    assert_eq!(
        seen[0]["headers"]["authorization"],
        "Bearer sk-gateway-openai"
    );
    assert_eq!(seen[0]["body"]["messages"][0]["role"], "system");
    assert_eq!(seen[0]["body"]["top_k"], Value::Null);

    check_anthropic_sdk(&gw, &mock, "/claude-bedrock", "bedrock");
    let seen = mock_requests(&mock);
    assert!(
        seen[0]["path"]
            .as_str()
            .unwrap()
            .contains("anthropic.claude-3-haiku"),
        "{}",
        seen[0]
    );
    let auth = seen[0]["headers"]["authorization"].as_str().unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        "{auth}"
    );
}

#[test]
fn anthropic_sdk_through_gemini_cohere_huggingface_and_ollama_routes() {
    let mock = start_mock();
    let m = mock.port;
    let deck_text = deck(&[
        (
            "claude-gemini",
            "/claude-gemini",
            &plugin(
                "anthropic",
                "{header_name: x-goog-api-key, header_value: gateway-google-key}",
                &format!("{{provider: gemini, name: gemini-2.0-flash, options: {{upstream_url: \"http://127.0.0.1:{m}\"}}}}"),
            ),
        ),
        (
            "claude-cohere",
            "/claude-cohere",
            &plugin(
                "anthropic",
                "{header_name: Authorization, header_value: \"Bearer gateway-cohere-key\"}",
                &format!("{{provider: cohere, name: command-r, options: {{upstream_url: \"http://127.0.0.1:{m}/v1/chat\"}}}}"),
            ),
        ),
        (
            "claude-hf",
            "/claude-hf",
            &plugin(
                "anthropic",
                "{header_name: Authorization, header_value: \"Bearer gateway-hf-key\"}",
                &format!("{{provider: huggingface, name: mistralai/Mistral-7B-Instruct-v0.2, options: {{upstream_url: \"http://127.0.0.1:{m}/models/mistralai/Mistral-7B-Instruct-v0.2\"}}}}"),
            ),
        ),
        (
            "claude-ollama",
            "/claude-ollama",
            &format!(
                "route_type: llm/v1/chat\nllm_format: anthropic\nmodel: {{provider: llama2, name: llama3, options: {{llama2_format: ollama, upstream_url: \"http://127.0.0.1:{m}/api/chat\"}}}}"
            ),
        ),
    ]);
    let gw = start_gateway(&write_deck(&deck_text), &[]);
    for (route, label) in [
        ("/claude-gemini", "gemini"),
        ("/claude-cohere", "cohere"),
        ("/claude-hf", "huggingface"),
        ("/claude-ollama", "ollama"),
    ] {
        check_anthropic_sdk(&gw, &mock, route, label);
    }
}

#[test]
fn anthropic_sdk_through_azure_mistral_and_vertex_routes() {
    let mock = start_mock();
    let m = mock.port;
    let deck_text = deck(&[
        (
            "claude-azure",
            "/claude-azure",
            &plugin(
                "anthropic",
                "{header_name: api-key, header_value: gateway-azure-key}",
                &format!("{{provider: azure, name: gpt-4o, options: {{azure_instance: demo, azure_deployment_id: gpt4o-dep, azure_api_version: \"2024-10-21\", upstream_url: \"http://127.0.0.1:{m}/openai/deployments/gpt4o-dep/chat/completions\"}}}}"),
            ),
        ),
        (
            "claude-mistral",
            "/claude-mistral",
            &plugin(
                "anthropic",
                "{header_name: Authorization, header_value: \"Bearer gateway-mistral-key\"}",
                &format!("{{provider: mistral, name: mistral-small-latest, options: {{mistral_format: openai, upstream_url: \"http://127.0.0.1:{m}/v1/chat/completions\"}}}}"),
            ),
        ),
        (
            "claude-vertex",
            "/claude-vertex",
            &plugin(
                "anthropic",
                "{header_name: Authorization, header_value: \"Bearer gateway-vertex-token\"}",
                &format!("{{provider: gemini, name: gemini-1.5-pro, options: {{gemini: {{api_endpoint: us-central1-aiplatform.googleapis.com, project_id: demo-project, location_id: us-central1}}, upstream_url: \"http://127.0.0.1:{m}\"}}}}"),
            ),
        ),
    ]);
    let gw = start_gateway(&write_deck(&deck_text), &[]);
    for (route, label, path, key) in [
        (
            "/claude-azure",
            "azure",
            "/openai/deployments/gpt4o-dep/chat/completions",
            "gateway-azure-key",
        ),
        (
            "/claude-mistral",
            "openai",
            "/v1/chat/completions",
            "gateway-mistral-key",
        ),
        (
            "/claude-vertex",
            "gemini",
            "/v1/projects/demo-project/locations/us-central1/publishers/google/models/gemini-1.5-pro:generateContent",
            "gateway-vertex-token",
        ),
    ] {
        check_anthropic_sdk(&gw, &mock, route, label);
        // Where the SDK's calls went, and with which credentials.
        let seen = mock_requests(&mock);
        assert_eq!(seen[0]["path"], path, "{route}: {seen:?}");
        assert_gateway_credentials(&seen, "sk-ant-client-secret", key);
    }
}

#[test]
fn anthropic_format_raw_http_answers_and_headers() {
    let mock = start_mock();
    let gw = start_gateway(&write_deck(&anthropic_routes(mock.port)), &[]);
    let r = request(
        gw.port,
        "POST",
        "/claude-openai/v1/messages",
        &[
            ("content-type", "application/json"),
            ("x-api-key", "sk-ant-client-secret"),
        ],
        json!({"model": "claude-opus-4", "max_tokens": 20, "service_tier": "auto",
               "messages": [{"role": "user", "content": "Hi"}]})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-kong-llm-model"), Some("openai/gpt-4o-mini"));
    assert_eq!(
        r.header("x-ai-gateway-dropped-fields"),
        Some("service_tier")
    );
    assert_eq!(r.json()["content"][0]["text"], "Mock openai reply to: Hi");

    let wrong_path = post_json(gw.port, "/claude-openai/v1/chat/completions", &json!({}));
    assert_eq!(wrong_path.status, 400);
    assert!(wrong_path.text().contains("Anthropic Messages API"));
}

fn native_routes(m: u16) -> String {
    deck(&[
        (
            "anthropic-native",
            "/anthropic-native",
            &plugin(
                "anthropic",
                "{header_name: x-api-key, header_value: sk-gateway-anthropic}",
                &format!("{{provider: anthropic, options: {{anthropic_version: \"2023-06-01\", upstream_url: \"http://127.0.0.1:{m}/v1/messages\"}}}}"),
            ),
        ),
        (
            "gemini-native",
            "/gemini-native",
            &plugin(
                "gemini",
                "{param_name: key, param_value: gateway-google-key, param_location: query}",
                &format!("{{provider: gemini, options: {{upstream_url: \"http://127.0.0.1:{m}\"}}}}"),
            ),
        ),
        (
            "bedrock-native",
            "/bedrock-native",
            &plugin(
                "bedrock",
                "{aws_access_key_id: AKIDGATEWAY, aws_secret_access_key: gateway-secret}",
                &format!("{{provider: bedrock, name: anthropic.claude-3-5-sonnet-20240620-v1:0, options: {{bedrock: {{aws_region: us-east-1}}, upstream_url: \"http://127.0.0.1:{m}\"}}}}"),
            ),
        ),
        (
            "cohere-native",
            "/cohere-native",
            &plugin(
                "cohere",
                "{header_name: Authorization, header_value: \"Bearer gateway-cohere-key\"}",
                &format!("{{provider: cohere, options: {{upstream_url: \"http://127.0.0.1:{m}\"}}}}"),
            ),
        ),
        (
            "hf-native",
            "/hf-native",
            &plugin(
                "huggingface",
                "{header_name: Authorization, header_value: \"Bearer gateway-hf-key\"}",
                &format!("{{provider: huggingface, name: tgi, options: {{upstream_url: \"http://127.0.0.1:{m}\"}}}}"),
            ),
        ),
    ])
}

/// Every request the mock saw carries the gateway's credential and none of the client's.
fn assert_gateway_credentials(seen: &[Value], client_secret: &str, gateway_secret: &str) {
    assert!(!seen.is_empty());
    for r in seen {
        let text = r.to_string();
        assert!(
            !text.contains(client_secret),
            "client credential leaked: {text}"
        );
        assert!(
            text.contains(gateway_secret),
            "gateway credential missing: {text}"
        );
    }
}

#[test]
fn native_sdks_pass_through_with_the_gateways_credentials() {
    let mock = start_mock();
    let gw = start_gateway(&write_deck(&native_routes(mock.port)), &[]);

    // Anthropic SDK, provider anthropic: the native API untouched.
    let out: Value = serde_json::from_str(&run_python(
        "native_clients.py",
        &["anthropic", &gw.url("/anthropic-native")],
    ))
    .unwrap();
    assert_eq!(
        out["create"]["text"], "Mock anthropic reply to: Say hello",
        "{out}"
    );
    assert_eq!(
        out["create"]["id"], "msg_mock",
        "the provider's own answer: {out}"
    );
    assert_eq!(out["create"]["usage"], json!([2, 6]));
    assert_eq!(
        out["stream"]["text"],
        "Mock anthropic reply to: Stream hello"
    );
    assert_eq!(out["stream"]["usage"], json!([2, 6]));
    assert_eq!(out["count_tokens"], 3);
    let seen = mock_requests(&mock);
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2]["path"], "/v1/messages/count_tokens");
    assert_gateway_credentials(&seen, "sk-ant-client-secret", "sk-gateway-anthropic");
    // The native stream's usage still reaches the access log.
    let streamed_usage = |logs: &str| {
        logs.lines().any(|l| {
            l.contains("anthropic-native")
                && l.contains("stream=true")
                && l.contains("prompt_tokens=2 completion_tokens=6")
        })
    };
    assert!(
        poll_until(std::time::Duration::from_secs(5), || streamed_usage(
            &gw.logs()
        )),
        "{}",
        gw.logs()
    );

    // google-genai SDK: generate, stream (SSE) and embeddings, model from the path.
    mock_clear(&mock);
    let out: Value = serde_json::from_str(&run_python(
        "native_clients.py",
        &["genai", &gw.url("/gemini-native")],
    ))
    .unwrap();
    assert_eq!(
        out["generate"]["text"], "Mock gemini reply to: Say hello",
        "{out}"
    );
    assert_eq!(out["generate"]["usage"], json!([2, 6]));
    assert_eq!(out["stream"]["text"], "Mock gemini reply to: Stream hello");
    assert!(out["stream"]["chunks"].as_u64().unwrap() > 1);
    assert_eq!(out["embed"]["count"], 2);
    assert_eq!(out["count_tokens"], 3, "{out}");
    let seen = mock_requests(&mock);
    assert_eq!(
        seen[0]["path"],
        "/v1beta/models/gemini-2.0-flash:generateContent"
    );
    assert_eq!(
        seen[1]["path"],
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    );
    assert_eq!(
        seen[3]["path"],
        "/v1beta/models/gemini-2.0-flash:countTokens"
    );
    assert_gateway_credentials(&seen, "client-google-secret", "gateway-google-key");

    // boto3 bedrock-runtime: re-signed with the route's keys; the configured model wins.
    mock_clear(&mock);
    let out: Value = serde_json::from_str(&run_python(
        "native_clients.py",
        &["boto3", &gw.url("/bedrock-native")],
    ))
    .unwrap();
    assert_eq!(
        out["converse"]["text"], "Mock bedrock reply to: Say hello",
        "{out}"
    );
    assert_eq!(out["converse"]["stop"], "end_turn");
    assert_eq!(out["stream"]["text"], "Mock bedrock reply to: Stream hello");
    assert_eq!(out["stream"]["usage"], json!([2, 6]));
    // invoke-with-response-stream: Claude's events in base64 chunks, passed through.
    let invoke = &out["invoke_stream"];
    assert_eq!(
        invoke["text"], "Mock bedrock reply to: Invoke hello",
        "{out}"
    );
    assert_eq!(invoke["types"][0], "message_start");
    assert_eq!(
        invoke["types"].as_array().unwrap().last().unwrap(),
        "message_stop"
    );
    assert_eq!(invoke["usage"], json!([2, 6]));
    let seen = mock_requests(&mock);
    assert_eq!(
        seen[0]["path"],
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    assert_eq!(
        seen[1]["path"],
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
    );
    assert_eq!(
        seen[2]["path"],
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke-with-response-stream"
    );
    assert_gateway_credentials(&seen, "AKIACLIENTKEY", "AKIDGATEWAY");

    // Bedrock's mid-stream error frames reach boto3 as the error Bedrock raised.
    mock_set_faults(&mock, "stream_error");
    let out: Value = serde_json::from_str(&run_python(
        "native_clients.py",
        &["boto3-errors", &gw.url("/bedrock-native")],
    ))
    .unwrap();
    for call in ["converse_stream", "invoke_stream"] {
        assert_eq!(out[call]["error"], "throttlingException", "{call}: {out}");
        assert!(out[call]["message"]
            .as_str()
            .unwrap()
            .contains("Too many requests"));
    }
    mock_set_faults(&mock, "");
}

#[test]
fn native_rerank_generate_and_path_rules_over_raw_http() {
    let mock = start_mock();
    let gw = start_gateway(&write_deck(&native_routes(mock.port)), &[]);
    let rerank = json!({"model": "rerank-v3.5", "query": "capital of France",
        "documents": ["Berlin is in Germany", "Paris is the capital of France"], "top_n": 1});
    let r = request(
        gw.port,
        "POST",
        "/cohere-native/v2/rerank",
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer client-cohere"),
        ],
        rerank.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["results"],
        json!([{"index": 1, "relevance_score": 1.0}])
    );
    assert_eq!(r.header("x-kong-llm-model"), Some("cohere/rerank-v3.5"));
    let last = mock_last(&mock);
    assert_eq!(last["path"], "/v2/rerank");
    assert_eq!(
        last["headers"]["authorization"],
        "Bearer gateway-cohere-key"
    );
    assert_eq!(last["body"], rerank, "the body passes untouched");

    let r = post_json(
        gw.port,
        "/hf-native/generate_stream",
        &json!({"inputs": "Say hi"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(
        r.text().contains("Mock huggingface reply to: Say hi"),
        "{}",
        r.text()
    );
    assert_eq!(mock_last(&mock)["path"], "/generate_stream");

    // A native stream the provider cuts short ends with an error in the client's own format.
    let cut = |path: &str, body: Value| {
        request(
            gw.port,
            "POST",
            path,
            &[
                ("content-type", "application/json"),
                ("x-mock-fault", "close_mid_stream,chunks=6"),
            ],
            body.to_string().as_bytes(),
        )
    };
    let r = cut(
        "/anthropic-native/v1/messages",
        json!({"model": "claude-3-5-haiku-latest", "max_tokens": 50, "stream": true,
               "messages": [{"role": "user", "content": "Hi"}]}),
    );
    let text = r.text();
    let error = text
        .split("event: error\ndata: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no Anthropic error event: {text}"));
    let error: Value = serde_json::from_str(error).unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["type"], "api_error", "{error}");
    assert!(
        !text.contains("[DONE]") && !text.contains("chat.completion"),
        "{text}"
    );
    let r = cut(
        "/gemini-native/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}),
    );
    let text = r.text();
    assert!(text.contains("data: {\"error\":{\"code\":500,"), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    // Without alt=sse Gemini streams one JSON array, element by element: passed as it is.
    let r = post_json(
        gw.port,
        "/gemini-native/v1beta/models/gemini-2.0-flash:streamGenerateContent",
        &json!({"contents": [{"role": "user", "parts": [{"text": "Array please"}]}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let elements = r.json();
    let text: String = elements
        .as_array()
        .unwrap_or_else(|| panic!("not a JSON array: {}", r.text()))
        .iter()
        .filter_map(|e| e["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "Mock gemini reply to: Array please");
    assert!(r
        .header("x-kong-llm-model")
        .is_some_and(|m| m.starts_with("gemini/")));

    let r = post_json(
        gw.port,
        "/bedrock-native/rerank",
        &json!({"queries": [{"type": "TEXT", "textQuery": {"text": "capital"}}],
                "sources": [{"type": "INLINE", "inlineDocumentSource": {"type": "TEXT",
                             "textDocument": {"text": "the capital"}}}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][0]["relevanceScore"], 1.0);
    let signed = mock_last(&mock);
    assert!(signed["headers"]["authorization"]
        .as_str()
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256 Credential=AKIDGATEWAY/"));

    // Unknown operations and path-traversal model names are refused before any upstream call.
    let r = post_json(
        gw.port,
        "/gemini-native/v1beta/models/x:predict",
        &json!({}),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains(":generateContent"), "{}", r.text());
    let r = post_json(
        gw.port,
        "/gemini-native/v1beta/models/..:generateContent",
        &json!({}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post_json(
        gw.port,
        "/gemini-native/v1beta/models/%2E%2E:generateContent",
        &json!({}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn dropped_fields_are_named_or_refused() {
    let mock = start_mock();
    let m = mock.port;
    let bedrock = format!(
        "{{provider: bedrock, name: anthropic.claude-3-haiku-20240307-v1:0, options: {{bedrock: {{aws_region: us-east-1}}, upstream_url: \"http://127.0.0.1:{m}\"}}}}"
    );
    let aws = "{aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: gateway-secret}";
    let strict =
        format!("route_type: llm/v1/chat\ndropped_fields: reject\nauth: {aws}\nmodel: {bedrock}");
    let strict_claude = format!(
        "{}\ndropped_fields: reject",
        plugin("anthropic", aws, &bedrock)
    );
    let deck_text = deck(&[
        (
            "bedrock-chat",
            "/bedrock-chat",
            &format!("route_type: llm/v1/chat\nauth: {aws}\nmodel: {bedrock}"),
        ),
        ("bedrock-strict", "/bedrock-strict", &strict),
        ("claude-strict", "/claude-strict", &strict_claude),
    ]);
    let gw = start_gateway(&write_deck(&deck_text), &[]);
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "seed": 7,
                      "logit_bias": {"50256": -100}, "n": 1, "temperature": 0.5});
    let r = post_json(gw.port, "/bedrock-chat/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-ai-gateway-dropped-fields"),
        Some("logit_bias, seed")
    );
    assert!(
        poll_until(std::time::Duration::from_secs(5), || gw
            .logs()
            .contains("dropped_fields=logit_bias, seed")),
        "{}",
        gw.logs()
    );
    let clean = post_json(
        gw.port,
        "/bedrock-chat/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(clean.header("x-ai-gateway-dropped-fields"), None);

    mock_clear(&mock);
    let r = post_json(gw.port, "/bedrock-strict/chat/completions", &body);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "no equivalent at provider 'bedrock' for: logit_bias, seed (this route sets dropped_fields: reject)"
    );
    let r = post_json(
        gw.port,
        "/claude-strict/v1/messages",
        &json!({"model": "claude-x", "max_tokens": 10, "service_tier": "auto",
                "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("service_tier"),
        "{}",
        r.text()
    );
    assert!(
        mock_requests(&mock).is_empty(),
        "refused requests never leave"
    );
}
