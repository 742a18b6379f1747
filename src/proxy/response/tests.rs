//! The response rules without actors: a prepared request plus a provider answer in, the
//! client's reply out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::ResponseError;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::*;
use crate::proxy::request::{prepare, ClientRequest, Plan, Prepared};

fn route(route_type: &str) -> CompiledRoute {
    CompiledRoute::from_json(json!({
        "route_type": route_type,
        "model": {"provider": "openai", "name": "gpt-4o"}
    }))
}

fn prepared(route: &CompiledRoute, stream: bool) -> Prepared {
    let client = ClientRequest::post("/v1/chat/completions", &[], "");
    let body = json!({"stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    match prepare(
        route,
        &client,
        Bytes::from(body.to_string()),
        "rid".into(),
        1,
    ) {
        Ok(Plan::Upstream(p)) => p,
        _ => panic!("the request prepares"),
    }
}

fn access() -> AccessInfo {
    AccessInfo {
        request_id: "rid".into(),
        route: Arc::from("test"),
        provider: "openai",
        model: "gpt-4o".into(),
        started: Instant::now(),
        tried: None,
        consumer: None,
        dropped: Default::default(),
        target: None,
        trace_id: None,
    }
}

fn upstream(status: u16, content_type: Option<&'static str>, body: ReplyBody) -> UpstreamReply {
    UpstreamReply {
        status: StatusCode::from_u16(status).unwrap(),
        content_type: content_type.map(HeaderValue::from_static),
        relayed: vec![(
            HeaderName::from_static("retry-after"),
            HeaderValue::from_static("1"),
        )],
        body,
        latency: Duration::from_millis(5),
    }
}

fn answer(
    route_type: &str,
    stream: bool,
    reply: UpstreamReply,
) -> Result<ProxyReply, GatewayError> {
    let route = route(route_type);
    let p = prepared(&route, stream);
    super::reply(&route, &p.resolved, p.model_header, reply, access())
}

fn header<'a>(reply: &'a ProxyReply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.to_str().ok())
}

fn full_body(reply: &ProxyReply) -> &Bytes {
    match &reply.body {
        ReplyBody::Full(body) => body,
        ReplyBody::Stream(_) => panic!("expected a buffered answer"),
    }
}

#[test]
fn a_translated_answer_is_json_with_the_model_header_relayed_headers_and_usage() {
    let body = json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}});
    let reply = answer(
        "llm/v1/chat",
        false,
        upstream(
            200,
            Some("text/plain"),
            ReplyBody::Full(Bytes::from(body.to_string())),
        ),
    )
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(header(&reply, "content-type"), Some("application/json"));
    assert_eq!(header(&reply, "x-kong-llm-model"), Some("openai/gpt-4o"));
    assert_eq!(header(&reply, "retry-after"), Some("1"));
    let (_, usage, latency) = reply.access.as_ref().unwrap();
    assert_eq!(*usage, Usage::new(3, 4));
    assert_eq!(*latency, Duration::from_millis(5));
}

#[test]
fn an_untranslatable_200_is_kongs_transformation_error() {
    let err = answer(
        "llm/v1/chat",
        false,
        upstream(
            200,
            None,
            ReplyBody::Full(Bytes::from_static(b"{\"no\":1}")),
        ),
    )
    .err()
    .expect("a transformation error");
    assert_eq!(err.status_code(), 500);
    assert_eq!(
        err.to_string(),
        "transformation failed from type openai://llm/v1/chat: 'choices' not in llm/v1/chat response"
    );
}

#[test]
fn a_provider_error_keeps_its_status_and_a_non_json_body_is_wrapped() {
    let reply = answer(
        "llm/v1/chat",
        false,
        upstream(
            503,
            Some("text/html"),
            ReplyBody::Full(Bytes::from_static(b"<h1>down</h1>")),
        ),
    )
    .unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(header(&reply, "content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(full_body(&reply)).unwrap();
    assert_eq!(
        v["error"]["message"],
        "upstream answered 503 Service Unavailable: <h1>down</h1>"
    );
}

#[test]
fn preserve_passes_the_body_and_content_type_through_untouched() {
    let reply = answer(
        "preserve",
        false,
        upstream(
            200,
            Some("text/plain"),
            ReplyBody::Full(Bytes::from_static(b"not json")),
        ),
    )
    .unwrap();
    assert_eq!(header(&reply, "content-type"), Some("text/plain"));
    assert_eq!(full_body(&reply), "not json");
    assert_eq!(reply.access.as_ref().unwrap().1, Usage::default());
}

#[test]
fn streams_are_event_streams_without_caching_and_preserve_keeps_the_providers_type() {
    for (route_type, expected) in [
        ("llm/v1/chat", "text/event-stream"),
        ("preserve", "application/x-ndjson"),
    ] {
        let (_tx, rx) = mpsc::channel(1);
        let reply = answer(
            route_type,
            true,
            upstream(200, Some("application/x-ndjson"), ReplyBody::Stream(rx)),
        )
        .unwrap();
        assert_eq!(
            header(&reply, "content-type"),
            Some(expected),
            "{route_type}"
        );
        assert_eq!(
            header(&reply, "cache-control"),
            Some("no-cache"),
            "{route_type}"
        );
        assert!(reply.access.is_none(), "a stream logs itself");
    }
}

#[test]
fn the_stream_plan_follows_the_route_and_the_request() {
    let chat = route("llm/v1/chat");
    assert!(matches!(
        stream_plan(&chat, &prepared(&chat, false).resolved),
        StreamPlan::None
    ));
    assert!(matches!(
        stream_plan(&chat, &prepared(&chat, true).resolved),
        StreamPlan::Translate(_)
    ));
    let preserve = route("preserve");
    assert!(matches!(
        stream_plan(&preserve, &prepared(&preserve, true).resolved),
        StreamPlan::PassthroughIfStreamed
    ));
}
