//! Gemini request translation: OpenAI chat, completions and embeddings -> Gemini and Vertex bodies.

use super::*;

// ---------------------------------------------------------------------------------------------
// Translation: request
// ---------------------------------------------------------------------------------------------

/// OpenAI chat (or completions) request -> `GenerateContentRequest`. The error is Kong's detail
/// text for `error transforming to gemini://<route>: <detail>`.
pub(super) fn generate_request(
    ctx: &RequestCtx<'_>,
    mut body: Map<String, Value>,
) -> Result<Value, String> {
    let messages = body.remove("messages");
    let req = ChatRequest::from_body(body)?;

    let mut turns = Turns::default();
    let mut system_parts = Vec::new();
    match ctx.route_type {
        RouteType::Completions => {
            let prompt = req.prompt_text().unwrap_or_default();
            turns.push("user", vec![json!({ "text": prompt })]);
        }
        _ => {
            let messages = match messages {
                Some(Value::Array(m)) => m,
                _ => Vec::new(),
            };
            convert_messages(&messages, &mut turns, &mut system_parts)?;
        }
    }
    if !system_parts.is_empty() && ctx.model.starts_with("gemini-1.0") {
        return Err("system prompts aren't supported on gemini-1.0 models".into());
    }

    let tools: Vec<&FunctionDef> = req
        .tools
        .iter()
        .flatten()
        .filter(|t| t.kind == "function")
        .map(|t| &t.function)
        .collect();
    let tool_config = match &req.tool_choice {
        Some(choice) => Some(tool_config(choice)),
        // Kong forwards a native `tool_config` the client put in its body.
        None => req.extra.get("tool_config").cloned(),
    };

    let request = GeminiRequest {
        contents: turns.0,
        system_instruction: (!system_parts.is_empty()).then_some(GeminiSystemInstruction {
            parts: system_parts,
        }),
        generation_config: generation_config(ctx, &req),
        tools: (!tools.is_empty()).then(|| {
            vec![GeminiTool {
                function_declarations: tools,
            }]
        }),
        tool_config,
    };
    serde_json::to_value(request).map_err(|e| e.to_string())
}

pub(super) fn generation_config(ctx: &RequestCtx<'_>, req: &ChatRequest) -> GeminiGenerationConfig {
    let extra = |k: &str| req.extra.get(k);
    // Several candidates only make sense when the whole answer comes back at once.
    let n = extra("n")
        .and_then(Value::as_u64)
        .filter(|n| *n > 1 && !ctx.stream);
    let (response_mime_type, response_schema) = match extra("response_format") {
        Some(f) => match f.get("type").and_then(Value::as_str) {
            Some("json_object") => (Some("application/json"), None),
            Some("json_schema") => (
                Some("application/json"),
                f.get("json_schema").and_then(|s| s.get("schema")).cloned(),
            ),
            _ => (None, None),
        },
        None => (None, None),
    };
    GeminiGenerationConfig {
        max_output_tokens: req.max_tokens(),
        stop_sequences: req.stop.as_ref().map(|s| s.to_vec()),
        temperature: req.temperature,
        top_k: req.top_k,
        top_p: req.top_p,
        candidate_count: n,
        presence_penalty: extra("presence_penalty").and_then(Value::as_f64),
        frequency_penalty: extra("frequency_penalty").and_then(Value::as_f64),
        seed: extra("seed").and_then(Value::as_i64),
        response_mime_type,
        response_schema,
        // Thoughts are asked for whenever reasoning is on, so they reach `reasoning_content`.
        thinking_config: req
            .thinking_budget()
            .map(|budget| json!({"thinkingBudget": budget, "includeThoughts": budget > 0})),
    }
}

/// `tool_choice` -> `toolConfig.functionCallingConfig`.
pub(super) fn tool_config(choice: &ToolChoice) -> Value {
    let config = match choice {
        ToolChoice::Mode(mode) => match mode.as_str() {
            "none" => json!({ "mode": "NONE" }),
            "required" => json!({ "mode": "ANY" }),
            _ => json!({ "mode": "AUTO" }),
        },
        ToolChoice::Function(f) => {
            json!({ "mode": "ANY", "allowedFunctionNames": [f.function.name] })
        }
    };
    json!({ "functionCallingConfig": config })
}

/// `contents`, merging consecutive turns of the same role (Gemini wants them alternating, and
/// parallel tool results must arrive as one turn).
#[derive(Default)]
pub(super) struct Turns(Vec<GeminiContent>);

impl Turns {
    fn push(&mut self, role: &'static str, parts: Vec<Value>) {
        if parts.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => self.0.push(GeminiContent { role, parts }),
        }
    }
}

/// OpenAI messages -> Gemini turns plus system parts. Messages are read from raw JSON so that
/// Kong's error texts (which name positions and part types) can be given.
pub(super) fn convert_messages(
    messages: &[Value],
    turns: &mut Turns,
    system_parts: &mut Vec<Value>,
) -> Result<(), String> {
    // Tool results name their function only by call id: remember the names of earlier calls.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        let position = i + 1;
        let Some(m) = m.as_object() else {
            return Err(format!(
                "message at position {position} does not match expected OpenAI format"
            ));
        };
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => system_parts.extend(content_parts(content, position)?),
            "tool" | "function" => {
                let id = m.get("tool_call_id").and_then(Value::as_str);
                let name = id
                    .and_then(|id| call_names.get(id).copied())
                    .or_else(|| m.get("name").and_then(Value::as_str))
                    .or(id)
                    .unwrap_or_default();
                let part = json!({
                    "functionResponse": {
                        "name": name,
                        "response": { "content": tool_result(content) },
                    }
                });
                turns.push("user", vec![part]);
            }
            "assistant" | "model" => {
                let mut parts = content_parts(content, position)?;
                let calls = m.get("tool_calls").and_then(Value::as_array);
                for call in calls.into_iter().flatten() {
                    let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
                    let function = call.get("function").unwrap_or(&Value::Null);
                    let name = function
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if !id.is_empty() {
                        call_names.insert(id, name);
                    }
                    let mut part = Map::new();
                    part.insert(
                        "functionCall".into(),
                        json!({ "name": name, "args": call_arguments(function.get("arguments")) }),
                    );
                    if let Some((_, signature)) = id.split_once(THOUGHT_SIGNATURE_MARK) {
                        part.insert("thoughtSignature".into(), json!(signature));
                    }
                    parts.push(Value::Object(part));
                }
                turns.push("model", parts);
            }
            _ => turns.push("user", content_parts(content, position)?),
        }
    }
    Ok(())
}

/// Gemini wants call arguments as an object; OpenAI sends a JSON string.
pub(super) fn call_arguments(arguments: Option<&Value>) -> Value {
    match arguments {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => json!({}),
        },
        Some(v @ Value::Object(_)) => v.clone(),
        _ => json!({}),
    }
}

/// A tool message's content: parsed when it is JSON, else the text.
pub(super) fn tool_result(content: &Value) -> Value {
    let text = match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Value::Null => String::new(),
        other => return other.clone(),
    };
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// One message's content -> Gemini parts. Empty text is left out.
pub(super) fn content_parts(content: &Value, position: usize) -> Result<Vec<Value>, String> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({ "text": s })]),
        Value::Array(parts) if parts.is_empty() => Err(format!(
            "message at position {position} does not match expected array format"
        )),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| content_part(part, position, j + 1))
            .collect(),
        _ => Err(format!(
            "message at position {position} does not match expected OpenAI format"
        )),
    }
}

pub(super) fn content_part(part: &Value, position: usize, index: usize) -> Result<Value, String> {
    let mismatch = || {
        format!(
            "message at position {position}, part at position {index} does not match expected OpenAI format"
        )
    };
    let kind = part
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(mismatch)?;
    match kind {
        "text" => part
            .get("text")
            .and_then(Value::as_str)
            .map(|text| json!({ "text": text }))
            .ok_or_else(|| "message part type is 'text' but is missing .text block".into()),
        "image_url" => {
            let url = match part.get("image_url") {
                Some(Value::String(url)) => Some(url.as_str()),
                Some(image) => image.get("url").and_then(Value::as_str),
                None => None,
            }
            .ok_or("message part type is 'image_url' but is missing .image_url.url block")?;
            image_part(url)
        }
        "input_audio" => {
            let audio = part.get("input_audio").ok_or_else(mismatch)?;
            let data = audio
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(mismatch)?;
            let format = audio.get("format").and_then(Value::as_str).unwrap_or("wav");
            Ok(json!({ "inlineData": { "mimeType": format!("audio/{format}"), "data": data } }))
        }
        "file" => {
            let data = part
                .get("file")
                .and_then(|f| f.get("file_data"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    "cannot transform part of type 'file' without file_data to Gemini format"
                        .to_string()
                })?;
            let (mime, data) = split_data_url(data)
                .ok_or("could not decode OpenAI file-part, file_data is not a base64 data URL")?;
            Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }))
        }
        other => Err(format!(
            "cannot transform part of type '{other}' to Gemini format"
        )),
    }
}

/// A data URL becomes `inlineData`; any other URL (https, gs://, a Files API URI) `fileData`.
pub(super) fn image_part(url: &str) -> Result<Value, String> {
    if url.len() < 10 {
        return Err(
            "could not decode OpenAI image-part, image URL is less than 10 bytes, which is not parsable"
                .into(),
        );
    }
    if url.starts_with("data:") {
        let (mime, data) = split_data_url(url)
            .ok_or("could not decode OpenAI image-part, data URL is not base64-encoded")?;
        return Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }));
    }
    Ok(json!({ "fileData": { "mimeType": mime_from_extension(url), "fileUri": url } }))
}

/// Gemini wants an IANA type for `fileData`; Kong sends `image/generic`, which is kept for
/// URLs whose extension says nothing.
pub(super) fn mime_from_extension(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or(path);
    let ext = file
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "txt" => "text/plain",
        _ => GENERIC_IMAGE_MIME,
    }
}

/// OpenAI embeddings request -> `batchEmbedContents` (AI Studio) or `predict` (Vertex).
pub(super) fn embeddings_request(
    ctx: &RequestCtx<'_>,
    body: Map<String, Value>,
) -> Result<Value, String> {
    let texts: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or("Gemini embeds text only; token arrays are not supported")
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("request body doesn't contain valid input".into()),
    };
    let dimensions = ctx
        .options
        .embeddings_dimensions
        .or_else(|| body.get("dimensions").and_then(Value::as_u64));
    let vertex = vertex_target(ctx.options).ok().flatten().is_some();
    if vertex {
        let instances: Vec<Value> = texts.iter().map(|t| json!({ "content": t })).collect();
        let mut out = json!({ "instances": instances });
        if let Some(d) = dimensions {
            out["parameters"] = json!({ "outputDimensionality": d });
        }
        return Ok(out);
    }
    let model = format!("models/{}", model_id(ctx.model));
    let requests: Vec<Value> = texts
        .iter()
        .map(|t| {
            let mut r = json!({ "model": model, "content": { "parts": [{ "text": t }] } });
            if let Some(d) = dimensions {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    Ok(json!({ "requests": requests }))
}
