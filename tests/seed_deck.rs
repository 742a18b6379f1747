//! The seed's decK files (Kong workshop `ai-proxy.yaml`, with and without `model.name`), used
//! verbatim except for `upstream_url`s pointed at an independent mock, driven with the official
//! OpenAI SDK.

mod common;

use common::*;
use serde_json::Value;

const KEY: &str = "sk-workshop-test-key";

fn seed(file: &str, mock: u16) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/deck/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let text = text
        .replace(
            "                  temperature: 1.0\n",
            &format!(
                "                  temperature: 1.0\n                  upstream_url: http://127.0.0.1:{mock}/v1/chat/completions\n"
            ),
        )
        .replace(
            "http://localhost:11434/api/chat",
            &format!("http://127.0.0.1:{mock}/api/chat"),
        );
    assert!(text.contains(&format!("127.0.0.1:{mock}/v1/chat")));
    write_deck(&text)
}

fn sdk(base: &str, mode: &str, prompt: &str, model: &str) -> Value {
    serde_json::from_str(&run_python("sdk_client.py", &[base, mode, prompt, model])).unwrap()
}

#[test]
fn seed_file_serves_chat_and_streams_with_the_configured_key() {
    let mock = start_mock();
    let gw = start_gateway(
        &seed("ai-proxy.yaml", mock.port),
        &[("DECK_OPENAI_API_KEY", KEY)],
    );
    let base = gw.url("/openai");

    let out = sdk(&base, "chat", "workshop question", "gpt-4o");
    assert_eq!(out["content"], "Mock openai reply to: workshop question");
    assert_eq!(out["header"], "openai/gpt-4o");
    let seen = mock_last(&mock);
    assert_eq!(seen["headers"]["authorization"], format!("Bearer {KEY}"));
    assert_eq!(seen["body"]["max_tokens"], 512);
    assert_eq!(seen["body"]["temperature"], 1.0);

    let out = sdk(&base, "stream", "workshop stream", "gpt-4o");
    assert_eq!(out["content"], "Mock openai reply to: workshop stream");
    assert_eq!(out["finish_reason"], "stop");

    let ollama = gw.url("/api/chat");
    let out = sdk(&ollama, "stream", "local model", "llama3");
    assert_eq!(out["content"], "Mock ollama reply to: local model");
    let seen = mock_last(&mock);
    assert_eq!(seen["path"], "/api/chat");
    // No auth configured on a self-hosted route: Kong forwards the client's headers untouched.
    assert_eq!(
        seen["headers"]["authorization"],
        "Bearer sk-client-key-must-not-reach-upstream"
    );
}

#[test]
fn seed_file_without_model_lets_the_client_choose() {
    let mock = start_mock();
    let gw = start_gateway(
        &seed("ai-proxy-no-model.yaml", mock.port),
        &[("DECK_OPENAI_API_KEY", KEY)],
    );
    let out = sdk(&gw.url("/openai"), "chat", "pick a model", "gpt-4o-mini");
    assert_eq!(out["header"], "openai/gpt-4o-mini");
    assert_eq!(mock_last(&mock)["body"]["model"], "gpt-4o-mini");
}
