//! Bedrock request translation: OpenAI -> Converse bodies and `InvokeModel` embedding bodies.

use super::*;

// Request translation
// ---------------------------------------------------------------------------------------------

pub(super) fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::BadRequest(message.into())
}

/// OpenAI chat/completions request -> Converse request.
pub(super) fn converse_request(
    ctx: &RequestCtx<'_>,
    body: Map<String, Value>,
) -> Result<Value, GatewayError> {
    let mut req = ChatRequest::from_body(body).map_err(bad)?;
    let mut system = Vec::new();
    let mut messages: Vec<BedrockMessage> = Vec::new();
    if ctx.route_type == RouteType::Completions {
        let prompt = req.prompt_text().unwrap_or_default();
        messages.push(BedrockMessage {
            role: "user",
            content: vec![BedrockContent::Text(prompt)],
        });
    } else {
        for m in &req.messages {
            if matches!(m.role.as_str(), "system" | "developer") {
                if NO_SYSTEM_PROMPT_MODELS
                    .iter()
                    .any(|p| ctx.model.contains(p))
                {
                    // Kong's text, unbalanced quote included.
                    return Err(bad(format!(
                        "system prompts are unsupported for model '{}",
                        ctx.model
                    )));
                }
                system.push(BedrockSystemBlock::Text(m.text()));
                if m.cached() {
                    system.push(BedrockSystemBlock::CachePoint(cache_point()));
                }
                continue;
            }
            let (role, content) = message(m)?;
            // Converse wants alternating roles: tool results after a user turn, or two user
            // turns in a row, become one message.
            match messages.last_mut() {
                Some(last) if last.role == role => last.content.extend(content),
                _ => messages.push(BedrockMessage { role, content }),
            }
        }
    }

    // Claude on Bedrock reasons with a token budget, passed as a model-specific field; as on
    // Anthropic, `max_tokens` must exceed it.
    let budget = req.thinking_budget().filter(|b| {
        *b >= MIN_THINKING_BUDGET && claude_model(ctx.model) && ctx.route_type == RouteType::Chat
    });
    if budget.is_some() {
        req.fit_sampling_to_thinking();
    }
    // Claude refuses a forced tool call while it thinks: a JSON schema goes as Converse's
    // structured output (`outputConfig.textFormat`, whose schema is a JSON string).
    let output_config = match budget {
        Some(_) => req
            .thinking_json_schema()
            .map_err(bad)?
            .map(|(schema, name)| {
                let mut definition = json!({ "schema": schema.to_string() });
                if let Some(name) = name {
                    definition["name"] = Value::String(name);
                }
                json!({"textFormat": {"type": "json_schema",
                                      "structure": {"jsonSchema": definition}}})
            }),
        None => None,
    };
    let max_tokens = match (req.max_tokens(), budget) {
        (Some(max), Some(budget)) if max <= budget => Some(max + budget),
        (max, _) => max,
    };
    let inference_stops = req.stop.as_ref().is_some_and(|s| !s.to_vec().is_empty());
    let inference = BedrockInferenceConfig {
        max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop_sequences: req.stop.as_ref().map(|s| s.to_vec()),
    };
    let has_inference = inference.max_tokens.is_some()
        || inference.temperature.is_some()
        || inference.top_p.is_some()
        || inference.stop_sequences.is_some();

    let uses_tools = messages.iter().flat_map(|m| &m.content).any(|c| {
        matches!(
            c,
            BedrockContent::ToolUse(_) | BedrockContent::ToolResult(_)
        )
    });
    let mut tool_config = tool_config(req.tools.as_deref(), req.tool_choice.as_ref(), uses_tools);
    // Converse has no structured output for every model: a forced tool call carries the JSON.
    let emulated = match budget {
        Some(_) => None,
        None => req.emulated_response_format().map_err(bad)?,
    };
    if let Some(schema) = emulated {
        let config = tool_config.get_or_insert(BedrockToolConfig {
            tools: Vec::new(),
            tool_choice: None,
        });
        config.tools.push(BedrockTool::ToolSpec(BedrockToolSpec {
            name: RESPONSE_FORMAT_TOOL.into(),
            description: Some(RESPONSE_FORMAT_TOOL_DESCRIPTION.into()),
            input_schema: BedrockInputSchema { json: schema },
        }));
        config.tool_choice = Some(json!({ "tool": { "name": RESPONSE_FORMAT_TOOL } }));
    }

    // Model-specific fields: the client's own (`bedrock.additionalModelRequestFields`, as Kong),
    // plus `top_k`, which Converse has no field for (Anthropic-on-Bedrock takes it here).
    let mut additional = req
        .extra
        .get("bedrock")
        .and_then(|b| b.get("additionalModelRequestFields"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(top_k) = req.top_k {
        additional.insert("top_k".into(), json!(top_k));
    }
    if let Some(budget) = budget {
        additional.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    }

    let out = BedrockConverseRequest {
        anthropic_version: ctx
            .options
            .anthropic_version
            .clone()
            .unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_string()),
        system,
        messages,
        inference_config: has_inference.then_some(inference),
        tool_config,
        output_config,
        guardrail_config: req.extra.get("guardrailConfig").cloned(),
        additional_model_request_fields: (!additional.is_empty()).then_some(additional),
        // Claude says which stop sequence matched only when asked.
        additional_model_response_field_paths: (claude_model(ctx.model) && inference_stops)
            .then_some(["/stop_sequence"]),
        performance_config: ctx
            .options
            .bedrock
            .as_ref()
            .and_then(|b| b.performance_config_latency.clone())
            .map(|latency| BedrockPerformanceConfig { latency }),
    };
    serde_json::to_value(out).map_err(|e| GatewayError::Internal(e.to_string()))
}

/// One OpenAI message -> its Converse role and content blocks.
pub(super) fn message(
    m: &ChatMessage,
) -> Result<(&'static str, Vec<BedrockContent>), GatewayError> {
    match m.role.as_str() {
        "assistant" => {
            // Signed reasoning blocks first, as Bedrock returned them.
            let mut content: Vec<BedrockContent> = m
                .thinking_blocks
                .iter()
                .flatten()
                .filter_map(reasoning_block)
                .collect();
            let text = m.text();
            let calls = m.tool_calls.as_deref().unwrap_or_default();
            if !text.is_empty() || calls.is_empty() {
                content.push(BedrockContent::Text(text));
            }
            for call in calls {
                let arguments = call.function.arguments.trim();
                let input = if arguments.is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(arguments).map_err(|_| {
                        bad("failed to decode function response arguments from assistant's message, not JSON format")
                    })?
                };
                content.push(BedrockContent::ToolUse(BedrockToolUse {
                    tool_use_id: call.id.clone(),
                    name: call.function.name.clone(),
                    input,
                }));
            }
            push_cache_point(m, &mut content);
            Ok(("assistant", content))
        }
        "tool" | "function" => {
            let text = m.text();
            // A JSON object goes as `json`; other JSON values wrapped as Kong does; plain text
            // (which Kong refuses) as a text block.
            let block = match serde_json::from_str::<Value>(&text) {
                Ok(v @ Value::Object(_)) => BedrockToolResultContent::Json(v),
                Ok(v) => BedrockToolResultContent::Json(json!({ "result": v })),
                Err(_) => BedrockToolResultContent::Text(text),
            };
            let tool_use_id = m
                .tool_call_id
                .clone()
                .or_else(|| m.name.clone())
                .unwrap_or_default();
            let mut content = vec![BedrockContent::ToolResult(BedrockToolResult {
                tool_use_id,
                content: vec![block],
            })];
            push_cache_point(m, &mut content);
            Ok(("user", content))
        }
        _ => Ok(("user", user_content(m)?)),
    }
}

/// Claude on Bedrock (`anthropic.claude-…`, inference profiles `us.anthropic.claude-…`):
/// the models that take Anthropic's thinking budget.
pub fn claude_model(model: &str) -> bool {
    model.contains("anthropic") || model.contains("claude")
}

/// Converse's prompt-caching breakpoint: everything before it is cached.
fn cache_point() -> Value {
    json!({"type": "default"})
}

/// Text-only turns (assistant, tool results) are sent as one block: `cache_control` on any
/// of their parts becomes a `cachePoint` after the whole turn.
fn push_cache_point(m: &ChatMessage, content: &mut Vec<BedrockContent>) {
    if m.cached() {
        content.push(BedrockContent::CachePoint(cache_point()));
    }
}

/// A client's thinking block (Anthropic shape) -> a Converse `reasoningContent` block.
fn reasoning_block(block: &Value) -> Option<BedrockContent> {
    let content = match block.get("type").and_then(Value::as_str)? {
        "thinking" => json!({"reasoningText": {
            "text": block.get("thinking").cloned().unwrap_or_default(),
            "signature": block.get("signature").cloned().unwrap_or_default(),
        }}),
        "redacted_thinking" => json!({"redactedContent": block.get("data")?}),
        _ => return None,
    };
    Some(BedrockContent::ReasoningContent(content))
}

/// User content: text, and images as base64 data URLs (Bedrock cannot fetch URLs).
/// `cache_control` on a part becomes a `cachePoint` after it.
pub(super) fn user_content(m: &ChatMessage) -> Result<Vec<BedrockContent>, GatewayError> {
    let parts = match &m.content {
        None => return Ok(vec![BedrockContent::Text(String::new())]),
        Some(MessageContent::Text(s)) => return Ok(vec![BedrockContent::Text(s.clone())]),
        Some(MessageContent::Parts(parts)) => parts,
    };
    let mut content = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            ContentPart::Text { text, .. } => content.push(BedrockContent::Text(text.clone())),
            ContentPart::ImageUrl { image_url, .. } => {
                let (mime, data) = image_url.as_data_url().ok_or_else(|| {
                    bad("bedrock only accepts images as base64 data URLs (data:image/...;base64,...)")
                })?;
                let format = match mime.to_ascii_lowercase().as_str() {
                    "image/png" => "png",
                    "image/jpeg" | "image/jpg" => "jpeg",
                    "image/gif" => "gif",
                    "image/webp" => "webp",
                    other => {
                        return Err(bad(format!("unsupported image type '{other}' for bedrock")))
                    }
                };
                content.push(BedrockContent::Image(BedrockImage {
                    format,
                    source: BedrockImageSource {
                        bytes: data.to_string(),
                    },
                }));
            }
            ContentPart::Unsupported => {}
        }
        if part.cached() {
            content.push(BedrockContent::CachePoint(cache_point()));
        }
    }
    if content.is_empty() {
        content.push(BedrockContent::Text(String::new()));
    }
    Ok(content)
}

/// OpenAI tools -> `toolConfig`. Bedrock has no `tool_choice: none`: the tools are dropped,
/// unless the conversation already holds tool blocks (then Converse requires `toolConfig`).
pub(super) fn tool_config(
    tools: Option<&[Tool]>,
    choice: Option<&ToolChoice>,
    uses_tools: bool,
) -> Option<BedrockToolConfig> {
    let tools = tools.filter(|t| !t.is_empty())?;
    let tool_choice = match choice {
        None => None,
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "none" if !uses_tools => return None,
            "required" | "any" => Some(json!({ "any": {} })),
            "auto" => Some(json!({ "auto": {} })),
            _ => None,
        },
        Some(ToolChoice::Function(f)) => Some(json!({ "tool": { "name": f.function.name } })),
    };
    let mut specs = Vec::with_capacity(tools.len());
    for t in tools {
        specs.push(BedrockTool::ToolSpec(BedrockToolSpec {
            name: t.function.name.clone(),
            description: t.function.description.clone(),
            input_schema: BedrockInputSchema {
                json: t
                    .function
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            },
        }));
        if t.cache_control.is_some() {
            specs.push(BedrockTool::CachePoint(cache_point()));
        }
    }
    let tools = specs;
    Some(BedrockToolConfig { tools, tool_choice })
}

/// OpenAI embeddings request -> `InvokeModel` body: Cohere's for `cohere.embed*` models,
/// Titan's otherwise.
pub(super) fn embeddings_request(
    ctx: &RequestCtx<'_>,
    body: Map<String, Value>,
) -> Result<Value, GatewayError> {
    let req = ChatRequest::from_body(body).map_err(bad)?;
    let texts: Vec<String> = match req.input.as_ref() {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("'input' must be a string or an array of strings"))?,
        _ => return Err(bad("'input' must be a string or an array of strings")),
    };
    let out = if ctx.model.contains("cohere.embed") {
        serde_json::to_value(BedrockCohereEmbedRequest {
            texts,
            input_type: COHERE_EMBED_INPUT_TYPE,
        })
    } else {
        let [input_text] = <[String; 1]>::try_from(texts)
            .map_err(|_| bad("bedrock titan embeddings take one input string"))?;
        let v1 = TITAN_EMBED_V1_MODELS.iter().any(|m| ctx.model.contains(m));
        let dimensions = ctx
            .options
            .embeddings_dimensions
            .or_else(|| req.extra.get("dimensions").and_then(Value::as_u64));
        let normalize = ctx
            .options
            .bedrock
            .as_ref()
            .is_some_and(|b| b.embeddings_normalize);
        serde_json::to_value(BedrockTitanEmbedRequest {
            input_text,
            dimensions: dimensions.filter(|_| !v1),
            normalize: (!v1).then_some(normalize),
        })
    };
    out.map_err(|e| GatewayError::Internal(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
