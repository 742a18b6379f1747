//! Mistral: the hosted API speaks OpenAI's format; self-hosted models often sit behind Ollama.
//! `mistral_format` picks which.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::ollama::{self, OllamaStream};
use super::openai::{self, PassthroughStream};
use super::{
    endpoint_url, self_hosted_url, DriverError, RequestCtx, Required, StreamTranslate, Translate,
    Translated,
};
use crate::config::ai_proxy::{AiProxyConfig, MistralFormat, ModelOptions, RouteType};
use crate::error::GatewayError;

pub const DEFAULT_BASE: &str = "https://api.mistral.ai:443";

pub struct Mistral {
    format: MistralFormat,
}

impl Translate for Mistral {
    fn api_base(&self, _options: &ModelOptions) -> Option<String> {
        Some(DEFAULT_BASE.to_string())
    }

    fn from_config(config: &AiProxyConfig) -> Result<Self, DriverError> {
        let mut required = Required::new(config);
        let format = required.option("mistral_format", |o| o.mistral_format);
        Ok(Mistral {
            format: required.finish(format)?,
        })
    }

    fn url(&self, ctx: &RequestCtx<'_>) -> Result<String, GatewayError> {
        match self.format {
            MistralFormat::Openai => Ok(endpoint_url(
                ctx,
                DEFAULT_BASE,
                openai::route_path(ctx.route_type),
            )),
            MistralFormat::Ollama => self_hosted_url(ctx),
        }
    }

    fn request(
        &self,
        ctx: &RequestCtx<'_>,
        body: Map<String, Value>,
    ) -> Result<Value, GatewayError> {
        match self.format {
            MistralFormat::Openai => Ok(openai::request(ctx, body)),
            MistralFormat::Ollama => ollama::request(ctx, body),
        }
    }

    fn openai_body(&self, _route_type: RouteType) -> bool {
        self.format == MistralFormat::Openai
    }

    fn response(&self, ctx: &RequestCtx<'_>, body: Bytes) -> Result<Translated, String> {
        match self.format {
            MistralFormat::Openai => openai::response(ctx.route_type, body),
            MistralFormat::Ollama => ollama::response(ctx, body),
        }
    }

    fn stream(&self, ctx: &RequestCtx<'_>) -> Box<dyn StreamTranslate> {
        match self.format {
            MistralFormat::Openai => Box::new(PassthroughStream::default()),
            MistralFormat::Ollama => Box::new(OllamaStream::new(ctx)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ai_proxy::RouteType;
    use crate::providers::testkit::{ctx, fixture_config, fixture_json};

    #[test]
    fn openai_format_goes_to_mistral_and_drops_top_k() {
        let config = fixture_config("mistral/openai-chat/config.json");
        let m = Mistral::from_config(&config).unwrap();
        let options = config.model.options.clone().unwrap();
        let model = config.model.name.clone().unwrap();
        let c = ctx(RouteType::Chat, &model, false, &options);
        assert_eq!(
            m.url(&c).unwrap(),
            "https://api.mistral.ai:443/v1/chat/completions"
        );
        let mut body = fixture_json("mistral/openai-chat/client-request.json")
            .as_object()
            .unwrap()
            .clone();
        // The pipeline merges config options first; top_k must then be dropped.
        if let Some(k) = options.top_k {
            body.insert("top_k".into(), k.into());
        }
        if let Some(t) = options.temperature {
            body.insert("temperature".into(), t.into());
        }
        if let Some(t) = options.max_tokens {
            body.insert("max_tokens".into(), t.into());
        }
        let out = m.request(&c, body).unwrap();
        assert_eq!(
            out,
            fixture_json("mistral/openai-chat/upstream-request.json")
        );
    }

    #[test]
    fn missing_format_is_a_config_error() {
        let config: AiProxyConfig = serde_json::from_value(serde_json::json!({
            "route_type": "llm/v1/chat",
            "model": {"provider": "mistral", "name": "m"}
        }))
        .unwrap();
        assert!(Mistral::from_config(&config).is_err());
    }
}
