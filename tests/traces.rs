//! OpenTelemetry traces end to end: the gateway exports to an OTLP/HTTP receiver run by the
//! test (protobuf decoded with the OTLP types), a client's `traceparent` is continued, each
//! upstream attempt gets its own span and sends its own `traceparent` to the provider.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// What the receiver got: every span, and every export body as sent.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    /// `service.name` of each resource.
    services: Vec<String>,
    bodies: Vec<Vec<u8>>,
}

/// An OTLP/HTTP receiver on a free loopback port: answers each POST with 200 and keeps what
/// it decoded. Its thread ends with the test process.
fn start_receiver() -> (u16, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Received::default()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let sink = sink.clone();
            std::thread::spawn(move || serve_exports(conn, &sink));
        }
    });
    (port, received)
}

/// Reads keep-alive HTTP/1.1 requests with a `content-length` body until the peer closes.
fn serve_exports(conn: std::net::TcpStream, sink: &Mutex<Received>) {
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_ascii_lowercase());
        }
        assert!(head[0].starts_with("post "), "receiver got {head:?}");
        let header = |name: &str| {
            head.iter()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
        };
        assert_eq!(
            header("content-type").as_deref(),
            Some("application/x-protobuf")
        );
        let length: usize = header("content-length").unwrap().parse().unwrap();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let export = ExportTraceServiceRequest::decode(&body[..]).expect("OTLP protobuf");
        {
            let mut got = sink.lock().unwrap();
            for resource in export.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        Any::StringValue(s) if kv.key == "service.name" => Some(s.clone()),
                        _ => None,
                    });
                got.services.extend(service);
                for scope in resource.scope_spans {
                    got.spans.extend(scope.spans);
                }
            }
            got.bodies.push(body);
        }
        let reply =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span's attributes as strings (ints and bools printed).
fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Any::StringValue(s) => s.clone(),
                Any::IntValue(i) => i.to_string(),
                Any::BoolValue(b) => b.to_string(),
                Any::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

/// Waits until `count` spans of `trace` arrived; returns them in start order.
fn spans_of(received: &Mutex<Received>, trace: &str, count: usize) -> Vec<Span> {
    let mut spans = Vec::new();
    let arrived = poll_until(Duration::from_secs(15), || {
        spans = received
            .lock()
            .unwrap()
            .spans
            .iter()
            .filter(|s| hex(&s.trace_id) == trace)
            .cloned()
            .collect();
        spans.len() >= count
    });
    assert!(arrived, "{} of {count} spans arrived", spans.len());
    spans.sort_by_key(|s| s.start_time_unix_nano);
    spans
}

fn traced_gateway(deck: &str, receiver: u16) -> Proc {
    // Export every 100 ms rather than every 5 s.
    traced_gateway_every(deck, receiver, "100")
}

fn traced_gateway_every(deck: &str, receiver: u16, delay_ms: &str) -> Proc {
    let endpoint = format!("http://127.0.0.1:{receiver}/v1/traces");
    start_gateway(
        &write_deck(deck),
        &[
            ("AIGW_OPENTELEMETRY__TRACES_ENDPOINT", &endpoint),
            ("AIGW_OPENTELEMETRY__SERVICE_NAME", "gateway-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", delay_ms),
        ],
    )
}

fn traced_chat(gw: &Proc, path: &str, stream: bool, trace_headers: &[(&str, &str)]) -> Response {
    let mut body = chat_body("hello", stream);
    if stream {
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    request(
        gw.port,
        "POST",
        path,
        &[&[("content-type", "application/json")], trace_headers].concat(),
        body.to_string().as_bytes(),
    )
}

/// The `traceparent` header the mock last received.
fn upstream_traceparent(mock: &Proc) -> String {
    mock_last(mock)["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent upstream: {}", mock_last(mock)))
        .to_string()
}

/// The `trace_id` of the gateway's access lines (`access: request ...`), in order, once
/// `count` of them were written.
fn access_trace_ids(gw: &Proc, count: usize) -> Vec<Option<String>> {
    let mut ids = Vec::new();
    let written = poll_until(Duration::from_secs(10), || {
        ids = gw
            .logs()
            .lines()
            .filter(|l| l.contains(" access: request "))
            .map(|l| {
                l.split(' ')
                    .find_map(|field| field.strip_prefix("trace_id="))
                    .map(str::to_string)
            })
            .collect();
        ids.len() >= count
    });
    assert!(
        written,
        "{} of {count} access lines: {}",
        ids.len(),
        gw.logs()
    );
    ids
}

/// A failed OpenAI attempt then a Bedrock one: the request span continues the client's trace,
/// each attempt is its child with the GenAI attributes, and each provider received the
/// `traceparent` of its own attempt (signed, for Bedrock).
#[test]
fn fallback_request_is_one_trace_with_a_span_per_attempt() {
    let (receiver, received) = start_receiver();
    let (openai, bedrock) = (start_mock(), start_mock());
    mock_set_faults(&openai, "status=500");
    let deck = advanced_deck(
        "{algorithm: priority, retries: 1, failover_criteria: [error, http_500, non_idempotent]}",
        &[
            format!("{{route_type: llm/v1/chat, weight: 100, auth: {{header_name: Authorization, header_value: \"Bearer sk-trace-secret\"}}, model: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"http://127.0.0.1:{}/v1/chat/completions\"}}}}}}", openai.port),
            format!("{{route_type: llm/v1/chat, weight: 10, auth: {{aws_access_key_id: AKIDTRACE, aws_secret_access_key: aws-trace-secret}}, model: {{provider: bedrock, name: \"anthropic.claude-3-haiku-20240307-v1:0\", options: {{bedrock: {{aws_region: us-east-1}}, upstream_url: \"http://127.0.0.1:{}\"}}}}}}", bedrock.port),
        ],
    );
    let gw = traced_gateway(&deck, receiver);
    let client_parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = traced_chat(
        &gw,
        "/lb/chat/completions",
        false,
        &[
            ("traceparent", &client_parent),
            ("tracestate", "vendor=abc"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let spans = spans_of(&received, CLIENT_TRACE, 3);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let (request, first, second) = (&spans[0], &spans[1], &spans[2]);
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN);
    let attrs = attributes(request);
    assert_eq!(attrs["gen_ai.operation.name"], "chat");
    assert_eq!(attrs["http.response.status_code"], "200");
    assert_eq!(attrs["gen_ai.provider.name"], "aws.bedrock");
    assert_eq!(attrs["ai_gateway.route"], "balanced");
    assert_eq!(
        attrs["gen_ai.request.model"],
        "anthropic.claude-3-haiku-20240307-v1:0"
    );
    assert!(
        attrs["ai_gateway.tried"].ends_with("bedrock/anthropic.claude-3-haiku-20240307-v1:0 200")
    );
    assert!(attrs["gen_ai.usage.output_tokens"].parse::<u64>().unwrap() > 0);

    for attempt in [first, second] {
        assert_eq!(attempt.kind, SpanKind::Client as i32);
        assert_eq!(
            attempt.parent_span_id, request.span_id,
            "attempt under request"
        );
    }
    let failed = attributes(first);
    assert_eq!(failed["gen_ai.provider.name"], "openai");
    assert_eq!(failed["gen_ai.request.model"], "gpt-4o");
    assert_eq!(failed["error.type"], "http_500");
    assert_eq!(failed["ai_gateway.target.index"], "0");
    assert_eq!(failed["server.address"], "127.0.0.1");
    assert_eq!(failed["server.port"], openai.port.to_string());
    assert_eq!(first.name, "chat gpt-4o");
    let served = attributes(second);
    assert_eq!(served["gen_ai.provider.name"], "aws.bedrock");
    assert_eq!(served["gen_ai.system"], "aws.bedrock");
    assert_eq!(
        served["gen_ai.request.model"],
        "anthropic.claude-3-haiku-20240307-v1:0"
    );
    assert!(!served["gen_ai.response.model"].is_empty());
    assert!(served["gen_ai.usage.input_tokens"].parse::<u64>().unwrap() > 0);
    assert!(served["gen_ai.usage.output_tokens"].parse::<u64>().unwrap() > 0);
    assert!(!served.contains_key("error.type"), "{served:?}");

    // Each provider saw the traceparent of its own attempt, not the client's.
    assert_eq!(
        upstream_traceparent(&openai),
        format!("00-{CLIENT_TRACE}-{}-01", hex(&first.span_id))
    );
    assert_eq!(
        upstream_traceparent(&bedrock),
        format!("00-{CLIENT_TRACE}-{}-01", hex(&second.span_id))
    );
    assert_eq!(mock_last(&bedrock)["headers"]["tracestate"], "vendor=abc");
    // The access line leads to the trace.
    assert_eq!(access_trace_ids(&gw, 1), [Some(CLIENT_TRACE.to_string())]);
    let signed = mock_last(&bedrock)["headers"]["authorization"]
        .as_str()
        .unwrap()
        .to_string();
    // Signed after the traceparent went in; forwarded headers stay outside SignedHeaders
    // (src/providers/bedrock/sigv4.rs), so a hop that rewrites it cannot break the signature.
    assert!(signed.starts_with("AWS4-HMAC-SHA256 "), "{signed}");
    assert!(!signed.contains("traceparent"), "{signed}");

    // No credential reaches the collector.
    let got = received.lock().unwrap();
    assert!(got.services.iter().all(|s| s == "gateway-under-test"));
    for body in &got.bodies {
        let text = String::from_utf8_lossy(body);
        for secret in ["sk-trace-secret", "aws-trace-secret", "AKIDTRACE"] {
            assert!(!text.contains(secret), "{secret} exported");
        }
    }
}

/// A streamed answer's spans end with the stream and carry its usage; a request without a
/// `traceparent` starts a trace of its own.
#[test]
fn streamed_answer_spans_end_with_the_stream() {
    let (receiver, received) = start_receiver();
    let mock = start_mock();
    let deck = deck(&[("streamed", "/chat", &openai_route(mock.port, ""))]);
    let gw = traced_gateway(&deck, receiver);
    let r = traced_chat(
        &gw,
        "/chat/chat/completions",
        true,
        &[("traceparent", "not-a-traceparent")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("[DONE]"));

    let upstream = upstream_traceparent(&mock);
    let trace = upstream.split('-').nth(1).unwrap().to_string();
    assert_ne!(trace, CLIENT_TRACE);
    let spans = spans_of(&received, &trace, 2);
    let (request, attempt) = (&spans[0], &spans[1]);
    assert!(request.parent_span_id.is_empty(), "a new trace has a root");
    assert_eq!(attempt.parent_span_id, request.span_id);
    assert_eq!(upstream, format!("00-{trace}-{}-01", hex(&attempt.span_id)));
    for span in [request, attempt] {
        let attrs = attributes(span);
        assert_eq!(attrs["gen_ai.provider.name"], "openai");
        assert_eq!(attrs["gen_ai.request.model"], "gpt-4o");
        assert_eq!(attrs["ai_gateway.stream.completed"], "true", "{attrs:?}");
        // The mock's chunks name the model they were asked for.
        assert_eq!(attrs["gen_ai.response.model"], "gpt-4o", "{attrs:?}");
        assert!(attrs["gen_ai.usage.output_tokens"].parse::<u64>().unwrap() > 0);
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    }
    // The stream's access line, written when it ends, names the exported trace.
    assert_eq!(access_trace_ids(&gw, 1), [Some(hex(&request.trace_id))]);
}

/// With tracing off the client's `traceparent` goes upstream unchanged.
#[test]
fn without_tracing_the_client_traceparent_is_forwarded() {
    let mock = start_mock();
    let deck = deck(&[("plain", "/chat", &openai_route(mock.port, ""))]);
    let gw = start_gateway(&write_deck(&deck), &[]);
    let client_parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = traced_chat(
        &gw,
        "/chat/chat/completions",
        false,
        &[("traceparent", &client_parent)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream_traceparent(&mock), client_parent);
    assert_eq!(
        access_trace_ids(&gw, 1),
        [None],
        "no trace_id without tracing"
    );
}

/// Spans still queued when the gateway is told to stop are exported before it exits.
#[test]
fn queued_spans_are_exported_at_shutdown() {
    let (receiver, received) = start_receiver();
    let mock = start_mock();
    let deck = deck(&[("plain", "/chat", &openai_route(mock.port, ""))]);
    // A batch delay far longer than the test: only the shutdown flush can export.
    let mut gw = traced_gateway_every(&deck, receiver, "600000");
    let r = traced_chat(&gw, "/chat/chat/completions", false, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(300));
    assert!(received.lock().unwrap().spans.is_empty(), "exported early");
    gw.signal("TERM");
    let exited = poll_until(Duration::from_secs(15), || {
        gw.child.try_wait().ok().flatten().is_some()
    });
    assert!(exited, "gateway did not exit");
    let spans = received.lock().unwrap().spans.len();
    assert_eq!(spans, 2, "request and attempt spans");
}

/// A collector that cannot be reached costs no request: answers are served and the export
/// failure is logged.
#[test]
fn unreachable_collector_does_not_affect_requests() {
    let closed = free_port();
    let mock = start_mock();
    let deck = deck(&[("plain", "/chat", &openai_route(mock.port, ""))]);
    let gw = traced_gateway(&deck, closed);
    for _ in 0..3 {
        let r = traced_chat(&gw, "/chat/chat/completions", false, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        gw.wait_for_log("BatchSpanProcessor.ExportError", Duration::from_secs(15)),
        "no export failure logged: {}",
        gw.logs()
    );
}

/// Requests the handler refuses before a route actor sees them get a server span too, with
/// the status, the refusal as `error.type` and the route when one matched; their access lines
/// name that trace.
#[test]
fn refused_requests_get_a_server_span() {
    let (receiver, received) = start_receiver();
    let mock = start_mock();
    let deck = consumer_deck(
        mock.port,
        &[("/chat", plugin("key-auth", "{key_names: [apikey]}"))],
        "consumers:\n  - username: alice\n    keyauth_credentials: [{key: trace-alice-key}]\n",
    );
    let gw = traced_gateway(&deck, receiver);
    let client_parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = traced_chat(
        &gw,
        "/chat/chat/completions",
        false,
        &[("traceparent", &client_parent), ("apikey", "wrong-key")],
    );
    assert_eq!(r.status, 401, "{}", r.text());
    let spans = spans_of(&received, CLIENT_TRACE, 1);
    let refused = &spans[0];
    assert_eq!(refused.kind, SpanKind::Server as i32);
    assert_eq!(hex(&refused.parent_span_id), CLIENT_SPAN);
    assert_eq!(refused.name, "POST chat");
    let attrs = attributes(refused);
    assert_eq!(attrs["http.response.status_code"], "401");
    assert_eq!(attrs["error.type"], "unauthorized");
    assert_eq!(attrs["ai_gateway.route"], "chat");
    assert_eq!(attrs["url.path"], "/chat/chat/completions");
    assert!(!attrs.contains_key("gen_ai.operation.name"), "{attrs:?}");
    assert!(mock_last(&mock).is_null(), "nothing went upstream");

    let r = traced_chat(&gw, "/nowhere", false, &[]);
    assert_eq!(r.status, 404, "{}", r.text());
    let ids = access_trace_ids(&gw, 2);
    assert_eq!(ids[0].as_deref(), Some(CLIENT_TRACE));
    let unrouted = ids[1]
        .clone()
        .expect("the 404's access line names its trace");
    let spans = spans_of(&received, &unrouted, 1);
    let attrs = attributes(&spans[0]);
    assert_eq!(spans[0].name, "POST");
    assert_eq!(attrs["http.response.status_code"], "404");
    assert_eq!(attrs["error.type"], "no_route");
    assert!(!attrs.contains_key("ai_gateway.route"), "{attrs:?}");
    // The secret-looking key never reaches the collector.
    let got = received.lock().unwrap();
    assert!(got
        .bodies
        .iter()
        .all(|b| !String::from_utf8_lossy(b).contains("wrong-key")));
}
