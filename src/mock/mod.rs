//! The bundled mock LLM provider.
//!
//! It speaks every supported provider's *native* wire format (OpenAI, Azure, Mistral, Anthropic,
//! Cohere, Gemini/Vertex, Bedrock, Hugging Face, Ollama, raw llama2), so the gateway's demo,
//! integration tests and load tests run without network or API keys.
//!
//! * Answers are deterministic: `Mock <provider> reply to: <last user text>` (at most 200 chars),
//!   with usage counts equal to whitespace-separated words of the prompt and of the reply. A request
//!   that offers tools and ends with a user message gets a call to the first tool with the
//!   arguments `{"a":2,"b":12}`.
//! * Faults are chosen per request by the `x-mock-fault` header or a `mock-fault-...` model name
//!   (see [`fault`]).
//! * Every request is recorded in a bounded log, readable at `GET /__mock/requests`, with counters
//!   at `GET /__mock/stats` (see [`log`]).
//!
//! The per-format files only turn a native request into a [`reply::Prompt`] and render a
//! [`reply::Completion`] as a native body or stream; recording, faults, streaming and error bodies
//! are shared here and in the helper modules.

mod anthropic;
mod api;
mod bedrock;
mod cohere;
mod fault;
mod gemini;
mod huggingface;
mod llama2_raw;
mod log;
mod ollama;
mod openai;
mod realtime;
mod reply;
mod responses;
mod stream;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use std::{borrow::Cow, net::SocketAddr};

use actix_web::{
    dev::Server,
    http::StatusCode,
    web::{self, Bytes},
    App, HttpRequest, HttpResponse, HttpServer,
};
use serde_json::{json, Value};

use self::{
    fault::Faults,
    log::MockState,
    reply::{Completion, Prompt},
    stream::MockStream,
};

/// Largest request body the mock accepts; load tests send big prompts and actix's default
/// (256 KiB) would turn them into 413s that no real provider sends.
const MAX_BODY_BYTES: usize = 64 << 20;

/// How long a stopping mock server waits for open streams; hung requests would otherwise hold
/// the shutdown for actix's default 30 s.
const SHUTDOWN_TIMEOUT_SECS: u64 = 1;

/// Starts the mock on `listen` with `workers` workers and returns the running server (not
/// awaited) and the bound address (listen may use port 0).
pub fn start(listen: &str, workers: usize) -> std::io::Result<(Server, SocketAddr)> {
    let state = web::Data::new(MockState::from_env());
    let server = HttpServer::new(move || {
        let state = state.clone();
        App::new().configure(move |cfg| configure_with(cfg, state))
    })
    .workers(workers.max(1))
    // actix leaves Nagle on: a stream's head and first chunk would wait ~40 ms for a delayed ACK.
    .tcp_nodelay(true)
    // A client that closes its side is gone: lets `hang` requests and open streams end (and be
    // counted as cancelled) instead of waiting for a write that never comes.
    .h1_allow_half_closed(false)
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .bind(listen)?;
    let addr = server.addrs().first().copied().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "mock: nothing bound")
    })?;
    Ok((server.run(), addr))
}

/// Adds every mock route to an actix-web app, with its own state: each server (and each test)
/// has its own request log and counters.
pub(crate) fn configure_with(cfg: &mut web::ServiceConfig, state: web::Data<MockState>) {
    cfg.app_data(state)
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .configure(log::routes)
        .configure(openai::routes)
        .configure(anthropic::routes)
        .configure(cohere::routes)
        .configure(gemini::routes)
        .configure(bedrock::routes)
        .configure(huggingface::routes)
        .configure(ollama::routes)
        .configure(llama2_raw::routes)
        .configure(api::routes)
        .default_service(web::to(fallback));
}

/// One wire format's identity: the label used in reply texts and how it reports errors.
pub(crate) struct Wire {
    /// Provider label in reply texts: `Mock <provider> reply to: ...`.
    pub provider: &'static str,
    /// The provider's native error body for a status and message.
    pub error_body: fn(u16, &str) -> Value,
    /// A header the provider adds to errors (Bedrock's `x-amzn-errortype`), by status.
    pub error_header: Option<ErrorHeader>,
    /// Whether request bodies must be JSON (everything but the OAuth token form).
    pub json_body: bool,
}

impl Wire {
    /// A JSON-bodied format with no extra error header.
    pub(crate) const fn new(provider: &'static str, error_body: fn(u16, &str) -> Value) -> Wire {
        Wire {
            provider,
            error_body,
            error_header: None,
            json_body: true,
        }
    }
}

/// A header name and its value by status, added to a format's error responses.
pub(crate) type ErrorHeader = (&'static str, fn(u16) -> &'static str);

/// The per-endpoint function: a parsed request in, an answer out.
pub(crate) type Handler = fn(&MockRequest) -> Answer;

/// What a handler produces; [`render`] applies the response-shaping faults to it.
pub(crate) enum Answer {
    /// A complete JSON body. `content_key` names the top-level field carrying the generated
    /// content, which the `no_choices` fault removes.
    Json {
        body: Value,
        content_key: &'static str,
    },
    /// Pre-framed stream events, written one per flush.
    Stream {
        content_type: &'static str,
        frames: Vec<Bytes>,
    },
    /// A provider-native error with this status.
    Error { status: u16, message: String },
}

impl Answer {
    pub(crate) fn json(body: Value, content_key: &'static str) -> Answer {
        Answer::Json { body, content_key }
    }

    pub(crate) fn error(status: u16, message: impl Into<String>) -> Answer {
        Answer::Error {
            status,
            message: message.into(),
        }
    }
}

/// A request as the per-format handlers see it.
pub(crate) struct MockRequest {
    pub http: HttpRequest,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
    pub raw: Bytes,
    pub wire: &'static Wire,
    pub faults: Faults,
}

impl MockRequest {
    pub(crate) fn state(&self) -> &MockState {
        state_of(&self.http)
    }

    /// A path segment captured by the route pattern, or `""`.
    pub(crate) fn path_param(&self, name: &str) -> &str {
        self.http.match_info().get(name).unwrap_or("")
    }

    /// A query parameter, decoded.
    pub(crate) fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        url::form_urlencoded::parse(self.http.query_string().as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// The model: the body's `model`, else the `model` path segment (without a `:operation`).
    pub(crate) fn model(&self) -> &str {
        model_of(&self.http, &self.body)
    }

    /// The body's `stream` flag, or the provider's default when absent.
    pub(crate) fn stream_flag(&self, default: bool) -> bool {
        self.body
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(default)
    }

    /// The deterministic answer to `prompt`, shaped by the `chunks`/`bytes` faults.
    pub(crate) fn complete(&self, prompt: Prompt) -> Completion {
        prompt.complete(self.wire.provider, &self.faults)
    }
}

fn state_of(req: &HttpRequest) -> &MockState {
    req.app_data::<web::Data<MockState>>()
        .expect("mock routes are registered by configure_with, which adds the state")
}

fn model_of<'a>(req: &'a HttpRequest, body: &'a Value) -> &'a str {
    match body.get("model").and_then(Value::as_str) {
        Some(model) => model,
        None => {
            let segment = req.match_info().get("model").unwrap_or("");
            segment.split(':').next().unwrap_or(segment)
        }
    }
}

/// A `POST` resource answered by `handler` in the `wire` format.
pub(crate) fn post(path: &str, wire: &'static Wire, handler: Handler) -> actix_web::Resource {
    web::resource(path)
        .route(web::post().to(move |req: HttpRequest, body: Bytes| serve(req, body, wire, handler)))
}

/// The shared request path: record, apply the pre-answer faults, run the handler, render.
async fn serve(
    req: HttpRequest,
    raw: Bytes,
    wire: &'static Wire,
    handler: Handler,
) -> HttpResponse {
    let body: Option<Value> = serde_json::from_slice(&raw).ok();
    state_of(&req).record(&req, &raw, body.as_ref());
    let body = body.unwrap_or(Value::Null);
    let header = req
        .headers()
        .get(fault::HEADER)
        .and_then(|v| v.to_str().ok());
    let defaults = state_of(&req).default_faults();
    let faults = Faults::parse_over(&defaults, header, model_of(&req, &body));
    if let Some(refused) = before_answer(&faults, wire).await {
        return refused;
    }
    if wire.json_body && body.is_null() {
        return fault::native_error(wire, 400, "mock: request body is not valid JSON");
    }
    let request = MockRequest {
        http: req,
        body,
        raw,
        wire,
        faults,
    };
    render(handler(&request), &request)
}

/// The faults that act before any answer: `delay`, `hang`, and the error ones (`status`,
/// `html`), whose response is returned.
pub(crate) async fn before_answer(faults: &Faults, wire: &Wire) -> Option<HttpResponse> {
    if let Some(delay) = faults.delay {
        actix_rt::time::sleep(delay).await;
    }
    if faults.hang {
        // Dropped by actix when the client goes away (see `h1_allow_half_closed` in `start`).
        std::future::pending::<()>().await;
    }
    (faults.html || faults.status.is_some()).then(|| fault::error_response(wire, faults))
}

/// Turns an [`Answer`] into a response, applying `no_choices`, `bad_json`, `chunk_delay` and
/// `close_mid_stream`.
fn render(answer: Answer, req: &MockRequest) -> HttpResponse {
    let faults = &req.faults;
    match answer {
        Answer::Json {
            mut body,
            content_key,
        } => {
            if faults.no_choices {
                fault::strip_content(&mut body, content_key);
            }
            let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
            if faults.bad_json {
                fault::truncate_json(&mut bytes);
            }
            HttpResponse::Ok()
                .content_type("application/json")
                .body(bytes)
        }
        Answer::Stream {
            content_type,
            mut frames,
        } => {
            if faults.close_mid_stream || faults.stream_error {
                // Half of the frames, at least one, and never the terminator.
                frames.truncate((frames.len() / 2).max(1));
            }
            if faults.stream_error && content_type == bedrock::EVENT_STREAM {
                let message =
                    json!({"message": "mock: Too many requests, please wait before trying again."});
                frames.push(crate::codec::eventstream::encode_exception(
                    "throttlingException",
                    message.to_string().as_bytes(),
                ));
            }
            let body = MockStream::new(
                frames,
                faults.chunk_delay,
                faults.close_mid_stream,
                req.http.app_data::<web::Data<MockState>>().cloned(),
            );
            HttpResponse::Ok()
                .content_type(content_type)
                .insert_header(("cache-control", "no-cache"))
                .streaming(body)
        }
        Answer::Error { status, message } => fault::native_error(req.wire, status, &message),
    }
}

/// Unknown paths: OpenAI-compatible suffixes (`.../chat/completions`, `.../completions`,
/// `.../embeddings`) are served in OpenAI format, so `upstream_url`s with any prefix work;
/// anything else is a 404. Either way the request is recorded.
async fn fallback(req: HttpRequest, raw: Bytes) -> HttpResponse {
    if req.method() == actix_web::http::Method::POST {
        if let Some((wire, handler)) = openai::by_suffix(req.path()) {
            return serve(req, raw, wire, handler).await;
        }
    }
    let body: Option<Value> = serde_json::from_slice(&raw).ok();
    state_of(&req).record(&req, &raw, body.as_ref());
    not_found(req.path())
}

pub(crate) fn not_found(path: &str) -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "error": {"message": format!("mock: no such endpoint {path}")}
    }))
}

/// The reason phrase for a status, for messages and HTML pages.
pub(crate) fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Mock Fault")
}
