//! The OpenAI-API route types (responses, files, batches, assistants, audio, images): the
//! client speaks the provider's own REST API, so the gateway forwards method, sub-path, query
//! and body, and applies only Kong's rules (auth, model, configured options). Bodies it does
//! not need to change go out byte for byte.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::Method;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::compile::CompiledRoute;
use super::request::{
    add_driver_headers, bad, check_input, check_model_name, finish_url, forwarded_headers,
    inject_body_param, is_json_type, resolve_templates, select_model, signed, ClientRequest,
    PassThrough, Prepared, Resolved,
};
use super::upload::{self, FormRules, Upload};
use crate::config::ai_proxy::{ModelOptions, ResponseStreaming, RouteType};
use crate::error::GatewayError;
use crate::providers::{with_query, UpstreamRequest};

/// The first path segments the assistants family serves under its one route.
const ASSISTANT_FAMILY: [&str; 3] = ["assistants", "threads", "vector_stores"];

/// An object id or sub-resource name spliced into an upstream path: checked on the raw client
/// path, so `%2e%2e`, `%2f` and every other escape are refused before anything decodes them.
fn is_safe_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// The part of the client's raw path that goes upstream after the route type's endpoint:
/// `/file-abc/content` for `GET <prefix>/files/file-abc/content`. For the assistants family it
/// is relative to the family root (`/threads/thread_1/runs`). One-operation route types (audio,
/// images) forward nothing, like chat.
pub fn sub_path(
    route_type: RouteType,
    raw_path: &str,
    matched_len: usize,
) -> Result<String, GatewayError> {
    if !route_type.is_rest() {
        return Ok(String::new());
    }
    let rest = raw_path.get(matched_len..).unwrap_or_default();
    if !rest.is_empty() && !rest.starts_with('/') {
        return Err(bad(format!(
            "path '{raw_path}' is not a {} resource",
            route_type.as_str()
        )));
    }
    let mut segments: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest[1..].split('/').collect()
    };
    let resource = route_type
        .api_resource()
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or_default();
    if route_type == RouteType::Assistants {
        // A prefix that names a family resource (`/v1/threads` + `/thread_1/runs`) puts it in
        // front; a prefix before the SDK's resource path (`/ai` + `/threads/...`) leaves the
        // path as it is; anything else is under `/assistants`.
        let prefix_names = raw_path[..matched_len.min(raw_path.len())]
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .filter(|last| ASSISTANT_FAMILY.contains(last));
        match prefix_names {
            Some(name) => segments.insert(0, name),
            None if segments
                .first()
                .is_some_and(|s| ASSISTANT_FAMILY.contains(s)) => {}
            None => segments.insert(0, resource),
        }
    } else if segments.first() == Some(&resource) {
        // A prefix followed by the SDK's resource path: `/myfiles` + `/files/file-abc`.
        segments.remove(0);
    }
    if let Some(bad_segment) = segments.iter().find(|s| !is_safe_segment(s)) {
        return Err(bad(format!(
            "invalid path segment '{bad_segment}': ids may only contain A-Z, a-z, 0-9, '_', '.', ':' and '-'"
        )));
    }
    Ok(segments.iter().map(|s| format!("/{s}")).collect())
}

/// What a JSON request of an API route type must carry; `None` for calls with no model rule.
fn creates_with_model(route_type: RouteType, method: &Method, sub: &str) -> bool {
    if method != Method::POST {
        return false;
    }
    match route_type {
        RouteType::Responses => sub.is_empty(),
        RouteType::Assistants => sub == "/assistants",
        RouteType::AudioSpeech | RouteType::ImageGenerations => true,
        _ => false,
    }
}

fn non_empty_string(map: &Map<String, Value>, key: &str) -> bool {
    map.get(key)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

/// Per route type, the fields a create call cannot do without.
fn check_required(route_type: RouteType, map: &Map<String, Value>) -> Result<(), GatewayError> {
    match route_type {
        RouteType::Responses => check_input(map)?,
        RouteType::AudioSpeech => {
            if !non_empty_string(map, "input") {
                return Err(bad("request body doesn't contain valid input"));
            }
            if !map.contains_key("voice") {
                return Err(bad("request body doesn't contain a voice"));
            }
        }
        RouteType::ImageGenerations if !non_empty_string(map, "prompt") => {
            return Err(bad("request body doesn't contain valid prompts"));
        }
        _ => {}
    }
    Ok(())
}

/// Kong's configured knobs, in the Responses API's names.
fn merge_response_options(options: &ModelOptions, map: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            map.insert(key.into(), v);
            changed = true;
        }
    };
    set("max_output_tokens", options.max_tokens.map(Value::from));
    set("temperature", options.temperature.map(Value::from));
    set("top_p", options.top_p.map(Value::from));
    changed
}

/// The body rules of one API call: the body to send (the client's bytes unless a rule changed
/// it), the model the call uses (for the header and the log) and whether it streams.
struct Body {
    bytes: Bytes,
    model: String,
    stream: bool,
}

fn json_body(
    route: &CompiledRoute,
    client: &ClientRequest,
    sub: &str,
    body: Bytes,
    configured_model: Option<String>,
    options: &ModelOptions,
) -> Result<Body, GatewayError> {
    let route_type = route.route_type();
    let empty = body.iter().all(u8::is_ascii_whitespace);
    if matches!(client.method, Method::GET | Method::DELETE | Method::HEAD) {
        if !empty {
            return Err(bad(format!("{} requests take no body", client.method)));
        }
        return Ok(Body {
            bytes: Bytes::new(),
            model: String::new(),
            stream: false,
        });
    }
    let creates = creates_with_model(route_type, &client.method, sub);
    let bad_json =
        || bad("content-type header does not match request body, or bad JSON formatting");
    let mut map = if empty {
        Map::new()
    } else if !client
        .headers
        .get(header::CONTENT_TYPE)
        .is_none_or(is_json_type)
    {
        return Err(bad_json());
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => map,
            _ => return Err(bad_json()),
        }
    };
    if empty && !creates {
        return Ok(Body {
            bytes: body,
            model: String::new(),
            stream: false,
        });
    }
    let mut changed = false;
    let model = if creates {
        check_required(route_type, &map)?;
        let model = select_model(configured_model, &map)?;
        check_model_name(&model)?;
        if map.get("model").and_then(Value::as_str) != Some(model.as_str()) {
            map.insert("model".into(), Value::String(model.clone()));
            changed = true;
        }
        model
    } else {
        // Other calls may name a model (a run's override): the configured one still wins.
        match (configured_model, map.get("model").and_then(Value::as_str)) {
            (Some(conf), Some(req)) if conf != req => {
                return Err(bad(format!("cannot use own model - must be: {conf}")))
            }
            (_, Some(req)) => req.to_string(),
            (_, None) => String::new(),
        }
    };
    let client_stream = map.get("stream").and_then(Value::as_bool) == Some(true);
    let stream = match route.config.response_streaming {
        ResponseStreaming::Deny if client_stream => {
            return Err(bad("response streaming is not enabled for this LLM"))
        }
        ResponseStreaming::Always if route_type == RouteType::Responses && creates => {
            if !client_stream {
                map.insert("stream".into(), Value::Bool(true));
                changed = true;
            }
            true
        }
        _ => client_stream,
    };
    if creates && route_type == RouteType::Responses {
        changed |= merge_response_options(options, &mut map);
    }
    let mut value = Value::Object(map);
    if route.auth.param.is_some() {
        inject_body_param(&route.auth, &mut value);
        changed = true;
    }
    let bytes = if changed {
        Bytes::from(serde_json::to_vec(&value).map_err(|e| GatewayError::Internal(e.to_string()))?)
    } else {
        body
    };
    Ok(Body {
        bytes,
        model,
        stream,
    })
}

/// The upstream URL of one API call: the provider's endpoint for the route type, the client's
/// sub-path, the provider's query pairs, then the client's query and query auth.
pub(super) fn upstream_url(
    route: &CompiledRoute,
    resolved: &Resolved,
    sub: &str,
    client_query: &str,
) -> Result<String, GatewayError> {
    let endpoint = route.driver.api_endpoint(&resolved.ctx()).ok_or_else(|| {
        bad(format!(
            "provider '{}' does not support route_type '{}'",
            route.provider.as_str(),
            resolved.route_type.as_str()
        ))
    })?;
    let query: Vec<(&str, &str)> = endpoint
        .query
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let url = with_query(&format!("{}{sub}", endpoint.base), &query);
    Ok(finish_url(&route.auth, url, client_query))
}

pub(super) fn resolved(
    route: &CompiledRoute,
    client: &ClientRequest,
    model: String,
    options: Arc<ModelOptions>,
    stream: bool,
    request_id: Arc<str>,
    created: u64,
) -> Resolved {
    Resolved {
        route_type: route.route_type(),
        model,
        options,
        stream,
        include_usage: false,
        client_query: client.query.clone(),
        request_id,
        created,
        format: route.client_format,
        dropped: Vec::new(),
        input_estimate: 0,
        responses_echo: serde_json::Map::new(),
    }
}

/// The upstream request of a JSON (or body-less) API call.
pub(super) fn prepare_api(mut input: PassThrough<'_>) -> Result<Prepared, GatewayError> {
    let (route, client) = (input.route, input.client);
    if !route.provider.speaks_openai_api() {
        return prepare_translated_image(input);
    }
    let body = std::mem::take(&mut input.body);
    let configured_model = input.configured_model.take();
    let sub = sub_path(route.route_type(), &client.path, client.route_path_len)?;
    let Body {
        bytes,
        model,
        stream,
    } = json_body(route, client, &sub, body, configured_model, &input.options)?;
    let resolved = input.resolved(model, stream);
    let mut headers = forwarded_headers(&route.auth, &client.headers);
    if !bytes.is_empty() {
        headers.push((
            header::CONTENT_TYPE,
            client
                .headers
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or(HeaderValue::from_static("application/json")),
        ));
    }
    finish(route, client, &sub, resolved, headers, bytes)
}

/// An image request for a provider with its own image models (Gemini, Bedrock): the JSON or
/// multipart body is read into the OpenAI fields (files as base64, which those providers' JSON
/// needs, so an edit is read whole within `max_request_body_size`), Kong's model rule applies,
/// and the provider driver translates it like chat.
fn prepare_translated_image(mut input: PassThrough<'_>) -> Result<Prepared, GatewayError> {
    let (route, client) = (input.route, input.client);
    let body = std::mem::take(&mut input.body);
    let content_type = client
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let map =
        match upload::boundary(content_type) {
            Some(boundary) => upload::read_form(body, boundary).map_err(GatewayError::from)?,
            None if client
                .headers
                .get(header::CONTENT_TYPE)
                .is_none_or(is_json_type) =>
            {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(Value::Object(map)) => map,
                    _ => return Err(bad(
                        "content-type header does not match request body, or bad JSON formatting",
                    )),
                }
            }
            None => return Err(bad("image requests are JSON or multipart/form-data")),
        };
    if !non_empty_string(&map, "prompt") {
        return Err(bad("request body doesn't contain valid prompts"));
    }
    let model = select_model(input.configured_model.take(), &map)?;
    check_model_name(&model)?;
    let resolved = input.resolved(model, false);
    let ctx = resolved.ctx();
    let mut value = route.driver.request(&ctx, map)?;
    inject_body_param(&route.auth, &mut value);
    let url = route.driver.url(&ctx)?;
    let mut headers = forwarded_headers(&route.auth, &client.headers);
    headers.push((
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    add_driver_headers(route, &ctx, &mut headers);
    let upstream = UpstreamRequest {
        method: Method::POST,
        url: finish_url(&route.auth, url, &client.query),
        headers,
        body: Bytes::from(
            serde_json::to_vec(&value).map_err(|e| GatewayError::Internal(e.to_string()))?,
        ),
    };
    signed(route, resolved, upstream)
}

/// The upstream request of a multipart upload, whose body streams: files pass byte for byte,
/// audio and image forms are re-encoded with Kong's model rule (the form's model is known once
/// it has been read, in the upload's state).
pub fn prepare_upload(
    route: &CompiledRoute,
    client: &ClientRequest,
    upload: Upload,
    request_id: Arc<str>,
    created: u64,
) -> Result<(Prepared, Upload), GatewayError> {
    let route_type = route.route_type();
    let (configured_model, options) = resolve_templates(route, client)?;
    let sub = sub_path(route_type, &client.path, client.route_path_len)?;
    let client_type = client
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .ok_or_else(|| bad("multipart body without a content type"))?;
    let (upload, content_type) = if route_type == RouteType::Files {
        (upload, client_type)
    } else {
        let boundary = client_type
            .to_str()
            .ok()
            .and_then(upload::boundary)
            .ok_or_else(|| bad("multipart body without a boundary"))?;
        let rules = FormRules {
            model: configured_model.clone(),
            model_required: matches!(
                route_type,
                RouteType::AudioTranscriptions | RouteType::AudioTranslations
            ),
            prompt_required: route_type == RouteType::ImageEdits,
        };
        let (upload, content_type) = upload::rewrite(upload, boundary, rules);
        let content_type = HeaderValue::from_str(&content_type)
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        (upload, content_type)
    };
    let model = configured_model.unwrap_or_default();
    let resolved = resolved(route, client, model, options, false, request_id, created);
    let mut headers = forwarded_headers(&route.auth, &client.headers);
    headers.push((header::CONTENT_TYPE, content_type));
    let prepared = finish(route, client, &sub, resolved, headers, Bytes::new())?;
    Ok((prepared, upload))
}

/// Headers, URL and signature of an API call whose body is decided.
pub(super) fn finish(
    route: &CompiledRoute,
    client: &ClientRequest,
    sub: &str,
    resolved: Resolved,
    mut headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
) -> Result<Prepared, GatewayError> {
    add_driver_headers(route, &resolved.ctx(), &mut headers);
    let upstream = UpstreamRequest {
        method: client.method.clone(),
        url: upstream_url(route, &resolved, sub, &client.query)?,
        headers,
        body,
    };
    signed(route, resolved, upstream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(route_type: RouteType, path: &str, prefix: &str) -> Result<String, GatewayError> {
        assert!(path.starts_with(prefix));
        sub_path(route_type, path, prefix.len())
    }

    /// Each (route type, client path, route prefix) is sent upstream with this sub-path.
    fn assert_subs(cases: &[(RouteType, &str, &str, &str)]) {
        for &(route_type, path, prefix, expected) in cases {
            assert_eq!(sub(route_type, path, prefix).unwrap(), expected, "{path}");
        }
    }

    #[test]
    fn rest_types_keep_the_path_after_the_prefix_without_doubling_the_resource() {
        use RouteType::{Batches, Files, Responses};
        assert_subs(&[
            (Files, "/v1/files", "/v1/files", ""),
            (
                Files,
                "/v1/files/file-abc/content",
                "/v1/files",
                "/file-abc/content",
            ),
            (Files, "/myfiles/files/file-abc", "/myfiles", "/file-abc"),
            (Files, "/openai/files", "/openai", ""),
            (
                Batches,
                "/b/batches/batch_1/cancel",
                "/b",
                "/batch_1/cancel",
            ),
            (
                Responses,
                "/r/responses/resp_1/input_items",
                "/r",
                "/resp_1/input_items",
            ),
        ]);
        assert!(sub(Files, "/v1/filesx", "/v1/files").is_err());
    }

    #[test]
    fn the_assistants_family_is_rooted_above_its_resources() {
        let cases = [
            ("/assistants", "/assistants", "/assistants"),
            (
                "/v1/assistants/asst_1",
                "/v1/assistants",
                "/assistants/asst_1",
            ),
            (
                "/ai/threads/thread_1/runs/run_1/steps",
                "/ai",
                "/threads/thread_1/runs/run_1/steps",
            ),
            ("/ai/vector_stores/vs_1", "/ai", "/vector_stores/vs_1"),
            (
                "/openai/threads/thread_1/messages",
                "/openai/threads",
                "/threads/thread_1/messages",
            ),
            ("/openai/threads", "/openai/threads", "/threads"),
        ];
        let cases = cases.map(|(path, prefix, sub)| (RouteType::Assistants, path, prefix, sub));
        assert_subs(&cases);
    }

    #[test]
    fn traversal_and_escapes_in_ids_are_refused() {
        for path in [
            "/f/files/../secrets",
            "/f/files/%2e%2e/x",
            "/f/files/a%2Fb",
            "/f/files/.",
            "/f/files/file-1//content",
            "/f/files/file 1",
            "/f/files/file-1/",
            "/f/files/%2E%2E",
            "/f/files/a@b",
        ] {
            let err = sub(RouteType::Files, path, "/f").unwrap_err();
            assert!(
                err.to_string().starts_with("invalid path segment"),
                "{path}: {err}"
            );
        }
        assert!(sub(RouteType::Assistants, "/a/threads/..", "/a").is_err());
        assert_eq!(
            sub(RouteType::Files, "/f/files/ft:file.v1-2_3", "/f").unwrap(),
            "/ft:file.v1-2_3"
        );
    }

    #[test]
    fn one_operation_types_forward_no_sub_path() {
        assert_eq!(
            sub(RouteType::AudioSpeech, "/tts/audio/speech", "/tts").unwrap(),
            ""
        );
        assert_eq!(
            sub(RouteType::ImageEdits, "/img/anything/../x", "/img").unwrap(),
            ""
        );
    }
}
