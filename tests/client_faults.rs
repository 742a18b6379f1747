//! Client faults: bad input, oversized and slow bodies, and clients that go away mid-request or
//! mid-stream (the upstream call must be cancelled promptly and nothing may leak; the gateway's
//! status listener shows streams and requests in flight).

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The client request timeout of these tests, in ms.
const CLIENT_TIMEOUT_MS: u64 = 1000;

struct Setup {
    mock: Proc,
    gw: Proc,
    status: u16,
    /// Connections the silent upstream accepted, each reported again when the gateway closes it.
    silent: mpsc::Receiver<SilentEvent>,
}

enum SilentEvent {
    Accepted,
    Closed(Instant),
}

/// An upstream that reads the request and never answers; it reports each connection and the
/// moment the gateway closes it.
fn silent_upstream() -> (u16, mpsc::Receiver<SilentEvent>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(16) {
            let Ok(mut conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send(SilentEvent::Accepted);
                let mut buf = [0u8; 4096];
                conn.set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                // Reads until the peer closes (0) or resets (error): the gateway gave up.
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
                let _ = tx.send(SilentEvent::Closed(Instant::now()));
            });
        }
    });
    (port, rx)
}

fn setup() -> Setup {
    let mock = start_mock();
    let (silent_port, silent) = silent_upstream();
    let chat = openai_route(mock.port, "");
    let small = openai_route(mock.port, "max_request_body_size: 200");
    let silent_route = format!(
        "route_type: llm/v1/chat\nmodel: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"http://127.0.0.1:{silent_port}/v1/chat/completions\"}}}}"
    );
    let path = write_deck(&deck(&[
        ("chat", "/chat", &chat),
        ("small", "/small", &small),
        ("silent", "/silent", &silent_route),
    ]));
    let timeout = CLIENT_TIMEOUT_MS.to_string();
    let (gw, status) = start_gateway_with_status(
        &path,
        &[("AIGW_CLIENT_REQUEST_TIMEOUT_MS", timeout.as_str())],
    );
    Setup {
        mock,
        gw,
        status,
        silent,
    }
}

fn requests_seen(mock: &Proc) -> u64 {
    mock_stats(mock)["requests"].as_u64().unwrap()
}

#[test]
fn bad_input_gets_400_json_and_never_reaches_the_provider() {
    let s = setup();
    let before = requests_seen(&s.mock);
    let bad_json = "content-type header does not match request body, or bad JSON formatting";
    let no_prompts = "request body doesn't contain valid prompts";
    let cases: [(&str, &[u8], &str); 9] = [
        ("application/json", b"{not json", bad_json),
        ("application/json", b"[1,2,3]", bad_json),
        ("application/json", b"\xff\xfe\x00garbage", bad_json),
        (
            "text/plain",
            br#"{"messages":[{"role":"user","content":"hi"}]}"#,
            bad_json,
        ),
        (
            "application/x-www-form-urlencoded",
            b"messages=hi",
            bad_json,
        ),
        ("application/json", b"{}", no_prompts),
        ("application/json", br#"{"messages":[]}"#, no_prompts),
        ("application/json", br#"{"messages":"hi"}"#, no_prompts),
        (
            "application/json",
            br#"{"messages":[{"content":"no role"}]}"#,
            "message at position 0 is not a valid chat message: it needs a string 'role'",
        ),
    ];
    for (content_type, body, message) in cases {
        let r = request(
            s.gw.port,
            "POST",
            "/chat",
            &[("content-type", content_type)],
            body,
        );
        let shown = String::from_utf8_lossy(body);
        assert_eq!(r.status, 400, "{shown}: {}", r.text());
        assert!(r.header("content-type").unwrap().contains("json"));
        assert_eq!(r.json()["error"]["message"], message, "{shown}");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    assert_eq!(
        requests_seen(&s.mock),
        before,
        "bad input reached the provider"
    );
}

#[test]
fn body_over_the_route_limit_gets_413_declared_or_chunked() {
    let s = setup();
    let big = chat_body(&"x".repeat(400), false).to_string();
    let r = post_json_bytes(s.gw.port, "/small", big.as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(
        r.json()["error"]["message"],
        "request body too large: the limit for this route is 200 bytes"
    );

    // Chunked, so the size is only known while reading.
    let mut conn = RawConn::open(s.gw.port);
    let head = "POST /small HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    conn.send(head.as_bytes());
    conn.send_chunked(big.as_bytes(), 100);
    conn.read_to_end();
    assert_eq!(conn.status(), Some(413), "{}", conn.text());

    // The default limit (1 MiB) applies where the route sets none.
    let huge = chat_body(&"y".repeat(1024 * 1024 + 10), false).to_string();
    let r = post_json_bytes(s.gw.port, "/chat", huge.as_bytes());
    assert_eq!(r.status, 413);
    assert_no_leaks(s.status);
}

#[test]
fn slow_loris_body_gets_408_within_the_client_timeout() {
    let s = setup();
    let before = requests_seen(&s.mock);
    let mut conn = RawConn::open(s.gw.port);
    conn.send(
        b"POST /chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"messages\":",
    );
    // Never sends the rest.
    let started = Instant::now();
    assert!(conn.read_until(b"\r\n\r\n"), "no answer: {}", conn.text());
    assert_eq!(conn.status(), Some(408), "{}", conn.text());
    assert!(conn.text().contains("timed out reading the request body"));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(requests_seen(&s.mock), before);
    assert_no_leaks(s.status);
}

#[test]
fn client_gone_mid_upload_is_logged_as_499_and_never_reaches_the_provider() {
    let s = setup();
    let before = requests_seen(&s.mock);
    let mut conn = RawConn::open(s.gw.port);
    conn.send(
        b"POST /chat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"messages\":",
    );
    std::thread::sleep(Duration::from_millis(100));
    drop(conn);
    assert!(
        s.gw.wait_for_log(
            "route=chat provider=\"openai\" model= status=499",
            Duration::from_secs(3)
        ),
        "{}",
        s.gw.logs()
    );
    assert_eq!(requests_seen(&s.mock), before);
    assert_no_leaks(s.status);
}

#[test]
fn slow_loris_head_gets_408_and_is_closed() {
    let s = setup();
    let mut conn = RawConn::open(s.gw.port);
    conn.send(b"POST /chat HTTP/1.1\r\nhost: x\r\ncontent-ty");
    let text = String::from_utf8_lossy(&conn.read_to_end()).into_owned();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

/// Waits for the silent upstream to accept the gateway's connection.
fn wait_accepted(s: &Setup) {
    match s.silent.recv_timeout(Duration::from_secs(10)) {
        Ok(SilentEvent::Accepted) => {}
        _ => panic!("the gateway did not reach the silent upstream"),
    }
}

#[test]
fn client_gone_mid_request_cancels_the_upstream_call_promptly() {
    let s = setup();
    for stream in [false, true] {
        let conn = RawConn::post(
            s.gw.port,
            "/silent",
            &[],
            chat_body("are you there?", stream).to_string().as_bytes(),
        );
        wait_accepted(&s);
        let left = Instant::now();
        drop(conn);
        match s.silent.recv_timeout(Duration::from_secs(3)) {
            Ok(SilentEvent::Closed(at)) => {
                let after = at.duration_since(left);
                assert!(
                    after < Duration::from_secs(1),
                    "upstream closed after {after:?}"
                );
            }
            _ => panic!("stream={stream}: the upstream call was not cancelled within 3 s"),
        }
    }
    assert_no_leaks(s.status);
    assert!(
        s.gw.wait_for_log("status=499", Duration::from_secs(3)),
        "no access line for the abandoned request:\n{}",
        s.gw.logs()
    );
}

/// Opens a stream that sends one frame every `gap_ms`, reads its first event, then leaves.
fn leave_after_first_event(s: &Setup, gap_ms: u64) {
    let fault = format!("chunk_delay={gap_ms},chunks=50");
    let mut conn = RawConn::post(
        s.gw.port,
        "/chat",
        &[("x-mock-fault", &fault)],
        chat_body("stream then leave", true).to_string().as_bytes(),
    );
    assert!(conn.read_until(b"data: "), "{}", conn.text());
}

fn cancelled(mock: &Proc) -> u64 {
    mock_stats(mock)["cancelled_streams"].as_u64().unwrap()
}

#[test]
fn client_gone_mid_stream_cancels_the_upstream_stream_within_a_second() {
    let s = setup();
    // A quiet upstream (the next frame is 5 s away) and a busy one.
    for gap_ms in [5000, 20] {
        let before = cancelled(&s.mock);
        leave_after_first_event(&s, gap_ms);
        let left = Instant::now();
        assert!(
            poll_until(Duration::from_secs(3), || cancelled(&s.mock) > before),
            "gap {gap_ms} ms: upstream stream not cancelled: {}",
            mock_stats(&s.mock)
        );
        assert!(
            left.elapsed() < Duration::from_secs(2),
            "{:?}",
            left.elapsed()
        );
    }
    assert_no_leaks(s.status);
    assert!(poll_until(Duration::from_secs(3), || mock_stats(&s.mock)
        ["open_streams"]
        == 0));
    assert!(
        s.gw.logs().contains("outcome=\"client closed\""),
        "{}",
        s.gw.logs()
    );
}

#[test]
fn many_clients_leaving_at_random_points_leak_nothing() {
    let s = setup();
    let port = s.gw.port;
    let handles: Vec<_> = (0..40u64)
        .map(|i| {
            std::thread::spawn(move || {
                let stream = i % 2 == 0;
                let fault = format!("chunk_delay={},chunks=20", 10 + i % 5 * 10);
                let mut conn = RawConn::post(
                    port,
                    "/chat",
                    &[("x-mock-fault", &fault)],
                    chat_body("leave", stream).to_string().as_bytes(),
                );
                // Leave before the head, after a few events, or read it all.
                match i % 4 {
                    0 => {}
                    1 => {
                        conn.read_until(b"data: ");
                    }
                    2 => {
                        conn.read_until(b" w5");
                    }
                    _ => {
                        conn.read_to_end();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_no_leaks(s.status);
    assert!(
        poll_until(Duration::from_secs(5), || mock_stats(&s.mock)
            ["open_streams"]
            == 0),
        "{}",
        mock_stats(&s.mock)
    );
    // Still serving.
    let r = post_json(
        s.gw.port,
        "/chat",
        &json!({"messages": [{"role": "user", "content": "ok?"}]}),
    );
    assert_eq!(r.status, 200);
}
