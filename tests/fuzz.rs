//! Property tests: the decK loader, Kong's request rules and the OpenAI-family stream
//! translators never panic, whatever they are fed; and no request can move a route's upstream
//! to another host. (The codecs and the other translators have their own proptests.)

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Method;
use ai_gateway::config::ai_proxy::{AiProxyConfig, ModelOptions, RouteType};
use ai_gateway::config::load::load_deck;
use ai_gateway::providers::ollama::OllamaStream;
use ai_gateway::providers::openai::PassthroughStream;
use ai_gateway::providers::{RequestCtx, StreamTranslate};
use ai_gateway::proxy::compile::{CompiledRoute, Timeouts};
use ai_gateway::proxy::request::{prepare, ClientRequest, Plan};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

// ---- decK loader -------------------------------------------------------------------------

const DEMO_DECK: &str = include_str!("../settings/kong.yaml");

/// Env lookup for the loader: every `DECK_` name is set, to a value with YAML-hostile text.
fn env(name: &str) -> Option<String> {
    name.starts_with("DECK_A").then(|| "v: [\n\"'".to_string())
}

const DECK_KEYS: &[&str] = &[
    "_format_version",
    "_info",
    "services",
    "routes",
    "plugins",
    "name",
    "id",
    "url",
    "protocol",
    "host",
    "port",
    "path",
    "paths",
    "methods",
    "hosts",
    "headers",
    "strip_path",
    "service",
    "route",
    "enabled",
    "read_timeout",
    "connect_timeout",
    "config",
    "route_type",
    "model",
    "provider",
    "options",
    "auth",
    "header_name",
    "header_value",
    "param_name",
    "param_value",
    "param_location",
    "upstream_url",
    "upstream_path",
    "max_tokens",
    "temperature",
    "llama2_format",
    "response_streaming",
    "max_request_body_size",
    "bedrock",
    "aws_region",
];

const DECK_STRINGS: &[&str] = &[
    "3.0",
    "ai-proxy",
    "openai",
    "azure",
    "bedrock",
    "llama2",
    "ollama",
    "llm/v1/chat",
    "llm/v1/embeddings",
    "preserve",
    "query",
    "/x",
    "~/m/(?<model>[^/]+)$",
    "~/[",
    "http://127.0.0.1:1/v1",
    "$(uri_captures.model)",
    "${{ env \"DECK_A\" }}",
    "${{ env \"NOPE\" }}",
    "",
];

fn deck_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(DECK_STRINGS).prop_map(|s| json!(s)),
        ".{0,12}".prop_map(Value::String),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ]
}

/// decK-shaped documents: the loader's own keys and values, in any arrangement.
fn deck_value() -> impl Strategy<Value = Value> {
    deck_leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(DECK_KEYS), inner), 0..6).prop_map(
                |pairs| {
                    Value::Object(
                        pairs
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect::<Map<_, _>>(),
                    )
                }
            ),
        ]
    })
}

/// Edits to apply to a valid file: (position, kind, byte).
fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec((any::<usize>(), 0u8..4, any::<u8>()), 1..8)
}

fn mutate(base: &str, edits: &[(usize, u8, u8)]) -> String {
    let mut bytes = base.as_bytes().to_vec();
    for &(pos, kind, byte) in edits {
        let at = pos % (bytes.len() + 1);
        match kind {
            0 => bytes.insert(at, byte),
            1 if at < bytes.len() => {
                bytes.remove(at);
            }
            2 if at < bytes.len() => bytes[at] = byte,
            // Cut the file there: a half-written file.
            _ => bytes.truncate(at),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn loader_survives_any_text(text in ".{0,400}") {
        let _ = load_deck(&text, &env);
    }

    #[test]
    fn loader_survives_mutated_valid_files(edits in edits()) {
        let _ = load_deck(&mutate(DEMO_DECK, &edits), &env);
    }

    #[test]
    fn loader_survives_deck_shaped_documents(doc in deck_value()) {
        let mut doc = doc;
        if let Value::Object(map) = &mut doc {
            map.insert("_format_version".into(), json!("3.0"));
        }
        let _ = load_deck(&doc.to_string(), &env);
    }
}

// ---- request pipeline --------------------------------------------------------------------

const UPSTREAM: &str = "http://127.0.0.1:7/v1/chat/completions";

/// Routes covering the request rules' branches; each with the host its upstream must stay on.
fn routes() -> Vec<(CompiledRoute, Option<&'static str>)> {
    let configs = [
        (
            json!({"route_type": "llm/v1/chat",
                   "auth": {"header_name": "Authorization", "header_value": "Bearer k"},
                   "model": {"provider": "openai", "name": "gpt-4o", "options": {"upstream_url": UPSTREAM, "max_tokens": 5}}}),
            Some("127.0.0.1:7"),
        ),
        (
            json!({"route_type": "llm/v1/chat", "response_streaming": "always",
                   "auth": {"param_name": "key", "param_value": "k", "param_location": "query", "allow_override": true},
                   "model": {"provider": "openai", "options": {"upstream_url": UPSTREAM}}}),
            Some("127.0.0.1:7"),
        ),
        (
            json!({"route_type": "llm/v1/completions",
                   "auth": {"param_name": "key", "param_value": "k", "param_location": "body"},
                   "model": {"provider": "openai", "name": "$(headers.x-model)"}}),
            Some("api.openai.com:443"),
        ),
        (
            json!({"route_type": "llm/v1/embeddings", "model": {"provider": "openai", "name": "e"}}),
            Some("api.openai.com:443"),
        ),
        (
            json!({"route_type": "llm/v1/chat",
                   "model": {"provider": "llama2", "name": "llama3", "options": {"llama2_format": "ollama", "upstream_url": "http://127.0.0.1:7/api/chat"}}}),
            Some("127.0.0.1:7"),
        ),
        (
            json!({"route_type": "llm/v1/chat", "auth": {"header_name": "api-key", "header_value": "k"},
                   "model": {"provider": "azure", "name": "gpt-4o", "options": {"azure_instance": "inst", "azure_deployment_id": "dep"}}}),
            Some("inst.openai.azure.com:443"),
        ),
        (
            json!({"route_type": "llm/v1/chat",
                   "auth": {"aws_access_key_id": "AKID", "aws_secret_access_key": "s"},
                   "model": {"provider": "bedrock", "options": {"bedrock": {"aws_region": "us-east-1"}, "upstream_url": "http://127.0.0.1:7"}}}),
            Some("127.0.0.1:7"),
        ),
        (
            json!({"route_type": "preserve", "model": {"provider": "openai", "options": {"upstream_url": "http://127.0.0.1:7"}}}),
            Some("127.0.0.1:7"),
        ),
        (
            // The operator lets the client choose the instance: only then may the host vary.
            json!({"route_type": "llm/v1/chat",
                   "model": {"provider": "azure", "name": "gpt-4o", "options": {"azure_instance": "$(query_params.inst)", "azure_deployment_id": "$(uri_captures.dep)"}}}),
            None,
        ),
    ];
    let t = Duration::from_secs(1);
    configs
        .into_iter()
        .map(|(config, host)| {
            let config: AiProxyConfig = serde_json::from_value(config).unwrap();
            let timeouts = Timeouts {
                connect: t,
                read: t,
                write: t,
            };
            (
                CompiledRoute::new("fuzz", Arc::new(config), timeouts).unwrap(),
                host,
            )
        })
        .collect()
}

const HEADER_NAMES: &[&str] = &[
    "authorization",
    "api-key",
    "x-api-key",
    "connection",
    "content-type",
    "host",
    "x-model",
    "te",
    "x-anything",
];

const BODY_KEYS: &[&str] = &[
    "model",
    "messages",
    "prompt",
    "input",
    "stream",
    "stream_options",
    "include_usage",
    "role",
    "content",
    "tools",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "key",
];

fn body_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        prop::sample::select(
            &[
                "user",
                "system",
                "assistant",
                "tool",
                "..",
                "a/b?c#d",
                "gpt-4o"
            ][..]
        )
        .prop_map(|s| json!(s)),
        ".{0,10}".prop_map(Value::String),
        any::<i64>().prop_map(|n| json!(n)),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(BODY_KEYS), inner), 0..6).prop_map(
                |pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            ),
        ]
    })
}

fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        body_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn client_headers() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    prop::collection::vec((prop::sample::select(HEADER_NAMES), "[ -~]{0,20}"), 0..6)
}

fn client(path: String, query: String, headers: &[(&'static str, String)]) -> ClientRequest {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            map.append(HeaderName::from_static(name), value);
        }
    }
    ClientRequest {
        method: Method::POST,
        path,
        query,
        headers: map,
        captures: vec![("dep".into(), "d".into()), ("model".into(), "m/..".into())],
        route_path_len: 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn request_rules_survive_any_request_and_keep_the_upstream_host(
        body in body_bytes(),
        headers in client_headers(),
        path in "/[ -~]{0,30}",
        query in "[ -~]{0,30}",
    ) {
        let client = client(path, query, &headers);
        for (route, host) in routes() {
            let Ok(Plan::Upstream(prepared)) = prepare(&route, &client, Bytes::from(body.clone()), "rid".into(), 1) else {
                continue;
            };
            let url = &prepared.upstream.url;
            let uri: Result<actix_web::http::Uri, _> = url.parse();
            if let Some(host) = host {
                // An unparsable URL fails the upstream call; a parsable one keeps the host.
                if let Ok(uri) = uri {
                    prop_assert_eq!(uri.authority().map(|a| a.as_str()), Some(host), "{}", url);
                }
            }
        }
    }
}

// ---- stream translators -----------------------------------------------------------------

const SSE_PIECES: &[&str] = &[
    "data: ",
    "data:",
    "[DONE]",
    "{\"choices\":[{\"delta\":{\"content\":\"x\"}}]}",
    "{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":-2}}",
    "\"usage\":{",
    "{\"error\":{\"message\":\"boom\"}}",
    "{\"error\"",
    "event: ping",
    ": comment",
    "id: 1",
    "retry: x",
    "\n",
    "\n\n",
    "\r\n",
    "\r",
    "\u{feff}",
    "é",
];

const NDJSON_PIECES: &[&str] = &[
    "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"x\"},\"done\":false}",
    "{\"model\":\"m\",\"response\":\"y\",\"done\":false}",
    "{\"done\":true,\"done_reason\":\"length\",\"prompt_eval_count\":3,\"eval_count\":4}",
    "{\"done\":true,\"eval_count\":-1}",
    "{\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":{\"a\":1}}}]},\"done\":false}",
    "{\"message\":{\"tool_calls\":[{\"function\":{}}]}}",
    "{\"error\":\"boom\"}",
    "{\"done\":\"yes\"}",
    "[1,2]",
    "null",
    "{",
    "}",
    "\n",
    "\r\n",
    " ",
];

/// Byte streams made of protocol pieces and noise, with their read boundaries.
fn pieces(vocabulary: &'static [&'static str]) -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    let piece = prop_oneof![
        4 => prop::sample::select(vocabulary).prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ];
    (
        prop::collection::vec(piece, 0..40).prop_map(|p| p.concat()),
        prop::collection::vec(1usize..64, 1..16),
    )
}

/// Feeds `input` in reads of the given sizes, then ends the stream; returns the output.
fn run(t: &mut dyn StreamTranslate, input: &[u8], reads: &[usize]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut rest = input;
    for size in reads.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at((*size).min(rest.len()));
        if t.feed(now, &mut out).is_err() {
            return out.to_vec();
        }
        rest = later;
    }
    let _ = t.finish(&mut out);
    let _ = t.usage();
    out.to_vec()
}

fn ctx(options: &ModelOptions, route_type: RouteType) -> RequestCtx<'_> {
    RequestCtx {
        route_type,
        model: "m",
        stream: true,
        include_usage: true,
        options,
        client_query: "",
        request_id: "rid",
        created: 1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn openai_passthrough_stream_survives_any_upstream_bytes((input, reads) in pieces(SSE_PIECES)) {
        let out = run(&mut PassthroughStream::default(), &input, &reads);
        // It always ends with `[DONE]` or stops at an error (which the stream actor reports).
        let _ = out;
    }

    #[test]
    fn ollama_stream_survives_any_upstream_bytes((input, reads) in pieces(NDJSON_PIECES)) {
        let options = ModelOptions { max_tokens: Some(4), ..ModelOptions::default() };
        for route_type in [RouteType::Chat, RouteType::Completions] {
            let out = run(&mut OllamaStream::new(&ctx(&options, route_type)), &input, &reads);
            // What it synthesises is JSON, event by event.
            let text = String::from_utf8_lossy(&out);
            for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
                if data != "[DONE]" {
                    prop_assert!(serde_json::from_str::<Value>(data).is_ok(), "{}", data);
                }
            }
        }
    }
}

/// Found by the property above: an upstream event whose data spans several `data:` lines is
/// re-emitted as one `data:` line with raw newlines in it, which breaks the client's SSE framing
/// (each line of multi-line data needs its own `data: ` prefix).
#[test]
fn openai_passthrough_keeps_multi_line_data_framed() {
    let out = run(
        &mut PassthroughStream::default(),
        b"data: {\"a\":\ndata: 1}\n\n",
        &[64],
    );
    let text = String::from_utf8_lossy(&out);
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        for line in event.lines() {
            assert!(line.starts_with("data: "), "{text:?}");
        }
    }
}
