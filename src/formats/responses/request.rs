//! A Responses request -> an OpenAI chat request: `instructions` and `input` (a string, or
//! message, `function_call` and `function_call_output` items) become `messages`; function
//! tools, `tool_choice`, `text.format`, `reasoning.effort` and `max_output_tokens` map to their
//! chat names. What chat has no way to say is refused by name rather than dropped.

use serde_json::{json, Map, Value};

use crate::config::ai_proxy::ModelOptions;

/// Fields with no effect on a provider that stores nothing (`store`, `metadata`) or with the
/// same name in chat, carried as they are.
const SAME_NAME: &[&str] = &[
    "model",
    "stream",
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "seed",
    "stop",
    "top_logprobs",
];
const IGNORED: &[&str] = &[
    "store",
    "metadata",
    "include",
    "truncation",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

/// The request fields OpenAI's Response object repeats, with OpenAI's defaults where the request
/// left them out; options the route configures win, as they do in the chat request.
pub fn echo(body: &Map<String, Value>, options: &ModelOptions) -> Map<String, Value> {
    let defaults = [
        ("background", json!(false)),
        ("instructions", Value::Null),
        ("max_output_tokens", Value::Null),
        ("max_tool_calls", Value::Null),
        ("metadata", json!({})),
        ("parallel_tool_calls", json!(true)),
        ("previous_response_id", Value::Null),
        ("prompt_cache_key", Value::Null),
        ("reasoning", json!({"effort": null, "summary": null})),
        ("safety_identifier", Value::Null),
        ("service_tier", Value::Null),
        ("temperature", json!(1.0)),
        ("text", json!({"format": {"type": "text"}})),
        ("tool_choice", json!("auto")),
        ("tools", json!([])),
        ("top_logprobs", json!(0)),
        ("top_p", json!(1.0)),
        ("truncation", json!("disabled")),
        ("user", Value::Null),
    ];
    let mut echo: Map<String, Value> = defaults
        .into_iter()
        .map(|(key, default)| {
            let sent = body.get(key).filter(|v| !v.is_null()).cloned();
            (key.to_string(), sent.unwrap_or(default))
        })
        .collect();
    let configured = [
        ("temperature", options.temperature.map(Value::from)),
        ("top_p", options.top_p.map(Value::from)),
        ("max_output_tokens", options.max_tokens.map(Value::from)),
    ];
    for (key, value) in configured {
        if let Some(value) = value {
            echo.insert(key.into(), value);
        }
    }
    // Nothing is stored: a provider that only chats has no response to retrieve.
    echo.insert("store".into(), json!(false));
    echo
}

pub fn to_chat(body: &Map<String, Value>, provider: &str) -> Result<Map<String, Value>, String> {
    let stateful = |what: &str| {
        format!("{what} needs a provider that stores responses; provider '{provider}' only chats")
    };
    if body
        .get("previous_response_id")
        .is_some_and(|v| !v.is_null())
    {
        return Err(stateful("previous_response_id"));
    }
    if body.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(stateful("background: true"));
    }
    let mut chat = Map::new();
    let mut messages = Vec::new();
    for (key, value) in body {
        match key.as_str() {
            k if SAME_NAME.contains(&k) => {
                chat.insert(key.clone(), value.clone());
            }
            k if IGNORED.contains(&k) => {}
            "previous_response_id" | "background" => {}
            "instructions" => match value {
                Value::String(text) => {
                    messages.insert(0, json!({"role": "system", "content": text}));
                }
                Value::Null => {}
                _ => return Err("instructions must be a string".into()),
            },
            "input" => {}
            "max_output_tokens" => {
                chat.insert("max_tokens".into(), value.clone());
            }
            "tools" => {
                chat.insert("tools".into(), tools(value)?);
            }
            "tool_choice" => {
                chat.insert("tool_choice".into(), tool_choice(value)?);
            }
            "text" => {
                if let Some(format) = response_format(value)? {
                    chat.insert("response_format".into(), format);
                }
            }
            "reasoning" => {
                if let Some(effort) = value.get("effort").filter(|e| !e.is_null()) {
                    chat.insert("reasoning_effort".into(), effort.clone());
                }
            }
            other => {
                return Err(format!(
                    "'{other}' has no chat equivalent at provider '{provider}'"
                ))
            }
        }
    }
    match body.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => input_items(items, &mut messages)?,
        _ => return Err("request body doesn't contain valid input".into()),
    }
    chat.insert("messages".into(), Value::Array(messages));
    if chat.get("stream").and_then(Value::as_bool) == Some(true) {
        // response.completed carries usage.
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(chat)
}

fn input_items(items: &[Value], messages: &mut Vec<Value>) -> Result<(), String> {
    for (i, item) in items.iter().enumerate() {
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => {
                let message = message(item, i)?;
                match messages.last_mut() {
                    // The text of a turn whose reasoning came first.
                    Some(last) if is_open_turn(last) && message["role"] == "assistant" => {
                        last["content"] = message["content"].clone();
                    }
                    _ => messages.push(message),
                }
            }
            "function_call" => {
                let call = json!({
                    "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {
                        "name": item.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": item.get("arguments").cloned().unwrap_or(json!("{}")),
                    },
                });
                // A turn's reasoning, text and calls are one assistant message, as chat has them.
                let turn = assistant_turn(messages);
                match turn["tool_calls"].as_array_mut() {
                    Some(calls) => calls.push(call),
                    None => turn["tool_calls"] = json!([call]),
                }
            }
            "function_call_output" => {
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                messages.push(json!({
                    "role": "tool",
                    "tool_call_id": item.get("call_id").cloned().unwrap_or(Value::Null),
                    "content": output,
                }));
            }
            // A previous answer's reasoning goes back with its turn: providers that sign their
            // reasoning (Anthropic, Bedrock Claude) refuse a tool-use turn without it.
            "reasoning" => {
                let summary = item.get("summary").and_then(Value::as_array);
                let text: String = summary
                    .into_iter()
                    .flatten()
                    .filter_map(|part| part.get("text").and_then(Value::as_str))
                    .collect();
                let blocks = item
                    .get("encrypted_content")
                    .and_then(Value::as_str)
                    .and_then(|blocks| serde_json::from_str::<Value>(blocks).ok())
                    .filter(Value::is_array);
                let turn = new_assistant_turn(messages);
                if !text.is_empty() {
                    turn["reasoning_content"] = Value::String(text);
                }
                if let Some(blocks) = blocks {
                    turn["thinking_blocks"] = blocks;
                }
            }
            other => {
                return Err(format!(
                    "input[{i}]: item type '{other}' has no chat equivalent"
                ))
            }
        }
    }
    // Reasoning that no text or call of its turn followed has no chat message to ride on.
    messages.retain(|m| !is_open_turn(m));
    Ok(())
}

/// An assistant message that only has reasoning so far.
fn is_open_turn(message: &Value) -> bool {
    message["role"] == "assistant"
        && message["content"].is_null()
        && message.get("tool_calls").is_none()
}

/// The assistant message the next item of the same turn belongs to.
fn assistant_turn(messages: &mut Vec<Value>) -> &mut Value {
    if !messages.last().is_some_and(|m| m["role"] == "assistant") {
        return new_assistant_turn(messages);
    }
    let last = messages.len() - 1;
    &mut messages[last]
}

fn new_assistant_turn(messages: &mut Vec<Value>) -> &mut Value {
    messages.push(json!({"role": "assistant", "content": null}));
    let last = messages.len() - 1;
    &mut messages[last]
}

fn message(item: &Value, i: usize) -> Result<Value, String> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some("developer") | Some("system") => "system",
        Some(role @ ("user" | "assistant")) => role,
        _ => {
            return Err(format!(
                "input[{i}] is not a valid message: it needs a role"
            ))
        }
    };
    let content = match item.get("content") {
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for part in parts {
                out.push(content_part(part, i)?);
            }
            // An assistant turn is text in chat.
            if role == "assistant" {
                let text: Vec<&str> = out.iter().filter_map(|p| p["text"].as_str()).collect();
                Value::String(text.concat())
            } else {
                Value::Array(out)
            }
        }
        _ => {
            return Err(format!(
                "input[{i}] is not a valid message: it needs content"
            ))
        }
    };
    Ok(json!({"role": role, "content": content}))
}

fn content_part(part: &Value, i: usize) -> Result<Value, String> {
    match part.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => {
            Ok(json!({"type": "text", "text": part.get("text").cloned().unwrap_or(json!(""))}))
        }
        Some("input_image") => {
            let url = part
                .get("image_url")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("input[{i}]: input_image needs an image_url (file ids need OpenAI's file store)"))?;
            let mut image = json!({"url": url});
            if let Some(detail) = part.get("detail") {
                image["detail"] = detail.clone();
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        other => Err(format!(
            "input[{i}]: content part '{}' has no chat equivalent",
            other.unwrap_or("?")
        )),
    }
}

fn tools(value: &Value) -> Result<Value, String> {
    let tools = value.as_array().ok_or("tools must be a list")?;
    let mut out = Vec::new();
    for tool in tools {
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {
                let mut function = Map::new();
                for key in ["name", "description", "parameters", "strict"] {
                    if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
                        function.insert(key.into(), v.clone());
                    }
                }
                out.push(json!({"type": "function", "function": function}));
            }
            other => {
                return Err(format!(
                    "tool type '{}' is one of OpenAI's hosted tools; only function tools translate",
                    other.unwrap_or("?")
                ))
            }
        }
    }
    Ok(Value::Array(out))
}

fn tool_choice(value: &Value) -> Result<Value, String> {
    match value {
        Value::String(_) => Ok(value.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => Ok(
            json!({"type": "function", "function": {"name": o.get("name").cloned().unwrap_or(Value::Null)}}),
        ),
        _ => Err("tool_choice: only auto, none, required or a function translate".into()),
    }
}

fn response_format(text: &Value) -> Result<Option<Value>, String> {
    let Some(format) = text.get("format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for key in ["name", "description", "schema", "strict"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        _ => Err("text.format: only text, json_object and json_schema translate".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Result<Value, String> {
        to_chat(body.as_object().unwrap(), "anthropic").map(Value::Object)
    }

    #[test]
    fn string_input_and_instructions_become_messages() {
        let c = chat(
            json!({"model": "m", "input": "hi", "instructions": "be brief",
            "max_output_tokens": 50, "store": true, "reasoning": {"effort": "low"}}),
        )
        .unwrap();
        assert_eq!(
            c["messages"],
            json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
        );
        assert_eq!(c["max_tokens"], 50);
        assert_eq!(c["reasoning_effort"], "low");
        assert!(c.get("store").is_none());
    }

    #[test]
    fn items_calls_and_outputs_become_a_chat_history() {
        let c = chat(json!({"model": "m", "stream": true, "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "add"},
                {"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
            {"type": "function_call", "call_id": "c1", "name": "add", "arguments": "{\"a\":1}"},
            {"type": "function_call", "call_id": "c2", "name": "add", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "3"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "done"}]},
        ], "tools": [{"type": "function", "name": "add", "parameters": {"type": "object"}}],
           "tool_choice": {"type": "function", "name": "add"},
           "text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}))
        .unwrap();
        let m = c["messages"].as_array().unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(
            m[0]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AA"
        );
        assert_eq!(m[1]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(
            m[2],
            json!({"role": "tool", "tool_call_id": "c1", "content": "3"})
        );
        assert_eq!(m[3], json!({"role": "assistant", "content": "done"}));
        assert_eq!(c["tools"][0]["function"]["name"], "add");
        assert_eq!(c["tool_choice"]["function"]["name"], "add");
        assert_eq!(c["response_format"]["json_schema"]["name"], "x");
        assert_eq!(c["stream_options"]["include_usage"], true);
    }

    #[test]
    fn reasoning_rides_on_its_turn_and_alone_is_left_out() {
        let c = chat(json!({"model": "m", "input": [
            {"role": "user", "content": "a"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "t"}],
             "encrypted_content": "opaque-from-openai"},
            {"role": "user", "content": "b"},
            {"type": "reasoning", "id": "rs_2", "summary": [],
             "encrypted_content": "[{\"type\":\"redacted_thinking\",\"data\":\"x\"}]"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        ]}))
        .unwrap();
        let m = c["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[1], json!({"role": "user", "content": "b"}));
        assert_eq!(m[2]["content"], "ok");
        assert_eq!(m[2]["thinking_blocks"][0]["type"], "redacted_thinking");
        assert!(m[2].get("reasoning_content").is_none());
    }

    #[test]
    fn what_chat_cannot_say_is_refused_by_name() {
        for (body, needle) in [
            (
                json!({"input": "x", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
                "web_search",
            ),
            (
                json!({"input": [{"type": "file_search_call"}]}),
                "file_search_call",
            ),
            (json!({"input": "x", "prompt": {"id": "p"}}), "'prompt'"),
            (json!({"model": "m"}), "valid input"),
        ] {
            let e = chat(body).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
