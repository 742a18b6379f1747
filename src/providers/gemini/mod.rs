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

mod images;
mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;
mod vertex_auth;

use request::*;
use response::*;
pub use stream::*;

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
    fn api_base(&self, _options: &ModelOptions) -> Option<String> {
        Some(format!("{AI_STUDIO_HOST}:443"))
    }

    fn from_config(config: &AiProxyConfig) -> Result<Self, super::DriverError> {
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

    fn supports(&self, route_type: RouteType) -> bool {
        super::default_and_image_routes(route_type)
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
            RouteType::ImageGenerations | RouteType::ImageEdits => images::request(&body),
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
        if matches!(
            ctx.route_type,
            RouteType::ImageGenerations | RouteType::ImageEdits
        ) {
            return images::response(ctx, &body);
        }
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
pub(crate) struct VertexTarget<'a> {
    pub host: &'a str,
    pub project: &'a str,
    pub location: &'a str,
}

pub(crate) fn vertex_target(
    options: &ModelOptions,
) -> Result<Option<VertexTarget<'_>>, GatewayError> {
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
pub(crate) fn model_id(model: &str) -> &str {
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
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<Value>,
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
    /// Prompt tokens served from a context cache (part of `promptTokenCount`).
    #[serde(default, deserialize_with = "nullable")]
    cached_content_token_count: u64,
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
            total_tokens: self
                .total_token_count
                .unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
            ..Usage::new(prompt_tokens, completion_tokens)
        }
        .with_cache(self.cached_content_token_count, 0)
        .with_reasoning(self.thoughts_token_count)
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
