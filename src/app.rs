//! The HTTP server: per-worker state (route actors, provider actor), the one handler that
//! routes every request to its route actor, and start-up.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer, ResponseError};
use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::actors::config::{build_snapshot, ConfigActor, SharedSnapshot};
use crate::actors::messages::{AccessInfo, Proxy, ReplyBody};
use crate::actors::provider::ProviderActor;
use crate::actors::route::RouteActor;
use crate::actors::stream::OPEN_STREAMS;
use crate::config::load::ConfigProblem;
use crate::config::settings::Settings;
use crate::error::GatewayError;
use crate::logging;
use crate::providers::oai::Usage;
use crate::proxy::compile::Snapshot;
use crate::proxy::request::ClientRequest;

/// One worker's view of the current config generation: its own route actors.
struct WorkerRoutes {
    snapshot: Arc<Snapshot>,
    actors: Vec<Option<Addr<RouteActor>>>,
}

impl WorkerRoutes {
    fn start(snapshot: Arc<Snapshot>, provider: &Addr<ProviderActor>) -> WorkerRoutes {
        let actors = snapshot
            .routes
            .iter()
            .map(|r| {
                r.as_ref()
                    .map(|route| RouteActor::new(route.clone(), provider.clone()).start())
            })
            .collect();
        WorkerRoutes { snapshot, actors }
    }
}

/// Per-worker state, built inside the server factory on the worker's own thread.
pub struct WorkerState {
    shared: SharedSnapshot,
    local: RefCell<Rc<WorkerRoutes>>,
    provider: Addr<ProviderActor>,
    client_timeout: Duration,
}

impl WorkerState {
    pub fn new(settings: &Settings, shared: SharedSnapshot) -> WorkerState {
        let provider =
            ProviderActor::new(settings.max_connections_per_worker, settings.stream_buffer).start();
        let local = WorkerRoutes::start(shared.load_full(), &provider);
        WorkerState {
            shared,
            local: RefCell::new(Rc::new(local)),
            provider,
            client_timeout: Duration::from_millis(settings.client_request_timeout_ms),
        }
    }

    /// This worker's routes for the current generation, starting new route actors the first
    /// time a worker sees a new generation. Old actors stop once their last request is done.
    fn routes(&self) -> Rc<WorkerRoutes> {
        let current = self.local.borrow().clone();
        let generation = self.shared.load().generation;
        if generation == current.snapshot.generation {
            return current;
        }
        let fresh = Rc::new(WorkerRoutes::start(self.shared.load_full(), &self.provider));
        *self.local.borrow_mut() = fresh.clone();
        fresh
    }
}

/// Request ids: a per-process random prefix plus a counter (cheaper than a UUID per request).
fn next_request_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());
    format!("{prefix}{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Requests between arrival and the handler's answer, process-wide (a streamed answer is then
/// counted by `OPEN_STREAMS` until it ends).
static REQUESTS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

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

/// Reads the body up to the route's limit, within the client request timeout.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: Option<u64>,
    timeout: Duration,
) -> Result<Bytes, GatewayError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
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
async fn proxy(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<WorkerState>,
) -> HttpResponse {
    let started = Instant::now();
    let request_id = next_request_id();
    let mut request = InFlight::start(AccessInfo {
        request_id: request_id.clone(),
        route: Arc::from("-"),
        provider: "-",
        model: String::new(),
        started,
    });
    let result = handle(
        &req,
        payload,
        &state,
        request_id,
        started,
        &mut request.access,
    )
    .await;
    request.answered = true;
    match result {
        Ok(response) => response,
        Err(e) => {
            let response = e.error_response();
            let access = &request.access;
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
    request_id: String,
    started: Instant,
    access: &mut AccessInfo,
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
    access.route = Arc::from(name.as_str());
    let (Some(actor), Some(route)) = (
        &routes.actors[found.route],
        &routes.snapshot.routes[found.route],
    ) else {
        return Err(GatewayError::NotAnAiRoute(name.clone()));
    };
    access.provider = route.provider.as_str();
    let body = read_body(req, payload, route.body_limit, state.client_timeout).await?;
    let client = ClientRequest {
        method: req.method().clone(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        headers: req.headers().clone(),
        captures: found.captures,
    };
    // Dropped with this future if the client goes away, which cancels the upstream call.
    let (_cancel_guard, cancel) = oneshot::channel::<()>();
    let reply = actor
        .send(Proxy {
            client,
            body,
            request_id,
            started,
            cancel,
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

/// A running gateway: its server and the config actor (tests send `Reload` to it directly).
pub struct Gateway {
    pub server: Server,
    pub addrs: Vec<SocketAddr>,
    pub config: Addr<ConfigActor>,
    pub shared: SharedSnapshot,
}

/// Loads the decK file and starts the proxy listener and the config actor on the current
/// actix system. An invalid initial config is returned as its problems.
pub fn start(settings: Settings) -> Result<Gateway, StartError> {
    let settings = Arc::new(settings);
    let path = PathBuf::from(&settings.config);
    let snapshot = build_snapshot(&path, &settings, 1).map_err(StartError::Config)?;
    let shared: SharedSnapshot = Arc::new(ArcSwap::from_pointee(snapshot));
    let config = ConfigActor::new(path, settings.clone(), shared.clone()).start();
    let workers = if settings.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        settings.workers
    };
    let factory_settings = settings.clone();
    let factory_shared = shared.clone();
    let server = HttpServer::new(move || {
        let state = WorkerState::new(&factory_settings, factory_shared.clone());
        App::new()
            .app_data(web::Data::new(state))
            .default_service(web::to(proxy))
    })
    .workers(workers)
    // Nagle would hold a stream's first chunk back ~40 ms waiting for the client's ACK.
    .tcp_nodelay(true)
    // A client that closes its side is gone (as nginx treats it): without this, actix keeps
    // waiting on a request or a quiet stream whose client left, and the upstream call with it.
    .h1_allow_half_closed(false)
    .client_request_timeout(Duration::from_millis(settings.client_request_timeout_ms))
    .shutdown_timeout(settings.shutdown_grace_ms.div_ceil(1000))
    .bind(&settings.listen)
    .map_err(StartError::Io)?;
    let addrs = server.addrs();
    let server = server.run();
    if let Some(listen) = &settings.status_listen {
        actix_rt::spawn(start_status(listen, shared.clone()).map_err(StartError::Io)?);
    }
    Ok(Gateway {
        server,
        addrs,
        config,
        shared,
    })
}

/// The optional status listener (Kong's `status_listen`): `GET /status` with the counters that
/// show work in flight, so operators and tests can see that nothing leaks. It is a listener of
/// its own, so no decK route can ever collide with it.
fn start_status(listen: &str, shared: SharedSnapshot) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(shared.clone()))
            .route("/status", web::get().to(status))
    })
    .workers(1)
    .shutdown_timeout(1)
    .bind(listen)?;
    for addr in server.addrs() {
        tracing::info!(%addr, "status listener");
    }
    Ok(server.run())
}

async fn status(shared: web::Data<SharedSnapshot>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "open_streams": OPEN_STREAMS.load(Ordering::Relaxed),
        "requests_in_flight": REQUESTS_IN_FLIGHT.load(Ordering::Relaxed),
        "config_generation": shared.load().generation,
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid config")]
    Config(Vec<ConfigProblem>),
    #[error("{0}")]
    Io(std::io::Error),
}
