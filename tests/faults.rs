//! Upstream faults and timeouts, through the real binary against the mock's fault modes: every
//! failure reaches the client as a JSON error (or, on a stream already started, as an error
//! event then `[DONE]`), never as a hang. The service's `read_timeout` is 300 ms here.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// The service read timeout of these tests, in ms.
const READ_TIMEOUT_MS: u64 = 300;

fn setup() -> MockAndGateway {
    start_mock_and_gateway(deck_for)
}

fn deck_for(m: u16) -> String {
    let refused = free_port();
    let chat = openai_route(m, "");
    let refused_route = format!(
        "route_type: llm/v1/chat\nmodel: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"http://127.0.0.1:{refused}/v1/chat/completions\"}}}}"
    );
    let byo = format!(
        "route_type: llm/v1/chat\nmodel: {{provider: openai, options: {{upstream_url: \"http://127.0.0.1:{m}/v1/chat/completions\"}}}}"
    );
    deck_with_timeouts(
        1000,
        READ_TIMEOUT_MS,
        1000,
        &[
            ("chat", "/chat", &chat),
            ("refused", "/refused", &refused_route),
            ("byo", "/byo", &byo),
        ],
    )
}

fn faulty(port: u16, path: &str, fault: &str, stream: bool) -> Response {
    request(
        port,
        "POST",
        path,
        &[
            ("content-type", "application/json"),
            ("x-mock-fault", fault),
        ],
        chat_body("fault please", stream).to_string().as_bytes(),
    )
}

fn error_message(r: &Response) -> String {
    r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The payload of the stream's error event, if it has one.
fn error_event(text: &str) -> Option<Value> {
    sse_data(text)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v.get("error").is_some())
}

fn ends_with_done(text: &str) -> bool {
    sse_data(text).last().map(String::as_str) == Some("[DONE]")
}

#[test]
fn hung_upstream_gets_504_json_for_plain_and_stream_requests() {
    let s = setup();
    for stream in [false, true] {
        let r = faulty(s.gw.port, "/chat", "hang", stream);
        assert_eq!(r.status, 504, "stream={stream}: {}", r.text());
        assert!(r.header("content-type").unwrap().contains("json"));
        assert_eq!(
            error_message(&r),
            format!("upstream timed out after {READ_TIMEOUT_MS} ms")
        );
    }
    assert_no_leaks(s.status);
}

#[test]
fn upstream_slower_than_read_timeout_before_the_head_gets_504() {
    let s = setup();
    let r = faulty(s.gw.port, "/chat", "delay=3000", false);
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "gateway_error");
}

#[test]
fn stalled_stream_ends_with_an_error_event_then_done_and_cancels_upstream() {
    let s = setup();
    let before = mock_stats(&s.mock)["cancelled_streams"].as_u64().unwrap();
    let r = faulty(s.gw.port, "/chat", "chunk_delay=5000,chunks=4", true);
    assert_eq!(r.status, 200);
    let text = r.text();
    let event = error_event(&text).unwrap_or_else(|| panic!("no error event: {text}"));
    assert_eq!(
        event["error"]["message"],
        format!("upstream stream idle for more than {READ_TIMEOUT_MS} ms")
    );
    assert!(ends_with_done(&text), "{text}");
    // The first frame arrived before the stall.
    assert!(sse_data(&text).len() >= 3, "{text}");
    assert!(
        poll_until(Duration::from_secs(3), || {
            mock_stats(&s.mock)["cancelled_streams"].as_u64().unwrap() > before
        }),
        "the stalled upstream stream was not dropped: {}",
        mock_stats(&s.mock)
    );
    assert_no_leaks(s.status);
}

#[test]
fn stream_with_gaps_shorter_than_read_timeout_completes() {
    let s = setup();
    let r = faulty(s.gw.port, "/chat", "chunk_delay=100,chunks=6", true);
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(error_event(&text).is_none(), "{text}");
    assert_eq!(sse_content(&text), "w1 w2 w3 w4 w5 w6");
    assert!(ends_with_done(&text), "{text}");
}

/// An upstream that answers every request with a chunked SSE stream of `events` content
/// chunks as fast as the gateway reads, then `[DONE]`.
fn firehose_upstream(events: usize) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let event = "data: {\"id\":\"chatcmpl-f\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}\n\n";
    let block: String = event.repeat(256);
    std::thread::spawn(move || {
        for conn in listener.incoming().take(4) {
            let Ok(mut conn) = conn else { return };
            let block = block.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let _ = conn.read(&mut buf);
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                let _ = conn.write_all(head.as_bytes());
                let framed = format!("{:x}\r\n{block}\r\n", block.len());
                for _ in 0..events / 256 {
                    if conn.write_all(framed.as_bytes()).is_err() {
                        return;
                    }
                }
                let done = "data: [DONE]\n\n";
                let _ =
                    conn.write_all(format!("{:x}\r\n{done}\r\n0\r\n\r\n", done.len()).as_bytes());
            });
        }
    });
    port
}

#[test]
fn slow_client_is_not_mistaken_for_an_idle_upstream() {
    let firehose = firehose_upstream(256 * 1200);
    let path = write_deck(&deck_with_timeouts(
        1000,
        READ_TIMEOUT_MS,
        1000,
        &[(
            "firehose",
            "/firehose",
            &format!(
                "route_type: llm/v1/chat\nmodel: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"http://127.0.0.1:{firehose}/v1/chat/completions\"}}}}"
            ),
        )],
    ));
    let (gw, status) = start_gateway_with_status(&path, &[]);
    // ~45 MB of events, far more than the socket buffers hold: while the client does not read,
    // backpressure pauses the upstream read, which must not count as upstream idleness.
    let mut conn = RawConn::post(
        gw.port,
        "/firehose",
        &[],
        chat_body("a lot", true).to_string().as_bytes(),
    );
    assert!(conn.read_until(b"data: "), "{}", conn.text());
    std::thread::sleep(Duration::from_millis(6 * READ_TIMEOUT_MS));
    conn.read_to_end();
    let text = conn.response().text();
    let tail = &text[text.len().saturating_sub(400)..];
    assert!(error_event(tail).is_none(), "the stream was cut: {tail}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{tail}");
    assert_eq!(text.matches("\"content\":\"x\"").count(), 256 * 1200);
    assert_no_leaks(status);
}

/// A listener whose accept queue is full, so a new connection attempt is never answered (its
/// SYN is dropped): a black-holed upstream on loopback. The listener process is killed on drop.
struct BlackHole {
    port: u16,
    listener: std::process::Child,
    /// The connections that fill the accept queue.
    _fillers: Vec<std::net::TcpStream>,
}

impl BlackHole {
    fn open() -> BlackHole {
        use std::io::BufRead;
        // Python, because std's listener cannot choose its backlog.
        let mut listener = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(120)",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(listener.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().unwrap();
        // Connections beyond the queue's one slot hang in SYN-SENT until they time out.
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let fillers = (0..3)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
            })
            .collect();
        BlackHole {
            port,
            listener,
            _fillers: fillers,
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        let _ = self.listener.kill();
        let _ = self.listener.wait();
    }
}

#[test]
fn unanswered_connect_gets_504_after_the_connect_timeout() {
    let hole = BlackHole::open();
    let route = format!(
        "route_type: llm/v1/chat\nmodel: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"http://127.0.0.1:{}/v1/chat/completions\"}}}}",
        hole.port
    );
    // A long read timeout and a long settings-level connect timeout: only the service's own
    // `connect_timeout` (300 ms) can end it.
    let path = write_deck(&deck_with_timeouts(
        300,
        20_000,
        1000,
        &[("hole", "/hole", &route)],
    ));
    let gw = start_gateway(&path, &[("AIGW_CONNECT_TIMEOUT_MS", "60000")]);
    let started = std::time::Instant::now();
    let r = post_json(gw.port, "/hole", &chat_body("anyone?", false));
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(error_message(&r), "upstream timed out after 300 ms");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn refused_connection_gets_502_json() {
    let s = setup();
    for stream in [false, true] {
        let r = post_json(s.gw.port, "/refused", &chat_body("hi", stream));
        assert_eq!(r.status, 502, "{}", r.text());
        let message = error_message(&r);
        assert!(message.starts_with("upstream unreachable"), "{message}");
        assert_eq!(r.json()["error"]["type"], "gateway_error");
    }
    assert_no_leaks(s.status);
}

#[test]
fn provider_error_statuses_pass_through_with_their_body_and_model_header() {
    let s = setup();
    for status in [400u16, 401, 403, 404, 429, 500, 503] {
        for stream in [false, true] {
            let r = faulty(s.gw.port, "/chat", &format!("status={status}"), stream);
            assert_eq!(r.status, status, "stream={stream}: {}", r.text());
            assert_eq!(r.header("x-kong-llm-model"), Some("openai/gpt-4o"));
            assert!(r.header("content-type").unwrap().contains("json"));
            // The mock's own OpenAI error body, unchanged.
            let body = r.json();
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("mock fault: status {status}")),
                "{body}"
            );
        }
    }
}

#[test]
fn html_error_pages_keep_their_status_and_are_wrapped_in_json() {
    let s = setup();
    for (fault, status) in [
        ("html", 502u16),
        ("html,status=503", 503),
        ("html,status=401", 401),
    ] {
        let r = faulty(s.gw.port, "/chat", fault, false);
        assert_eq!(r.status, status, "{fault}: {}", r.text());
        assert!(r.header("content-type").unwrap().contains("json"));
        assert_eq!(r.header("x-kong-llm-model"), Some("openai/gpt-4o"));
        let message = error_message(&r);
        assert!(
            message.starts_with(&format!("upstream answered {status}")),
            "{message}"
        );
        assert!(message.contains("<html>"), "{message}");
        assert_eq!(r.json()["error"]["type"], "upstream_error");
    }
}

#[test]
fn untranslatable_200_gets_kongs_transformation_failed_500() {
    let s = setup();
    for fault in ["bad_json", "no_choices"] {
        let r = faulty(s.gw.port, "/chat", fault, false);
        assert_eq!(r.status, 500, "{fault}: {}", r.text());
        let message = error_message(&r);
        assert!(
            message.starts_with("transformation failed from type openai://llm/v1/chat: "),
            "{fault}: {message}"
        );
    }
}

#[test]
fn stream_closed_by_the_provider_midway_ends_for_the_client() {
    let s = setup();
    let r = faulty(s.gw.port, "/chat", "close_mid_stream,chunks=6", true);
    assert_eq!(r.status, 200);
    let text = r.text();
    // What arrived before the break was relayed, and the client is not left hanging.
    assert!(sse_content(&text).starts_with("w1"), "{text}");
    assert!(ends_with_done(&text), "{text}");
    assert_no_leaks(s.status);
}

/// awc reports a chunked body cut before its last chunk as a clean end, so only the translator
/// can tell (no `[DONE]` / no `done: true` seen) — see the report of issue 5.
#[test]
fn stream_closed_by_the_provider_midway_ends_with_an_error_event_then_done() {
    let s = setup();
    let r = faulty(s.gw.port, "/chat", "close_mid_stream,chunks=6", true);
    assert_eq!(r.status, 200);
    let text = r.text();
    let event = error_event(&text).unwrap_or_else(|| panic!("no error event: {text}"));
    assert!(event["error"]["message"].is_string(), "{event}");
    assert!(ends_with_done(&text), "{text}");
}

#[test]
fn sdk_raises_on_provider_errors_and_broken_streams() {
    let s = setup();
    let base = s.gw.url("/byo");
    let out: Value = serde_json::from_str(&run_python(
        "sdk_client.py",
        &[&base, "error", "hi", "mock-fault-status-429"],
    ))
    .unwrap();
    assert_eq!(out["status"], 429, "{out}");
    assert!(out["body"]["message"]
        .as_str()
        .unwrap()
        .starts_with("mock fault: status 429"));

    let message = sdk_stream_error(&base, "hi", "mock-fault-chunk_delay-5000");
    assert!(message.contains("upstream stream idle"), "{message}");
    // A stream the provider cuts short raises in the SDK instead of looking complete.
    let message = sdk_stream_error(&base, "hi", "mock-fault-close_mid_stream,chunks-6");
    assert!(
        message.contains("closed the stream before the answer was complete"),
        "{message}"
    );
    // A hung upstream: the SDK gets the 504 instead of waiting for its own timeout.
    let out: Value = serde_json::from_str(&run_python(
        "sdk_client.py",
        &[&base, "error", "hi", "mock-fault-hang"],
    ))
    .unwrap();
    assert_eq!(out["status"], 504, "{out}");
}

#[test]
fn a_provider_that_stops_reading_the_body_gets_504_after_the_write_timeout() {
    // Accepts one connection and never reads from it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let _held = listener.accept();
        std::thread::sleep(Duration::from_secs(30));
    });
    let route = format!(
        "route_type: llm/v1/chat\nmax_request_body_size: 0\nmodel: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"http://127.0.0.1:{port}/v1/chat/completions\"}}}}"
    );
    // Only the service's `write_timeout` (300 ms) can end it early: the read timeout is long.
    let path = write_deck(&deck_with_timeouts(
        1000,
        15_000,
        300,
        &[("deaf", "/deaf", &route)],
    ));
    let gw = start_gateway(&path, &[]);
    // Far more than the socket buffers between the gateway and the provider hold.
    let body = chat_body(&"a".repeat(12 << 20), false);
    let r = post_json(gw.port, "/deaf", &body);
    assert_eq!(r.status, 504, "{}", r.text());
    // The write timeout's value, not the read timeout's: that is what ended it.
    assert_eq!(error_message(&r), "upstream timed out after 300 ms");
}
