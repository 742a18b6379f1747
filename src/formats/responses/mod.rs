//! The OpenAI Responses API (`llm/v1/responses`) on providers that only chat: a Responses
//! request becomes an OpenAI chat request (which every driver translates), and the chat answer
//! (buffered or streamed) becomes a Response object or the typed Responses event sequence.
//! Stateful calls (`previous_response_id`, retrieve, delete, cancel, input items) need the
//! provider to store responses, so they are a clear 400 here.
//! https://platform.openai.com/docs/api-reference/responses

pub mod request;
pub mod response;
pub mod stream;

/// The Response id of a translated answer.
pub fn response_id(request_id: &str) -> String {
    format!("resp_{request_id}")
}

/// The id of the assistant message item of a translated answer.
fn message_id(request_id: &str) -> String {
    format!("msg_{request_id}")
}

/// The id of the `index`th reasoning item of a translated answer.
fn reasoning_id(request_id: &str, index: u64) -> String {
    format!("rs_{request_id}_{index}")
}

/// The id of the `index`th function call item of a translated answer.
fn call_item_id(request_id: &str, index: u64) -> String {
    format!("fc_{request_id}_{index}")
}

/// Chat's `usage` in the Responses naming.
fn usage(chat: Option<&serde_json::Value>) -> serde_json::Value {
    let count = |k: &str| {
        chat.and_then(|u| u.get(k))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let cached = chat
        .and_then(|u| u.pointer("/prompt_tokens_details/cached_tokens"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let reasoning = chat
        .and_then(|u| u.pointer("/completion_tokens_details/reasoning_tokens"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let (input, output) = (count("prompt_tokens"), count("completion_tokens"));
    serde_json::json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input + output,
    })
}

#[cfg(test)]
mod tests;
