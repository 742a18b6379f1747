//! Kong's request rules, one test per rule (names cite kong-tests.md where a line applies).

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::config::ai_proxy::AiProxyConfig;
use crate::proxy::compile::Timeouts;

fn route(config: Value) -> CompiledRoute {
    let config: AiProxyConfig = serde_json::from_value(config).unwrap();
    let t = Duration::from_secs(60);
    CompiledRoute::new(
        "test",
        Arc::new(config),
        Timeouts {
            connect: t,
            read: t,
            write: t,
        },
    )
    .unwrap()
}

fn openai_route(extra: Value) -> CompiledRoute {
    let mut config = json!({
        "route_type": "llm/v1/chat",
        "auth": {"header_name": "Authorization", "header_value": "Bearer sk-gateway"},
        "model": {"provider": "openai", "name": "gpt-4o"}
    });
    merge(&mut config, extra);
    route(config)
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn client(headers: &[(&str, &str)], query: &str) -> ClientRequest {
    ClientRequest::post("/openai/chat/completions", headers, query)
}

fn run(route: &CompiledRoute, body: Value) -> Result<Prepared, GatewayError> {
    run_with(route, &client(&[], ""), body)
}

fn run_with(
    route: &CompiledRoute,
    c: &ClientRequest,
    body: Value,
) -> Result<Prepared, GatewayError> {
    upstream(prepare(
        route,
        c,
        Bytes::from(body.to_string()),
        "rid".into(),
        1,
    ))
}

fn upstream(plan: Result<Plan, GatewayError>) -> Result<Prepared, GatewayError> {
    plan.map(|p| match p {
        Plan::Upstream(p) => p,
        Plan::Answer(_) => panic!("expected an upstream call"),
    })
}

fn err(result: Result<Prepared, GatewayError>) -> String {
    match result {
        Err(GatewayError::BadRequest(m)) => m,
        Err(other) => panic!("expected a 400, got {other:?}"),
        Ok(_) => panic!("expected a 400, got a prepared request"),
    }
}

fn body_of(p: &Prepared) -> Value {
    serde_json::from_slice(&p.upstream.body).unwrap()
}

fn header<'a>(p: &'a Prepared, name: &str) -> Vec<&'a str> {
    p.upstream
        .headers
        .iter()
        .filter(|(n, _)| n.as_str() == name)
        .map(|(_, v)| v.to_str().unwrap())
        .collect()
}

fn chat() -> Value {
    json!({"messages": [{"role": "user", "content": "hi"}]})
}

#[test]
fn chat_good_sets_model_stream_and_header() {
    let p = run(&openai_route(json!({})), chat()).unwrap();
    assert_eq!(
        body_of(&p),
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": false})
    );
    assert_eq!(
        p.upstream.url,
        "https://api.openai.com:443/v1/chat/completions"
    );
    assert_eq!(p.model_header.clone().unwrap(), "openai/gpt-4o");
    assert_eq!(header(&p, "authorization"), vec!["Bearer sk-gateway"]);
    assert_eq!(header(&p, "content-type"), vec!["application/json"]);
}

#[test]
fn openai_integration_model_null_is_treated_as_absent() {
    let mut body = chat();
    body["model"] = Value::Null;
    assert!(run(&openai_route(json!({})), body).is_ok());
}

#[test]
fn openai_integration_different_model_is_rejected() {
    let mut body = chat();
    body["model"] = json!("gpt-3.5");
    assert_eq!(
        err(run(&openai_route(json!({})), body)),
        "cannot use own model - must be: gpt-4o"
    );
}

#[test]
fn no_model_anywhere_is_rejected_and_client_model_used_when_unconfigured() {
    let r = route(json!({
        "route_type": "llm/v1/chat",
        "model": {"provider": "openai"}
    }));
    assert_eq!(
        err(run(&r, chat())),
        "model parameter not found in request, nor in gateway configuration"
    );
    let mut body = chat();
    body["model"] = json!("try-to-override-the-model");
    let p = run(&r, body).unwrap();
    assert_eq!(
        p.model_header.clone().unwrap(),
        "openai/try-to-override-the-model"
    );
    // Regression (Kong): the client's choice does not leak into the next request.
    assert_eq!(
        err(run(&r, chat())),
        "model parameter not found in request, nor in gateway configuration"
    );
}

#[test]
fn bad_request_bodies_get_kongs_texts() {
    let r = openai_route(json!({}));
    assert_eq!(
        err(run(&r, json!({}))),
        "request body doesn't contain valid prompts"
    );
    assert_eq!(
        err(run(&r, json!({"messages": []}))),
        "request body doesn't contain valid prompts"
    );
    assert_eq!(
        err(run(
            &r,
            json!({"messages": [{"role":"user","content":"x"}], "prompt": "y"})
        )),
        "request matches multiple LLM request formats"
    );
    assert_eq!(
        err(run(&r, json!({"prompt": "y"}))),
        "[llm/v1/completions] message format is not compatible with [llm/v1/chat] route type"
    );
    let completions = openai_route(json!({"route_type": "llm/v1/completions"}));
    assert_eq!(
        err(run(&completions, chat())),
        "[llm/v1/chat] message format is not compatible with [llm/v1/completions] route type"
    );
    let garbage = upstream(prepare(
        &r,
        &client(&[], ""),
        Bytes::from_static(b"{nope"),
        "r".into(),
        1,
    ));
    assert_eq!(
        err(garbage),
        "content-type header does not match request body, or bad JSON formatting"
    );
    let wrong_type = upstream(prepare(
        &r,
        &client(&[("content-type", "text/plain")], ""),
        Bytes::from(chat().to_string()),
        "r".into(),
        1,
    ));
    assert_eq!(
        err(wrong_type),
        "content-type header does not match request body, or bad JSON formatting"
    );
    assert!(err(run(&r, json!({"messages": [{"content": "no role"}]}))).contains("position 0"));
}

#[test]
fn config_options_override_the_client() {
    let r = openai_route(json!({"model": {"options": {"max_tokens": 1024, "top_p": 0.5}}}));
    let mut body = chat();
    body["max_tokens"] = json!(256);
    body["temperature"] = json!(0.1);
    body["top_p"] = json!(0.2);
    body["some_extra"] = json!("kept");
    let b = body_of(&run(&r, body).unwrap());
    assert_eq!(b["max_tokens"], 1024);
    assert_eq!(b["temperature"], 0.1);
    assert_eq!(b["top_p"], 0.5);
    assert_eq!(b["some_extra"], "kept");
}

#[test]
fn streaming_allow_deny_always() {
    let mut streamed = chat();
    streamed["stream"] = json!(true);
    let allow = run(&openai_route(json!({})), streamed.clone()).unwrap();
    assert!(allow.resolved.stream);
    assert_eq!(body_of(&allow)["stream"], true);

    let deny = openai_route(json!({"response_streaming": "deny"}));
    assert_eq!(
        err(run(&deny, streamed)),
        "response streaming is not enabled for this LLM"
    );
    assert!(!run(&deny, chat()).unwrap().resolved.stream);

    let always = run(
        &openai_route(json!({"response_streaming": "always"})),
        chat(),
    )
    .unwrap();
    assert!(always.resolved.stream);
    assert_eq!(body_of(&always)["stream"], true);
}

#[test]
fn include_usage_is_read_from_stream_options() {
    let mut body = chat();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let p = run(&openai_route(json!({})), body).unwrap();
    assert!(p.resolved.include_usage);
}

#[test]
fn openai_integration_header_auth_replaces_client_credentials() {
    let r = openai_route(json!({}));
    let c = client(
        &[
            ("authorization", "Bearer sk-client"),
            ("x-api-key", "client-anthropic-key"),
            ("x-custom", "kept"),
            ("connection", "keep-alive"),
        ],
        "",
    );
    let p = run_with(&r, &c, chat()).unwrap();
    assert_eq!(header(&p, "authorization"), vec!["Bearer sk-gateway"]);
    assert!(header(&p, "x-api-key").is_empty());
    assert!(header(&p, "connection").is_empty());
    assert_eq!(header(&p, "x-custom"), vec!["kept"]);
}

#[test]
fn headers_nominated_by_connection_are_hop_by_hop() {
    let c = client(
        &[
            ("connection", "keep-alive, X-Hop-One"),
            ("connection", "x-hop-two"),
            ("x-hop-one", "1"),
            ("x-hop-two", "2"),
            ("x-end-to-end", "kept"),
        ],
        "",
    );
    let p = run_with(&openai_route(json!({})), &c, chat()).unwrap();
    assert!(header(&p, "x-hop-one").is_empty());
    assert!(header(&p, "x-hop-two").is_empty());
    assert_eq!(header(&p, "x-end-to-end"), vec!["kept"]);
}

#[test]
fn dot_segment_model_names_are_refused() {
    let r = route(json!({"route_type": "llm/v1/chat", "model": {"provider": "openai"}}));
    for model in [".", ".."] {
        let mut body = chat();
        body["model"] = json!(model);
        assert_eq!(err(run(&r, body)), format!("invalid model name '{model}'"));
    }
    let mut body = chat();
    body["model"] = json!("..a");
    assert!(run(&r, body).is_ok());
}

#[test]
fn openai_integration_allow_override_keeps_the_client_header() {
    let r = openai_route(json!({"auth": {"allow_override": true}}));
    let c = client(&[("authorization", "Bearer sk-client")], "");
    let p = run_with(&r, &c, chat()).unwrap();
    assert_eq!(header(&p, "authorization"), vec!["Bearer sk-client"]);
    let p = run_with(&r, &client(&[], ""), chat()).unwrap();
    assert_eq!(header(&p, "authorization"), vec!["Bearer sk-gateway"]);
}

#[test]
fn openai_integration_query_param_auth() {
    let r = route(json!({
        "route_type": "llm/v1/chat",
        "auth": {"param_name": "apikey", "param_value": "gw", "param_location": "query"},
        "model": {"provider": "openai", "name": "gpt-4o", "options": {"upstream_url": "http://127.0.0.1:9/v1/chat"}}
    }));
    let p = run_with(&r, &client(&[], "apikey=wrong&x=1"), chat()).unwrap();
    assert_eq!(p.upstream.url, "http://127.0.0.1:9/v1/chat?x=1&apikey=gw");
    let overridable = route(json!({
        "route_type": "llm/v1/chat",
        "auth": {"param_name": "apikey", "param_value": "gw", "param_location": "query", "allow_override": true},
        "model": {"provider": "openai", "name": "gpt-4o", "options": {"upstream_url": "http://127.0.0.1:9/v1/chat"}}
    }));
    let p = run_with(&overridable, &client(&[], "apikey=mine"), chat()).unwrap();
    assert_eq!(p.upstream.url, "http://127.0.0.1:9/v1/chat?apikey=mine");
}

#[test]
fn openai_integration_body_param_auth() {
    let r = route(json!({
        "route_type": "llm/v1/completions",
        "auth": {"param_name": "apikey", "param_value": "gw", "param_location": "body"},
        "model": {"provider": "openai", "name": "gpt-3.5-turbo-instruct"}
    }));
    let p = run(&r, json!({"prompt": "hi", "apikey": "wrong"})).unwrap();
    assert_eq!(body_of(&p)["apikey"], "gw");
    assert!(p.upstream.url.ends_with("/v1/completions"));
}

#[test]
fn templates_resolve_per_request_from_captures() {
    let r = route(json!({
        "route_type": "llm/v1/chat",
        "model": {"provider": "openai", "name": "$(uri_captures.model)"}
    }));
    let mut c = client(&[], "");
    c.captures = vec![("model".into(), "gemni-2.0-flash".into())];
    let p = run_with(&r, &c, chat()).unwrap();
    assert_eq!(p.resolved.model, "gemni-2.0-flash");
    assert_eq!(
        err(run(&r, chat())),
        "uri_captures key model was not provided"
    );
}

#[test]
fn azure_preserve_upstream_path_and_deployment_from_captures() {
    let r = route(json!({
        "route_type": "preserve",
        "auth": {"header_name": "api-key", "header_value": "k"},
        "model": {"provider": "azure", "options": {
            "azure_instance": "inst",
            "azure_deployment_id": "$(uri_captures.azure_deployment)",
            "upstream_path": "$(uri_captures.operation_path)"
        }}
    }));
    let mut c = client(&[], "api-version=2024-01-01");
    c.captures = vec![
        ("azure_deployment".into(), "dep".into()),
        ("operation_path".into(), "/chat/completions".into()),
    ];
    let p = run_with(&r, &c, json!({"model": "gpt-4o", "messages": []})).unwrap();
    assert_eq!(
        p.upstream.url,
        "https://inst.openai.azure.com:443/openai/deployments/dep/chat/completions?api-version=2024-01-01"
    );
    assert_eq!(p.model_header.clone().unwrap(), "azure/gpt-4o");
}

#[test]
fn openai_integration_preserve_keeps_body_and_client_path() {
    let r = route(json!({
        "route_type": "preserve",
        "model": {"provider": "openai", "options": {"upstream_url": "http://127.0.0.1:18181/anything"}}
    }));
    let mut c = client(&[], "");
    c.path = "/v1/embeddings".into();
    let body = json!({"model": "text-embedding-ada-002", "input": "x"});
    let p = run_with(&r, &c, body.clone()).unwrap();
    assert_eq!(p.upstream.url, "http://127.0.0.1:18181/v1/embeddings");
    assert_eq!(body_of(&p), body);
    assert_eq!(
        p.model_header.clone().unwrap(),
        "openai/text-embedding-ada-002"
    );
}

#[test]
fn embeddings_need_input() {
    let r = openai_route(
        json!({"route_type": "llm/v1/embeddings", "model": {"name": "text-embedding-3-small"}}),
    );
    assert_eq!(
        err(run(&r, json!({"model": "text-embedding-3-small"}))),
        "request body doesn't contain valid input"
    );
    let p = run(&r, json!({"input": ["a", "b"]})).unwrap();
    assert!(p.upstream.url.ends_with("/v1/embeddings"));
    assert!(body_of(&p).get("stream").is_none());
}

#[test]
fn model_name_header_can_be_disabled() {
    let p = run(&openai_route(json!({"model_name_header": false})), chat()).unwrap();
    assert!(p.model_header.is_none());
}

#[test]
fn secrets_are_not_in_debug_output() {
    let r = openai_route(json!({}));
    let p = run(&r, chat()).unwrap();
    let debug = format!("{:?} {:?}", p.upstream, r.config);
    assert!(!debug.contains("sk-gateway"), "{debug}");
}

#[test]
fn a_templated_instance_cannot_send_the_key_elsewhere_on_any_route_type() {
    for (route_type, body) in [
        ("preserve", chat()),
        ("llm/v1/chat", chat()),
        ("llm/v1/completions", json!({"prompt": "hi"})),
        ("llm/v1/embeddings", json!({"input": "hi"})),
    ] {
        let r = route(json!({
            "route_type": route_type,
            "auth": {"header_name": "api-key", "header_value": "sk-gateway"},
            "model": {"provider": "azure", "name": "gpt-4o", "options": {
                "azure_instance": "$(headers.x-instance)",
                "azure_deployment_id": "dep"
            }}
        }));
        let c = client(&[("x-instance", "127.0.0.1:9/")], "");
        let message = err(run_with(&r, &c, body.clone()));
        assert!(
            message.contains("'model.options.azure_instance'"),
            "{route_type}: {message}"
        );
        let c = client(&[("x-instance", "inst")], "");
        let p = run_with(&r, &c, body).unwrap();
        assert!(
            p.upstream
                .url
                .starts_with("https://inst.openai.azure.com:443/"),
            "{route_type}: {}",
            p.upstream.url
        );
    }
}

thread_local! {
    /// Makes `prepare` take the general path (parse, rules, serialise) for every body.
    pub(super) static GENERAL_PATH_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What a prepared request sends and decides, for comparing the two paths.
fn outcome(
    plan: Result<Plan, GatewayError>,
) -> Result<(String, Value, Vec<String>, String), String> {
    let p = upstream(plan).map_err(|e| format!("{e:?}"))?;
    let headers = p
        .upstream
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
        .collect();
    let decided = format!(
        "{} {} {} {:?} {:?}",
        p.resolved.model,
        p.resolved.stream,
        p.resolved.include_usage,
        p.resolved.dropped,
        p.model_header
    );
    Ok((p.upstream.url.clone(), body_of(&p), headers, decided))
}

#[test]
fn raw_fields_give_the_general_paths_request() {
    let routes = [
        openai_route(json!({})),
        openai_route(json!({"model": {"name": null}, "response_streaming": "always"})),
        openai_route(json!({"response_streaming": "deny", "model": {"options": {
            "max_tokens": 99, "temperature": 0.5, "top_p": 0.9, "top_k": 7}}})),
        openai_route(json!({"model": {"name": "o3-mini"}})),
        openai_route(json!({"route_type": "llm/v1/completions", "model": {"name": null}})),
        openai_route(json!({"route_type": "llm/v1/embeddings",
            "model": {"name": "text-embedding-3-small", "options": {"embeddings_dimensions": 64}}})),
        route(json!({
            "route_type": "llm/v1/chat",
            "auth": {"param_name": "apikey", "param_value": "gw", "param_location": "body"},
            "model": {"provider": "openai"}
        })),
        route(json!({
            "route_type": "llm/v1/chat",
            "auth": {"header_name": "api-key", "header_value": "k"},
            "model": {"provider": "azure", "name": "gpt-4o", "options": {
                "azure_instance": "inst", "azure_deployment_id": "dep"}}
        })),
        route(json!({
            "route_type": "llm/v1/chat",
            "model": {"provider": "mistral", "name": "mistral-tiny", "options": {
                "mistral_format": "openai", "upstream_url": "http://127.0.0.1:9/v1/chat/completions"}}
        })),
    ];
    let bodies = [
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello."}]}"#,
        r#"{"messages": [{"role": "user", "content": "sp\u00e9cial \"quoted\"", "name": null}], "stream": true, "stream_options": {"include_usage": true}}"#,
        r#"{"messages":[{"role":"system","content":"x"},{"content":"no role"}]}"#,
        r#"{"messages":[{"role":"user","content":"a"},["role","user"]]}"#,
        r#"{"messages":[{"role":5}],"prompt":"both"}"#,
        r#"{"messages":[],"prompt":"p"}"#,
        r#"{"messages":[]}"#,
        r#"{"messages":"not an array","input":"x"}"#,
        r#"{"prompt":["a","b"],"max_tokens":5,"top_k":3,"thinking":{"type":"enabled"}}"#,
        r#"{"prompt":["a",1]}"#,
        r#"{"prompt":[],"input":[]}"#,
        r#"{"input":"","model":""}"#,
        r#"{"input":["a"],"dimensions":8,"stream":true,"user":"u1"}"#,
        r#"{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":10,"max_tokens":3,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"zeta":1,"alpha":[1.50,2e3]}"#,
        r#"{"messages":[{"role":"user","content":"hi","role":"assistant"}]}"#,
        r#"{"m\u0065ssages":[{"role":"user","content":"escaped key"}]}"#,
        r#"{"messages":[{"role":"user","content":"hi"}],"messages":[{"content":"last wins"}]}"#,
        r#"{"messages":[{"role":"user","content":"hi"}],"apikey":"client","model":"gpt-4o","n":2,"top_k":null}"#,
        r#"{"messages":[{"role":"user","content":"hi"}],"model":"other-model"}"#,
        r#"{"messages":[{"role":"user","content":"hi"}],"model":"."}"#,
        r#"[1,2]"#,
        r#"{"messages":[{"role":"user"}"#,
        "  \n ",
        r#"{}"#,
    ];
    let mut kept_raw = 0;
    for (i, r) in routes.iter().enumerate() {
        for body in bodies {
            let c = client(&[], "");
            let run = |general: bool| {
                GENERAL_PATH_ONLY.with(|g| g.set(general));
                let plan = prepare(r, &c, Bytes::from(body), "rid".into(), 1);
                GENERAL_PATH_ONLY.with(|g| g.set(false));
                plan
            };
            let fast = run(false);
            if let Ok(Plan::Upstream(p)) = &fast {
                kept_raw += usize::from(
                    p.upstream
                        .body
                        .windows(14)
                        .any(|w| w == b"\"role\": \"user\""),
                );
            }
            assert_eq!(outcome(fast), outcome(run(true)), "route {i}, body {body}");
        }
    }
    // The client's own spacing survives where the fields were kept raw.
    assert!(kept_raw >= 4, "{kept_raw}");
}

#[test]
fn json_content_types_whatever_their_case_and_parameters() {
    let json = |v: &str| is_json_type(&HeaderValue::from_str(v).unwrap());
    for yes in [
        "application/json",
        "Application/JSON; charset=utf-8",
        "  application/json  ;q=1",
        "application/vnd.api+json",
        "application/problem+JSON",
    ] {
        assert!(json(yes), "{yes}");
    }
    for no in [
        "text/plain",
        "application/jsonl",
        "json",
        "",
        "multipart/form-data; boundary=x",
    ] {
        assert!(!json(no), "{no}");
    }
}
