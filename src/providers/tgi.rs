//! Hugging Face Text Generation Inference (TGI), the server behind llama2's `raw` format and
//! Hugging Face's completions route: its finish reasons, and the token events of its
//! `generate_stream` (`{"token": {"text", "special"}, "details": {...}}`, `details` on the
//! last event only), read here once for both.
//! https://huggingface.github.io/text-generation-inference/#/Text%20Generation%20Inference/generate_stream

use bytes::BytesMut;
use serde::Deserialize;

use super::oai::{ChunkBuilder, FinishReason, Usage};

/// TGI's finish reasons: OpenAI's values plus its own (`eos_token`, `stop_sequence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    Stop,
    EosToken,
    StopSequence,
    Length,
    ToolCalls,
    ContentFilter,
    #[serde(other)]
    Unknown,
}

impl Finish {
    pub fn openai(self, has_tool_calls: bool) -> FinishReason {
        match self {
            _ if has_tool_calls => FinishReason::ToolCalls,
            Finish::Length => FinishReason::Length,
            Finish::ContentFilter => FinishReason::ContentFilter,
            Finish::ToolCalls => FinishReason::ToolCalls,
            _ => FinishReason::Stop,
        }
    }
}

/// The generation summary: on the last stream event, and in a `generate` answer.
#[derive(Debug, Deserialize)]
pub struct Details {
    #[serde(default)]
    pub finish_reason: Option<Finish>,
    #[serde(default)]
    pub generated_tokens: u64,
}

#[derive(Debug, Deserialize)]
pub struct Token {
    #[serde(default)]
    pub text: String,
    /// `</s>` and the like: not text the client should see.
    #[serde(default)]
    pub special: bool,
}

/// The token part of one `generate_stream` event.
#[derive(Debug, Deserialize)]
pub struct TokenEvent {
    #[serde(default)]
    pub token: Option<Token>,
    #[serde(default)]
    pub details: Option<Details>,
}

impl TokenEvent {
    /// A non-special token becomes text; the last event's details give the generated-token
    /// count (TGI reports no prompt count here) and the finish reason.
    pub fn translate(self, chunks: &mut ChunkBuilder, out: &mut BytesMut) {
        if let Some(token) = self.token.filter(|t| !t.special) {
            chunks.text(out, &token.text);
        }
        if let Some(d) = self.details {
            chunks.usage = Usage::new(chunks.usage.prompt_tokens, d.generated_tokens);
            let reason = d.finish_reason.unwrap_or(Finish::Stop).openai(false);
            chunks.finish(out, reason);
        }
    }
}
