//! An OpenAI chat completion -> a Response object: the provider's reasoning as a `reasoning`
//! item, the assistant's text as a `message` item, each tool call as a `function_call` item,
//! usage in the Responses naming, a length stop as `status: incomplete`, and the request's
//! fields the Response object repeats (`instructions`, `tools`, `temperature`, ...).

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{call_item_id, message_id, reasoning_id, response_id, usage};

/// What every Response object of a translated route says besides its output.
pub struct Meta<'a> {
    pub request_id: &'a str,
    pub model: &'a str,
    pub created: u64,
    /// The request's fields, from [`super::request::echo`].
    pub echo: &'a Map<String, Value>,
}

/// The Response object around `output`.
pub(super) fn object(
    meta: &Meta<'_>,
    status: &str,
    output: Vec<Value>,
    usage: Option<Value>,
) -> Value {
    let incomplete = (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
    let mut object = meta.echo.clone();
    object.extend([
        ("id".into(), json!(response_id(meta.request_id))),
        ("object".into(), json!("response")),
        ("created_at".into(), json!(meta.created)),
        ("status".into(), json!(status)),
        ("error".into(), Value::Null),
        ("incomplete_details".into(), json!(incomplete)),
        ("model".into(), json!(meta.model)),
        ("output".into(), Value::Array(output)),
        ("usage".into(), json!(usage)),
    ]);
    Value::Object(object)
}

/// A `reasoning` item: the provider's reasoning text as its summary, and the signed blocks
/// (Anthropic `thinking` / `redacted_thinking`, Bedrock `reasoningContent`) as the opaque
/// `encrypted_content` a client sends back with its next turn.
pub(super) fn reasoning_item(
    request_id: &str,
    index: u64,
    text: &str,
    blocks: &[Value],
    status: &str,
) -> Value {
    let summary = if text.is_empty() {
        json!([])
    } else {
        json!([{"type": "summary_text", "text": text}])
    };
    let encrypted = (!blocks.is_empty()).then(|| Value::Array(blocks.to_vec()).to_string());
    json!({
        "type": "reasoning",
        "id": reasoning_id(request_id, index),
        "status": status,
        "summary": summary,
        "encrypted_content": encrypted,
    })
}

/// The `message` item carrying the answer's text.
pub(super) fn message_item(request_id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message",
        "id": message_id(request_id),
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

/// A `function_call` item.
pub(super) fn call_item(
    request_id: &str,
    index: u64,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    json!({
        "type": "function_call",
        "id": call_item_id(request_id, index),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    })
}

/// `length` means the output was cut at `max_output_tokens`.
pub(super) fn status_of(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "incomplete",
        _ => "completed",
    }
}

pub fn from_chat(chat: &[u8], meta: &Meta<'_>) -> Result<Bytes, String> {
    let chat: Value = serde_json::from_slice(chat).map_err(|e| e.to_string())?;
    let choice = chat
        .pointer("/choices/0")
        .ok_or("the chat answer has no choices")?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut output = Vec::new();
    let reasoning = message
        .get("reasoning_content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let blocks = message
        .get("thinking_blocks")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !reasoning.is_empty() || !blocks.is_empty() {
        output.push(reasoning_item(
            meta.request_id,
            0,
            reasoning,
            blocks,
            "completed",
        ));
    }
    if let Some(text) = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        output.push(message_item(meta.request_id, text, "completed"));
    }
    let calls = message.get("tool_calls").and_then(Value::as_array);
    for (index, call) in calls.into_iter().flatten().enumerate() {
        let function = call.get("function").unwrap_or(&Value::Null);
        output.push(call_item(
            meta.request_id,
            index as u64,
            call.get("id").and_then(Value::as_str).unwrap_or_default(),
            function
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            function
                .get("arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}"),
            "completed",
        ));
    }
    let status = status_of(choice.get("finish_reason").and_then(Value::as_str));
    let model = chat
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(meta.model);
    let meta = Meta { model, ..*meta };
    let answer = object(&meta, status, output, Some(usage(chat.get("usage"))));
    Ok(Bytes::from(answer.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(chat: Value, echo: &Map<String, Value>) -> Value {
        let meta = Meta {
            request_id: "r1",
            model: "claude",
            created: 7,
            echo,
        };
        serde_json::from_slice(&from_chat(chat.to_string().as_bytes(), &meta).unwrap()).unwrap()
    }

    fn no_echo() -> Map<String, Value> {
        Map::new()
    }

    #[test]
    fn text_calls_and_usage_become_a_response() {
        let chat = json!({"model": "claude-x", "choices": [{"finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me add.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2}"}}]}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}});
        let r = answer(chat, &no_echo());
        assert_eq!(r["id"], "resp_r1");
        assert_eq!(r["object"], "response");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["model"], "claude-x");
        assert_eq!(r["output"][0]["content"][0]["text"], "Let me add.");
        assert_eq!(r["output"][1]["type"], "function_call");
        assert_eq!(r["output"][1]["call_id"], "call_1");
        assert_eq!(r["output"][1]["arguments"], "{\"a\":2}");
        assert_eq!(r["usage"]["input_tokens"], 9);
        assert_eq!(r["usage"]["output_tokens"], 4);
        assert_eq!(r["usage"]["total_tokens"], 13);
    }

    #[test]
    fn a_length_stop_is_incomplete() {
        let chat = json!({"choices": [{"finish_reason": "length", "message": {"content": "ab"}}]});
        let r = answer(chat, &no_echo());
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(r["model"], "claude");
    }
}
