//! Cross-format tests: fault directives, the request log, stats, routing, and connection-level
//! behaviour against a real server.

use std::time::{Duration, Instant};

use actix_web::{body::BodySize, test::TestRequest, web};
use serde_json::{json, Value};

use super::{
    fault,
    log::{MockState, LOG_CAPACITY},
    testkit::{http_get_json, post_json, raw_post, send, send_with, sse_json, start_server},
};

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o", "stream": stream,
           "messages": [{"role": "user", "content": "hello there"}]})
}

fn faulted(path: &str, body: &Value, faults: &str) -> TestRequest {
    TestRequest::post()
        .uri(path)
        .set_json(body)
        .insert_header((fault::HEADER, faults))
}

#[actix_rt::test]
async fn unknown_paths_are_json_404s() {
    let got = send(TestRequest::get().uri("/nope")).await;
    assert_eq!(got.status, 404);
    assert_eq!(
        got.json(),
        json!({"error": {"message": "mock: no such endpoint /nope"}})
    );
}

#[actix_rt::test]
async fn non_json_bodies_are_provider_400s() {
    let req = TestRequest::post()
        .uri("/v1/messages")
        .set_payload("not json");
    let got = send(req).await;
    assert_eq!(got.status, 400);
    assert_eq!(got.json()["type"], "error");
}

#[actix_rt::test]
async fn model_names_carry_faults() {
    let mut body = chat(false);
    body["model"] = json!("mock-fault-status-503");
    let got = post_json("/v1/chat/completions", &body, None).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.json()["error"]["type"], "server_error");

    let path = "/v1beta/models/mock-fault-status-429:generateContent";
    let body = json!({"contents": [{"parts": [{"text": "x"}]}]});
    let got = post_json(path, &body, None).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.json()["error"]["status"], "RESOURCE_EXHAUSTED");
}

#[actix_rt::test]
async fn html_fault_answers_an_html_page() {
    let got = post_json("/v1/messages", &chat(false), Some("status=502,html")).await;
    assert_eq!(got.status, 502);
    assert!(got.content_type().starts_with("text/html"));
    let text = String::from_utf8_lossy(&got.body);
    assert!(text.starts_with("<html>") && text.contains("502 Bad Gateway"));

    let got = post_json("/v1/chat/completions", &chat(false), Some("html")).await;
    assert_eq!(got.status, 502);
}

#[actix_rt::test]
async fn bad_json_truncates_and_no_choices_removes_content() {
    let got = post_json("/v1/chat/completions", &chat(false), Some("bad_json")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.size, BodySize::Sized(got.body.len() as u64));
    assert!(serde_json::from_slice::<Value>(&got.body).is_err());

    let v = post_json("/v1/chat/completions", &chat(false), Some("no_choices"))
        .await
        .json();
    assert!(v.get("choices").is_none());
    assert_eq!(v["object"], "chat.completion");
}

#[actix_rt::test]
async fn chunks_fault_streams_exactly_n_content_chunks() {
    let got = post_json("/v1/chat/completions", &chat(true), Some("chunks=50")).await;
    let (events, done) = sse_json(&got.body);
    assert!(done);
    let contents: Vec<&str> = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(contents.len(), 50);
    assert_eq!(contents[0], "w1");
    assert_eq!(contents[49], " w50");
}

#[actix_rt::test]
async fn bytes_fault_sizes_the_reply() {
    let v = post_json("/v1/chat/completions", &chat(false), Some("bytes=4096"))
        .await
        .json();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content.len(), 4096);
}

#[actix_rt::test]
async fn delay_waits_before_the_head() {
    let started = Instant::now();
    let got = post_json("/v1/chat/completions", &chat(false), Some("delay=150")).await;
    assert_eq!(got.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[actix_rt::test]
async fn chunk_delay_spaces_stream_chunks() {
    let started = Instant::now();
    let got = post_json(
        "/v1/chat/completions",
        &chat(true),
        Some("chunks=3,chunk_delay=40"),
    )
    .await;
    assert_eq!(got.status, 200);
    // role, 3 words, finish, [DONE]: five gaps.
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[actix_rt::test]
async fn hang_never_answers() {
    let body = chat(false);
    let request = post_json("/v1/chat/completions", &body, Some("hang"));
    let outcome = actix_rt::time::timeout(Duration::from_millis(300), request).await;
    assert!(outcome.is_err(), "a hanging request must not answer");
}

#[actix_rt::test]
async fn the_log_records_requests_in_order_and_clears() {
    let state = web::Data::new(MockState::new());
    let req = faulted(
        "/v1/chat/completions?api-version=1",
        &chat(false),
        "delay=0",
    )
    .insert_header(("Authorization", "Bearer sk-test"));
    send_with(&state, req).await;
    let raw = TestRequest::post()
        .uri("/v1/messages")
        .set_payload("plain text");
    send_with(&state, raw).await;
    send_with(&state, TestRequest::get().uri("/missing")).await;

    let log = send_with(&state, TestRequest::get().uri("/__mock/requests"))
        .await
        .json();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 3);
    let first = &log[0];
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/v1/chat/completions");
    assert_eq!(first["query"], "api-version=1");
    assert_eq!(first["headers"]["authorization"], "Bearer sk-test");
    assert_eq!(first["headers"]["x-mock-fault"], "delay=0");
    assert_eq!(first["body"]["messages"][0]["content"], "hello there");
    assert_eq!(log[1]["body"], "plain text");
    assert_eq!(log[2]["path"], "/missing");

    let newest = send_with(&state, TestRequest::get().uri("/__mock/requests?last=1"))
        .await
        .json();
    assert_eq!(newest.as_array().unwrap().len(), 1);
    assert_eq!(newest[0]["path"], "/missing");

    let stats = send_with(&state, TestRequest::get().uri("/__mock/stats"))
        .await
        .json();
    assert_eq!(
        stats,
        json!({"requests": 3, "open_streams": 0, "cancelled_streams": 0})
    );

    let cleared = send_with(&state, TestRequest::delete().uri("/__mock/requests")).await;
    assert_eq!(cleared.status, 204);
    let log = send_with(&state, TestRequest::get().uri("/__mock/requests"))
        .await
        .json();
    assert_eq!(log, json!([]));
}

#[actix_rt::test]
async fn the_log_keeps_only_the_newest_entries() {
    let state = web::Data::new(MockState::new());
    for i in 0..LOG_CAPACITY + 5 {
        send_with(&state, TestRequest::get().uri(&format!("/r{i}"))).await;
    }
    let log = send_with(&state, TestRequest::get().uri("/__mock/requests"))
        .await
        .json();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), LOG_CAPACITY);
    assert_eq!(log[0]["path"], "/r5");
}

#[actix_rt::test]
async fn a_state_without_log_still_counts() {
    let state = web::Data::new(MockState::default());
    send_with(&state, TestRequest::get().uri("/x")).await;
    let log = send_with(&state, TestRequest::get().uri("/__mock/requests"))
        .await
        .json();
    assert_eq!(log, json!([]));
    let stats = send_with(&state, TestRequest::get().uri("/__mock/stats"))
        .await
        .json();
    assert_eq!(stats["requests"], 1);
}

// ---- against a real server -------------------------------------------------------------------

const CHAT_PATH: &str = "/v1/chat/completions";

#[actix_rt::test]
async fn real_server_sends_content_length_and_chunked_streams() {
    let addr = start_server();
    let deadline = Duration::from_secs(5);
    let (raw, _) = raw_post(addr, CHAT_PATH, &chat(false), "", deadline).await;
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("content-length:"));

    let (raw, _) = raw_post(addr, CHAT_PATH, &chat(true), "", deadline).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked"));
    assert!(text.contains("data: [DONE]"));
    assert!(text.ends_with("0\r\n\r\n"));
}

#[actix_rt::test]
async fn close_mid_stream_drops_the_connection_without_terminator() {
    let addr = start_server();
    let faults = "chunks=10,close_mid_stream";
    let (raw, closed) =
        raw_post(addr, CHAT_PATH, &chat(true), faults, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(closed, "the server must close the connection");
    assert!(text.contains("\"w1\""), "{text}");
    assert!(!text.contains("[DONE]"));
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "no chunked terminator: {text}"
    );
}

#[actix_rt::test]
async fn hang_holds_until_the_client_times_out() {
    let addr = start_server();
    let started = Instant::now();
    let deadline = Duration::from_millis(300);
    let (raw, closed) = raw_post(addr, CHAT_PATH, &chat(false), "hang", deadline).await;
    assert!(raw.is_empty() && !closed);
    assert!(started.elapsed() >= deadline);
}

#[actix_rt::test]
async fn clients_leaving_mid_stream_are_counted_as_cancelled() {
    let addr = start_server();
    // Read for a moment, then hang up with the stream still going.
    let faults = "chunks=100,chunk_delay=20";
    let deadline = Duration::from_millis(150);
    let (raw, closed) = raw_post(addr, CHAT_PATH, &chat(true), faults, deadline).await;
    assert!(!raw.is_empty() && !closed);

    let mut stats = Value::Null;
    for _ in 0..50 {
        stats = http_get_json(addr, "/__mock/stats").await;
        if stats["cancelled_streams"] == 1 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats["cancelled_streams"], 1, "{stats}");
    assert_eq!(stats["open_streams"], 0);
}
