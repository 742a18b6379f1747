//! An OpenAI chat completion -> a Response object: the assistant's text as a `message` item,
//! each tool call as a `function_call` item, usage in the Responses naming, and a length stop
//! as `status: incomplete`.

use bytes::Bytes;
use serde_json::{json, Value};

use super::{call_item_id, message_id, response_id, usage};

/// What every Response object of a translated route says besides its output.
pub struct Meta<'a> {
    pub request_id: &'a str,
    pub model: &'a str,
    pub created: u64,
}

/// The Response object around `output`.
pub(super) fn object(
    meta: &Meta<'_>,
    status: &str,
    output: Vec<Value>,
    usage: Option<Value>,
) -> Value {
    let incomplete = (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
    json!({
        "id": response_id(meta.request_id),
        "object": "response",
        "created_at": meta.created,
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "model": meta.model,
        "output": output,
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": [],
        "store": false,
        "usage": usage,
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

    const META: Meta<'static> = Meta {
        request_id: "r1",
        model: "claude",
        created: 7,
    };

    #[test]
    fn text_calls_and_usage_become_a_response() {
        let chat = json!({"model": "claude-x", "choices": [{"finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me add.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2}"}}]}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}});
        let r: Value =
            serde_json::from_slice(&from_chat(chat.to_string().as_bytes(), &META).unwrap())
                .unwrap();
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
        let r: Value =
            serde_json::from_slice(&from_chat(chat.to_string().as_bytes(), &META).unwrap())
                .unwrap();
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(r["model"], "claude");
    }
}
