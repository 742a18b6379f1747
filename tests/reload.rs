//! Live reload on SIGHUP: valid files take effect, invalid ones are rejected with the old config
//! kept, open streams finish on the config they began with, and no request fails under load.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn chat_route(mock: u16, model: &str) -> String {
    deck(&[(
        "chat",
        "/chat",
        &format!(
            r#"route_type: llm/v1/chat
model: {{provider: openai, name: {model}, options: {{upstream_url: "http://127.0.0.1:{mock}/v1/chat/completions"}}}}"#
        ),
    )])
}

fn model_header(port: u16) -> (u16, Option<String>) {
    let r = post_json(
        port,
        "/chat",
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    );
    (r.status, r.header("x-kong-llm-model").map(str::to_string))
}

fn reload_and_wait(gw: &Proc, needle: &str, count_before: usize) {
    gw.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if gw.logs().matches(needle).count() > count_before {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no '{needle}' in the logs after SIGHUP:\n{}", gw.logs());
}

#[test]
fn valid_change_takes_effect_and_invalid_change_keeps_the_old_config() {
    let mock = start_mock();
    let path = write_deck(&chat_route(mock.port, "model-one"));
    let gw = start_gateway(&path, &[]);
    assert_eq!(
        model_header(gw.port),
        (200, Some("openai/model-one".into()))
    );

    std::fs::write(&path, chat_route(mock.port, "model-two")).unwrap();
    reload_and_wait(&gw, "config reloaded", 0);
    assert_eq!(
        model_header(gw.port),
        (200, Some("openai/model-two".into()))
    );

    std::fs::write(
        &path,
        "_format_version: \"3.0\"\nservices:\n  - name: x\n    routes:\n      - name: r\n        paths: [/chat]\n        plugins:\n          - name: ai-proxy\n            config: {route_type: llm/v1/chat, model: {provider: openai, options: {temperature: 9}}}\n",
    )
    .unwrap();
    reload_and_wait(&gw, "reload rejected", 0);
    assert!(gw.logs().contains("temperature"), "{}", gw.logs());
    assert_eq!(
        model_header(gw.port),
        (200, Some("openai/model-two".into()))
    );

    std::fs::write(&path, "{{{{ not yaml").unwrap();
    let before = gw.logs().matches("previous config stays").count();
    reload_and_wait(&gw, "previous config stays", before);
    assert_eq!(
        model_header(gw.port),
        (200, Some("openai/model-two".into()))
    );
}

#[test]
fn open_stream_finishes_on_its_config_across_a_reload() {
    let mock = start_mock();
    let path = write_deck(&chat_route(mock.port, "before"));
    let gw = start_gateway(&path, &[]);
    let port = gw.port;
    let stream = std::thread::spawn(move || {
        request(
            port,
            "POST",
            "/chat",
            &[
                ("content-type", "application/json"),
                ("x-mock-fault", "chunks=20,chunk_delay=50"),
            ],
            json!({"messages": [{"role": "user", "content": "slow"}], "stream": true})
                .to_string()
                .as_bytes(),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&path, chat_route(mock.port, "after")).unwrap();
    reload_and_wait(&gw, "config reloaded", 0);
    assert_eq!(model_header(gw.port), (200, Some("openai/after".into())));

    let r = stream.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-kong-llm-model"), Some("openai/before"));
    let text = r.text();
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let words = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert_eq!(words, 20, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"));
}

#[test]
fn ten_reloads_during_2000_requests_lose_nothing() {
    let mock = start_mock();
    let path = write_deck(&chat_route(mock.port, "steady"));
    let gw = start_gateway(&path, &[]);
    let port = gw.port;
    let done = Arc::new(AtomicUsize::new(0));
    let reloads_finished = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let done = done.clone();
            let reloads_finished = reloads_finished.clone();
            let failures = failures.clone();
            // Keep the load on until every reload happened and at least 2,000 requests ran.
            std::thread::spawn(move || loop {
                let (status, header) = model_header(port);
                if status != 200 || header.as_deref() != Some("openai/steady") {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                let total = done.fetch_add(1, Ordering::Relaxed) + 1;
                if total >= 2000 && reloads_finished.load(Ordering::Relaxed) {
                    break;
                }
            })
        })
        .collect();
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(40));
        reload_and_wait(&gw, "config reloaded", i);
    }
    reloads_finished.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert!(done.load(Ordering::Relaxed) >= 2000);
    assert_eq!(gw.logs().matches("config reloaded").count(), 10);
}
