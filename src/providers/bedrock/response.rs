//! Bedrock response translation: Converse and `InvokeModel` answers -> OpenAI.

use super::*;

// Response translation
// ---------------------------------------------------------------------------------------------

pub(super) fn decode_failed(ctx: &RequestCtx<'_>) -> String {
    format!("failed to decode {} response", ctx.route_type.as_str())
}

/// Converse 200 body -> OpenAI chat completion (or text completion on the completions route).
pub(super) fn converse_response(ctx: &RequestCtx<'_>, body: &[u8]) -> Result<Translated, String> {
    let r: BedrockConverseResponse =
        serde_json::from_slice(body).map_err(|_| decode_failed(ctx))?;
    let blocks = r
        .output
        .and_then(|o| o.message)
        .map(|m| m.content)
        .filter(|c| !c.is_empty())
        .ok_or(NO_CANDIDATES)?;
    let mut text: Option<String> = None;
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut format_call = false;
    let mut tool_calls = Vec::new();
    for block in blocks {
        if let Some(r) = block.reasoning_content {
            let thought = &r["reasoningText"];
            if let Some(t) = thought.get("text").and_then(Value::as_str) {
                reasoning.push_str(t);
                thinking_blocks.push(json!({"type": "thinking", "thinking": t,
                    "signature": thought.get("signature").cloned().unwrap_or_default()}));
            } else if let Some(data) = r.get("redactedContent") {
                thinking_blocks.push(json!({"type": "redacted_thinking", "data": data}));
            }
        }
        if let Some(t) = block.text {
            text.get_or_insert_with(String::new).push_str(&t);
        }
        match block.tool_use {
            Some(tool) if tool.name == RESPONSE_FORMAT_TOOL => {
                format_call = true;
                text.get_or_insert_with(String::new)
                    .push_str(&tool.input.to_string());
            }
            Some(tool) => {
                let arguments = arguments_string(&tool.input);
                tool_calls.push(ToolCall::function(tool.tool_use_id, tool.name, arguments));
            }
            None => {}
        }
    }
    let finish = match r.stop_reason {
        Some(reason) => format_finish(reason.finish_reason(), format_call, tool_calls.len()),
        None if !tool_calls.is_empty() => FinishReason::ToolCalls,
        None => FinishReason::Stop,
    };
    let usage = r.usage.map(Usage::from).unwrap_or_default();
    let meta = ctx.meta();
    let mut out = if ctx.route_type == RouteType::Completions {
        serde_json::to_value(TextCompletion::single(
            &meta,
            text.unwrap_or_default(),
            Some(finish),
            usage,
        ))
    } else {
        serde_json::to_value(
            ChatCompletion::single(&meta, text, tool_calls, Some(finish), usage)
                .with_reasoning(reasoning, thinking_blocks)
                .with_stop_sequence(
                    r.additional_model_response_fields
                        .and_then(|f| f.stop_sequence),
                ),
        )
    }
    .map_err(|e| e.to_string())?;
    if let (Some(trace), Some(map)) = (r.trace, out.as_object_mut()) {
        map.insert("trace".into(), trace);
    }
    Translated::json(&out, usage)
}

/// `InvokeModel` embeddings answer (Titan or Cohere) -> OpenAI embedding list.
pub(super) fn embeddings_response(ctx: &RequestCtx<'_>, body: &[u8]) -> Result<Translated, String> {
    let (vectors, prompt_tokens) = if ctx.model.contains("cohere.embed") {
        let r: BedrockCohereEmbedResponse =
            serde_json::from_slice(body).map_err(|_| decode_failed(ctx))?;
        // Cohere on Bedrock reports tokens only in a response header.
        (
            r.embeddings.ok_or("'embeddings' not in bedrock response")?,
            0,
        )
    } else {
        let r: BedrockTitanEmbedResponse =
            serde_json::from_slice(body).map_err(|_| decode_failed(ctx))?;
        let vector = r.embedding.ok_or("'embedding' not in bedrock response")?;
        (vec![vector], r.input_text_token_count)
    };
    let list = EmbeddingList::new(ctx.model, vectors, prompt_tokens);
    Translated::json(&list, Usage::new(prompt_tokens, 0))
}

// ---------------------------------------------------------------------------------------------
