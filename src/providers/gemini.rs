//! Gemini: Google AI Studio (`generativelanguage.googleapis.com`, API key from the plugin's
//! header/query auth) and Vertex AI (`model.options.gemini.{api_endpoint, project_id,
//! location_id}`, OAuth bearer token from a GCP service account).
//!
//! Chat and completions go to `:generateContent` / `:streamGenerateContent?alt=sse`;
//! embeddings to `:batchEmbedContents` (AI Studio) or `:predict` (Vertex), which both take one
//! text or many, so the URL does not depend on the body. Streams are read as SSE, or as the
//! JSON-array framing Gemini uses without `alt=sse` (told apart by the first byte).
//!
//! API reference: https://ai.google.dev/api/generate-content ,
//! https://ai.google.dev/api/embeddings , https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference
//! and https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/text-embeddings-api .

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

use super::oai::{
    arguments_string, split_data_url, ChatChoice, ChatCompletion, ChatRequest, ChunkBuilder,
    EmbeddingList, FinishReason, FunctionDef, ResponseMeta, TextChoice, TextCompletion, ToolCall,
    ToolChoice, Usage,
};
use super::stream::{DecodedStream, EventTranslate, Frames};
use super::{
    path_segment, with_query, RequestCtx, StreamError, StreamTranslate, TokenSource, Translate,
    Translated,
};
use crate::codec::json_array::{JsonArrayDecoder, JsonArrayItem};
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::config::ai_proxy::{AiProxyConfig, ModelOptions, RouteType};
use crate::error::GatewayError;

pub const PROVIDER: &str = "gemini";
pub const AI_STUDIO_HOST: &str = "https://generativelanguage.googleapis.com";
pub const AI_STUDIO_API_VERSION: &str = "v1beta";
/// Vertex's `v1` API; the regional host comes from `options.gemini.api_endpoint`.
pub const VERTEX_API_VERSION: &str = "v1";
/// The env var Kong reads when `gcp_service_account_json` is not configured.
pub const GCP_SERVICE_ACCOUNT_ENV: &str = "GCP_SERVICE_ACCOUNT";
/// Kong's reason when a 200 answer has no candidate.
const NO_CANDIDATES: &str =
    "no generation candidates received from Gemini, or max_tokens too short";
/// Kong's reason when a 200 answer is not JSON.
const UNDECODABLE: &str = "failed to decode response from Gemini";
/// Gemini 3 requires a function call's `thoughtSignature` back on the next turn; OpenAI has no
/// field for it, so it rides in the tool call id (`call_<request>_<n>__thought__<signature>`).
const THOUGHT_SIGNATURE_MARK: &str = "__thought__";
/// Kong's `mimeType` for an image URL whose type cannot be told.
const GENERIC_IMAGE_MIME: &str = "image/generic";

pub struct Gemini {
    tokens: Option<Arc<vertex_auth::ServiceAccountTokens>>,
}

impl Translate for Gemini {
    fn from_config(config: &AiProxyConfig) -> Result<Self, String> {
        let auth = config.auth.as_ref().filter(|a| a.gcp_use_service_account);
        let tokens = match auth {
            None => None,
            Some(auth) => {
                let json = auth
                    .gcp_service_account_json
                    .clone()
                    .or_else(|| std::env::var(GCP_SERVICE_ACCOUNT_ENV).ok())
                    .filter(|j| !j.trim().is_empty())
                    .ok_or_else(|| {
                        format!(
                            "auth.gcp_use_service_account is set but neither \
                             auth.gcp_service_account_json nor env {GCP_SERVICE_ACCOUNT_ENV} \
                             holds a service account"
                        )
                    })?;
                Some(Arc::new(vertex_auth::ServiceAccountTokens::from_json(
                    &json,
                )?))
            }
        };
        Ok(Gemini { tokens })
    }

    fn url(&self, ctx: &RequestCtx<'_>) -> Result<String, GatewayError> {
        let vertex = vertex_target(ctx.options)?;
        let model = path_segment(model_id(ctx.model));
        let (host, path) = match &vertex {
            Some(v) => (
                format!("https://{}", v.host),
                format!(
                    "/{VERTEX_API_VERSION}/projects/{}/locations/{}/publishers/google/models/{model}:{}",
                    path_segment(v.project),
                    path_segment(v.location),
                    operation(ctx, true),
                ),
            ),
            None => (
                AI_STUDIO_HOST.to_string(),
                format!(
                    "/{AI_STUDIO_API_VERSION}/models/{model}:{}",
                    operation(ctx, false)
                ),
            ),
        };
        let mut url = match ctx.options.upstream_url.as_deref() {
            // An URL with no path is a base (our extension): the API path is appended.
            Some(base) if super::is_base_url(base) => {
                format!("{}{path}", base.trim_end_matches('/'))
            }
            // A full endpoint URL, used as is (Kong: model and operation are not appended).
            Some(url) => url.to_string(),
            None => format!("{host}{path}"),
        };
        if let Some(path) = ctx.options.upstream_path.as_deref() {
            url = replace_path(&url, path)?;
        }
        if ctx.stream && !has_query_key(&url, "alt") {
            url = with_query(&url, &[("alt", "sse")]);
        }
        Ok(url)
    }

    fn headers(&self, _ctx: &RequestCtx<'_>, out: &mut Vec<(HeaderName, HeaderValue)>) {
        // Kong: compressed bodies break Gemini's streams.
        out.push((
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        ));
    }

    fn request(
        &self,
        ctx: &RequestCtx<'_>,
        body: Map<String, Value>,
    ) -> Result<Value, GatewayError> {
        let out = match ctx.route_type {
            RouteType::Embeddings => embeddings_request(ctx, body),
            _ => generate_request(ctx, body),
        };
        out.map_err(|detail| {
            GatewayError::BadRequest(format!(
                "error transforming to {PROVIDER}://{}: {detail}",
                ctx.route_type.as_str()
            ))
        })
    }

    fn response(&self, ctx: &RequestCtx<'_>, body: Bytes) -> Result<Translated, String> {
        let r: GeminiResponse = serde_json::from_slice(&body).map_err(|_| UNDECODABLE)?;
        let (body, usage) = match ctx.route_type {
            RouteType::Embeddings => embeddings_response(ctx, r)?,
            _ => generate_response(ctx, r)?,
        };
        Ok(Translated {
            body: Bytes::from(body),
            usage,
        })
    }

    fn stream(&self, ctx: &RequestCtx<'_>) -> Box<dyn StreamTranslate> {
        Box::new(GeminiStream::new(ctx))
    }

    fn token_source(&self) -> Option<Arc<dyn TokenSource>> {
        self.tokens.clone().map(|t| t as Arc<dyn TokenSource>)
    }
}

/// Vertex coordinates, when all three options are set (Kong's `is_vertex_mode`).
struct VertexTarget<'a> {
    host: &'a str,
    project: &'a str,
    location: &'a str,
}

fn vertex_target(options: &ModelOptions) -> Result<Option<VertexTarget<'_>>, GatewayError> {
    let Some(g) = options.gemini.as_ref() else {
        return Ok(None);
    };
    let (Some(endpoint), Some(project), Some(location)) = (
        non_empty(&g.api_endpoint),
        non_empty(&g.project_id),
        non_empty(&g.location_id),
    ) else {
        return Ok(None);
    };
    // A hostname (optionally with a port); tolerate a scheme or trailing slash around it.
    let host = endpoint
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    if !valid {
        return Err(GatewayError::BadRequest(
            "model.options.gemini.api_endpoint must be a hostname".into(),
        ));
    }
    Ok(Some(VertexTarget {
        host,
        project,
        location,
    }))
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// The model's id as the URL wants it (clients sometimes send the resource name `models/x`).
fn model_id(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

fn operation(ctx: &RequestCtx<'_>, vertex: bool) -> &'static str {
    match (ctx.route_type, vertex) {
        (RouteType::Embeddings, false) => "batchEmbedContents",
        (RouteType::Embeddings, true) => "predict",
        _ if ctx.stream => "streamGenerateContent",
        _ => "generateContent",
    }
}

/// Kong: `upstream_path` replaces the path of the computed (or configured) URL; repeated
/// leading slashes collapse to one. The query is kept.
fn replace_path(url: &str, path: &str) -> Result<String, GatewayError> {
    let mut parsed = url::Url::parse(url)
        .map_err(|e| GatewayError::BadRequest(format!("invalid upstream URL: {e}")))?;
    parsed.set_path(&format!("/{}", path.trim_start_matches('/')));
    Ok(parsed.to_string())
}

fn has_query_key(url: &str, key: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == key)
    })
}

// ---------------------------------------------------------------------------------------------
// Request wire types
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiRequest<'a> {
    contents: Vec<GeminiContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<GeminiSystemInstruction>,
    /// Always sent, even empty (Kong).
    generation_config: GeminiGenerationConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<GeminiTool<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<Value>,
}

#[derive(Debug, Serialize)]
struct GeminiContent {
    role: &'static str,
    /// Parts are built as JSON: text, `inlineData`, `fileData`, `functionCall`,
    /// `functionResponse`.
    parts: Vec<Value>,
}

#[derive(Debug, Serialize)]
struct GeminiSystemInstruction {
    parts: Vec<Value>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiGenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
}

/// Kong writes the snake_case name (its tests check it); Gemini accepts both spellings.
#[derive(Debug, Serialize)]
struct GeminiTool<'a> {
    function_declarations: Vec<&'a FunctionDef>,
}

// ---------------------------------------------------------------------------------------------
// Response wire types (non-stream and stream share them: each stream event is a response)
// ---------------------------------------------------------------------------------------------

/// `null` reads as the default, like a missing field.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiResponse {
    #[serde(default, deserialize_with = "nullable")]
    candidates: Vec<GeminiCandidate>,
    #[serde(default)]
    usage_metadata: Option<GeminiUsage>,
    #[serde(default)]
    prompt_feedback: Option<GeminiPromptFeedback>,
    #[serde(default)]
    error: Option<GeminiError>,
    /// `:embedContent`.
    #[serde(default)]
    embedding: Option<GeminiEmbedding>,
    /// `:batchEmbedContents`.
    #[serde(default)]
    embeddings: Option<Vec<GeminiEmbedding>>,
    /// Vertex `:predict`.
    #[serde(default)]
    predictions: Option<Vec<VertexPrediction>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiCandidate {
    #[serde(default)]
    content: Option<GeminiContentIn>,
    #[serde(default)]
    finish_reason: Option<GeminiFinishReason>,
}

#[derive(Debug, Default, Deserialize)]
struct GeminiContentIn {
    #[serde(default, deserialize_with = "nullable")]
    parts: Vec<GeminiPart>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiPart {
    #[serde(default)]
    text: Option<String>,
    /// A thought summary (`includeThoughts`), not part of the answer.
    #[serde(default, deserialize_with = "nullable")]
    thought: bool,
    #[serde(default)]
    function_call: Option<GeminiFunctionCall>,
    #[serde(default)]
    thought_signature: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct GeminiFunctionCall {
    #[serde(default, deserialize_with = "nullable")]
    name: String,
    #[serde(default)]
    args: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum GeminiFinishReason {
    Stop,
    MaxTokens,
    Safety,
    Recitation,
    Blocklist,
    ProhibitedContent,
    Spii,
    ImageSafety,
    #[serde(other)]
    Unknown,
}

impl GeminiFinishReason {
    fn to_openai(self, has_tool_calls: bool) -> FinishReason {
        match self {
            _ if has_tool_calls => FinishReason::ToolCalls,
            GeminiFinishReason::MaxTokens => FinishReason::Length,
            GeminiFinishReason::Safety
            | GeminiFinishReason::Recitation
            | GeminiFinishReason::Blocklist
            | GeminiFinishReason::ProhibitedContent
            | GeminiFinishReason::Spii
            | GeminiFinishReason::ImageSafety => FinishReason::ContentFilter,
            GeminiFinishReason::Stop | GeminiFinishReason::Unknown => FinishReason::Stop,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
    #[serde(default, deserialize_with = "nullable")]
    prompt_token_count: u64,
    #[serde(default, deserialize_with = "nullable")]
    candidates_token_count: u64,
    #[serde(default, deserialize_with = "nullable")]
    thoughts_token_count: u64,
    #[serde(default, deserialize_with = "nullable")]
    tool_use_prompt_token_count: u64,
    #[serde(default)]
    total_token_count: Option<u64>,
}

impl GeminiUsage {
    /// Thinking tokens count as completion tokens, as OpenAI counts reasoning tokens.
    fn to_openai(self) -> Usage {
        // Saturating: the counts come from the wire.
        let prompt_tokens = self
            .prompt_token_count
            .saturating_add(self.tool_use_prompt_token_count);
        let completion_tokens = self
            .candidates_token_count
            .saturating_add(self.thoughts_token_count);
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: self
                .total_token_count
                .unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiPromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct GeminiError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiEmbedding {
    #[serde(default, deserialize_with = "nullable")]
    values: Vec<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct VertexPrediction {
    #[serde(default)]
    embeddings: Option<VertexEmbedding>,
}

#[derive(Debug, Default, Deserialize)]
struct VertexEmbedding {
    #[serde(default, deserialize_with = "nullable")]
    values: Vec<f64>,
    #[serde(default)]
    statistics: Option<VertexEmbeddingStatistics>,
}

#[derive(Debug, Default, Deserialize)]
struct VertexEmbeddingStatistics {
    /// Vertex has sent this as a float.
    #[serde(default)]
    token_count: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// Stream wire types
// ---------------------------------------------------------------------------------------------

/// How the upstream frames its events: decided by the body's first non-space byte.
#[derive(Default)]
enum Framing {
    #[default]
    Undecided,
    /// `alt=sse`: `data: {GenerateContentResponse}` events.
    Sse(SseDecoder),
    /// No `alt=sse`: one JSON array whose elements arrive over time.
    JsonArray(JsonArrayDecoder),
    /// A whole `GenerateContentResponse` (an `upstream_url` naming `:generateContent` on a
    /// streamed request): read at the end as one event.
    Object(BytesMut),
}

/// How much of a non-streamed answer a stream buffers before giving up.
const MAX_OBJECT_BODY: usize = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Translation: request
// ---------------------------------------------------------------------------------------------

/// OpenAI chat (or completions) request -> `GenerateContentRequest`. The error is Kong's detail
/// text for `error transforming to gemini://<route>: <detail>`.
fn generate_request(ctx: &RequestCtx<'_>, mut body: Map<String, Value>) -> Result<Value, String> {
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

fn generation_config(ctx: &RequestCtx<'_>, req: &ChatRequest) -> GeminiGenerationConfig {
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
    }
}

/// `tool_choice` -> `toolConfig.functionCallingConfig`.
fn tool_config(choice: &ToolChoice) -> Value {
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
struct Turns(Vec<GeminiContent>);

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
fn convert_messages(
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
fn call_arguments(arguments: Option<&Value>) -> Value {
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
fn tool_result(content: &Value) -> Value {
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
fn content_parts(content: &Value, position: usize) -> Result<Vec<Value>, String> {
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

fn content_part(part: &Value, position: usize, index: usize) -> Result<Value, String> {
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
fn image_part(url: &str) -> Result<Value, String> {
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
fn mime_from_extension(url: &str) -> &'static str {
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
fn embeddings_request(ctx: &RequestCtx<'_>, body: Map<String, Value>) -> Result<Value, String> {
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

// ---------------------------------------------------------------------------------------------
// Translation: response
// ---------------------------------------------------------------------------------------------

/// What one candidate says, in OpenAI terms.
struct Answer {
    text: Option<String>,
    tool_calls: Vec<ToolCall>,
    finish: FinishReason,
}

/// Tool call ids: `call_<request id>_<n>`, with the thought signature appended when present.
fn tool_call_id(request_id: &str, n: usize, signature: Option<&str>) -> String {
    match signature.filter(|s| !s.is_empty()) {
        Some(sig) => format!("call_{request_id}_{n}{THOUGHT_SIGNATURE_MARK}{sig}"),
        None => format!("call_{request_id}_{n}"),
    }
}

fn answer(candidate: &GeminiCandidate, request_id: &str, calls_before: usize) -> Answer {
    let parts = candidate.content.iter().flat_map(|c| c.parts.iter());
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for part in parts {
        if let Some(call) = &part.function_call {
            let id = tool_call_id(
                request_id,
                calls_before + tool_calls.len(),
                part.thought_signature.as_deref(),
            );
            tool_calls.push(ToolCall::function(
                id,
                call.name.clone(),
                arguments_string(&call.args),
            ));
        } else if let Some(t) = part.text.as_deref().filter(|_| !part.thought) {
            text.get_or_insert_with(String::new).push_str(t);
        }
    }
    let finish = candidate
        .finish_reason
        .unwrap_or(GeminiFinishReason::Stop)
        .to_openai(!tool_calls.is_empty());
    if text.is_none() && tool_calls.is_empty() {
        text = Some(String::new());
    }
    Answer {
        text,
        tool_calls,
        finish,
    }
}

/// `GenerateContentResponse` -> chat completion (or text completion), one choice per candidate.
fn generate_response(ctx: &RequestCtx<'_>, r: GeminiResponse) -> Result<(Vec<u8>, Usage), String> {
    if r.candidates.is_empty() {
        return Err(NO_CANDIDATES.into());
    }
    let usage = r.usage_metadata.unwrap_or_default().to_openai();
    let meta = ctx.meta();
    let mut answers = Vec::with_capacity(r.candidates.len());
    let mut calls = 0;
    for candidate in &r.candidates {
        let a = answer(candidate, ctx.request_id, calls);
        calls += a.tool_calls.len();
        answers.push(a);
    }
    let body = if ctx.route_type == RouteType::Completions {
        serde_json::to_vec(&text_completion(&meta, answers, usage))
    } else {
        serde_json::to_vec(&chat_completion(&meta, answers, usage))
    };
    Ok((body.map_err(|e| e.to_string())?, usage))
}

fn chat_completion(meta: &ResponseMeta, answers: Vec<Answer>, usage: Usage) -> ChatCompletion {
    let mut out = ChatCompletion::single(meta, None, Vec::new(), None, usage);
    out.choices = answers
        .into_iter()
        .enumerate()
        .flat_map(|(i, a)| {
            let one = ChatCompletion::single(meta, a.text, a.tool_calls, Some(a.finish), usage);
            one.choices.into_iter().map(move |c| ChatChoice {
                index: i as u32,
                ..c
            })
        })
        .collect();
    out
}

fn text_completion(meta: &ResponseMeta, answers: Vec<Answer>, usage: Usage) -> TextCompletion {
    let mut out = TextCompletion::single(meta, String::new(), None, usage);
    out.choices = answers
        .into_iter()
        .enumerate()
        .map(|(i, a)| TextChoice {
            index: i as u32,
            text: a.text.unwrap_or_default(),
            finish_reason: Some(a.finish),
            logprobs: None,
        })
        .collect();
    out
}

/// `embedding` / `embeddings` (AI Studio) or `predictions` (Vertex) -> an OpenAI list.
fn embeddings_response(
    ctx: &RequestCtx<'_>,
    r: GeminiResponse,
) -> Result<(Vec<u8>, Usage), String> {
    let mut prompt_tokens = r.usage_metadata.map_or(0, |u| u.prompt_token_count);
    let vectors: Vec<Vec<f64>> = if let Some(predictions) = r.predictions {
        let mut counted = 0.0;
        let vectors = predictions
            .into_iter()
            .map(|p| {
                let e = p.embeddings.unwrap_or_default();
                counted += e.statistics.and_then(|s| s.token_count).unwrap_or(0.0);
                e.values
            })
            .collect();
        if prompt_tokens == 0 && counted.is_finite() && counted > 0.0 {
            prompt_tokens = counted as u64;
        }
        vectors
    } else if let Some(embeddings) = r.embeddings {
        embeddings.into_iter().map(|e| e.values).collect()
    } else if let Some(embedding) = r.embedding {
        vec![embedding.values]
    } else {
        return Err("no embeddings received from Gemini".into());
    };
    let list = EmbeddingList::new(ctx.model, vectors, prompt_tokens);
    let body = serde_json::to_vec(&list).map_err(|e| e.to_string())?;
    Ok((body, Usage::new(prompt_tokens, 0)))
}

// ---------------------------------------------------------------------------------------------
// Translation: stream
// ---------------------------------------------------------------------------------------------

/// Gemini stream events (SSE or JSON-array elements) -> OpenAI chunks.
pub type GeminiStream = DecodedStream<GeminiFrames, GeminiEvents>;

impl GeminiStream {
    pub fn new(ctx: &RequestCtx<'_>) -> Self {
        let events = GeminiEvents {
            request_id: ctx.request_id.to_string(),
            tool_calls: 0,
        };
        DecodedStream::from_parts(GeminiFrames::default(), events, ctx.chunk_builder())
    }
}

/// The body cut into `GenerateContentResponse` JSON documents, whatever the [`Framing`].
#[derive(Default)]
pub struct GeminiFrames {
    framing: Framing,
    sse: Vec<SseEvent>,
    array: Vec<JsonArrayItem>,
}

impl GeminiFrames {
    fn sse_payloads(&mut self, out: &mut Vec<Bytes>) {
        let events = self.sse.drain(..);
        let payloads = events.filter(|e| !e.data.is_empty() && e.data != "[DONE]");
        out.extend(payloads.map(|e| Bytes::from(e.data)));
    }
}

impl Frames for GeminiFrames {
    type Item = Bytes;

    /// A broken JSON array fails the read without handing out the elements decoded in it.
    fn feed(&mut self, input: &[u8], out: &mut Vec<Bytes>) -> Result<(), StreamError> {
        let mut input = input;
        if let Framing::Undecided = self.framing {
            let Some(start) = input.iter().position(|b| !b.is_ascii_whitespace()) else {
                return Ok(());
            };
            input = &input[start..];
            self.framing = match input.first() {
                Some(b'[') => Framing::JsonArray(JsonArrayDecoder::new()),
                Some(b'{') => Framing::Object(BytesMut::new()),
                _ => Framing::Sse(SseDecoder::new()),
            };
        }
        match &mut self.framing {
            Framing::Undecided => {}
            Framing::Sse(d) => {
                d.feed(input, &mut self.sse);
                self.sse_payloads(out);
            }
            Framing::JsonArray(d) => {
                d.feed(input, &mut self.array)
                    .map_err(|e| StreamError(format!("gemini stream: {e}")))?;
                out.extend(self.array.drain(..).filter_map(|item| match item {
                    JsonArrayItem::Element(bytes) => Some(bytes),
                    JsonArrayItem::End => None,
                }));
            }
            Framing::Object(buf) => {
                if buf.len() + input.len() > MAX_OBJECT_BODY {
                    return Err(StreamError(
                        "gemini stream: answer too large to buffer".into(),
                    ));
                }
                buf.extend_from_slice(input);
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        match &mut self.framing {
            Framing::Sse(d) => {
                d.finish(&mut self.sse);
                self.sse_payloads(out);
            }
            Framing::Object(buf) if !buf.is_empty() => out.push(buf.split().freeze()),
            _ => {}
        }
    }

    /// A whole-object answer is capped by `MAX_OBJECT_BODY` in `feed`.
    fn pending_bytes(&self) -> usize {
        match &self.framing {
            Framing::Sse(d) => d.pending_bytes(),
            Framing::JsonArray(d) => d.pending_bytes(),
            Framing::Undecided | Framing::Object(_) => 0,
        }
    }
}

pub struct GeminiEvents {
    request_id: String,
    tool_calls: u32,
}

impl EventTranslate<Bytes> for GeminiEvents {
    fn event(
        &mut self,
        data: Bytes,
        chunks: &mut ChunkBuilder,
        out: &mut BytesMut,
    ) -> Result<(), StreamError> {
        let r: GeminiResponse = serde_json::from_slice(&data)
            .map_err(|e| StreamError(format!("undecodable gemini stream event: {e}")))?;
        if let Some(error) = &r.error {
            let message = error
                .message
                .clone()
                .or_else(|| error.status.clone())
                .unwrap_or_else(|| "gemini sent an error event".into());
            return Err(StreamError(message));
        }
        if let Some(usage) = r.usage_metadata {
            chunks.usage = usage.to_openai();
        }
        let Some(candidate) = r.candidates.first() else {
            if r.prompt_feedback.is_some_and(|f| f.block_reason.is_some()) {
                chunks.finish(out, FinishReason::ContentFilter);
            }
            return Ok(());
        };
        let parts = candidate.content.iter().flat_map(|c| c.parts.iter());
        for part in parts {
            if let Some(call) = &part.function_call {
                let index = self.tool_calls;
                self.tool_calls += 1;
                let id = tool_call_id(
                    &self.request_id,
                    index as usize,
                    part.thought_signature.as_deref(),
                );
                chunks.tool_call_start(out, index, &id, &call.name);
                chunks.tool_call_arguments(out, index, &arguments_string(&call.args));
            } else if let Some(text) = part.text.as_deref().filter(|_| !part.thought) {
                chunks.text(out, text);
            }
        }
        if let Some(reason) = candidate.finish_reason {
            chunks.finish(out, reason.to_openai(self.tool_calls > 0));
        }
        Ok(())
    }

    /// A stream that called tools but never said why it stopped stopped for them.
    fn end(&mut self, chunks: &mut ChunkBuilder, out: &mut BytesMut) {
        if !chunks.is_finished() && self.tool_calls > 0 {
            chunks.finish(out, FinishReason::ToolCalls);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Vertex AI: service-account OAuth tokens
// ---------------------------------------------------------------------------------------------

/// A GCP service account's key signs a JWT (RFC 7523) that Google's token endpoint exchanges
/// for an access token: https://developers.google.com/identity/protocols/oauth2/service-account
mod vertex_auth {
    use std::sync::Mutex;

    use actix_web::http::header::{self, HeaderValue};
    use actix_web::http::Method;
    use bytes::Bytes;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde::{Deserialize, Serialize};

    use crate::error::GatewayError;
    use crate::providers::{url_escape, TokenSource, UpstreamRequest};

    pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
    pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
    pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    /// Google caps an assertion's lifetime at one hour.
    const ASSERTION_LIFETIME: u64 = 3600;
    /// A cached token is not used in its last minute.
    const EXPIRY_MARGIN: u64 = 60;

    /// The fields of the service-account JSON that signing needs.
    #[derive(Deserialize)]
    struct ServiceAccountJson {
        client_email: String,
        private_key: String,
        #[serde(default)]
        private_key_id: Option<String>,
        #[serde(default)]
        token_uri: Option<String>,
    }

    #[derive(Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        scope: &'a str,
        aud: &'a str,
        iat: u64,
        exp: u64,
    }

    #[derive(Deserialize)]
    struct TokenResponse {
        access_token: String,
        #[serde(default)]
        expires_in: Option<u64>,
    }

    struct Cached {
        token: String,
        /// Unix seconds after which the token is no longer handed out.
        until: u64,
    }

    pub struct ServiceAccountTokens {
        client_email: String,
        token_uri: String,
        key_id: Option<String>,
        key: EncodingKey,
        cache: Mutex<Option<Cached>>,
    }

    impl ServiceAccountTokens {
        /// Reads the service-account JSON; the error is a config problem (never names the key).
        pub fn from_json(json: &str) -> Result<Self, String> {
            let sa: ServiceAccountJson = serde_json::from_str(json).map_err(|e| {
                format!("GCP service account JSON is invalid: {}", e.classify_name())
            })?;
            let key = EncodingKey::from_rsa_pem(sa.private_key.as_bytes()).map_err(|_| {
                "GCP service account JSON: private_key is not an RSA private key in PEM form"
                    .to_string()
            })?;
            Ok(ServiceAccountTokens {
                client_email: sa.client_email,
                token_uri: sa
                    .token_uri
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string()),
                key_id: sa.private_key_id.filter(|k| !k.is_empty()),
                key,
                cache: Mutex::new(None),
            })
        }

        /// The signed JWT assertion, valid from `now` for an hour.
        pub fn assertion(&self, now: u64) -> Result<String, GatewayError> {
            let mut head = Header::new(Algorithm::RS256);
            head.kid = self.key_id.clone();
            let claims = Claims {
                iss: &self.client_email,
                scope: SCOPE,
                aud: &self.token_uri,
                iat: now,
                exp: now + ASSERTION_LIFETIME,
            };
            jsonwebtoken::encode(&head, &claims, &self.key)
                .map_err(|e| GatewayError::Identity(format!("signing the GCP assertion: {e}")))
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
            // A panic elsewhere while holding the lock leaves a usable cache.
            self.cache.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    trait ClassifyName {
        fn classify_name(&self) -> &'static str;
    }

    impl ClassifyName for serde_json::Error {
        /// The category only: serde's message could quote part of the secret.
        fn classify_name(&self) -> &'static str {
            match self.classify() {
                serde_json::error::Category::Io => "unreadable",
                serde_json::error::Category::Syntax => "not JSON",
                serde_json::error::Category::Data => "missing client_email or private_key",
                serde_json::error::Category::Eof => "truncated",
            }
        }
    }

    impl TokenSource for ServiceAccountTokens {
        fn cached(&self, now: u64) -> Option<String> {
            self.lock()
                .as_ref()
                .filter(|c| now < c.until)
                .map(|c| c.token.clone())
        }

        fn exchange_request(&self, now: u64) -> Result<UpstreamRequest, GatewayError> {
            let assertion = self.assertion(now)?;
            let body = format!(
                "grant_type={}&assertion={}",
                url_escape(GRANT_TYPE),
                url_escape(&assertion)
            );
            Ok(UpstreamRequest {
                method: Method::POST,
                url: self.token_uri.clone(),
                headers: vec![
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/x-www-form-urlencoded"),
                    ),
                    (header::ACCEPT, HeaderValue::from_static("application/json")),
                ],
                body: Bytes::from(body),
            })
        }

        fn store(&self, body: &[u8], now: u64) -> Result<String, GatewayError> {
            let r: TokenResponse = serde_json::from_slice(body).map_err(|_| {
                GatewayError::Identity("GCP token endpoint answered without access_token".into())
            })?;
            let lifetime = r.expires_in.unwrap_or(ASSERTION_LIFETIME);
            *self.lock() = Some(Cached {
                token: r.access_token.clone(),
                until: now.saturating_add(lifetime).saturating_sub(EXPIRY_MARGIN),
            });
            Ok(r.access_token)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ai_proxy::GeminiOptions;
    use crate::providers::testkit::{
        ctx, fixture, fixture_config, fixture_json, run_pieces, run_stream, sse_payloads,
     run_truncated,};
    use proptest::prelude::*;

    fn driver() -> Gemini {
        Gemini::from_config(&fixture_config("gemini/chat/config.json")).unwrap()
    }

    fn vertex_options() -> ModelOptions {
        ModelOptions {
            gemini: Some(GeminiOptions {
                api_endpoint: Some("us-central1-aiplatform.googleapis.com".into()),
                project_id: Some("my-project".into()),
                location_id: Some("us-central1".into()),
                endpoint_id: None,
            }),
            ..ModelOptions::default()
        }
    }

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn translate(route: RouteType, model: &str, v: Value) -> Result<Value, GatewayError> {
        let options = ModelOptions::default();
        driver().request(&ctx(route, model, false, &options), body(v))
    }

    fn chat(v: Value) -> Value {
        translate(RouteType::Chat, "gemini-1.5-flash", v).unwrap()
    }

    fn bad_request(v: Value) -> String {
        match translate(RouteType::Chat, "gemini-1.5-flash", v).unwrap_err() {
            GatewayError::BadRequest(m) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    fn respond(route: RouteType, raw: &str) -> Result<Value, String> {
        let options = ModelOptions::default();
        let t = driver().response(
            &ctx(route, "gemini-1.5-flash", false, &options),
            Bytes::from(raw.to_string()),
        )?;
        Ok(serde_json::from_slice(&t.body).unwrap())
    }

    // --- URLs -----------------------------------------------------------------------------

    #[test]
    fn ai_studio_urls_per_route_and_stream() {
        let options = ModelOptions::default();
        let d = driver();
        let url = |route, stream| {
            d.url(&ctx(route, "gemini-1.5-flash", stream, &options))
                .unwrap()
        };
        let base = "https://generativelanguage.googleapis.com/v1beta/models/gemini-1.5-flash";
        assert_eq!(
            url(RouteType::Chat, false),
            format!("{base}:generateContent")
        );
        // We always ask for SSE; Kong 3.9 took the JSON-array stream (which we also read).
        assert_eq!(
            url(RouteType::Chat, true),
            format!("{base}:streamGenerateContent?alt=sse")
        );
        assert_eq!(
            url(RouteType::Completions, false),
            format!("{base}:generateContent")
        );
        assert_eq!(
            url(RouteType::Embeddings, false),
            format!("{base}:batchEmbedContents")
        );
    }

    #[test]
    fn vertex_urls_use_project_location_and_publisher() {
        let options = vertex_options();
        let d = driver();
        let base = "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-1.5-flash";
        let c = ctx(RouteType::Chat, "gemini-1.5-flash", false, &options);
        assert_eq!(d.url(&c).unwrap(), format!("{base}:generateContent"));
        let c = ctx(RouteType::Chat, "gemini-1.5-flash", true, &options);
        assert_eq!(
            d.url(&c).unwrap(),
            format!("{base}:streamGenerateContent?alt=sse")
        );
        let c = ctx(RouteType::Embeddings, "gemini-1.5-flash", false, &options);
        assert_eq!(d.url(&c).unwrap(), format!("{base}:predict"));
    }

    #[test]
    fn partial_vertex_options_mean_ai_studio_and_bad_endpoints_are_refused() {
        let mut options = vertex_options();
        options.gemini.as_mut().unwrap().project_id = None;
        let c = ctx(RouteType::Chat, "m", false, &options);
        assert!(driver()
            .url(&c)
            .unwrap()
            .starts_with("https://generativelanguage.googleapis.com/v1beta/models/"));
        let mut based = c.options.clone();
        based.upstream_url = Some("http://127.0.0.1:9".into());
        let mut b = c;
        b.options = &based;
        assert!(driver()
            .url(&b)
            .unwrap()
            .starts_with("http://127.0.0.1:9/v1beta/models/"));
        let mut options = vertex_options();
        options.gemini.as_mut().unwrap().api_endpoint = Some("evil.test/x?".into());
        let c = ctx(RouteType::Chat, "m", false, &options);
        assert!(matches!(driver().url(&c), Err(GatewayError::BadRequest(_))));
    }

    #[test]
    fn model_names_cannot_change_the_path() {
        let options = ModelOptions::default();
        let d = driver();
        let c = ctx(RouteType::Chat, "../../x?y=1#", false, &options);
        assert_eq!(
            d.url(&c).unwrap(),
            "https://generativelanguage.googleapis.com/v1beta/models/..%2F..%2Fx%3Fy%3D1%23:generateContent"
        );
        let c = ctx(RouteType::Chat, "..", false, &options);
        assert!(d
            .url(&c)
            .unwrap()
            .ends_with("/models/%2E%2E:generateContent"));
        // The resource-name form clients sometimes send.
        let c = ctx(RouteType::Chat, "models/gemini-2.0-flash", false, &options);
        assert!(d
            .url(&c)
            .unwrap()
            .ends_with("/models/gemini-2.0-flash:generateContent"));
    }

    #[test]
    fn upstream_url_is_used_as_is_with_alt_sse_only_when_streaming_and_absent() {
        let d = driver();
        let mut options = vertex_options();
        options.upstream_url = Some("http://mock:8080/v1/chat/completions".into());
        let c = ctx(RouteType::Chat, "gemini-1.5-pro", false, &options);
        assert_eq!(d.url(&c).unwrap(), "http://mock:8080/v1/chat/completions");
        let c = ctx(RouteType::Chat, "gemini-1.5-pro", true, &options);
        assert_eq!(
            d.url(&c).unwrap(),
            "http://mock:8080/v1/chat/completions?alt=sse"
        );
        options.upstream_url = Some("http://mock/x:streamGenerateContent?alt=sse&k=1".into());
        let c = ctx(RouteType::Chat, "gemini-1.5-pro", true, &options);
        assert_eq!(
            d.url(&c).unwrap(),
            "http://mock/x:streamGenerateContent?alt=sse&k=1"
        );
    }

    #[test]
    fn upstream_path_replaces_the_path() {
        let d = driver();
        let options = ModelOptions {
            upstream_path: Some("//v1beta/models/custom:generateContent".into()),
            ..ModelOptions::default()
        };
        let c = ctx(RouteType::Chat, "gemini-1.5-flash", true, &options);
        assert_eq!(
            d.url(&c).unwrap(),
            "https://generativelanguage.googleapis.com/v1beta/models/custom:generateContent?alt=sse"
        );
    }

    #[test]
    fn upstream_gets_accept_encoding_identity() {
        let options = ModelOptions::default();
        let mut headers = Vec::new();
        driver().headers(&ctx(RouteType::Chat, "m", false, &options), &mut headers);
        assert_eq!(
            headers,
            vec![(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity")
            )]
        );
    }

    // --- Requests -------------------------------------------------------------------------

    #[test]
    fn chat_request_matches_fixture() {
        let out = chat(fixture_json("gemini/chat/client-request.json"));
        assert_eq!(out, fixture_json("gemini/chat/upstream-request.json"));
    }

    #[test]
    fn multimodal_request_matches_fixture_with_real_mime_types() {
        let out = chat(fixture_json("gemini/multimodal/client-request.json"));
        let mut expected = fixture_json("gemini/multimodal/upstream-request.json");
        // Deviation from Kong's `image/generic`: Gemini wants an IANA type, and `.jpg` says it.
        expected["contents"][0]["parts"][2]["fileData"]["mimeType"] = json!("image/jpeg");
        assert_eq!(out, expected);
        let out = chat(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "gs://bucket/object"}}
        ]}]}));
        assert_eq!(
            out["contents"][0]["parts"][0],
            json!({"fileData": {"mimeType": "image/generic", "fileUri": "gs://bucket/object"}})
        );
    }

    #[test]
    fn tools_request_matches_fixture() {
        let out = chat(fixture_json("gemini/tools/client-request.json"));
        assert_eq!(out, fixture_json("gemini/tools/upstream-request.json"));
        // No tools -> no `tools` key (Kong: "no tools -> nil").
        let out = chat(json!({"messages": [{"role": "user", "content": "hi"}]}));
        assert!(out.get("tools").is_none());
    }

    #[test]
    fn tool_round_trip_names_results_after_their_calls() {
        let out = chat(fixture_json("gemini/tool-round-trip/client-request.json"));
        assert_eq!(
            out,
            fixture_json("gemini/tool-round-trip/upstream-request.json")
        );
    }

    #[test]
    fn tool_choice_maps_to_function_calling_config() {
        let cases = [
            (json!("auto"), json!({"mode": "AUTO"})),
            (json!("none"), json!({"mode": "NONE"})),
            (json!("required"), json!({"mode": "ANY"})),
            (
                json!({"type": "function", "function": {"name": "add"}}),
                json!({"mode": "ANY", "allowedFunctionNames": ["add"]}),
            ),
        ];
        for (choice, expected) in cases {
            let out = chat(json!({
                "messages": [{"role": "user", "content": "2+2?"}],
                "tools": [{"type": "function", "function": {"name": "add"}}],
                "tool_choice": choice,
            }));
            assert_eq!(
                out["toolConfig"],
                json!({"functionCallingConfig": expected})
            );
        }
        // Kong forwards a native `tool_config` when there is no `tool_choice`.
        let native = json!({"function_calling_config": {"mode": "ANY"}});
        let out =
            chat(json!({"messages": [{"role": "user", "content": "x"}], "tool_config": native}));
        assert_eq!(out["toolConfig"], native);
    }

    #[test]
    fn generation_config_maps_sampling_n_and_response_format() {
        let out = chat(json!({
            "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 10, "top_p": 0.9, "top_k": 40, "stop": "END", "n": 2,
            "presence_penalty": 0.5, "frequency_penalty": 0.25, "seed": 7,
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
        }));
        assert_eq!(
            out["generationConfig"],
            json!({
                "maxOutputTokens": 10, "topP": 0.9, "topK": 40, "stopSequences": ["END"],
                "candidateCount": 2, "presencePenalty": 0.5, "frequencyPenalty": 0.25, "seed": 7,
                "responseMimeType": "application/json", "responseSchema": {"type": "object"},
            })
        );
        let out = chat(json!({
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"},
        }));
        assert_eq!(
            out["generationConfig"],
            json!({"responseMimeType": "application/json"})
        );
        // A stream reads one candidate only, so `n` is not forwarded then.
        let options = ModelOptions::default();
        let c = ctx(RouteType::Chat, "m", true, &options);
        let out = driver()
            .request(
                &c,
                body(json!({"messages": [{"role": "user", "content": "x"}], "n": 3})),
            )
            .unwrap();
        assert_eq!(out["generationConfig"], json!({}));
    }

    #[test]
    fn systems_join_as_parts_and_same_roles_merge() {
        let out = chat(json!({"messages": [
            {"role": "system", "content": "A."},
            {"role": "developer", "content": [{"type": "text", "text": "B."}]},
            {"content": "one"},
            {"role": "user", "content": "two"},
        ]}));
        assert_eq!(
            out,
            json!({
                "contents": [{"role": "user", "parts": [{"text": "one"}, {"text": "two"}]}],
                "systemInstruction": {"parts": [{"text": "A."}, {"text": "B."}]},
                "generationConfig": {},
            })
        );
    }

    #[test]
    fn audio_and_pdf_parts_become_inline_data() {
        let out = chat(json!({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
        ]}]}));
        assert_eq!(
            out["contents"][0]["parts"],
            json!([
                {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}},
            ])
        );
    }

    #[test]
    fn malformed_parts_get_kongs_error_texts() {
        let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
        let prefix = "error transforming to gemini://llm/v1/chat: ";
        assert_eq!(
            bad_request(user(json!([{"type": "text"}]))),
            format!("{prefix}message part type is 'text' but is missing .text block")
        );
        assert_eq!(
            bad_request(user(json!([{"type": "image_url", "image_url": {}}]))),
            format!("{prefix}message part type is 'image_url' but is missing .image_url.url block")
        );
        assert_eq!(
            bad_request(user(json!([{"type": "video", "video": {}}]))),
            format!("{prefix}cannot transform part of type 'video' to Gemini format")
        );
        assert_eq!(
            bad_request(user(json!([]))),
            format!("{prefix}message at position 1 does not match expected array format")
        );
        assert_eq!(
            bad_request(user(json!([{"text": "no type"}]))),
            format!("{prefix}message at position 1, part at position 1 does not match expected OpenAI format")
        );
        assert!(bad_request(user(
            json!([{"type": "image_url", "image_url": {"url": "data:x"}}])
        ))
        .contains("image URL is less than 10 bytes"));
        let err = translate(
            RouteType::Chat,
            "gemini-1.0-pro",
            json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{prefix}system prompts aren't supported on gemini-1.0 models")
        );
    }

    #[test]
    fn completions_prompt_is_one_user_turn() {
        let out = translate(
            RouteType::Completions,
            "gemini-1.5-flash",
            json!({"prompt": "Explain zero.", "max_tokens": 5}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({
                "contents": [{"role": "user", "parts": [{"text": "Explain zero."}]}],
                "generationConfig": {"maxOutputTokens": 5},
            })
        );
    }

    #[test]
    fn embeddings_requests_for_ai_studio_and_vertex() {
        let options = ModelOptions {
            embeddings_dimensions: Some(256),
            ..ModelOptions::default()
        };
        let c = ctx(RouteType::Embeddings, "text-embedding-004", false, &options);
        let out = driver()
            .request(&c, body(json!({"input": ["a", "b"]})))
            .unwrap();
        assert_eq!(
            out,
            json!({"requests": [
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 256},
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 256},
            ]})
        );
        let out = driver().request(&c, body(json!({"input": "a"}))).unwrap();
        assert_eq!(out["requests"].as_array().unwrap().len(), 1);

        let options = vertex_options();
        let c = ctx(RouteType::Embeddings, "text-embedding-005", false, &options);
        let out = driver()
            .request(&c, body(json!({"input": "a", "dimensions": 64})))
            .unwrap();
        assert_eq!(
            out,
            json!({"instances": [{"content": "a"}], "parameters": {"outputDimensionality": 64}})
        );

        let err = driver()
            .request(&c, body(json!({"input": [[1, 2]]})))
            .unwrap_err();
        assert!(
            err.to_string().contains("token arrays are not supported"),
            "{err}"
        );
    }

    // --- Responses ------------------------------------------------------------------------

    #[test]
    fn chat_response_matches_fixture_plus_id_and_created() {
        let v = respond(
            RouteType::Chat,
            &fixture("gemini/chat/upstream-response.json"),
        )
        .unwrap();
        let expected = fixture_json("gemini/chat/expected-response.json");
        assert_eq!(
            v["choices"][0]["message"],
            expected["choices"][0]["message"]
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"], expected["usage"]);
        assert_eq!(v["object"], "chat.completion");
        // The request model, not upstream's `modelVersion`.
        assert_eq!(v["model"], "gemini-1.5-flash");
        // OpenAI-correct additions (Kong 3.12): id and created.
        assert_eq!(v["id"], "chatcmpl-test");
        assert_eq!(v["created"], 1_700_000_000);
    }

    #[test]
    fn tool_call_response_has_ids_types_and_finish_reason() {
        let v = respond(
            RouteType::Chat,
            &fixture("gemini/tools/upstream-response.json"),
        )
        .unwrap();
        let expected = fixture_json("gemini/tools/expected-response.json");
        let got = &v["choices"][0]["message"]["tool_calls"][0];
        let want = &expected["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(got["function"], want["function"]);
        // Policy over Kong's quirk: id, type and finish_reason `tool_calls`; content null.
        assert_eq!(got["id"], "call_test_0");
        assert_eq!(got["type"], "function");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["usage"], expected["usage"]);
    }

    #[test]
    fn thought_signatures_ride_in_the_tool_call_id() {
        let raw = r#"{"candidates":[{"content":{"role":"model","parts":[
            {"text":"thinking...","thought":true},
            {"functionCall":{"name":"add","args":{"a":1}},"thoughtSignature":"c2ln"},
            {"functionCall":{"name":"add","args":{"a":2}}}]},"finishReason":"STOP"}]}"#;
        let v = respond(RouteType::Chat, raw).unwrap();
        let calls = &v["choices"][0]["message"]["tool_calls"];
        assert_eq!(calls[0]["id"], "call_test_0__thought__c2ln");
        assert_eq!(calls[1]["id"], "call_test_1");
        assert_eq!(calls[1]["function"]["arguments"], r#"{"a":2}"#);
        // Thought summaries are not answer text.
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    }

    #[test]
    fn no_candidates_is_kongs_transformation_failure() {
        let raw = fixture("gemini/errors/no-candidates-200.json");
        let err = respond(RouteType::Chat, &raw).unwrap_err();
        let expected = fixture_json("gemini/errors/expected-500.json");
        let message = expected["error"]["message"].as_str().unwrap();
        assert_eq!(
            format!("transformation failed from type gemini://llm/v1/chat: {err}"),
            message
        );
        assert_eq!(respond(RouteType::Chat, "<html>").unwrap_err(), UNDECODABLE);
        assert_eq!(
            respond(RouteType::Chat, r#"{"candidates":null}"#).unwrap_err(),
            NO_CANDIDATES
        );
    }

    #[test]
    fn finish_reasons_map_to_openai_values() {
        let cases = [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("MALFORMED_FUNCTION_CALL", "stop"),
            ("SOMETHING_NEW", "stop"),
        ];
        for (gemini, openai) in cases {
            let raw = format!(r#"{{"candidates":[{{"finishReason":"{gemini}"}}]}}"#);
            let v = respond(RouteType::Chat, &raw).unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], openai, "{gemini}");
            // No content at all (a blocked answer): empty text, zero usage object.
            assert_eq!(v["choices"][0]["message"]["content"], "");
            assert_eq!(
                v["usage"],
                json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
            );
        }
    }

    #[test]
    fn several_candidates_become_several_choices_and_thoughts_count_as_completion() {
        let raw = r#"{"candidates":[
            {"content":{"parts":[{"text":"a"},{"text":"b"}]},"finishReason":"STOP","index":0},
            {"content":{"parts":[{"text":"c"}]},"finishReason":"MAX_TOKENS","index":1}],
            "usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":4,"thoughtsTokenCount":5,"totalTokenCount":12}}"#;
        let v = respond(RouteType::Chat, raw).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "ab");
        assert_eq!(v["choices"][1]["index"], 1);
        assert_eq!(v["choices"][1]["message"]["content"], "c");
        assert_eq!(v["choices"][1]["finish_reason"], "length");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12})
        );
    }

    #[test]
    fn completions_response_is_a_text_completion() {
        let v = respond(
            RouteType::Completions,
            &fixture("gemini/chat/upstream-response.json"),
        )
        .unwrap();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["id"], "cmpl-test");
        assert_eq!(v["choices"][0]["text"], "10.");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 20);
    }

    #[test]
    fn embeddings_responses_from_every_shape() {
        let batch = r#"{"embeddings":[{"values":[0.1,0.2]},{"values":[0.3]}]}"#;
        let v = respond(RouteType::Embeddings, batch).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["data"][1]["embedding"], json!([0.3]));
        assert_eq!(v["model"], "gemini-1.5-flash");
        assert_eq!(v["usage"], json!({"prompt_tokens": 0, "total_tokens": 0}));

        let single = r#"{"embedding":{"values":[1.0]}}"#;
        let v = respond(RouteType::Embeddings, single).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([1.0]));

        let vertex = r#"{"predictions":[
            {"embeddings":{"values":[0.5],"statistics":{"token_count":6,"truncated":false}}},
            {"embeddings":{"values":[0.6],"statistics":{"token_count":4.0}}}]}"#;
        let options = ModelOptions::default();
        let c = ctx(RouteType::Embeddings, "text-embedding-005", false, &options);
        let t = driver()
            .response(&c, Bytes::from_static(vertex.as_bytes()))
            .unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(v["usage"], json!({"prompt_tokens": 10, "total_tokens": 10}));
        assert_eq!(t.usage, Usage::new(10, 0));

        let err = respond(RouteType::Embeddings, r#"{"candidates":[]}"#).unwrap_err();
        assert_eq!(err, "no embeddings received from Gemini");
    }

    // --- Streams --------------------------------------------------------------------------

    fn stream_ctx(options: &ModelOptions) -> RequestCtx<'_> {
        ctx(RouteType::Chat, "gemini-1.5-flash", true, options)
    }

    /// Every split point, plus byte by byte, gives the same client stream.
    fn all_splits(c: &RequestCtx<'_>, input: &str) -> Vec<Value> {
        let first = sse_payloads(&run_stream(&mut GeminiStream::new(c), input.as_bytes(), 0));
        for split in 1..=input.len() {
            let got = run_stream(&mut GeminiStream::new(c), input.as_bytes(), split);
            assert_eq!(sse_payloads(&got), first, "split at {split}");
        }
        let bytewise = run_pieces(&mut GeminiStream::new(c), input.as_bytes(), 1);
        assert_eq!(sse_payloads(&bytewise), first, "byte by byte");
        first
    }

    fn assert_kong_stream(got: &[Value]) {
        let expected = sse_payloads(&fixture("gemini/chat-stream/expected-client-stream.txt"));
        // Kong's two content chunks, then (policy) a finish chunk with the mapped reason
        // instead of Kong's raw "STOP" on the last content chunk, then [DONE].
        assert_eq!(got.len(), 4);
        assert_eq!(got[0]["choices"][0]["delta"]["role"], "assistant");
        for i in 0..2 {
            assert_eq!(
                got[i]["choices"][0]["delta"]["content"],
                expected[i]["choices"][0]["delta"]["content"]
            );
            assert_eq!(got[i]["model"], expected[i]["model"]);
            assert_eq!(got[i]["object"], "chat.completion.chunk");
            assert_eq!(got[i]["id"], "chatcmpl-test");
        }
        assert_eq!(got[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(got[3], "[DONE]");
    }

    #[test]
    fn json_array_stream_at_every_split_matches_kong() {
        let options = ModelOptions::default();
        let c = stream_ctx(&options);
        let input = fixture("gemini/chat-stream/upstream-stream.json");
        assert_kong_stream(&all_splits(&c, &input));
        let mut s = GeminiStream::new(&c);
        run_stream(&mut s, input.as_bytes(), 7);
        // Usage is set from the last event, not added.
        assert_eq!(s.usage(), Usage::new(18, 2));
    }

    #[test]
    fn sse_stream_at_every_split_matches_kong() {
        let options = ModelOptions::default();
        let c = stream_ctx(&options);
        let input = fixture("gemini/chat-stream-sse/upstream-stream.txt");
        assert_kong_stream(&all_splits(&c, &input));
    }

    #[test]
    fn stream_usage_chunk_when_asked() {
        let options = ModelOptions::default();
        let mut c = stream_ctx(&options);
        c.include_usage = true;
        let input = fixture("gemini/chat-stream-sse/upstream-stream.txt");
        let got = sse_payloads(&run_stream(&mut GeminiStream::new(&c), input.as_bytes(), 3));
        assert_eq!(
            got[3]["usage"],
            json!({"prompt_tokens": 18, "completion_tokens": 2, "total_tokens": 20})
        );
        assert_eq!(got[3]["choices"], json!([]));
        assert_eq!(got[4], "[DONE]");
    }

    #[test]
    fn tool_call_stream_is_streamed_with_ids() {
        let options = ModelOptions::default();
        let c = stream_ctx(&options);
        let input = fixture("gemini/tools-stream/upstream-stream.txt");
        let got = all_splits(&c, &input);
        let expected = sse_payloads(&fixture("gemini/tools-stream/expected-client-stream.txt"));
        assert_eq!(got, expected);
    }

    #[test]
    fn a_whole_json_answer_on_a_stream_is_read_as_one_event() {
        let options = ModelOptions::default();
        let c = stream_ctx(&options);
        let input = fixture("gemini/tools/upstream-response.json");
        let got = all_splits(&c, &input);
        assert_eq!(got.len(), 4);
        let call = &got[0]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "check_stock");
        assert_eq!(call["id"], "call_test_0");
        assert_eq!(
            got[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            r#"{"product_name":"NewPhone"}"#
        );
        assert_eq!(got[2]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(got[3], "[DONE]");
    }

    #[test]
    fn completions_stream_gives_text_completion_chunks() {
        let options = ModelOptions::default();
        let c = ctx(RouteType::Completions, "gemini-1.5-flash", true, &options);
        let input = fixture("gemini/chat-stream/upstream-stream.json");
        let got = all_splits(&c, &input);
        assert_eq!(got[0]["object"], "text_completion");
        assert_eq!(got[0]["choices"][0]["text"], "Ten");
        assert_eq!(got[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(got[3], "[DONE]");
    }

    #[test]
    fn stream_errors_and_blocked_prompts() {
        let options = ModelOptions::default();
        let c = stream_ctx(&options);
        let mut s = GeminiStream::new(&c);
        let mut out = BytesMut::new();
        let err = s
            .feed(
                b"data: {\"error\":{\"code\":503,\"message\":\"overloaded\"}}\n\n",
                &mut out,
            )
            .unwrap_err();
        assert_eq!(err.0, "overloaded");

        let mut s = GeminiStream::new(&c);
        let err = s.feed(b"[{\"candidates\":[]}}", &mut out).unwrap_err();
        assert!(err.0.starts_with("gemini stream: "), "{}", err.0);

        let blocked = "data: {\"promptFeedback\":{\"blockReason\":\"SAFETY\"}}\n\n";
        let got = sse_payloads(&run_stream(
            &mut GeminiStream::new(&c),
            blocked.as_bytes(),
            5,
        ));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(got[0]["choices"][0]["delta"]["role"], "assistant");

        // An empty body is a truncated answer, not an empty one.
        let (text, err) = run_truncated(&mut GeminiStream::new(&c), b"", 0);
        assert!(text.is_empty());
        assert_eq!(err, crate::providers::stream::TRUNCATED);
    }

    proptest! {
        #[test]
        fn random_input_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..512),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            framing in 0u8..3,
        ) {
            let options = ModelOptions::default();
            let c = stream_ctx(&options);
            let mut s = GeminiStream::new(&c);
            let mut out = BytesMut::new();
            let mut input = match framing {
                0 => b"[".to_vec(),
                1 => b"{".to_vec(),
                _ => b"data: ".to_vec(),
            };
            input.extend_from_slice(&data);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut start = 0;
            for cut in cuts.into_iter().chain([input.len()]) {
                if s.feed(&input[start..cut], &mut out).is_err() {
                    break;
                }
                start = cut;
            }
            let _ = s.finish(&mut out);
            let _ = driver().response(&c, Bytes::from(data.clone()));
        }

        #[test]
        fn random_json_events_never_panic(text in "\\PC{0,64}", n in any::<u64>(), f in any::<bool>()) {
            let options = ModelOptions::default();
            let c = stream_ctx(&options);
            let event = json!({"candidates": [{"content": {"parts": [
                {"text": text}, {"functionCall": {"name": text, "args": n}}, {"thought": f}
            ]}, "finishReason": text}], "usageMetadata": {"promptTokenCount": n, "candidatesTokenCount": n, "thoughtsTokenCount": n}});
            let input = format!("data: {event}\n\n");
            let mut s = GeminiStream::new(&c);
            let mut out = BytesMut::new();
            let _ = s.feed(input.as_bytes(), &mut out);
            let _ = s.finish(&mut out);
            let _ = driver().response(&c, Bytes::from(event.to_string()));
        }
    }

    // --- Vertex service-account tokens ------------------------------------------------------

    fn service_account() -> String {
        fixture("gemini/vertex/test-service-account.json")
    }

    fn vertex_driver() -> Gemini {
        let config: AiProxyConfig = serde_json::from_value(json!({
            "route_type": "llm/v1/chat",
            "auth": {"gcp_use_service_account": true, "gcp_service_account_json": service_account()},
            "model": {"provider": "gemini", "name": "gemini-1.5-flash", "options": {"gemini": {
                "api_endpoint": "us-central1-aiplatform.googleapis.com",
                "project_id": "my-project", "location_id": "us-central1"}}},
        }))
        .unwrap();
        Gemini::from_config(&config).unwrap()
    }

    fn unix_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn ai_studio_has_no_token_source() {
        assert!(driver().token_source().is_none());
    }

    #[test]
    fn exchange_request_posts_a_verifiable_rs256_assertion() {
        let source = vertex_driver().token_source().unwrap();
        let now = unix_now();
        let req = source.exchange_request(now).unwrap();
        assert_eq!(req.method, actix_web::http::Method::POST);
        assert_eq!(req.url, "https://oauth2.googleapis.com/token");
        assert!(req.headers.contains(&(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded")
        )));
        let body = std::str::from_utf8(&req.body).unwrap();
        let assertion = body
            .strip_prefix(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=",
            )
            .unwrap();

        let public = fixture("gemini/vertex/test-public-key.pem");
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(public.as_bytes()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&["https://oauth2.googleapis.com/token"]);
        let data = jsonwebtoken::decode::<Value>(assertion, &key, &validation).unwrap();
        let claims = data.claims;
        assert_eq!(
            claims["iss"],
            "gateway-test@test-project.iam.gserviceaccount.com"
        );
        assert_eq!(
            claims["scope"],
            "https://www.googleapis.com/auth/cloud-platform"
        );
        assert_eq!(claims["iat"], now);
        assert_eq!(claims["exp"], now + 3600);
        assert_eq!(
            data.header.kid.as_deref(),
            Some("0000000000000000000000000000000000000000")
        );
    }

    #[test]
    fn tokens_are_cached_until_a_minute_before_expiry() {
        let source = vertex_driver().token_source().unwrap();
        assert_eq!(source.cached(1000), None);
        let token = source
            .store(
                br#"{"access_token":"ya29.t","expires_in":3599,"token_type":"Bearer"}"#,
                1000,
            )
            .unwrap();
        assert_eq!(token, "ya29.t");
        assert_eq!(source.cached(1000).as_deref(), Some("ya29.t"));
        assert_eq!(source.cached(1000 + 3599 - 61).as_deref(), Some("ya29.t"));
        assert_eq!(source.cached(1000 + 3599 - 60), None);
        let err = source
            .store(b"{\"error\":\"invalid_grant\"}", 1000)
            .unwrap_err();
        assert!(matches!(err, GatewayError::Identity(_)));
        // A wild lifetime from the wire does not overflow.
        let huge = format!(r#"{{"access_token":"t2","expires_in":{}}}"#, u64::MAX);
        assert_eq!(source.store(huge.as_bytes(), u64::MAX).unwrap(), "t2");
    }

    #[test]
    fn service_account_problems_are_config_errors_without_secrets() {
        let config = |sa: &str| -> AiProxyConfig {
            serde_json::from_value(json!({
                "route_type": "llm/v1/chat",
                "auth": {"gcp_use_service_account": true, "gcp_service_account_json": sa},
                "model": {"provider": "gemini", "name": "gemini-1.5-flash"},
            }))
            .unwrap()
        };
        let err = Gemini::from_config(&config("{\"private_key\": \"SECRET\""))
            .err()
            .unwrap();
        assert!(!err.contains("SECRET"), "{err}");
        let err = Gemini::from_config(&config(
            r#"{"client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n"}"#,
        ))
        .err()
        .unwrap();
        assert!(
            err.contains("private_key is not an RSA private key"),
            "{err}"
        );
        assert!(!err.contains("SECRET"));
        // A custom token_uri is honoured.
        let mut sa: Value = serde_json::from_str(&service_account()).unwrap();
        sa["token_uri"] = json!("https://sts.example.test/token");
        let d = Gemini::from_config(&config(&sa.to_string())).unwrap();
        let req = d
            .token_source()
            .unwrap()
            .exchange_request(unix_now())
            .unwrap();
        assert_eq!(req.url, "https://sts.example.test/token");
    }
}
