//! The `prometheus` plugin and `GET /metrics`: the exposition parses with the official Python
//! parser and its counters equal what the mock providers saw and what the clients were told;
//! cost reaches the answer, the log and the metrics; `log_statistics` / `log_payloads` are
//! honoured without leaking credentials.

mod common;

use common::*;
use serde_json::Value;

const PRICES: &str = "input_cost: 2.5, output_cost: 10.0";

fn deck(openai: &Proc, anthropic: &Proc) -> String {
    format!(
        r#"_format_version: "3.0"
plugins:
  - name: prometheus
    config: {{ai_metrics: true}}
services:
  - name: llm
    url: http://127.0.0.1:9
    routes:
      - name: balanced
        paths: ["/lb"]
        plugins:
          - name: ai-proxy-advanced
            config:
              balancer: {{algorithm: round-robin, failover_criteria: [error, timeout, http_500, non_idempotent]}}
              targets:
                - {{route_type: llm/v1/chat, logging: {{log_statistics: true, log_payloads: true}}, auth: {{header_name: Authorization, header_value: "Bearer sk-secret-openai"}}, model: {{provider: openai, name: gpt-4o, options: {{{PRICES}, upstream_url: "http://127.0.0.1:{o}/v1/chat/completions"}}}}}}
                - {{route_type: llm/v1/chat, auth: {{header_name: x-api-key, header_value: sk-secret-anthropic}}, model: {{provider: anthropic, name: claude-3-5-haiku-latest, options: {{{PRICES}, anthropic_version: "2023-06-01", upstream_url: "http://127.0.0.1:{a}/v1/messages"}}}}}}
      - name: plain
        paths: ["/plain"]
        plugins:
          - name: ai-proxy
            config: {{route_type: llm/v1/chat, model: {{provider: openai, name: gpt-4o-mini, options: {{upstream_url: "http://127.0.0.1:{o}/v1/chat/completions"}}}}}}
"#,
        o = openai.port,
        a = anthropic.port
    )
}

struct Sample {
    name: String,
    labels: Value,
    value: f64,
}

fn scrape(status_port: u16) -> Vec<Sample> {
    let r = request(status_port, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    let path = write_deck(&r.text());
    let out = run_python("metrics_parse.py", &[path.to_str().unwrap()]);
    serde_json::from_str::<Vec<Value>>(&out)
        .unwrap()
        .into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"].clone(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include every `(key, value)` of `with`.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| with.iter().all(|(k, v)| s.labels[*k] == *v))
        .map(|s| s.value)
        .sum()
}

fn cost(usage: &Value) -> f64 {
    (usage["prompt_tokens"].as_f64().unwrap() * 2.5
        + usage["completion_tokens"].as_f64().unwrap() * 10.0)
        / 1e6
}

#[test]
fn metrics_match_what_the_providers_saw() {
    let openai = start_mock();
    let anthropic = start_mock();
    let deck = write_deck(&deck(&openai, &anthropic));
    let (gw, status) = start_gateway_with_status(&deck, &[]);

    let mut expected_cost = 0.0;
    let mut tokens = [0u64; 2];
    let buffered = 10;
    for i in 0..buffered {
        let r = post_json(
            gw.port,
            "/lb/chat/completions",
            &chat_body(&format!("question {i} with words"), false),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let usage = r.json()["usage"].clone();
        let c = cost(&usage);
        expected_cost += c;
        tokens[0] += usage["prompt_tokens"].as_u64().unwrap();
        tokens[1] += usage["completion_tokens"].as_u64().unwrap();
        let header: f64 = r
            .header("x-ai-gateway-cost")
            .expect("cost header")
            .parse()
            .unwrap();
        assert!((header - c).abs() < 1e-12, "cost header {header} != {c}");
    }
    // Streams: TTFT, and tokens counted when the stream ends.
    let streams = 4;
    for _ in 0..streams {
        let mut body = chat_body("stream me", true);
        body["stream_options"] = serde_json::json!({"include_usage": true});
        let r = post_json(gw.port, "/lb/chat/completions", &body);
        assert_eq!(r.status, 200);
        let usage: Value = sse_data(&r.text())
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|v| v["usage"].is_object())
            .map(|v| v["usage"].clone())
            .expect("usage chunk");
        expected_cost += cost(&usage);
        tokens[0] += usage["prompt_tokens"].as_u64().unwrap();
        tokens[1] += usage["completion_tokens"].as_u64().unwrap();
    }
    // One failing attempt, answered by the other target.
    mock_set_faults(&openai, "status=500");
    let mut failovers = 0;
    for _ in 0..2 {
        let r = post_json(
            gw.port,
            "/lb/chat/completions",
            &chat_body("retry me", false),
        );
        assert_eq!(r.status, 200);
        let usage = r.json()["usage"].clone();
        expected_cost += cost(&usage);
        tokens[0] += usage["prompt_tokens"].as_u64().unwrap();
        tokens[1] += usage["completion_tokens"].as_u64().unwrap();
        failovers += r.header("x-kong-llm-tried").unwrap().matches(", ").count();
    }
    mock_set_faults(&openai, "");
    let plain = post_json(
        gw.port,
        "/plain/chat/completions",
        &chat_body("plain", false),
    );
    assert_eq!(plain.status, 200);
    assert!(
        plain.header("x-kong-llm-tried").is_none(),
        "ai-proxy routes carry no tried header"
    );
    assert_no_leaks(status);

    let samples = scrape(status);
    let answered = (buffered + streams + 2) as f64;
    assert_eq!(
        sum(&samples, "ai_llm_requests_total", &[("route", "balanced")]),
        answered
    );
    assert_eq!(
        sum(
            &samples,
            "aigw_http_requests_total",
            &[("route", "balanced"), ("code", "200")]
        ),
        answered
    );
    assert_eq!(
        sum(&samples, "aigw_http_requests_total", &[("route", "plain")]),
        1.0
    );
    // Every attempt the balancer made is one request a mock saw.
    let seen = |m: &Proc| mock_stats(m)["requests"].as_f64().unwrap();
    let openai_seen_on_balanced = seen(&openai) - 1.0;
    assert_eq!(
        sum(
            &samples,
            "aigw_balancer_attempts_total",
            &[("ai_provider", "openai")]
        ),
        openai_seen_on_balanced
    );
    assert_eq!(
        sum(
            &samples,
            "aigw_balancer_attempts_total",
            &[("ai_provider", "anthropic")]
        ),
        seen(&anthropic)
    );
    assert_eq!(
        sum(
            &samples,
            "aigw_balancer_attempts_total",
            &[("outcome", "500")]
        ),
        failovers as f64
    );
    assert_eq!(
        sum(
            &samples,
            "aigw_upstream_errors_total",
            &[("kind", "http_500")]
        ),
        failovers as f64
    );
    // Requests per provider: answers that provider gave.
    assert_eq!(
        sum(
            &samples,
            "ai_llm_requests_total",
            &[("route", "balanced"), ("ai_provider", "anthropic")]
        ),
        sum(
            &samples,
            "aigw_balancer_attempts_total",
            &[("ai_provider", "anthropic"), ("outcome", "200")]
        )
    );
    assert_eq!(
        sum(
            &samples,
            "ai_llm_tokens_total",
            &[("route", "balanced"), ("token_type", "prompt_tokens")]
        ),
        tokens[0] as f64
    );
    assert_eq!(
        sum(
            &samples,
            "ai_llm_tokens_total",
            &[("route", "balanced"), ("token_type", "completion_tokens")]
        ),
        tokens[1] as f64
    );
    let metric_cost = sum(&samples, "ai_llm_cost_total", &[("route", "balanced")]);
    assert!(
        (metric_cost - expected_cost).abs() < 1e-9,
        "{metric_cost} != {expected_cost}"
    );
    assert_eq!(
        sum(
            &samples,
            "ai_llm_provider_latency_ms_count",
            &[("route", "balanced")]
        ),
        answered
    );
    assert_eq!(
        sum(
            &samples,
            "aigw_time_to_first_token_ms_count",
            &[("route", "balanced")]
        ),
        streams as f64
    );
    // Kong's labels.
    let one = samples
        .iter()
        .find(|s| s.name == "ai_llm_requests_total")
        .unwrap();
    for label in [
        "ai_provider",
        "ai_model",
        "cache_status",
        "vector_db",
        "embeddings_provider",
        "embeddings_model",
        "workspace",
        "route",
        "service",
    ] {
        assert!(
            one.labels.get(label).is_some(),
            "missing label {label}: {}",
            one.labels
        );
    }
    assert_eq!(one.labels["workspace"], "default");
    assert_eq!(one.labels["service"], "llm");
    assert_eq!(
        sum(
            &samples,
            "aigw_balancer_circuit_state",
            &[("route", "balanced")]
        ),
        0.0
    );
    assert_eq!(sum(&samples, "aigw_config_generation", &[]), 1.0);
    assert_eq!(sum(&samples, "aigw_open_streams", &[]), 0.0);

    // Logs: statistics and payloads where enabled, never a credential.
    let logs = gw.logs();
    assert!(logs.contains("cost="), "no cost in the access log");
    assert!(
        logs.contains("question 0 with words"),
        "log_payloads did not log the request"
    );
    assert!(!logs.contains("sk-secret"), "a credential reached the log");
    let plain_line = logs
        .lines()
        .find(|l| l.contains("route=plain"))
        .expect("plain access line");
    assert!(
        !plain_line.contains("cost="),
        "statistics logged without log_statistics: {plain_line}"
    );
}

#[test]
fn reload_failures_and_generations_are_counted() {
    let mock = start_mock();
    let path = write_deck(&deck(&mock, &mock));
    let (gw, status) = start_gateway_with_status(&path, &[]);
    std::fs::write(&path, "not: [valid").unwrap();
    gw.signal("HUP");
    assert!(gw.wait_for_log("reload rejected", std::time::Duration::from_secs(5)));
    let samples = scrape(status);
    assert_eq!(sum(&samples, "aigw_config_reload_failures_total", &[]), 1.0);
    std::fs::write(&path, deck(&mock, &mock)).unwrap();
    gw.signal("HUP");
    assert!(gw.wait_for_log("config reloaded", std::time::Duration::from_secs(5)));
    assert_eq!(sum(&scrape(status), "aigw_config_generation", &[]), 2.0);
}

#[test]
fn per_consumer_labels_name_the_consumer_and_never_its_key() {
    let mock = start_mock();
    let key = "alice-metrics-key-0042";
    let route = |per_consumer: bool| {
        plugin("key-auth", "{}")
            + &plugin(
                "prometheus",
                &format!("{{ai_metrics: true, per_consumer: {per_consumer}}}"),
            )
    };
    let yaml = consumer_deck(
        mock.port,
        &[("/named", route(true)), ("/unnamed", route(false))],
        &format!("consumers:\n  - username: alice\n    keyauth_credentials: [{{key: {key}}}]\n  - custom_id: bob-7\n    keyauth_credentials: [{{key: bob-metrics-key-0043}}]\n"),
    );
    let (gw, status) = start_gateway_with_status(&write_deck(&yaml), &[]);
    for (path, key) in [
        ("/named", key),
        ("/named", key),
        ("/named", "bob-metrics-key-0043"),
        ("/unnamed", key),
    ] {
        assert_eq!(chat_as(gw.port, path, key, false).status, 200);
    }
    assert_eq!(chat_as(gw.port, "/named", "wrong", false).status, 401);

    let samples = scrape(status);
    let requests = |route: &str, consumer: &str| {
        sum(
            &samples,
            "ai_llm_requests_total",
            &[("route", route), ("consumer", consumer)],
        )
    };
    assert_eq!(requests("named", "alice"), 2.0);
    // A consumer without a username is named by its custom_id (Kong 3.12).
    assert_eq!(requests("named", "bob-7"), 1.0);
    assert_eq!(
        requests("unnamed", ""),
        1.0,
        "per_consumer off: empty label"
    );
    assert_eq!(requests("unnamed", "alice"), 0.0);
    assert!(
        sum(
            &samples,
            "ai_llm_tokens_total",
            &[
                ("route", "named"),
                ("consumer", "alice"),
                ("token_type", "total_tokens")
            ]
        ) > 0.0
    );
    let status_of = |code: &str, consumer: &str| {
        sum(
            &samples,
            "aigw_http_requests_total",
            &[("route", "named"), ("code", code), ("consumer", consumer)],
        )
    };
    assert_eq!(status_of("200", "alice"), 2.0);
    assert_eq!(
        status_of("401", ""),
        1.0,
        "a refused request has no consumer"
    );
    let text = request(status, "GET", "/metrics", &[], b"").text();
    assert!(!text.contains("metrics-key"), "a key reached the metrics");
}
