//! ai-rate-limiting-advanced with `strategy: local` through the real binary: per-consumer token
//! windows counted from the provider's answers (buffered and streamed), refusal before the
//! provider with Kong's body and headers, windows that reset, consumer-scoped limits, and a
//! SIGHUP that changes a limit live.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const ALICE: &str = "alice-key-0001";
const BOB: &str = "bob-key-0002";

/// One chat route with key-auth and `limit`; `extra` adds top-level entries.
fn limited_deck(mock_port: u16, limit: &str, extra: &str) -> String {
    let plugins = plugin("key-auth", "{}") + &plugin("ai-rate-limiting-advanced", limit);
    consumer_deck(
        mock_port,
        &[("/chat", plugins)],
        &format!(
            "consumers:\n  - username: alice\n    keyauth_credentials: [{{key: {ALICE}}}]\n  - username: bob\n    keyauth_credentials: [{{key: {BOB}}}]\n{extra}"
        ),
    )
}

fn chat(gw: &Proc, key: &str, stream: bool) -> Response {
    chat_as(gw.port, "/chat", key, stream)
}

/// Total tokens of a buffered or streamed answer.
fn tokens(r: &Response) -> u64 {
    if r.header("content-type") == Some("text/event-stream") {
        sse_data(&r.text())
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| v["usage"]["total_tokens"].as_u64())
            .sum()
    } else {
        r.json()["usage"]["total_tokens"].as_u64().unwrap()
    }
}

/// Calls until refused; returns the tokens admitted and the refusal.
fn spend(gw: &Proc, key: &str) -> (u64, Response) {
    let mut total = 0;
    for _ in 0..200 {
        let r = chat(gw, key, false);
        if r.status != 200 {
            return (total, r);
        }
        total += tokens(&r);
    }
    panic!("never refused");
}

// "hello there" costs 2 prompt + 6 completion tokens at the mock.
const COST: u64 = 8;

#[test]
fn a_consumer_window_is_counted_refused_and_reset() {
    let mock = start_mock();
    let limit =
        "{window_type: fixed, llm_providers: [{name: openai, limit: [60], window_size: [3]}]}";
    let gw = start_gateway(&write_deck(&limited_deck(mock.port, limit, "")), &[]);

    // Wait for the start of a fresh window so the test is not cut by a reset.
    let first = chat(&gw, ALICE, false);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-ai-ratelimit-limit-3-openai"), Some("60"));
    let reset: u64 = first
        .header("x-ai-ratelimit-reset-3-openai")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&reset));
    std::thread::sleep(Duration::from_millis(reset * 1000 + 50));

    let before = mock_stats(&mock)["requests"].as_u64().unwrap();
    let (admitted, refused) = spend(&gw, ALICE);
    // Sequential calls: one request may start with 4 tokens left, so at most limit + one cost.
    assert!((60..60 + COST).contains(&admitted), "admitted {admitted}");
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.json(),
        serde_json::json!({"message": "AI token rate limit exceeded for provider(s): openai"})
    );
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "retry-after {retry}");
    assert_eq!(
        refused.header("x-ai-ratelimit-remaining-3-openai"),
        Some("0")
    );
    let served = mock_stats(&mock)["requests"].as_u64().unwrap() - before;
    assert_eq!(
        served,
        admitted / COST,
        "the refused request never reached the provider"
    );

    // Another consumer has its own window; Alice's resets with the window.
    assert_eq!(chat(&gw, BOB, false).status, 200);
    std::thread::sleep(Duration::from_millis(retry * 1000 + 50));
    assert_eq!(chat(&gw, ALICE, false).status, 200, "the window reset");
}

#[test]
fn streams_count_and_the_sdk_sees_the_limit() {
    // The counts below compare one 60 s fixed window's headers.
    wait_for_window_room(60, Duration::from_secs(25));
    let mock = start_mock();
    let limit =
        "{window_type: fixed, llm_providers: [{name: openai, limit: [1000], window_size: [60]}]}";
    let gw = start_gateway(&write_deck(&limited_deck(mock.port, limit, "")), &[]);
    let remaining = |r: &Response| -> u64 {
        r.header("x-ai-ratelimit-remaining-60-openai")
            .unwrap()
            .parse()
            .unwrap()
    };
    let a = chat(&gw, ALICE, true);
    assert_eq!(a.status, 200);
    let streamed = tokens(&a);
    assert_eq!(streamed, COST);
    // The stream settles when it ends, right after the client read it.
    let counted = poll_until(Duration::from_secs(5), || {
        let b = chat(&gw, ALICE, false);
        remaining(&b) == remaining(&a) - streamed
    });
    assert!(counted, "the stream's tokens were counted");

    let base = gw.url("/chat");
    let out: Value = serde_json::from_str(&run_python(
        "limits_client.py",
        &["call", &base, BOB, "stream"],
    ))
    .unwrap();
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["usage"]["total_tokens"], COST);
    assert_eq!(out["headers"]["x-ai-ratelimit-limit-60-openai"], "1000");
}

#[test]
fn a_consumer_scoped_limit_wins_and_sighup_changes_limits_live() {
    // Alice's and Bob's spending must fall in one 60 s fixed window, across the reload.
    wait_for_window_room(60, Duration::from_secs(30));
    let mock = start_mock();
    let limit = |n: u64| {
        format!("{{window_type: fixed, llm_providers: [{{name: openai, limit: [{n}], window_size: [60]}}]}}")
    };
    let bob_only = "plugins:\n  - name: ai-rate-limiting-advanced\n    consumer: bob\n    route: chat\n    config: {window_type: fixed, hide_client_headers: true, error_code: 403, error_message: 'slow down: ', llm_providers: [{name: openai, limit: [10], window_size: [60]}]}\n";
    let path = write_deck(&limited_deck(mock.port, &limit(1000), bob_only));
    let gw = start_gateway(&path, &[]);

    let a = chat(&gw, ALICE, false);
    assert_eq!(a.header("x-ai-ratelimit-limit-60-openai"), Some("1000"));
    let (bob_admitted, refused) = spend(&gw, BOB);
    assert!(
        (10..10 + COST).contains(&bob_admitted),
        "bob's own limit: {bob_admitted}"
    );
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["message"], "slow down: openai");
    assert!(
        refused.header("x-ai-ratelimit-limit-60-openai").is_none(),
        "hide_client_headers"
    );

    // Alice has spent 8 of 1000; a reload to 20 leaves her 12, so she is refused after two.
    std::fs::write(&path, limited_deck(mock.port, &limit(20), bob_only)).unwrap();
    gw.signal("HUP");
    assert!(gw.wait_for_log("config reloaded", Duration::from_secs(10)));
    let started = Instant::now();
    let (admitted, refused) = spend(&gw, ALICE);
    assert_eq!(refused.status, 429);
    assert!(
        (12..12 + COST).contains(&admitted),
        "admitted {admitted} after the reload"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn unknown_cost_calls_run_side_by_side_far_from_the_limit_and_one_at_a_time_near_it() {
    let mock = start_mock();
    let limit = format!("{{window_type: fixed, llm_providers: [{{name: openai, limit: [{UNKNOWN_COST_LIMIT}], window_size: [{UNKNOWN_COST_WINDOW}]}}]}}");
    let gw = start_gateway(&write_deck(&limited_deck(mock.port, &limit, "")), &[]);
    assert_unknown_cost_admission(&mock, gw.port, gw.port, "/chat", ALICE);
}
