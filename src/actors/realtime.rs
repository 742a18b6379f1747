//! `RealtimeActor`: one per realtime session, relaying WebSocket frames between the client and
//! the provider. Both directions are streams into the actor's mailbox; each frame is written
//! to the other side before the next is taken (`ctx.wait`), so a slow side slows the other
//! instead of growing a queue. Text, binary, ping/pong and continuation frames pass as they
//! are; a close from either side is passed on with its code and ends the session, and a side
//! that just goes away closes the other. `response.done` events are read for the usage.

use std::sync::atomic::Ordering;

use actix::fut::ActorFutureExt;
use std::sync::Arc;

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, StreamHandler, WrapFuture};
use actix_web::http::header::HeaderValue;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use awc::ws::{CloseCode, CloseReason, Codec, Frame, Message};
use awc::BoxedSocket;
use bytestring::ByteString;
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;

use super::limiter::Permit;
use super::messages::{AccessInfo, PickTarget};
use super::route::{unix_now, RouteActor};
use super::stream::OPEN_STREAMS;
use crate::error::GatewayError;
use crate::limits::admission::SeenAll;
use crate::logging;
use crate::providers::oai::Usage;
use crate::providers::relay::usage_of;
use crate::proxy::balancer::InFlightGuard;
use crate::proxy::compile::{AiRoute, CompiledRoute};
use crate::proxy::realtime::{prepare_realtime, RealtimeUpstream};
use crate::proxy::request::ClientRequest;

/// Realtime events carry base64 audio; OpenAI accepts frames well above the 64 KiB default.
const MAX_FRAME: usize = 16 * 1024 * 1024;
/// How long the provider has to answer a client's close frame.
const CLOSE_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(5);

type UpstreamSink = SplitSink<actix_codec::Framed<BoxedSocket, Codec>, Message>;

pub struct RealtimeActor {
    client: Option<actix_ws::Session>,
    upstream: Option<UpstreamSink>,
    access: AccessInfo,
    usage: Usage,
    outcome: &'static str,
    /// The client sent a close frame; the provider's answer is awaited.
    client_closing: bool,
    /// The session's rate-limit claim, settled with its usage when it ends.
    permit: Option<Permit>,
    /// Counts the session in flight on its ai-proxy-advanced target (least-connections).
    _in_flight: Option<InFlightGuard>,
}

/// What a session carries besides its frames: its access line, its admission by the rate
/// limits (with what the limiter saw, for the headers), its balancer target's in-flight count.
pub struct Session {
    pub access: AccessInfo,
    pub permit: Option<(Permit, SeenAll)>,
    pub in_flight: Option<InFlightGuard>,
}

/// The provider's side of a session once its handshake succeeded.
pub type UpstreamSocket = actix_codec::Framed<BoxedSocket, Codec>;

/// Opens the upstream WebSocket on the target the balancer picks. On ai-proxy-advanced a
/// refused handshake (its status under `failover_criteria`), a connection failure or a
/// timeout counts against the target for the circuit breaker and moves the session on to the
/// next target, as a failed HTTP attempt does (an upgrade is a GET, so idempotent); the last
/// failure is the answer when no target is left. The attempts go to the access line.
pub async fn open(
    actor: &Addr<RouteActor>,
    route: &AiRoute,
    client: &ClientRequest,
    request_id: &Arc<str>,
    access: &mut AccessInfo,
) -> Result<(Opened, Option<InFlightGuard>), GatewayError> {
    let hash_key = route
        .balancer
        .as_ref()
        .and_then(|b| client.headers.get(&b.hash_header))
        .map(|v| v.as_bytes().to_vec());
    let mut tried = Vec::new();
    let mut entries = Vec::new();
    let mut last = None;
    loop {
        let retries = route.balancer.as_ref().map_or(0, |b| b.retries as usize);
        let picked = match last.take() {
            Some(failed) if tried.len() > retries => return Err(failed),
            previous => actor
                .send(PickTarget {
                    hash_key: hash_key.clone(),
                    tried: tried.clone(),
                })
                .await
                .map_err(|e| GatewayError::Internal(format!("route actor unavailable: {e}")))?
                // No target left: the last failure is the answer.
                .map_err(|e| previous.unwrap_or(e)),
        };
        let (index, in_flight) = picked?;
        tried.push(index);
        let target = &route.targets[index];
        access.provider = target.provider.as_str();
        access.target = Some(target.clone());
        let upstream = prepare_realtime(target, client, request_id.clone(), unix_now())?;
        let result = connect(target, &upstream).await;
        let Some(balancer) = &route.balancer else {
            return Ok((Opened::new(upstream, result?), in_flight));
        };
        let failure = result.as_ref().err().and_then(|e| balancer.failure_of(e));
        if balancer.record(index, failure) {
            tracing::warn!(route = %access.route, target = index, "circuit breaker opened");
        }
        let outcome = match (&failure, &result) {
            (Some(f), _) => f.label(),
            (None, Ok(_)) => "101".into(),
            (None, Err(e)) => e.status_code().as_u16().to_string(),
        };
        let model = target.config.model.name.as_deref();
        if let Some(stats) = &target.stats {
            let provider = target.provider.as_str();
            crate::metrics::attempt(stats, index, provider, model.unwrap_or(""), &outcome);
        }
        entries.push(format!(
            "{index} {}/{} {outcome}",
            target.provider.as_str(),
            model.unwrap_or("-")
        ));
        access.tried = Some(Arc::from(entries.join(", ")));
        match result {
            Ok(socket) => return Ok((Opened::new(upstream, socket), in_flight)),
            Err(e) if failure.is_some_and(|f| balancer.fails_over(f, true)) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
}

/// An upstream session: the socket and what the client's answer says about it.
pub struct Opened {
    socket: UpstreamSocket,
    model: String,
    model_header: Option<HeaderValue>,
}

impl Opened {
    fn new(upstream: RealtimeUpstream, socket: UpstreamSocket) -> Opened {
        Opened {
            socket,
            model: upstream.model,
            model_header: upstream.model_header,
        }
    }
}

/// The handshake with the provider; a refusal is its status, for the client's JSON error.
async fn connect(
    route: &CompiledRoute,
    upstream: &RealtimeUpstream,
) -> Result<UpstreamSocket, GatewayError> {
    let client = awc::Client::builder()
        .connector(awc::Connector::new().timeout(route.timeouts.connect))
        .timeout(route.timeouts.read)
        .finish();
    let mut request = client.ws(upstream.url.as_str()).max_frame_size(MAX_FRAME);
    for (name, value) in &upstream.headers {
        request = request.header(name.clone(), value.clone());
    }
    let (_, socket) = request.connect().await.map_err(|e| match e {
        awc::error::WsClientError::InvalidResponseStatus(status) => {
            GatewayError::UpstreamRefused(status.as_u16())
        }
        awc::error::WsClientError::SendRequest(awc::error::SendRequestError::Timeout)
        | awc::error::WsClientError::SendRequest(awc::error::SendRequestError::Connect(
            awc::error::ConnectError::Timeout,
        )) => GatewayError::UpstreamTimeout(route.timeouts.connect.as_millis() as u64),
        other => GatewayError::UpstreamUnreachable(other.to_string()),
    })?;
    Ok(socket)
}

/// Upgrades the client and starts the relay with the opened upstream session. A provider that
/// refused the upgrade got its status passed to the client as a JSON error by [`open`].
pub fn serve(
    req: &HttpRequest,
    payload: web::Payload,
    opened: Opened,
    session: Session,
) -> Result<HttpResponse, GatewayError> {
    let Session {
        mut access,
        permit: admitted,
        in_flight,
    } = session;
    let (mut response, session, messages) =
        actix_ws::handle(req, payload).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    let messages = messages.max_frame_size(MAX_FRAME);
    let (sink, frames) = opened.socket.split();
    access.model = opened.model;
    let mut limit_headers = Vec::new();
    let permit = admitted.map(|(permit, seen)| {
        permit.ticket().headers(&seen, &mut limit_headers);
        permit
    });
    for (name, value) in limit_headers {
        response.headers_mut().insert(name, value);
    }
    RealtimeActor::create(move |ctx| {
        ctx.add_stream(messages);
        ctx.add_stream(frames);
        RealtimeActor {
            client: Some(session),
            upstream: Some(sink),
            access,
            usage: Usage::default(),
            outcome: "completed",
            client_closing: false,
            permit,
            _in_flight: in_flight,
        }
    });
    if let Some(value) = opened.model_header {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-kong-llm-model"),
            value,
        );
    }
    Ok(response)
}

impl RealtimeActor {
    /// Sends one frame upstream; the next client frame waits for it.
    fn send_upstream(&mut self, message: Message, ctx: &mut Context<Self>) {
        let Some(mut sink) = self.upstream.take() else {
            return;
        };
        ctx.wait(
            async move {
                let sent = sink.send(message).await.is_ok();
                (sink, sent)
            }
            .into_actor(self)
            .map(move |(sink, sent), act, ctx| {
                act.upstream = Some(sink);
                if !sent {
                    act.end("upstream error", None, ctx);
                }
            }),
        );
    }

    /// Sends one frame to the client; the next provider frame waits for it.
    fn send_client(&mut self, message: Message, ctx: &mut Context<Self>) {
        let Some(mut session) = self.client.clone() else {
            return;
        };
        ctx.wait(
            async move {
                match message {
                    Message::Text(text) => session.text(text).await,
                    Message::Binary(bytes) => session.binary(bytes).await,
                    Message::Ping(bytes) => session.ping(&bytes).await,
                    Message::Pong(bytes) => session.pong(&bytes).await,
                    Message::Continuation(item) => session.continuation(item).await,
                    Message::Close(_) | Message::Nop => Ok(()),
                }
                .is_ok()
            }
            .into_actor(self)
            .map(|sent, act, ctx| {
                if !sent {
                    act.end("client closed", None, ctx);
                }
            }),
        );
    }

    /// Ends the session: the side still open gets a close frame (`reason` is the one the
    /// other side sent, passed on), then the actor stops, which drops both connections.
    fn end(&mut self, outcome: &'static str, reason: Option<CloseReason>, ctx: &mut Context<Self>) {
        if self.outcome == "completed" {
            self.outcome = outcome;
        }
        // The usage is final: charged before either side hears the close, so a client that
        // opens its next session at once is already held to it.
        self.settle();
        let client = self.client.take();
        let upstream = self.upstream.take();
        // A close the provider sent in answer to the client's needs no echo; its own does.
        let upstream_closed = self.client_closing;
        ctx.wait(
            async move {
                if let Some(session) = client {
                    let _ = session.close(reason.clone()).await;
                }
                if let Some(mut sink) = upstream {
                    if !upstream_closed {
                        let _ = sink.send(Message::Close(reason)).await;
                    }
                    let _ = sink.close().await;
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        );
    }

    /// Settles the rate-limit claim, once: what the `response.done` events reported is the
    /// exact cost, however the session ended.
    fn settle(&mut self) {
        if let Some(permit) = self.permit.take() {
            permit.settle(self.usage, true);
        }
    }

    fn observe(&mut self, text: &[u8]) {
        // Only the event that carries usage is parsed.
        if !text.windows(13).any(|w| w == b"response.done") {
            return;
        }
        if let Ok(event) = serde_json::from_slice::<serde_json::Value>(text) {
            if let Some(usage) = event.get("response").and_then(usage_of) {
                self.usage = Usage::new(
                    self.usage.prompt_tokens + usage.prompt_tokens,
                    self.usage.completion_tokens + usage.completion_tokens,
                );
            }
        }
    }
}

impl Actor for RealtimeActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        OPEN_STREAMS.fetch_add(1, Ordering::Relaxed);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
        logging::access_stream(&self.access, self.outcome, self.usage, None);
        self.settle();
    }
}

/// Client -> provider.
impl StreamHandler<Result<actix_ws::Message, actix_ws::ProtocolError>> for RealtimeActor {
    fn handle(
        &mut self,
        item: Result<actix_ws::Message, actix_ws::ProtocolError>,
        ctx: &mut Context<Self>,
    ) {
        match item {
            Ok(Message::Close(reason)) => {
                // The close handshake runs end to end: the provider's answering close frame
                // goes back to the client (see the provider side), or a timeout ends it.
                self.outcome = "client closed";
                self.client_closing = true;
                self.send_upstream(Message::Close(reason), ctx);
                ctx.run_later(CLOSE_HANDSHAKE, |act, ctx| {
                    act.end("client closed", None, ctx);
                });
            }
            Ok(Message::Nop) => {}
            Ok(message) => self.send_upstream(message, ctx),
            Err(e) => self.end(
                "client error",
                Some(CloseReason {
                    code: CloseCode::Protocol,
                    description: Some(e.to_string()),
                }),
                ctx,
            ),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The client went away without a close frame: the provider's session ends too.
        if self.client.is_some() && !self.client_closing {
            self.end(
                "client closed",
                Some(CloseReason {
                    code: CloseCode::Away,
                    description: None,
                }),
                ctx,
            );
        }
    }
}

/// Provider -> client.
impl StreamHandler<Result<Frame, awc::error::WsProtocolError>> for RealtimeActor {
    fn handle(
        &mut self,
        item: Result<Frame, awc::error::WsProtocolError>,
        ctx: &mut Context<Self>,
    ) {
        let message = match item {
            Ok(Frame::Text(bytes)) => {
                self.observe(&bytes);
                match ByteString::try_from(bytes) {
                    Ok(text) => Message::Text(text),
                    Err(_) => return self.end("upstream error", invalid_text(), ctx),
                }
            }
            Ok(Frame::Binary(bytes)) => Message::Binary(bytes),
            Ok(Frame::Ping(bytes)) => Message::Ping(bytes),
            Ok(Frame::Pong(bytes)) => Message::Pong(bytes),
            Ok(Frame::Continuation(item)) => Message::Continuation(item),
            Ok(Frame::Close(reason)) => {
                // Either the provider closes, or it answers the client's close: in both cases
                // the client gets its code. An answer from the provider needs no echo.
                let outcome = if self.client_closing {
                    "client closed"
                } else {
                    "upstream closed"
                };
                return self.end(outcome, reason, ctx);
            }
            Err(e) => {
                return self.end(
                    "upstream error",
                    Some(CloseReason {
                        code: CloseCode::Error,
                        description: Some(format!("upstream WebSocket failed: {e}")),
                    }),
                    ctx,
                )
            }
        };
        self.send_client(message, ctx);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if self.upstream.is_some() || self.client.is_some() {
            self.end("upstream closed", None, ctx);
        }
    }
}

fn invalid_text() -> Option<CloseReason> {
    Some(CloseReason {
        code: CloseCode::Invalid,
        description: Some("upstream sent a text frame that is not UTF-8".into()),
    })
}
