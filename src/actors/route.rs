//! `RouteActor`: one per AI route per worker. It owns the route's compiled plugin (an `Arc` of
//! the config generation it was started with, so requests it accepted finish on that config
//! even after a reload), and carries one request through Kong's request rules
//! (`proxy::request`), the worker's upstream pools (its `ProviderActor`'s, called directly
//! rather than through a second mailbox) and the response rules (`proxy::response`).
//!
//! For `ai-proxy-advanced` it also owns this worker's balancing state: it picks a target per
//! attempt, and moves a failed attempt on to another target (re-translated for that target's
//! provider and auth) within `retries`; the client only sees the answer that ends the request.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, ResponseFuture};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::ResponseError;
use bytes::Bytes;
use futures_util::future::{select, Either};
use tokio::sync::oneshot;

use super::limiter::{Admission, Limiter, Permit};
use super::messages::{
    AccessInfo, Exchange, PickTarget, Proxy, ProxyReply, ReplyBody, RequestBody, StreamEnd,
    StreamPlan,
};
use super::provider::Pools;
use crate::error::GatewayError;
use crate::formats::anthropic;
use crate::formats::ClientFormat;
use crate::logging;
use crate::panic_guard;
use crate::providers::oai::Usage;
use crate::proxy::api::prepare_upload;
use crate::proxy::balancer::{Balancer, BalancerState, Failure, InFlightGuard, Pick};
use crate::proxy::compile::{AiRoute, CompiledRoute};
use crate::proxy::request::{prepare, ClientRequest, Plan, Prepared};
use crate::proxy::response::{self, JSON};
use crate::proxy::upload::{is_multipart_post, Upload};
use crate::telemetry::{AttemptSpan, RequestSpan};

pub struct RouteActor {
    route: Arc<AiRoute>,
    route_name: Arc<str>,
    /// This worker's upstream pools (its `ProviderActor`'s), called directly: same thread.
    pools: Pools,
    limiter: Limiter,
    /// This worker's balancing state (ai-proxy-advanced), shared with this actor's request
    /// futures, which run on the same thread.
    state: Rc<RefCell<BalancerState>>,
    /// `provider/model` per target, for the `x-kong-llm-tried` header and the access log.
    labels: Rc<[String]>,
}

impl RouteActor {
    pub fn new(route: Arc<AiRoute>, pools: Pools, limiter: Limiter) -> Self {
        let labels = route
            .targets
            .iter()
            .map(|t| {
                format!(
                    "{}/{}",
                    t.provider.as_str(),
                    t.config.model.name.as_deref().unwrap_or("-")
                )
            })
            .collect();
        RouteActor {
            route_name: Arc::from(route.first().name.as_str()),
            state: Rc::new(RefCell::new(BalancerState::new(route.targets.len()))),
            labels,
            route,
            pools,
            limiter,
        }
    }
}

impl Actor for RouteActor {
    type Context = Context<Self>;
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The gateway's own error as a reply, in the shape the client's SDK reads.
fn error_reply(e: &GatewayError, format: ClientFormat, access: AccessInfo) -> ProxyReply {
    let status = e.status_code();
    let body = if format == ClientFormat::AnthropicTranslated {
        anthropic::response::error_body(status.as_u16(), e.body().as_bytes())
    } else {
        Bytes::from(e.body())
    };
    ProxyReply {
        status,
        headers: vec![(header::CONTENT_TYPE, JSON)],
        body: ReplyBody::Full(body),
        access: Some((access, Usage::default(), Duration::ZERO)),
    }
}

/// Every attempt of an ai-proxy-advanced request: `<target index> <provider>/<model>
/// <status | error | timeout | invalid_header>`, comma-separated, the last one answering.
pub const X_KONG_LLM_TRIED: &str = "x-kong-llm-tried";

/// What one attempt needs besides its target.
struct AttemptInput<'a> {
    client: &'a ClientRequest,
    body: RequestBody,
    request_id: &'a Arc<str>,
    started: Instant,
    route_name: &'a Arc<str>,
    tried: Option<Arc<str>>,
    on_end: Option<oneshot::Sender<StreamEnd>>,
    consumer: Option<Arc<str>>,
    settle: Option<PermitSlot>,
    /// The request's span and the target's index, when tracing is on.
    trace: Option<(&'a RequestSpan, usize)>,
}

/// One upstream call on `target`: Kong's request rules and translation for its provider, the
/// call, and the translated answer (or the provider's error in the client's format); in its
/// own span when tracing is on.
async fn attempt(
    target: &Arc<CompiledRoute>,
    pools: &Pools,
    input: AttemptInput<'_>,
    cancel: oneshot::Receiver<()>,
) -> Result<ProxyReply, GatewayError> {
    let Some((request, index)) = input.trace else {
        return call(target, pools, input, cancel, None).await;
    };
    let span = request.attempt(target, index);
    let result = call(target, pools, input, cancel, Some(&span)).await;
    span.finish(&result, upstream_error_kind(&result));
    result
}

async fn call(
    target: &Arc<CompiledRoute>,
    pools: &Pools,
    input: AttemptInput<'_>,
    cancel: oneshot::Receiver<()>,
    span: Option<&AttemptSpan>,
) -> Result<ProxyReply, GatewayError> {
    let mut access = AccessInfo {
        request_id: input.request_id.clone(),
        route: input.route_name.clone(),
        provider: target.provider.as_str(),
        model: String::new(),
        started: input.started,
        tried: input.tried,
        consumer: input.consumer,
        dropped: String::new(),
        target: Some(target.clone()),
        trace_id: input.trace.and_then(|(span, _)| span.trace_id()),
    };
    let logged_request = match &input.body {
        RequestBody::Full(body) if target.config.logging.log_payloads => Some(body.clone()),
        _ => None,
    };
    // The attempt's `traceparent` goes in before the request rules, so it is forwarded like
    // any client header and is on the request Bedrock's SigV4 signs.
    let traced = span.map(|span| span.inject(input.client));
    let client = traced.as_ref().unwrap_or(input.client);
    let request_id = input.request_id.clone();
    let (plan, upload) = match input.body {
        // A form the route read whole for another target still streams to this one.
        RequestBody::Full(body)
            if target.streams_uploads() && is_multipart_post(&client.method, &client.headers) =>
        {
            let (prepared, upload) = prepare_upload(
                target,
                client,
                Upload::buffered(body),
                request_id,
                unix_now(),
            )?;
            (Plan::Upstream(prepared), Some(upload))
        }
        RequestBody::Full(body) => {
            let prepared = panic_guard::catch("request translation", || {
                prepare(target, client, body, request_id, unix_now())
            });
            (prepared.and_then(|p| p)?, None)
        }
        RequestBody::Upload(upload) => {
            let (prepared, upload) =
                prepare_upload(target, client, upload, request_id, unix_now())?;
            (Plan::Upstream(prepared), Some(upload))
        }
    };
    let prepared = match plan {
        Plan::Upstream(p) => p,
        Plan::Answer(body) => {
            return Ok(ProxyReply {
                status: StatusCode::OK,
                headers: vec![(header::CONTENT_TYPE, JSON)],
                body: ReplyBody::Full(body),
                access: Some((access, Usage::default(), Duration::ZERO)),
            })
        }
    };
    let Prepared {
        upstream,
        resolved,
        model_header,
    } = prepared;
    access.model = resolved.model.clone();
    access.dropped = resolved.dropped.join(", ");
    if let Some(span) = span {
        span.prepared(&resolved.model, &upstream.url);
    }
    // OpenAI's APIs pass through to providers that speak them; other providers' image
    // answers are translated like chat.
    let api = resolved.route_type.api_resource().is_some() && target.provider.speaks_openai_api();
    let upload_state = upload.as_ref().map(|u| u.state.clone());
    let stream = if api {
        response::api::stream_plan(&input.client.path)
    } else {
        response::stream_plan(target, &resolved)
    };
    // An answer that cannot stream is settled whole by `RouteActor::admit`: no task waits
    // for a stream end that never comes.
    let on_end = match stream {
        StreamPlan::None => input.on_end,
        _ => settle_at_end(input.on_end, input.settle),
    };
    let exchange = Exchange {
        request: upstream,
        timeouts: target.timeouts,
        stream,
        token: target.driver.token_source(),
        cancel,
        access: access.clone(),
        on_end: match span {
            Some(span) => span.relay(on_end),
            None => on_end,
        },
        upload,
    };
    let reply = pools.exchange(exchange).await?;
    let logged_access = logged_request.as_ref().map(|_| access.clone());
    let reply = if api {
        response::api::reply(target, model_header, upload_state, reply, access)
    } else {
        response::reply(target, &resolved, model_header, reply, access)?
    };
    if let (Some(request), Some(access)) = (&logged_request, &logged_access) {
        let answer = match &reply.body {
            ReplyBody::Full(body) => Some(&body[..]),
            ReplyBody::Stream(_) => None,
        };
        logging::payloads(access, request, answer, body_secret(target));
    }
    Ok(reply)
}

/// The body field carrying the configured credential, if auth goes in the body.
fn body_secret(target: &CompiledRoute) -> Option<&str> {
    target
        .auth
        .param
        .as_ref()
        .filter(|p| p.location == crate::config::ai_proxy::ParamLocation::Body)
        .map(|p| p.name.as_str())
}

impl Handler<Proxy> for RouteActor {
    type Result = ResponseFuture<Result<ProxyReply, GatewayError>>;

    fn handle(&mut self, mut msg: Proxy, _ctx: &mut Context<Self>) -> Self::Result {
        let trace = msg.trace.take();
        let admitted = self.admit(msg, trace.clone());
        RequestSpan::around(trace, admitted)
    }
}

impl RouteActor {
    /// Admits the request under the route's limits, then serves it.
    fn admit(
        &mut self,
        msg: Proxy,
        trace: Option<RequestSpan>,
    ) -> ResponseFuture<Result<ProxyReply, GatewayError>> {
        let ticket = self.route.limits.as_ref().and_then(|limits| {
            limits.ticket(&msg.identity, msg.peer, &msg.client, msg.body.read())
        });
        let Some(ticket) = ticket else {
            return self.serve(msg, None, trace);
        };
        // Admitted before anything reaches the provider (at once, here, when the limiter can
        // say without waiting); the permit is settled with the answer's usage (a stream's when
        // it ends) or released if nothing was answered.
        let admission = match Permit::admit(&self.limiter, ticket) {
            Admission::Decided(decided) => Either::Left(decided),
            // Boxed: the wait (or Redis call) would otherwise make every admitted request's
            // future larger, and each move of it longer.
            Admission::Pending(ticket) => {
                Either::Right(Box::pin(Permit::pending(self.limiter.clone(), ticket)))
            }
        };
        let slot: PermitSlot = Rc::new(RefCell::new(None));
        let serve = self.serve(msg, Some(slot.clone()), trace);
        Box::pin(async move {
            let (permit, seen) = match admission {
                Either::Left(decided) => decided?,
                Either::Right(pending) => pending.await?,
            };
            // Kept for the answer's headers: a stream may settle the permit first.
            let ticket = permit.ticket().clone();
            *slot.borrow_mut() = Some(permit);
            let mut result = serve.await;
            let permit = slot.borrow_mut().take();
            match (&mut result, permit) {
                (Ok(reply), permit) => {
                    ticket.headers(&seen, &mut reply.headers);
                    match (&reply.body, &reply.access, permit) {
                        (ReplyBody::Full(_), Some((_, usage, _)), Some(permit)) => {
                            permit.settle(*usage, true)
                        }
                        // A stream settles when it ends (see `settle_at_end`).
                        (ReplyBody::Stream(_), _, Some(permit)) => {
                            *slot.borrow_mut() = Some(permit)
                        }
                        _ => {}
                    }
                }
                (Err(_), _) => {}
            }
            result
        })
    }
}

impl Handler<PickTarget> for RouteActor {
    type Result = Result<(usize, Option<InFlightGuard>), GatewayError>;

    fn handle(&mut self, msg: PickTarget, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(balancer) = &self.route.balancer else {
            return Ok((0, None));
        };
        let pick = self
            .state
            .borrow_mut()
            .pick(balancer, &msg.tried, msg.hash_key.as_deref());
        match pick {
            Pick::Target(t) => Ok((t, Some(balancer.start_attempt(t)))),
            _ => Err(GatewayError::NoAvailableTarget {
                route: self.route_name.to_string(),
            }),
        }
    }
}

/// Where a request's rate-limit permit waits for the answer, shared with the stream that
/// settles it when it ends.
type PermitSlot = Rc<RefCell<Option<Permit>>>;

/// Settles the permit in `slot` with the stream's usage when the stream ends (also when the
/// client left mid-stream), then passes the end on to whoever else waits for it.
fn settle_at_end(
    on_end: Option<oneshot::Sender<StreamEnd>>,
    slot: Option<PermitSlot>,
) -> Option<oneshot::Sender<StreamEnd>> {
    let Some(slot) = slot else {
        return on_end;
    };
    let (tx, rx) = oneshot::channel::<StreamEnd>();
    actix::spawn(async move {
        if let Ok(end) = rx.await {
            if let Some(permit) = slot.borrow_mut().take() {
                permit.settle(end.usage, end.completed);
            }
            if let Some(on_end) = on_end {
                let _ = on_end.send(end);
            }
        }
    });
    Some(tx)
}

impl RouteActor {
    fn serve(
        &mut self,
        msg: Proxy,
        slot: Option<PermitSlot>,
        trace: Option<RequestSpan>,
    ) -> ResponseFuture<Result<ProxyReply, GatewayError>> {
        let route = self.route.clone();
        let pools = self.pools.clone();
        let route_name = self.route_name.clone();
        let Some(balancer) = route.balancer.clone() else {
            return Box::pin(panic_guard::catch_future("route actor", async move {
                let Proxy {
                    client,
                    body,
                    request_id,
                    started,
                    identity,
                    peer: _,
                    cancel,
                    trace: _,
                } = msg;
                let consumer = identity.consumer.as_ref().map(|c| c.name.clone());
                let input = AttemptInput {
                    client: &client,
                    body,
                    request_id: &request_id,
                    started,
                    route_name: &route_name,
                    tried: None,
                    on_end: None,
                    consumer: consumer.clone(),
                    settle: slot,
                    trace: trace.as_ref().map(|t| (t, 0)),
                };
                let format = route.first().client_format;
                // Boxed where it starts, so this block stays small: it is moved twice before
                // its first poll (into `catch_future`, then into the actor's box), the attempt
                // (~2.5 KiB) once.
                let result = Box::pin(attempt(route.first(), &pools, input, cancel)).await;
                count_upstream_error(route.first(), &result);
                match result {
                    Err(e)
                        if format == ClientFormat::AnthropicTranslated
                            && !matches!(e, GatewayError::ClientGone) =>
                    {
                        let access = AccessInfo {
                            request_id,
                            route: route_name,
                            provider: route.first().provider.as_str(),
                            model: String::new(),
                            started,
                            tried: None,
                            consumer,
                            dropped: String::new(),
                            target: Some(route.first().clone()),
                            trace_id: trace.as_ref().and_then(RequestSpan::trace_id),
                        };
                        Ok(error_reply(&e, format, access))
                    }
                    other => other,
                }
            }));
        };
        let balanced = Balanced {
            route,
            balancer,
            pools,
            route_name,
            state: self.state.clone(),
            labels: self.labels.clone(),
            slot,
            consumer: msg.identity.consumer.as_ref().map(|c| c.name.clone()),
            trace,
        };
        Box::pin(panic_guard::catch_future("route actor", balanced.run(msg)))
    }
}

/// One ai-proxy-advanced request on its way through the targets.
struct Balanced {
    route: Arc<AiRoute>,
    balancer: Arc<Balancer>,
    pools: Pools,
    route_name: Arc<str>,
    state: Rc<RefCell<BalancerState>>,
    labels: Rc<[String]>,
    consumer: Option<Arc<str>>,
    slot: Option<PermitSlot>,
    trace: Option<RequestSpan>,
}

/// What an attempt's result means for the balancer.
enum Verdict {
    /// The answer goes to the client.
    Answer(Result<ProxyReply, GatewayError>),
    /// The attempt failed this way; the answer goes to the client if no other target follows.
    Failed(Failure, Result<ProxyReply, GatewayError>),
}

fn judge(balancer: &Balancer, result: Result<ProxyReply, GatewayError>) -> Verdict {
    let failure = match &result {
        Ok(reply) if balancer.is_failure_status(reply.status.as_u16()) => {
            Some(Failure::Status(reply.status.as_u16()))
        }
        Ok(_) => None,
        Err(e) => balancer.failure_of(e),
    };
    match failure {
        Some(failure) => Verdict::Failed(failure, result),
        None => Verdict::Answer(result),
    }
}

/// A failed attempt whose answer goes to the client if no other target follows.
struct LastFailure {
    result: Result<ProxyReply, GatewayError>,
    target: usize,
    elapsed: Duration,
}

impl Balanced {
    async fn run(self, msg: Proxy) -> Result<ProxyReply, GatewayError> {
        let Proxy {
            client,
            body,
            request_id,
            started,
            mut cancel,
            ..
        } = msg;
        // A streamed upload is read as it is sent, so it goes to the first target picked
        // and has no second attempt; a buffered body is re-sent to each.
        let (full, mut upload) = match body {
            RequestBody::Full(body) => (Some(body), None),
            RequestBody::Upload(upload) => (None, Some(upload)),
        };
        let hash_key = client
            .headers
            .get(&self.balancer.hash_header)
            .map(|v| v.as_bytes().to_vec());
        // nginx's definition: POST, LOCK and PATCH are not idempotent.
        let idempotent = !matches!(client.method, Method::POST | Method::PATCH)
            && client.method.as_str() != "LOCK";
        let mut tried: Vec<usize> = Vec::new();
        let mut entries: Vec<String> = Vec::new();
        let mut last: Option<LastFailure> = None;
        loop {
            let body = match &full {
                Some(body) => Some(RequestBody::Full(body.clone())),
                None => upload.take().map(RequestBody::Upload),
            };
            // `retries: N` allows N attempts after the first.
            let pick = if body.is_some() && tried.len() <= self.balancer.retries as usize {
                self.state
                    .borrow_mut()
                    .pick(&self.balancer, &tried, hash_key.as_deref())
            } else {
                Pick::Exhausted
            };
            let (target, body) = match (pick, body, last.take()) {
                (Pick::Target(t), Some(body), _) => (t, body),
                (_, _, Some(failed)) => {
                    let access = self.access(&request_id, started, failed.target, &entries);
                    return Ok(self.answer(failed.result, access, &entries, failed.elapsed));
                }
                (_, _, None) => return Ok(self.no_target(&request_id, started)),
            };
            tried.push(target);
            let label = format!("{target} {}", self.labels[target]);
            let (end_tx, end_rx) = oneshot::channel();
            let input = AttemptInput {
                client: &client,
                body,
                request_id: &request_id,
                started,
                route_name: &self.route_name,
                // What the access line of a stream says: a stream is a 200 from this target.
                tried: Some(Arc::from(joined(&entries, &format!("{label} 200")))),
                on_end: Some(end_tx),
                consumer: self.consumer.clone(),
                settle: self.slot.clone(),
                trace: self.trace.as_ref().map(|t| (t, target)),
            };
            let guard = self.balancer.start_attempt(target);
            let attempt_started = Instant::now();
            // Each attempt has its own cancel signal, fired by dropping `_attempt_cancel` when
            // the client goes away while it runs.
            let (_attempt_cancel, attempt_cancel) = oneshot::channel::<()>();
            let call = attempt(
                &self.route.targets[target],
                &self.pools,
                input,
                attempt_cancel,
            );
            let result = match select(Box::pin(call), &mut cancel).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => return Err(GatewayError::ClientGone),
            };
            let elapsed = attempt_started.elapsed();
            let (failure, result) = match judge(&self.balancer, result) {
                Verdict::Answer(result) => (None, result),
                Verdict::Failed(f, result) => (Some(f), result),
            };
            if self.balancer.record(target, failure) {
                tracing::warn!(route = %self.route_name, target, "circuit breaker opened");
            }
            let outcome = match (&failure, &result) {
                (Some(f), _) => f.label(),
                (None, Ok(reply)) => reply.status.as_u16().to_string(),
                (None, Err(e)) => e.status_code().as_u16().to_string(),
            };
            let compiled = &self.route.targets[target];
            count_upstream_error(compiled, &result);
            if let Some(stats) = &compiled.stats {
                crate::metrics::attempt(
                    stats,
                    target,
                    compiled.provider.as_str(),
                    compiled.config.model.name.as_deref().unwrap_or(""),
                    &outcome,
                );
            }
            entries.push(format!("{label} {outcome}"));
            match failure {
                Some(f) if self.balancer.fails_over(f, idempotent) => {
                    tracing::debug!(route = %self.route_name, target, outcome, "attempt failed");
                    last = Some(LastFailure {
                        result,
                        target,
                        elapsed,
                    });
                }
                _ => {
                    if result.is_ok() && failure.is_none() {
                        self.learn(target, &result, elapsed, guard, end_rx);
                    }
                    let access = self.access(&request_id, started, target, &entries);
                    return Ok(self.answer(result, access, &entries, elapsed));
                }
            }
        }
    }

    /// Feeds a successful attempt to this worker's balancing state: at once for a buffered
    /// answer, when it ends for a stream (which also keeps the attempt counted in flight).
    fn learn(
        &self,
        target: usize,
        result: &Result<ProxyReply, GatewayError>,
        elapsed: Duration,
        guard: crate::proxy::balancer::InFlightGuard,
        end_rx: oneshot::Receiver<StreamEnd>,
    ) {
        let compiled = self.route.targets[target].clone();
        match result {
            Ok(ProxyReply {
                access: Some((_, usage, _)),
                ..
            }) => {
                let cost = compiled.cost(*usage).unwrap_or(0.0);
                self.state
                    .borrow_mut()
                    .observe(&self.balancer, target, elapsed, *usage, cost);
            }
            Ok(ProxyReply {
                body: ReplyBody::Stream(_),
                ..
            }) => {
                let state = self.state.clone();
                let balancer = self.balancer.clone();
                let attempt_started = Instant::now() - elapsed;
                actix::spawn(async move {
                    let _guard = guard;
                    if let Ok(end) = end_rx.await {
                        if end.completed {
                            let cost = compiled.cost(end.usage).unwrap_or(0.0);
                            state.borrow_mut().observe(
                                &balancer,
                                target,
                                attempt_started.elapsed(),
                                end.usage,
                                cost,
                            );
                        }
                    }
                });
            }
            _ => {}
        }
    }

    fn access(
        &self,
        request_id: &Arc<str>,
        started: Instant,
        target: usize,
        entries: &[String],
    ) -> AccessInfo {
        let compiled = &self.route.targets[target];
        AccessInfo {
            request_id: request_id.clone(),
            route: self.route_name.clone(),
            provider: compiled.provider.as_str(),
            model: compiled.config.model.name.clone().unwrap_or_default(),
            started,
            tried: Some(Arc::from(entries.join(", "))),
            consumer: self.consumer.clone(),
            dropped: String::new(),
            target: Some(compiled.clone()),
            trace_id: self.trace.as_ref().and_then(RequestSpan::trace_id),
        }
    }

    /// The client's answer: the attempt's reply, or its error as a reply, with every attempt in
    /// the `x-kong-llm-tried` header and the access line.
    fn answer(
        &self,
        result: Result<ProxyReply, GatewayError>,
        access: AccessInfo,
        entries: &[String],
        elapsed: Duration,
    ) -> ProxyReply {
        let tried = HeaderValue::from_str(&entries.join(", ")).ok();
        let mut reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                let mut reply = error_reply(&e, self.route.first().client_format, access.clone());
                if let Some((_, _, latency)) = reply.access.as_mut() {
                    *latency = elapsed;
                }
                reply
            }
        };
        if let Some((info, _, _)) = reply.access.as_mut() {
            info.tried = access.tried;
        }
        if let Some(tried) = tried {
            reply
                .headers
                .push((HeaderName::from_static(X_KONG_LLM_TRIED), tried));
        }
        reply
    }

    /// Every target is excluded by the circuit breaker: 503 naming the route, with the time
    /// until the first target is probed again.
    fn no_target(&self, request_id: &Arc<str>, started: Instant) -> ProxyReply {
        let e = GatewayError::NoAvailableTarget {
            route: self.route_name.to_string(),
        };
        let retry_after = self.balancer.retry_after_ms().div_ceil(1000).max(1);
        let mut access = self.access(request_id, started, 0, &[]);
        access.provider = "-";
        access.tried = None;
        let mut reply = error_reply(&e, self.route.first().client_format, access);
        reply
            .headers
            .push((header::RETRY_AFTER, HeaderValue::from(retry_after)));
        reply
    }
}

/// Counts a failed upstream call in the route's metrics, by kind.
fn count_upstream_error(target: &CompiledRoute, result: &Result<ProxyReply, GatewayError>) {
    let Some(stats) = &target.stats else { return };
    if let Some(kind) = upstream_error_kind(result) {
        crate::metrics::upstream_error(stats, target.provider.as_str(), kind);
    }
}

/// How an upstream call failed (metrics label, span `error.type`); `None` for a success or
/// an error that is not the upstream's.
fn upstream_error_kind(result: &Result<ProxyReply, GatewayError>) -> Option<String> {
    Some(match result {
        Ok(reply) if reply.status.as_u16() >= 400 => format!("http_{}", reply.status.as_u16()),
        Ok(_) => return None,
        Err(GatewayError::UpstreamConnect(_))
        | Err(GatewayError::UpstreamUnreachable(_))
        | Err(GatewayError::Identity(_)) => "error".into(),
        Err(GatewayError::UpstreamTimeout(_)) | Err(GatewayError::UpstreamConnectTimeout(_)) => {
            "timeout".into()
        }
        Err(GatewayError::UpstreamProtocol(_)) | Err(GatewayError::Transformation { .. }) => {
            "invalid_header".into()
        }
        Err(_) => return None,
    })
}

fn joined(entries: &[String], last: &str) -> String {
    let mut out = entries.join(", ");
    if !out.is_empty() {
        out.push_str(", ");
    }
    out.push_str(last);
    out
}
