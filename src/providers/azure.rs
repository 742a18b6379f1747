//! Azure OpenAI: OpenAI's wire format on a per-deployment URL with an `api-version` query.
//! https://learn.microsoft.com/azure/ai-services/openai/reference

use bytes::Bytes;
use serde_json::{Map, Value};

use super::openai::{self, PassthroughStream};
use super::{with_query, RequestCtx, StreamTranslate, Translate, Translated};
use crate::config::ai_proxy::{AiProxyConfig, ModelOptions, RouteType};
use crate::error::GatewayError;

pub struct Azure;

impl Translate for Azure {
    fn api_base(&self, options: &ModelOptions) -> Option<String> {
        let instance = options.azure_instance.as_deref().unwrap_or_default();
        Some(format!("https://{instance}.openai.azure.com:443"))
    }

    /// Azure's paths are per deployment: a configured `upstream_path` goes after it.
    fn preserve_path(&self, options: &ModelOptions, upstream_path: &str) -> String {
        let deployment = options.azure_deployment_id.as_deref().unwrap_or_default();
        format!(
            "/openai/deployments/{}{upstream_path}",
            super::path_segment(deployment)
        )
    }

    fn from_config(_config: &AiProxyConfig) -> Result<Self, String> {
        Ok(Azure)
    }

    fn url(&self, ctx: &RequestCtx<'_>) -> Result<String, GatewayError> {
        let o = ctx.options;
        let base = match o.upstream_url.as_deref() {
            Some(url) => url.to_string(),
            None => {
                let instance = o.azure_instance.as_deref().unwrap_or_default();
                let deployment = o.azure_deployment_id.as_deref().unwrap_or_default();
                let path = o.upstream_path.as_deref().unwrap_or(match ctx.route_type {
                    RouteType::Completions => "/completions",
                    RouteType::Embeddings => "/embeddings",
                    RouteType::Chat | RouteType::Preserve => "/chat/completions",
                });
                format!(
                    "https://{}.openai.azure.com:443/openai/deployments/{}{path}",
                    super::path_segment(instance),
                    super::path_segment(deployment),
                )
            }
        };
        // A client's own `?api-version=` wins over the configured one (Kong).
        let version = client_api_version(ctx.client_query)
            .or(o.azure_api_version.clone())
            .unwrap_or_else(|| crate::config::ai_proxy::DEFAULT_AZURE_API_VERSION.to_string());
        Ok(with_query(&base, &[("api-version", &version)]))
    }

    fn request(
        &self,
        ctx: &RequestCtx<'_>,
        body: Map<String, Value>,
    ) -> Result<Value, GatewayError> {
        Ok(openai::request(ctx, body))
    }

    fn openai_body(&self, _route_type: RouteType) -> bool {
        true
    }

    fn response(&self, ctx: &RequestCtx<'_>, body: Bytes) -> Result<Translated, String> {
        openai::response(ctx.route_type, body)
    }

    fn stream(&self, _ctx: &RequestCtx<'_>) -> Box<dyn StreamTranslate> {
        Box::new(PassthroughStream::default())
    }
}

fn client_api_version(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "api-version")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testkit::{ctx, fixture, fixture_config, fixture_json};

    fn options() -> crate::config::ai_proxy::ModelOptions {
        fixture_config("azure/chat/config.json")
            .model
            .options
            .unwrap()
    }

    #[test]
    fn url_has_deployment_and_api_version() {
        let options = options();
        let c = ctx(RouteType::Chat, "gpt-4o", false, &options);
        assert_eq!(
            Azure.url(&c).unwrap(),
            "https://myinst.openai.azure.com:443/openai/deployments/gpt4o-dep/chat/completions?api-version=2024-02-01"
        );
    }

    #[test]
    fn client_api_version_wins() {
        let options = options();
        let mut c = ctx(RouteType::Completions, "gpt-4o", false, &options);
        c.client_query = "api-version=2025-01-01&x=1";
        assert!(Azure
            .url(&c)
            .unwrap()
            .ends_with("/completions?api-version=2025-01-01"));
    }

    #[test]
    fn upstream_url_still_gets_api_version() {
        let mut options = options();
        options.upstream_url = Some("http://127.0.0.1:9/azure/chat".into());
        let c = ctx(RouteType::Chat, "gpt-4o", false, &options);
        assert_eq!(
            Azure.url(&c).unwrap(),
            "http://127.0.0.1:9/azure/chat?api-version=2024-02-01"
        );
    }

    #[test]
    fn request_and_response_follow_openai() {
        let options = options();
        let c = ctx(RouteType::Chat, "gpt-4o", false, &options);
        let client = fixture_json("azure/chat/client-request.json");
        let out = Azure
            .request(&c, client.as_object().unwrap().clone())
            .unwrap();
        assert_eq!(out, fixture_json("azure/chat/upstream-request.json"));
        let raw = fixture("azure/chat/upstream-response.json");
        assert_eq!(
            Azure.response(&c, Bytes::from(raw.clone())).unwrap().body,
            raw.as_bytes()
        );
    }
}
