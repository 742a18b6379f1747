//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) by the SDK's batch thread; off
//! unless `opentelemetry.traces_endpoint` is set.
//!
//! A request to an AI route gets one SERVER span, continuing the client's W3C `traceparent`,
//! and each upstream attempt a CLIENT span under it, with the GenAI semantic conventions
//! (`gen_ai.*`). The attempt's own `traceparent` goes into the client request before Kong's
//! request rules run, so it is forwarded upstream like any client header and is on the
//! request when Bedrock's SigV4 signature is computed. A streamed answer's spans end when the
//! stream does.
//!
//! Off, the request path pays one `OnceLock` read per request and builds nothing. Attributes
//! never carry credentials: no header values, no query strings, no bodies.

use std::borrow::Cow;
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::ResponseFuture;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::ResponseError;
use memchr::memmem::Finder;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
pub use opentelemetry::trace::TraceId;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tokio::sync::oneshot;

use crate::actors::messages::{ProxyReply, ReplyBody, StreamEnd};
use crate::actors::route::X_KONG_LLM_TRIED;
use crate::config::ai_proxy::{ProviderName, RouteType};
use crate::config::settings::OtelSettings;
use crate::error::GatewayError;
use crate::providers::oai::Usage;
use crate::providers::openai::values_of;
use crate::proxy::compile::CompiledRoute;
use crate::proxy::request::ClientRequest;

struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// Starts the exporter when `traces_endpoint` is set. Call once, before serving.
pub fn init(settings: &OtelSettings) -> Result<(), String> {
    let Some(endpoint) = &settings.traces_endpoint else {
        return Ok(());
    };
    // The exporter's client speaks TLS to https collectors with the process's ring provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.as_str())
        .with_timeout(Duration::from_millis(settings.send_timeout_ms))
        .with_headers(
            settings
                .headers
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        )
        .build()
        .map_err(|e| format!("opentelemetry exporter: {e}"))?;
    let sampler =
        Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sampling_rate)));
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("ai-gateway");
    let state = Tracing {
        provider,
        tracer,
        propagator: TraceContextPropagator::new(),
    };
    TRACING
        .set(state)
        .map_err(|_| "opentelemetry is already initialised".to_string())?;
    tracing::info!(endpoint = %endpoint, "exporting OpenTelemetry traces");
    Ok(())
}

/// Exports the spans still queued; call once the server has stopped.
pub fn shutdown() {
    if let Some(state) = TRACING.get() {
        if let Err(e) = state.provider.shutdown() {
            tracing::warn!(error = %e, "flushing OpenTelemetry traces failed");
        }
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// `gen_ai.operation.name` of a route type.
fn operation(route_type: RouteType) -> &'static str {
    match route_type {
        RouteType::Chat => "chat",
        RouteType::Completions => "text_completion",
        RouteType::Embeddings => "embeddings",
        other => other.as_str(),
    }
}

/// `gen_ai.provider.name`: the semantic conventions' names where they have one.
fn provider_name(target: &CompiledRoute) -> &'static str {
    match target.provider {
        ProviderName::Azure => "azure.ai.openai",
        ProviderName::Bedrock => "aws.bedrock",
        ProviderName::Mistral => "mistral_ai",
        ProviderName::Gemini => match crate::providers::gemini::vertex_target(&target.options) {
            Ok(Some(_)) => "gcp.vertex_ai",
            _ => "gcp.gemini",
        },
        other => other.as_str(),
    }
}

fn provider_attributes(target: &CompiledRoute) -> [KeyValue; 2] {
    let name = provider_name(target);
    // `gen_ai.system` is the older name, still read by many backends.
    [
        KeyValue::new("gen_ai.provider.name", name),
        KeyValue::new("gen_ai.system", name),
    ]
}

fn record_usage(cx: &Context, usage: Usage) {
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "gen_ai.usage.input_tokens",
        usage.prompt_tokens as i64,
    ));
    span.set_attribute(KeyValue::new(
        "gen_ai.usage.output_tokens",
        usage.completion_tokens as i64,
    ));
}

fn record_error(cx: &Context, error_type: String) {
    let span = cx.span();
    span.set_status(Status::error(error_type.clone()));
    span.set_attribute(KeyValue::new("error.type", error_type));
}

/// The model a buffered answer names (`model` in OpenAI's and Anthropic's shapes).
fn response_model(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow)]
        model: Option<Cow<'a, str>>,
    }
    let named: Named<'_> = serde_json::from_slice(body).ok()?;
    named.model.map(Cow::into_owned)
}

/// Whether traces are exported (settings `[opentelemetry]`).
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// The model a streamed answer names: the first `"model": "..."` in its first events (OpenAI's
/// chunks, Anthropic's `message_start` and the Responses API's `response.created` all carry
/// one).
pub fn stream_model(events: &[u8]) -> Option<String> {
    static MODEL_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("\"model\""));
    let events = std::str::from_utf8(events).ok()?;
    values_of(events, &MODEL_KEY).find_map(|value| {
        let mut values = serde_json::Deserializer::from_str(value).into_iter::<String>();
        values.next()?.ok()
    })
}

/// `error.type` of a request the gateway refused itself: low-cardinality names a backend can
/// group by.
fn refusal_type(error: &GatewayError) -> Cow<'static, str> {
    Cow::Borrowed(match error {
        GatewayError::NoRoute => "no_route",
        GatewayError::NotAnAiRoute(_) => "not_an_ai_route",
        GatewayError::Unauthorized { .. } => "unauthorized",
        GatewayError::RateLimited(_) => "rate_limited",
        GatewayError::LimiterUnavailable(_) => "limiter_unavailable",
        GatewayError::BadRequest(_) => "bad_request",
        GatewayError::BodyTooLarge { .. } => "body_too_large",
        GatewayError::ClientTimeout => "client_timeout",
        GatewayError::ClientGone => "client_gone",
        GatewayError::NoAvailableTarget { .. } => "no_available_target",
        other => return Cow::Owned(other.status_code().as_u16().to_string()),
    })
}

/// A request the handler refused before its route actor saw it (no route, key-auth, body
/// limit, a realtime session's limits): one SERVER span, ended at once, so a trace backend
/// sees refusals too. `route` is the matched route's name, when one matched. Returns the
/// trace for the access line (see [`RequestSpan::trace_id`]); `None` when tracing is off.
pub fn refused(
    method: &actix_web::http::Method,
    path: &str,
    headers: &HeaderMap,
    route: Option<&str>,
    request_id: &str,
    started: Instant,
    error: &GatewayError,
) -> Option<TraceId> {
    let tracing: &'static Tracing = TRACING.get()?;
    let parent = tracing.propagator.extract(&Headers(headers));
    let status = error.status_code().as_u16();
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.to_string()),
        KeyValue::new("url.path", path.to_string()),
        KeyValue::new("ai_gateway.request_id", request_id.to_string()),
        KeyValue::new("http.response.status_code", i64::from(status)),
        KeyValue::new("error.type", refusal_type(error)),
    ];
    // Semantic conventions: the span name is the route, or the method alone without one.
    let name = match route {
        Some(route) => {
            attributes.push(KeyValue::new("ai_gateway.route", route.to_string()));
            format!("{method} {route}")
        }
        None => method.to_string(),
    };
    let mut span = tracing
        .tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_start_time(SystemTime::now() - started.elapsed())
        .with_attributes(attributes)
        .start_with_context(&tracing.tracer, &parent);
    // A server span's 4xx is the client's doing, not an error of the span.
    if status >= 500 {
        span.set_status(Status::error(status.to_string()));
    }
    let trace_id = sampled_trace(span.span_context());
    span.end();
    trace_id
}

/// The trace an access line names: only a sampled span's, as an unsampled one is never
/// exported and an operator could not find it.
fn sampled_trace(context: &SpanContext) -> Option<TraceId> {
    context.is_sampled().then(|| context.trace_id())
}

/// The span of one request to an AI route. Clones share the span.
#[derive(Clone)]
pub struct RequestSpan {
    cx: Context,
    tracing: &'static Tracing,
}

impl RequestSpan {
    /// `None` when tracing is off.
    pub fn start(
        client: &ClientRequest,
        route: &str,
        target: &CompiledRoute,
        request_id: &str,
        started: Instant,
    ) -> Option<RequestSpan> {
        let tracing: &'static Tracing = TRACING.get()?;
        let parent = tracing.propagator.extract(&Headers(&client.headers));
        let span = tracing
            .tracer
            .span_builder(format!("{} {route}", client.method))
            .with_kind(SpanKind::Server)
            // From when the handler took the request, not when this actor saw it.
            .with_start_time(SystemTime::now() - started.elapsed())
            .with_attributes([
                KeyValue::new("http.request.method", client.method.to_string()),
                KeyValue::new("url.path", client.path.clone()),
                KeyValue::new("ai_gateway.route", route.to_string()),
                KeyValue::new("ai_gateway.request_id", request_id.to_string()),
                KeyValue::new("gen_ai.operation.name", operation(target.config.route_type)),
            ])
            .start_with_context(&tracing.tracer, &parent);
        Some(RequestSpan {
            cx: parent.with_span(span),
            tracing,
        })
    }

    /// The trace the access line names (see [`sampled_trace`]).
    pub fn trace_id(&self) -> Option<TraceId> {
        sampled_trace(self.cx.span().span_context())
    }

    /// Runs `serve` and records its outcome; a stream's span ends with the stream. Without a
    /// span `serve` is returned as is.
    pub fn around(
        trace: Option<RequestSpan>,
        serve: ResponseFuture<Result<ProxyReply, GatewayError>>,
    ) -> ResponseFuture<Result<ProxyReply, GatewayError>> {
        match trace {
            None => serve,
            Some(trace) => Box::pin(async move {
                let result = serve.await;
                trace.finish(&result);
                result
            }),
        }
    }

    fn finish(&self, result: &Result<ProxyReply, GatewayError>) {
        let span = self.cx.span();
        let status = match result {
            Ok(reply) => reply.status.as_u16(),
            Err(e) => e.status_code().as_u16(),
        };
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            record_error(&self.cx, status.to_string());
        }
        let Ok(reply) = result else {
            span.end();
            return;
        };
        let tried = reply
            .headers
            .iter()
            .find(|(name, _)| name == X_KONG_LLM_TRIED);
        if let Some(tried) = tried.and_then(|(_, value)| value.to_str().ok()) {
            span.set_attribute(KeyValue::new("ai_gateway.tried", tried.to_string()));
        }
        if let Some((_, usage, _)) = &reply.access {
            record_usage(&self.cx, *usage);
        }
        if let ReplyBody::Full(body) = &reply.body {
            if let Some(model) = response_model(body) {
                span.set_attribute(KeyValue::new("gen_ai.response.model", model));
            }
            span.end();
        }
    }

    /// The span of one upstream attempt on `target` (index `index` of the route's targets).
    /// The request's provider and model are those of its last attempt.
    pub fn attempt(&self, target: &CompiledRoute, index: usize) -> AttemptSpan {
        self.cx.span().set_attributes(provider_attributes(target));
        let tracer = &self.tracing.tracer;
        let operation = operation(target.config.route_type);
        let model = target.config.model.name.clone().unwrap_or_default();
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("ai_gateway.target.index", index as i64),
        ];
        attributes.extend(provider_attributes(target));
        let span = tracer
            .span_builder(format!("{operation} {model}"))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, &self.cx);
        AttemptSpan {
            cx: self.cx.with_span(span),
            request: self.cx.clone(),
            tracing: self.tracing,
            operation,
        }
    }
}

/// The span of one upstream attempt.
pub struct AttemptSpan {
    cx: Context,
    request: Context,
    tracing: &'static Tracing,
    operation: &'static str,
}

impl AttemptSpan {
    /// The client request with this attempt's `traceparent` in place of the client's.
    pub fn inject(&self, client: &ClientRequest) -> ClientRequest {
        let mut client = client.clone();
        // The client's `tracestate` goes on only as the continued trace carries it.
        client.headers.remove("tracestate");
        self.tracing
            .propagator
            .inject_context(&self.cx, &mut HeadersMut(&mut client.headers));
        client
    }

    /// What Kong's request rules decided: the model, and the upstream host (never the query,
    /// which may hold a key).
    pub fn prepared(&self, model: &str, url: &str) {
        let span = self.cx.span();
        span.update_name(format!("{} {model}", self.operation));
        for cx in [&self.cx, &self.request] {
            let model = KeyValue::new("gen_ai.request.model", model.to_string());
            cx.span().set_attribute(model);
        }
        if let Ok(url) = url::Url::parse(url) {
            if let Some(host) = url.host_str() {
                span.set_attribute(KeyValue::new("server.address", host.to_string()));
            }
            if let Some(port) = url.port_or_known_default() {
                span.set_attribute(KeyValue::new("server.port", i64::from(port)));
            }
        }
    }

    /// Records the attempt's outcome (`error_kind`: the upstream error kind of the metrics);
    /// a streamed answer's span ends with the stream (see [`AttemptSpan::relay`]).
    pub fn finish(&self, result: &Result<ProxyReply, GatewayError>, error_kind: Option<String>) {
        let span = self.cx.span();
        let error = match result {
            Ok(reply) => {
                let status = reply.status.as_u16();
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if let Some((_, usage, _)) = &reply.access {
                    record_usage(&self.cx, *usage);
                }
                match &reply.body {
                    ReplyBody::Stream(_) => return,
                    ReplyBody::Full(body) if status < 400 => {
                        if let Some(model) = response_model(body) {
                            span.set_attribute(KeyValue::new("gen_ai.response.model", model));
                        }
                        None
                    }
                    ReplyBody::Full(_) => Some(error_kind.unwrap_or_else(|| status.to_string())),
                }
            }
            Err(e) => Some(error_kind.unwrap_or_else(|| e.status_code().as_u16().to_string())),
        };
        if let Some(error) = error {
            record_error(&self.cx, error);
        }
        span.end();
    }

    /// Wraps the stream-end signal of this attempt: when a streamed answer ends, its usage goes
    /// on this span and the request's, and both end; `on_end` is told afterwards.
    pub fn relay(
        &self,
        on_end: Option<oneshot::Sender<StreamEnd>>,
    ) -> Option<oneshot::Sender<StreamEnd>> {
        let (tx, rx) = oneshot::channel::<StreamEnd>();
        let spans = [self.cx.clone(), self.request.clone()];
        actix::spawn(async move {
            // A buffered answer drops the sender: its spans were ended by `finish`.
            let Ok(end) = rx.await else { return };
            for cx in &spans {
                record_usage(cx, end.usage);
                if let Some(model) = &end.model {
                    let model = KeyValue::new("gen_ai.response.model", model.clone());
                    cx.span().set_attribute(model);
                }
                cx.span()
                    .set_attribute(KeyValue::new("ai_gateway.stream.completed", end.completed));
                cx.span().end();
            }
            if let Some(on_end) = on_end {
                let _ = on_end.send(end);
            }
        });
        Some(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_model_is_the_first_model_key_of_its_events() {
        let openai = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\" : \"gpt-4o-2024-08-06\",\"choices\":[]}\n\n";
        assert_eq!(stream_model(openai).as_deref(), Some("gpt-4o-2024-08-06"));
        let anthropic = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":\"say \\\"model\\\": \\\"x\\\"\",\"model\":\"claude-sonnet-4-5\"}}\n\n";
        assert_eq!(
            stream_model(anthropic).as_deref(),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(stream_model(b"data: {\"model\":null}\n\n"), None);
        assert_eq!(stream_model(b"data: [DONE]\n\n"), None);
    }

    #[test]
    fn response_model_is_read_from_the_answer() {
        assert_eq!(
            response_model(br#"{"id":"x","model":"gpt-4o-2024-08-06","choices":[]}"#).as_deref(),
            Some("gpt-4o-2024-08-06")
        );
        assert_eq!(response_model(br#"{"data":[]}"#), None);
        assert_eq!(response_model(b"not json"), None);
    }

    #[test]
    fn traceparent_is_read_from_and_written_to_actix_headers() {
        let propagator = TraceContextPropagator::new();
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("traceparent"),
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        let cx = propagator.extract(&Headers(&headers));
        let remote = cx.span().span_context().clone();
        assert_eq!(
            remote.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(remote.is_sampled() && remote.is_remote());
        let mut out = HeaderMap::new();
        propagator.inject_context(&cx, &mut HeadersMut(&mut out));
        assert_eq!(
            out.get("traceparent").unwrap(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
    }

    fn route(provider: &str, options: serde_json::Value) -> CompiledRoute {
        let config = serde_json::json!({
            "route_type": "llm/v1/chat",
            "model": {"provider": provider, "name": "m", "options": options}
        });
        CompiledRoute::from_json(config)
    }

    #[test]
    fn providers_get_the_semantic_conventions_names() {
        let vertex = serde_json::json!({"gemini": {
            "api_endpoint": "us-central1-aiplatform.googleapis.com",
            "project_id": "p", "location_id": "us-central1"}});
        let bedrock = serde_json::json!({"bedrock": {"aws_region": "us-east-1"}});
        for (provider, options, name) in [
            ("openai", serde_json::json!({}), "openai"),
            ("gemini", serde_json::json!({}), "gcp.gemini"),
            ("gemini", vertex, "gcp.vertex_ai"),
            ("bedrock", bedrock, "aws.bedrock"),
            (
                "mistral",
                serde_json::json!({"mistral_format": "openai"}),
                "mistral_ai",
            ),
        ] {
            assert_eq!(provider_name(&route(provider, options)), name, "{provider}");
        }
    }

    #[test]
    fn tracing_off_builds_no_span() {
        // No unit test initialises the exporter.
        let client = ClientRequest::post("/chat", &[], "");
        let route = route("openai", serde_json::json!({}));
        assert!(RequestSpan::start(&client, "chat", &route, "id", Instant::now()).is_none());
        let refused = refused(
            &client.method,
            "/chat",
            &client.headers,
            None,
            "id",
            Instant::now(),
            &GatewayError::NoRoute,
        );
        assert!(refused.is_none());
    }

    #[test]
    fn refusals_are_named_by_kind_and_others_by_status() {
        assert_eq!(refusal_type(&GatewayError::NoRoute), "no_route");
        assert_eq!(
            refusal_type(&GatewayError::BodyTooLarge { limit: 1 }),
            "body_too_large"
        );
        assert_eq!(refusal_type(&GatewayError::Internal("x".into())), "500");
    }
}
