//! The one HTTP handler: every request goes through Kong's router to its route's actor on
//! this worker; the body is read within the route's limit and the client timeout, and the
//! reply (buffered or streamed) is written back.

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::actors::limiter::Permit;
use crate::actors::messages::{AccessInfo, Proxy, ReplyBody, RequestBody};
use crate::actors::realtime;
use crate::config::ai_proxy::RouteType;
use crate::error::GatewayError;
use crate::key_auth::Identity;
use crate::logging;
use crate::providers::oai::Usage;
use crate::proxy::compile::AiRoute;
use crate::proxy::request::ClientRequest;
use crate::proxy::upload;
use crate::router::RouteMatch;
use crate::status::REQUESTS_IN_FLIGHT;
use crate::telemetry::{self, RequestSpan};
use crate::worker::WorkerState;

/// Request ids: a per-process random prefix plus a counter (cheaper than a UUID per request).
fn next_request_id() -> Arc<str> {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());
    // Written on the stack: one allocation per id (the Arc), not a String copied into it.
    let mut id = [0u8; 32];
    let mut out = std::io::Cursor::new(&mut id[..]);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    write!(out, "{prefix}{n:x}").expect("12 + 16 bytes fit");
    let len = out.position() as usize;
    Arc::from(std::str::from_utf8(&id[..len]).expect("ASCII"))
}

/// The access line's route until one matched: shared, not allocated per request.
fn unmatched_route() -> Arc<str> {
    static UNMATCHED: OnceLock<Arc<str>> = OnceLock::new();
    UNMATCHED.get_or_init(|| Arc::from("-")).clone()
}

/// One request inside the handler: counted in flight, and given its access line (499) if actix
/// drops the handler because the client went away, which would otherwise leave no line at all.
struct InFlight {
    access: AccessInfo,
    answered: bool,
}

impl InFlight {
    fn start(access: AccessInfo) -> InFlight {
        REQUESTS_IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight {
            access,
            answered: false,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        REQUESTS_IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        if !self.answered {
            let status = GatewayError::ClientGone.status_code().as_u16();
            logging::access(&self.access, status, Usage::default(), None);
        }
    }
}

/// A body that ends early means the client left mid-upload; anything else is a malformed body.
fn body_error(e: actix_web::error::PayloadError) -> GatewayError {
    match e {
        actix_web::error::PayloadError::Incomplete(_) => GatewayError::ClientGone,
        other => GatewayError::BadRequest(format!("reading the request body failed: {other}")),
    }
}

fn client_request(req: &HttpRequest, found: RouteMatch) -> ClientRequest {
    ClientRequest {
        method: req.method().clone(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        headers: req.headers().clone(),
        captures: found.captures,
        route_path_len: found.matched_len,
    }
}

fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Multipart uploads to the route types that take files stream to the provider instead of
/// being read whole, when every target of the route takes them streamed.
fn streams_upload(req: &HttpRequest, route: &AiRoute) -> bool {
    route.streams_uploads() && upload::is_multipart_post(req.method(), req.headers())
}

/// Reads the body up to the route's limit, within the client request timeout.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: Option<u64>,
    timeout: Duration,
) -> Result<Bytes, GatewayError> {
    let declared = declared_length(req);
    if let (Some(limit), Some(declared)) = (limit, declared) {
        if declared > limit {
            return Err(GatewayError::BodyTooLarge { limit });
        }
    }
    let read = async {
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(1 << 20) as usize);
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(body_error)?;
            if let Some(limit) = limit {
                if (buf.len() + chunk.len()) as u64 > limit {
                    return Err(GatewayError::BodyTooLarge { limit });
                }
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| GatewayError::ClientTimeout)?
}

/// The one handler: every path goes through Kong's router to a route actor.
pub async fn proxy(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<WorkerState>,
) -> HttpResponse {
    let started = Instant::now();
    let request_id = next_request_id();
    let mut request = InFlight::start(AccessInfo {
        request_id: request_id.clone(),
        route: unmatched_route(),
        provider: "-",
        model: String::new(),
        started,
        tried: None,
        consumer: None,
        dropped: String::new(),
        target: None,
        trace_id: None,
    });
    let mut reached_actor = false;
    let result = handle(
        &req,
        payload,
        &state,
        request_id,
        started,
        &mut request.access,
        &mut reached_actor,
    )
    .await;
    request.answered = true;
    match result {
        Ok(response) => response,
        Err(e) => {
            let response = e.error_response();
            let access = &mut request.access;
            if !reached_actor {
                // "-" until a route matched.
                let route = (&*access.route != "-").then_some(&*access.route);
                access.trace_id = telemetry::refused(
                    req.method(),
                    req.path(),
                    req.headers(),
                    route,
                    &access.request_id,
                    started,
                    &e,
                );
            }
            if !matches!(e, GatewayError::ClientGone) {
                tracing::debug!(request_id = %access.request_id, error = ?e, "request failed");
            }
            logging::access(access, response.status().as_u16(), Usage::default(), None);
            response
        }
    }
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &WorkerState,
    request_id: Arc<str>,
    started: Instant,
    access: &mut AccessInfo,
    reached_actor: &mut bool,
) -> Result<HttpResponse, GatewayError> {
    let routes = state.routes();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let found = routes
        .snapshot
        .router
        .find(req.method().as_str(), host, req.path(), |name| {
            req.headers().get(name).and_then(|v| v.to_str().ok())
        })
        .ok_or(GatewayError::NoRoute)?;
    let name = &routes.snapshot.route_names[found.route];
    access.route = name.clone();
    let (Some(actor), Some(route)) = (
        &routes.actors[found.route],
        &routes.snapshot.routes[found.route],
    ) else {
        return Err(GatewayError::NotAnAiRoute(name.to_string()));
    };
    access.provider = route.first().provider.as_str();
    access.target = Some(route.first().clone());
    let mut client = client_request(req, found);
    let target = route.first();
    // A WebSocket session and a streamed upload are not read here: their credentials come
    // from headers or the query.
    let streamed = target.route_type() == RouteType::Realtime || streams_upload(req, route);
    let (mut body, unread) = if streamed {
        (Bytes::new(), Some(payload))
    } else {
        let body = read_body(req, payload, route.body_limit, state.client_timeout).await?;
        (body, None)
    };
    let identity = match &route.key_auth {
        Some(key_auth) => key_auth.authenticate(&mut client, &mut body)?,
        None => Identity::default(),
    };
    access.consumer = identity.consumer.as_ref().map(|c| c.name.clone());
    let body = match unread {
        Some(payload) if target.route_type() == RouteType::Realtime => {
            // A session is admitted like one request, before any provider sees it, and charged
            // the usage of its `response.done` events when it ends (see RealtimeActor).
            let ticket = route.limits.as_ref().and_then(|limits| {
                limits.ticket(&identity, req.peer_addr().map(|a| a.ip()), &client, &[])
            });
            let permit = match ticket {
                Some(ticket) => Some(Permit::acquire(&state.limiter, ticket).await?),
                None => None,
            };
            // Boxed: this rare branch's future would otherwise double the size of every
            // request's handler future, which actix-web moves into a box of its own.
            let (opened, in_flight) =
                Box::pin(realtime::open(actor, route, &client, &request_id, access)).await?;
            let session = realtime::Session {
                access: access.clone(),
                permit,
                in_flight,
            };
            return realtime::serve(req, payload, opened, session);
        }
        Some(payload) => {
            let limit = target.upload_limit();
            let declared = declared_length(req);
            if let (Some(limit), Some(declared)) = (limit, declared) {
                if declared > limit {
                    return Err(GatewayError::BodyTooLarge { limit });
                }
            }
            RequestBody::Upload(upload::pump(payload, declared, limit, state.client_timeout))
        }
        None => RequestBody::Full(body),
    };
    // Dropped with this future if the client goes away, which cancels the upstream call.
    let (_cancel_guard, cancel) = oneshot::channel::<()>();
    let trace = RequestSpan::start(&client, name, target, &request_id, started);
    access.trace_id = trace.as_ref().and_then(RequestSpan::trace_id);
    // From here the actor's span records the outcome, errors included.
    *reached_actor = true;
    let reply = actor
        .send(Proxy {
            client,
            body,
            request_id,
            started,
            identity,
            peer: req.peer_addr().map(|a| a.ip()),
            cancel,
            trace,
        })
        .await
        .map_err(|e| GatewayError::Internal(format!("route actor unavailable: {e}")))??;
    let mut response = HttpResponse::build(reply.status);
    for (name, value) in reply.headers {
        response.insert_header((name, value));
    }
    Ok(match reply.body {
        ReplyBody::Full(body) => {
            if let Some((info, usage, latency)) = &reply.access {
                logging::access(info, reply.status.as_u16(), *usage, Some(*latency));
            }
            response.body(body)
        }
        ReplyBody::Stream(rx) => {
            response.streaming(futures_util::stream::unfold(rx, |mut rx| async {
                rx.recv()
                    .await
                    .map(|batch| (Ok::<_, Infallible>(batch), rx))
            }))
        }
    })
}
