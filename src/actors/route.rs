//! `RouteActor`: one per AI route per worker. It owns the route's compiled plugin (an `Arc` of
//! the config generation it was started with, so requests it accepted finish on that config
//! even after a reload), applies Kong's request rules, sends the upstream call through the
//! worker's `ProviderActor`, and translates a buffered answer.

use std::sync::Arc;

use actix::{Actor, Addr, Context, Handler, ResponseFuture};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::ResponseError;

use super::messages::{
    AccessInfo, Exchange, Proxy, ProxyReply, ReplyBody, StreamPlan, UpstreamReply,
};
use super::provider::ProviderActor;
use crate::config::ai_proxy::RouteType;
use crate::error::GatewayError;
use crate::formats::anthropic::{self, stream::AnthropicEvents};
use crate::formats::ClientFormat;
use crate::providers::oai::Usage;
use crate::proxy::compile::CompiledRoute;
use crate::proxy::request::{prepare, Plan, Prepared};

pub struct RouteActor {
    route: Arc<CompiledRoute>,
    route_name: Arc<str>,
    provider: Addr<ProviderActor>,
}

impl RouteActor {
    pub fn new(route: Arc<CompiledRoute>, provider: Addr<ProviderActor>) -> Self {
        RouteActor {
            route_name: Arc::from(route.name.as_str()),
            route,
            provider,
        }
    }
}

impl Actor for RouteActor {
    type Context = Context<Self>;
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const X_KONG_LLM_MODEL: &str = "x-kong-llm-model";
/// Names every request field the provider has no equivalent for (lossless or loud).
const X_DROPPED_FIELDS: &str = "x-ai-gateway-dropped-fields";

/// The Anthropic message id of a translated answer.
fn anthropic_id(request_id: &str) -> String {
    format!("msg_{request_id}")
}

impl Handler<Proxy> for RouteActor {
    type Result = ResponseFuture<Result<ProxyReply, GatewayError>>;

    fn handle(&mut self, msg: Proxy, _ctx: &mut Context<Self>) -> Self::Result {
        if self.route.client_format != ClientFormat::AnthropicTranslated {
            return self.proxy(msg);
        }
        // The gateway's own errors, in the shape the client's SDK reads.
        let access = self.access(msg.request_id.clone(), msg.started, String::new());
        let reply = self.proxy(msg);
        Box::pin(async move {
            match reply.await {
                Err(e) if !matches!(e, GatewayError::ClientGone) => {
                    let status = e.status_code();
                    let body =
                        anthropic::response::error_body(status.as_u16(), e.body().as_bytes());
                    Ok(ProxyReply {
                        status,
                        headers: vec![(header::CONTENT_TYPE, JSON)],
                        body: ReplyBody::Full(body),
                        access: Some((access, Usage::default(), std::time::Duration::ZERO)),
                    })
                }
                other => other,
            }
        })
    }
}

impl RouteActor {
    fn access(&self, request_id: String, started: std::time::Instant, model: String) -> AccessInfo {
        AccessInfo {
            request_id,
            route: self.route_name.clone(),
            provider: self.route.provider.as_str(),
            model,
            started,
        }
    }

    fn proxy(&mut self, msg: Proxy) -> ResponseFuture<Result<ProxyReply, GatewayError>> {
        let route = self.route.clone();
        let Proxy {
            client,
            body,
            request_id,
            started,
            cancel,
        } = msg;
        let prepared = match prepare(&route, &client, body, request_id.clone(), unix_now()) {
            Ok(Plan::Upstream(p)) => p,
            Ok(Plan::Answer(body)) => {
                let reply = ProxyReply {
                    status: StatusCode::OK,
                    headers: vec![(header::CONTENT_TYPE, JSON)],
                    body: ReplyBody::Full(body),
                    access: Some((
                        self.access(request_id, started, String::new()),
                        Usage::default(),
                        std::time::Duration::ZERO,
                    )),
                };
                return Box::pin(std::future::ready(Ok(reply)));
            }
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let Prepared {
            upstream,
            resolved,
            model_header,
        } = prepared;
        let access = self.access(request_id, started, resolved.model.clone());
        let stream = if resolved.route_type == RouteType::Preserve {
            StreamPlan::PassthroughIfStreamed
        } else if resolved.stream {
            let inner = route.driver.stream(&resolved.ctx());
            StreamPlan::Translate(match resolved.format {
                ClientFormat::AnthropicTranslated => Box::new(AnthropicEvents::new(
                    inner,
                    anthropic_id(&resolved.request_id),
                    resolved.model.clone(),
                    resolved.input_estimate,
                )),
                _ => inner,
            })
        } else {
            StreamPlan::None
        };
        let exchange = Exchange {
            request: upstream,
            timeouts: route.timeouts,
            stream,
            token: route.driver.token_source(),
            cancel,
            access: access.clone(),
        };
        let provider = self.provider.clone();
        Box::pin(async move {
            let reply = provider.send(exchange).await.map_err(|e| {
                GatewayError::Internal(format!("provider actor unavailable: {e}"))
            })??;
            let UpstreamReply {
                status,
                content_type,
                relayed,
                body,
                latency,
            } = reply;
            let mut headers = relayed;
            if let Some(value) = model_header {
                headers.push((header::HeaderName::from_static(X_KONG_LLM_MODEL), value));
            }
            if !resolved.dropped.is_empty() {
                if let Ok(value) = HeaderValue::from_str(&resolved.dropped.join(", ")) {
                    headers.push((header::HeaderName::from_static(X_DROPPED_FIELDS), value));
                }
            }
            let anthropic = resolved.format == ClientFormat::AnthropicTranslated;
            let body = match body {
                ReplyBody::Stream(rx) => {
                    let ct = match resolved.route_type {
                        RouteType::Preserve => content_type.unwrap_or(EVENT_STREAM),
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
            let (body, usage) = if resolved.route_type == RouteType::Preserve {
                headers.push((header::CONTENT_TYPE, content_type.unwrap_or(JSON)));
                (body, Usage::default())
            } else if status == StatusCode::OK {
                let translated =
                    route
                        .driver
                        .response(&resolved.ctx(), body)
                        .map_err(|reason| GatewayError::Transformation {
                            provider: route.provider.as_str(),
                            route_type: resolved.route_type.as_str(),
                            reason,
                        })?;
                let body = if anthropic {
                    anthropic::response::from_openai(
                        &translated.body,
                        &anthropic_id(&resolved.request_id),
                        &resolved.model,
                    )
                    .map_err(|reason| GatewayError::Transformation {
                        provider: route.provider.as_str(),
                        route_type: resolved.route_type.as_str(),
                        reason,
                    })?
                } else {
                    translated.body
                };
                headers.push((header::CONTENT_TYPE, JSON));
                (body, translated.usage)
            } else {
                headers.push((header::CONTENT_TYPE, JSON));
                let body = route.driver.error(status, body);
                let body = if anthropic {
                    anthropic::response::error_body(status.as_u16(), &body)
                } else {
                    body
                };
                (body, Usage::default())
            };
            Ok(ProxyReply {
                status,
                headers,
                body: ReplyBody::Full(body),
                access: Some((access, usage, latency)),
            })
        })
    }
}
