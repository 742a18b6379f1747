//! Azure OpenAI: OpenAI's wire format on a per-deployment URL with an `api-version` query.
//! https://learn.microsoft.com/azure/ai-services/openai/reference

use bytes::Bytes;
use serde_json::{Map, Value};

use super::openai::{self, PassthroughStream};
use super::{
    with_query, ApiEndpoint, DriverError, RequestCtx, Required, StreamTranslate, Translate,
    Translated,
};
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

    fn from_config(config: &AiProxyConfig) -> Result<Self, DriverError> {
        let mut required = Required::new(config);
        required.option("azure_instance", |o| o.azure_instance.as_ref());
        // Without an options block the version takes its default, which satisfies the rule;
        // only an explicit `azure_api_version: null` can break it.
        let options = config.model.options.as_ref();
        if options.is_some_and(|o| o.azure_api_version.is_none()) {
            required.missing("azure_api_version");
        }
        required.option("azure_deployment_id", |o| o.azure_deployment_id.as_ref());
        required.finish(Some(Azure))
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
                    _ => "/chat/completions",
                });
                format!(
                    "https://{}.openai.azure.com:443/openai/deployments/{}{path}",
                    super::path_segment(instance),
                    super::path_segment(deployment),
                )
            }
        };
        Ok(with_query(&base, &[("api-version", &api_version(ctx))]))
    }

    fn supports(&self, _route_type: RouteType) -> bool {
        true
    }

    /// Azure's own layout: audio and images under the deployment, files, batches and the
    /// assistants family at resource level, Responses on the v1 API (which takes no
    /// `api-version`), realtime with the deployment in the query.
    fn api_endpoint(&self, ctx: &RequestCtx<'_>) -> Option<ApiEndpoint> {
        let o = ctx.options;
        let host = format!(
            "https://{}.openai.azure.com:443/openai",
            super::path_segment(o.azure_instance.as_deref().unwrap_or_default())
        );
        let deployment = o.azure_deployment_id.as_deref().unwrap_or_default();
        let root = match ctx.route_type {
            RouteType::Responses => format!("{host}/v1"),
            RouteType::AudioSpeech
            | RouteType::AudioTranscriptions
            | RouteType::AudioTranslations
            | RouteType::ImageGenerations
            | RouteType::ImageEdits => {
                format!("{host}/deployments/{}", super::path_segment(deployment))
            }
            _ => host,
        };
        let base = ApiEndpoint::base(ctx, &root);
        let path = url::Url::parse(&base)
            .map(|u| u.path().to_string())
            .unwrap_or_default();
        let mut query = Vec::new();
        if !(path.contains("/openai/v1/") || path.ends_with("/openai/v1")) {
            query.push(("api-version", api_version(ctx)));
        }
        if ctx.route_type == RouteType::Realtime {
            query.push(("deployment", deployment.to_string()));
        }
        Some(ApiEndpoint { base, query })
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

/// A client's own `?api-version=` wins over the configured one (Kong).
fn api_version(ctx: &RequestCtx<'_>) -> String {
    client_api_version(ctx.client_query)
        .or(ctx.options.azure_api_version.clone())
        .unwrap_or_else(|| crate::config::ai_proxy::DEFAULT_AZURE_API_VERSION.to_string())
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
    fn api_routes_follow_azures_layout() {
        let options = options();
        let url = |route_type: RouteType| {
            let c = ctx(route_type, "gpt-4o", false, &options);
            let e = Azure.api_endpoint(&c).unwrap();
            let q: Vec<(&str, &str)> = e.query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            with_query(&e.base, &q)
        };
        let host = "https://myinst.openai.azure.com:443/openai";
        let v = "api-version=2024-02-01";
        assert_eq!(url(RouteType::Files), format!("{host}/files?{v}"));
        assert_eq!(url(RouteType::Batches), format!("{host}/batches?{v}"));
        assert_eq!(url(RouteType::Assistants), format!("{host}?{v}"));
        assert_eq!(url(RouteType::Responses), format!("{host}/v1/responses"));
        assert_eq!(
            url(RouteType::AudioTranscriptions),
            format!("{host}/deployments/gpt4o-dep/audio/transcriptions?{v}")
        );
        assert_eq!(
            url(RouteType::ImageEdits),
            format!("{host}/deployments/gpt4o-dep/images/edits?{v}")
        );
        assert_eq!(
            url(RouteType::Realtime),
            format!("{host}/realtime?{v}&deployment=gpt4o-dep")
        );
        let mut options = options.clone();
        options.upstream_url = Some("http://127.0.0.1:9/openai/assistants".into());
        let c = ctx(RouteType::Assistants, "gpt-4o", false, &options);
        assert_eq!(
            Azure.api_endpoint(&c).unwrap().base,
            "http://127.0.0.1:9/openai"
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
