//! The response rules of the OpenAI-API route types (responses, files, batches, assistants,
//! audio, images) on the providers that serve that API as is: status, content type and body
//! pass through; usage and the model are read from a JSON answer for the log and
//! `X-Kong-LLM-Model`.

use actix_web::http::header::{self, HeaderName, HeaderValue};

use super::{EVENT_STREAM, JSON, X_KONG_LLM_MODEL};
use crate::actors::messages::{AccessInfo, ProxyReply, ReplyBody, StreamPlan, UpstreamReply};
use crate::providers::oai::Usage;
use crate::proxy::compile::CompiledRoute;
use crate::proxy::request::model_header;
use crate::proxy::upload::UploadState;

/// A successful answer streams through untouched (SSE, audio, file downloads); a JSON answer
/// is read whole for its usage, except a file's `/content`, which streams whatever its type.
pub(crate) fn stream_plan(client_path: &str) -> StreamPlan {
    StreamPlan::Relay {
        buffer_json: !client_path.ends_with("/content"),
    }
}

/// The client's reply for the provider's answer; a provider error goes through the driver's
/// error rule as for chat.
pub(crate) fn reply(
    target: &CompiledRoute,
    mut model: Option<HeaderValue>,
    upload: Option<UploadState>,
    upstream: UpstreamReply,
    mut access: AccessInfo,
) -> ProxyReply {
    let UpstreamReply {
        status,
        content_type,
        relayed: mut headers,
        body,
        latency,
    } = upstream;
    // A multipart upload names its model in a form field, known once the field went by.
    if access.model.is_empty() {
        if let Some(name) = upload.as_ref().and_then(UploadState::model) {
            model = model_header(target, &name);
            access.model = name;
        }
    }
    let body = match body {
        ReplyBody::Stream(rx) => {
            let content_type =
                content_type.unwrap_or(HeaderValue::from_static("application/octet-stream"));
            if content_type.as_bytes().starts_with(EVENT_STREAM.as_bytes()) {
                headers.push((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")));
            }
            headers.push((header::CONTENT_TYPE, content_type));
            headers.extend(model.map(|v| (HeaderName::from_static(X_KONG_LLM_MODEL), v)));
            return ProxyReply {
                status,
                headers,
                body: ReplyBody::Stream(rx),
                access: None,
            };
        }
        ReplyBody::Full(body) => body,
    };
    let (body, usage, content_type) = if status.is_success() {
        let answer = serde_json::from_slice::<serde_json::Value>(&body).ok();
        let usage = answer
            .as_ref()
            .and_then(crate::providers::relay::usage_of)
            .unwrap_or_default();
        let answered_model = answer
            .as_ref()
            .and_then(|a| a.get("model"))
            .and_then(serde_json::Value::as_str);
        if let (true, Some(name)) = (access.model.is_empty(), answered_model) {
            model = model_header(target, name);
            access.model = name.to_string();
        }
        (body, usage, content_type.unwrap_or(JSON))
    } else {
        (target.driver.error(status, body), Usage::default(), JSON)
    };
    headers.push((header::CONTENT_TYPE, content_type));
    headers.extend(model.map(|v| (HeaderName::from_static(X_KONG_LLM_MODEL), v)));
    ProxyReply {
        status,
        headers,
        body: ReplyBody::Full(body),
        access: Some((access, usage, latency)),
    }
}
