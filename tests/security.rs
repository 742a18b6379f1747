//! Header hygiene, no SSRF, and no secret in any output: what reaches the provider is checked
//! in the mock's request log, what reaches the client in raw responses, and the gateway's
//! complete stderr (at debug level) is searched for every configured credential.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const HEADER_KEY: &str = "sk-SECRET-header-1f2e3d";
const ENV_KEY: &str = "sk-SECRET-fromenv-4c5b6a";
const QUERY_KEY: &str = "sk-SECRET-query-7a8b9c";
const BODY_KEY: &str = "sk-SECRET-body-0d1e2f";
const AWS_KEY_ID: &str = "AKIASECRETKEYID0001";
const AWS_SECRET: &str = "sk-SECRET-aws-3a4b5c";
const CLIENT_KEY: &str = "sk-SECRET-client-6d7e8f";
/// What every secret above has in common, so one search finds any of them.
const MARKER: &str = "SECRET";

fn routes(mock: u16) -> Vec<(&'static str, &'static str, String)> {
    let url = format!("http://127.0.0.1:{mock}/v1/chat/completions");
    vec![
        (
            "header-auth",
            "/openai",
            format!(
                "route_type: llm/v1/chat\nauth: {{header_name: Authorization, header_value: \"Bearer {HEADER_KEY}\"}}\nmodel: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"{url}\"}}}}"
            ),
        ),
        (
            "env-auth",
            "/env",
            format!(
                "route_type: llm/v1/chat\nauth: {{header_name: api-key, header_value: '${{{{ env \"DECK_TEST_KEY\" }}}}'}}\nmodel: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"{url}\"}}}}"
            ),
        ),
        (
            "query-auth",
            "/query",
            format!(
                "route_type: llm/v1/chat\nauth: {{param_name: key, param_value: {QUERY_KEY}, param_location: query}}\nmodel: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"{url}\"}}}}"
            ),
        ),
        (
            "body-auth",
            "/body",
            format!(
                "route_type: llm/v1/chat\nauth: {{param_name: api_key, param_value: {BODY_KEY}, param_location: body}}\nmodel: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"{url}\"}}}}"
            ),
        ),
        (
            "bedrock-any-model",
            "/bedrock",
            format!(
                "route_type: llm/v1/chat\nauth: {{aws_access_key_id: {AWS_KEY_ID}, aws_secret_access_key: {AWS_SECRET}}}\nmodel: {{provider: bedrock, options: {{bedrock: {{aws_region: us-east-1}}, upstream_url: \"http://127.0.0.1:{mock}\"}}}}"
            ),
        ),
        (
            "preserve",
            "/preserve",
            format!(
                "route_type: preserve\nauth: {{header_name: Authorization, header_value: \"Bearer {HEADER_KEY}\"}}\nmodel: {{provider: openai, options: {{upstream_url: \"http://127.0.0.1:{mock}\"}}}}"
            ),
        ),
    ]
}

struct Setup {
    mock: Proc,
    /// A second mock that no request may ever reach.
    decoy: Proc,
    gw: Proc,
}

fn setup_with(env: &[(&str, &str)]) -> Setup {
    let mock = start_mock();
    let decoy = start_mock();
    let routes = routes(mock.port);
    let borrowed: Vec<(&str, &str, &str)> = routes
        .iter()
        .map(|(a, b, c)| (*a, *b, c.as_str()))
        .collect();
    let path = write_deck(&deck(&borrowed));
    let mut all = vec![("DECK_TEST_KEY", ENV_KEY)];
    all.extend_from_slice(env);
    let gw = start_gateway(&path, &all);
    Setup { mock, decoy, gw }
}

fn setup() -> Setup {
    setup_with(&[])
}

fn hi() -> Vec<u8> {
    json!({"messages": [{"role": "user", "content": "hi"}]})
        .to_string()
        .into_bytes()
}

fn seen_headers(mock: &Proc) -> Value {
    mock_last(mock)["headers"].clone()
}

fn assert_decoy_untouched(s: &Setup) {
    assert_eq!(
        mock_stats(&s.decoy)["requests"],
        0,
        "a request reached the decoy"
    );
}

#[test]
fn hop_by_hop_headers_are_stripped_both_ways() {
    let s = setup();
    let body = hi();
    let mut conn = RawConn::open(s.gw.port);
    conn.send(
        format!(
            "POST /openai HTTP/1.1\r\nhost: x\r\nconnection: close, x-hop-nominated\r\nx-hop-nominated: must not pass\r\nkeep-alive: timeout=5\r\nte: trailers\r\ntrailer: x-checksum\r\nupgrade: foo/1\r\nproxy-authorization: Basic cHJveHk6c2VjcmV0\r\nproxy-connection: keep-alive\r\nx-request-tag: kept\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    conn.send(&body);
    conn.read_to_end();
    let r = conn.response();
    assert_eq!(r.status, 200, "{}", r.text());
    let headers = seen_headers(&s.mock);
    for name in [
        "connection",
        "x-hop-nominated",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            headers.get(name).is_none(),
            "{name} reached the provider: {headers}"
        );
    }
    assert_eq!(headers["x-request-tag"], "kept");
    for name in [
        "keep-alive",
        "upgrade",
        "proxy-authenticate",
        "trailer",
        "te",
    ] {
        assert!(r.header(name).is_none(), "{name} reached the client");
    }
    assert!(
        !(r.header("content-length").is_some() && r.header("transfer-encoding").is_some()),
        "both content-length and transfer-encoding"
    );
}

#[test]
fn client_credentials_are_never_forwarded_next_to_injected_auth() {
    let s = setup();
    let client_auth = format!("Bearer {CLIENT_KEY}");
    let client_headers = [
        ("content-type", "application/json"),
        ("authorization", client_auth.as_str()),
        ("api-key", CLIENT_KEY),
        ("x-api-key", CLIENT_KEY),
        ("x-goog-api-key", CLIENT_KEY),
    ];
    for (path, header, value) in [
        ("/openai", "authorization", format!("Bearer {HEADER_KEY}")),
        ("/env", "api-key", ENV_KEY.to_string()),
    ] {
        let r = request(s.gw.port, "POST", path, &client_headers, &hi());
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let headers = seen_headers(&s.mock);
        assert_eq!(headers[header], value.as_str(), "{path}: {headers}");
        assert!(
            !headers.to_string().contains(CLIENT_KEY),
            "{path}: {headers}"
        );
    }

    let r = request(
        s.gw.port,
        "POST",
        &format!("/query?key={CLIENT_KEY}&other=1"),
        &client_headers,
        &hi(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = mock_last(&s.mock);
    assert_eq!(seen["query"], format!("other=1&key={QUERY_KEY}"));
    assert!(!seen.to_string().contains(CLIENT_KEY), "{seen}");

    let body = json!({"api_key": CLIENT_KEY, "messages": [{"role": "user", "content": "hi"}]});
    let r = request(
        s.gw.port,
        "POST",
        "/body",
        &client_headers,
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = mock_last(&s.mock);
    assert_eq!(seen["body"]["api_key"], BODY_KEY);
    assert!(!seen.to_string().contains(CLIENT_KEY), "{seen}");
}

#[test]
fn host_header_and_request_target_cannot_move_the_upstream() {
    let s = setup();
    let decoy = format!("127.0.0.1:{}", s.decoy.port);
    // A forged Host, absolute-form targets naming the decoy, dot segments.
    let heads = [
        format!("POST /openai HTTP/1.1\r\nhost: {decoy}\r\n"),
        format!("POST http://{decoy}/openai HTTP/1.1\r\nhost: {decoy}\r\n"),
        format!("POST http://{decoy}/openai/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"),
        "POST /openai/../../v1/evil HTTP/1.1\r\nhost: x\r\n".to_string(),
        "POST /openai/%2e%2e/%2e%2e/evil HTTP/1.1\r\nhost: x\r\n".to_string(),
    ];
    let body = hi();
    for head in &heads {
        mock_clear(&s.mock);
        let mut conn = RawConn::open(s.gw.port);
        conn.send(
            format!(
                "{head}content-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        conn.send(&body);
        conn.read_to_end();
        assert_eq!(conn.status(), Some(200), "{head}: {}", conn.text());
        let seen = mock_last(&s.mock);
        assert_eq!(seen["path"], "/v1/chat/completions", "{head}");
        assert_eq!(
            seen["headers"]["host"],
            format!("127.0.0.1:{}", s.mock.port),
            "{head}"
        );
    }
    assert_decoy_untouched(&s);
}

#[test]
fn preserve_paths_stay_on_the_configured_host() {
    let s = setup();
    let decoy = s.decoy.port;
    for path in [
        format!("/preserve/..//127.0.0.1:{decoy}/v1/chat/completions"),
        format!("/preserve@127.0.0.1:{decoy}/v1/chat/completions"),
        "/preserve/../../etc/passwd".to_string(),
        format!("/preserve/%2F%2F127.0.0.1:{decoy}/x"),
    ] {
        mock_clear(&s.mock);
        let r = post_json_bytes(s.gw.port, &path, &hi());
        // Whatever the provider makes of the path, it was the configured provider that got it.
        assert!(r.status == 200 || r.status == 404, "{path}: {}", r.status);
        assert_eq!(mock_last(&s.mock)["path"], path.as_str());
    }
    assert_decoy_untouched(&s);
}

#[test]
fn model_names_cannot_escape_the_provider_path() {
    let s = setup();
    for model in [
        "a/b",
        "../../evil",
        "x?y=1",
        "x#frag",
        "%2e%2e",
        "a b",
        "..%2f..%2fevil",
        "m:0\\..",
    ] {
        mock_clear(&s.mock);
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let r = post_json(s.gw.port, "/bedrock", &body);
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        let seen = mock_last(&s.mock);
        let path = seen["path"].as_str().unwrap();
        let segments: Vec<&str> = path.split('/').collect();
        assert_eq!(segments.len(), 4, "{model}: {path}");
        assert_eq!(
            (segments[1], segments[3]),
            ("model", "converse"),
            "{model}: {path}"
        );
        assert_eq!(seen["query"], "", "{model}");
        assert_eq!(
            r.header("x-kong-llm-model"),
            Some(format!("bedrock/{model}").as_str())
        );
    }
    // Dot segments would be removed by URL normalisation, so they are refused outright.
    for model in [".", ".."] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let r = post_json(s.gw.port, "/bedrock", &body);
        assert_eq!(r.status, 400, "{model}: {}", r.text());
    }
    assert_decoy_untouched(&s);
}

/// Every line of `text` that contains a secret.
fn leaks(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains(MARKER)).collect()
}

#[test]
fn secrets_never_appear_in_logs_errors_or_validate_output() {
    let s = setup_with(&[("RUST_LOG", "debug")]);
    let port = s.gw.port;
    let client_auth = format!("Bearer {CLIENT_KEY}");
    let with_client_key = [
        ("content-type", "application/json"),
        ("authorization", client_auth.as_str()),
    ];
    let mut answers = Vec::new();
    for path in ["/openai", "/env", "/query", "/body", "/bedrock"] {
        // Only the Bedrock route lets the client choose the model.
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
        if path == "/bedrock" {
            body["model"] = json!("anthropic.claude");
        }
        for (fault, status) in [
            ("", 200),
            ("status=401", 401),
            ("html,status=403", 403),
            ("bad_json", 500),
        ] {
            let mut headers = with_client_key.to_vec();
            if !fault.is_empty() {
                headers.push(("x-mock-fault", fault));
            }
            let r = request(port, "POST", path, &headers, body.to_string().as_bytes());
            assert_eq!(r.status, status, "{path} {fault}: {}", r.text());
            answers.push(format!("{path} {fault}: {} {}", r.status, r.text()));
        }
        body["stream"] = json!(true);
        let r = request(
            port,
            "POST",
            path,
            &with_client_key,
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{path} stream: {}", r.text());
        answers.push(format!("{path} stream: {} {}", r.status, r.text()));
    }
    // Bad input, including a client key in the body where none is expected.
    let r = request(
        port,
        "POST",
        "/openai",
        &with_client_key,
        format!("{{\"key\": \"{CLIENT_KEY}").as_bytes(),
    );
    answers.push(format!("bad json: {} {}", r.status, r.text()));

    // A route whose upstream refuses connections, with the key in the query string.
    let refused = free_port();
    let refused_deck = write_deck(&deck(&[(
        "refused",
        "/refused",
        &format!(
            "route_type: llm/v1/chat\nauth: {{param_name: key, param_value: {QUERY_KEY}, param_location: query}}\nmodel: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"http://127.0.0.1:{refused}/v1?x=1\"}}}}"
        ),
    )]));
    let gw2 = start_gateway(&refused_deck, &[("RUST_LOG", "debug")]);
    let r = request(
        gw2.port,
        "POST",
        "/refused?key=client",
        &with_client_key,
        &hi(),
    );
    assert_eq!(r.status, 502);
    answers.push(format!("refused: {} {}", r.status, r.text()));

    // Invalid files with the secrets in the wrong places: on reload and in `validate`.
    let invalid = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: ai\n    url: http://127.0.0.1:9\n    routes:\n      - name: r\n        paths: [/x]\n        plugins:\n          - name: ai-proxy\n            config:\n              route_type: llm/v1/chat\n              auth: \"Bearer {HEADER_KEY}\"\n              model: {{provider: openai, name: {AWS_SECRET}, options: {{temperature: \"{BODY_KEY}\", max_tokens: {QUERY_KEY}}}}}\n"
    );
    let invalid_types = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: ai\n    url: http://127.0.0.1:9\n    routes:\n      - name: r\n        paths: [/x]\n        plugins:\n          - name: ai-proxy\n            config:\n              route_type: llm/v1/chat\n              auth: {{header_name: Authorization, header_value: [\"Bearer {HEADER_KEY}\"], param_value: {{k: {QUERY_KEY}}}, aws_secret_access_key: 12}}\n              model: {{provider: openai}}\n"
    );
    let broken_yaml =
        format!("_format_version: \"3.0\"\nservices: [{{name: ai, url: \"Bearer {HEADER_KEY}\n");
    let mut validate_output = String::new();
    for text in [&invalid, &invalid_types, &broken_yaml] {
        let file = write_deck(text);
        let out = std::process::Command::new(BIN)
            .args(["validate", "--config", file.to_str().unwrap()])
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        assert!(!out.status.success());
        validate_output.push_str(&String::from_utf8_lossy(&out.stdout));
        validate_output.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    // The same files on SIGHUP (rejected, old config kept) and at start (refused).
    let live = write_deck(&deck(&[("ok", "/ok", &openai_route(s.mock.port, ""))]));
    let gw3 = start_gateway(&live, &[("RUST_LOG", "debug")]);
    for (i, text) in [&invalid, &invalid_types, &broken_yaml]
        .into_iter()
        .enumerate()
    {
        std::fs::write(&live, text).unwrap();
        gw3.signal("HUP");
        assert!(
            poll_until(Duration::from_secs(10), || gw3
                .logs()
                .matches("previous config stays")
                .count()
                > i),
            "reload {i} not rejected:\n{}",
            gw3.logs()
        );
        let start = std::process::Command::new(BIN)
            .args(["--config", live.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .env("AIGW_MOCK__ENABLED", "false")
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        assert!(!start.status.success());
        validate_output.push_str(&String::from_utf8_lossy(&start.stdout));
        validate_output.push_str(&String::from_utf8_lossy(&start.stderr));
    }
    assert_eq!(
        post_json(gw3.port, "/ok", &chat_body("still", false)).status,
        200
    );
    assert!(validate_output.contains("problem"), "{validate_output}");

    let all = [
        ("gateway stderr", s.gw.logs()),
        ("refused gateway stderr", gw2.logs()),
        ("reloaded gateway stderr", gw3.logs()),
        ("validate / failed start output", validate_output),
        ("client answers", answers.join("\n")),
    ];
    for (what, text) in &all {
        let found = leaks(text);
        assert!(
            found.is_empty(),
            "secret in the {what}:\n{}",
            found.join("\n")
        );
    }
    // The session did exercise the paths it claims to (debug lines included).
    assert!(s.gw.logs().contains("DEBUG"), "no debug output");
    assert!(s.gw.logs().contains("status=401"));
}

#[test]
fn a_templated_host_part_cannot_redirect_the_credentials() {
    let decoy = start_mock();
    let plugin = |route_type: &str| {
        format!(
            "route_type: {route_type}\nauth: {{header_name: api-key, header_value: {HEADER_KEY}}}\nmodel: {{provider: azure, name: gpt-4o, options: {{azure_instance: \"$(headers.x-instance)\", azure_deployment_id: dep}}}}"
        )
    };
    let (preserve, chat) = (plugin("preserve"), plugin("llm/v1/chat"));
    let path = write_deck(&deck(&[
        ("azure-preserve", "/preserve", preserve.as_str()),
        ("azure-chat", "/chat", chat.as_str()),
    ]));
    let gw = start_gateway(&path, &[]);
    let hostile = format!("127.0.0.1:{}/", decoy.port);
    for route in ["/preserve", "/chat"] {
        let r = request(
            gw.port,
            "POST",
            route,
            &[
                ("content-type", "application/json"),
                ("x-instance", hostile.as_str()),
            ],
            &hi(),
        );
        assert_eq!(r.status, 400, "{route}: {}", r.text());
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains("model.options.azure_instance"),
            "{route}: {message}"
        );
        assert!(!r.text().contains(MARKER), "{route}: {}", r.text());
    }
    assert_eq!(
        mock_stats(&decoy)["requests"],
        0,
        "a request reached the decoy"
    );
    assert!(!gw.logs().contains(MARKER), "a credential was logged");
}
