//! `ai-proxy-advanced` end to end: several mock providers (one per target, so each can be made
//! slow or failing on its own with `PUT /__mock/faults`) behind one route, driven with raw
//! HTTP for counts and with the OpenAI SDK for what a client sees.

mod common;

use std::time::Duration;

use base64::Engine;

use common::*;
use serde_json::Value;

fn openai_target(mock: &Proc, weight: u32) -> String {
    format!(
        "{{route_type: llm/v1/chat, weight: {weight}, auth: {{header_name: Authorization, header_value: \"Bearer sk-openai\"}}, model: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"http://127.0.0.1:{}/v1/chat/completions\"}}}}}}",
        mock.port
    )
}

fn anthropic_target(mock: &Proc, weight: u32) -> String {
    format!(
        "{{route_type: llm/v1/chat, weight: {weight}, auth: {{header_name: x-api-key, header_value: sk-ant}}, model: {{provider: anthropic, name: claude-3-5-haiku-latest, options: {{anthropic_version: \"2023-06-01\", max_tokens: 256, upstream_url: \"http://127.0.0.1:{}/v1/messages\"}}}}}}",
        mock.port
    )
}

fn bedrock_target(mock: &Proc, weight: u32) -> String {
    format!(
        "{{route_type: llm/v1/chat, weight: {weight}, auth: {{aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: secret}}, model: {{provider: bedrock, name: \"anthropic.claude-3-haiku-20240307-v1:0\", options: {{bedrock: {{aws_region: us-east-1}}, upstream_url: \"http://127.0.0.1:{}\"}}}}}}",
        mock.port
    )
}

fn mock_requests(mock: &Proc) -> u64 {
    mock_stats(mock)["requests"].as_u64().unwrap()
}

fn chat(gw: &Proc, headers: &[(&str, &str)]) -> Response {
    let body = chat_body("hello", false).to_string();
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    request(
        gw.port,
        "POST",
        "/lb/chat/completions",
        &all,
        body.as_bytes(),
    )
}

/// The target indexes of the `x-kong-llm-tried` header, in attempt order, with outcomes.
fn tried(r: &Response) -> Vec<(usize, String)> {
    r.header("x-kong-llm-tried")
        .unwrap_or_else(|| panic!("no x-kong-llm-tried header: {}", r.text()))
        .split(", ")
        .map(|entry| {
            let parts: Vec<&str> = entry.split(' ').collect();
            (
                parts[0].parse().unwrap(),
                parts[parts.len() - 1].to_string(),
            )
        })
        .collect()
}

const RETRY_ALL: &str =
    "failover_criteria: [error, timeout, http_429, http_500, http_502, http_503, non_idempotent]";

#[test]
fn weighted_round_robin_splits_by_weight() {
    let mocks = [start_mock(), start_mock(), start_mock()];
    let deck = write_deck(&advanced_deck(
        "{algorithm: round-robin}",
        &[
            openai_target(&mocks[0], 50),
            openai_target(&mocks[1], 30),
            openai_target(&mocks[2], 20),
        ],
    ));
    let gw = start_gateway(&deck, &[]);
    for _ in 0..300 {
        let r = chat(&gw, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(tried(&r).len(), 1);
    }
    let counts: Vec<u64> = mocks.iter().map(mock_requests).collect();
    for (count, expected) in counts.iter().zip([150u64, 90, 60]) {
        assert!(
            count.abs_diff(expected) <= 15,
            "split {counts:?}, expected within 5 % of [150, 90, 60]"
        );
    }
}

#[test]
fn consistent_hashing_keeps_a_header_value_on_one_target() {
    let mocks = [start_mock(), start_mock(), start_mock()];
    let deck = write_deck(&advanced_deck(
        "{algorithm: consistent-hashing, hash_on_header: X-User}",
        &[
            openai_target(&mocks[0], 100),
            openai_target(&mocks[1], 100),
            openai_target(&mocks[2], 100),
        ],
    ));
    let gw = start_gateway(&deck, &[]);
    let mut used = std::collections::HashSet::new();
    for user in 0..12 {
        let name = format!("user-{user}");
        let first = tried(&chat(&gw, &[("x-user", &name)]))[0].0;
        used.insert(first);
        for _ in 0..5 {
            assert_eq!(
                tried(&chat(&gw, &[("x-user", &name)]))[0].0,
                first,
                "{name} moved"
            );
        }
    }
    assert!(used.len() >= 2, "12 users all hashed to one target");
}

#[test]
fn lowest_latency_moves_traffic_to_the_fast_target() {
    let fast = start_mock();
    let slow = start_mock();
    mock_set_faults(&slow, "delay=150");
    let deck = write_deck(&advanced_deck(
        "{algorithm: lowest-latency}",
        &[openai_target(&slow, 100), openai_target(&fast, 100)],
    ));
    let gw = start_gateway(&deck, &[]);
    for _ in 0..60 {
        assert_eq!(chat(&gw, &[]).status, 200);
    }
    let (f, s) = (mock_requests(&fast), mock_requests(&slow));
    assert!(
        f * 100 >= (f + s) * 80,
        "fast {f}, slow {s}: under 80 % to the fast target"
    );
}

#[test]
fn priority_uses_the_second_group_only_when_the_first_fails() {
    let mocks = [start_mock(), start_mock(), start_mock()];
    let deck = write_deck(&advanced_deck(
        &format!("{{algorithm: priority, retries: 3, {RETRY_ALL}}}"),
        &[
            openai_target(&mocks[0], 70),
            openai_target(&mocks[1], 70),
            anthropic_target(&mocks[2], 25),
        ],
    ));
    let gw = start_gateway(&deck, &[]);
    for _ in 0..20 {
        assert_eq!(chat(&gw, &[]).status, 200);
    }
    assert_eq!(
        mock_requests(&mocks[2]),
        0,
        "the fallback group got traffic"
    );
    assert!(mock_requests(&mocks[0]) >= 5 && mock_requests(&mocks[1]) >= 5);
    // One of the primary group failing still keeps the fallback group idle.
    mock_set_faults(&mocks[0], "status=500");
    for _ in 0..6 {
        let r = chat(&gw, &[]);
        assert_eq!(r.status, 200);
        assert_eq!(tried(&r).last().unwrap().0, 1);
    }
    assert_eq!(mock_requests(&mocks[2]), 0);
    // The whole group failing falls through to the next one.
    mock_set_faults(&mocks[1], "status=503");
    let r = chat(&gw, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let attempts = tried(&r);
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert_eq!(attempts[2], (2, "200".to_string()));
    assert_eq!(
        r.header("x-kong-llm-model"),
        Some("anthropic/claude-3-5-haiku-latest")
    );
}

/// 500, 429 and a timeout from an OpenAI target are answered by an Anthropic target, and then
/// a Bedrock one, through the OpenAI SDK, which never sees the failed attempts.
#[test]
fn failed_attempts_fall_back_across_providers_through_the_sdk() {
    let openai = start_mock();
    let anthropic = start_mock();
    let bedrock = start_mock();
    let deck = write_deck(&advanced_deck(
        &format!("{{algorithm: priority, retries: 2, read_timeout: 400, {RETRY_ALL}}}"),
        &[
            openai_target(&openai, 100),
            anthropic_target(&anthropic, 50),
            bedrock_target(&bedrock, 10),
        ],
    ));
    let gw = start_gateway(&deck, &[]);
    let base = gw.url("/lb");
    for fault in ["status=500", "status=429", "delay=2000"] {
        mock_set_faults(&openai, fault);
        let out: Value =
            serde_json::from_str(&run_python("sdk_client.py", &[&base, "chat", "Fall back"]))
                .unwrap();
        assert_eq!(
            out["content"], "Mock anthropic reply to: Fall back",
            "{fault}: {out}"
        );
        assert_eq!(out["header"], "anthropic/claude-3-5-haiku-latest");
        let label = if fault.starts_with("delay") {
            "timeout"
        } else {
            &fault[7..]
        };
        assert_eq!(
            out["tried"],
            format!("0 openai/gpt-4o {label}, 1 anthropic/claude-3-5-haiku-latest 200")
        );
    }
    mock_set_faults(&openai, "status=500");
    mock_set_faults(&anthropic, "status=502");
    let out: Value =
        serde_json::from_str(&run_python("sdk_client.py", &[&base, "chat", "Twice"])).unwrap();
    assert_eq!(out["content"], "Mock bedrock reply to: Twice", "{out}");
    // Streams fall back the same way (before any byte reached the client).
    let out: Value =
        serde_json::from_str(&run_python("sdk_client.py", &[&base, "stream", "Streamed"])).unwrap();
    assert_eq!(out["content"], "Mock bedrock reply to: Streamed", "{out}");
    assert_eq!(out["finish_reason"], "stop");
}

#[test]
fn retries_are_bounded_and_zero_passes_the_first_failure_through() {
    let mocks = [start_mock(), start_mock(), start_mock()];
    for m in &mocks[..2] {
        mock_set_faults(m, "status=500");
    }
    let targets = [
        openai_target(&mocks[0], 100),
        openai_target(&mocks[1], 50),
        openai_target(&mocks[2], 10),
    ];
    let deck = write_deck(&advanced_deck(
        &format!("{{algorithm: priority, retries: 1, {RETRY_ALL}}}"),
        &targets,
    ));
    let gw = start_gateway(&deck, &[]);
    let r = chat(&gw, &[]);
    assert_eq!(r.status, 500, "retries: 1 allows two attempts only");
    assert_eq!(tried(&r).len(), 2);
    assert_eq!(mock_requests(&mocks[2]), 0);
    drop(gw);

    let deck = write_deck(&advanced_deck(
        &format!("{{algorithm: priority, retries: 0, {RETRY_ALL}}}"),
        &targets,
    ));
    let gw = start_gateway(&deck, &[]);
    let r = chat(&gw, &[]);
    assert_eq!(r.status, 500);
    assert_eq!(tried(&r), vec![(0, "500".to_string())]);
    assert_eq!(
        mock_requests(&mocks[1]),
        1,
        "only the first gateway reached target 1"
    );

    // Without non_idempotent, a POST that reached the provider is not repeated (nginx).
    let deck = write_deck(&advanced_deck(
        "{algorithm: priority, failover_criteria: [error, timeout, http_500]}",
        &targets,
    ));
    let gw = start_gateway(&deck, &[]);
    let r = chat(&gw, &[]);
    assert_eq!(r.status, 500);
    assert_eq!(tried(&r).len(), 1);
}

#[test]
fn connection_failures_always_move_on() {
    let live = start_mock();
    let dead_port = free_port();
    let dead = format!(
        "{{route_type: llm/v1/chat, model: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"http://127.0.0.1:{dead_port}/v1/chat/completions\"}}}}}}"
    );
    // The default criteria [error, timeout] retry a refused connection even for a POST.
    let deck = write_deck(&advanced_deck(
        "{algorithm: priority}",
        &[
            dead.replace("model:", "weight: 100, model:"),
            openai_target(&live, 1),
        ],
    ));
    let gw = start_gateway(&deck, &[]);
    let r = chat(&gw, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(tried(&r), vec![(0, "error".into()), (1, "200".into())]);
}

#[test]
fn circuit_breaker_opens_after_max_fails_and_closes_after_fail_timeout() {
    let flaky = start_mock();
    let steady = start_mock();
    let deck = write_deck(&advanced_deck(
        // A fail_timeout well above the 20 requests' time on a loaded machine (a probe within
        // the loop would count a fourth failure).
        &format!("{{algorithm: round-robin, max_fails: 3, fail_timeout: 4000, {RETRY_ALL}}}"),
        &[openai_target(&flaky, 100), openai_target(&steady, 100)],
    ));
    let gw = start_gateway(&deck, &[]);
    mock_set_faults(&flaky, "status=500");
    for _ in 0..20 {
        let r = chat(&gw, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        mock_requests(&flaky),
        3,
        "excluded after max_fails failures"
    );
    // After fail_timeout one probe goes through; success closes the circuit.
    mock_set_faults(&flaky, "");
    std::thread::sleep(Duration::from_millis(4100));
    for _ in 0..20 {
        assert_eq!(chat(&gw, &[]).status, 200);
    }
    let after = mock_requests(&flaky);
    assert!(
        after >= 3 + 8,
        "the target did not come back: {after} requests in total"
    );
}

#[test]
fn every_target_excluded_is_a_503_naming_the_route() {
    let mock = start_mock();
    mock_set_faults(&mock, "status=500");
    let deck = write_deck(&advanced_deck(
        &format!("{{max_fails: 2, fail_timeout: 30000, {RETRY_ALL}}}"),
        &[openai_target(&mock, 100)],
    ));
    let gw = start_gateway(&deck, &[]);
    assert_eq!(chat(&gw, &[]).status, 500);
    assert_eq!(chat(&gw, &[]).status, 500);
    let r = chat(&gw, &[]);
    assert_eq!(r.status, 503);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("route 'balanced'"), "{message}");
    assert!(r.header("retry-after").is_some());
    assert_eq!(mock_requests(&mock), 2);
}

fn transcription_target(mock: &Proc, weight: u32) -> String {
    format!(
        "{{route_type: audio/v1/audio/transcriptions, weight: {weight}, auth: {{header_name: Authorization, header_value: \"Bearer sk-openai\"}}, model: {{provider: openai, name: whisper-1, options: {{upstream_url: \"http://127.0.0.1:{}/v1/audio/transcriptions\"}}}}}}",
        mock.port
    )
}

fn upload(gw: &Proc) -> Response {
    let body = b"--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n--b0--\r\n";
    let mp = ("content-type", "multipart/form-data; boundary=b0");
    request(gw.port, "POST", "/lb/audio/transcriptions", &[mp], body)
}

#[test]
fn multipart_uploads_are_balanced_and_sent_once() {
    let mocks = [start_mock(), start_mock()];
    let targets = [
        transcription_target(&mocks[0], 100),
        transcription_target(&mocks[1], 100),
    ];
    let deck = write_deck(&advanced_deck("{algorithm: round-robin}", &targets));
    let gw = start_gateway(&deck, &[]);
    for _ in 0..4 {
        let r = upload(&gw);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json()["text"],
            "Mock openai transcript of a.wav (8 bytes)"
        );
        assert_eq!(r.header("x-kong-llm-model"), Some("openai/whisper-1"));
    }
    assert_eq!(mock_requests(&mocks[0]), 2);
    assert_eq!(mock_requests(&mocks[1]), 2);
    drop(gw);

    // The body streamed to the first target is gone: its failure is the answer, even with
    // retries and every failover criterion configured.
    mock_set_faults(&mocks[0], "status=500");
    let targets = [
        transcription_target(&mocks[0], 100),
        transcription_target(&mocks[1], 50),
    ];
    let deck = write_deck(&advanced_deck(
        &format!("{{algorithm: priority, retries: 3, {RETRY_ALL}}}"),
        &targets,
    ));
    let gw = start_gateway(&deck, &[]);
    let r = upload(&gw);
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(tried(&r), vec![(0, "500".to_string())]);
    assert_eq!(mock_requests(&mocks[1]), 2, "no second attempt");
}

fn image_edit(gw: &Proc) -> Response {
    let mut body = b"--b0\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nadd a hat\r\n--b0\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n".to_vec();
    body.extend_from_slice(b"\x89PNG fox\r\n--b0--\r\n");
    let mp = ("content-type", "multipart/form-data; boundary=b0");
    request(gw.port, "POST", "/lb/images/edits", &[mp], &body)
}

#[test]
fn an_upload_fails_over_to_a_target_of_another_provider() {
    let mocks = [start_mock(), start_mock()];
    let openai = format!(
        "{{route_type: image/v1/images/edits, weight: 100, auth: {{header_name: Authorization, header_value: \"Bearer sk-openai\"}}, model: {{provider: openai, name: gpt-image-1, options: {{upstream_url: \"http://127.0.0.1:{}/v1/images/edits\"}}}}}}",
        mocks[0].port
    );
    let gemini = format!(
        "{{route_type: image/v1/images/edits, weight: 50, auth: {{param_name: key, param_value: gem-key, param_location: query}}, model: {{provider: gemini, name: gemini-2.5-flash-image, options: {{upstream_url: \"http://127.0.0.1:{}\"}}}}}}",
        mocks[1].port
    );
    // OpenAI takes the form streamed, Gemini needs it whole: the route reads it once, and
    // each target gets it in its own shape.
    let deck = write_deck(&advanced_deck(
        "{algorithm: round-robin}",
        &[openai.clone(), gemini.clone()],
    ));
    let gw = start_gateway(&deck, &[]);
    let mut served = Vec::new();
    for _ in 0..3 {
        let r = image_edit(&gw);
        assert_eq!(r.status, 200, "{}", r.text());
        served.push(r.header("x-kong-llm-model").unwrap().to_string());
    }
    assert!(
        served.contains(&"openai/gpt-image-1".to_string()),
        "{served:?}"
    );
    assert!(
        served.contains(&"gemini/gemini-2.5-flash-image".to_string()),
        "{served:?}"
    );
    let edit = mock_log(&mocks[0])[0].clone();
    assert_eq!(edit["path"], "/v1/images/edits", "{edit}");
    drop(gw);

    // The first target fails: the same form goes to the Gemini target.
    mock_set_faults(&mocks[0], "status=500");
    let deck = write_deck(&advanced_deck(
        &format!("{{algorithm: priority, retries: 1, {RETRY_ALL}}}"),
        &[openai, gemini],
    ));
    let gw = start_gateway(&deck, &[]);
    let r = image_edit(&gw);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        tried(&r),
        vec![(0, "500".to_string()), (1, "200".to_string())]
    );
    assert_eq!(
        r.header("x-kong-llm-model"),
        Some("gemini/gemini-2.5-flash-image")
    );
    let b64 = r.json()["data"][0]["b64_json"]
        .as_str()
        .unwrap()
        .to_string();
    let image = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let image = String::from_utf8_lossy(&image).into_owned();
    assert!(image.ends_with("of: add a hat (1 input images)"), "{image}");
}

fn realtime_target(m: &Proc) -> String {
    format!(
        "{{route_type: realtime/v1/realtime, weight: 100, auth: {{header_name: Authorization, header_value: \"Bearer sk-openai\"}}, model: {{provider: openai, name: gpt-4o-realtime-preview, options: {{upstream_url: \"ws://127.0.0.1:{}/v1/realtime\"}}}}}}",
        m.port
    )
}

/// Relays `sessions` short realtime sessions through the route; each must close cleanly.
fn realtime_sessions(gw: &Proc, sessions: usize) {
    let url = format!("ws://127.0.0.1:{}/lb/realtime", gw.port);
    for _ in 0..sessions {
        let out: Value =
            serde_json::from_str(&run_python("realtime.py", &[&url, "relay", "2"])).unwrap();
        assert_eq!(out["close_code"], 4000, "{out}");
    }
}

/// The realtime handshakes a mock saw.
fn realtime_handshakes(m: &Proc) -> usize {
    mock_log(m)
        .iter()
        .filter(|e| e["path"] == "/v1/realtime")
        .count()
}

#[test]
fn realtime_sessions_are_balanced_across_targets() {
    let mocks = [start_mock(), start_mock()];
    let targets = [realtime_target(&mocks[0]), realtime_target(&mocks[1])];
    let deck = write_deck(&advanced_deck("{algorithm: round-robin}", &targets));
    let gw = start_gateway(&deck, &[]);
    realtime_sessions(&gw, 4);
    for m in &mocks {
        assert_eq!(realtime_handshakes(m), 2, "round-robin splits the sessions");
    }
}

#[test]
fn a_refused_realtime_upgrade_fails_over_and_counts_for_the_circuit_breaker() {
    let mocks = [start_mock(), start_mock()];
    let targets = [realtime_target(&mocks[0]), realtime_target(&mocks[1])];
    let deck = write_deck(&advanced_deck(
        &format!("{{algorithm: round-robin, max_fails: 2, fail_timeout: 30000, {RETRY_ALL}}}"),
        &targets,
    ));
    let gw = start_gateway(&deck, &[]);
    mock_set_faults(&mocks[0], "status=503");
    // Every session lands on the healthy target; the refusing one is tried until its circuit
    // opens after max_fails refusals, then left alone.
    realtime_sessions(&gw, 6);
    assert_eq!(realtime_handshakes(&mocks[0]), 2);
    assert_eq!(realtime_handshakes(&mocks[1]), 6);
    drop(gw);

    // A refusal outside failover_criteria (the client's fault header makes both answer 401)
    // is the client's answer, from the first target.
    let deck = write_deck(&advanced_deck(
        "{algorithm: priority, failover_criteria: [error, timeout, http_503]}",
        &[realtime_target(&mocks[0]), realtime_target(&mocks[1])],
    ));
    let gw = start_gateway(&deck, &[]);
    let url = format!("ws://127.0.0.1:{}/lb/realtime", gw.port);
    let out: Value = serde_json::from_str(&run_python("realtime.py", &[&url, "refused"])).unwrap();
    assert_eq!(out["status"], 401, "{out}");
    assert_eq!(realtime_handshakes(&mocks[1]), 6, "no second attempt");
}
