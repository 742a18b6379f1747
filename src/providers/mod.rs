//! Provider drivers: one module per provider behind [`Translate`], dispatched through the
//! closed [`Driver`] enum. Translation is pure (no I/O) so every direction is unit-tested
//! against fixtures; the actors do the I/O.
//!
//! Adding a provider: write `providers/<name>.rs` implementing [`Translate`], then add one line
//! to the `providers!` registration below. A synthesised stream is the provider's
//! [`stream::EventTranslate`] behind a [`stream::DecodedStream`]; the shared pieces of the
//! OpenAI wire format are in [`oai`], those of TGI in [`tgi`].

// Declared here rather than inside `providers!` so rustfmt (which does not look into macro
// invocations) formats every provider module.
pub(crate) mod anthropic;
pub(crate) mod azure;
pub(crate) mod bedrock;
pub(crate) mod cohere;
pub(crate) mod fields;
pub(crate) mod gemini;
pub(crate) mod huggingface;
pub(crate) mod images;
pub(crate) mod llama2;
pub(crate) mod mistral;
pub mod oai;
pub mod ollama;
pub mod openai;
pub(crate) mod relay;
pub(crate) mod stream;
#[cfg(test)]
pub(crate) mod testkit;
pub(crate) mod tgi;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};

use crate::config::ai_proxy::{AiProxyConfig, ModelOptions, ProviderName, RouteType};
use crate::error::GatewayError;
use oai::{ChunkBuilder, ResponseMeta, Usage};

/// Everything about one request a translator may depend on. Built by the route actor after
/// Kong's request rules (model selection, option merge, streaming decision) have run.
#[derive(Debug, Clone, Copy)]
pub struct RequestCtx<'a> {
    pub route_type: RouteType,
    /// The effective model: the configured name, else the client's.
    pub model: &'a str,
    pub stream: bool,
    /// The client sent `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// Model options with templates already resolved.
    pub options: &'a ModelOptions,
    /// The client's raw query string (Azure takes `api-version` from it).
    pub client_query: &'a str,
    /// Unique per request; synthesised response ids are derived from it.
    pub request_id: &'a str,
    /// Unix seconds at request start, for `created`.
    pub created: u64,
}

impl RequestCtx<'_> {
    /// `id`/`created`/`model` for translators that must synthesise them.
    pub fn meta(&self) -> ResponseMeta {
        ResponseMeta {
            id: format!("chatcmpl-{}", self.request_id),
            created: self.created,
            model: self.model.to_string(),
        }
    }

    /// The builder of a synthesised stream: this request's meta, the chunk shape of its route
    /// (`text_completion` on completions) and whether the client asked for a usage chunk.
    pub fn chunk_builder(&self) -> ChunkBuilder {
        ChunkBuilder::new(
            self.meta(),
            self.route_type == RouteType::Completions,
            self.include_usage,
        )
    }
}

/// The request the provider actor sends. Auth and client headers are added by the pipeline;
/// `sign` may add more (SigV4) once the body is final.
#[derive(Clone)]
pub struct UpstreamRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// The query (query-param auth), header values and body (body-param auth) may carry
/// credentials, so debug output shows only their shape.
impl std::fmt::Debug for UpstreamRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.url.split('?').next().unwrap_or_default();
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("UpstreamRequest")
            .field("method", &self.method)
            .field("url", &path)
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// A translated non-streaming answer, with the token counts for the access log.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    pub body: Bytes,
    pub usage: Usage,
}

impl Translated {
    /// An OpenAI-format answer serialised as the client's body.
    pub fn json(answer: &impl serde::Serialize, usage: Usage) -> Result<Translated, String> {
        let body = serde_json::to_vec(answer).map_err(|e| e.to_string())?;
        Ok(Translated {
            body: Bytes::from(body),
            usage,
        })
    }
}

/// A stream that cannot continue (undecodable frame, provider error event). The stream actor
/// turns it into an error event followed by `[DONE]`, so SDKs raise instead of hanging.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StreamError(pub String);

/// Per-stream state machine: fed each upstream read, it appends OpenAI SSE bytes to `out`.
pub trait StreamTranslate: Send {
    /// One upstream read (any byte boundary). Everything complete in it is written to `out`,
    /// batched, so one read becomes one downstream write.
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), StreamError>;
    /// The upstream body ended. Writes whatever is pending, the finish chunk if the provider
    /// sent none, and `data: [DONE]`.
    fn finish(&mut self, out: &mut BytesMut) -> Result<(), StreamError>;
    /// Token counts seen so far, for the access log.
    fn usage(&self) -> Usage;
    /// The upstream answer's content type, told before the first read.
    fn content_type(&mut self, _content_type: Option<&HeaderValue>) {}
    /// Ends a failed stream in the client's format: by default an OpenAI error event (SDKs
    /// raise it as an APIError) and `data: [DONE]`.
    fn write_error(&mut self, out: &mut BytesMut, message: &str) {
        oai::write_error_event(out, message);
        oai::write_done(out);
    }
}

/// The four translation directions plus URL and signing, for one provider. Built once per
/// plugin config when the config is loaded, shared by every request of the route.
pub trait Translate: Send + Sync {
    /// Compiles the plugin config (URLs, header values): the one place a provider's required
    /// options are checked (config validation asks it too, for the field paths).
    fn from_config(config: &AiProxyConfig) -> Result<Self, DriverError>
    where
        Self: Sized;

    /// Whether this provider serves `route_type` in OpenAI format. By default the three routes
    /// most providers serve: chat, completions and embeddings.
    fn supports(&self, route_type: RouteType) -> bool {
        default_routes(route_type)
    }

    /// The absolute upstream URL for this request (query included).
    fn url(&self, ctx: &RequestCtx<'_>) -> Result<String, GatewayError>;

    /// Provider headers besides auth (e.g. `anthropic-version`).
    fn headers(&self, _ctx: &RequestCtx<'_>, _out: &mut Vec<(HeaderName, HeaderValue)>) {}

    /// OpenAI request (options merged, `model` and `stream` already set) -> provider body.
    fn request(
        &self,
        ctx: &RequestCtx<'_>,
        body: Map<String, Value>,
    ) -> Result<Value, GatewayError>;

    /// Whether [`Translate::request`] is [`openai::request`] for `route_type`: it reads and
    /// sets only the top-level fields [`openai::REQUEST_FIELDS`] names, so the gateway may pass
    /// every other field on as the client wrote it.
    fn openai_body(&self, _route_type: RouteType) -> bool {
        false
    }

    /// Provider 200 body -> OpenAI body. `Err` is the reason in Kong's
    /// `transformation failed from type <provider>://<route_type>: <reason>`.
    fn response(&self, ctx: &RequestCtx<'_>, body: Bytes) -> Result<Translated, String>;

    /// A fresh state machine for one streamed answer.
    fn stream(&self, ctx: &RequestCtx<'_>) -> Box<dyn StreamTranslate>;

    /// A non-200 provider body -> what the client sees. Kong passes provider errors through;
    /// we keep JSON bodies as they are and wrap anything else so clients always get JSON.
    fn error(&self, status: StatusCode, body: Bytes) -> Bytes {
        passthrough_error(status, body)
    }

    /// Last step before sending, over the final body (AWS SigV4 for Bedrock).
    fn sign(&self, _ctx: &RequestCtx<'_>, _req: &mut UpstreamRequest) -> Result<(), GatewayError> {
        Ok(())
    }

    /// `preserve` and native pass-through routes: the provider's API host as
    /// `https://host:443`, to which the client's own path is appended. `None` when there is no
    /// default host (a self-hosted model) or it cannot be named (Bedrock without a region).
    fn api_base(&self, _options: &ModelOptions) -> Option<String> {
        None
    }

    /// `preserve` routes with a configured `upstream_path`: the path sent upstream.
    fn preserve_path(&self, _options: &ModelOptions, upstream_path: &str) -> String {
        upstream_path.to_string()
    }

    /// A bearer token that has to be fetched over the network first (GCP service accounts).
    fn token_source(&self) -> Option<std::sync::Arc<dyn TokenSource>> {
        None
    }

    /// Where an OpenAI-API route type (files, audio, realtime, ...) goes on providers that
    /// serve that API as is; `None` elsewhere.
    fn api_endpoint(&self, _ctx: &RequestCtx<'_>) -> Option<ApiEndpoint> {
        None
    }
}

/// The endpoint of an OpenAI-API route type: the URL the client's sub-path is appended to,
/// and the query pairs the provider needs (Azure's `api-version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiEndpoint {
    pub base: String,
    pub query: Vec<(&'static str, String)>,
}

impl ApiEndpoint {
    /// `upstream_url` replaces the route type's default endpoint `root + resource`. The
    /// assistants family is rooted above its resources: an `upstream_url` of
    /// `<base>/v1/assistants` means `<base>/v1`, so threads go to `<base>/v1/threads`.
    pub fn base(ctx: &RequestCtx<'_>, default_root: &str) -> String {
        let assistants = ctx.route_type == RouteType::Assistants;
        match ctx.options.upstream_url.as_deref() {
            Some(url) => {
                let url = url.trim_end_matches('/');
                let root = url.strip_suffix("/assistants").filter(|_| assistants);
                root.unwrap_or(url).to_string()
            }
            None if assistants => default_root.to_string(),
            None => format!(
                "{default_root}{}",
                ctx.route_type.api_resource().unwrap_or_default()
            ),
        }
    }
}

/// An OAuth token obtained by exchanging a credential (a GCP service-account JWT). The logic is
/// pure; the provider actor does the HTTP exchange and caches through it.
pub trait TokenSource: Send + Sync {
    /// A token still valid at `now` (unix seconds, with a safety margin), if one is cached.
    fn cached(&self, now: u64) -> Option<String>;
    /// The token-exchange request to send when nothing valid is cached.
    fn exchange_request(&self, now: u64) -> Result<UpstreamRequest, GatewayError>;
    /// Reads the exchange's 200 answer, caches the token and returns it.
    fn store(&self, body: &[u8], now: u64) -> Result<String, GatewayError>;
}

/// `preserve` streams: bytes pass through untouched.
pub struct RawPassthrough;

impl StreamTranslate for RawPassthrough {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), StreamError> {
        out.extend_from_slice(input);
        Ok(())
    }

    fn finish(&mut self, _out: &mut BytesMut) -> Result<(), StreamError> {
        Ok(())
    }

    fn usage(&self) -> Usage {
        Usage::default()
    }
}

/// JSON error bodies pass unchanged; HTML pages and empty bodies are wrapped in the OpenAI
/// error shape with the provider's status.
pub fn passthrough_error(status: StatusCode, body: Bytes) -> Bytes {
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
        return body;
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    let message = if text.is_empty() {
        format!("upstream answered {status} with an empty body")
    } else {
        format!(
            "upstream answered {status}: {}",
            text.chars().take(512).collect::<String>()
        )
    };
    Bytes::from(
        serde_json::json!({ "error": { "message": message, "type": "upstream_error" } })
            .to_string(),
    )
}

macro_rules! providers {
    ($($name:ident => $module:ident :: $ty:ident),* $(,)?) => {
        /// One compiled driver per plugin config; closed enum dispatch over the providers.
        pub enum Driver {
            $($name($module::$ty),)*
        }

        impl Driver {
            /// Compiles the driver the plugin config names.
            pub fn from_config(config: &AiProxyConfig) -> Result<Driver, DriverError> {
                match config.model.provider {
                    $(ProviderName::$name => Ok(Driver::$name($module::$ty::from_config(config)?)),)*
                }
            }
        }

        /// Every call on a driver goes to its provider's [`Translate`] implementation.
        impl std::ops::Deref for Driver {
            type Target = dyn Translate;

            fn deref(&self) -> &(dyn Translate + 'static) {
                match self {
                    $(Driver::$name(d) => d,)*
                }
            }
        }
    };
}

providers! {
    Openai => openai::OpenAi,
    Azure => azure::Azure,
    Mistral => mistral::Mistral,
    Llama2 => llama2::Llama2,
    Anthropic => anthropic::Anthropic,
    Gemini => gemini::Gemini,
    Bedrock => bedrock::Bedrock,
    Cohere => cohere::Cohere,
    Huggingface => huggingface::HuggingFace,
}

/// Chat, completions and embeddings: what [`Translate::supports`] answers unless overridden.
pub fn default_routes(route_type: RouteType) -> bool {
    matches!(
        route_type,
        RouteType::Chat | RouteType::Completions | RouteType::Embeddings
    )
}

/// The default routes plus image generations and edits: for the providers with image models.
pub fn default_and_image_routes(route_type: RouteType) -> bool {
    default_routes(route_type)
        || matches!(
            route_type,
            RouteType::ImageGenerations | RouteType::ImageEdits
        )
}

/// A model option a provider cannot run without; reported at `model.options.<option>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingOption {
    pub option: &'static str,
    /// What needs it, in Kong's words: `azure provider`, `self-hosted providers/models`.
    pub needed_by: String,
}

impl std::fmt::Display for MissingOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "must set 'model.options.{}' for {}",
            self.option, self.needed_by
        )
    }
}

/// Why a plugin config makes no driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverError {
    /// Required model options that are not set (config validation reports each at its path).
    Missing(Vec<MissingOption>),
    /// Anything else (an unreadable service account, a value that is no header value).
    Invalid(String),
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriverError::Missing(missing) => {
                for (i, m) in missing.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{m}")?;
                }
                Ok(())
            }
            DriverError::Invalid(message) => f.write_str(message),
        }
    }
}

impl From<String> for DriverError {
    fn from(message: String) -> Self {
        DriverError::Invalid(message)
    }
}

impl From<&str> for DriverError {
    fn from(message: &str) -> Self {
        DriverError::Invalid(message.to_string())
    }
}

/// A provider's required model options, checked together so that every missing one is
/// reported at once.
pub struct Required<'a> {
    options: Option<&'a ModelOptions>,
    provider: ProviderName,
    missing: Vec<MissingOption>,
}

impl<'a> Required<'a> {
    pub fn new(config: &'a AiProxyConfig) -> Self {
        Required {
            options: config.model.options.as_ref(),
            provider: config.model.provider,
            missing: Vec::new(),
        }
    }

    /// The option `get` reads; noted missing when the config does not set it.
    pub fn option<T>(
        &mut self,
        option: &'static str,
        get: impl FnOnce(&'a ModelOptions) -> Option<T>,
    ) -> Option<T> {
        let value = self.options.and_then(get);
        if value.is_none() {
            self.missing(option);
        }
        value
    }

    /// Notes `option` missing, as the provider needs it.
    pub fn missing(&mut self, option: &'static str) {
        let needed_by = format!("{} provider", self.provider.as_str());
        self.missing.push(MissingOption { option, needed_by });
    }

    /// `upstream_url`, which a self-hosted model has no default for.
    pub fn upstream_url(&mut self) {
        if self.options.is_none_or(|o| o.upstream_url.is_none()) {
            self.missing.push(MissingOption {
                option: "upstream_url",
                needed_by: "self-hosted providers/models".into(),
            });
        }
    }

    /// `value` when nothing required is missing.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, DriverError> {
        match value {
            Some(value) if self.missing.is_empty() => Ok(value),
            _ => Err(DriverError::Missing(self.missing)),
        }
    }
}

/// Kong's URL rule for a hosted provider: `upstream_url` is the full endpoint URL, used as is;
/// otherwise `base` plus the configured `upstream_path`, else the route's own `path`.
pub fn endpoint_url(ctx: &RequestCtx<'_>, base: &str, path: &str) -> String {
    if let Some(url) = ctx.options.upstream_url.as_deref() {
        return url.to_string();
    }
    let path = ctx.options.upstream_path.as_deref().unwrap_or(path);
    format!("{base}{path}")
}

/// A self-hosted model has no default host, so `upstream_url` is required (Kong's 400 text).
pub fn self_hosted_url(ctx: &RequestCtx<'_>) -> Result<String, GatewayError> {
    ctx.options.upstream_url.clone().ok_or_else(|| {
        GatewayError::BadRequest(
            "must set 'model.options.upstream_url' for self-hosted providers/models".into(),
        )
    })
}

/// Joins a configured `upstream_url`, or a default base plus path, with extra query pairs.
/// Shared URL rules: `upstream_url` is a full endpoint URL (Kong), used as is.
pub fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return url.to_string();
    }
    let mut out = String::with_capacity(url.len() + 32);
    out.push_str(url);
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (k, v) in pairs {
        out.push(sep);
        out.push_str(&url_escape(k));
        out.push('=');
        out.push_str(&url_escape(v));
        sep = '&';
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for query values and for
/// model names spliced into URL paths (a model name must never change the upstream path).
pub fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One URL path segment from untrusted text (a model name): escaped, and never `.` or `..`,
/// so it cannot climb out of the path the provider expects.
pub fn path_segment(s: &str) -> String {
    match s {
        "." => "%2E".to_string(),
        ".." => "%2E%2E".to_string(),
        _ => url_escape(s),
    }
}

/// An `upstream_url` without a path (`http://host:port` or `.../`): a base URL to which the
/// provider's own path is appended, rather than Kong's full endpoint URL.
pub fn is_base_url(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.path() == "/" && u.query().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_pass_through_and_html_is_wrapped() {
        let json = Bytes::from_static(br#"{"error":{"code":"invalid_api_key"}}"#);
        assert_eq!(
            passthrough_error(StatusCode::UNAUTHORIZED, json.clone()),
            json
        );
        let html = Bytes::from_static(b"<html>boom</html>");
        let wrapped = passthrough_error(StatusCode::INTERNAL_SERVER_ERROR, html);
        let v: Value = serde_json::from_slice(&wrapped).unwrap();
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("<html>boom</html>"));
    }

    #[test]
    fn upstream_request_debug_hides_credentials() {
        let req = UpstreamRequest {
            method: Method::POST,
            url: "https://h/p?key=sk-query-secret".into(),
            headers: vec![(
                HeaderName::from_static("authorization"),
                HeaderValue::from_static("Bearer sk-header-secret"),
            )],
            body: Bytes::from_static(b"{\"apikey\":\"sk-body-secret\"}"),
        };
        let debug = format!("{req:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("authorization") && debug.contains("https://h/p"));
    }

    #[test]
    fn query_pairs_are_escaped_and_joined() {
        assert_eq!(
            with_query("http://h/p", &[("api-version", "2024-01-01")]),
            "http://h/p?api-version=2024-01-01"
        );
        assert_eq!(
            with_query("http://h/p?x=1", &[("k", "a b")]),
            "http://h/p?x=1&k=a%20b"
        );
        assert_eq!(url_escape("../etc/passwd?x"), "..%2Fetc%2Fpasswd%3Fx");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert!(is_base_url("http://127.0.0.1:9"));
        assert!(is_base_url("http://127.0.0.1:9/"));
        assert!(!is_base_url("http://127.0.0.1:9/v1/chat"));
        assert_eq!(path_segment("a/b:c"), "a%2Fb%3Ac");
    }
}
