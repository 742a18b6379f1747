//! The OpenAI request shapes translators read.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::response::{FinishReason, ToolCall};

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

pub(super) fn function_type() -> String {
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
