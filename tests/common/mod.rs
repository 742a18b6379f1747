//! Test harness: starts the real `ai-gateway` binary and the bundled mock provider as child
//! processes on free loopback ports, writes decK files for them, and provides a Python venv
//! with the official `openai` SDK for client-side tests.

#![allow(dead_code)] // each test file uses its own subset of the harness

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod services;
#[allow(unused_imports)] // each test file uses its own subset of the harness
pub use services::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_ai-gateway");

/// A free loopback port (bound then released; the race is acceptable for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    if let Err(status) = listening(port, child, what) {
        panic!("{what} exited early with {status}");
    }
}

/// Waits until `child` listens on `port`, or returns how it exited first. The listener must be
/// the child's own: when another server took the port, connecting succeeds while the child is
/// failing to bind it.
fn listening(port: u16, child: &mut Child, what: &str) -> Result<(), ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if listens(child.id(), port) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on {port} within 20 s");
}

/// Whether process `pid` holds a listening TCP socket on `port`: Linux's `/proc` names the
/// inodes of the listening sockets and those of the process's descriptors. Where there is no
/// `/proc`, whether the port accepts connections.
pub fn listens(pid: u32, port: u16) -> bool {
    let mut tables = ["/proc/net/tcp", "/proc/net/tcp6"]
        .map(|t| std::fs::read_to_string(t).ok())
        .into_iter()
        .flatten()
        .peekable();
    if tables.peek().is_none() {
        return TcpStream::connect(("127.0.0.1", port)).is_ok();
    }
    const LISTEN: &str = "0A";
    let sockets: Vec<String> = tables
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let local_port = f.get(1)?.rsplit(':').next()?;
                    let ours =
                        u16::from_str_radix(local_port, 16).ok()? == port && *f.get(3)? == LISTEN;
                    let inode = f.get(9)?;
                    ours.then(|| format!("socket:[{inode}]"))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if sockets.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fd.path()
            .read_link()
            .is_ok_and(|target| sockets.iter().any(|s| target.as_os_str() == s.as_str()))
    })
}

thread_local! {
    /// Ports the next servers started on this thread try before a free one.
    static PORTS_FIRST: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// Makes the next server started on this thread try `port` first: the harness's own tests
/// take a port and show that a server started on it moves to another.
pub fn try_port_first(port: u16) {
    PORTS_FIRST.with(|first| first.borrow_mut().push(port));
}

/// Starts a server (`spawn` builds it for a port) on a free port and waits until it listens.
/// A port free when picked can be taken before the child binds it (by another test's server,
/// or as a connection's source port); a child that exits saying so is started again on
/// another port. Any other early exit fails the test with the child's output.
pub fn start_listening(what: &str, mut spawn: impl FnMut(u16) -> Child) -> Proc {
    const TRIES: usize = 3;
    for _ in 0..TRIES {
        let port = PORTS_FIRST
            .with(|first| first.borrow_mut().pop())
            .unwrap_or_else(free_port);
        let mut child = spawn(port);
        let log = collect_stderr(&mut child);
        let Err(status) = listening(port, &mut child, what) else {
            return Proc { child, port, log };
        };
        // The reader threads may still be copying the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let output = log.lock().unwrap().clone();
        if !output.contains("Address already in use") {
            panic!("{what} exited early with {status}:\n{output}");
        }
    }
    panic!("{what}: the port was taken before it could bind, {TRIES} times");
}

/// A child process that is killed (by its own PID) when dropped, with its stderr collected.
pub struct Proc {
    pub child: Child,
    pub port: u16,
    pub log: Arc<Mutex<String>>,
}

impl Proc {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` (e.g. "HUP", "TERM") to this child, by its PID.
    pub fn signal(&self, signal: &str) {
        // The `kill` command keeps the test crate free of unsafe code.
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill command");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the collected stderr contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects the child's stderr (and its stdout, where piped) as lines, on reader threads.
pub(crate) fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
    // A child whose stdout is piped logs there (redis-server): it is collected too.
    let stdout = child
        .stdout
        .take()
        .map(|out| Box::new(out) as Box<dyn Read + Send>);
    for pipe in [Some(stderr), stdout].into_iter().flatten() {
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    log
}

/// Starts `ai-gateway mock-provider` on a free port.
pub fn start_mock() -> Proc {
    start_listening("mock provider", |port| {
        Command::new(BIN)
            .args(["mock-provider", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mock provider")
    })
}

/// Writes `yaml` to a fresh temp file and returns its path.
pub fn write_deck(yaml: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("aigw-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "deck-{}.yaml",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Starts the gateway binary with `deck` on a free port; `env` adds variables.
pub fn start_gateway(deck: &Path, env: &[(&str, &str)]) -> Proc {
    start_listening("gateway", |port| {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "--config",
            deck.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("AIGW_MOCK__ENABLED", "false")
        .env("AIGW_WORKERS", "2")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("start gateway")
    })
}

/// A decK file with one service whose routes each carry an ai-proxy plugin. Each entry:
/// (route name, path, plugin config as YAML flow/block text indented for `config:`).
pub fn deck(routes: &[(&str, &str, &str)]) -> String {
    let mut out = String::from("_format_version: \"3.0\"\nservices:\n  - name: ai\n    url: http://127.0.0.1:9\n    routes:\n");
    for (name, path, config) in routes {
        out.push_str(&format!(
            "      - name: {name}\n        paths: [\"{path}\"]\n        plugins:\n          - name: ai-proxy\n            config:\n"
        ));
        for line in config.trim_matches('\n').lines() {
            out.push_str("              ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A decK file for consumers' tests: chat routes on the mock's OpenAI endpoint (gateway key
/// `Bearer sk-gateway-key`, model gpt-4o), each named after its path and carrying its own
/// plugins (items made by [`plugin`]: key-auth, limits, metrics); `tail` adds top-level entries
/// (consumers, consumer-scoped plugins).
pub fn consumer_deck(mock_port: u16, routes: &[(&str, String)], tail: &str) -> String {
    let mut out = String::from("_format_version: \"3.0\"\nservices:\n  - name: ai\n    url: http://127.0.0.1:9\n    routes:\n");
    for (path, plugins) in routes {
        out.push_str(&format!(
            "      - name: {name}\n        paths: [\"{path}\"]\n        plugins:\n",
            name = path.trim_start_matches('/')
        ));
        out.push_str(&plugin(
            "ai-proxy",
            &format!("{{route_type: llm/v1/chat, auth: {{header_name: Authorization, header_value: \"Bearer sk-gateway-key\"}}, model: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"http://127.0.0.1:{mock_port}/v1/chat/completions\"}}}}}}"),
        ));
        out.push_str(plugins);
    }
    out.push_str(tail);
    out
}

/// One plugin of a [`consumer_deck`] route; `config` is YAML flow text (`{...}`).
pub fn plugin(name: &str, config: &str) -> String {
    format!("          - name: {name}\n            config: {config}\n")
}

/// A minimal blocking HTTP/1.1 client (one request per connection), so tests see exactly
/// what the gateway wrote.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on its own connection (`connection: close`), read to the end.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    use std::io::Write;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = request_head(method, path, port, headers, body.len());
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    raw_http::parse(&raw)
}

/// A chat request to `/chat` on another thread, slowed by the mock's `fault` (`delay=...`).
pub fn slow_request(port: u16, fault: &str, content: &str) -> std::thread::JoinHandle<Response> {
    let fault = fault.to_string();
    let body = chat_body(content, false).to_string();
    std::thread::spawn(move || {
        let headers = [
            ("content-type", "application/json"),
            ("x-mock-fault", &fault),
        ];
        request(port, "POST", "/chat", &headers, body.as_bytes())
    })
}

pub fn post_json(port: u16, path: &str, body: &serde_json::Value) -> Response {
    post_json_bytes(port, path, body.to_string().as_bytes())
}

/// A JSON POST whose body is given as written (large, malformed or pre-serialised).
pub fn post_json_bytes(port: u16, path: &str, body: &[u8]) -> Response {
    request(
        port,
        "POST",
        path,
        &[("content-type", "application/json")],
        body,
    )
}

/// Mock request log: the last request the mock received.
pub fn mock_last(mock: &Proc) -> serde_json::Value {
    let r = request(mock.port, "GET", "/__mock/requests?last=1", &[], b"");
    let v = r.json();
    v.as_array()
        .and_then(|a| a.last().cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Fault directives the mock applies to every request from now on (`""` clears them).
pub fn mock_set_faults(mock: &Proc, directives: &str) {
    let r = request(
        mock.port,
        "PUT",
        "/__mock/faults",
        &[],
        directives.as_bytes(),
    );
    assert_eq!(r.status, 204);
}

pub fn mock_clear(mock: &Proc) {
    request(mock.port, "DELETE", "/__mock/requests", &[], b"");
}

/// An HTTP/1.1 request head with `connection: close`, for the raw clients below.
pub fn request_head(
    method: &str,
    path: &str,
    port: u16,
    headers: &[(&str, &str)],
    body_len: usize,
) -> String {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\ncontent-length: {body_len}\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

mod raw_http {
    use super::*;

    pub(super) fn parse(raw: &[u8]) -> Response {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("response head");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let rest = &raw[split + 4..];
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_vec()
        };
        Response {
            status,
            headers,
            body,
        }
    }

    fn dechunk(mut data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
                return out;
            };
            let size_text = String::from_utf8_lossy(&data[..line_end]);
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
            data = &data[line_end + 2..];
            if size == 0 || data.len() < size {
                out.extend_from_slice(&data[..size.min(data.len())]);
                return out;
            }
            out.extend_from_slice(&data[..size]);
            data = &data[(size + 2).min(data.len())..];
        }
    }
}

const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/requirements.txt");

/// The Python interpreter of a venv with the SDKs of tests/python/requirements.txt, made once per run
/// under target/ (set AIGW_TEST_PYTHON to use an existing interpreter instead).
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Ok(p) = std::env::var("AIGW_TEST_PYTHON") {
            return PathBuf::from(p);
        }
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py-venv");
        let requirements = std::fs::read_to_string(REQUIREMENTS).ok();
        let py = venv.join("bin/python");
        // Several test binaries may race here; a lock directory serialises the creation.
        let lock = venv.with_extension("lock");
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            // `.ready` holds the requirements it was made from: a changed list reinstalls.
            if py.exists() && std::fs::read_to_string(venv.join(".ready")).ok() == requirements {
                return py;
            }
            if std::fs::create_dir(&lock).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "timed out waiting for the venv");
            std::thread::sleep(Duration::from_millis(200));
        }
        let created = (|| -> Result<(), String> {
            if !py.exists() {
                run_ok(Command::new("python3").args(["-m", "venv", venv.to_str().unwrap()]))?;
            }
            run_ok(Command::new(&py).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                REQUIREMENTS,
            ]))?;
            std::fs::write(
                venv.join(".ready"),
                requirements.clone().unwrap_or_default(),
            )
            .map_err(|e| e.to_string())
        })();
        let _ = std::fs::remove_dir(&lock);
        created.expect("creating the Python venv");
        py
    })
}

fn run_ok(cmd: &mut Command) -> Result<(), String> {
    let out: Output = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The OpenAI SDK's `stream-error` case of tests/python/sdk_client.py (a stream that must
/// raise): asserts the SDK raised an APIError and returns its message.
pub fn sdk_stream_error(base: &str, prompt: &str, model: &str) -> String {
    let out: serde_json::Value = serde_json::from_str(&run_python(
        "sdk_client.py",
        &[base, "stream-error", prompt, model],
    ))
    .unwrap();
    assert_eq!(out["error"], "APIError", "{out}");
    out["message"].as_str().unwrap_or_default().to_string()
}

/// Runs a script from tests/python with the venv's interpreter; returns stdout, panics with
/// stderr on failure.
pub fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/python")
                .join(script),
        )
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{script} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn poll_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The mock's counters: `{"requests", "open_streams", "cancelled_streams"}`.
pub fn mock_stats(mock: &Proc) -> serde_json::Value {
    request(mock.port, "GET", "/__mock/stats", &[], b"").json()
}

/// Every request the mock saw, oldest first.
pub fn mock_log(mock: &Proc) -> Vec<serde_json::Value> {
    request(mock.port, "GET", "/__mock/requests", &[], b"")
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Starts the gateway with its status listener on a free port; returns it and that port.
pub fn start_gateway_with_status(deck: &Path, env: &[(&str, &str)]) -> (Proc, u16) {
    let status_port = free_port();
    let listen = format!("127.0.0.1:{status_port}");
    let mut all: Vec<(&str, &str)> = vec![("AIGW_STATUS_LISTEN", &listen)];
    all.extend_from_slice(env);
    let gw = start_gateway(deck, &all);
    assert!(
        poll_until(Duration::from_secs(10), || TcpStream::connect((
            "127.0.0.1",
            status_port
        ))
        .is_ok()),
        "status listener did not come up"
    );
    (gw, status_port)
}

/// The mock, and the gateway with its status listener in front of it.
pub struct MockAndGateway {
    pub mock: Proc,
    pub gw: Proc,
    pub status: u16,
}

/// Starts the mock, then the gateway on the decK file `deck` writes for the mock's port.
pub fn start_mock_and_gateway(deck: impl FnOnce(u16) -> String) -> MockAndGateway {
    let mock = start_mock();
    let path = write_deck(&deck(mock.port));
    let (gw, status) = start_gateway_with_status(&path, &[]);
    MockAndGateway { mock, gw, status }
}

/// The gateway's `GET /status` counters.
pub fn gateway_status(status_port: u16) -> serde_json::Value {
    request(status_port, "GET", "/status", &[], b"").json()
}

/// Waits until the gateway has no stream and no request left in flight.
pub fn assert_no_leaks(status_port: u16) {
    let mut last = serde_json::Value::Null;
    let idle = poll_until(Duration::from_secs(5), || {
        last = gateway_status(status_port);
        last["open_streams"] == 0 && last["requests_in_flight"] == 0
    });
    assert!(idle, "gateway still has work in flight: {last}");
}

/// A chat request body; `stream` sets `"stream": true`.
pub fn chat_body(text: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({"messages": [{"role": "user", "content": text}], "stream": stream})
}

/// `n` buffered `hello there` chat calls with key-auth's `apikey` sent at once, each asking the
/// mock for `x-mock-fault: fault` (e.g. `delay=3000`, to keep them in flight); join for the
/// answers.
pub fn chat_burst(
    port: u16,
    path: &str,
    key: &str,
    n: usize,
    fault: &str,
) -> Vec<std::thread::JoinHandle<Response>> {
    let body = chat_body("hello there", false).to_string();
    (0..n)
        .map(|_| {
            let (path, key, fault, body) = (
                path.to_string(),
                key.to_string(),
                fault.to_string(),
                body.clone(),
            );
            std::thread::spawn(move || {
                let headers = [
                    ("content-type", "application/json"),
                    ("apikey", key.as_str()),
                    ("x-mock-fault", fault.as_str()),
                ];
                request(port, "POST", &path, &headers, body.as_bytes())
            })
        })
        .collect()
}

/// The requests the mock has received (counted when they arrive, before any `delay`).
pub fn mock_requests(mock: &Proc) -> u64 {
    mock_stats(mock)["requests"].as_u64().unwrap()
}

/// Drives one key of `path`, limited to [`UNKNOWN_COST_LIMIT`] tokens in a fixed day-long
/// window, with unknown-cost calls (`hello there` without `max_tokens`: 8 tokens at the mock):
/// one on the gateway at `first` teaches the key's estimate, then calls on the gateway at `then`
/// run side by side far from the limit (as many as fit at twice the estimate), one at a time
/// near it, and are refused once it is spent, within one request of it.
pub fn assert_unknown_cost_admission(mock: &Proc, first: u16, then: u16, path: &str, key: &str) {
    wait_for_window_room(UNKNOWN_COST_WINDOW, Duration::from_secs(60));
    let settle = || std::thread::sleep(Duration::from_millis(500));
    assert_eq!(chat_as(first, path, key, false).status, 200);
    settle();

    // 8 used, estimate 8 counted at 16: five fit side by side (8 + 5 x 16 <= 100), the other
    // three wait and go when those settle (48 + 3 x 16 <= 100). Serialised, one would reach the
    // mock every 3 s.
    let before = mock_requests(mock);
    let burst = chat_burst(then, path, key, 8, "delay=3000");
    let side_by_side = poll_until(Duration::from_millis(2500), || {
        mock_requests(mock) == before + 5
    });
    assert!(
        side_by_side,
        "five calls in flight at once; the mock saw {}",
        mock_requests(mock) - before
    );
    settle();
    assert_eq!(mock_requests(mock), before + 5, "the rest wait");
    for answer in burst {
        let answer = answer.join().unwrap();
        assert_eq!(answer.status, 200, "{}", answer.text());
    }

    // 72 used: two more fit one after the other, then 88 + 16 > 100: one at a time.
    for _ in 0..2 {
        assert_eq!(chat_as(then, path, key, false).status, 200);
    }
    settle();
    let before = mock_requests(mock);
    let burst = chat_burst(then, path, key, 3, "delay=2000");
    assert!(poll_until(Duration::from_millis(1500), || mock_requests(
        mock
    ) == before + 1));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        mock_requests(mock),
        before + 1,
        "one at a time near the limit"
    );
    // 88 + 8 leaves budget for the second; 104 is spent: the third is refused, unserved.
    let mut statuses: Vec<u16> = burst
        .into_iter()
        .map(|a| a.join().unwrap().status)
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(mock_requests(mock), before + 2);
    // 13 calls admitted: 104 tokens, the limit plus one request.
    let refused = chat_as(then, path, key, false);
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.header(&format!(
            "x-ai-ratelimit-remaining-{UNKNOWN_COST_WINDOW}-openai"
        )),
        Some("0")
    );
}

/// Waits, when need be, for the next fixed rate-limit window of `size` seconds: fixed windows
/// start on multiples of their size since the epoch (as Kong's do), so a test whose counts must
/// all fall in one window starts where the current one has at least `room` left.
pub fn wait_for_window_room(size: u64, room: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let size = Duration::from_secs(size);
    let left = size - Duration::from_nanos((now.as_nanos() % size.as_nanos()) as u64);
    if left < room {
        std::thread::sleep(left + Duration::from_millis(100));
    }
}

/// The limit and window (seconds) [`assert_unknown_cost_admission`] expects.
pub const UNKNOWN_COST_LIMIT: u64 = 100;
pub const UNKNOWN_COST_WINDOW: u64 = 86_400;

/// A `hello there` chat call with key-auth's `apikey`; a stream asks for its usage.
pub fn chat_as(port: u16, path: &str, key: &str, stream: bool) -> Response {
    let mut body = chat_body("hello there", stream);
    if stream {
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    request(
        port,
        "POST",
        path,
        &[("content-type", "application/json"), ("apikey", key)],
        body.to_string().as_bytes(),
    )
}

/// One route on the mock's OpenAI endpoint with a configured model and header auth; `extra`
/// adds plugin config lines.
pub fn openai_route(mock_port: u16, extra: &str) -> String {
    format!(
        "route_type: llm/v1/chat\nauth: {{header_name: Authorization, header_value: \"Bearer sk-gateway-key\"}}\nmodel: {{provider: openai, name: gpt-4o, options: {{upstream_url: \"http://127.0.0.1:{mock_port}/v1/chat/completions\"}}}}\n{extra}"
    )
}

/// A decK file with one service carrying Kong's timeouts (ms) and ai-proxy routes as in
/// [`deck`].
pub fn deck_with_timeouts(
    connect_ms: u64,
    read_ms: u64,
    write_ms: u64,
    routes: &[(&str, &str, &str)],
) -> String {
    deck(routes).replacen(
        "    url: http://127.0.0.1:9\n",
        &format!(
            "    url: http://127.0.0.1:9\n    connect_timeout: {connect_ms}\n    read_timeout: {read_ms}\n    write_timeout: {write_ms}\n"
        ),
        1,
    )
}

/// A raw connection for requests the simple client cannot express (slow bodies, absolute-form
/// targets, early disconnects, incremental stream reads).
pub struct RawConn {
    pub stream: TcpStream,
    pub received: Vec<u8>,
}

impl RawConn {
    pub fn open(port: u16) -> RawConn {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        RawConn {
            stream,
            received: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends `body` in chunked transfer encoding, `size` bytes a chunk, and the last chunk.
    pub fn send_chunked(&mut self, body: &[u8], size: usize) {
        for chunk in body.chunks(size) {
            self.send(format!("{:x}\r\n", chunk.len()).as_bytes());
            self.send(chunk);
            self.send(b"\r\n");
        }
        self.send(b"0\r\n\r\n");
    }

    /// Sends a POST with a JSON body and `connection: close`.
    pub fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> RawConn {
        let mut conn = RawConn::open(port);
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        conn.send(request_head("POST", path, port, &all, body.len()).as_bytes());
        conn.send(body);
        conn
    }

    /// Reads until `needle` has been received or the peer closes; returns whether it was seen.
    pub fn read_until(&mut self, needle: &[u8]) -> bool {
        let mut buf = [0u8; 16 * 1024];
        loop {
            if self.received.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Streams a chat answer from `/chat` on another thread, slowed by the mock's `fault`
    /// (`chunk_delay=...,chunks=...`), and gives the connection once the stream has ended.
    pub fn slow_stream(port: u16, fault: &str, content: &str) -> std::thread::JoinHandle<RawConn> {
        let fault = fault.to_string();
        let body = chat_body(content, true).to_string();
        std::thread::spawn(move || {
            let mut conn =
                RawConn::post(port, "/chat", &[("x-mock-fault", &fault)], body.as_bytes());
            conn.read_to_end();
            conn
        })
    }

    /// Reads to the end of the connection.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let _ = self.stream.read_to_end(&mut self.received);
        self.received.clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }

    /// The response received so far, parsed (chunked framing removed).
    pub fn response(&self) -> Response {
        raw_http::parse(&self.received)
    }

    /// The status code of the response head received so far.
    pub fn status(&self) -> Option<u16> {
        let text = self.text();
        text.split_whitespace().nth(1).and_then(|s| s.parse().ok())
    }
}

/// The `data:` payloads of an SSE body (chunked framing left in place is skipped, since chunk
/// size lines never start with `data:`).
pub fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// The concatenated `delta.content` of an OpenAI SSE body.
pub fn sse_content(text: &str) -> String {
    sse_data(text)
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// A gateway's resident memory in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A decK file with one `ai-proxy-advanced` route at `/lb`; `targets` are YAML flow mappings.
pub fn advanced_deck(balancer: &str, targets: &[String]) -> String {
    let mut out = String::from(
        "_format_version: \"3.0\"\nservices:\n  - name: ai\n    url: http://127.0.0.1:9\n    routes:\n      - name: balanced\n        paths: [\"/lb\"]\n        plugins:\n          - name: ai-proxy-advanced\n            config:\n",
    );
    out.push_str(&format!(
        "              balancer: {balancer}\n              targets:\n"
    ));
    for t in targets {
        out.push_str(&format!("                - {t}\n"));
    }
    out
}
