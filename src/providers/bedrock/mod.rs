//! AWS Bedrock: the Converse API for chat and completions, `InvokeModel` for embeddings
//! (Titan and Cohere bodies), every request signed with SigV4.
//!
//! https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
//! https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html
//! ConverseStream answers in `application/vnd.amazon.eventstream` binary frames, decoded by
//! [`EventStreamDecoder`]; each frame's `:event-type` names its JSON payload.

use std::fmt;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::oai::{
    arguments_string, format_finish, ChatCompletion, ChatMessage, ChatRequest, ChunkBuilder,
    ContentPart, EmbeddingList, FinishReason, MessageContent, TextCompletion, Tool, ToolCall,
    ToolChoice, Usage, MIN_THINKING_BUDGET, RESPONSE_FORMAT_TOOL, RESPONSE_FORMAT_TOOL_DESCRIPTION,
};
use super::stream::{DecodedStream, EventTranslate};
use super::{
    path_segment, RequestCtx, StreamError, StreamTranslate, Translate, Translated, UpstreamRequest,
};
use crate::codec::eventstream::{EventMessage, EventStreamDecoder};
use crate::config::ai_proxy::{AiProxyConfig, ModelOptions, RouteType};
use crate::error::GatewayError;

mod images;
mod request;
mod response;
mod sigv4;
mod stream;
#[cfg(test)]
mod tests;

pub use request::claude_model;
use request::*;
use response::*;
pub use stream::*;

/// Kong always sends this in the Converse body (harmless for other models).
const DEFAULT_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";
/// Kong's reason when the answer has nothing to return.
const NO_CANDIDATES: &str =
    "no generation candidates received from Bedrock, or max_tokens too short";
/// Model families whose Converse API rejects system prompts (Kong's list).
const NO_SYSTEM_PROMPT_MODELS: [&str; 5] = [
    "titan",
    "cohere.command-text",
    "cohere.command-light-text",
    "mistral-7b-instruct",
    "mixtral-8x7b-instruct",
];
/// Titan text embeddings v1 takes `inputText` only (`dimensions`/`normalize` are v2).
const TITAN_EMBED_V1_MODELS: [&str; 2] = ["titan-embed-text-v1", "titan-embed-g1-text-02"];
/// What Cohere-on-Bedrock embeds are asked to produce.
const COHERE_EMBED_INPUT_TYPE: &str = "search_document";

// ---------------------------------------------------------------------------------------------
// Provider
// ---------------------------------------------------------------------------------------------

/// Compiled once per plugin config. The region may still come per request from (templated)
/// `options.bedrock.aws_region`; the environment fallbacks are read here.
pub struct Bedrock {
    env_region: Option<String>,
    credentials: Option<sigv4::Credentials>,
}

impl fmt::Debug for Bedrock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bedrock")
            .field("env_region", &self.env_region)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl Bedrock {
    /// `from_config` with the environment lookup injectable, so tests never touch the process env.
    fn with_env(config: &AiProxyConfig, env: impl Fn(&str) -> Option<String>) -> Self {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let env_region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
        let auth = config.auth.as_ref();
        let configured = auth.and_then(|a| {
            Some(sigv4::Credentials::new(
                a.aws_access_key_id.clone().filter(|v| !v.is_empty())?,
                a.aws_secret_access_key.clone().filter(|v| !v.is_empty())?,
                None,
            ))
        });
        let credentials = configured.or_else(|| {
            Some(sigv4::Credentials::new(
                env("AWS_ACCESS_KEY_ID")?,
                env("AWS_SECRET_ACCESS_KEY")?,
                env("AWS_SESSION_TOKEN"),
            ))
        });
        Bedrock {
            env_region,
            credentials,
        }
    }

    /// `options.bedrock.aws_region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`. The value
    /// becomes part of a host name, so anything but `[a-z0-9-]` is refused.
    fn region<'a>(&'a self, ctx: &'a RequestCtx<'_>) -> Result<&'a str, GatewayError> {
        self.region_in(ctx.options)
    }

    fn region_in<'a>(&'a self, options: &'a ModelOptions) -> Result<&'a str, GatewayError> {
        let region = options
            .bedrock
            .as_ref()
            .and_then(|b| b.aws_region.as_deref())
            .filter(|r| !r.is_empty())
            .or(self.env_region.as_deref())
            .ok_or_else(|| GatewayError::Identity("region not specified".into()))?;
        if region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            Ok(region)
        } else {
            Err(GatewayError::Identity(format!(
                "invalid AWS region '{region}'"
            )))
        }
    }

    fn sign_at(
        &self,
        ctx: &RequestCtx<'_>,
        req: &mut UpstreamRequest,
        time: SystemTime,
    ) -> Result<(), GatewayError> {
        let region = self.region(ctx)?;
        let credentials = self
            .credentials
            .as_ref()
            .ok_or_else(|| GatewayError::Identity("AWS credentials not found".into()))?;
        sigv4::sign(credentials, region, req, time).map_err(GatewayError::Identity)
    }
}

impl Translate for Bedrock {
    /// The region the requests are signed for, so host and signature agree.
    fn api_base(&self, options: &ModelOptions) -> Option<String> {
        let region = self.region_in(options).ok()?;
        Some(format!(
            "https://bedrock-runtime.{region}.amazonaws.com:443"
        ))
    }

    fn from_config(config: &AiProxyConfig) -> Result<Self, super::DriverError> {
        Ok(Bedrock::with_env(config, |name| std::env::var(name).ok()))
    }

    fn supports(&self, route_type: RouteType) -> bool {
        super::default_and_image_routes(route_type)
    }

    fn url(&self, ctx: &RequestCtx<'_>) -> Result<String, GatewayError> {
        let o = ctx.options;
        let path = match &o.upstream_path {
            Some(path) => path.clone(),
            None => {
                let operation = match (ctx.route_type, ctx.stream) {
                    (
                        RouteType::Embeddings | RouteType::ImageGenerations | RouteType::ImageEdits,
                        _,
                    ) => "invoke",
                    (_, true) => "converse-stream",
                    (_, false) => "converse",
                };
                format!("/model/{}/{operation}", path_segment(ctx.model))
            }
        };
        match o.upstream_url.as_deref() {
            // Kong: the full URL as is; `upstream_path` still replaces its path. An URL with
            // no path at all is a base (our extension), so one route serves both operations.
            Some(url) if o.upstream_path.is_some() || super::is_base_url(url) => {
                let mut url = url::Url::parse(url)
                    .map_err(|e| GatewayError::BadRequest(format!("invalid upstream_url: {e}")))?;
                url.set_path(&path);
                Ok(url.to_string())
            }
            Some(url) => Ok(url.to_string()),
            None => Ok(format!(
                "https://bedrock-runtime.{}.amazonaws.com{path}",
                self.region(ctx)?
            )),
        }
    }

    fn request(
        &self,
        ctx: &RequestCtx<'_>,
        body: Map<String, Value>,
    ) -> Result<Value, GatewayError> {
        match ctx.route_type {
            RouteType::Embeddings => embeddings_request(ctx, body),
            RouteType::ImageGenerations | RouteType::ImageEdits => images::request(ctx, &body)
                .map_err(|detail| {
                    GatewayError::BadRequest(format!(
                        "error transforming to bedrock://{}: {detail}",
                        ctx.route_type.as_str()
                    ))
                }),
            _ => converse_request(ctx, body),
        }
    }

    fn response(&self, ctx: &RequestCtx<'_>, body: Bytes) -> Result<Translated, String> {
        match ctx.route_type {
            RouteType::Embeddings => embeddings_response(ctx, &body),
            RouteType::ImageGenerations | RouteType::ImageEdits => images::response(ctx, &body),
            _ => converse_response(ctx, &body),
        }
    }

    fn stream(&self, ctx: &RequestCtx<'_>) -> Box<dyn StreamTranslate> {
        Box::new(BedrockStream::new(ctx))
    }

    fn sign(&self, ctx: &RequestCtx<'_>, req: &mut UpstreamRequest) -> Result<(), GatewayError> {
        self.sign_at(ctx, req, SystemTime::now())
    }
}

// ---------------------------------------------------------------------------------------------
// Request wire types
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BedrockConverseRequest {
    #[serde(rename = "anthropic_version")]
    anthropic_version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<BedrockSystemBlock>,
    messages: Vec<BedrockMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inference_config: Option<BedrockInferenceConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<BedrockToolConfig>,
    /// Structured output (`{"textFormat": {"type": "json_schema", ...}}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guardrail_config: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_model_request_fields: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_model_response_field_paths: Option<[&'static str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    performance_config: Option<BedrockPerformanceConfig>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum BedrockSystemBlock {
    Text(String),
    CachePoint(Value),
}

#[derive(Debug, Serialize)]
struct BedrockMessage {
    role: &'static str,
    content: Vec<BedrockContent>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum BedrockContent {
    Text(String),
    Image(BedrockImage),
    ToolUse(BedrockToolUse),
    ToolResult(BedrockToolResult),
    /// A signed reasoning block sent back (`{reasoningText: {text, signature}}`).
    ReasoningContent(Value),
    /// Prompt caching: everything before this block is cached (`{type: default}`).
    CachePoint(Value),
}

#[derive(Debug, Serialize)]
struct BedrockImage {
    format: &'static str,
    source: BedrockImageSource,
}

#[derive(Debug, Serialize)]
struct BedrockImageSource {
    /// Base64, as the JSON protocol carries blobs.
    bytes: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockToolUse {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BedrockToolResult {
    tool_use_id: String,
    content: Vec<BedrockToolResultContent>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum BedrockToolResultContent {
    Text(String),
    Json(Value),
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct BedrockInferenceConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BedrockToolConfig {
    tools: Vec<BedrockTool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
}

/// A tool definition, or a `cachePoint` caching the definitions before it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum BedrockTool {
    ToolSpec(BedrockToolSpec),
    CachePoint(Value),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BedrockToolSpec {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    input_schema: BedrockInputSchema,
}

#[derive(Debug, Serialize)]
struct BedrockInputSchema {
    json: Value,
}

#[derive(Debug, Serialize)]
struct BedrockPerformanceConfig {
    latency: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BedrockTitanEmbedRequest {
    input_text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    normalize: Option<bool>,
}

#[derive(Debug, Serialize)]
struct BedrockCohereEmbedRequest {
    texts: Vec<String>,
    input_type: &'static str,
}

// ---------------------------------------------------------------------------------------------
// Response wire types
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockConverseResponse {
    #[serde(default)]
    output: Option<BedrockOutput>,
    #[serde(default)]
    stop_reason: Option<BedrockStopReason>,
    #[serde(default)]
    additional_model_response_fields: Option<StopSequenceField>,
    #[serde(default)]
    usage: Option<BedrockUsage>,
    /// Guardrail trace; Kong copies it into the answer.
    #[serde(default)]
    trace: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct BedrockOutput {
    #[serde(default)]
    message: Option<BedrockOutputMessage>,
}

#[derive(Debug, Deserialize)]
struct BedrockOutputMessage {
    #[serde(default)]
    content: Vec<BedrockOutputBlock>,
}

/// One content block; kinds without an OpenAI equivalent (citations) are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockOutputBlock {
    #[serde(default)]
    text: Option<String>,
    /// `{reasoningText: {text, signature}}` or `{redactedContent}`.
    #[serde(default)]
    reasoning_content: Option<Value>,
    #[serde(default)]
    tool_use: Option<BedrockToolUse>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BedrockStopReason {
    EndTurn,
    StopSequence,
    MaxTokens,
    ModelContextWindowExceeded,
    ToolUse,
    GuardrailIntervened,
    ContentFiltered,
    #[serde(other)]
    Unknown,
}

impl BedrockStopReason {
    fn finish_reason(self) -> FinishReason {
        match self {
            BedrockStopReason::MaxTokens | BedrockStopReason::ModelContextWindowExceeded => {
                FinishReason::Length
            }
            BedrockStopReason::ToolUse => FinishReason::ToolCalls,
            BedrockStopReason::GuardrailIntervened | BedrockStopReason::ContentFiltered => {
                FinishReason::ContentFilter
            }
            BedrockStopReason::EndTurn
            | BedrockStopReason::StopSequence
            | BedrockStopReason::Unknown => FinishReason::Stop,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_write_input_tokens: u64,
}

/// Like Anthropic's, Bedrock's `inputTokens` leaves out cache reads and writes.
impl From<BedrockUsage> for Usage {
    fn from(u: BedrockUsage) -> Usage {
        let (read, write) = (u.cache_read_input_tokens, u.cache_write_input_tokens);
        let prompt = u.input_tokens.saturating_add(read).saturating_add(write);
        Usage::new(prompt, u.output_tokens).with_cache(read, write)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockTitanEmbedResponse {
    #[serde(default)]
    embedding: Option<Vec<f64>>,
    #[serde(default)]
    input_text_token_count: u64,
}

#[derive(Debug, Deserialize)]
struct BedrockCohereEmbedResponse {
    #[serde(default)]
    embeddings: Option<Vec<Vec<f64>>>,
}

// ---------------------------------------------------------------------------------------------
// Stream wire types
// ---------------------------------------------------------------------------------------------

/// `:event-type` of a ConverseStream frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BedrockEventType {
    MessageStart,
    ContentBlockStart,
    ContentBlockDelta,
    ContentBlockStop,
    MessageStop,
    Metadata,
    Unknown,
}

impl BedrockEventType {
    fn parse(name: Option<&str>) -> Self {
        match name {
            Some("messageStart") => BedrockEventType::MessageStart,
            Some("contentBlockStart") => BedrockEventType::ContentBlockStart,
            Some("contentBlockDelta") => BedrockEventType::ContentBlockDelta,
            Some("contentBlockStop") => BedrockEventType::ContentBlockStop,
            Some("messageStop") => BedrockEventType::MessageStop,
            Some("metadata") => BedrockEventType::Metadata,
            _ => BedrockEventType::Unknown,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockContentBlockStart {
    #[serde(default)]
    content_block_index: u64,
    #[serde(default)]
    start: Option<BedrockBlockStart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockBlockStart {
    #[serde(default)]
    tool_use: Option<BedrockToolUseStart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockToolUseStart {
    tool_use_id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockContentBlockDelta {
    #[serde(default)]
    content_block_index: u64,
    #[serde(default)]
    delta: Option<BedrockDelta>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockDelta {
    #[serde(default)]
    text: Option<String>,
    /// `{text}` pieces of the reasoning, then `{signature}`.
    #[serde(default)]
    reasoning_content: Option<Value>,
    #[serde(default)]
    tool_use: Option<BedrockToolUseDelta>,
}

#[derive(Debug, Deserialize)]
struct BedrockToolUseDelta {
    #[serde(default)]
    input: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockMessageStop {
    #[serde(default)]
    stop_reason: Option<BedrockStopReason>,
    #[serde(default)]
    additional_model_response_fields: Option<StopSequenceField>,
}

/// Claude's matched stop sequence, returned when the request asks for it
/// (`additionalModelResponseFieldPaths: ["/stop_sequence"]`).
#[derive(Debug, Default, Deserialize)]
struct StopSequenceField {
    #[serde(default)]
    stop_sequence: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BedrockMetadata {
    #[serde(default)]
    usage: Option<BedrockUsage>,
}

/// Body of an exception frame and of Bedrock's HTTP errors.
#[derive(Debug, Deserialize)]
struct BedrockErrorBody {
    #[serde(default)]
    message: Option<String>,
}

// ---------------------------------------------------------------------------------------------
