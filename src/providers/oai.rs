//! OpenAI wire types shared by every translator: the request shapes translators read, the
//! response and chunk shapes they write, and the stream builder that gives every synthesised
//! stream the same OpenAI-correct framing (role on the first chunk, a finish chunk, optional
//! usage chunk, `[DONE]`).

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------------
// Request side
// ---------------------------------------------------------------------------------------------

/// An OpenAI chat request as translators need it. Unknown fields are kept in `extra` so a
/// translator can still see (and forward or drop) them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<u64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default)]
    pub prompt: Option<Value>,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Anthropic's smallest thinking budget; a smaller one runs without thinking.
pub const MIN_THINKING_BUDGET: u64 = 1024;
const MIN_THINKING_TOP_P: f64 = 0.95;

/// The thinking budget a request body asks for: Anthropic's `thinking.budget_tokens`
/// (carried over from an Anthropic-format client), else OpenAI's `reasoning_effort` mapped
/// to a budget (`minimal`/`low` 1,024, `medium` 4,096, `high` 16,384 tokens; `none` 0, i.e.
/// reasoning off). `None` when the client did not ask.
pub fn thinking_budget(body: &Map<String, Value>) -> Option<u64> {
    if let Some(t) = body.get("thinking") {
        return match t.get("type").and_then(Value::as_str) {
            Some("enabled") => t.get("budget_tokens").and_then(Value::as_u64),
            _ => Some(0),
        };
    }
    match body.get("reasoning_effort")?.as_str()? {
        "none" => Some(0),
        "minimal" | "low" => Some(1024),
        "medium" => Some(4096),
        "high" => Some(16384),
        _ => None,
    }
}

/// The sampling fields of a body that [`ChatRequest::fit_sampling_to_thinking`] changes.
pub fn thinking_conflicts(body: &Map<String, Value>) -> Vec<&'static str> {
    let number = |k: &str| body.get(k).and_then(Value::as_f64);
    let mut out = Vec::new();
    if number("temperature").is_some_and(|t| t != 1.0) {
        out.push("temperature (1 with thinking)");
    }
    if number("top_p").is_some_and(|p| p < MIN_THINKING_TOP_P) {
        out.push("top_p (0.95 or more with thinking)");
    }
    if body.get("top_k").is_some_and(|k| !k.is_null()) {
        out.push("top_k (not with thinking)");
    }
    out
}

impl ChatRequest {
    /// Reads a client body; the error is the reason for the client's 400.
    pub fn from_body(body: Map<String, Value>) -> Result<Self, String> {
        serde_json::from_value(Value::Object(body)).map_err(|e| format!("invalid request: {e}"))
    }

    /// The sampling knobs providers take under OpenAI's names (`temperature`, `top_p`,
    /// `top_k`), plus the length limit under the provider's own `max_tokens_key`.
    pub fn sampling(&self, max_tokens_key: &str) -> Map<String, Value> {
        let mut out = Map::new();
        if let Some(v) = self.max_tokens() {
            out.insert(max_tokens_key.into(), v.into());
        }
        if let Some(v) = self.temperature {
            out.insert("temperature".into(), v.into());
        }
        if let Some(v) = self.top_p {
            out.insert("top_p".into(), v.into());
        }
        if let Some(v) = self.top_k {
            out.insert("top_k".into(), v.into());
        }
        out
    }

    /// The reasoning budget the client asked for ([`thinking_budget`]).
    pub fn thinking_budget(&self) -> Option<u64> {
        thinking_budget(&self.extra)
    }

    /// Claude's extended thinking (Anthropic, Claude on Bedrock) refuses other sampling:
    /// `temperature` must be 1, `top_k` unset and `top_p` at least 0.95
    /// (https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking). The values
    /// are forced here; the dropped-fields report names what changed ([`thinking_conflicts`]).
    pub fn fit_sampling_to_thinking(&mut self) {
        self.temperature = self.temperature.map(|_| 1.0);
        self.top_k = None;
        self.top_p = self.top_p.map(|p| p.max(MIN_THINKING_TOP_P));
    }

    /// The JSON schema a `response_format` asks for (`json_object`: any object), for providers
    /// without structured output: they get a forced call to [`RESPONSE_FORMAT_TOOL`] with this
    /// schema, and the call's arguments become the answer's content.
    pub fn response_format_schema(&self) -> Option<Value> {
        let format = self.extra.get("response_format")?;
        match format.get("type").and_then(Value::as_str)? {
            "json_schema" => Some(
                format
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object"})),
            ),
            "json_object" => Some(serde_json::json!({"type": "object"})),
            _ => None,
        }
    }

    /// [`Self::response_format_schema`] for providers that emulate it with a forced tool call.
    /// The forced call leaves the model no way to call the client's own tools, so asking for
    /// both is refused (400) unless `tool_choice` is `none`.
    pub fn emulated_response_format(&self) -> Result<Option<Value>, &'static str> {
        let Some(schema) = self.response_format_schema() else {
            return Ok(None);
        };
        let tools = self.tools.as_ref().is_some_and(|t| !t.is_empty());
        let none = matches!(&self.tool_choice, Some(ToolChoice::Mode(m)) if m == "none");
        if tools && !none {
            return Err(
                "response_format cannot be combined with tools on this provider: it is \
                emulated by a forced 'json_response' tool call, which would stop the model from \
                calling your tools; send one or the other (or tool_choice: none)",
            );
        }
        Ok(Some(schema))
    }

    /// `response_format` for a Claude that thinks (Anthropic, Bedrock): thinking forbids the
    /// forced tool call that emulates it elsewhere, so a JSON schema goes as the provider's
    /// own structured output (Claude Sonnet and Opus 4.5 and later, Haiku 4.5). `json_object`
    /// has no schema to give it, and an empty object schema would only allow `{}`: that
    /// combination is refused by name. Returns the schema and its name.
    pub fn thinking_json_schema(&self) -> Result<Option<(Value, Option<String>)>, &'static str> {
        let Some(format) = self.extra.get("response_format") else {
            return Ok(None);
        };
        match format.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                let name = format
                    .pointer("/json_schema/name")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                Ok(self.response_format_schema().map(|schema| (schema, name)))
            }
            Some("json_object") => Err(
                "response_format json_object cannot be combined with reasoning_effort on this \
                 provider: thinking forbids the forced tool call that emulates it, and Claude's \
                 own structured output needs a schema; send a json_schema response_format, or \
                 drop reasoning_effort",
            ),
            _ => Ok(None),
        }
    }

    /// `max_completion_tokens` is the newer name; either one limits the answer.
    pub fn max_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The completions prompt as one string (an array prompt is joined, as providers take one).
    pub fn prompt_text(&self) -> Option<String> {
        match self.prompt.as_ref()? {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => None,
        }
    }
}

/// The tool a `response_format` becomes where the provider has no structured output.
pub const RESPONSE_FORMAT_TOOL: &str = "json_response";
/// Its description, which tells the model what the call is for.
pub const RESPONSE_FORMAT_TOOL_DESCRIPTION: &str =
    "Respond with your answer as this tool's input: a JSON value matching its schema.";

/// A finish reason for an answer whose only tool call was the `response_format` one
/// (`format_call`): the client asked for content, so the model stopped rather than called a
/// tool.
pub fn format_finish(finish: FinishReason, format_call: bool, other_calls: usize) -> FinishReason {
    if format_call && finish == FinishReason::ToolCalls && other_calls == 0 {
        FinishReason::Stop
    } else {
        finish
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The assistant's signed reasoning blocks as a client sends them back (the de-facto
    /// `thinking_blocks`: `{type: thinking, thinking, signature}` or `{type:
    /// redacted_thinking, data}`); Anthropic and Bedrock Claude reject a tool-use turn without
    /// them when thinking is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<Vec<Value>>,
}

impl ChatMessage {
    /// The text of the message: a string content, or its text parts joined.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(MessageContent::Text(s)) => s.clone(),
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        }
    }

    /// Whether a content part carries `cache_control` (a prompt-caching breakpoint).
    pub fn cached(&self) -> bool {
        match &self.content {
            Some(MessageContent::Parts(parts)) => parts.iter().any(ContentPart::cached),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text {
        text: String,
        /// Anthropic's prompt-caching marker, kept for the providers that cache.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    ImageUrl {
        image_url: ImageUrl,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    #[serde(other)]
    Unsupported,
}

impl ContentPart {
    pub fn cached(&self) -> bool {
        matches!(
            self,
            ContentPart::Text {
                cache_control: Some(_),
                ..
            } | ContentPart::ImageUrl {
                cache_control: Some(_),
                ..
            }
        )
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ImageUrl {
    /// Splits a `data:<mime>;base64,<data>` URL into mime type and base64 payload.
    pub fn as_data_url(&self) -> Option<(&str, &str)> {
        split_data_url(&self.url)
    }
}

/// `data:<mime>;base64,<data>` -> (mime, base64 payload); `None` for any other URL. A free
/// function for translators that read image URLs out of raw JSON instead of [`ImageUrl`].
pub fn split_data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    Some((meta.strip_suffix(";base64")?, data))
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Tool {
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionDef,
    /// Anthropic's prompt-caching marker on a tool definition (caches the tools up to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
}

fn function_type() -> String {
    "function".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `"auto"`, `"none"`, `"required"`.
    Mode(String),
    Function(ToolChoiceFunction),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ToolChoiceFunction {
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: ToolChoiceName,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ToolChoiceName {
    pub name: String,
}

// ---------------------------------------------------------------------------------------------
// Response side
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Prompt-cache reads (and writes), where the provider reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// Reasoning tokens (part of `completion_tokens`), where the provider reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// OpenAI's `prompt_tokens_details`. `cached_tokens` are cache reads (OpenAI's meaning);
/// `cache_write_tokens` is the gateway's field for cache writes (Anthropic's
/// `cache_creation_input_tokens`, Bedrock's `cacheWriteInputTokens`). Both are included in
/// `prompt_tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: None,
            completion_tokens_details: None,
        }
    }

    /// Adds cache reads and writes (already counted in `prompt_tokens`) when there are any.
    pub fn with_cache(mut self, read: u64, write: u64) -> Self {
        if read > 0 || write > 0 {
            self.prompt_tokens_details = Some(PromptTokensDetails {
                cached_tokens: read,
                cache_write_tokens: write,
            });
        }
        self
    }

    /// Adds the reasoning tokens (already counted in `completion_tokens`) when there are any.
    pub fn with_reasoning(mut self, reasoning_tokens: u64) -> Self {
        if reasoning_tokens > 0 {
            self.completion_tokens_details = Some(CompletionTokensDetails { reasoning_tokens });
        }
        self
    }
}

/// OpenAI's finish reasons; every provider's stop reason maps onto one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// A JSON document as a string, as OpenAI sends it.
    pub arguments: String,
}

/// Tool-call arguments as a provider sends them (a JSON value) -> OpenAI's `arguments` (a JSON
/// document as a string). A string is taken as already serialised (Cohere v2 sends one);
/// missing arguments are `{}`, the empty argument list, since clients parse the string.
pub fn arguments_string(arguments: &Value) -> String {
    match arguments {
        Value::String(s) => s.clone(),
        Value::Null => "{}".to_string(),
        other => other.to_string(),
    }
}

impl ToolCall {
    pub fn function(id: impl Into<String>, name: impl Into<String>, arguments: String) -> Self {
        ToolCall {
            id: id.into(),
            kind: function_type(),
            function: FunctionCall {
                name: name.into(),
                arguments,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: Option<FinishReason>,
    pub logprobs: Option<Value>,
    /// The stop sequence that ended the answer, where the provider says which (vLLM's de-facto
    /// field, which the gateway fills from Bedrock too); Anthropic-format answers carry it as
    /// `stop_sequence`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: Option<String>,
    /// The provider's reasoning text (the de-facto field of DeepSeek, vLLM, LiteLLM), never
    /// mixed into `content`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Signed reasoning blocks, for the client to send back on its next turn.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub thinking_blocks: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

impl ChatCompletion {
    /// Sets the reasoning of the (single) choice: its text and the signed blocks.
    pub fn with_reasoning(mut self, reasoning: String, blocks: Vec<Value>) -> Self {
        if let Some(choice) = self.choices.first_mut() {
            choice.message.reasoning_content = (!reasoning.is_empty()).then_some(reasoning);
            choice.message.thinking_blocks = blocks;
        }
        self
    }

    /// A single-choice completion, the shape every non-OpenAI translator produces.
    pub fn single(
        meta: &ResponseMeta,
        content: Option<String>,
        tool_calls: Vec<ToolCall>,
        finish_reason: Option<FinishReason>,
        usage: Usage,
    ) -> Self {
        ChatCompletion {
            id: meta.id.clone(),
            object: "chat.completion",
            created: meta.created,
            model: meta.model.clone(),
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content,
                    reasoning_content: None,
                    thinking_blocks: Vec::new(),
                    tool_calls,
                },
                finish_reason,
                logprobs: None,
                stop_reason: None,
            }],
            usage,
        }
    }

    pub fn with_stop_sequence(mut self, stop: Option<String>) -> Self {
        if let Some(choice) = self.choices.first_mut() {
            choice.stop_reason = stop;
        }
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<TextChoice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextChoice {
    pub index: u32,
    pub text: String,
    pub finish_reason: Option<FinishReason>,
    pub logprobs: Option<Value>,
}

impl TextCompletion {
    pub fn single(
        meta: &ResponseMeta,
        text: String,
        finish_reason: Option<FinishReason>,
        usage: Usage,
    ) -> Self {
        TextCompletion {
            id: meta.id.replacen("chatcmpl-", "cmpl-", 1),
            object: "text_completion",
            created: meta.created,
            model: meta.model.clone(),
            choices: vec![TextChoice {
                index: 0,
                text,
                finish_reason,
                logprobs: None,
            }],
            usage,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingList {
    pub object: &'static str,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Embedding {
    pub object: &'static str,
    pub index: u32,
    pub embedding: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

impl EmbeddingList {
    pub fn new(model: &str, vectors: Vec<Vec<f64>>, prompt_tokens: u64) -> Self {
        EmbeddingList {
            object: "list",
            data: vectors
                .into_iter()
                .enumerate()
                .map(|(i, embedding)| Embedding {
                    object: "embedding",
                    index: i as u32,
                    embedding,
                })
                .collect(),
            model: model.to_string(),
            usage: EmbeddingUsage {
                prompt_tokens,
                total_tokens: prompt_tokens,
            },
        }
    }
}

/// What a translator needs to fill `id`, `created` and `model` of everything it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

// ---------------------------------------------------------------------------------------------
// Stream side
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChunkChoice<'a> {
    pub index: u32,
    pub delta: Delta<'a>,
    pub finish_reason: Option<FinishReason>,
    pub logprobs: Option<Value>,
    /// The stop sequence that ended the answer ([`ChatChoice::stop_reason`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<&'a str>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    /// A reasoning block's signature, as `[{"type":"thinking","thinking":"","signature":…}]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub thinking_blocks: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallDelta<'a> {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionDelta<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<TextChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextChunkChoice<'a> {
    pub index: u32,
    pub text: &'a str,
    pub finish_reason: Option<FinishReason>,
    pub logprobs: Option<Value>,
}

/// Appends one SSE event `data: <json>\n\n`.
pub fn write_event(out: &mut BytesMut, value: &impl Serialize) {
    out.put_slice(b"data: ");
    // Serialising our own types into a buffer cannot fail.
    let _ = serde_json::to_writer((&mut *out).writer(), value);
    out.put_slice(b"\n\n");
}

/// Appends an SSE event whose data is already serialised.
pub fn write_raw_event(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 8);
    // Data spanning several lines needs a `data: ` prefix on each (SSE framing).
    let mut rest = data;
    while let Some(end) = memchr::memchr(b'\n', rest) {
        out.put_slice(b"data: ");
        out.put_slice(&rest[..=end]);
        rest = &rest[end + 1..];
    }
    out.put_slice(b"data: ");
    out.put_slice(rest);
    out.put_slice(b"\n\n");
}

/// Appends the stream terminator.
pub fn write_done(out: &mut BytesMut) {
    out.put_slice(b"data: [DONE]\n\n");
}

/// Appends an error event the OpenAI SDKs raise as an APIError, for a stream that failed midway.
pub fn write_error_event(out: &mut BytesMut, message: &str) {
    write_event(
        out,
        &serde_json::json!({ "error": { "message": message, "type": "upstream_error" } }),
    );
}

/// Builds the OpenAI chunk sequence of a synthesised stream (every provider but the
/// OpenAI-format ones, whose chunks pass through). Owns the per-stream state the framing needs:
/// whether the role was sent, the finish reason, the usage, and whether the client asked for a
/// usage chunk.
#[derive(Debug, Clone)]
pub struct ChunkBuilder {
    meta: ResponseMeta,
    completions: bool,
    include_usage: bool,
    role_sent: bool,
    finished: bool,
    /// `[DONE]` was written; the stream is over.
    done: bool,
    pub usage: Usage,
}

impl ChunkBuilder {
    /// `completions` selects `text_completion` chunks instead of `chat.completion.chunk`.
    pub fn new(meta: ResponseMeta, completions: bool, include_usage: bool) -> Self {
        ChunkBuilder {
            meta,
            completions,
            include_usage,
            role_sent: false,
            finished: false,
            done: false,
            usage: Usage::default(),
        }
    }

    pub fn model(&self) -> &str {
        &self.meta.model
    }

    pub fn set_model(&mut self, model: &str) {
        if self.meta.model != model {
            self.meta.model = model.to_string();
        }
    }

    /// Takes the provider's own response id (Anthropic `msg_...`, Cohere `generation_id`). Call
    /// it before the first chunk is written, so one stream never shows two ids.
    pub fn set_id(&mut self, id: &str) {
        if self.meta.id != id {
            self.meta.id = id.to_string();
        }
    }

    fn chat(&mut self, out: &mut BytesMut, delta: Delta<'_>, finish: Option<FinishReason>) {
        self.chat_choice(out, delta, finish, None)
    }

    fn chat_choice(
        &mut self,
        out: &mut BytesMut,
        delta: Delta<'_>,
        finish: Option<FinishReason>,
        stop_reason: Option<&str>,
    ) {
        let mut delta = delta;
        if !self.role_sent {
            delta.role = Some("assistant");
            self.role_sent = true;
        }
        write_event(
            out,
            &ChatChunk {
                id: &self.meta.id,
                object: "chat.completion.chunk",
                created: self.meta.created,
                model: &self.meta.model,
                choices: vec![ChunkChoice {
                    index: 0,
                    delta,
                    finish_reason: finish,
                    logprobs: None,
                    stop_reason,
                }],
                usage: None,
            },
        );
    }

    fn text_chunk(&self, out: &mut BytesMut, text: &str, finish: Option<FinishReason>) {
        write_event(
            out,
            &TextChunk {
                id: &self.meta.id,
                object: "text_completion",
                created: self.meta.created,
                model: &self.meta.model,
                choices: vec![TextChunkChoice {
                    index: 0,
                    text,
                    finish_reason: finish,
                    logprobs: None,
                }],
                usage: None,
            },
        );
    }

    /// Sends the role-only opening chunk if nothing was sent yet (providers that open a stream
    /// before any text, like Anthropic's `message_start`).
    pub fn start(&mut self, out: &mut BytesMut) {
        if !self.role_sent && !self.completions {
            self.chat(
                out,
                Delta {
                    content: Some(""),
                    ..Delta::default()
                },
                None,
            );
        }
    }

    /// A piece of generated text. Empty text produces nothing.
    pub fn text(&mut self, out: &mut BytesMut, text: &str) {
        if text.is_empty() {
            return;
        }
        if self.completions {
            self.text_chunk(out, text, None);
        } else {
            self.chat(
                out,
                Delta {
                    content: Some(text),
                    ..Delta::default()
                },
                None,
            );
        }
    }

    /// A piece of the model's reasoning (`delta.reasoning_content`). Empty text produces nothing.
    pub fn reasoning(&mut self, out: &mut BytesMut, text: &str) {
        if text.is_empty() || self.completions {
            return;
        }
        self.chat(
            out,
            Delta {
                reasoning_content: Some(text),
                ..Delta::default()
            },
            None,
        );
    }

    /// The signature that closes a reasoning block, for clients that send the block back.
    pub fn thinking_signature(&mut self, out: &mut BytesMut, signature: &str) {
        if signature.is_empty() || self.completions {
            return;
        }
        let block = serde_json::json!({"type": "thinking", "thinking": "", "signature": signature});
        self.chat(
            out,
            Delta {
                thinking_blocks: vec![block],
                ..Delta::default()
            },
            None,
        );
    }

    /// The first delta of tool call `index`: its id and function name.
    pub fn tool_call_start(&mut self, out: &mut BytesMut, index: u32, id: &str, name: &str) {
        self.chat(
            out,
            Delta {
                tool_calls: vec![ToolCallDelta {
                    index,
                    id: Some(id),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(name),
                        arguments: "",
                    },
                }],
                ..Delta::default()
            },
            None,
        );
    }

    /// A fragment of tool call `index`'s JSON arguments.
    pub fn tool_call_arguments(&mut self, out: &mut BytesMut, index: u32, arguments: &str) {
        if arguments.is_empty() {
            return;
        }
        self.chat(
            out,
            Delta {
                tool_calls: vec![ToolCallDelta {
                    index,
                    id: None,
                    kind: None,
                    function: FunctionDelta {
                        name: None,
                        arguments,
                    },
                }],
                ..Delta::default()
            },
            None,
        );
    }

    /// The chunk carrying the finish reason (sent once; later calls are ignored).
    pub fn finish(&mut self, out: &mut BytesMut, reason: FinishReason) {
        self.finish_at(out, reason, None);
    }

    /// The finish chunk, naming the stop sequence that ended a chat answer when known.
    pub fn finish_at(&mut self, out: &mut BytesMut, reason: FinishReason, stop: Option<&str>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.completions {
            self.text_chunk(out, "", Some(reason));
        } else {
            self.chat_choice(out, Delta::default(), Some(reason), stop);
        }
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether [`ChunkBuilder::done`] was called: nothing may follow `[DONE]`.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Ends the stream: a finish chunk if none was sent, the usage chunk when the client asked
    /// for it (`stream_options.include_usage`), then `[DONE]`. Only the first call writes, so a
    /// provider that ends its stream explicitly (Anthropic's `message_stop`) is not closed twice
    /// when the body ends.
    pub fn done(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        if !self.finished {
            self.finish(out, FinishReason::Stop);
        }
        if self.include_usage {
            let object = if self.completions {
                "text_completion"
            } else {
                "chat.completion.chunk"
            };
            write_event(
                out,
                &ChatChunk {
                    id: &self.meta.id,
                    object,
                    created: self.meta.created,
                    model: &self.meta.model,
                    choices: Vec::new(),
                    usage: Some(self.usage),
                },
            );
        }
        write_done(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_events_frame_every_data_line() {
        let framed = |data: &str| {
            let mut out = BytesMut::new();
            write_raw_event(&mut out, data.as_bytes());
            String::from_utf8(out.to_vec()).unwrap()
        };
        assert_eq!(framed("{\"a\":1}"), "data: {\"a\":1}\n\n");
        assert_eq!(framed("one\ntwo\n"), "data: one\ndata: two\ndata: \n\n");
        assert_eq!(framed(""), "data: \n\n");
    }

    fn events(buf: &BytesMut) -> Vec<Value> {
        std::str::from_utf8(buf)
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let data = e.strip_prefix("data: ").unwrap();
                if data == "[DONE]" {
                    Value::String("[DONE]".into())
                } else {
                    serde_json::from_str(data).unwrap()
                }
            })
            .collect()
    }

    fn meta() -> ResponseMeta {
        ResponseMeta {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m".into(),
        }
    }

    #[test]
    fn first_chunk_carries_the_role_and_stream_ends_with_finish_and_done() {
        let mut b = ChunkBuilder::new(meta(), false, false);
        let mut out = BytesMut::new();
        b.text(&mut out, "Hel");
        b.text(&mut out, "lo");
        b.done(&mut out);
        let ev = events(&out);
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(ev[0]["choices"][0]["delta"]["content"], "Hel");
        assert!(ev[1]["choices"][0]["delta"].get("role").is_none());
        assert_eq!(ev[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(ev[3], "[DONE]");
        assert_eq!(ev[0]["object"], "chat.completion.chunk");
        assert_eq!(ev[0]["id"], "chatcmpl-1");
    }

    #[test]
    fn usage_chunk_only_when_asked() {
        let mut b = ChunkBuilder::new(meta(), false, true);
        b.usage = Usage::new(3, 4);
        let mut out = BytesMut::new();
        b.text(&mut out, "x");
        b.finish(&mut out, FinishReason::Length);
        b.done(&mut out);
        let ev = events(&out);
        assert_eq!(ev[1]["choices"][0]["finish_reason"], "length");
        assert_eq!(ev[2]["choices"], Value::Array(vec![]));
        assert_eq!(ev[2]["usage"]["total_tokens"], 7);
        assert_eq!(ev.len(), 4);
    }

    #[test]
    fn tool_call_deltas_have_id_type_and_arguments() {
        let mut b = ChunkBuilder::new(meta(), false, false);
        let mut out = BytesMut::new();
        b.tool_call_start(&mut out, 0, "call_1", "add");
        b.tool_call_arguments(&mut out, 0, "{\"a\":");
        b.finish(&mut out, FinishReason::ToolCalls);
        b.done(&mut out);
        let ev = events(&out);
        let tc = &ev[0]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(tc["id"], "call_1");
        assert_eq!(tc["type"], "function");
        assert_eq!(tc["function"]["name"], "add");
        assert_eq!(tc["function"]["arguments"], "");
        assert_eq!(
            ev[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":"
        );
        assert_eq!(ev[2]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(ev.len(), 4);
    }

    #[test]
    fn completions_chunks_are_text_completion_objects() {
        let mut b = ChunkBuilder::new(meta(), true, false);
        let mut out = BytesMut::new();
        b.text(&mut out, "a");
        b.done(&mut out);
        let ev = events(&out);
        assert_eq!(ev[0]["object"], "text_completion");
        assert_eq!(ev[0]["choices"][0]["text"], "a");
        assert_eq!(ev[1]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn upstream_id_replaces_ours_and_done_writes_once() {
        let mut b = ChunkBuilder::new(meta(), false, false);
        b.set_id("msg_1");
        let mut out = BytesMut::new();
        b.text(&mut out, "x");
        b.done(&mut out);
        b.done(&mut out);
        assert!(b.is_done());
        let ev = events(&out);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0]["id"], "msg_1");
        assert_eq!(ev[1]["id"], "msg_1");
        assert_eq!(ev[2], "[DONE]");
    }

    #[test]
    fn tool_arguments_become_a_json_string() {
        assert_eq!(arguments_string(&serde_json::json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(arguments_string(&Value::Null), "{}");
        assert_eq!(
            arguments_string(&Value::String("{\"b\":2}".into())),
            r#"{"b":2}"#
        );
    }

    #[test]
    fn data_urls_split_into_mime_and_payload() {
        let u = ImageUrl {
            url: "data:image/png;base64,AAAA".into(),
            detail: None,
        };
        assert_eq!(u.as_data_url(), Some(("image/png", "AAAA")));
        let u = ImageUrl {
            url: "https://x/y.png".into(),
            detail: None,
        };
        assert_eq!(u.as_data_url(), None);
    }
}
