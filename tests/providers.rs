//! Every provider x route type x stream/non-stream through the official OpenAI Python SDK, using
//! the demo decK file (`settings/kong.yaml`) pointed at a mock provider of the test's own: this
//! also proves the demo config works. Content, finish_reason, usage and tool calls are checked
//! against what the mock was asked (it answers `Mock <label> reply to: <prompt>`).

mod common;

use common::*;
use serde_json::{json, Value};

struct Case {
    route: &'static str,
    mode: &'static str,
    model: &'static str,
    /// The mock's name for the wire format that answered.
    label: &'static str,
}

const fn case(
    route: &'static str,
    mode: &'static str,
    model: &'static str,
    label: &'static str,
) -> Case {
    Case {
        route,
        mode,
        model,
        label,
    }
}

const CASES: &[Case] = &[
    case("/openai", "chat", "gpt-4o-mini", "openai"),
    case("/openai", "stream", "gpt-4o-mini", "openai"),
    case("/openai", "tools", "gpt-4o-mini", "openai"),
    case("/openai", "stream-tools", "gpt-4o-mini", "openai"),
    case("/openai", "completions", "gpt-3.5-turbo-instruct", "openai"),
    case(
        "/openai",
        "stream-completions",
        "gpt-3.5-turbo-instruct",
        "openai",
    ),
    case("/openai", "embeddings", "text-embedding-3-small", "openai"),
    case("/azure", "chat", "gpt-4o", "azure"),
    case("/azure", "stream", "gpt-4o", "azure"),
    case("/azure", "tools", "gpt-4o", "azure"),
    case("/mistral", "chat", "mistral-small-latest", "openai"),
    case("/mistral", "stream", "mistral-small-latest", "openai"),
    case("/ollama", "chat", "llama3", "ollama"),
    case("/ollama", "stream", "llama3", "ollama"),
    case("/ollama", "tools", "llama3", "ollama"),
    case("/ollama", "completions", "llama3", "ollama"),
    case("/ollama", "stream-completions", "llama3", "ollama"),
    case("/llama2", "chat", "llama2-7b-chat", "llama2"),
    case("/anthropic", "chat", "claude-3-5-haiku-latest", "anthropic"),
    case(
        "/anthropic",
        "stream",
        "claude-3-5-haiku-latest",
        "anthropic",
    ),
    case(
        "/anthropic",
        "tools",
        "claude-3-5-haiku-latest",
        "anthropic",
    ),
    case(
        "/anthropic",
        "stream-tools",
        "claude-3-5-haiku-latest",
        "anthropic",
    ),
    case("/anthropic", "completions", "claude-2.1", "anthropic"),
    case("/gemini", "chat", "gemini-1.5-flash", "gemini"),
    case("/gemini", "stream", "gemini-1.5-flash", "gemini"),
    case("/gemini", "tools", "gemini-1.5-flash", "gemini"),
    case("/gemini", "stream-tools", "gemini-1.5-flash", "gemini"),
    case("/gemini", "embeddings", "text-embedding-004", "gemini"),
    case("/vertex", "chat", "gemini-1.5-pro", "gemini"),
    case("/vertex", "stream", "gemini-1.5-pro", "gemini"),
    case(
        "/bedrock",
        "chat",
        "anthropic.claude-3-haiku-20240307-v1:0",
        "bedrock",
    ),
    case(
        "/bedrock",
        "stream",
        "anthropic.claude-3-haiku-20240307-v1:0",
        "bedrock",
    ),
    case(
        "/bedrock",
        "tools",
        "anthropic.claude-3-haiku-20240307-v1:0",
        "bedrock",
    ),
    case(
        "/bedrock",
        "stream-tools",
        "anthropic.claude-3-haiku-20240307-v1:0",
        "bedrock",
    ),
    // Titan embeds one text per call (Kong: no array input for Bedrock).
    case(
        "/bedrock",
        "embedding",
        "amazon.titan-embed-text-v2:0",
        "bedrock",
    ),
    case("/cohere", "chat", "command-r", "cohere"),
    case("/cohere", "stream", "command-r", "cohere"),
    case("/cohere", "tools", "command-r", "cohere"),
    case("/cohere", "completions", "command", "cohere"),
    case("/cohere", "embeddings", "embed-english-v3.0", "cohere"),
    case(
        "/huggingface",
        "chat",
        "mistralai/Mistral-7B-Instruct-v0.2",
        "huggingface",
    ),
    case(
        "/huggingface",
        "stream",
        "mistralai/Mistral-7B-Instruct-v0.2",
        "huggingface",
    ),
    case(
        "/huggingface",
        "completions",
        "mistralai/Mistral-7B-Instruct-v0.2",
        "huggingface",
    ),
    case(
        "/huggingface",
        "embeddings",
        "sentence-transformers/all-MiniLM-L6-v2",
        "huggingface",
    ),
];

fn demo_deck_for(mock: u16) -> std::path::PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/settings/kong.yaml"))
        .unwrap()
        .replace("127.0.0.1:18181", &format!("127.0.0.1:{mock}"));
    write_deck(&text)
}

fn check(case: &Case, prompt: &str, out: &Value) -> Result<(), String> {
    let expected = format!("Mock {} reply to: {prompt}", case.label);
    let fail = |what: &str| Err(format!("{} {}: {what}: {out}", case.route, case.mode));
    if let Some(e) = out.get("exception") {
        return fail(&format!("SDK raised {e}"));
    }
    match case.mode {
        "chat" => {
            if out["content"] != json!(expected) {
                return fail("content");
            }
            if out["finish_reason"] != "stop" || out["object"] != "chat.completion" {
                return fail("finish_reason/object");
            }
            if !out["header"]
                .as_str()
                .is_some_and(|h| h.ends_with(case.model))
            {
                return fail("X-Kong-LLM-Model");
            }
            if out["usage"]["completion_tokens"].as_u64().unwrap_or(0) == 0 {
                return fail("usage");
            }
        }
        "stream" => {
            if out["content"] != json!(expected) || out["role"] != "assistant" {
                return fail("content/role");
            }
            if out["finish_reason"] != "stop" {
                return fail("finish_reason");
            }
            if !out["usage"]["total_tokens"].is_u64() {
                return fail("usage chunk (stream_options.include_usage)");
            }
        }
        "tools" | "stream-tools" => {
            let calls = out["tool_calls"].as_array().cloned().unwrap_or_default();
            let [call] = calls.as_slice() else {
                return fail("exactly one tool call");
            };
            if call["name"] != "add" || call["id"].as_str().is_none_or(str::is_empty) {
                return fail("tool call name/id");
            }
            let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap_or(""))
                .map_err(|e| format!("{} {}: arguments not JSON: {e}", case.route, case.mode))?;
            if args != json!({"a": 2, "b": 12}) {
                return fail("tool call arguments");
            }
            if out["finish_reason"] != "tool_calls" {
                return fail("finish_reason");
            }
        }
        "completions" | "stream-completions" => {
            if out["text"] != json!(expected) || out["finish_reason"] != "stop" {
                return fail("text/finish_reason");
            }
        }
        "embeddings" | "embedding" => {
            let count = if case.mode == "embeddings" { 2 } else { 1 };
            if out["count"] != count || out["dims"].as_u64().unwrap_or(0) == 0 {
                return fail("embedding vectors");
            }
        }
        other => return Err(format!("unknown mode {other}")),
    }
    Ok(())
}

#[test]
fn every_provider_through_the_openai_sdk() {
    let mock = start_mock();
    let gw = start_gateway(&demo_deck_for(mock.port), &[]);
    let cases: Vec<Value> = CASES
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "base": gw.url(c.route),
                "mode": c.mode,
                "prompt": format!("question {i} via {}", c.route),
                "model": c.model,
            })
        })
        .collect();
    let out: Vec<Value> = serde_json::from_str(&run_python(
        "sdk_client.py",
        &["batch", &json!(cases).to_string()],
    ))
    .unwrap();
    assert_eq!(out.len(), CASES.len());
    let failures: Vec<String> = CASES
        .iter()
        .zip(&cases)
        .zip(&out)
        .filter_map(|((c, input), result)| {
            check(c, input["prompt"].as_str().unwrap(), result).err()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn json_schema_with_reasoning_is_claudes_structured_output_on_anthropic_and_bedrock() {
    let mock = start_mock();
    let gw = start_gateway(&demo_deck_for(mock.port), &[]);
    let run = |route: &str, model: &str| -> Value {
        let args = [
            gw.url(route),
            "json-reasoning".into(),
            "add 2 and 12".into(),
            model.into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        serde_json::from_str(&run_python("sdk_client.py", &args)).unwrap()
    };
    // Route, model, the mock's path and where the request carries the schema.
    for (route, model, path, format) in [
        (
            "/anthropic",
            "claude-3-5-haiku-latest",
            "/v1/messages",
            "/output_config/format/type",
        ),
        (
            "/bedrock",
            "anthropic.claude-3-haiku-20240307-v1:0",
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            "/outputConfig/textFormat/type",
        ),
    ] {
        let out = run(route, model);
        // Thinking and Claude's own structured output, instead of the forced tool call
        // Claude refuses while thinking (the mock refuses it too).
        let schema = &out["json_schema"];
        assert_eq!(schema["status"], 200, "{route}: {out}");
        assert_eq!(schema["content"], json!({"a": 2, "b": 12}));
        assert_eq!(
            schema["reasoning"],
            "Mock thinking: the user wants a short answer."
        );
        assert_eq!(schema["finish_reason"], "stop");
        let sent = mock_log(&mock)
            .into_iter()
            .rfind(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("{route}: no {path}"));
        assert_eq!(
            sent["body"].pointer(format),
            Some(&json!("json_schema")),
            "{sent}"
        );
        // A schemaless JSON object cannot combine with thinking: the gateway says so.
        let refused = &out["json_object"];
        assert_eq!(refused["status"], 400, "{route}: {out}");
        let message = refused["message"].as_str().unwrap();
        assert!(
            message.contains("json_object") && message.contains("reasoning_effort"),
            "{message}"
        );
    }
    // Nothing refused reached the mock: one call per provider.
    assert_eq!(mock_stats(&mock)["requests"], 2);
}

#[test]
fn a_bedrock_error_frame_mid_stream_reaches_the_openai_sdk_as_an_error() {
    let mock = start_mock();
    let gw = start_gateway(&demo_deck_for(mock.port), &[]);
    mock_set_faults(&mock, "stream_error");
    let message = sdk_stream_error(
        &gw.url("/bedrock"),
        "Stream then fail",
        "anthropic.claude-3-haiku-20240307-v1:0",
    );
    assert!(message.contains("Too many requests"), "{message}");
}
