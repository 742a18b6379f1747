//! Anthropic: chat over the Messages API (`POST /v1/messages`), completions over the legacy
//! Text Completions API (`POST /v1/complete`); no embeddings.
//! https://docs.anthropic.com/en/api/messages, https://docs.anthropic.com/en/api/complete,
//! https://docs.anthropic.com/en/api/messages-streaming
//!
//! Requests are rebuilt, not patched: system messages move to the top-level `system`, consecutive
//! turns of one role are merged (Anthropic requires user/assistant alternation), tool calls and
//! tool results become `tool_use` / `tool_result` blocks, images become `image` blocks, and
//! `max_tokens` is always present (Anthropic requires it).
//!
//! Where Kong 3.9 differs we follow the policy (spec/README.md) and Kong 3.12+: finish reasons are
//! mapped to OpenAI's, `usage` is always an object, tool calls are streamed, streams end with a
//! finish chunk. `top_p`, `top_k`, `stop` and `user` are forwarded (Kong drops them).

use actix_web::http::header::{HeaderName, HeaderValue};
use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

use super::oai::{
    arguments_string, format_finish, ChatCompletion, ChatMessage, ChatRequest, ChunkBuilder,
    ContentPart, FinishReason, ImageUrl, MessageContent, ResponseMeta, TextCompletion, Tool,
    ToolCall, ToolChoice, Usage, MIN_THINKING_BUDGET, RESPONSE_FORMAT_TOOL,
    RESPONSE_FORMAT_TOOL_DESCRIPTION,
};
use super::stream::{DecodedStream, EventTranslate};
use super::{
    endpoint_url, DriverError, RequestCtx, Required, StreamError, StreamTranslate, Translate,
    Translated,
};
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::config::ai_proxy::{AiProxyConfig, ModelOptions, RouteType};
use crate::error::GatewayError;

mod stream;
pub use stream::AnthropicStream;

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

pub const DEFAULT_BASE: &str = "https://api.anthropic.com:443";
const MESSAGES_PATH: &str = "/v1/messages";
const COMPLETE_PATH: &str = "/v1/complete";
/// Anthropic rejects a request without `max_tokens` (`max_tokens_to_sample` on `/v1/complete`);
/// Kong 3.10+ has no default of its own, so when neither the client nor the config sets one we
/// send this. 4096 is the largest output every Claude model accepts (Claude 3 Haiku/Opus cap it
/// there), so no model rejects it.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
const VERSION_HEADER: HeaderName = HeaderName::from_static("anthropic-version");
/// Kong's reason texts for a 200 body it cannot translate. Kong names the chat route in both,
/// even for completions (sic); we keep the texts as Kong writes them.
const NO_CONTENT: &str = "'content' not in anthropic://llm/v1/chat response";
const NO_COMPLETION: &str = "'completion' not in anthropic://llm/v1/chat response";

// ---------------------------------------------------------------------------------------------
// Provider
// ---------------------------------------------------------------------------------------------

pub struct Anthropic {
    /// `model.options.anthropic_version` as configured, and its header value, built once.
    version: String,
    version_header: HeaderValue,
}

impl Translate for Anthropic {
    fn api_base(&self, _options: &ModelOptions) -> Option<String> {
        Some(DEFAULT_BASE.to_string())
    }

    fn from_config(config: &AiProxyConfig) -> Result<Self, DriverError> {
        let mut required = Required::new(config);
        let version = required.option("anthropic_version", |o| o.anthropic_version.clone());
        let version = required.finish(version)?;
        let version_header = HeaderValue::from_str(&version)
            .map_err(|_| "'model.options.anthropic_version' is not a valid header value")?;
        Ok(Anthropic {
            version,
            version_header,
        })
    }

    fn supports(&self, route_type: RouteType) -> bool {
        matches!(route_type, RouteType::Chat | RouteType::Completions)
    }

    fn url(&self, ctx: &RequestCtx<'_>) -> Result<String, GatewayError> {
        let path = match ctx.route_type {
            RouteType::Completions => COMPLETE_PATH,
            _ => MESSAGES_PATH,
        };
        Ok(endpoint_url(ctx, DEFAULT_BASE, path))
    }

    fn headers(&self, ctx: &RequestCtx<'_>, out: &mut Vec<(HeaderName, HeaderValue)>) {
        // A templated version (`$(headers.x)`) is only known per request.
        let value = match ctx.options.anthropic_version.as_deref() {
            Some(v) if v != self.version => HeaderValue::from_str(v).ok(),
            _ => None,
        };
        out.push((
            VERSION_HEADER,
            value.unwrap_or_else(|| self.version_header.clone()),
        ));
    }

    fn request(
        &self,
        ctx: &RequestCtx<'_>,
        body: Map<String, Value>,
    ) -> Result<Value, GatewayError> {
        let req: ChatRequest = serde_json::from_value(Value::Object(body))
            .map_err(|e| transform_error(ctx, &e.to_string()))?;
        let out = match ctx.route_type {
            RouteType::Completions => serde_json::to_value(complete_request(ctx, &req)),
            _ => serde_json::to_value(messages_request(ctx, req)?),
        };
        out.map_err(|e| GatewayError::Internal(e.to_string()))
    }

    fn response(&self, ctx: &RequestCtx<'_>, body: Bytes) -> Result<Translated, String> {
        match ctx.route_type {
            RouteType::Completions => complete_response(ctx, &body),
            _ => messages_response(ctx, &body),
        }
    }

    fn stream(&self, ctx: &RequestCtx<'_>) -> Box<dyn StreamTranslate> {
        Box::new(AnthropicStream::new(ctx))
    }
}

// ---------------------------------------------------------------------------------------------
// Request wire types
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct AnthropicRequest<'a> {
    model: &'a str,
    messages: Vec<AnthropicMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Value>,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<AnthropicTool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<AnthropicToolChoice>,
    /// Anthropic's structured output (`{"format": {"type": "json_schema", "schema": ...}}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<Value>,
    #[serde(flatten)]
    sampling: AnthropicSampling,
}

/// The legacy Text Completions request (`/v1/complete`).
#[derive(Debug, Serialize)]
struct AnthropicCompleteRequest<'a> {
    model: &'a str,
    prompt: String,
    max_tokens_to_sample: u64,
    #[serde(flatten)]
    sampling: AnthropicSampling,
}

/// The fields both APIs share, with the same names and meaning.
#[derive(Debug, Serialize)]
struct AnthropicSampling {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<String>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<AnthropicMetadata>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum AnthropicRole {
    User,
    Assistant,
}

#[derive(Debug, Serialize)]
struct AnthropicMessage {
    role: AnthropicRole,
    content: AnthropicContent,
}

/// A string, or content blocks; a lone string turn stays a string, as clients wrote it.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum AnthropicContent {
    Text(String),
    Blocks(Vec<AnthropicBlock>),
}

impl AnthropicContent {
    fn into_blocks(self) -> Vec<AnthropicBlock> {
        match self {
            AnthropicContent::Text(text) if text.is_empty() => Vec::new(),
            AnthropicContent::Text(text) => vec![AnthropicBlock::Text {
                text,
                cache_control: None,
            }],
            AnthropicContent::Blocks(blocks) => blocks,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicBlock {
    Text {
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    Image {
        source: AnthropicImageSource,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: AnthropicContent,
    },
    /// A signed reasoning block the client sent back (`thinking` / `redacted_thinking`).
    #[serde(untagged)]
    Thinking(Value),
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Serialize)]
struct AnthropicTool {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    input_schema: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<Value>,
}

#[derive(Debug, Serialize)]
struct AnthropicToolChoice {
    /// `auto`, `any`, `tool` or `none`.
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

#[derive(Debug, Serialize)]
struct AnthropicMetadata {
    user_id: String,
}

// ---------------------------------------------------------------------------------------------
// Response wire types
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct AnthropicResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Option<Vec<AnthropicResponseBlock>>,
    #[serde(default)]
    stop_reason: Option<AnthropicStopReason>,
    #[serde(default, deserialize_with = "lenient")]
    usage: Option<AnthropicUsage>,
    #[serde(default)]
    error: Option<AnthropicError>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicResponseBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        #[serde(default)]
        id: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        input: Value,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        #[serde(default)]
        data: String,
    },
    /// Server tool blocks, citations, ...: no OpenAI equivalent.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AnthropicStopReason {
    EndTurn,
    StopSequence,
    MaxTokens,
    ModelContextWindowExceeded,
    ToolUse,
    Refusal,
    PauseTurn,
    #[serde(other)]
    Unknown,
}

impl AnthropicStopReason {
    fn finish_reason(self) -> FinishReason {
        match self {
            AnthropicStopReason::MaxTokens | AnthropicStopReason::ModelContextWindowExceeded => {
                FinishReason::Length
            }
            AnthropicStopReason::ToolUse => FinishReason::ToolCalls,
            AnthropicStopReason::Refusal => FinishReason::ContentFilter,
            AnthropicStopReason::EndTurn
            | AnthropicStopReason::StopSequence
            | AnthropicStopReason::PauseTurn
            | AnthropicStopReason::Unknown => FinishReason::Stop,
        }
    }
}

/// Token counts; every field optional because `message_delta` carries only the ones that
/// changed (its counts are cumulative, so a present field replaces the earlier value).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
struct AnthropicUsage {
    #[serde(default, deserialize_with = "lenient")]
    input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    fn merge(&mut self, newer: &AnthropicUsage) {
        self.input_tokens = newer.input_tokens.or(self.input_tokens);
        self.output_tokens = newer.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = newer
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = newer
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
    }

    /// Anthropic bills cache writes and reads as input, separately from `input_tokens`.
    fn to_openai(self) -> Usage {
        let prompt = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ]
        .into_iter()
        .flatten()
        .fold(0u64, u64::saturating_add);
        let completion = self.output_tokens.unwrap_or(0);
        Usage {
            total_tokens: prompt.saturating_add(completion),
            ..Usage::new(prompt, completion)
        }
        .with_cache(
            self.cache_read_input_tokens.unwrap_or(0),
            self.cache_creation_input_tokens.unwrap_or(0),
        )
    }
}

#[derive(Debug, Default, Deserialize)]
struct AnthropicError {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl AnthropicError {
    fn message(&self) -> String {
        match (&self.message, &self.kind) {
            (Some(m), _) => m.clone(),
            (None, Some(k)) => k.clone(),
            (None, None) => "anthropic stream error".to_string(),
        }
    }
}

/// A legacy Text Completions answer, and also one `completion` event of its stream.
#[derive(Debug, Deserialize)]
struct AnthropicCompletion {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    completion: Option<String>,
    #[serde(default)]
    stop_reason: Option<AnthropicStopReason>,
    #[serde(default)]
    error: Option<AnthropicError>,
}

/// A field of the wrong type reads as absent instead of failing the whole body (Kong answers a
/// malformed `usage` with 200 too).
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(serde_json::from_value(Value::deserialize(deserializer)?).ok())
}

// ---------------------------------------------------------------------------------------------
// Request translation
// ---------------------------------------------------------------------------------------------

/// Kong's 400 text for a request it cannot translate, with what was wrong.
fn transform_error(ctx: &RequestCtx<'_>, detail: &str) -> GatewayError {
    GatewayError::BadRequest(format!(
        "error transforming to anthropic://{}: {detail}",
        ctx.route_type.as_str()
    ))
}

fn messages_request<'a>(
    ctx: &RequestCtx<'a>,
    mut req: ChatRequest,
) -> Result<AnthropicRequest<'a>, GatewayError> {
    let bad = |detail: &str| transform_error(ctx, detail);
    let mut system: Vec<AnthropicBlock> = Vec::new();
    let mut messages: Vec<AnthropicMessage> = Vec::new();
    let mut max_tokens = req.max_tokens().unwrap_or(DEFAULT_MAX_TOKENS);
    // Anthropic's minimum budget is 1,024 and `max_tokens` must exceed it (it includes the
    // thinking), so a smaller limit is raised by the budget.
    let thinking = req
        .thinking_budget()
        .filter(|b| *b >= MIN_THINKING_BUDGET)
        .map(|budget| {
            if max_tokens <= budget {
                max_tokens += budget;
            }
            json!({"type": "enabled", "budget_tokens": budget})
        });
    if thinking.is_some() {
        req.fit_sampling_to_thinking();
    }
    let tool_choice = tool_choice(&req);
    // Anthropic's own structured output where thinking forbids the forced tool call.
    let (format_schema, output_config) = if thinking.is_some() {
        let schema = req.thinking_json_schema().map_err(bad)?;
        let config =
            schema.map(|(schema, _)| json!({"format": {"type": "json_schema", "schema": schema}}));
        (None, config)
    } else {
        (req.emulated_response_format().map_err(bad)?, None)
    };
    let sampling = sampling(ctx, &req);
    for m in req.messages {
        let (role, content) = match m.role.as_str() {
            "user" => (AnthropicRole::User, content(m.content).map_err(bad)?),
            "assistant" => (AnthropicRole::Assistant, assistant_content(m).map_err(bad)?),
            "tool" => (AnthropicRole::User, tool_result(m).map_err(bad)?),
            // `system`, `developer` and any other role instruct the model (Kong).
            _ => {
                system.extend(content(m.content).map_err(bad)?.into_blocks());
                continue;
            }
        };
        push_turn(&mut messages, role, content);
    }
    let mut tool_choice = tool_choice;
    let mut tools: Option<Vec<AnthropicTool>> = req
        .tools
        .map(|tools| tools.into_iter().filter_map(tool).collect());
    // Anthropic has no structured output: a forced tool call carries the JSON answer.
    if let Some(schema) = format_schema {
        tools.get_or_insert_with(Vec::new).push(AnthropicTool {
            name: RESPONSE_FORMAT_TOOL.into(),
            description: Some(RESPONSE_FORMAT_TOOL_DESCRIPTION.into()),
            input_schema: schema,
            cache_control: None,
        });
        tool_choice = Some(AnthropicToolChoice {
            kind: "tool",
            name: Some(RESPONSE_FORMAT_TOOL.into()),
            disable_parallel_tool_use: false,
        });
    }
    Ok(AnthropicRequest {
        model: ctx.model,
        messages,
        system: system_prompt(system),
        max_tokens,
        thinking,
        tools,
        tool_choice,
        output_config,
        sampling,
    })
}

/// System messages -> `system`: one string (joined with newlines) unless a part carries
/// `cache_control`, which only the block form can hold.
fn system_prompt(blocks: Vec<AnthropicBlock>) -> Option<Value> {
    let cached = blocks.iter().any(|b| {
        matches!(
            b,
            AnthropicBlock::Text {
                cache_control: Some(_),
                ..
            }
        )
    });
    if cached {
        return serde_json::to_value(blocks).ok();
    }
    let texts: Vec<String> = blocks
        .into_iter()
        .filter_map(|b| match b {
            AnthropicBlock::Text { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    (!texts.is_empty()).then(|| Value::String(texts.join("\n")))
}

/// Anthropic requires alternating roles: a turn of the same role as the previous one is merged
/// into it (tool results followed by a user text become one user turn, as Anthropic expects).
fn push_turn(messages: &mut Vec<AnthropicMessage>, role: AnthropicRole, content: AnthropicContent) {
    match messages.last_mut() {
        Some(last) if last.role == role => {
            let previous =
                std::mem::replace(&mut last.content, AnthropicContent::Blocks(Vec::new()));
            let mut blocks = previous.into_blocks();
            blocks.extend(content.into_blocks());
            last.content = AnthropicContent::Blocks(blocks);
        }
        _ => messages.push(AnthropicMessage { role, content }),
    }
}

/// User (and plain assistant) content: a string stays a string, parts become blocks.
fn content(content: Option<MessageContent>) -> Result<AnthropicContent, &'static str> {
    match content {
        None => Ok(AnthropicContent::Text(String::new())),
        Some(MessageContent::Text(text)) => Ok(AnthropicContent::Text(text)),
        Some(MessageContent::Parts(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for part in parts {
                if let Some(block) = part_block(part)? {
                    blocks.push(block);
                }
            }
            Ok(AnthropicContent::Blocks(blocks))
        }
    }
}

/// One OpenAI content part. Empty text parts are dropped (Anthropic rejects empty text blocks).
fn part_block(part: ContentPart) -> Result<Option<AnthropicBlock>, &'static str> {
    match part {
        ContentPart::Text { text, .. } if text.is_empty() => Ok(None),
        ContentPart::Text {
            text,
            cache_control,
        } => Ok(Some(AnthropicBlock::Text {
            text,
            cache_control,
        })),
        ContentPart::ImageUrl {
            image_url,
            cache_control,
        } => Ok(Some(AnthropicBlock::Image {
            source: image_source(image_url)?,
            cache_control,
        })),
        ContentPart::Unsupported => Err("only text and image_url content parts are supported"),
    }
}

/// `data:<mime>;base64,<data>` becomes an inline image, an http(s) URL a URL source.
fn image_source(image: ImageUrl) -> Result<AnthropicImageSource, &'static str> {
    if let Some((mime, data)) = image.as_data_url() {
        return Ok(AnthropicImageSource::Base64 {
            media_type: mime.to_string(),
            data: data.to_string(),
        });
    }
    let scheme = image
        .url
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http" | "https") => Ok(AnthropicImageSource::Url { url: image.url }),
        _ => Err("image_url must be a base64 data URL or an http(s) URL"),
    }
}

/// An assistant turn: its text (if any), then one `tool_use` block per tool call.
fn assistant_content(m: ChatMessage) -> Result<AnthropicContent, &'static str> {
    let thinking = m.thinking_blocks.filter(|b| !b.is_empty());
    let calls = m.tool_calls.filter(|c| !c.is_empty());
    if thinking.is_none() && calls.is_none() {
        return content(m.content);
    }
    // Signed thinking blocks come first, as Anthropic returned them.
    let mut blocks: Vec<AnthropicBlock> = thinking
        .into_iter()
        .flatten()
        .map(AnthropicBlock::Thinking)
        .collect();
    blocks.extend(content(m.content)?.into_blocks());
    for call in calls.into_iter().flatten() {
        blocks.push(AnthropicBlock::ToolUse {
            input: tool_input(&call.function.arguments)?,
            id: call.id,
            name: call.function.name,
        });
    }
    Ok(AnthropicContent::Blocks(blocks))
}

/// OpenAI sends arguments as a JSON string; Anthropic wants the object. No arguments is `{}`.
fn tool_input(arguments: &str) -> Result<Value, &'static str> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str(arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err("tool call arguments must be a JSON object"),
    }
}

/// A `tool` message: a user turn holding the `tool_result` for `tool_call_id`.
fn tool_result(m: ChatMessage) -> Result<AnthropicContent, &'static str> {
    Ok(AnthropicContent::Blocks(vec![AnthropicBlock::ToolResult {
        tool_use_id: m.tool_call_id.unwrap_or_default(),
        content: content(m.content)?,
    }]))
}

fn tool(t: Tool) -> Option<AnthropicTool> {
    if t.kind != "function" {
        return None;
    }
    Some(AnthropicTool {
        name: t.function.name,
        description: t.function.description,
        // Anthropic requires a schema; a function without parameters takes none.
        input_schema: t
            .function
            .parameters
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        cache_control: t.cache_control,
    })
}

/// `auto`/`none`/`required`/`{function:{name}}` -> `auto`/`none`/`any`/`{type:tool,name}`; an
/// unknown mode is left out (Kong). `parallel_tool_calls: false` becomes
/// `disable_parallel_tool_use` (on `auto` when the client named no choice).
fn tool_choice(req: &ChatRequest) -> Option<AnthropicToolChoice> {
    let sequential = req.extra.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let (kind, name) = match &req.tool_choice {
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => ("auto", None),
            "none" => ("none", None),
            "required" => ("any", None),
            _ => return None,
        },
        Some(ToolChoice::Function(f)) => ("tool", Some(f.function.name.clone())),
        None if sequential && req.tools.as_ref().is_some_and(|t| !t.is_empty()) => ("auto", None),
        None => return None,
    };
    Some(AnthropicToolChoice {
        kind,
        name,
        disable_parallel_tool_use: sequential && kind != "none",
    })
}

/// OpenAI's `user` is Anthropic's `metadata.user_id`.
fn metadata(req: &ChatRequest) -> Option<AnthropicMetadata> {
    let user = req.extra.get("user")?.as_str()?;
    Some(AnthropicMetadata {
        user_id: user.to_string(),
    })
}

/// Anthropic rejects empty and whitespace-only stop sequences with a 400
/// (`each stop sequence must contain non-whitespace`), so those are dropped.
fn stop_sequences(stop: Option<&super::oai::Stop>) -> Option<Vec<String>> {
    let stops: Vec<String> = stop?
        .to_vec()
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect();
    (!stops.is_empty()).then_some(stops)
}

/// The legacy API wants the `\n\nHuman: ... \n\nAssistant:` transcript. Kong omits the leading
/// blank line, which `/v1/complete` rejects (`prompt must start with "\n\nHuman:" turn`); a
/// prompt the client already formatted is sent as is.
fn complete_prompt(prompt: &str) -> String {
    if prompt.starts_with("\n\nHuman:") {
        prompt.to_string()
    } else {
        format!("\n\nHuman: {prompt}\n\nAssistant:")
    }
}

fn complete_request<'a>(ctx: &RequestCtx<'a>, req: &ChatRequest) -> AnthropicCompleteRequest<'a> {
    AnthropicCompleteRequest {
        model: ctx.model,
        prompt: complete_prompt(&req.prompt_text().unwrap_or_default()),
        max_tokens_to_sample: req.max_tokens().unwrap_or(DEFAULT_MAX_TOKENS),
        sampling: sampling(ctx, req),
    }
}

fn sampling(ctx: &RequestCtx<'_>, req: &ChatRequest) -> AnthropicSampling {
    AnthropicSampling {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop_sequences: stop_sequences(req.stop.as_ref()),
        stream: ctx.stream,
        metadata: metadata(req),
    }
}

// ---------------------------------------------------------------------------------------------
// Response translation
// ---------------------------------------------------------------------------------------------

fn decode_failed(ctx: &RequestCtx<'_>) -> String {
    format!(
        "failed to decode anthropic://{} response",
        ctx.route_type.as_str()
    )
}

/// `id` and `model` from the provider when it sent them, else the request's.
fn meta_of(ctx: &RequestCtx<'_>, id: Option<String>, model: Option<String>) -> ResponseMeta {
    let mut meta = ctx.meta();
    if let Some(id) = id.filter(|id| !id.is_empty()) {
        meta.id = id;
    }
    if let Some(model) = model.filter(|m| !m.is_empty()) {
        meta.model = model;
    }
    meta
}

fn messages_response(ctx: &RequestCtx<'_>, body: &[u8]) -> Result<Translated, String> {
    let r: AnthropicResponse = serde_json::from_slice(body).map_err(|_| decode_failed(ctx))?;
    if let Some(error) = &r.error {
        return Err(format!("anthropic error: {}", error.message()));
    }
    let blocks = r.content.ok_or(NO_CONTENT)?;
    // Text blocks are joined without a separator, as the same answer streamed would read.
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut tool_calls = Vec::new();
    let mut format_call = false;
    for block in blocks {
        match block {
            AnthropicResponseBlock::Text { text: t } => text.push_str(&t),
            AnthropicResponseBlock::Thinking {
                thinking,
                signature,
            } => {
                reasoning.push_str(&thinking);
                thinking_blocks.push(
                    json!({"type": "thinking", "thinking": thinking, "signature": signature}),
                );
            }
            AnthropicResponseBlock::RedactedThinking { data } => {
                thinking_blocks.push(json!({"type": "redacted_thinking", "data": data}));
            }
            AnthropicResponseBlock::ToolUse { input, name, .. } if name == RESPONSE_FORMAT_TOOL => {
                format_call = true;
                text.push_str(&input.to_string());
            }
            AnthropicResponseBlock::ToolUse { id, name, input } => {
                let id = if id.is_empty() {
                    format!("call_{}_{}", ctx.request_id, tool_calls.len())
                } else {
                    id
                };
                tool_calls.push(ToolCall::function(id, name, arguments_string(&input)));
            }
            AnthropicResponseBlock::Unknown => {}
        }
    }
    let finish = match r.stop_reason {
        Some(reason) => format_finish(reason.finish_reason(), format_call, tool_calls.len()),
        None if !tool_calls.is_empty() => FinishReason::ToolCalls,
        None => FinishReason::Stop,
    };
    // OpenAI sends `content: null` beside tool calls when there is no text.
    let content = (!text.is_empty() || tool_calls.is_empty()).then_some(text);
    let usage = r.usage.unwrap_or_default().to_openai();
    let meta = meta_of(ctx, r.id, r.model);
    let completion = ChatCompletion::single(&meta, content, tool_calls, Some(finish), usage)
        .with_reasoning(reasoning, thinking_blocks);
    Translated::json(&completion, usage)
}

/// `/v1/complete` reports no token counts: usage is zeros.
fn complete_response(ctx: &RequestCtx<'_>, body: &[u8]) -> Result<Translated, String> {
    let r: AnthropicCompletion = serde_json::from_slice(body).map_err(|_| decode_failed(ctx))?;
    if let Some(error) = &r.error {
        return Err(format!("anthropic error: {}", error.message()));
    }
    let text = r.completion.ok_or(NO_COMPLETION)?;
    let finish = r
        .stop_reason
        .map_or(FinishReason::Stop, AnthropicStopReason::finish_reason);
    let usage = Usage::default();
    let meta = meta_of(ctx, r.id, r.model);
    let completion = TextCompletion::single(&meta, text, Some(finish), usage);
    Translated::json(&completion, usage)
}

#[cfg(test)]
mod tests;
