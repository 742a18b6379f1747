//! `llm/v1/responses` on providers that only chat (anthropic, gemini, bedrock, cohere, mistral):
//! the official OpenAI SDK's `responses.create` / `responses.stream` get typed Response objects
//! and the full event sequence, translated from each provider's chat API on the bundled mock;
//! stateful calls are a clear 400.

mod common;

use common::*;
use serde_json::Value;

fn responses_deck(mock: u16) -> String {
    let m = format!("http://127.0.0.1:{mock}");
    let routes = [
        (
            "anthropic",
            format!("route_type: llm/v1/responses\nauth: {{header_name: x-api-key, header_value: sk-ant}}\nmodel: {{provider: anthropic, name: claude-3-5-haiku-latest, options: {{anthropic_version: \"2023-06-01\", max_tokens: 256, upstream_url: \"{m}/v1/messages\"}}}}\n"),
        ),
        (
            "gemini",
            format!("route_type: llm/v1/responses\nauth: {{param_name: key, param_value: gem-key, param_location: query}}\nmodel: {{provider: gemini, name: gemini-1.5-flash, options: {{upstream_url: \"{m}\"}}}}\n"),
        ),
        (
            "bedrock",
            format!("route_type: llm/v1/responses\nauth: {{aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: secret}}\nmodel: {{provider: bedrock, name: \"anthropic.claude-3-haiku-20240307-v1:0\", options: {{bedrock: {{aws_region: us-east-1}}, upstream_url: \"{m}\"}}}}\n"),
        ),
        (
            "cohere",
            format!("route_type: llm/v1/responses\nauth: {{header_name: Authorization, header_value: Bearer co-key}}\nmodel: {{provider: cohere, name: command-r, options: {{upstream_url: \"{m}/v1/chat\"}}}}\n"),
        ),
        (
            "mistral",
            format!("route_type: llm/v1/responses\nauth: {{header_name: Authorization, header_value: Bearer mi-key}}\nmodel: {{provider: mistral, name: mistral-small-latest, options: {{mistral_format: openai, upstream_url: \"{m}/v1/chat/completions\"}}}}\n"),
        ),
    ];
    let routes: Vec<(String, String, String)> = routes
        .into_iter()
        .map(|(name, config)| (name.to_string(), format!("/{name}"), config))
        .collect();
    let borrowed: Vec<(&str, &str, &str)> = routes
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    deck(&borrowed)
}

/// The mock's thinking as a `reasoning` item (summary and the signed blocks, where the provider
/// signs) ahead of the answer, and as `response.reasoning_summary_*` events when streamed.
fn assert_reasoning(provider: &str, label: &str, r: &Value) {
    const THINKING: &str = "Mock thinking: the user wants a short answer.";
    assert_eq!(
        r["items"],
        serde_json::json!(["reasoning", "message"]),
        "{provider}: {r}"
    );
    assert_eq!(r["summary"], THINKING, "{provider}: {r}");
    // Gemini's thought summaries are not signed blocks.
    assert_eq!(r["signed"], provider != "gemini", "{provider}: {r}");
    assert_eq!(r["effort"], "low");
    assert_eq!(r["text"], format!("Mock {label} reply to: think first"));
    let s = &r["stream"];
    assert_eq!(s["deltas"], THINKING, "{provider}: {s}");
    assert_eq!(
        s["items"],
        serde_json::json!(["reasoning", "message"]),
        "{provider}: {s}"
    );
    assert_eq!(s["text"], format!("Mock {label} reply to: think first"));
    let types: Vec<&str> = s["types"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let at = |name: &str| types.iter().position(|t| *t == name).unwrap_or(usize::MAX);
    assert!(
        at("response.reasoning_summary_part.added") < at("response.reasoning_summary_text.delta")
            && at("response.reasoning_summary_text.done")
                < at("response.reasoning_summary_part.done")
            && at("response.reasoning_summary_part.done") < at("response.output_text.delta"),
        "{provider}: {types:?}"
    );
}

#[test]
fn the_sdk_speaks_responses_to_providers_that_only_chat() {
    let mock = start_mock();
    let path = write_deck(&responses_deck(mock.port));
    let (gw, status) = start_gateway_with_status(&path, &[]);
    // Route, model, and the mock's name for the wire format that answers.
    // Route, model, the mock's name for the wire format that answers, and whether the
    // provider reasons when asked.
    for (provider, model, label, reasons) in [
        ("anthropic", "claude-3-5-haiku-latest", "anthropic", true),
        ("gemini", "gemini-1.5-flash", "gemini", true),
        (
            "bedrock",
            "anthropic.claude-3-haiku-20240307-v1:0",
            "bedrock",
            true,
        ),
        ("cohere", "command-r", "cohere", false),
        ("mistral", "mistral-small-latest", "openai", false),
    ] {
        let url = gw.url(&format!("/{provider}"));
        let mut args = vec![url.as_str(), model];
        if reasons {
            args.push("reasons");
        }
        let out: Value =
            serde_json::from_str(&run_python("responses_translated.py", &args)).unwrap();
        let c = &out["create"];
        assert_eq!(c["type"], "Response", "{provider}: {out}");
        assert_eq!(c["status"], "completed");
        assert!(c["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(
            c["text"],
            format!("Mock {label} reply to: hello responses"),
            "{provider}"
        );
        assert_eq!(c["header"], format!("{provider}/{model}"));
        let usage = &c["usage"];
        assert!(
            usage["input_tokens"].as_u64().unwrap() > 0,
            "{provider}: {usage}"
        );
        assert!(usage["output_tokens"].as_u64().unwrap() > 0);
        assert_eq!(
            usage["total_tokens"].as_u64().unwrap(),
            usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap()
        );
        // The Response repeats what was asked (the anthropic route configures max_tokens).
        let echo = &out["echo"];
        let max_output = if provider == "anthropic" { 256 } else { 100 };
        assert_eq!(echo["max_output_tokens"], max_output, "{provider}: {echo}");
        assert_eq!(echo["instructions"], "be brief");
        assert_eq!(echo["temperature"], 0.5);
        assert_eq!(echo["top_p"], 0.9);
        assert_eq!(echo["metadata"]["team"], "qa");
        assert_eq!(echo["previous_response_id"], Value::Null);
        assert_eq!(echo["tools"], 0);
        assert_eq!(echo["tool_choice"], "auto");
        assert_eq!(echo["call_tools"][0], "add");
        if reasons {
            assert_reasoning(provider, label, &out["reasoning"]);
        }
        assert_eq!(
            out["items"],
            format!("Mock {label} reply to: item list input")
        );
        assert_eq!(out["tool_call"]["name"], "add", "{provider}: {out}");
        assert_eq!(out["tool_call"]["arguments"]["b"], 12);
        assert_eq!(out["tool_call"]["call_id"], true);
        assert!(
            out["tool_result"].as_str().unwrap().starts_with("Mock"),
            "{provider}: a tool result is answered with text: {out}"
        );

        // Every typed event in order, consecutive sequence numbers, usage at the end.
        let events = out["stream"]["events"].as_array().unwrap();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types.first(),
            Some(&"response.created"),
            "{provider}: {types:?}"
        );
        assert_eq!(
            types.last(),
            Some(&"response.completed"),
            "{provider}: {types:?}"
        );
        for expected in [
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
        ] {
            assert!(
                types.contains(&expected),
                "{provider}: {expected} in {types:?}"
            );
        }
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["seq"], i as u64, "{provider}: {types:?}");
        }
        assert_eq!(
            out["stream"]["text"],
            format!("Mock {label} reply to: stream this please")
        );
        assert!(out["stream"]["usage"]["total_tokens"].as_u64().unwrap() > 0);
        assert_eq!(out["stream_tool"]["calls"][0]["a"], 2, "{provider}: {out}");
        assert!(out["stream_tool"]["items"]
            .as_array()
            .unwrap()
            .contains(&Value::from("function_call")));

        for (call, needle) in [
            ("previous", "previous_response_id"),
            ("retrieve", "stores them"),
            ("hosted_tool", "web_search"),
        ] {
            assert_eq!(out[call]["status"], 400, "{provider} {call}: {out}");
            assert!(
                out[call]["message"].as_str().unwrap().contains(needle),
                "{provider} {call}: {out}"
            );
        }
    }
    // Nothing stateful or untranslatable reached the mock: 6 calls per provider, 2 more where
    // the provider reasons.
    assert_eq!(mock_stats(&mock)["requests"], 36);
    assert_no_leaks(status);
}
