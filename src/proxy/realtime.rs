//! The upstream side of a realtime session: Kong's rules applied to a WebSocket upgrade. The
//! model comes from the configuration or the client's `model` query (the configured one wins,
//! a different one is refused), auth is injected, and the client's headers (`OpenAI-Beta`
//! among them) are forwarded minus the handshake's own, which the gateway's client makes anew.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::Method;

use super::api::{resolved, upstream_url};
use super::compile::CompiledRoute;
use super::request::{
    add_driver_headers, bad, check_model_name, forwarded_headers, model_header, resolve_templates,
    ClientRequest,
};
use crate::error::GatewayError;

/// Where and how to open the upstream WebSocket.
pub struct RealtimeUpstream {
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub model: String,
    pub model_header: Option<HeaderValue>,
}

/// Whether the client asks for a WebSocket upgrade.
pub fn is_upgrade(client: &ClientRequest) -> bool {
    client.method == Method::GET
        && client
            .headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

pub fn prepare_realtime(
    route: &CompiledRoute,
    client: &ClientRequest,
    request_id: Arc<str>,
    created: u64,
) -> Result<RealtimeUpstream, GatewayError> {
    if !is_upgrade(client) {
        return Err(bad(
            "realtime routes take a WebSocket upgrade (GET with 'Upgrade: websocket')",
        ));
    }
    let (configured, options) = resolve_templates(route, client)?;
    let requested = url::form_urlencoded::parse(client.query.as_bytes())
        .find(|(k, _)| k == "model")
        .map(|(_, v)| v.into_owned())
        .filter(|m| !m.is_empty());
    let model = match (configured, requested) {
        (Some(conf), Some(req)) if conf != req => {
            return Err(bad(format!("cannot use own model - must be: {conf}")))
        }
        (Some(model), _) | (None, Some(model)) => model,
        (None, None) => {
            return Err(bad(
                "model parameter not found in request, nor in gateway configuration",
            ))
        }
    };
    check_model_name(&model)?;
    let resolved = resolved(route, client, model, options, true, request_id, created);
    // The model goes first, so a client's own `model` (equal, or refused above) is not repeated.
    let mut query = format!("model={}", crate::providers::url_escape(&resolved.model));
    for (k, v) in url::form_urlencoded::parse(client.query.as_bytes()) {
        if k != "model" {
            query.push_str(&format!(
                "&{}={}",
                crate::providers::url_escape(&k),
                crate::providers::url_escape(&v)
            ));
        }
    }
    let url = upstream_url(route, &resolved, "", &query)?;
    let mut headers = forwarded_headers(&route.auth, &client.headers);
    headers.retain(|(name, _)| !name.as_str().starts_with("sec-websocket-"));
    add_driver_headers(route, &resolved.ctx(), &mut headers);
    Ok(RealtimeUpstream {
        url,
        headers,
        model_header: model_header(route, &resolved.model),
        model: resolved.model,
    })
}
