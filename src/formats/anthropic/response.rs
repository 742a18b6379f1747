//! OpenAI chat completion (what every driver produces) -> Anthropic Messages response, and the
//! shared pieces of the Anthropic wire format the stream writer uses too (stop reasons, usage,
//! error bodies). https://docs.anthropic.com/en/api/messages

use bytes::Bytes;
use serde_json::{json, Value};

/// OpenAI `finish_reason` -> Anthropic `stop_reason`.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// A choice's end -> Anthropic `stop_reason` and `stop_sequence`: the matched sequence is known
/// when the choice names it in the de-facto `stop_reason` field (vLLM; the gateway's Bedrock
/// translation for Claude); other providers do not say which sequence matched.
pub fn stop(choice: &Value) -> (&'static str, Value) {
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    match choice.get("stop_reason").and_then(Value::as_str) {
        Some(sequence) if matches!(finish, Some("stop") | None) => {
            ("stop_sequence", Value::String(sequence.into()))
        }
        _ => (stop_reason(finish), Value::Null),
    }
}

/// OpenAI usage -> Anthropic usage. Anthropic's `input_tokens` excludes cache reads and writes,
/// which it reports separately; cache writes arrive as `prompt_tokens_details.cache_write_tokens`
/// (the gateway's field for them) when a provider reports them.
pub fn usage(usage: Option<&Value>) -> Value {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let u = usage.unwrap_or(&Value::Null);
    let details = u.get("prompt_tokens_details");
    let cached = n(details.and_then(|d| d.get("cached_tokens")));
    let written = n(details.and_then(|d| d.get("cache_write_tokens")));
    let prompt = n(u.get("prompt_tokens"));
    json!({
        "input_tokens": prompt.saturating_sub(cached + written),
        "output_tokens": n(u.get("completion_tokens")),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
    })
}

/// A tool call's `arguments` string -> the `input` object Anthropic clients expect; arguments
/// that are not JSON (a model's mistake) are kept under `_raw` rather than lost.
pub fn tool_input(arguments: Option<&Value>) -> Value {
    match arguments {
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| json!({"_raw": s})),
        Some(Value::Object(o)) => Value::Object(o.clone()),
        _ => json!({}),
    }
}

/// Converts an OpenAI chat completion body; `id` is the Anthropic message id to use. The error
/// is the reason of the client's transformation error.
pub fn from_openai(body: &[u8], id: &str, fallback_model: &str) -> Result<Bytes, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| "failed to decode llm/v1/chat response")?;
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or("'choices' not in llm/v1/chat response")?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = thinking_blocks(message);
    if let Some(text) = message.get("content").and_then(Value::as_str) {
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for call in calls {
            let function = call.get("function").unwrap_or(&Value::Null);
            content.push(json!({
                "type": "tool_use",
                "id": call.get("id").cloned().unwrap_or_default(),
                "name": function.get("name").cloned().unwrap_or_default(),
                "input": tool_input(function.get("arguments")),
            }));
        }
    }
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(fallback_model);
    let (stop_reason, stop_sequence) = stop(choice);
    let answer = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage(v.get("usage")),
    });
    Ok(Bytes::from(answer.to_string()))
}

/// The assistant's reasoning as Anthropic `thinking` blocks: the provider's own blocks (with
/// signatures) when it sent them, else one unsigned block from `reasoning_content`.
fn thinking_blocks(message: &Value) -> Vec<Value> {
    if let Some(blocks) = message.get("thinking_blocks").and_then(Value::as_array) {
        if !blocks.is_empty() {
            return blocks.clone();
        }
    }
    match message.get("reasoning_content").and_then(Value::as_str) {
        Some(r) if !r.is_empty() => {
            vec![json!({"type": "thinking", "thinking": r, "signature": ""})]
        }
        _ => Vec::new(),
    }
}

/// Anthropic's error type for an HTTP status, as its SDKs expect it.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    }
}

/// Any error body (a provider's JSON or text, or the gateway's own) -> Anthropic's error shape,
/// keeping the message.
pub fn error_body(status: u16, body: &[u8]) -> Bytes {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("error").unwrap_or(&v);
            e.get("message")
                .or_else(|| e.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| e.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(512).collect());
    Bytes::from(
        json!({"type": "error", "error": {"type": error_type(status), "message": message}})
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(v: Value) -> Value {
        serde_json::from_slice(&from_openai(v.to_string().as_bytes(), "msg_1", "m").unwrap())
            .unwrap()
    }

    #[test]
    fn a_named_stop_sequence_becomes_stop_sequence() {
        let answer = |finish: &str| {
            convert(
                json!({"choices": [{"message": {"role": "assistant", "content": "a"},
                "finish_reason": finish, "stop_reason": "###"}]}),
            )
        };
        let out = answer("stop");
        assert_eq!(out["stop_reason"], "stop_sequence");
        assert_eq!(out["stop_sequence"], "###");
        let out = answer("length");
        assert_eq!(out["stop_reason"], "max_tokens");
        assert!(out["stop_sequence"].is_null());
    }

    #[test]
    fn text_answer_is_an_anthropic_message() {
        let out = convert(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
        }));
        assert_eq!(
            out,
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "gpt-4o",
                   "content": [{"type": "text", "text": "Hello!"}],
                   "stop_reason": "end_turn", "stop_sequence": null,
                   "usage": {"input_tokens": 12, "output_tokens": 3,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}})
        );
    }

    #[test]
    fn tool_calls_reasoning_and_cache_usage() {
        let out = convert(json!({
            "choices": [{"message": {"role": "assistant", "content": null,
                "reasoning_content": "Think.",
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "add", "arguments": "{\"a\":2}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 5,
                      "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30}}
        }));
        assert_eq!(out["model"], "m");
        assert_eq!(
            out["content"][0],
            json!({"type": "thinking", "thinking": "Think.", "signature": ""})
        );
        assert_eq!(
            out["content"][1],
            json!({"type": "tool_use", "id": "call_1", "name": "add", "input": {"a": 2}})
        );
        assert_eq!(out["stop_reason"], "tool_use");
        assert_eq!(out["usage"]["input_tokens"], 10);
        assert_eq!(out["usage"]["cache_read_input_tokens"], 60);
        assert_eq!(out["usage"]["cache_creation_input_tokens"], 30);
    }

    #[test]
    fn signed_thinking_blocks_are_kept() {
        let out = convert(
            json!({"choices": [{"message": {"content": "x", "reasoning_content": "r",
            "thinking_blocks": [{"type": "thinking", "thinking": "r", "signature": "s"}]},
            "finish_reason": "length"}]}),
        );
        assert_eq!(out["content"][0]["signature"], "s");
        assert_eq!(out["content"].as_array().unwrap().len(), 2);
        assert_eq!(out["stop_reason"], "max_tokens");
    }

    #[test]
    fn bad_bodies_and_error_shapes() {
        assert!(from_openai(b"{}", "i", "m").is_err());
        assert!(from_openai(b"nope", "i", "m").is_err());
        let e: Value =
            serde_json::from_slice(&error_body(429, br#"{"error":{"message":"slow down"}}"#))
                .unwrap();
        assert_eq!(
            e,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        );
        let e: Value = serde_json::from_slice(&error_body(502, b"<html>bad</html>")).unwrap();
        assert_eq!(e["error"]["message"], "<html>bad</html>");
        assert_eq!(tool_input(Some(&json!("not json")))["_raw"], "not json");
    }
}
