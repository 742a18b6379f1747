//! `llm_format`: provider-native client formats through the real binary against the bundled
//! mock, driven by the providers' official SDKs (Anthropic, Google GenAI, boto3) and raw HTTP.

mod common;

use common::*;
use serde_json::{json, Value};

fn anthropic_routes(m: u16) -> String {
    deck(&[
        (
            "claude-openai",
            "/claude-openai",
            &format!(
                r#"route_type: llm/v1/chat
llm_format: anthropic
auth: {{header_name: Authorization, header_value: "Bearer sk-gateway-openai"}}
model:
  provider: openai
  name: gpt-4o-mini
  options: {{upstream_url: "http://127.0.0.1:{m}/v1/chat/completions"}}"#
            ),
        ),
        (
            "claude-bedrock",
            "/claude-bedrock",
            &format!(
                r#"route_type: llm/v1/chat
llm_format: anthropic
auth: {{aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: gateway-secret}}
model:
  provider: bedrock
  name: anthropic.claude-3-haiku-20240307-v1:0
  options: {{bedrock: {{aws_region: us-east-1}}, upstream_url: "http://127.0.0.1:{m}"}}"#
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
    assert!(
        round_trip.contains(&id) && round_trip.contains("14"),
        "{round_trip}"
    );
    for r in &seen {
        let text = r.to_string();
        assert!(
            !text.contains("sk-ant-client-secret"),
            "client key leaked: {text}"
        );
        assert!(r["headers"].get("anthropic-version").is_none(), "{text}");
        assert!(r["query"].as_str().unwrap_or("").is_empty(), "{text}");
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
