//! Command-line arguments.

use crate::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    Closed,
    Rate,
    Hold,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Rate => "rate",
            Mode::Hold => "hold",
        }
    }
}

pub(crate) struct Opts {
    pub(crate) mode: Mode,
    pub(crate) label: String,
    pub(crate) url: String,
    pub(crate) addr: String,
    pub(crate) request: Vec<u8>,
    pub(crate) stream: bool,
    pub(crate) expect: Option<Vec<u8>>,
    pub(crate) concurrency: usize,
    pub(crate) rate: f64,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) max_requests: u64,
    pub(crate) timeout: Duration,
    pub(crate) connect_parallel: usize,
    pub(crate) watch: Vec<u32>,
    /// Other processes of the run (the mock): their CPU is not "background".
    pub(crate) aux: Vec<u32>,
    pub(crate) clk_tck: f64,
    pub(crate) out: Option<String>,
}

pub(crate) const USAGE: &str =
    "usage: aigw-load closed|rate|hold --url http://HOST:PORT/PATH --body FILE \
[--header 'name: value']... [--stream] [--expect TEXT] [--concurrency N] [--rate R] \
[--warmup S] [--duration S] [--max-requests N] [--timeout S] [--connect-parallel N] \
[--watch PID,PID] [--aux PID,PID] [--clk-tck N] [--label NAME] [--out FILE]";

pub(crate) fn die(msg: &str) -> ! {
    eprintln!("aigw-load: {msg}\n{USAGE}");
    std::process::exit(2)
}

pub(crate) fn secs(v: &str) -> Duration {
    match v.parse::<f64>() {
        Ok(s) if s >= 0.0 && s.is_finite() => Duration::from_secs_f64(s),
        _ => die(&format!("bad number of seconds: {v}")),
    }
}

pub(crate) fn number<T: std::str::FromStr>(v: &str) -> T {
    v.parse()
        .unwrap_or_else(|_| die(&format!("bad number: {v}")))
}

pub(crate) fn parse_args() -> Opts {
    let mut args = std::env::args().skip(1);
    let mode = match args.next().as_deref() {
        Some("closed") => Mode::Closed,
        Some("rate") => Mode::Rate,
        Some("hold") => Mode::Hold,
        _ => die("first argument must be the mode"),
    };
    let mut url = None;
    let mut body = Vec::new();
    let mut headers = Vec::new();
    let mut o = Opts {
        mode,
        label: String::new(),
        url: String::new(),
        addr: String::new(),
        request: Vec::new(),
        stream: false,
        expect: None,
        concurrency: 64,
        rate: 1000.0,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(10),
        max_requests: 10_000_000,
        timeout: Duration::from_secs(30),
        connect_parallel: 256,
        watch: Vec::new(),
        aux: Vec::new(),
        clk_tck: 100.0,
        out: None,
    };
    while let Some(flag) = args.next() {
        if flag == "--stream" {
            o.stream = true;
            continue;
        }
        let value = args
            .next()
            .unwrap_or_else(|| die(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--url" => url = Some(value),
            "--body" => {
                body = std::fs::read(&value)
                    .unwrap_or_else(|e| die(&format!("cannot read {value}: {e}")))
            }
            "--header" => headers.push(value),
            "--expect" => o.expect = Some(value.into_bytes()),
            "--concurrency" => o.concurrency = number(&value),
            "--rate" => o.rate = number(&value),
            "--warmup" => o.warmup = secs(&value),
            "--duration" => o.duration = secs(&value),
            "--max-requests" => o.max_requests = number(&value),
            "--timeout" => o.timeout = secs(&value),
            "--connect-parallel" => o.connect_parallel = number(&value),
            "--watch" => {
                o.watch = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(number)
                    .collect()
            }
            "--aux" => {
                o.aux = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(number)
                    .collect()
            }
            "--clk-tck" => o.clk_tck = number(&value),
            "--label" => o.label = value,
            "--out" => o.out = Some(value),
            _ => die(&format!("unknown flag {flag}")),
        }
    }
    let url = url.unwrap_or_else(|| die("--url is required"));
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| die("only http:// URLs"));
    let (addr, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if o.concurrency == 0 || o.connect_parallel == 0 || o.rate <= 0.0 {
        die("--concurrency, --connect-parallel and --rate must be positive");
    }
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in &headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    o.addr = addr.to_string();
    o.url = url;
    o.request = request;
    o
}
