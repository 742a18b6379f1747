//! Kong's request rules, in Kong's order, as one pure function: template resolution, body
//! checks, model selection, format compatibility, the streaming decision, option merge,
//! translation, and auth injection. The result is the exact upstream request.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Method;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::compile::{CompiledAuth, CompiledRoute, ParamAuth};
use super::native::prepare_native;
use super::template::{self, TemplateSource};
use crate::config::ai_proxy::{
    DroppedFields, ModelOptions, ParamLocation, ResponseStreaming, RouteType,
};
use crate::error::GatewayError;
use crate::formats::{anthropic, responses, ClientFormat};
use crate::providers::{fields, with_query, RequestCtx, UpstreamRequest};

/// What the handler knows about the client's request.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub method: Method,
    /// The original, unstripped path.
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub captures: Vec<(String, String)>,
    /// Bytes of `path` the route's path rule matched; REST route types forward the rest.
    pub route_path_len: usize,
}

#[cfg(test)]
impl ClientRequest {
    /// A POST to `path` with these headers and query, for unit tests.
    pub(crate) fn post(path: &str, headers: &[(&str, &str)], query: &str) -> ClientRequest {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        ClientRequest {
            method: Method::POST,
            path: path.into(),
            query: query.into(),
            headers: map,
            captures: Vec::new(),
            route_path_len: 0,
        }
    }
}

/// The per-request decisions the response side needs again.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub route_type: RouteType,
    pub model: String,
    pub options: Arc<ModelOptions>,
    pub stream: bool,
    pub include_usage: bool,
    pub client_query: String,
    pub request_id: Arc<str>,
    pub created: u64,
    /// The client's format, for the answer's translation back.
    pub format: ClientFormat,
    /// Request fields the provider has no equivalent for (`x-ai-gateway-dropped-fields`).
    pub dropped: Vec<String>,
    /// The prompt's token estimate, for formats that report input tokens before the provider
    /// does (Anthropic's `message_start`).
    pub input_estimate: u64,
    /// What a translated Response object repeats of its request (empty on other routes).
    pub responses_echo: Map<String, Value>,
}

impl Resolved {
    pub fn ctx(&self) -> RequestCtx<'_> {
        RequestCtx {
            route_type: self.route_type,
            model: &self.model,
            stream: self.stream,
            include_usage: self.include_usage,
            options: &self.options,
            client_query: &self.client_query,
            request_id: &self.request_id,
            created: self.created,
        }
    }
}

/// What a client request turns into: an upstream call, or an answer the gateway gives itself
/// (Anthropic `count_tokens` for providers without a counting API).
// Moved once per request; boxing the common variant would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Plan {
    Upstream(Prepared),
    Answer(Bytes),
}

pub struct Prepared {
    pub upstream: UpstreamRequest,
    pub resolved: Resolved,
    /// `X-Kong-LLM-Model` for the response, when the plugin wants it.
    pub model_header: Option<HeaderValue>,
}

/// Headers that belong to one hop (RFC 9110 §7.6.1) or that the gateway recomputes.
const NOT_FORWARDED: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "accept-encoding",
];

/// Headers that carry a provider credential; never forwarded when the gateway injects its own.
pub(super) const CREDENTIAL_HEADERS: [&str; 4] =
    ["authorization", "api-key", "x-api-key", "x-goog-api-key"];

pub(super) fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::BadRequest(message.into())
}

/// The configured model and options with this request's templates resolved.
pub(super) fn resolve_templates(
    route: &CompiledRoute,
    client: &ClientRequest,
) -> Result<(Option<String>, Arc<ModelOptions>), GatewayError> {
    let src = TemplateSource {
        captures: &client.captures,
        headers: &client.headers,
        query: &client.query,
    };
    let configured_model = match route.config.model.name.as_deref() {
        Some(name) if route.model_templated => Some(template::resolve(name, &src).map_err(bad)?),
        Some(name) => Some(name.to_string()),
        None => None,
    };
    let options = if route.options_templated {
        Arc::new(template::resolve_options(&route.options, &src).map_err(bad)?)
    } else {
        route.options.clone()
    };
    Ok((configured_model, options))
}

/// What a pass-through rule reads: the route, the client's request and body, and what the
/// route's templates resolved.
pub(super) struct PassThrough<'a> {
    pub route: &'a CompiledRoute,
    pub client: &'a ClientRequest,
    pub body: Bytes,
    pub configured_model: Option<String>,
    pub options: Arc<ModelOptions>,
    pub request_id: Arc<str>,
    pub created: u64,
}

impl PassThrough<'_> {
    /// The call as the rule decided it (model, streaming); the rest is the route's.
    pub fn resolved(self, model: String, stream: bool) -> Resolved {
        let PassThrough {
            route,
            client,
            options,
            request_id,
            created,
            ..
        } = self;
        super::api::resolved(route, client, model, options, stream, request_id, created)
    }
}

type PassThroughRule = fn(PassThrough<'_>) -> Result<Prepared, GatewayError>;

/// Builds the upstream request for one client request on `route`.
pub fn prepare(
    route: &CompiledRoute,
    client: &ClientRequest,
    body: Bytes,
    request_id: Arc<str>,
    created: u64,
) -> Result<Plan, GatewayError> {
    let config = &route.config;
    let (configured_model, options) = resolve_templates(route, client)?;

    // Pass-through rules: the body goes on (nearly) as the client wrote it.
    let passthrough = match (config.route_type, route.client_format) {
        (RouteType::Preserve, _) => Some(prepare_preserve as PassThroughRule),
        (_, ClientFormat::ResponsesTranslated) => None,
        // The route types the client speaks the provider's own API on.
        (route_type, _) if route_type.api_resource().is_some() => {
            Some(super::api::prepare_api as PassThroughRule)
        }
        (_, ClientFormat::Native) => Some(prepare_native as PassThroughRule),
        _ => None,
    };
    if let Some(prepare) = passthrough {
        let input = PassThrough {
            route,
            client,
            body,
            configured_model,
            options,
            request_id,
            created,
        };
        return prepare(input).map(Plan::Upstream);
    }

    check_content_type(client)?;
    let column = fields::column(route.provider, &options);
    // The fields the provider drops and a body auth parameter are read too: they are parsed.
    let body_param = body_param(&route.auth).map(|p| p.name.as_str());
    let split = keeps_raw_fields(route, column)
        .then(|| {
            raw_body::split(&body, |k| {
                Some(k) == body_param || fields::droppable(column, k)
            })
        })
        .flatten();
    let (mut map, kept, shape) = match split {
        Some((map, kept, shape)) => (map, Some(kept), Some(shape)),
        None => (parse_body(&body)?, None, None),
    };
    let mut dropped = Vec::new();
    let mut input_estimate = 0;
    if route.client_format == ClientFormat::AnthropicTranslated {
        let operation = anthropic::Operation::from_path(&client.path).ok_or_else(|| {
            bad("this route speaks the Anthropic Messages API: POST .../v1/messages or .../v1/messages/count_tokens")
        })?;
        input_estimate = anthropic::request::estimate_tokens(&map);
        if operation == anthropic::Operation::CountTokens {
            let answer = serde_json::json!({ "input_tokens": input_estimate });
            return Ok(Plan::Answer(Bytes::from(answer.to_string())));
        }
        let converted = anthropic::request::to_openai(&map).map_err(bad)?;
        map = converted.body;
        dropped = converted.dropped;
        // Claude Code always sends its own model names: the route's model replaces them.
        if configured_model.is_none() {
            if let Some(model) = converted.model {
                map.insert("model".into(), Value::String(model));
            }
        }
    }
    let mut responses_echo = Map::new();
    // A translated Responses call is a chat call from here on.
    let route_type = match route.client_format {
        ClientFormat::ResponsesTranslated => {
            translated_responses_call(route, client)?;
            responses_echo = responses::request::echo(&map, &options);
            map = responses::request::to_chat(&map, route.provider.as_str()).map_err(bad)?;
            RouteType::Chat
        }
        _ => config.route_type,
    };
    let shape = shape.unwrap_or_else(|| Shape::of(&map));
    check_prompts(route_type, &shape)?;
    let model = match configured_model {
        Some(model) if route.model_overrides_client => model,
        configured => select_model(configured, &map)?,
    };
    if route_type == RouteType::Chat {
        dropped.extend(fields::dropped(column, &model, &map));
        if config.dropped_fields == DroppedFields::Reject && !dropped.is_empty() {
            return Err(bad(format!(
                "no equivalent at provider '{}' for: {} (this route sets dropped_fields: reject)",
                route.provider.as_str(),
                dropped.join(", ")
            )));
        }
    }
    #[cfg(test)]
    crate::panic_guard::hook("request", &model);
    check_model_name(&model)?;
    check_format(route_type, &shape)?;
    let client_stream = map.get("stream").and_then(Value::as_bool) == Some(true);
    let stream = match (route_type, config.response_streaming) {
        (RouteType::Embeddings, _) => false,
        (_, ResponseStreaming::Deny) if client_stream => {
            return Err(bad("response streaming is not enabled for this LLM"))
        }
        (_, ResponseStreaming::Always) => true,
        _ => client_stream,
    };
    let include_usage = stream
        && map
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
    merge_options(&options, &mut map);

    let resolved = Resolved {
        route_type,
        model,
        options,
        stream,
        include_usage,
        client_query: client.query.clone(),
        request_id,
        created,
        format: route.client_format,
        dropped,
        input_estimate,
        responses_echo,
    };
    let ctx = resolved.ctx();
    let mut upstream_body = route.driver.request(&ctx, map)?;
    inject_body_param(&route.auth, &mut upstream_body);
    let body = match kept {
        Some(kept) => kept.join(&upstream_body),
        None => serde_json::to_vec(&upstream_body),
    };
    let body = Bytes::from(body.map_err(|e| GatewayError::Internal(e.to_string()))?);
    let url = route.driver.url(&ctx)?;
    let translated = route.client_format == ClientFormat::AnthropicTranslated;
    let mut headers = if translated {
        forwarded_headers(&route.auth, &foreign_headers_removed(&client.headers))
    } else {
        forwarded_headers(&route.auth, &client.headers)
    };
    headers.push((
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    add_driver_headers(route, &ctx, &mut headers);
    // A translated client's query (the Anthropic SDK's `?beta=true`) means nothing upstream.
    let client_query = if translated {
        ""
    } else {
        client.query.as_str()
    };
    let mut upstream = UpstreamRequest {
        method: client.method.clone(),
        url: finish_url(&route.auth, url, client_query),
        headers,
        body,
    };
    route.driver.sign(&ctx, &mut upstream)?;
    let model_header = model_header(route, &resolved.model);
    Ok(Plan::Upstream(Prepared {
        upstream,
        resolved,
        model_header,
    }))
}

/// Only `POST <route>/responses` (create) translates: the other Responses calls read what the
/// provider would have stored.
fn translated_responses_call(
    route: &CompiledRoute,
    client: &ClientRequest,
) -> Result<(), GatewayError> {
    let sub = super::api::sub_path(RouteType::Responses, &client.path, client.route_path_len)?;
    if client.method == Method::POST && sub.is_empty() {
        return Ok(());
    }
    Err(bad(format!(
        "{} {}: retrieving, deleting, cancelling and listing responses needs a provider that \
         stores them; provider '{}' only chats",
        client.method,
        client.path,
        route.provider.as_str()
    )))
}

/// A client of another provider's API: its credentials (the Anthropic SDK's `x-api-key` or
/// bearer token) and that API's own headers (`anthropic-version`, `anthropic-beta`) never
/// reach the provider the route translates to.
fn foreign_headers_removed(client: &HeaderMap) -> HeaderMap {
    let mut kept = client.clone();
    let foreign: Vec<HeaderName> = client
        .keys()
        .filter(|n| {
            CREDENTIAL_HEADERS.contains(&n.as_str()) || n.as_str().starts_with("anthropic-")
        })
        .cloned()
        .collect();
    for name in foreign {
        kept.remove(name);
    }
    kept
}

/// The provider's own headers (e.g. `anthropic-version`) replace any the client sent.
pub(super) fn add_driver_headers(
    route: &CompiledRoute,
    ctx: &crate::providers::RequestCtx<'_>,
    headers: &mut Vec<(HeaderName, HeaderValue)>,
) {
    let mut own = Vec::new();
    route.driver.headers(ctx, &mut own);
    headers.retain(|(name, _)| !own.iter().any(|(n, _)| n == name));
    headers.extend(own);
}

/// `application/json` or a `+json` type, whatever the parameters.
pub fn is_json_type(content_type: &HeaderValue) -> bool {
    let value = content_type.as_bytes();
    let mime = value
        .split(|b| *b == b';')
        .next()
        .unwrap_or(value)
        .trim_ascii();
    mime.eq_ignore_ascii_case(b"application/json")
        || mime
            .len()
            .checked_sub(5)
            .is_some_and(|at| mime[at..].eq_ignore_ascii_case(b"+json"))
}

/// Kong treats a missing content type as JSON; anything else that is not JSON is refused.
fn check_content_type(client: &ClientRequest) -> Result<(), GatewayError> {
    if client
        .headers
        .get(header::CONTENT_TYPE)
        .is_none_or(is_json_type)
    {
        Ok(())
    } else {
        Err(bad_json())
    }
}

fn bad_json() -> GatewayError {
    bad("content-type header does not match request body, or bad JSON formatting")
}

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(bad_json()),
    }
}

/// Whether the body's other fields may go upstream as the client wrote them
/// ([`raw_body`]): an OpenAI client, a provider that takes the OpenAI format for this route
/// type, and no dropped field that needs a look inside the messages.
fn keeps_raw_fields(route: &CompiledRoute, column: fields::Column) -> bool {
    #[cfg(test)]
    if tests::GENERAL_PATH_ONLY.with(std::cell::Cell::get) {
        return false;
    }
    let route_type = route.config.route_type;
    route.client_format == ClientFormat::OpenAi
        && matches!(
            route_type,
            RouteType::Chat | RouteType::Completions | RouteType::Embeddings
        )
        && route.driver.openai_body(route_type)
        && !fields::looks_inside_messages(column)
}

/// A non-empty `input` string or list (embeddings, responses).
fn valid_input(input: Option<&Value>) -> bool {
    match input {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(items)) => !items.is_empty(),
        _ => false,
    }
}

/// The input check of the routes that take an `input` (responses).
pub(super) fn check_input(map: &Map<String, Value>) -> Result<(), GatewayError> {
    if valid_input(map.get("input")) {
        Ok(())
    } else {
        Err(bad("request body doesn't contain valid input"))
    }
}

/// What the prompt checks need to know about a body's `messages`, `prompt` and `input`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    /// `messages` is a non-empty array.
    pub(super) has_messages: bool,
    /// The first message (of an array) without a string `role`.
    pub(super) bad_role: Option<usize>,
    /// `prompt` is a string or a non-empty array of strings.
    pub(super) has_prompt: bool,
    /// `input` is a non-empty string or a non-empty array.
    pub(super) input_valid: bool,
}

impl Shape {
    fn of(map: &Map<String, Value>) -> Shape {
        let messages = map.get("messages").and_then(Value::as_array);
        Shape {
            has_messages: messages.is_some_and(|m| !m.is_empty()),
            bad_role: messages.and_then(|m| {
                m.iter()
                    .position(|m| m.get("role").and_then(Value::as_str).is_none())
            }),
            has_prompt: match map.get("prompt") {
                Some(Value::String(_)) => true,
                Some(Value::Array(items)) => {
                    !items.is_empty() && items.iter().all(Value::is_string)
                }
                _ => false,
            },
            input_valid: valid_input(map.get("input")),
        }
    }
}

fn check_prompts(route_type: RouteType, shape: &Shape) -> Result<(), GatewayError> {
    match route_type {
        RouteType::Embeddings if !shape.input_valid => {
            return Err(bad("request body doesn't contain valid input"));
        }
        RouteType::Embeddings => {}
        _ if !shape.has_messages && !shape.has_prompt => {
            return Err(bad("request body doesn't contain valid prompts"))
        }
        _ => {}
    }
    if let Some(i) = shape.bad_role {
        return Err(bad(format!(
            "message at position {i} is not a valid chat message: it needs a string 'role'"
        )));
    }
    Ok(())
}

/// Kong §3.3: the configured model wins; a client may repeat it or omit it.
pub(super) fn select_model(
    configured: Option<String>,
    map: &Map<String, Value>,
) -> Result<String, GatewayError> {
    let requested = map
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty());
    match (configured, requested) {
        (Some(conf), Some(req)) if conf != req => {
            Err(bad(format!("cannot use own model - must be: {conf}")))
        }
        (Some(conf), _) => Ok(conf),
        (None, Some(req)) => Ok(req.to_string()),
        (None, None) => Err(bad(
            "model parameter not found in request, nor in gateway configuration",
        )),
    }
}

/// Some providers put the model into the URL path, escaped (`providers::path_segment`); `.`
/// and `..` cannot be made safe there, since URL normalisation (WHATWG, the `url` crate) reads
/// `%2E%2E` as `..` as well and would climb out of the provider's path.
pub(super) fn check_model_name(model: &str) -> Result<(), GatewayError> {
    if model == "." || model == ".." {
        return Err(bad(format!("invalid model name '{model}'")));
    }
    Ok(())
}

fn check_format(route_type: RouteType, shape: &Shape) -> Result<(), GatewayError> {
    let detected = match (shape.has_messages, shape.has_prompt) {
        (true, true) => return Err(bad("request matches multiple LLM request formats")),
        (true, false) => RouteType::Chat,
        (false, true) => RouteType::Completions,
        (false, false) => return Ok(()),
    };
    if route_type != RouteType::Embeddings && detected != route_type {
        return Err(bad(format!(
            "[{}] message format is not compatible with [{}] route type",
            detected.as_str(),
            route_type.as_str()
        )));
    }
    Ok(())
}

/// Kong §3.4: configured inference knobs override the client's.
fn merge_options(options: &ModelOptions, map: &mut Map<String, Value>) {
    if let Some(v) = options.max_tokens {
        map.insert("max_tokens".into(), v.into());
        if map.contains_key("max_completion_tokens") {
            map.insert("max_completion_tokens".into(), v.into());
        }
    }
    if let Some(v) = options.temperature {
        map.insert("temperature".into(), v.into());
    }
    if let Some(v) = options.top_p {
        map.insert("top_p".into(), v.into());
    }
    if let Some(v) = options.top_k {
        map.insert("top_k".into(), v.into());
    }
}

/// The configured auth parameter that goes into the body, if any.
fn body_param(auth: &CompiledAuth) -> Option<&ParamAuth> {
    auth.param
        .as_ref()
        .filter(|p| p.location == ParamLocation::Body)
}

pub(super) fn inject_body_param(auth: &CompiledAuth, body: &mut Value) {
    let Some(param) = body_param(auth) else {
        return;
    };
    if let Value::Object(map) = body {
        if !(auth.allow_override && map.contains_key(&param.name)) {
            map.insert(param.name.clone(), Value::String(param.value.clone()));
        }
    }
}

/// The header names the client's `Connection` header lists: hop-by-hop as well (RFC 9110
/// §7.6.1), so a proxy must not forward them.
fn connection_nominated(client: &HeaderMap) -> Vec<String> {
    client
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

/// The client's headers minus hop-by-hop ones and, when the gateway injects auth, minus every
/// credential header (unless `allow_override` keeps the client's own under the same name);
/// then the configured auth header.
pub(super) fn forwarded_headers(
    auth: &CompiledAuth,
    client: &HeaderMap,
) -> Vec<(HeaderName, HeaderValue)> {
    let auth_name = auth.header.as_ref().map(|(n, _)| n);
    let client_keeps_auth =
        auth.allow_override && auth_name.is_some_and(|n| client.contains_key(n));
    let nominated = connection_nominated(client);
    let mut out = Vec::with_capacity(client.len() + 3);
    for (name, value) in client.iter() {
        let n = name.as_str();
        if NOT_FORWARDED.contains(&n) || nominated.iter().any(|t| t == n) {
            continue;
        }
        let is_auth_header = auth_name == Some(name);
        if is_auth_header && !client_keeps_auth {
            continue;
        }
        if auth.injects() && !is_auth_header && CREDENTIAL_HEADERS.contains(&n) {
            continue;
        }
        out.push((name.clone(), value.clone()));
    }
    if let Some((name, value)) = &auth.header {
        if !client_keeps_auth {
            out.push((name.clone(), value.clone()));
        }
    }
    out
}

/// Appends the client's query (minus keys the provider URL already set and the auth param) and
/// the query auth param.
pub(super) fn finish_url(auth: &CompiledAuth, url: String, client_query: &str) -> String {
    let query_param = auth
        .param
        .as_ref()
        .filter(|p| p.location == ParamLocation::Query);
    if client_query.is_empty() && query_param.is_none() {
        return url;
    }
    let existing: Vec<String> = url
        .split_once('?')
        .map(|(_, q)| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, _)| k.into_owned())
                .collect()
        })
        .unwrap_or_default();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut client_has_param = false;
    for (k, v) in url::form_urlencoded::parse(client_query.as_bytes()) {
        if existing.iter().any(|e| *e == k) {
            continue;
        }
        if query_param.is_some_and(|p| p.name == k) {
            client_has_param = true;
            if !auth.allow_override {
                continue;
            }
        }
        pairs.push((k.into_owned(), v.into_owned()));
    }
    if let Some(p) = query_param {
        if !(auth.allow_override && client_has_param) {
            pairs.push((p.name.clone(), p.value.clone()));
        }
    }
    let borrowed: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    with_query(&url, &borrowed)
}

pub fn model_header(route: &CompiledRoute, model: &str) -> Option<HeaderValue> {
    if !route.config.model_name_header {
        return None;
    }
    // A fixed configured model is the only model its route can use (Kong's model rule).
    if let Some(fixed) = &route.fixed_model_header {
        return Some(fixed.clone());
    }
    HeaderValue::from_str(&format!("{}{model}", route.model_header_prefix)).ok()
}

/// Scheme and authority for `preserve` and native routes: the configured `upstream_url`'s,
/// else the provider's API host.
pub(super) fn preserve_base(route: &CompiledRoute, options: &ModelOptions) -> Option<String> {
    let Some(url) = options.upstream_url.as_deref() else {
        return route.driver.api_base(options);
    };
    let parsed = url::Url::parse(url).ok()?;
    let port = parsed.port_or_known_default()?;
    Some(format!(
        "{}://{}:{port}",
        parsed.scheme(),
        parsed.host_str()?
    ))
}

/// Kong's `preserve`: the body and the client's original path go to the provider host as they
/// are; only auth is injected.
fn prepare_preserve(mut input: PassThrough<'_>) -> Result<Prepared, GatewayError> {
    let (route, client) = (input.route, input.client);
    let body = std::mem::take(&mut input.body);
    let parsed: Option<Map<String, Value>> = serde_json::from_slice(&body).ok();
    let model = input
        .configured_model
        .take()
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|m| m.get("model"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    let body = match (&route.auth.param, parsed) {
        (Some(p), Some(map)) if p.location == ParamLocation::Body => {
            let mut value = Value::Object(map);
            inject_body_param(&route.auth, &mut value);
            Bytes::from(
                serde_json::to_vec(&value).map_err(|e| GatewayError::Internal(e.to_string()))?,
            )
        }
        _ => body,
    };
    let base = preserve_base(route, &input.options).ok_or_else(|| {
        bad("must set 'model.options.upstream_url' for self-hosted providers/models")
    })?;
    let path = match input.options.upstream_path.as_deref() {
        Some(path) => route.driver.preserve_path(&input.options, path),
        None => client.path.clone(),
    };
    let resolved = input.resolved(model, false);
    passthrough_request(
        route,
        client,
        &client.headers,
        resolved,
        format!("{base}{path}"),
        body,
    )
}

/// The shared tail of the pass-through rules (`preserve`, native formats): the client's
/// headers (`client_headers`, already filtered) and content type, the gateway's auth, the
/// provider's own headers, the client's query, then signing.
pub(super) fn passthrough_request(
    route: &CompiledRoute,
    client: &ClientRequest,
    client_headers: &HeaderMap,
    resolved: Resolved,
    url: String,
    body: Bytes,
) -> Result<Prepared, GatewayError> {
    let mut headers = forwarded_headers(&route.auth, client_headers);
    if let Some(ct) = client.headers.get(header::CONTENT_TYPE) {
        headers.push((header::CONTENT_TYPE, ct.clone()));
    }
    add_driver_headers(route, &resolved.ctx(), &mut headers);
    let upstream = UpstreamRequest {
        method: client.method.clone(),
        url: finish_url(&route.auth, url, &client.query),
        headers,
        body,
    };
    signed(route, resolved, upstream)
}

/// Signs the final request and adds `X-Kong-LLM-Model` when the call names a model.
pub(super) fn signed(
    route: &CompiledRoute,
    resolved: Resolved,
    mut upstream: UpstreamRequest,
) -> Result<Prepared, GatewayError> {
    route.driver.sign(&resolved.ctx(), &mut upstream)?;
    let model_header = (!resolved.model.is_empty())
        .then(|| model_header(route, &resolved.model))
        .flatten();
    Ok(Prepared {
        upstream,
        resolved,
        model_header,
    })
}

mod raw_body;
#[cfg(test)]
mod tests;
