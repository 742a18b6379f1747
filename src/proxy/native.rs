//! Kong's native-format rule (`llm_format` = the provider's own API): the client's request
//! goes to the provider's host for the operation its path names, with the gateway's
//! credentials (Bedrock re-signed with SigV4, Vertex with its OAuth token) and the model the
//! route decides (config wins, else the path's, else the body's); the body is forwarded
//! untouched except for the model when the config replaces it.

use std::sync::Arc;

use actix_web::http::header::{HeaderMap, HeaderName};
use bytes::Bytes;
use serde_json::{Map, Value};

use super::compile::CompiledRoute;
use super::request::{
    bad, check_model_name, passthrough_request, preserve_base, ClientRequest, Prepared, Resolved,
};
use crate::config::ai_proxy::{ModelOptions, ProviderName, ResponseStreaming};
use crate::error::GatewayError;
use crate::formats::native::{self, NativeCall};
use crate::formats::ClientFormat;
use crate::providers::gemini::{model_id, vertex_target};
use crate::providers::path_segment;

/// Builds the upstream request for a native-format client request.
pub fn prepare_native(
    route: &CompiledRoute,
    client: &ClientRequest,
    body: Bytes,
    configured_model: Option<String>,
    options: Arc<ModelOptions>,
    request_id: String,
    created: u64,
) -> Result<Prepared, GatewayError> {
    let provider = route.provider;
    let call = native::parse(provider, &client.path).ok_or_else(|| {
        bad(format!(
            "this route speaks the {} API natively: POST {}",
            provider.as_str(),
            native::supported(provider)
        ))
    })?;
    let parsed: Option<Map<String, Value>> = serde_json::from_slice(&body).ok();
    let body_model = parsed
        .as_ref()
        .and_then(|m| m.get("model"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_string);
    let model = configured_model
        .clone()
        .or_else(|| call.model.clone())
        .or_else(|| body_model.clone())
        .unwrap_or_default();
    check_model_name(&model)?;
    if model.is_empty() && call.model.is_none() && path_needs_model(provider, &call) {
        return Err(bad(
            "model parameter not found in request, nor in gateway configuration",
        ));
    }
    let stream = call.stream
        || (provider == ProviderName::Anthropic
            && parsed
                .as_ref()
                .and_then(|m| m.get("stream"))
                .and_then(Value::as_bool)
                == Some(true));
    if stream && route.config.response_streaming == ResponseStreaming::Deny {
        return Err(bad("response streaming is not enabled for this LLM"));
    }
    // Config wins over the model a body names (Anthropic, Cohere); paths are rebuilt below.
    let body = match (&configured_model, parsed) {
        (Some(conf), Some(mut map)) if body_model.as_ref().is_some_and(|m| m != conf) => {
            map.insert("model".into(), Value::String(conf.clone()));
            Bytes::from(
                serde_json::to_vec(&map).map_err(|e| GatewayError::Internal(e.to_string()))?,
            )
        }
        _ => body,
    };
    let url = format!(
        "{}{}",
        base_url(route, &call, &options)?,
        native_path(provider, &call, &model, &options)?
    );
    let resolved = Resolved {
        route_type: route.config.route_type,
        model,
        options,
        stream,
        include_usage: false,
        client_query: client.query.clone(),
        request_id,
        created,
        format: ClientFormat::Native,
        dropped: Vec::new(),
        input_estimate: 0,
        responses_echo: serde_json::Map::new(),
    };
    let client_headers = client_credentials_removed(&client.headers);
    passthrough_request(route, client, &client_headers, resolved, url, body)
}

fn path_needs_model(provider: ProviderName, call: &NativeCall) -> bool {
    match provider {
        ProviderName::Gemini => true,
        ProviderName::Bedrock => call.operation != "rerank",
        _ => false,
    }
}

/// The client's own credentials never travel on: the gateway's replace them (an AWS
/// signature from the client's keys included; the route re-signs with its own).
fn client_credentials_removed(client: &HeaderMap) -> HeaderMap {
    let mut kept = client.clone();
    let foreign: Vec<HeaderName> = client
        .keys()
        .filter(|n| {
            let n = n.as_str();
            super::request::CREDENTIAL_HEADERS.contains(&n) || n.starts_with("x-amz-")
        })
        .cloned()
        .collect();
    for name in foreign {
        kept.remove(name);
    }
    kept
}

/// Scheme and authority: the configured `upstream_url`'s, else the provider's API host for
/// the operation (Vertex's regional endpoint, Bedrock's agent runtime for rerank).
fn base_url(
    route: &CompiledRoute,
    call: &NativeCall,
    options: &ModelOptions,
) -> Result<String, GatewayError> {
    let provider = route.provider;
    if options.upstream_url.is_none() {
        if let Some(vertex) = vertex_target(options)? {
            return Ok(format!("https://{}", vertex.host));
        }
        if provider == ProviderName::Bedrock && call.operation == "rerank" {
            let base = preserve_base(route, options)
                .ok_or_else(|| GatewayError::Identity("region not specified".into()))?;
            return Ok(base.replacen("bedrock-runtime.", "bedrock-agent-runtime.", 1));
        }
    }
    preserve_base(route, options).ok_or_else(|| match provider {
        ProviderName::Bedrock => GatewayError::Identity("region not specified".into()),
        _ => bad("must set 'model.options.upstream_url' for self-hosted providers/models"),
    })
}

/// The provider's path for the operation, with the route's model spliced in (escaped).
fn native_path(
    provider: ProviderName,
    call: &NativeCall,
    model: &str,
    options: &ModelOptions,
) -> Result<String, GatewayError> {
    let model_segment = path_segment(model_id(model));
    Ok(match provider {
        ProviderName::Gemini => match vertex_target(options)? {
            Some(v) => format!(
                "/v1/projects/{}/locations/{}/publishers/google/models/{model_segment}:{}",
                path_segment(v.project),
                path_segment(v.location),
                call.operation
            ),
            None => format!(
                "/{}/models/{model_segment}:{}",
                call.version.as_deref().unwrap_or("v1beta"),
                call.operation
            ),
        },
        ProviderName::Bedrock if call.operation == "rerank" => "/rerank".to_string(),
        ProviderName::Bedrock => format!("/model/{model_segment}/{}", call.operation),
        ProviderName::Cohere => format!("/{}/rerank", call.version.as_deref().unwrap_or("v2")),
        ProviderName::Huggingface if options.upstream_url.is_none() => {
            format!("/models/{model_segment}/{}", call.operation)
        }
        ProviderName::Huggingface => format!("/{}", call.operation),
        ProviderName::Anthropic if call.operation == "count_tokens" => {
            "/v1/messages/count_tokens".to_string()
        }
        _ => "/v1/messages".to_string(),
    })
}
