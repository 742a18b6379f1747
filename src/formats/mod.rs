//! Client formats other than OpenAI's (`llm_format`): how a request in a provider's own API
//! is read, and how the answer is written back in it.

pub mod anthropic;
pub mod native;
pub mod reencode;
pub mod responses;

use crate::config::ai_proxy::{LlmFormat, ProviderName};

/// How a route's clients speak, decided once per route from `llm_format` and the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFormat {
    /// The OpenAI API (the default): translated to the provider and back.
    OpenAi,
    /// Anthropic Messages translated to another provider and back.
    AnthropicTranslated,
    /// The OpenAI Responses API on a provider that only chats: translated to chat and back.
    ResponsesTranslated,
    /// The provider's own API, passed through with auth, host and analytics.
    Native,
}

impl ClientFormat {
    pub fn of(format: LlmFormat, provider: ProviderName) -> ClientFormat {
        match format {
            LlmFormat::Openai => ClientFormat::OpenAi,
            LlmFormat::Anthropic if provider != ProviderName::Anthropic => {
                ClientFormat::AnthropicTranslated
            }
            _ => ClientFormat::Native,
        }
    }
}
