//! The real binary against the bundled mock: OpenAI, Azure, Mistral and Llama2/Ollama routes,
//! Kong's request rules seen from the outside (raw HTTP, so every byte is visible).

mod common;

use common::*;
use serde_json::{json, Value};

struct Setup {
    mock: Proc,
    gw: Proc,
}

fn setup_with(extra_routes: &[(&str, &str, String)]) -> Setup {
    let mock = start_mock();
    let m = mock.port;
    let mut routes: Vec<(&str, &str, String)> = vec![
        (
            "openai-chat",
            "/openai",
            format!(
                r#"route_type: llm/v1/chat
auth: {{header_name: Authorization, header_value: "Bearer sk-gateway-openai"}}
model:
  provider: openai
  name: gpt-4o
  options: {{max_tokens: 77, temperature: 0.3, upstream_url: "http://127.0.0.1:{m}/v1/chat/completions"}}"#
            ),
        ),
        (
            "openai-completions",
            "/openai/completions",
            format!(
                r#"route_type: llm/v1/completions
auth: {{header_name: Authorization, header_value: "Bearer sk-gateway-openai"}}
model: {{provider: openai, name: gpt-3.5-turbo-instruct, options: {{upstream_url: "http://127.0.0.1:{m}/v1/completions"}}}}"#
            ),
        ),
        (
            "openai-embeddings",
            "/openai/embeddings",
            format!(
                r#"route_type: llm/v1/embeddings
auth: {{header_name: Authorization, header_value: "Bearer sk-gateway-openai"}}
model: {{provider: openai, name: text-embedding-3-small, options: {{upstream_url: "http://127.0.0.1:{m}/v1/embeddings"}}}}"#
            ),
        ),
        (
            "byo-model",
            "/byo",
            format!(
                r#"route_type: llm/v1/chat
model: {{provider: openai, options: {{upstream_url: "http://127.0.0.1:{m}/v1/chat/completions"}}}}"#
            ),
        ),
        (
            "deny",
            "/deny",
            format!(
                r#"route_type: llm/v1/chat
response_streaming: deny
model: {{provider: openai, name: gpt-4o, options: {{upstream_url: "http://127.0.0.1:{m}/v1/chat/completions"}}}}"#
            ),
        ),
        (
            "always",
            "/always",
            format!(
                r#"route_type: llm/v1/chat
response_streaming: always
model: {{provider: openai, name: gpt-4o, options: {{upstream_url: "http://127.0.0.1:{m}/v1/chat/completions"}}}}"#
            ),
        ),
        (
            "small-body",
            "/small",
            format!(
                r#"route_type: llm/v1/chat
max_request_body_size: 200
model: {{provider: openai, name: gpt-4o, options: {{upstream_url: "http://127.0.0.1:{m}/v1/chat/completions"}}}}"#
            ),
        ),
        (
            "azure",
            "/azure",
            format!(
                r#"route_type: llm/v1/chat
auth: {{header_name: api-key, header_value: az-secret-key}}
model:
  provider: azure
  name: gpt-4o
  options: {{azure_instance: demo, azure_deployment_id: gpt4o-dep, azure_api_version: "2024-02-01", upstream_url: "http://127.0.0.1:{m}/openai/deployments/gpt4o-dep/chat/completions"}}"#
            ),
        ),
        (
            "mistral",
            "/mistral",
            format!(
                r#"route_type: llm/v1/chat
auth: {{header_name: Authorization, header_value: "Bearer mistral-key"}}
model: {{provider: mistral, name: mistral-small-latest, options: {{mistral_format: openai, top_k: 5, upstream_url: "http://127.0.0.1:{m}/v1/chat/completions"}}}}"#
            ),
        ),
        (
            "ollama",
            "/api/chat",
            format!(
                r#"route_type: llm/v1/chat
model: {{provider: llama2, name: llama3, options: {{llama2_format: ollama, max_tokens: 64, upstream_url: "http://127.0.0.1:{m}/api/chat"}}}}"#
            ),
        ),
    ];
    routes.extend(extra_routes.iter().cloned());
    let borrowed: Vec<(&str, &str, &str)> = routes
        .iter()
        .map(|(a, b, c)| (*a, *b, c.as_str()))
        .collect();
    let path = write_deck(&deck(&borrowed));
    let gw = start_gateway(&path, &[]);
    Setup { mock, gw }
}

fn setup() -> Setup {
    setup_with(&[])
}

fn chat(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

fn expected_reply(provider: &str, text: &str) -> String {
    format!("Mock {provider} reply to: {text}")
}

#[test]
fn chat_non_stream_translates_and_injects() {
    let s = setup();
    mock_clear(&s.mock);
    let r = request(
        s.gw.port,
        "POST",
        "/openai/chat/completions",
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer sk-client-wrong"),
        ],
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "ping one"}], "max_tokens": 5, "temperature": 1.5, "top_k": 3})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-kong-llm-model"), Some("openai/gpt-4o"));
    let body = r.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        expected_reply("openai", "ping one")
    );
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let seen = mock_last(&s.mock);
    assert_eq!(seen["path"], "/v1/chat/completions");
    assert_eq!(seen["headers"]["authorization"], "Bearer sk-gateway-openai");
    // Config options win over the client's; top_k is not an OpenAI field.
    assert_eq!(seen["body"]["max_tokens"], 77);
    assert_eq!(seen["body"]["temperature"], 0.3);
    assert_eq!(seen["body"]["stream"], false);
    assert!(seen["body"].get("top_k").is_none());
}

#[test]
fn bare_prefix_is_a_chat_request_too() {
    let s = setup();
    let r = post_json(s.gw.port, "/openai", &chat("bare prefix"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        expected_reply("openai", "bare prefix")
    );
}

#[test]
fn model_rules_use_kongs_texts() {
    let s = setup();
    let mut body = chat("x");
    body["model"] = json!("gpt-3.5");
    let r = post_json(s.gw.port, "/openai/chat/completions", &body);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": {"message": "cannot use own model - must be: gpt-4o", "type": "invalid_request_error"}})
    );
    let r = post_json(s.gw.port, "/byo/chat/completions", &chat("x"));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "model parameter not found in request, nor in gateway configuration"
    );
    let mut body = chat("byo");
    body["model"] = json!("my-own-model");
    let r = post_json(s.gw.port, "/byo/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-kong-llm-model"), Some("openai/my-own-model"));
    let r = post_json(s.gw.port, "/openai/chat/completions", &json!({"foo": 1}));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "request body doesn't contain valid prompts"
    );
}

#[test]
fn unknown_path_gets_kongs_404() {
    let s = setup();
    let r = post_json(s.gw.port, "/nowhere", &chat("x"));
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"message": "no Route matched with those values"})
    );
}

#[test]
fn streaming_deny_and_always() {
    let s = setup();
    let mut body = chat("stream please");
    body["stream"] = json!(true);
    let r = post_json(s.gw.port, "/deny", &body);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "response streaming is not enabled for this LLM"
    );
    let r = post_json(s.gw.port, "/always", &chat("forced stream"));
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let content: String = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, expected_reply("openai", "forced stream"));
}

#[test]
fn body_over_the_limit_gets_413() {
    let s = setup();
    let big = "x".repeat(500);
    let r = post_json(s.gw.port, "/small", &chat(&big));
    assert_eq!(r.status, 413);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("200 bytes"));
}

#[test]
fn completions_and_embeddings_routes() {
    let s = setup();
    let r = post_json(
        s.gw.port,
        "/openai/completions",
        &json!({"prompt": "complete me"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "text_completion");
    assert_eq!(
        r.json()["choices"][0]["text"],
        expected_reply("openai", "complete me")
    );
    let r = post_json(
        s.gw.port,
        "/openai/embeddings",
        &json!({"input": ["a b", "c"]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        r.header("x-kong-llm-model"),
        Some("openai/text-embedding-3-small")
    );
}

#[test]
fn azure_gets_api_key_and_api_version_and_no_client_bearer() {
    let s = setup();
    mock_clear(&s.mock);
    let r = request(
        s.gw.port,
        "POST",
        "/azure/chat/completions",
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer sk-client"),
        ],
        chat("hello azure").to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-kong-llm-model"), Some("azure/gpt-4o"));
    let seen = mock_last(&s.mock);
    assert_eq!(seen["headers"]["api-key"], "az-secret-key");
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    assert_eq!(seen["query"], "api-version=2024-02-01");
}

#[test]
fn mistral_openai_format_drops_top_k() {
    let s = setup();
    mock_clear(&s.mock);
    let r = post_json(s.gw.port, "/mistral", &chat("bonjour"));
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = mock_last(&s.mock);
    assert_eq!(seen["body"]["model"], "mistral-small-latest");
    assert!(seen["body"].get("top_k").is_none());
    assert_eq!(seen["headers"]["authorization"], "Bearer mistral-key");
}

#[test]
fn ollama_chat_and_ndjson_stream() {
    let s = setup();
    mock_clear(&s.mock);
    let r = post_json(s.gw.port, "/api/chat", &chat("hi llama"));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        expected_reply("ollama", "hi llama")
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let seen = mock_last(&s.mock);
    assert_eq!(seen["body"]["options"]["num_predict"], 64);
    assert_eq!(seen["body"]["stream"], false);

    let mut body = chat("stream llama");
    body["stream"] = json!(true);
    let r = post_json(s.gw.port, "/api/chat", &body);
    assert_eq!(r.status, 200);
    let text = r.text();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, expected_reply("ollama", "stream llama"));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[test]
fn provider_errors_keep_status_and_body() {
    let s = setup();
    let r = request(
        s.gw.port,
        "POST",
        "/openai/chat/completions",
        &[
            ("content-type", "application/json"),
            ("x-mock-fault", "status=401"),
        ],
        chat("x").to_string().as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert!(r.json()["error"]["message"].is_string());
    assert_eq!(r.header("x-kong-llm-model"), Some("openai/gpt-4o"));
    // Throttling hints reach the client so SDKs can pace their retries.
    let r = request(
        s.gw.port,
        "POST",
        "/openai/chat/completions",
        &[
            ("content-type", "application/json"),
            ("x-mock-fault", "status=429"),
        ],
        chat("x").to_string().as_bytes(),
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
}

#[test]
fn sdk_chat_stream_completions_embeddings() {
    let s = setup();
    let base = s.gw.url("/openai");
    let out: Value = serde_json::from_str(&run_python(
        "sdk_client.py",
        &[&base, "chat", "sdk hello", "gpt-4o"],
    ))
    .unwrap();
    assert_eq!(out["content"], expected_reply("openai", "sdk hello"));
    assert_eq!(out["header"], "openai/gpt-4o");
    assert_eq!(out["finish_reason"], "stop");

    let out: Value = serde_json::from_str(&run_python(
        "sdk_client.py",
        &[&base, "stream", "sdk stream", "gpt-4o"],
    ))
    .unwrap();
    assert_eq!(out["content"], expected_reply("openai", "sdk stream"));
    assert_eq!(out["role"], "assistant");
    assert_eq!(out["finish_reason"], "stop");
    assert!(out["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let out: Value = serde_json::from_str(&run_python(
        "sdk_client.py",
        &[
            &base,
            "completions",
            "sdk complete",
            "gpt-3.5-turbo-instruct",
        ],
    ))
    .unwrap();
    assert_eq!(out["text"], expected_reply("openai", "sdk complete"));

    let out: Value = serde_json::from_str(&run_python(
        "sdk_client.py",
        &[&base, "embeddings", "sdk embed", "text-embedding-3-small"],
    ))
    .unwrap();
    assert_eq!(out["count"], 2);
    assert!(out["dims"].as_u64().unwrap() > 0);

    let azure = s.gw.url("/azure");
    let out: Value = serde_json::from_str(&run_python(
        "sdk_client.py",
        &[&azure, "stream", "azure stream", "gpt-4o"],
    ))
    .unwrap();
    assert_eq!(out["content"], expected_reply("azure", "azure stream"));

    let ollama = s.gw.url("/api/chat");
    let out: Value = serde_json::from_str(&run_python(
        "sdk_client.py",
        &[&ollama, "stream", "ollama sdk", "llama3"],
    ))
    .unwrap();
    assert_eq!(out["content"], expected_reply("ollama", "ollama sdk"));
    assert!(out["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}
