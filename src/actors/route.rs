//! `RouteActor`: one per AI route per worker. It owns the route's compiled plugin (an `Arc` of
//! the config generation it was started with, so requests it accepted finish on that config
//! even after a reload), applies Kong's request rules, sends the upstream call through the
//! worker's `ProviderActor`, and translates a buffered answer.

use std::sync::Arc;

use actix::{Actor, Addr, Context, Handler, ResponseFuture};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;

use super::messages::{
    AccessInfo, Exchange, Proxy, ProxyReply, ReplyBody, StreamPlan, UpstreamReply,
};
use super::provider::ProviderActor;
use crate::config::ai_proxy::RouteType;
use crate::error::GatewayError;
use crate::providers::oai::Usage;
use crate::proxy::compile::CompiledRoute;
use crate::proxy::request::{prepare, Prepared};

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

impl Handler<Proxy> for RouteActor {
    type Result = ResponseFuture<Result<ProxyReply, GatewayError>>;

    fn handle(&mut self, msg: Proxy, _ctx: &mut Context<Self>) -> Self::Result {
        let route = self.route.clone();
        let Proxy {
            client,
            body,
            request_id,
            started,
            cancel,
        } = msg;
        let prepared = match prepare(&route, &client, body, request_id.clone(), unix_now()) {
            Ok(p) => p,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let Prepared {
            upstream,
            resolved,
            model_header,
        } = prepared;
        let access = AccessInfo {
            request_id,
            route: self.route_name.clone(),
            provider: route.provider.as_str(),
            model: resolved.model.clone(),
            started,
        };
        let stream = if resolved.route_type == RouteType::Preserve {
            StreamPlan::PassthroughIfStreamed
        } else if resolved.stream {
            StreamPlan::Translate(route.driver.stream(&resolved.ctx()))
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
                headers.push((header::CONTENT_TYPE, JSON));
                (translated.body, translated.usage)
            } else {
                headers.push((header::CONTENT_TYPE, JSON));
                (route.driver.error(status, body), Usage::default())
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
