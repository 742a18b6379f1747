//! Anthropic Messages request (what the client sent) -> OpenAI chat request (the format every
//! provider driver reads). https://docs.anthropic.com/en/api/messages
//!
//! Blocks map one to one where OpenAI has an equivalent: `system` becomes a leading system
//! message, `image` blocks `image_url` parts (base64 sources as data URLs), `tool_use` blocks
//! assistant `tool_calls`, `tool_result` blocks `tool` messages placed before the rest of their
//! user turn (OpenAI requires tool answers right after the call). `thinking` blocks travel as
//! `reasoning_content` plus the de-facto `thinking_blocks` list (with signatures), so providers
//! that need them back (Anthropic, Bedrock Claude) get them. `cache_control` stays on the parts
//! it was set on. Every field without an equivalent is named in `dropped`, never lost silently.

use serde_json::{json, Map, Value};

/// The converted request and the field paths that had no OpenAI equivalent.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub body: Map<String, Value>,
    /// The client's `model` (the route's configured model replaces it).
    pub model: Option<String>,
    pub dropped: Vec<String>,
}

/// Top-level request fields that have a mapping below; anything else is reported dropped.
const MAPPED: [&str; 13] = [
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
];

/// Anthropic `thinking.budget_tokens` -> OpenAI `reasoning_effort`, by Anthropic's own
/// guidance (1,024 is the minimum budget; 16k+ for complex tasks).
pub fn effort_for_budget(budget: u64) -> &'static str {
    match budget {
        0..=4095 => "low",
        4096..=16383 => "medium",
        _ => "high",
    }
}

/// Converts the body; the error is the client's 400 text.
pub fn to_openai(body: &Map<String, Value>) -> Result<Converted, String> {
    let mut dropped = Vec::new();
    for key in body.keys() {
        if !MAPPED.contains(&key.as_str()) {
            dropped.push(key.clone());
        }
    }
    let mut out = Map::new();
    let mut messages = Vec::new();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let parts = text_parts(blocks, "system", &mut dropped);
            messages.push(json!({"role": "system", "content": parts}));
        }
        Some(_) => return Err("system: must be a string or an array of text blocks".into()),
    }
    let Some(turns) = body.get("messages").and_then(Value::as_array) else {
        return Err("messages: field required".into());
    };
    for (i, turn) in turns.iter().enumerate() {
        let path = format!("messages[{i}]");
        match turn.get("role").and_then(Value::as_str) {
            Some("user") => user_turn(turn.get("content"), &path, &mut messages, &mut dropped)?,
            Some("assistant") => {
                messages.push(assistant_turn(turn.get("content"), &path, &mut dropped)?)
            }
            _ => return Err(format!("{path}.role: must be 'user' or 'assistant'")),
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    for key in ["max_tokens", "temperature", "top_p", "top_k"] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(stop) = body.get("stop_sequences").and_then(Value::as_array) {
        if !stop.is_empty() {
            out.insert("stop".into(), Value::Array(stop.clone()));
        }
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
        // The final `message_delta` carries usage, so the provider's usage is always asked for.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(meta) = body.get("metadata").and_then(Value::as_object) {
        for (k, v) in meta {
            match (k.as_str(), v) {
                ("user_id", Value::String(user)) => {
                    out.insert("user".into(), Value::String(user.clone()));
                }
                ("user_id", Value::Null) => {}
                _ => dropped.push(format!("metadata.{k}")),
            }
        }
    }
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let mut converted = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            match tool(t) {
                Some(t) => converted.push(t),
                None => dropped.push(format!("tools[{i}]")),
            }
        }
        if !converted.is_empty() {
            out.insert("tools".into(), Value::Array(converted));
        }
    }
    if let Some(choice) = body.get("tool_choice").filter(|v| !v.is_null()) {
        let (mapped, parallel) = tool_choice(choice)?;
        out.insert("tool_choice".into(), mapped);
        if !parallel {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    if let Some(thinking) = body.get("thinking").and_then(Value::as_object) {
        if thinking.get("type").and_then(Value::as_str) == Some("enabled") {
            let budget = thinking
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            out.insert(
                "reasoning_effort".into(),
                Value::String(effort_for_budget(budget).into()),
            );
            // Providers with token budgets (Anthropic, Bedrock Claude, Gemini) take it exactly.
            out.insert("thinking".into(), Value::Object(thinking.clone()));
        }
    }
    Ok(Converted {
        body: out,
        model: body
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string),
        dropped,
    })
}

/// Text blocks (system prompt, tool results) -> OpenAI text parts, `cache_control` kept.
fn text_parts(blocks: &[Value], path: &str, dropped: &mut Vec<String>) -> Vec<Value> {
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(text_part(block)),
            _ => dropped.push(format!("{path}[{j}]")),
        }
    }
    parts
}

fn text_part(block: &Value) -> Value {
    with_cache_control(
        json!({"type": "text", "text": block.get("text").cloned().unwrap_or_default()}),
        block,
    )
}

/// The block's prompt-caching breakpoint, kept on the OpenAI part made from it.
fn with_cache_control(mut part: Value, block: &Value) -> Value {
    if let Some(cache) = block.get("cache_control").filter(|c| !c.is_null()) {
        part["cache_control"] = cache.clone();
    }
    part
}

/// An Anthropic image source -> an OpenAI `image_url` part.
fn image_part(block: &Value) -> Option<Value> {
    let source = block.get("source")?;
    let url = match source.get("type").and_then(Value::as_str)? {
        "base64" => format!(
            "data:{};base64,{}",
            source.get("media_type")?.as_str()?,
            source.get("data")?.as_str()?
        ),
        "url" => source.get("url")?.as_str()?.to_string(),
        _ => return None,
    };
    Some(with_cache_control(
        json!({"type": "image_url", "image_url": {"url": url}}),
        block,
    ))
}

/// A user turn: its tool results first (as `tool` messages), then the rest as one user message.
fn user_turn(
    content: Option<&Value>,
    path: &str,
    messages: &mut Vec<Value>,
    dropped: &mut Vec<String>,
) -> Result<(), String> {
    let blocks = match content {
        Some(Value::String(s)) => {
            messages.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(format!(
                "{path}.content: must be a string or an array of blocks"
            ))
        }
    };
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let block_path = format!("{path}.content[{j}]");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(text_part(block)),
            Some("image") => match image_part(block) {
                Some(part) => parts.push(part),
                None => dropped.push(block_path),
            },
            Some("tool_result") => messages.push(tool_result(block, &block_path, dropped)?),
            Some("document") => match document_text(block) {
                Some(text) => parts.push(with_cache_control(
                    json!({"type": "text", "text": text}),
                    block,
                )),
                None => dropped.push(block_path),
            },
            _ => dropped.push(block_path),
        }
    }
    if !parts.is_empty() {
        messages.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

/// A plain-text document is text; PDFs and other binary documents have no OpenAI chat
/// equivalent every provider takes.
fn document_text(block: &Value) -> Option<String> {
    let source = block.get("source")?;
    (source.get("type").and_then(Value::as_str)? == "text")
        .then(|| {
            source
                .get("data")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .flatten()
}

fn tool_result(block: &Value, path: &str, dropped: &mut Vec<String>) -> Result<Value, String> {
    let id = block
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{path}.tool_use_id: field required"))?;
    // A breakpoint on the result or on any of its texts caches the whole result.
    let mut cache = block.get("cache_control").filter(|c| !c.is_null());
    let mut text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            let mut text = String::new();
            for (k, item) in items.iter().enumerate() {
                match item.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        text.push_str(item.get("text").and_then(Value::as_str).unwrap_or(""));
                        cache = cache.or(item.get("cache_control").filter(|c| !c.is_null()));
                    }
                    _ => dropped.push(format!("{path}.content[{k}]")),
                }
            }
            text
        }
        Some(_) => {
            return Err(format!(
                "{path}.content: must be a string or an array of blocks"
            ))
        }
    };
    // OpenAI has no error flag on tool answers; the model still learns that the tool failed.
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        text = format!("Error: {text}");
    }
    let content = match cache {
        Some(cache) => json!([{"type": "text", "text": text, "cache_control": cache}]),
        None => Value::String(text),
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

fn assistant_turn(
    content: Option<&Value>,
    path: &str,
    dropped: &mut Vec<String>,
) -> Result<Value, String> {
    let blocks = match content {
        Some(Value::String(s)) => return Ok(json!({"role": "assistant", "content": s})),
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(format!(
                "{path}.content: must be a string or an array of blocks"
            ))
        }
    };
    let mut text = String::new();
    let mut texts = Vec::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                text.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""));
                texts.push(text_part(block));
            }
            Some("tool_use") => {
                // A tool call has no place for a breakpoint in the OpenAI format.
                if block.get("cache_control").is_some_and(|c| !c.is_null()) {
                    dropped.push(format!("{path}.content[{j}].cache_control"));
                }
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": block.get("id").cloned().unwrap_or_default(),
                    "type": "function",
                    "function": {
                        "name": block.get("name").cloned().unwrap_or_default(),
                        "arguments": input.to_string(),
                    },
                }));
            }
            Some("thinking") => {
                reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or(""));
                thinking_blocks.push(block.clone());
            }
            Some("redacted_thinking") => thinking_blocks.push(block.clone()),
            _ => dropped.push(format!("{path}.content[{j}]")),
        }
    }
    // Texts stay parts when one carries a caching breakpoint, else they are one string.
    let content = if texts.iter().any(|t| t.get("cache_control").is_some()) {
        Value::Array(texts)
    } else if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    };
    let mut message = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = Value::String(reasoning);
    }
    if !thinking_blocks.is_empty() {
        message["thinking_blocks"] = Value::Array(thinking_blocks);
    }
    Ok(message)
}

/// Custom tools (no `type`, or `custom`) map; Anthropic's server tools (`bash_…`,
/// `web_search_…`) only run at Anthropic and are dropped.
fn tool(t: &Value) -> Option<Value> {
    match t.get("type").and_then(Value::as_str) {
        None | Some("custom") => {}
        Some(_) => return None,
    }
    let mut function = json!({"name": t.get("name")?.as_str()?});
    if let Some(d) = t.get("description").and_then(Value::as_str) {
        function["description"] = Value::String(d.into());
    }
    function["parameters"] = t
        .get("input_schema")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    let mut out = json!({"type": "function", "function": function});
    if let Some(cache) = t.get("cache_control") {
        out["cache_control"] = cache.clone();
    }
    Some(out)
}

/// `tool_choice` -> OpenAI's, plus whether parallel tool calls stay allowed.
fn tool_choice(choice: &Value) -> Result<(Value, bool), String> {
    let parallel = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        != Some(true);
    let mapped = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or("tool_choice.name: field required")?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err("tool_choice.type: must be one of auto, any, tool, none".into()),
    };
    Ok((mapped, parallel))
}

/// The documented `count_tokens` estimate for providers without a counting API: about four
/// characters per token (Anthropic's and OpenAI's rule of thumb for English) over every text
/// the model would read, plus a few tokens of framing per message and per tool.
pub fn estimate_tokens(body: &Map<String, Value>) -> u64 {
    fn chars(v: &Value) -> u64 {
        match v {
            Value::String(s) => s.chars().count() as u64,
            Value::Array(items) => items.iter().map(chars).sum(),
            Value::Object(map) => map
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "type" | "cache_control" | "source" | "signature" | "id" | "tool_use_id"
                    )
                })
                .map(|(_, v)| chars(v))
                .sum(),
            _ => 0,
        }
    }
    let mut total = 0;
    for key in ["system", "messages", "tools"] {
        if let Some(v) = body.get(key) {
            total += chars(v);
        }
    }
    let framing = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, |m| m.len() as u64 * 4)
        + body
            .get("tools")
            .and_then(Value::as_array)
            .map_or(0, |t| t.len() as u64 * 8);
    total.div_ceil(4) + framing + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(v: Value) -> Converted {
        to_openai(v.as_object().unwrap()).unwrap()
    }

    #[test]
    fn system_messages_sampling_and_stop_map_to_openai_names() {
        let c = convert(json!({
            "model": "claude-sonnet-4-5", "max_tokens": 100, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END"],
            "metadata": {"user_id": "u1"}, "stream": true
        }));
        assert_eq!(
            Value::Object(c.body),
            json!({
                "messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Hi"}],
                "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
                "stop": ["END"], "user": "u1", "stream": true,
                "stream_options": {"include_usage": true}
            })
        );
        assert_eq!(c.model.as_deref(), Some("claude-sonnet-4-5"));
        assert!(c.dropped.is_empty());
    }

    #[test]
    fn tool_round_trip_maps_calls_results_and_choice() {
        let c = convert(json!({
            "model": "m", "max_tokens": 10,
            "tools": [{"name": "get_weather", "description": "Weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                      {"type": "web_search_20250305", "name": "web_search"}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Need the tool.", "signature": "sig1"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "15C"}]},
                    {"type": "text", "text": "Thanks"}]}
            ]
        }));
        let m = &c.body["messages"];
        assert_eq!(m[1]["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(
            m[1]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(m[1]["content"], "Checking.");
        assert_eq!(m[1]["reasoning_content"], "Need the tool.");
        assert_eq!(m[1]["thinking_blocks"][0]["signature"], "sig1");
        assert_eq!(
            m[2],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "15C"})
        );
        assert_eq!(m[3]["content"][0]["text"], "Thanks");
        assert_eq!(c.body["tool_choice"], "required");
        assert_eq!(c.body["parallel_tool_calls"], false);
        assert_eq!(c.body["tools"].as_array().unwrap().len(), 1);
        assert_eq!(
            c.body["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(c.dropped, vec!["tools[1]"]);
    }

    #[test]
    fn images_cache_control_and_errors_in_tool_results() {
        let c = convert(json!({
            "model": "m", "max_tokens": 10,
            "system": [{"type": "text", "text": "Sys", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                {"type": "tool_result", "tool_use_id": "t", "content": "boom", "is_error": true},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}
            ]}],
            "service_tier": "auto"
        }));
        let m = &c.body["messages"];
        assert_eq!(m[0]["content"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(m[1]["content"], "Error: boom");
        assert_eq!(
            m[2]["content"][0]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
        assert_eq!(m[2]["content"][1]["image_url"]["url"], "https://x/y.png");
        assert_eq!(c.dropped, vec!["service_tier", "messages[0].content[3]"]);
    }

    #[test]
    fn cache_control_survives_tool_results_documents_and_assistant_texts() {
        let cc = json!({"type": "ephemeral"});
        let c = convert(json!({"messages": [
            {"role": "user", "content": [{"type": "document", "cache_control": cc,
                "source": {"type": "text", "media_type": "text/plain", "data": "doc"}}]},
            {"role": "assistant", "content": [{"type": "text", "text": "ok", "cache_control": cc},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {}, "cache_control": cc}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                "content": [{"type": "text", "text": "14", "cache_control": cc}]}]}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}, "cache_control": cc}]}));
        let m = c.body["messages"].as_array().unwrap();
        assert_eq!(
            m[0]["content"][0],
            json!({"type": "text", "text": "doc", "cache_control": cc})
        );
        assert_eq!(
            m[1]["content"],
            json!([{"type": "text", "text": "ok", "cache_control": cc}])
        );
        assert_eq!(m[1]["tool_calls"][0]["id"], "t1");
        assert_eq!(
            m[2]["content"],
            json!([{"type": "text", "text": "14", "cache_control": cc}])
        );
        assert_eq!(c.body["tools"][0]["cache_control"], cc);
        assert_eq!(c.dropped, ["messages[1].content[1].cache_control"]);
    }

    #[test]
    fn thinking_budget_becomes_reasoning_effort() {
        let c = convert(json!({"model": "m", "max_tokens": 9000,
            "thinking": {"type": "enabled", "budget_tokens": 8000},
            "messages": [{"role": "user", "content": "x"}]}));
        assert_eq!(c.body["reasoning_effort"], "medium");
        assert_eq!(c.body["thinking"]["budget_tokens"], 8000);
        assert_eq!(effort_for_budget(1024), "low");
        assert_eq!(effort_for_budget(32000), "high");
    }

    #[test]
    fn tool_choice_variants() {
        for (choice, expected) in [
            (json!({"type": "auto"}), json!("auto")),
            (json!({"type": "none"}), json!("none")),
            (
                json!({"type": "tool", "name": "f"}),
                json!({"type": "function", "function": {"name": "f"}}),
            ),
        ] {
            assert_eq!(tool_choice(&choice).unwrap(), (expected, true));
        }
        assert!(tool_choice(&json!({"type": "tool"})).is_err());
        assert!(tool_choice(&json!({"type": "x"})).is_err());
    }

    #[test]
    fn malformed_requests_name_the_field() {
        let err = |v: Value| to_openai(v.as_object().unwrap()).unwrap_err();
        assert_eq!(err(json!({"model": "m"})), "messages: field required");
        assert_eq!(
            err(json!({"messages": [{"role": "system", "content": "x"}]})),
            "messages[0].role: must be 'user' or 'assistant'"
        );
        assert_eq!(
            err(json!({"messages": [{"role": "user", "content": 3}]})),
            "messages[0].content: must be a string or an array of blocks"
        );
    }

    #[test]
    fn token_estimate_grows_with_the_text() {
        let small = estimate_tokens(
            json!({"messages": [{"role": "user", "content": "Hello"}]})
                .as_object()
                .unwrap(),
        );
        let big = estimate_tokens(json!({"system": "You are a helpful assistant.", "messages": [{"role": "user", "content": "Hello there, how are you today?"}]}).as_object().unwrap());
        assert!(small >= 1 && big > small, "{small} {big}");
    }
}
