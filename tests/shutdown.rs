//! Graceful shutdown: on SIGTERM/SIGINT the gateway stops accepting, lets in-flight requests
//! and streams finish within `shutdown_grace_ms`, then exits 0.

mod common;

use std::net::TcpStream;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::*;

fn setup(grace_ms: u64) -> (Proc, Proc) {
    let mock = start_mock();
    let path = write_deck(&deck(&[("chat", "/chat", &openai_route(mock.port, ""))]));
    let grace = grace_ms.to_string();
    let gw = start_gateway(&path, &[("AIGW_SHUTDOWN_GRACE_MS", grace.as_str())]);
    (mock, gw)
}

/// Waits up to `timeout` for the process to exit.
fn wait_exit(gw: &mut Proc, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = gw.child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Whether a new request gets through: the listener refuses the connection or closes it
/// without an answer once the server stopped accepting.
fn new_request_served(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)).map(|stream| RawConn {
        stream,
        received: Vec::new(),
    }) else {
        return false;
    };
    conn.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let body = chat_body("late", false).to_string();
    let head = format!(
        "POST /chat HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let _ = std::io::Write::write_all(&mut conn.stream, head.as_bytes());
    let _ = std::io::Write::write_all(&mut conn.stream, body.as_bytes());
    conn.read_until(b"\r\n\r\n")
}

#[test]
fn sigterm_lets_in_flight_streams_and_requests_finish_then_exits_0() {
    let (mock, mut gw) = setup(10_000);
    let port = gw.port;
    let stream = RawConn::slow_stream(port, "chunk_delay=400,chunks=5", "in flight");
    let plain = slow_request(port, "delay=1500", "slow answer");
    assert!(poll_until(Duration::from_secs(10), || mock_stats(&mock)
        ["requests"]
        == 2));
    let signalled = Instant::now();
    gw.signal("TERM");

    assert!(
        poll_until(Duration::from_secs(3), || !new_request_served(port)),
        "still accepting after SIGTERM"
    );
    let stream = stream.join().unwrap().response();
    assert_eq!(stream.status, 200);
    let text = stream.text();
    assert_eq!(sse_content(&text), "w1 w2 w3 w4 w5", "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let plain = plain.join().unwrap();
    assert_eq!(plain.status, 200, "{}", plain.text());
    assert_eq!(
        plain.json()["choices"][0]["message"]["content"],
        "Mock openai reply to: slow answer"
    );

    let status = wait_exit(&mut gw, Duration::from_secs(15)).expect("did not exit");
    assert!(status.success(), "exit status {status}");
    // It waited for the in-flight work, not for the whole grace period.
    assert!(
        signalled.elapsed() < Duration::from_secs(9),
        "{:?}",
        signalled.elapsed()
    );
}

#[test]
fn sigint_on_an_idle_gateway_exits_0_promptly() {
    let (_mock, mut gw) = setup(10_000);
    assert_eq!(
        post_json(gw.port, "/chat", &chat_body("hi", false)).status,
        200
    );
    gw.signal("INT");
    let status = wait_exit(&mut gw, Duration::from_secs(5)).expect("did not exit");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn streams_longer_than_the_grace_period_do_not_hold_the_exit() {
    let (mock, mut gw) = setup(1000);
    let port = gw.port;
    let stream = RawConn::slow_stream(port, "chunk_delay=20000,chunks=3", "endless");
    assert!(poll_until(Duration::from_secs(10), || mock_stats(&mock)
        ["open_streams"]
        == 1));
    let signalled = Instant::now();
    gw.signal("TERM");
    let status = wait_exit(&mut gw, Duration::from_secs(10)).expect("did not exit");
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "{:?}",
        signalled.elapsed()
    );
    // The client is not left hanging either: the connection closes, and the missing
    // `[DONE]` (and last chunk) tells it the answer was cut.
    let text = stream.join().unwrap().text();
    assert!(text.contains("data: "), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(poll_until(Duration::from_secs(3), || mock_stats(&mock)
        ["open_streams"]
        == 0));
}
