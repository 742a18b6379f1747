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
    ToolCall, ToolChoice, Usage, RESPONSE_FORMAT_TOOL, RESPONSE_FORMAT_TOOL_DESCRIPTION,
};
use super::stream::{DecodedStream, EventTranslate};
use super::{
    endpoint_url, required_option, RequestCtx, StreamError, StreamTranslate, Translate, Translated,
};
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::config::ai_proxy::{AiProxyConfig, ModelOptions, RouteType};
use crate::error::GatewayError;

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

    fn from_config(config: &AiProxyConfig) -> Result<Self, String> {
        let version =
            required_option(config, "anthropic_version", |o| o.anthropic_version.clone())?;
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

// ---------------------------------------------------------------------------------------------
// Stream wire types
// ---------------------------------------------------------------------------------------------

/// One SSE event, told apart by the `type` in its data (which always repeats the `event:` name).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicStreamEvent {
    MessageStart {
        #[serde(default)]
        message: AnthropicStreamMessage,
    },
    ContentBlockStart {
        #[serde(default)]
        index: u64,
        content_block: AnthropicResponseBlock,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: u64,
        delta: AnthropicBlockDelta,
    },
    ContentBlockStop {
        #[serde(default)]
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        delta: AnthropicMessageDelta,
        #[serde(default, deserialize_with = "lenient")]
        usage: Option<AnthropicUsage>,
    },
    MessageStop,
    /// Legacy Text Completions stream.
    Completion(AnthropicCompletion),
    Error {
        #[serde(default)]
        error: AnthropicError,
    },
    /// `ping` and anything newer: nothing to send.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Default, Deserialize)]
struct AnthropicStreamMessage {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    usage: Option<AnthropicUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicBlockDelta {
    TextDelta {
        #[serde(default)]
        text: String,
    },
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    ThinkingDelta {
        #[serde(default)]
        thinking: String,
    },
    SignatureDelta {
        #[serde(default)]
        signature: String,
    },
    /// `citations_delta` and anything newer: no OpenAI equivalent.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Default, Deserialize)]
struct AnthropicMessageDelta {
    #[serde(default)]
    stop_reason: Option<AnthropicStopReason>,
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
    req: ChatRequest,
) -> Result<AnthropicRequest<'a>, GatewayError> {
    let bad = |detail: &str| transform_error(ctx, detail);
    let mut system: Vec<AnthropicBlock> = Vec::new();
    let mut messages: Vec<AnthropicMessage> = Vec::new();
    let mut max_tokens = req.max_tokens().unwrap_or(DEFAULT_MAX_TOKENS);
    // Anthropic's minimum budget is 1,024 and `max_tokens` must exceed it (it includes the
    // thinking), so a smaller limit is raised by the budget.
    let thinking = req.thinking_budget().filter(|b| *b >= 1024).map(|budget| {
        if max_tokens <= budget {
            max_tokens += budget;
        }
        json!({"type": "enabled", "budget_tokens": budget})
    });
    let tool_choice = tool_choice(&req);
    let format_schema = req.response_format_schema();
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

// ---------------------------------------------------------------------------------------------
// Stream translation
// ---------------------------------------------------------------------------------------------

/// A `tool_use` content block being streamed as OpenAI tool call `index`.
#[derive(Debug)]
struct ToolBlock {
    block: u64,
    index: u32,
    has_arguments: bool,
}

/// Anthropic SSE (Messages events, or legacy `completion` events) -> OpenAI chunks.
pub type AnthropicStream = DecodedStream<SseDecoder, AnthropicEvents>;

impl AnthropicStream {
    pub fn new(ctx: &RequestCtx<'_>) -> Self {
        let mut chunks = ctx.chunk_builder();
        if ctx.route_type == RouteType::Completions {
            chunks.set_id(&ctx.meta().id.replacen("chatcmpl-", "cmpl-", 1));
        }
        let events = AnthropicEvents {
            format_block: None,
            opened: false,
            request_id: ctx.request_id.to_string(),
            tools: Vec::new(),
            usage: AnthropicUsage::default(),
        };
        DecodedStream::from_parts(SseDecoder::new(), events, chunks)
    }
}

pub struct AnthropicEvents {
    /// The block of the `response_format` tool call, streamed as content.
    format_block: Option<u64>,
    /// An event was handled; `message_start` may set the id only before that.
    opened: bool,
    request_id: String,
    tools: Vec<ToolBlock>,
    usage: AnthropicUsage,
}

impl EventTranslate<SseEvent> for AnthropicEvents {
    fn event(
        &mut self,
        event: SseEvent,
        chunks: &mut ChunkBuilder,
        out: &mut BytesMut,
    ) -> Result<(), StreamError> {
        // Nothing follows `message_stop`. Anthropic sends no `[DONE]`; one added by a proxy in
        // between means nothing.
        if chunks.is_done() || event.data.trim().is_empty() || event.data == "[DONE]" {
            return Ok(());
        }
        let e: AnthropicStreamEvent = serde_json::from_str(&event.data)
            .map_err(|err| StreamError(format!("undecodable anthropic stream event: {err}")))?;
        self.translate(e, chunks, out)
    }
}

impl AnthropicEvents {
    fn add_usage(&mut self, usage: Option<&AnthropicUsage>, chunks: &mut ChunkBuilder) {
        if let Some(u) = usage {
            self.usage.merge(u);
            chunks.usage = self.usage.to_openai();
        }
    }

    /// Chunks carry the upstream id (`msg_...`, `compl_...`) when the first event names one:
    /// nothing was written yet.
    fn adopt_id(&mut self, id: Option<String>, chunks: &mut ChunkBuilder) {
        if self.opened {
            return;
        }
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            chunks.set_id(&id);
        }
    }

    fn tool_block(&mut self, block: u64) -> Option<&mut ToolBlock> {
        self.tools.iter_mut().rev().find(|t| t.block == block)
    }

    fn translate(
        &mut self,
        e: AnthropicStreamEvent,
        chunks: &mut ChunkBuilder,
        out: &mut BytesMut,
    ) -> Result<(), StreamError> {
        match e {
            AnthropicStreamEvent::MessageStart { message } => {
                self.adopt_id(message.id, chunks);
                if let Some(model) = message.model.filter(|m| !m.is_empty()) {
                    chunks.set_model(&model);
                }
                self.add_usage(message.usage.as_ref(), chunks);
                chunks.start(out);
            }
            AnthropicStreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                AnthropicResponseBlock::Text { text } => chunks.text(out, &text),
                AnthropicResponseBlock::ToolUse { name, input, .. }
                    if name == RESPONSE_FORMAT_TOOL =>
                {
                    self.format_block = Some(index);
                    if input.as_object().is_some_and(|o| !o.is_empty()) {
                        chunks.text(out, &input.to_string());
                    }
                }
                AnthropicResponseBlock::ToolUse { id, name, input } => {
                    let tool = self.tools.len() as u32;
                    let id = if id.is_empty() {
                        format!("call_{}_{tool}", self.request_id)
                    } else {
                        id
                    };
                    chunks.tool_call_start(out, tool, &id, &name);
                    // The input normally arrives as deltas; a non-empty start is sent whole.
                    let whole = input.as_object().is_some_and(|o| !o.is_empty());
                    if whole {
                        chunks.tool_call_arguments(out, tool, &input.to_string());
                    }
                    self.tools.push(ToolBlock {
                        block: index,
                        index: tool,
                        has_arguments: whole,
                    });
                }
                AnthropicResponseBlock::Thinking { thinking, .. } => {
                    chunks.reasoning(out, &thinking)
                }
                AnthropicResponseBlock::RedactedThinking { .. }
                | AnthropicResponseBlock::Unknown => {}
            },
            AnthropicStreamEvent::ContentBlockDelta { index, delta } => match delta {
                AnthropicBlockDelta::TextDelta { text } => chunks.text(out, &text),
                AnthropicBlockDelta::InputJsonDelta { partial_json }
                    if self.format_block == Some(index) =>
                {
                    chunks.text(out, &partial_json)
                }
                AnthropicBlockDelta::InputJsonDelta { partial_json } => {
                    if let Some(tool) = self.tool_block(index) {
                        tool.has_arguments |= !partial_json.is_empty();
                        let tool = tool.index;
                        chunks.tool_call_arguments(out, tool, &partial_json);
                    }
                }
                AnthropicBlockDelta::ThinkingDelta { thinking } => chunks.reasoning(out, &thinking),
                AnthropicBlockDelta::SignatureDelta { signature } => {
                    chunks.thinking_signature(out, &signature)
                }
                AnthropicBlockDelta::Unknown => {}
            },
            AnthropicStreamEvent::ContentBlockStop { index } => {
                // A call without parameters streams no input: OpenAI clients expect `{}`.
                if let Some(tool) = self.tool_block(index).filter(|t| !t.has_arguments) {
                    tool.has_arguments = true;
                    let tool = tool.index;
                    chunks.tool_call_arguments(out, tool, "{}");
                }
            }
            AnthropicStreamEvent::MessageDelta { delta, usage } => {
                self.add_usage(usage.as_ref(), chunks);
                if let Some(reason) = delta.stop_reason {
                    let format_call = self.format_block.is_some();
                    let finish =
                        format_finish(reason.finish_reason(), format_call, self.tools.len());
                    chunks.finish(out, finish);
                }
            }
            AnthropicStreamEvent::MessageStop => chunks.done(out),
            AnthropicStreamEvent::Completion(c) => {
                self.adopt_id(c.id, chunks);
                if let Some(model) = c.model.filter(|m| !m.is_empty()) {
                    chunks.set_model(&model);
                }
                chunks.text(out, c.completion.as_deref().unwrap_or(""));
                if let Some(reason) = c.stop_reason {
                    chunks.finish(out, reason.finish_reason());
                }
            }
            AnthropicStreamEvent::Error { error } => return Err(StreamError(error.message())),
            AnthropicStreamEvent::Unknown => return Ok(()),
        }
        self.opened = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ai_proxy::ModelOptions;
    use crate::providers::testkit::{
        ctx, fixture, fixture_config, fixture_json, run_pieces, run_stream, run_truncated,
        sse_payloads,
    };
    use actix_web::http::StatusCode;
    use proptest::prelude::*;

    const MODEL: &str = "claude-3-5-sonnet-20241022";

    fn config() -> AiProxyConfig {
        fixture_config("anthropic/chat/config.json")
    }

    fn driver() -> Anthropic {
        Anthropic::from_config(&config()).unwrap()
    }

    fn options() -> ModelOptions {
        config().model.options.unwrap()
    }

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn translate(route: RouteType, stream: bool, client: Value) -> Value {
        let options = options();
        let c = ctx(route, MODEL, stream, &options);
        driver().request(&c, body(client)).unwrap()
    }

    fn chat(client: Value) -> Value {
        translate(RouteType::Chat, false, client)
    }

    fn respond(route: RouteType, raw: &str) -> Result<(Value, Usage), String> {
        let options = options();
        let c = ctx(route, MODEL, false, &options);
        let t = driver().response(&c, Bytes::from(raw.to_string()))?;
        Ok((serde_json::from_slice(&t.body).unwrap(), t.usage))
    }

    /// A chat fixture case's translated response; its message must be the expected one.
    fn chat_case(case: &str) -> (Value, Usage, Value) {
        let raw = fixture(&format!("anthropic/{case}/upstream-response.json"));
        let (v, usage) = respond(RouteType::Chat, &raw).unwrap();
        let expected = fixture_json(&format!("anthropic/{case}/expected-response.json"));
        assert_eq!(
            v["choices"][0]["message"],
            expected["choices"][0]["message"]
        );
        (v, usage, expected)
    }

    /// Every split point, and byte by byte, must give the same client stream.
    fn stream_all_ways(route: RouteType, include_usage: bool, input: &str) -> (Vec<Value>, Usage) {
        let options = options();
        let mut c = ctx(route, MODEL, true, &options);
        c.include_usage = include_usage;
        let mut s = driver().stream(&c);
        let whole = run_stream(s.as_mut(), input.as_bytes(), 0);
        let usage = s.usage();
        for split in 0..=input.len() {
            let mut s = driver().stream(&c);
            assert_eq!(
                run_stream(s.as_mut(), input.as_bytes(), split),
                whole,
                "split {split}"
            );
            assert_eq!(s.usage(), usage);
        }
        let mut s = driver().stream(&c);
        assert_eq!(
            run_pieces(s.as_mut(), input.as_bytes(), 1),
            whole,
            "byte by byte"
        );
        (sse_payloads(&whole), usage)
    }

    // --- config, URL, headers ------------------------------------------------------------------

    #[test]
    fn config_without_anthropic_version_is_rejected_with_kongs_text() {
        let mut config = config();
        config.model.options.as_mut().unwrap().anthropic_version = None;
        let err = Anthropic::from_config(&config).err().unwrap();
        assert_eq!(
            err,
            "must set 'model.options.anthropic_version' for anthropic provider"
        );
    }

    #[test]
    fn chat_and_completions_are_supported_but_not_embeddings() {
        let d = driver();
        assert!(d.supports(RouteType::Chat));
        assert!(d.supports(RouteType::Completions));
        assert!(!d.supports(RouteType::Embeddings));
    }

    #[test]
    fn urls_default_to_messages_and_complete_and_upstream_url_is_used_as_is() {
        let mut options = options();
        let d = driver();
        let c = ctx(RouteType::Chat, MODEL, false, &options);
        assert_eq!(
            d.url(&c).unwrap(),
            "https://api.anthropic.com:443/v1/messages"
        );
        let c = ctx(RouteType::Completions, MODEL, false, &options);
        assert_eq!(
            d.url(&c).unwrap(),
            "https://api.anthropic.com:443/v1/complete"
        );
        options.upstream_path = Some("/custom/messages".into());
        let c = ctx(RouteType::Chat, MODEL, false, &options);
        assert_eq!(
            d.url(&c).unwrap(),
            "https://api.anthropic.com:443/custom/messages"
        );
        options.upstream_url = Some("http://mock:8080/anthropic/v1/messages".into());
        let c = ctx(RouteType::Chat, "a/../../b", false, &options);
        assert_eq!(d.url(&c).unwrap(), "http://mock:8080/anthropic/v1/messages");
    }

    #[test]
    fn anthropic_version_header_is_set_from_the_options() {
        let mut options = options();
        let d = driver();
        let mut headers = Vec::new();
        d.headers(&ctx(RouteType::Chat, MODEL, false, &options), &mut headers);
        assert_eq!(
            headers,
            vec![(VERSION_HEADER, HeaderValue::from_static("2023-06-01"))]
        );
        // A templated version is resolved per request.
        options.anthropic_version = Some("2024-01-01".into());
        let mut headers = Vec::new();
        d.headers(&ctx(RouteType::Chat, MODEL, false, &options), &mut headers);
        assert_eq!(headers[0].1, "2024-01-01");
    }

    // --- requests ------------------------------------------------------------------------------

    #[test]
    fn chat_request_matches_fixture() {
        let out = chat(fixture_json("anthropic/chat/client-request.json"));
        let mut expected = fixture_json("anthropic/chat/upstream-request.json");
        // Deviation from Kong 3.9, which drops `top_p` and `stop`: top_p is forwarded; the only
        // stop sequence ("\n\n") is whitespace, which Anthropic rejects, so it is left out.
        expected["top_p"] = json!(0.9);
        assert_eq!(out, expected);
    }

    #[test]
    fn tools_request_matches_fixture() {
        let out = chat(fixture_json("anthropic/tools/client-request.json"));
        assert_eq!(out, fixture_json("anthropic/tools/upstream-request.json"));
    }

    /// kong-tests.md 03-anthropic: tool_choice conversion sent upstream.
    #[test]
    fn tool_choice_mapping_matches_fixture() {
        let mapping = fixture_json("anthropic/tools/tool_choice-mapping.json");
        for (choice, expected) in mapping.as_object().unwrap() {
            let choice: Value =
                serde_json::from_str(choice).unwrap_or_else(|_| Value::String(choice.clone()));
            let mut client = fixture_json("anthropic/tools/client-request.json");
            client["tool_choice"] = choice.clone();
            assert_eq!(&chat(client)["tool_choice"], expected, "{choice}");
        }
        let mut client = fixture_json("anthropic/tools/client-request.json");
        client["tool_choice"] = json!("sometimes");
        assert!(chat(client).get("tool_choice").is_none());
    }

    #[test]
    fn parallel_tool_calls_false_disables_parallel_tool_use() {
        let mut client = fixture_json("anthropic/tools/client-request.json");
        client["parallel_tool_calls"] = json!(false);
        assert_eq!(
            chat(client.clone())["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        client.as_object_mut().unwrap().remove("tool_choice");
        assert_eq!(
            chat(client)["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn images_systems_and_merged_turns_match_fixture() {
        let out = translate(
            RouteType::Chat,
            true,
            fixture_json("anthropic/images/client-request.json"),
        );
        assert_eq!(out, fixture_json("anthropic/images/upstream-request.json"));
    }

    #[test]
    fn tool_results_and_following_user_text_become_one_user_turn() {
        let out = chat(json!({"messages": [
            {"role": "user", "content": "Weather in Paris and Lyon?"},
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "w", "arguments": "{\"c\":\"Paris\"}"}},
                {"id": "t2", "type": "function", "function": {"name": "now", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "t1", "content": "18C"},
            {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "Thanks"}
        ]}));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": "Weather in Paris and Lyon?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "t1", "name": "w", "input": {"c": "Paris"}},
                    {"type": "tool_use", "id": "t2", "name": "now", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "noon"}]},
                    {"type": "text", "text": "Thanks"}
                ]}
            ])
        );
    }

    #[test]
    fn sampling_knobs_stop_user_and_max_completion_tokens_are_forwarded() {
        let out = chat(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 77, "temperature": 0.1, "top_p": 0.5, "top_k": 3,
            "stop": "STOP", "user": "u1", "n": 2, "seed": 7
        }));
        assert_eq!(
            out,
            json!({
                "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 77, "temperature": 0.1, "top_p": 0.5, "top_k": 3,
                "stop_sequences": ["STOP"], "metadata": {"user_id": "u1"}, "stream": false
            })
        );
    }

    #[test]
    fn max_tokens_defaults_when_neither_client_nor_config_sets_it() {
        let out = chat(json!({"messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
        let out = translate(RouteType::Completions, false, json!({"prompt": "hi"}));
        assert_eq!(out["max_tokens_to_sample"], DEFAULT_MAX_TOKENS);
    }

    #[test]
    fn untranslatable_requests_are_400s() {
        let options = options();
        let c = ctx(RouteType::Chat, MODEL, false, &options);
        let cases = [
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
            json!({"messages": "not a list"}),
        ];
        for case in cases {
            match driver().request(&c, body(case.clone())) {
                Err(GatewayError::BadRequest(m)) => {
                    assert!(
                        m.starts_with("error transforming to anthropic://llm/v1/chat: "),
                        "{m}"
                    )
                }
                other => panic!("{case}: {other:?}"),
            }
        }
    }

    #[test]
    fn completions_request_matches_fixture_with_the_human_turn_anthropic_requires() {
        let client = fixture_json("anthropic/completions/client-request.json");
        let options = options();
        let c = ctx(RouteType::Completions, "claude-2.1", false, &options);
        let out = driver().request(&c, body(client)).unwrap();
        let mut expected = fixture_json("anthropic/completions/upstream-request.json");
        // Deviation from Kong: `/v1/complete` rejects a prompt that does not start with
        // "\n\nHuman:", which Kong's "Human: ..." does.
        expected["prompt"] = json!("\n\nHuman: Say hi to Bob.\n\nAssistant:");
        assert_eq!(out, expected);
        let pre = "\n\nHuman: hi\n\nAssistant:";
        let out = translate(RouteType::Completions, true, json!({"prompt": pre}));
        assert_eq!(out["prompt"], pre);
        assert_eq!(out["stream"], true);
    }

    // --- responses -----------------------------------------------------------------------------

    #[test]
    fn chat_response_is_openai_shaped() {
        let (v, usage, expected) = chat_case("chat");
        // OpenAI-correct deviation from Kong 3.9's raw `end_turn`.
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"], expected["usage"]);
        assert_eq!(usage, Usage::new(25, 4));
        assert_eq!(v["model"], expected["model"]);
        assert_eq!(v["object"], "chat.completion");
        // Kong 3.9 has neither; the policy wants both.
        assert_eq!(v["id"], "msg_01ABC");
        assert_eq!(v["created"], 1_700_000_000);
    }

    #[test]
    fn tool_use_response_becomes_tool_calls() {
        let (v, usage, _) = chat_case("tools");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(usage, Usage::new(50, 30));
    }

    #[test]
    fn tool_only_answer_has_null_content() {
        let raw = r#"{"id":"m","model":"c","content":[{"type":"thinking","thinking":"hm"},{"type":"tool_use","id":"","name":"f","input":{}}],"stop_reason":"tool_use"}"#;
        let (v, _) = respond(RouteType::Chat, raw).unwrap();
        let message = &v["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(message["tool_calls"][0]["id"], "call_test_0");
        assert_eq!(message["tool_calls"][0]["function"]["arguments"], "{}");
    }

    #[test]
    fn text_blocks_are_joined() {
        let raw = r#"{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"stop_reason":"end_turn"}"#;
        let (v, _) = respond(RouteType::Chat, raw).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "ab");
        // No upstream id or model: the request's.
        assert_eq!(v["id"], "chatcmpl-test");
        assert_eq!(v["model"], MODEL);
    }

    /// kong-tests.md 03-anthropic: upstream without usage. Policy deviation: a zero usage
    /// object instead of Kong's string "no usage data returned from upstream".
    #[test]
    fn missing_usage_is_a_zero_usage_object() {
        let (v, usage, expected) = chat_case("no-usage");
        assert_eq!(expected["usage"], "no usage data returned from upstream");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        );
        assert_eq!(usage, Usage::default());
    }

    /// kong-tests.md 03-anthropic: malformed usage still answers 200 (zeros, not Kong's `{}`).
    #[test]
    fn malformed_usage_is_zeros_and_cache_tokens_count_as_prompt() {
        let raw = r#"{"content":[],"usage":"lots"}"#;
        assert_eq!(respond(RouteType::Chat, raw).unwrap().1, Usage::default());
        let raw = r#"{"content":[],"usage":{"input_tokens":"x","output_tokens":5}}"#;
        assert_eq!(respond(RouteType::Chat, raw).unwrap().1, Usage::new(0, 5));
        let raw = r#"{"content":[],"usage":{"input_tokens":3,"cache_creation_input_tokens":4,"cache_read_input_tokens":5,"output_tokens":6}}"#;
        assert_eq!(
            respond(RouteType::Chat, raw).unwrap().1,
            Usage::new(12, 6).with_cache(5, 4)
        );
    }

    /// kong-tests.md 03-anthropic: upstream 200 without `content`.
    #[test]
    fn missing_content_fails_with_kongs_reason() {
        let err =
            respond(RouteType::Chat, r#"{"model":"m","stop_reason":"end_turn"}"#).unwrap_err();
        assert_eq!(err, "'content' not in anthropic://llm/v1/chat response");
        let err = respond(RouteType::Chat, "<html>").unwrap_err();
        assert_eq!(err, "failed to decode anthropic://llm/v1/chat response");
    }

    #[test]
    fn stop_reasons_map_to_openai_finish_reasons() {
        for (reason, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("something_new", "stop"),
        ] {
            let raw = format!(r#"{{"content":[],"stop_reason":"{reason}"}}"#);
            let (v, _) = respond(RouteType::Chat, &raw).unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], finish, "{reason}");
        }
        let (v, _) = respond(RouteType::Chat, r#"{"content":[],"stop_reason":null}"#).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn completions_response_is_text_completion() {
        let (v, usage) = respond(
            RouteType::Completions,
            &fixture("anthropic/completions/upstream-response.json"),
        )
        .unwrap();
        let expected = fixture_json("anthropic/completions/expected-response.json");
        assert_eq!(v["choices"][0]["text"], expected["choices"][0]["text"]);
        // OpenAI-correct deviation from Kong 3.9's raw `stop_sequence`.
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["model"], "claude-2.1");
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["id"], "compl_1");
        assert_eq!(v["usage"]["total_tokens"], 0);
        assert_eq!(usage, Usage::default());
        let err = respond(RouteType::Completions, r#"{"stop_reason":"max_tokens"}"#).unwrap_err();
        assert_eq!(err, "'completion' not in anthropic://llm/v1/chat response");
    }

    /// kong-tests.md 03-anthropic: 401 passes through with `error.type: authentication_error`.
    #[test]
    fn error_bodies_pass_through() {
        let raw = Bytes::from(fixture("anthropic/errors/upstream-401.json"));
        assert_eq!(driver().error(StatusCode::UNAUTHORIZED, raw.clone()), raw);
        let html = driver().error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(b"<h1>down</h1>"),
        );
        let v: Value = serde_json::from_slice(&html).unwrap();
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("<h1>down</h1>"));
    }

    // --- streams -------------------------------------------------------------------------------

    #[test]
    fn chat_stream_at_every_split_gives_openai_chunks() {
        let input = fixture("anthropic/chat-stream/upstream-stream.txt");
        let (got, usage) = stream_all_ways(RouteType::Chat, false, &input);
        let kong = sse_payloads(&fixture("anthropic/chat-stream/expected-client-stream.txt"));
        // Kong's opening chunk, its two text chunks (Kong's empty content_block_start chunk has no
        // OpenAI meaning and is not sent), then the OpenAI-correct finish chunk and [DONE].
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(
            got[0]["choices"][0]["delta"],
            kong[0]["choices"][0]["delta"]
        );
        assert_eq!(
            got[1]["choices"][0]["delta"],
            kong[2]["choices"][0]["delta"]
        );
        assert_eq!(
            got[2]["choices"][0]["delta"],
            kong[3]["choices"][0]["delta"]
        );
        assert_eq!(got[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(got[3]["choices"][0]["delta"], json!({}));
        assert_eq!(got[4], "[DONE]");
        for chunk in &got[..4] {
            assert_eq!(chunk["id"], "msg_s1");
            assert_eq!(chunk["model"], MODEL);
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["created"], 1_700_000_000);
        }
        // message_delta's output count is cumulative: 3, not Kong's 1 + 3.
        assert_eq!(usage, Usage::new(25, 3));
    }

    #[test]
    fn chat_stream_usage_chunk_when_asked() {
        let input = fixture("anthropic/chat-stream/upstream-stream.txt");
        let (got, _) = stream_all_ways(RouteType::Chat, true, &input);
        assert_eq!(got.len(), 6);
        assert_eq!(got[4]["choices"], json!([]));
        assert_eq!(
            got[4]["usage"],
            json!({"prompt_tokens": 25, "completion_tokens": 3, "total_tokens": 28})
        );
        assert_eq!(got[5], "[DONE]");
    }

    #[test]
    fn tool_calls_are_streamed_with_id_name_and_arguments() {
        let input = fixture("anthropic/chat-stream-tools/upstream-stream.txt");
        let (got, usage) = stream_all_ways(RouteType::Chat, false, &input);
        let deltas: Vec<&Value> = got.iter().map(|c| &c["choices"][0]["delta"]).collect();
        assert_eq!(got.len(), 9, "{got:?}");
        assert_eq!(*deltas[0], json!({"role": "assistant", "content": ""}));
        assert_eq!(deltas[1]["content"], "Let me check.");
        assert_eq!(
            deltas[2]["tool_calls"],
            json!([{"index": 0, "id": "toolu_01T1x", "type": "function", "function": {"name": "get_weather", "arguments": ""}}])
        );
        assert_eq!(
            deltas[3]["tool_calls"][0]["function"]["arguments"],
            "{\"city\": \"Par"
        );
        assert_eq!(deltas[4]["tool_calls"][0]["function"]["arguments"], "is\"}");
        assert_eq!(deltas[4]["tool_calls"][0]["index"], 0);
        assert_eq!(deltas[5]["tool_calls"][0]["id"], "toolu_01T2y");
        assert_eq!(deltas[5]["tool_calls"][0]["index"], 1);
        assert_eq!(
            deltas[6]["tool_calls"],
            json!([{"index": 1, "function": {"arguments": "{}"}}])
        );
        assert_eq!(got[7]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(got[8], "[DONE]");
        assert_eq!(usage, Usage::new(482, 89).with_cache(10, 0));
    }

    #[test]
    fn completions_stream_gives_text_completion_chunks() {
        let input = fixture("anthropic/completions-stream/upstream-stream.txt");
        let (got, usage) = stream_all_ways(RouteType::Completions, false, &input);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0]["object"], "text_completion");
        assert_eq!(got[0]["id"], "cmpl-test");
        assert_eq!(got[0]["model"], "claude-2.0");
        assert_eq!(got[0]["choices"][0]["text"], " Hello");
        assert_eq!(got[1]["choices"][0]["text"], "!");
        assert_eq!(got[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(got[3], "[DONE]");
        assert_eq!(usage, Usage::default());
    }

    #[test]
    fn completions_stream_takes_the_upstream_id_when_it_has_one() {
        let options = options();
        let c = ctx(RouteType::Completions, "claude-2.1", true, &options);
        let mut s = driver().stream(&c);
        let input = "event: completion\ndata: {\"type\":\"completion\",\"id\":\"compl_9\",\"completion\":\"Hi\",\"stop_reason\":\"max_tokens\"}\n\n";
        let got = sse_payloads(&run_stream(s.as_mut(), input.as_bytes(), 5));
        assert_eq!(got[0]["id"], "compl_9");
        assert_eq!(got[0]["choices"][0]["text"], "Hi");
        assert_eq!(got[1]["id"], "compl_9");
        assert_eq!(got[1]["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn error_event_ends_the_stream_with_its_message() {
        let options = options();
        let c = ctx(RouteType::Chat, MODEL, true, &options);
        let mut s = driver().stream(&c);
        let mut out = BytesMut::new();
        let input = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
                     event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
        let err = s.feed(input.as_bytes(), &mut out).unwrap_err();
        assert_eq!(err, StreamError("Overloaded".into()));
        // What came before the error is still delivered.
        let got = sse_payloads(std::str::from_utf8(&out).unwrap());
        assert_eq!(got[0]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(got[0]["choices"][0]["delta"]["role"], "assistant");
    }

    #[test]
    fn cut_off_stream_is_a_truncation_error_and_done_is_written_once() {
        let input = fixture("anthropic/chat-stream/upstream-stream.txt");
        let cut = input.find("event: message_delta").unwrap();
        let options = options();
        let c = ctx(RouteType::Chat, MODEL, true, &options);
        let mut s = driver().stream(&c);
        let (text, err) = run_truncated(s.as_mut(), &input.as_bytes()[..cut], 7);
        let got = sse_payloads(&text);
        // The text before the cut was relayed; no invented finish reason, no [DONE].
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null()));
        assert_eq!(err, crate::providers::stream::TRUNCATED);
        // Events after message_stop are ignored; [DONE] is written once.
        let mut s = driver().stream(&c);
        let trailing = format!("{input}event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"late\"}}}}\n\n");
        let text = run_stream(s.as_mut(), trailing.as_bytes(), 3);
        assert_eq!(text.matches("[DONE]").count(), 1);
        assert!(!text.contains("late"));
    }

    #[test]
    fn unknown_events_and_deltas_are_skipped_and_thinking_is_reasoning() {
        let options = options();
        let c = ctx(RouteType::Chat, MODEL, true, &options);
        let mut s = driver().stream(&c);
        let input = "event: future_event\ndata: {\"type\":\"future_event\",\"x\":1}\n\n\
                     event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
                     event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hm\"}}\n\n\
                     event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":5,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n\
                     event: ping\n\n\
                     event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\n\
                     event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let got = sse_payloads(&run_stream(s.as_mut(), input.as_bytes(), 11));
        // The thinking delta as `reasoning_content`, then the framing a stream always has.
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0]["choices"][0]["delta"]["reasoning_content"], "hm");
        assert!(got[0]["choices"][0]["delta"].get("content").is_none());
        assert_eq!(got[1]["choices"][0]["finish_reason"], "stop");
        assert_eq!(got[2], "[DONE]");
    }

    #[test]
    fn undecodable_event_is_a_stream_error() {
        let options = options();
        let c = ctx(RouteType::Chat, MODEL, true, &options);
        let mut s = driver().stream(&c);
        let mut out = BytesMut::new();
        let err = s
            .feed(b"event: message_start\ndata: {nope\n\n", &mut out)
            .unwrap_err();
        assert!(
            err.0.starts_with("undecodable anthropic stream event"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn random_bytes_and_chunkings_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..512),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            completions in any::<bool>(),
        ) {
            let options = options();
            let route = if completions { RouteType::Completions } else { RouteType::Chat };
            let c = ctx(route, MODEL, true, &options);
            let mut s = driver().stream(&c);
            let mut out = BytesMut::new();
            let mut rest: &[u8] = &data;
            for cut in cuts {
                let at = if rest.is_empty() { 0 } else { cut % rest.len() };
                let (head, tail) = rest.split_at(at);
                let _ = s.feed(head, &mut out);
                rest = tail;
            }
            let _ = s.feed(rest, &mut out);
            let _ = s.finish(&mut out);
            let _ = driver().response(&c, Bytes::from(data.clone()));
        }

        #[test]
        fn random_events_in_the_anthropic_shape_never_panic(
            kinds in proptest::collection::vec(0usize..9, 0..20),
            index in 0u64..4,
            text in ".{0,8}",
        ) {
            let names = ["message_start", "content_block_start", "content_block_delta",
                "content_block_stop", "message_delta", "message_stop", "completion", "ping", "error"];
            let mut input = String::new();
            for k in kinds {
                let name = names[k];
                let data = json!({"type": name, "index": index, "message": {"id": text, "usage": {"input_tokens": 1}},
                    "content_block": {"type": if k % 2 == 0 { "text" } else { "tool_use" }, "text": text, "id": "", "name": text, "input": {}},
                    "delta": {"type": "input_json_delta", "partial_json": text, "stop_reason": "max_tokens"},
                    "usage": {"output_tokens": 2}, "completion": text});
                input.push_str(&format!("event: {name}\ndata: {data}\n\n"));
            }
            let options = options();
            let c = ctx(RouteType::Chat, MODEL, true, &options);
            let mut s = driver().stream(&c);
            let mut out = BytesMut::new();
            let _ = s.feed(input.as_bytes(), &mut out);
            let _ = s.finish(&mut out);
        }
    }

    #[test]
    fn thinking_and_signatures_come_back_as_reasoning_and_thinking_blocks() {
        let raw = r#"{"id":"msg_1","model":"c","content":[
            {"type":"thinking","thinking":"Let me add.","signature":"sig-1"},
            {"type":"redacted_thinking","data":"opaque"},
            {"type":"text","text":"14"}],
            "stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":9}}"#;
        let (v, _) = respond(RouteType::Chat, raw).unwrap();
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], "14");
        assert_eq!(m["reasoning_content"], "Let me add.");
        assert_eq!(
            m["thinking_blocks"],
            json!([{"type": "thinking", "thinking": "Let me add.", "signature": "sig-1"},
                   {"type": "redacted_thinking", "data": "opaque"}])
        );
        let options = options();
        let c = ctx(RouteType::Chat, MODEL, true, &options);
        let mut s = driver().stream(&c);
        let input = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":2}}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hm\"}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"sig-2\"}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let got = sse_payloads(&run_stream(s.as_mut(), input.as_bytes(), 7));
        let deltas: Vec<&Value> = got.iter().map(|c| &c["choices"][0]["delta"]).collect();
        assert_eq!(deltas[1]["reasoning_content"], "Hm");
        assert_eq!(deltas[2]["thinking_blocks"][0]["signature"], "sig-2");
    }

    #[test]
    fn thinking_blocks_reasoning_effort_and_cache_control_reach_anthropic() {
        let out = chat(json!({
            "model": MODEL, "max_tokens": 1000, "reasoning_effort": "high",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "Long rules",
                                                "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": [{"type": "text", "text": "add 2 and 12",
                                              "cache_control": {"type": "ephemeral"}}]},
                {"role": "assistant", "content": null,
                 "thinking_blocks": [{"type": "thinking", "thinking": "Use add.", "signature": "sig-1"}],
                 "tool_calls": [{"id": "toolu_1", "type": "function",
                                 "function": {"name": "add", "arguments": "{\"a\":2}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "14"}]
        }));
        assert_eq!(
            out["thinking"],
            json!({"type": "enabled", "budget_tokens": 16384})
        );
        assert_eq!(out["max_tokens"], 17384, "raised above the budget");
        assert_eq!(
            out["system"],
            json!([{"type": "text", "text": "Long rules", "cache_control": {"type": "ephemeral"}}])
        );
        assert_eq!(
            out["messages"][0]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
        let assistant = &out["messages"][1]["content"];
        assert_eq!(
            assistant[0],
            json!({"type": "thinking", "thinking": "Use add.", "signature": "sig-1"})
        );
        assert_eq!(assistant[1]["type"], "tool_use");
        // Without cache markers the system prompt stays a string.
        let plain = chat(json!({"model": MODEL, "messages": [
            {"role": "system", "content": "a"}, {"role": "user", "content": "b"}]}));
        assert_eq!(plain["system"], "a");
        assert!(plain.get("thinking").is_none());
    }

    #[test]
    fn cache_control_on_tools_and_tool_results_reaches_anthropic() {
        let cc = json!({"type": "ephemeral", "ttl": "1h"});
        let out = chat(json!({"model": MODEL, "messages": [
            {"role": "user", "content": "add"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "t1",
                "type": "function", "function": {"name": "add", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1",
             "content": [{"type": "text", "text": "14", "cache_control": cc}]}],
            "tools": [{"type": "function", "function": {"name": "add"}, "cache_control": cc}]}));
        assert_eq!(out["tools"][0]["cache_control"], cc);
        assert_eq!(
            out["messages"][2]["content"][0]["content"][0],
            json!({"type": "text", "text": "14", "cache_control": cc})
        );
    }

    #[test]
    fn response_format_is_a_forced_tool_call_whose_input_is_the_content() {
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
        let out = chat(
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}}),
        );
        assert_eq!(out["tools"][0]["name"], RESPONSE_FORMAT_TOOL);
        assert_eq!(out["tools"][0]["input_schema"], schema);
        assert_eq!(
            out["tool_choice"],
            json!({"type": "tool", "name": RESPONSE_FORMAT_TOOL})
        );
        let raw = r#"{"content":[{"type":"tool_use","id":"t","name":"json_response","input":{"n":14}}],
            "stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}"#;
        let (v, _) = respond(RouteType::Chat, raw).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], r#"{"n":14}"#);
        assert!(v["choices"][0]["message"].get("tool_calls").is_none());
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        let options = options();
        let c = ctx(RouteType::Chat, MODEL, true, &options);
        let mut s = driver().stream(&c);
        let input = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"json_response\",\"input\":{}}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"n\\\":\"}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"14}\"}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"}}\n\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let got = sse_payloads(&run_stream(s.as_mut(), input.as_bytes(), 5));
        let text: String = got
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, r#"{"n":14}"#);
        assert!(got
            .iter()
            .all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()));
        assert!(got
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    }
}
