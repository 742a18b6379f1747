//! The response rules, the pure counterpart of [`super::request`]: what the stream actor does
//! with a streamed answer, and the client's status, content type, cache control, model header,
//! pass-through rules and error mapping for every answer. No I/O: the route actor only carries
//! the messages.

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use bytes::Bytes;

use super::compile::CompiledRoute;
use super::request::Resolved;
use crate::actors::messages::{AccessInfo, ProxyReply, ReplyBody, StreamPlan, UpstreamReply};
use crate::config::ai_proxy::RouteType;
use crate::error::GatewayError;
use crate::formats::anthropic::{self, stream::AnthropicEvents};
use crate::formats::native::{self, NativeStream};
use crate::formats::responses::{self, stream::ResponsesEvents};
use crate::formats::ClientFormat;
use crate::providers::oai::Usage;

pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const X_KONG_LLM_MODEL: &str = "x-kong-llm-model";

pub(crate) mod api;
/// The answer's cost from the target's `input_cost` / `output_cost` (buffered answers).
const X_COST: &str = "x-ai-gateway-cost";
/// Names every request field the provider has no equivalent for (lossless or loud).
const X_DROPPED_FIELDS: &str = "x-ai-gateway-dropped-fields";

/// The one place that decides whether the provider's answer reaches the client as the provider
/// sent it: `preserve` routes and native formats (`llm_format`) pass through, every other route
/// is translated.
fn passes_through(resolved: &Resolved) -> bool {
    resolved.route_type == RouteType::Preserve || resolved.format == ClientFormat::Native
}

/// The Anthropic message id of a translated answer.
pub(crate) fn anthropic_id(request_id: &str) -> String {
    format!("msg_{request_id}")
}

/// What the stream actor does with a streamed 200.
pub(crate) fn stream_plan(target: &CompiledRoute, resolved: &Resolved) -> StreamPlan {
    if resolved.route_type == RouteType::Preserve {
        return StreamPlan::PassthroughIfStreamed;
    }
    if !resolved.stream {
        return StreamPlan::None;
    }
    if resolved.format == ClientFormat::Native {
        let sse = resolved.client_query.contains("alt=sse");
        return StreamPlan::Translate(Box::new(NativeStream::new(target.provider, sse)));
    }
    let inner = target.driver.stream(&resolved.ctx());
    StreamPlan::Translate(match resolved.format {
        ClientFormat::AnthropicTranslated => Box::new(AnthropicEvents::new(
            inner,
            anthropic_id(&resolved.request_id),
            resolved.model.clone(),
            resolved.input_estimate,
        )),
        ClientFormat::ResponsesTranslated => {
            Box::new(ResponsesEvents::new(inner, responses_meta(resolved)))
        }
        _ => inner,
    })
}

fn responses_meta(resolved: &Resolved) -> responses::response::Meta<'_> {
    responses::response::Meta {
        request_id: &resolved.request_id,
        model: &resolved.model,
        created: resolved.created,
        echo: &resolved.responses_echo,
    }
}

/// The client's reply for the provider's answer. A buffered answer is translated here (or
/// passed through); a stream's body is already translated by its stream actor.
pub(crate) fn reply(
    target: &CompiledRoute,
    resolved: &Resolved,
    model_header: Option<HeaderValue>,
    upstream: UpstreamReply,
    access: AccessInfo,
) -> Result<ProxyReply, GatewayError> {
    let UpstreamReply {
        status,
        content_type,
        relayed,
        body,
        latency,
    } = upstream;
    let mut headers = relayed;
    if let Some(value) = model_header {
        headers.push((HeaderName::from_static(X_KONG_LLM_MODEL), value));
    }
    if !resolved.dropped.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&resolved.dropped.join(", ")) {
            headers.push((HeaderName::from_static(X_DROPPED_FIELDS), value));
        }
    }
    let passthrough = passes_through(resolved);
    let body = match body {
        ReplyBody::Stream(rx) => {
            let ct = match content_type {
                Some(ct) if passthrough => ct,
                _ => EVENT_STREAM,
            };
            headers.push((header::CONTENT_TYPE, ct));
            headers.push((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")));
            return Ok(ProxyReply {
                status,
                headers,
                body: ReplyBody::Stream(rx),
                access: None,
            });
        }
        ReplyBody::Full(body) => body,
    };
    let (body, usage) = if passthrough {
        headers.push((header::CONTENT_TYPE, content_type.unwrap_or(JSON)));
        // Native answers are untouched; only their usage is read for the log.
        let usage = match resolved.format {
            ClientFormat::Native if status == StatusCode::OK => native::usage(&body),
            _ => Usage::default(),
        };
        (body, usage)
    } else if status == StatusCode::OK {
        headers.push((header::CONTENT_TYPE, JSON));
        let (body, usage) = translate(target, resolved, body)?;
        if let Some(cost) = target.cost(usage) {
            if let Ok(value) = HeaderValue::from_str(&cost.to_string()) {
                headers.push((HeaderName::from_static(X_COST), value));
            }
        }
        (body, usage)
    } else {
        headers.push((header::CONTENT_TYPE, JSON));
        (error_body(target, resolved, status, body), Usage::default())
    };
    Ok(ProxyReply {
        status,
        headers,
        body: ReplyBody::Full(body),
        access: Some((access, usage, latency)),
    })
}

/// A provider 200 in the client's format, with its token counts.
fn translate(
    target: &CompiledRoute,
    resolved: &Resolved,
    body: Bytes,
) -> Result<(Bytes, Usage), GatewayError> {
    #[cfg(test)]
    crate::panic_guard::hook("response", &resolved.model);
    let failed = |reason| GatewayError::Transformation {
        provider: target.provider.as_str(),
        route_type: resolved.route_type.as_str(),
        reason,
    };
    let translated = target
        .driver
        .response(&resolved.ctx(), body)
        .map_err(failed)?;
    let body = match resolved.format {
        ClientFormat::AnthropicTranslated => anthropic::response::from_openai(
            &translated.body,
            &anthropic_id(&resolved.request_id),
            &resolved.model,
        )
        .map_err(failed)?,
        ClientFormat::ResponsesTranslated => {
            responses::response::from_chat(&translated.body, &responses_meta(resolved))
                .map_err(failed)?
        }
        _ => translated.body,
    };
    Ok((body, translated.usage))
}

/// A provider error in the client's format: JSON bodies as the provider sent them, anything
/// else wrapped (the driver's rule), then in Anthropic's shape for Anthropic clients.
fn error_body(
    target: &CompiledRoute,
    resolved: &Resolved,
    status: StatusCode,
    body: Bytes,
) -> Bytes {
    let body = target.driver.error(status, body);
    if resolved.format == ClientFormat::AnthropicTranslated {
        anthropic::response::error_body(status.as_u16(), &body)
    } else {
        body
    }
}

#[cfg(test)]
mod tests;
