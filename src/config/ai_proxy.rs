//! The `ai-proxy` plugin's `config` block, with Kong's field names, types and defaults.
//!
//! These are the raw serde types: what a user writes. Range and cross-field rules live in
//! `validate.rs`, which reports every problem with its field path.

use serde::{Deserialize, Serialize};

use super::default_true;

/// Kong 3.13 raised the default from 8 KiB to 1 MiB; the old default rejects ordinary long chats.
pub const DEFAULT_MAX_REQUEST_BODY_SIZE: u64 = 1024 * 1024;
pub const DEFAULT_AZURE_API_VERSION: &str = "2023-05-15";

/// Kong's fourteen `route_type` values (3.11+ schema; `realtime/v1/realtime` is Kong's
/// ai-proxy-advanced only, accepted on ai-proxy too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RouteType {
    #[serde(rename = "llm/v1/chat")]
    Chat,
    #[serde(rename = "llm/v1/completions")]
    Completions,
    #[serde(rename = "llm/v1/embeddings")]
    Embeddings,
    #[serde(rename = "llm/v1/responses")]
    Responses,
    #[serde(rename = "llm/v1/files")]
    Files,
    #[serde(rename = "llm/v1/batches")]
    Batches,
    #[serde(rename = "llm/v1/assistants")]
    Assistants,
    #[serde(rename = "audio/v1/audio/speech")]
    AudioSpeech,
    #[serde(rename = "audio/v1/audio/transcriptions")]
    AudioTranscriptions,
    #[serde(rename = "audio/v1/audio/translations")]
    AudioTranslations,
    #[serde(rename = "image/v1/images/generations")]
    ImageGenerations,
    #[serde(rename = "image/v1/images/edits")]
    ImageEdits,
    #[serde(rename = "realtime/v1/realtime")]
    Realtime,
    #[serde(rename = "preserve")]
    Preserve,
}

impl RouteType {
    pub const ALL: [RouteType; 14] = [
        RouteType::Chat,
        RouteType::Completions,
        RouteType::Embeddings,
        RouteType::Responses,
        RouteType::Files,
        RouteType::Batches,
        RouteType::Assistants,
        RouteType::AudioSpeech,
        RouteType::AudioTranscriptions,
        RouteType::AudioTranslations,
        RouteType::ImageGenerations,
        RouteType::ImageEdits,
        RouteType::Realtime,
        RouteType::Preserve,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteType::Chat => "llm/v1/chat",
            RouteType::Completions => "llm/v1/completions",
            RouteType::Embeddings => "llm/v1/embeddings",
            RouteType::Responses => "llm/v1/responses",
            RouteType::Files => "llm/v1/files",
            RouteType::Batches => "llm/v1/batches",
            RouteType::Assistants => "llm/v1/assistants",
            RouteType::AudioSpeech => "audio/v1/audio/speech",
            RouteType::AudioTranscriptions => "audio/v1/audio/transcriptions",
            RouteType::AudioTranslations => "audio/v1/audio/translations",
            RouteType::ImageGenerations => "image/v1/images/generations",
            RouteType::ImageEdits => "image/v1/images/edits",
            RouteType::Realtime => "realtime/v1/realtime",
            RouteType::Preserve => "preserve",
        }
    }

    /// The OpenAI path suffix an SDK appends to its `base_url` for this route type.
    pub fn sdk_suffix(self) -> Option<&'static str> {
        match self {
            RouteType::Chat => Some("/chat/completions"),
            RouteType::Completions => Some("/completions"),
            RouteType::Embeddings => Some("/embeddings"),
            RouteType::Preserve => None,
            other => other.api_resource(),
        }
    }

    /// The OpenAI API resource path (after `/v1`) of the route types the gateway forwards in
    /// OpenAI's own API shape rather than translating as chat: `/files`, `/audio/speech`, ...
    /// The assistants family's resource is `/assistants`; its root also serves `/threads` and
    /// `/vector_stores`.
    pub fn api_resource(self) -> Option<&'static str> {
        Some(match self {
            RouteType::Responses => "/responses",
            RouteType::Files => "/files",
            RouteType::Batches => "/batches",
            RouteType::Assistants => "/assistants",
            RouteType::AudioSpeech => "/audio/speech",
            RouteType::AudioTranscriptions => "/audio/transcriptions",
            RouteType::AudioTranslations => "/audio/translations",
            RouteType::ImageGenerations => "/images/generations",
            RouteType::ImageEdits => "/images/edits",
            RouteType::Realtime => "/realtime",
            _ => return None,
        })
    }

    /// REST route types keep the client's method and the path after the route prefix (object
    /// ids, sub-resources); the others are one operation each, like chat.
    pub fn is_rest(self) -> bool {
        matches!(
            self,
            RouteType::Responses | RouteType::Files | RouteType::Batches | RouteType::Assistants
        )
    }

    /// Route types whose request is `multipart/form-data` with a file, streamed to the
    /// provider rather than read whole.
    pub fn takes_uploads(self) -> bool {
        matches!(
            self,
            RouteType::Files
                | RouteType::AudioTranscriptions
                | RouteType::AudioTranslations
                | RouteType::ImageEdits
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    Openai,
    Azure,
    Anthropic,
    Cohere,
    Mistral,
    Llama2,
    Gemini,
    Bedrock,
    Huggingface,
}

impl ProviderName {
    /// Kong's provider x route_type matrix (genai-routes.md 2.2) for the route types beyond
    /// chat, completions and embeddings, whose finer rules the provider drivers check; beyond
    /// Kong, Responses on every provider (translated to chat where the provider only chats).
    pub fn serves(self, route_type: RouteType) -> bool {
        match route_type {
            RouteType::Chat
            | RouteType::Completions
            | RouteType::Embeddings
            | RouteType::Preserve
            | RouteType::Responses => true,
            // Translated to the provider's own image models.
            RouteType::ImageGenerations | RouteType::ImageEdits
                if matches!(self, ProviderName::Gemini | ProviderName::Bedrock) =>
            {
                true
            }
            _ => self.speaks_openai_api(),
        }
    }

    /// Providers whose own API is OpenAI's, so OpenAI-API route types pass through to them.
    pub fn speaks_openai_api(self) -> bool {
        matches!(self, ProviderName::Openai | ProviderName::Azure)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderName::Openai => "openai",
            ProviderName::Azure => "azure",
            ProviderName::Anthropic => "anthropic",
            ProviderName::Cohere => "cohere",
            ProviderName::Mistral => "mistral",
            ProviderName::Llama2 => "llama2",
            ProviderName::Gemini => "gemini",
            ProviderName::Bedrock => "bedrock",
            ProviderName::Huggingface => "huggingface",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseStreaming {
    #[default]
    Allow,
    Deny,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmFormat {
    #[default]
    Openai,
    Bedrock,
    Gemini,
    Cohere,
    Huggingface,
    Anthropic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamLocation {
    Query,
    Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Llama2Format {
    Raw,
    Openai,
    Ollama,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MistralFormat {
    Openai,
    Ollama,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CohereEmbeddingInputType {
    #[default]
    Classification,
    Clustering,
    Image,
    SearchDocument,
    SearchQuery,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiProxyConfig {
    pub route_type: RouteType,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    pub model: ModelConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub response_streaming: ResponseStreaming,
    #[serde(default = "default_body_size")]
    pub max_request_body_size: u64,
    /// Whether the file set `max_request_body_size` itself: multipart uploads stream past the
    /// default limit, but a limit the operator chose still applies to them (set at load).
    #[serde(skip)]
    pub body_size_configured: bool,
    #[serde(default = "default_true")]
    pub model_name_header: bool,
    #[serde(default)]
    pub llm_format: LlmFormat,
    /// Accepted for schema compatibility (3.11+); only an analytics hint in Kong.
    #[serde(default)]
    pub genai_category: Option<String>,
    /// Our extension: request fields the provider has no equivalent for are reported
    /// (`x-ai-gateway-dropped-fields`, access log) or refused with a 400.
    #[serde(default)]
    pub dropped_fields: DroppedFields,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DroppedFields {
    #[default]
    Report,
    Reject,
}

pub(crate) fn default_body_size() -> u64 {
    DEFAULT_MAX_REQUEST_BODY_SIZE
}

/// Credentials. `Debug` is written by hand so secrets never reach a log line.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub header_name: Option<String>,
    pub header_value: Option<String>,
    pub param_name: Option<String>,
    pub param_value: Option<String>,
    pub param_location: Option<ParamLocation>,
    #[serde(default)]
    pub allow_override: bool,
    #[serde(default)]
    pub gcp_use_service_account: bool,
    pub gcp_service_account_json: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    #[serde(default)]
    pub azure_use_managed_identity: bool,
    pub azure_client_id: Option<String>,
    pub azure_client_secret: Option<String>,
    pub azure_tenant_id: Option<String>,
}

fn redact(v: &Option<String>) -> Option<&'static str> {
    v.as_ref().map(|_| "<redacted>")
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("header_name", &self.header_name)
            .field("header_value", &redact(&self.header_value))
            .field("param_name", &self.param_name)
            .field("param_value", &redact(&self.param_value))
            .field("param_location", &self.param_location)
            .field("allow_override", &self.allow_override)
            .field("gcp_use_service_account", &self.gcp_use_service_account)
            .field(
                "gcp_service_account_json",
                &redact(&self.gcp_service_account_json),
            )
            .field("aws_access_key_id", &redact(&self.aws_access_key_id))
            .field(
                "aws_secret_access_key",
                &redact(&self.aws_secret_access_key),
            )
            .field("azure_client_secret", &redact(&self.azure_client_secret))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AiProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiProxyConfig")
            .field("route_type", &self.route_type)
            .field("auth", &self.auth)
            .field("model", &self.model)
            .field("response_streaming", &self.response_streaming)
            .field("max_request_body_size", &self.max_request_body_size)
            .field("llm_format", &self.llm_format)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub provider: ProviderName,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub options: Option<ModelOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOptions {
    pub max_tokens: Option<u64>,
    pub input_cost: Option<f64>,
    pub output_cost: Option<f64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub anthropic_version: Option<String>,
    pub azure_instance: Option<String>,
    #[serde(default = "default_azure_api_version")]
    pub azure_api_version: Option<String>,
    pub azure_deployment_id: Option<String>,
    pub llama2_format: Option<Llama2Format>,
    pub mistral_format: Option<MistralFormat>,
    pub upstream_url: Option<String>,
    pub upstream_path: Option<String>,
    pub embeddings_dimensions: Option<u64>,
    #[serde(default)]
    pub gemini: Option<GeminiOptions>,
    #[serde(default)]
    pub bedrock: Option<BedrockOptions>,
    #[serde(default)]
    pub huggingface: Option<HuggingfaceOptions>,
    #[serde(default)]
    pub cohere: Option<CohereOptions>,
}

fn default_azure_api_version() -> Option<String> {
    Some(DEFAULT_AZURE_API_VERSION.to_string())
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeminiOptions {
    pub api_endpoint: Option<String>,
    pub project_id: Option<String>,
    pub location_id: Option<String>,
    pub endpoint_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BedrockOptions {
    pub aws_region: Option<String>,
    pub aws_assume_role_arn: Option<String>,
    pub aws_role_session_name: Option<String>,
    pub aws_sts_endpoint_url: Option<String>,
    #[serde(default)]
    pub embeddings_normalize: bool,
    pub performance_config_latency: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuggingfaceOptions {
    pub use_cache: Option<bool>,
    pub wait_for_model: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohereOptions {
    #[serde(default)]
    pub embedding_input_type: CohereEmbeddingInputType,
    pub wait_for_model: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    #[serde(default)]
    pub log_statistics: bool,
    #[serde(default)]
    pub log_payloads: bool,
}
