use super::*;
use crate::codec::eventstream::{encode_event, encode_exception};
use crate::config::ai_proxy::ModelOptions;
use crate::providers::testkit::{
    ctx, feed_at_cuts, fixture, fixture_bytes, fixture_config, fixture_json, run_pieces,
    run_stream, run_truncated, sse_payloads,
};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use proptest::prelude::*;
use std::time::{Duration, UNIX_EPOCH};

const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn config() -> AiProxyConfig {
    fixture_config("bedrock/chat/config.json")
}

fn options() -> ModelOptions {
    config().model.options.unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn driver() -> Bedrock {
    Bedrock::with_env(&config(), no_env)
}

/// The pipeline merges config options (here `max_tokens: 64`) into the body first.
fn merged(path: &str) -> Map<String, Value> {
    let mut body = fixture_json(path).as_object().unwrap().clone();
    body.insert("max_tokens".into(), json!(64));
    body
}

fn chat(body: Value) -> Value {
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, false, &options);
    driver()
        .request(&c, body.as_object().unwrap().clone())
        .unwrap()
}

fn chat_err(body: Value) -> String {
    let options = options();
    let c = ctx(RouteType::Chat, MODEL, false, &options);
    driver()
        .request(&c, body.as_object().unwrap().clone())
        .unwrap_err()
        .to_string()
}

fn translate(route_type: RouteType, model: &str, raw: &str) -> Value {
    let options = options();
    let c = ctx(route_type, model, false, &options);
    let t = driver().response(&c, Bytes::from(raw.to_string())).unwrap();
    serde_json::from_slice(&t.body).unwrap()
}

fn stream_bytes(events: &[(&str, Value)]) -> Vec<u8> {
    events
        .iter()
        .flat_map(|(name, body)| encode_event(name, body.to_string().as_bytes()).to_vec())
        .collect()
}

fn run(route_type: RouteType, input: &[u8], split: usize) -> Vec<Value> {
    let options = options();
    let c = ctx(route_type, MODEL, true, &options);
    let mut s = driver().stream(&c);
    sse_payloads(&run_stream(s.as_mut(), input, split))
}

// ---- config, URL --------------------------------------------------------------------

#[test]
fn url_escapes_the_model_and_picks_the_operation() {
    let options = options();
    let d = driver();
    let c = ctx(RouteType::Chat, MODEL, false, &options);
    assert_eq!(
            d.url(&c).unwrap(),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
    let c = ctx(RouteType::Chat, MODEL, true, &options);
    assert!(d.url(&c).unwrap().ends_with("%3A0/converse-stream"));
    let mut based = options.clone();
    based.upstream_url = Some("http://127.0.0.1:9".into());
    let c = ctx(RouteType::Chat, MODEL, true, &based);
    assert_eq!(
        d.url(&c).unwrap(),
        "http://127.0.0.1:9/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
    );
    let c = ctx(
        RouteType::Embeddings,
        "amazon.titan-embed-text-v2:0",
        false,
        &options,
    );
    assert!(d
        .url(&c)
        .unwrap()
        .ends_with("/model/amazon.titan-embed-text-v2%3A0/invoke"));
    let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude";
    let c = ctx(RouteType::Chat, arn, false, &options);
    assert_eq!(
            d.url(&c).unwrap(),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude/converse"
        );
    let c = ctx(RouteType::Chat, "..", false, &options);
    assert!(d.url(&c).unwrap().contains("/model/%2E%2E/converse"));
}

#[test]
fn upstream_url_is_used_as_is_and_upstream_path_replaces_the_path() {
    let mut options = options();
    options.upstream_url = Some("http://127.0.0.1:9/bedrock/x?y=1".into());
    let d = driver();
    let c = ctx(RouteType::Chat, MODEL, true, &options);
    assert_eq!(d.url(&c).unwrap(), "http://127.0.0.1:9/bedrock/x?y=1");
    options.upstream_path = Some("/custom/path".into());
    let c = ctx(RouteType::Chat, MODEL, true, &options);
    assert_eq!(d.url(&c).unwrap(), "http://127.0.0.1:9/custom/path?y=1");
    options.upstream_url = None;
    let c = ctx(RouteType::Chat, MODEL, true, &options);
    assert_eq!(
        d.url(&c).unwrap(),
        "https://bedrock-runtime.us-east-1.amazonaws.com/custom/path"
    );
}

#[test]
fn region_falls_back_to_env_and_missing_region_fails_per_request() {
    let mut config = config();
    config.model.options.as_mut().unwrap().bedrock = None;
    let options = config.model.options.clone().unwrap();
    let c = ctx(RouteType::Chat, MODEL, false, &options);

    let env = |name: &str| (name == "AWS_DEFAULT_REGION").then(|| "eu-west-3".to_string());
    let d = Bedrock::with_env(&config, env);
    assert!(d
        .url(&c)
        .unwrap()
        .starts_with("https://bedrock-runtime.eu-west-3."));
    let env = |name: &str| match name {
        "AWS_REGION" => Some("ap-south-1".to_string()),
        "AWS_DEFAULT_REGION" => Some("eu-west-3".to_string()),
        _ => None,
    };
    let d = Bedrock::with_env(&config, env);
    assert!(d
        .url(&c)
        .unwrap()
        .starts_with("https://bedrock-runtime.ap-south-1."));

    // Config load never fails; the request does, with Kong's 500.
    let d = Bedrock::with_env(&config, no_env);
    let err = d.url(&c).unwrap_err();
    assert!(matches!(&err, GatewayError::Identity(r) if r == "region not specified"));
    assert_eq!(err.to_string(), "LLM request failed before proxying");
    let mut req = upstream(b"{}");
    let err = d.sign(&c, &mut req).unwrap_err();
    assert!(matches!(&err, GatewayError::Identity(r) if r == "region not specified"));
}

#[test]
fn a_templated_region_cannot_change_the_host() {
    let mut options = options();
    options.bedrock.as_mut().unwrap().aws_region = Some("evil.com/x?".into());
    let c = ctx(RouteType::Chat, MODEL, false, &options);
    assert!(matches!(driver().url(&c), Err(GatewayError::Identity(_))));
}

#[test]
fn credentials_come_from_config_else_env() {
    let mut config = config();
    let env = |name: &str| match name {
        "AWS_ACCESS_KEY_ID" => Some("ENVKEY".to_string()),
        "AWS_SECRET_ACCESS_KEY" => Some("envsecret".to_string()),
        "AWS_SESSION_TOKEN" => Some("envtoken".to_string()),
        _ => None,
    };
    let d = Bedrock::with_env(&config, env);
    let debug = format!("{d:?}");
    assert!(debug.contains("AKIDEXAMPLE") && !debug.contains("envtoken"));
    config.auth = None;
    let d = Bedrock::with_env(&config, env);
    let debug = format!("{d:?}");
    assert!(debug.contains("ENVKEY"));
    assert!(!debug.contains("envsecret") && !debug.contains("envtoken"));

    let options = options();
    let c = ctx(RouteType::Chat, MODEL, false, &options);
    let mut req = upstream(b"{}");
    d.sign_at(&c, &mut req, fixed_time()).unwrap();
    assert_eq!(header(&req, "x-amz-security-token"), Some("envtoken"));
    assert!(!format!("{req:?}").contains("envsecret"));

    let d = Bedrock::with_env(&config, no_env);
    let err = d.sign(&c, &mut upstream(b"{}")).unwrap_err();
    assert!(matches!(err, GatewayError::Identity(_)));
}

#[test]
fn debug_never_prints_the_secret() {
    let debug = format!("{:?}", driver());
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("<redacted>"));
}

fn fixed_time() -> SystemTime {
    // 2024-05-01T12:00:00Z
    UNIX_EPOCH + Duration::from_secs(1_714_564_800)
}

fn upstream(body: &'static [u8]) -> UpstreamRequest {
    UpstreamRequest {
            method: Method::POST,
            url: "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse".into(),
            headers: vec![
                (
                    HeaderName::from_static("content-type"),
                    HeaderValue::from_static("application/json"),
                ),
                (
                    HeaderName::from_static("authorization"),
                    HeaderValue::from_static("Bearer client-token"),
                ),
                (
                    HeaderName::from_static("x-request-id"),
                    HeaderValue::from_static("abc"),
                ),
            ],
            body: Bytes::from_static(body),
        }
}

fn header<'a>(req: &'a UpstreamRequest, name: &str) -> Option<&'a str> {
    let mut values = req.headers.iter().filter(|(n, _)| n == name);
    let value = values.next()?.1.to_str().ok();
    assert!(values.next().is_none(), "duplicate {name}");
    value
}

mod features;
mod request;
mod response;
mod sigv4;
mod stream;
