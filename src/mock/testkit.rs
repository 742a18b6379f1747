//! Test helpers shared by the mock's format tests: drive the app in-process, parse each framing,
//! and talk raw HTTP to a real mock server for connection-level faults.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use actix_web::{
    body::{BodySize, MessageBody},
    http::{header::HeaderMap, StatusCode},
    test::{self, TestRequest},
    web::{self, Bytes},
    App,
};
use serde_json::Value;

use super::{configure_with, fault, log::MockState};

/// A response as the tests look at it.
pub(crate) struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body's declared size: `Sized(n)` means actix sends a content-length.
    pub size: BodySize,
    pub body: Bytes,
}

impl Got {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub(crate) fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a non-stream answer: 200, JSON, with a known length.
    pub(crate) fn assert_sized_json(&self) -> Value {
        assert_eq!(self.status, 200, "{:?}", self.body);
        assert_eq!(self.size, BodySize::Sized(self.body.len() as u64));
        assert!(self.content_type().starts_with("application/json"));
        self.json()
    }
}

/// `POST path` with a JSON body and an optional `x-mock-fault`, through [`send`].
pub(crate) async fn post_json(path: &str, body: &Value, faults: Option<&str>) -> Got {
    let mut req = TestRequest::post().uri(path).set_json(body);
    if let Some(faults) = faults {
        req = req.insert_header((fault::HEADER, faults));
    }
    send(req).await
}

/// Sends through an app with a state of its own, as a mock server started from the
/// environment has.
pub(crate) async fn send(req: TestRequest) -> Got {
    send_with(&web::Data::new(MockState::from_env()), req).await
}

/// Sends through an app with its own state, for tests that read the log or the counters.
pub(crate) async fn send_with(state: &web::Data<MockState>, req: TestRequest) -> Got {
    let state = state.clone();
    let app = test::init_service(App::new().configure(move |cfg| configure_with(cfg, state))).await;
    collect(test::call_service(&app, req.to_request()).await).await
}

async fn collect(resp: actix_web::dev::ServiceResponse) -> Got {
    let status = resp.status();
    let headers = resp.headers().clone();
    let size = resp.response().body().size();
    let body = test::read_body(resp).await;
    Got {
        status,
        headers,
        size,
        body,
    }
}

/// SSE events as `(event name, data)`, in order; CRLF or LF line ends.
pub(crate) fn sse_events(raw: &[u8]) -> Vec<(Option<String>, String)> {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = Some(name.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.trim_start().to_owned());
                }
            }
            (event, data.join("\n"))
        })
        .collect()
}

/// The JSON `data` of an SSE stream and whether it ended with `data: [DONE]`.
pub(crate) fn sse_json(raw: &[u8]) -> (Vec<Value>, bool) {
    let events = sse_events(raw);
    let done = events.last().is_some_and(|(_, data)| data == "[DONE]");
    let json = events
        .iter()
        .filter(|(_, data)| data != "[DONE]")
        .map(|(_, data)| serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}")))
        .collect();
    (json, done)
}

/// The lines of a newline-delimited JSON stream.
pub(crate) fn ndjson_lines(raw: &[u8]) -> Vec<Value> {
    raw.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("NDJSON line"))
        .collect()
}

pub(crate) fn words_of(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Starts a real one-worker mock on an ephemeral port.
pub(crate) fn start_server() -> SocketAddr {
    let (server, addr) = super::start("127.0.0.1:0", 1).expect("mock binds");
    actix_rt::spawn(server);
    addr
}

/// Sends `request` (a complete HTTP/1.1 request) and reads until EOF, an error or the
/// `deadline` has passed, then hangs up. Returns the bytes read and whether the server closed
/// the connection (EOF or reset) before the deadline.
pub(crate) async fn raw_exchange(
    addr: SocketAddr,
    request: String,
    deadline: Duration,
) -> (Vec<u8>, bool) {
    actix_rt::task::spawn_blocking(move || {
        let until = Instant::now() + deadline;
        let mut socket = TcpStream::connect(addr).expect("connect");
        socket.write_all(request.as_bytes()).expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (got, false);
            }
            socket.set_read_timeout(Some(left)).expect("timeout");
            match socket.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return (got, false)
                }
                Err(_) => return (got, true),
            }
        }
    })
    .await
    .expect("client thread")
}

/// `POST path` of a JSON body to a real server, with `x-mock-fault: faults` unless empty; see
/// [`raw_exchange`] for the result.
pub(crate) async fn raw_post(
    addr: SocketAddr,
    path: &str,
    body: &Value,
    faults: &str,
    deadline: Duration,
) -> (Vec<u8>, bool) {
    let body = body.to_string();
    let fault_header = if faults.is_empty() {
        String::new()
    } else {
        format!("{}: {faults}\r\n", fault::HEADER)
    };
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n{fault_header}\r\n{body}",
        body.len()
    );
    raw_exchange(addr, request, deadline).await
}

/// `GET path` on a real server, returning the JSON body.
pub(crate) async fn http_get_json(addr: SocketAddr, path: &str) -> Value {
    let request = format!("GET {path} HTTP/1.1\r\nhost: mock\r\nconnection: close\r\n\r\n");
    let (raw, _) = raw_exchange(addr, request, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&raw);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}
