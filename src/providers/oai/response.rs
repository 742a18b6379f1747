//! The OpenAI response shapes translators write.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::request::function_type;

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

impl ChatChoice {
    /// A choice with the assistant's content and tool calls (no reasoning, log probabilities
    /// or stop sequence).
    pub fn new(
        index: u32,
        content: Option<String>,
        tool_calls: Vec<ToolCall>,
        finish_reason: Option<FinishReason>,
    ) -> Self {
        ChatChoice {
            index,
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
        }
    }
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
            choices: vec![ChatChoice::new(0, content, tool_calls, finish_reason)],
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
