//! `aigw-load`: the load client of `loadtest/run.sh`.
//!
//! One thread (a tokio current-thread runtime, so it can be pinned to one core), raw HTTP/1.1
//! keep-alive connections and prebuilt request bytes, so the client costs a few microseconds per
//! request. Three modes:
//!
//! * `closed --concurrency C`: C connections; each sends its next request as soon as the previous
//!   answer has ended (throughput and latency at fixed concurrency).
//! * `rate --rate R --concurrency C`: open loop, one request every 1/R s on a pool of at most C
//!   connections (latency percentiles at a fixed rate; a late answer does not delay the next
//!   request).
//! * `hold --concurrency C`: C streams open at the same time (ramped, at most `--connect-parallel`
//!   waiting for their response head), each read to its end (memory with many open streams).
//!
//! With `--stream` the body is read as SSE: an event ends at a blank line; the client records the
//! time to the first complete event (TTFE), the gap between consecutive events and the event
//! count. In every mode the client reads `/proc/<pid>/stat` (utime + stime) of the `--watch` pids
//! at the start and the end of the measured window and samples their `VmRSS` every 100 ms.
//! The result is one JSON object (stdout, or `--out FILE`). Every run is bounded by
//! `--duration` (plus the per-request `--timeout`) and `--max-requests`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::LocalSet;
use tokio::time::timeout;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Closed,
    Rate,
    Hold,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Rate => "rate",
            Mode::Hold => "hold",
        }
    }
}

struct Opts {
    mode: Mode,
    label: String,
    url: String,
    addr: String,
    request: Vec<u8>,
    stream: bool,
    expect: Option<Vec<u8>>,
    concurrency: usize,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    max_requests: u64,
    timeout: Duration,
    connect_parallel: usize,
    watch: Vec<u32>,
    /// Other processes of the run (the mock): their CPU is not "background".
    aux: Vec<u32>,
    clk_tck: f64,
    out: Option<String>,
}

const USAGE: &str = "usage: aigw-load closed|rate|hold --url http://HOST:PORT/PATH --body FILE \
[--header 'name: value']... [--stream] [--expect TEXT] [--concurrency N] [--rate R] \
[--warmup S] [--duration S] [--max-requests N] [--timeout S] [--connect-parallel N] \
[--watch PID,PID] [--aux PID,PID] [--clk-tck N] [--label NAME] [--out FILE]";

fn die(msg: &str) -> ! {
    eprintln!("aigw-load: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn secs(v: &str) -> Duration {
    match v.parse::<f64>() {
        Ok(s) if s >= 0.0 && s.is_finite() => Duration::from_secs_f64(s),
        _ => die(&format!("bad number of seconds: {v}")),
    }
}

fn number<T: std::str::FromStr>(v: &str) -> T {
    v.parse()
        .unwrap_or_else(|_| die(&format!("bad number: {v}")))
}

fn parse_args() -> Opts {
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

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 exchange

struct Conn {
    sock: TcpStream,
    buf: Vec<u8>,
}

async fn connect(addr: &str) -> std::io::Result<Conn> {
    let sock = TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    Ok(Conn {
        sock,
        buf: Vec::with_capacity(8192),
    })
}

async fn read_more(conn: &mut Conn) -> Result<usize, &'static str> {
    if conn.buf.capacity() - conn.buf.len() < 2048 {
        conn.buf.reserve(8192);
    }
    conn.sock.read_buf(&mut conn.buf).await.map_err(|_| "read")
}

enum Framing {
    Length(usize),
    Chunked(ChunkDecoder),
    Eof,
}

#[derive(Clone, Copy)]
enum ChunkState {
    Size,
    Ext,
    SizeLf,
    Data(usize),
    DataCr,
    DataLf,
    Trailer,
    Done,
}

/// `Transfer-Encoding: chunked`, decoded incrementally.
struct ChunkDecoder {
    state: ChunkState,
    size: usize,
    line_len: usize,
}

impl ChunkDecoder {
    fn new() -> Self {
        ChunkDecoder {
            state: ChunkState::Size,
            size: 0,
            line_len: 0,
        }
    }

    fn done(&self) -> bool {
        matches!(self.state, ChunkState::Done)
    }

    fn feed(&mut self, mut input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<(), &'static str> {
        while let Some(&b) = input.first() {
            match self.state {
                ChunkState::Data(rem) => {
                    let take = rem.min(input.len());
                    out(&input[..take]);
                    input = &input[take..];
                    self.state = if take == rem {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(rem - take)
                    };
                    continue;
                }
                ChunkState::Done => return Ok(()),
                _ => {}
            }
            input = &input[1..];
            self.state = match (self.state, b) {
                (ChunkState::Size, b'\r') => ChunkState::SizeLf,
                (ChunkState::Size, b';') => ChunkState::Ext,
                (ChunkState::Size, _) => {
                    let digit = (b as char).to_digit(16).ok_or("bad_chunk")? as usize;
                    if self.size > (1 << 40) {
                        return Err("bad_chunk");
                    }
                    self.size = self.size * 16 + digit;
                    ChunkState::Size
                }
                (ChunkState::Ext, b'\r') => ChunkState::SizeLf,
                (ChunkState::Ext, _) => ChunkState::Ext,
                (ChunkState::SizeLf, b'\n') => {
                    let size = std::mem::take(&mut self.size);
                    self.line_len = 0;
                    if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    }
                }
                (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
                (ChunkState::DataLf, b'\n') => ChunkState::Size,
                (ChunkState::Trailer, b'\r') => ChunkState::Trailer,
                (ChunkState::Trailer, b'\n') if self.line_len == 0 => ChunkState::Done,
                (ChunkState::Trailer, b'\n') => {
                    self.line_len = 0;
                    ChunkState::Trailer
                }
                (ChunkState::Trailer, _) => {
                    self.line_len += 1;
                    ChunkState::Trailer
                }
                _ => return Err("bad_chunk"),
            };
        }
        Ok(())
    }
}

/// Watches the decoded body: SSE event boundaries (with `stream`) and the expected text.
struct Scan<'a> {
    stream: bool,
    start: Instant,
    prev_nl: bool,
    events: u64,
    first: Option<Duration>,
    last: Option<Instant>,
    /// The body, or for streams only its last bytes: what `expect` is looked for in.
    keep: Vec<u8>,
    bytes: u64,
    gaps: &'a mut Vec<u64>,
}

const STREAM_TAIL: usize = 512;
const BODY_KEEP: usize = 64 * 1024;

impl Scan<'_> {
    fn data(&mut self, d: &[u8], now: Instant) {
        self.bytes += d.len() as u64;
        if self.stream {
            for &b in d {
                if b == b'\n' {
                    if self.prev_nl {
                        self.prev_nl = false;
                        self.events += 1;
                        match self.last {
                            None => self.first = Some(now - self.start),
                            Some(last) => self.gaps.push((now - last).as_nanos() as u64),
                        }
                        self.last = Some(now);
                    } else {
                        self.prev_nl = true;
                    }
                } else if b != b'\r' {
                    self.prev_nl = false;
                }
            }
            self.keep.extend_from_slice(d);
            if self.keep.len() > 4 * STREAM_TAIL {
                let cut = self.keep.len() - STREAM_TAIL;
                self.keep.drain(..cut);
            }
        } else if self.keep.len() < BODY_KEEP {
            self.keep.extend_from_slice(d);
        }
    }
}

struct Outcome {
    status: u16,
    keep_alive: bool,
    total: Duration,
    ttfe: Option<Duration>,
    events: u64,
    expect_ok: bool,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Sends the request and reads the whole answer. `on_head` runs once the response head is in.
async fn exchange(
    conn: &mut Conn,
    o: &Opts,
    gaps: &mut Vec<u64>,
    on_head: impl FnOnce(),
) -> Result<Outcome, &'static str> {
    let start = Instant::now();
    conn.sock.write_all(&o.request).await.map_err(|_| "write")?;
    conn.buf.clear();
    let (status, mut keep_alive, mut framing, off) = loop {
        if read_more(conn).await? == 0 {
            return Err(if conn.buf.is_empty() {
                "closed"
            } else {
                "incomplete_head"
            });
        }
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&conn.buf) {
            Ok(httparse::Status::Complete(off)) => {
                let status = resp.code.unwrap_or(0);
                let mut keep = resp.version == Some(1);
                let mut framing = Framing::Eof;
                for h in resp.headers.iter() {
                    let value = std::str::from_utf8(h.value).unwrap_or("").trim();
                    if h.name.eq_ignore_ascii_case("content-length") {
                        framing = Framing::Length(value.parse().map_err(|_| "bad_head")?);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                        && value.to_ascii_lowercase().contains("chunked")
                    {
                        framing = Framing::Chunked(ChunkDecoder::new());
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        keep = !value.eq_ignore_ascii_case("close");
                    }
                }
                if status == 204 || status == 304 {
                    framing = Framing::Length(0);
                }
                break (status, keep, framing, off);
            }
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err("bad_head"),
        }
    };
    on_head();
    let mut scan = Scan {
        stream: o.stream,
        start,
        prev_nl: false,
        events: 0,
        first: None,
        last: None,
        keep: Vec::new(),
        bytes: 0,
        gaps,
    };
    let mut pos = off;
    let mut now = Instant::now();
    loop {
        let finished = match &mut framing {
            Framing::Length(remaining) => {
                let take = (*remaining).min(conn.buf.len() - pos);
                scan.data(&conn.buf[pos..pos + take], now);
                *remaining -= take;
                *remaining == 0
            }
            Framing::Chunked(dec) => {
                dec.feed(&conn.buf[pos..], &mut |d| scan.data(d, now))?;
                dec.done()
            }
            Framing::Eof => {
                scan.data(&conn.buf[pos..], now);
                false
            }
        };
        if finished {
            break;
        }
        conn.buf.clear();
        pos = 0;
        let n = read_more(conn).await?;
        now = Instant::now();
        if n == 0 {
            if matches!(framing, Framing::Eof) {
                keep_alive = false;
                break;
            }
            return Err("incomplete_body");
        }
    }
    let total = start.elapsed();
    let expect_ok = o.expect.as_deref().is_none_or(|e| contains(&scan.keep, e));
    Ok(Outcome {
        status,
        keep_alive,
        total,
        ttfe: scan.first,
        events: scan.events,
        expect_ok,
    })
}

/// One exchange on `conn`; when `conn` was reused and the server had already closed it (EOF
/// before any byte of the answer), once more on a new connection.
async fn exchange_retrying(
    conn: &mut Conn,
    reused: bool,
    o: &Opts,
    gaps: &mut Vec<u64>,
    st: &RefCell<Stats>,
) -> Result<Result<Outcome, &'static str>, tokio::time::error::Elapsed> {
    let first = timeout(o.timeout, exchange(conn, o, gaps, || {})).await;
    if !(reused && matches!(first, Ok(Err("closed")))) {
        return first;
    }
    *conn = match timeout(o.timeout, connect(&o.addr)).await {
        Ok(Ok(c)) => c,
        _ => return Ok(Err("connect")),
    };
    st.borrow_mut().retried_stale += 1;
    gaps.clear();
    timeout(o.timeout, exchange(conn, o, gaps, || {})).await
}

// ---------------------------------------------------------------------------------------------
// Statistics

#[derive(Default)]
struct Stats {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latency: Vec<u64>,
    latency_sched: Vec<u64>,
    ttfe: Vec<u64>,
    gaps: Vec<u64>,
    events: u64,
    /// Requests sent again on a new connection because the server had closed the idle
    /// keep-alive connection they were written to (not errors: any HTTP client does this).
    retried_stale: u64,
}

impl Stats {
    fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
    }

    /// Counts one finished exchange; `sched` is the latency from the scheduled send time.
    fn record(&mut self, o: &Opts, out: &Outcome, gaps: &[u64], sched: Option<Duration>) {
        if out.status != 200 {
            return self.error(&format!("status_{}", out.status));
        }
        if !out.expect_ok {
            return self.error("unexpected_body");
        }
        if o.stream && out.events == 0 {
            return self.error("no_events");
        }
        self.ok += 1;
        self.latency.push(out.total.as_nanos() as u64);
        if let Some(s) = sched {
            self.latency_sched.push(s.as_nanos() as u64);
        }
        if o.stream {
            if let Some(t) = out.ttfe {
                self.ttfe.push(t.as_nanos() as u64);
            }
            self.gaps.extend_from_slice(gaps);
            self.events += out.events;
        }
    }
}

fn summary(v: &mut [u64]) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_unstable();
    let n = v.len();
    let at = |p: f64| {
        let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        v[i] as f64 / 1000.0
    };
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64 / 1000.0;
    json!({
        "n": n, "mean": round(mean), "p50": round(at(0.50)), "p90": round(at(0.90)),
        "p99": round(at(0.99)), "p999": round(at(0.999)), "max": round(v[n - 1] as f64 / 1000.0),
    })
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

// ---------------------------------------------------------------------------------------------
// /proc readings of the processes under test

/// utime + stime in clock ticks, summed over `pids` (all threads of each process).
fn cpu_ticks(pids: &[u32]) -> Option<u64> {
    let mut sum = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        sum += utime + stime;
    }
    Some(sum)
}

/// Busy ticks of the whole machine (all CPUs, everything but idle and iowait).
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    Some(v.iter().take(8).sum::<u64>() - v.get(3)? - v.get(4)?)
}

/// CPU ticks of the processes under test, the run's other processes, this client and the
/// whole machine, read at one instant.
#[derive(Clone, Copy)]
struct CpuSnap {
    watch: u64,
    aux: u64,
    client: u64,
    machine: u64,
}

fn cpu_snap(o: &Opts) -> Option<CpuSnap> {
    Some(CpuSnap {
        watch: cpu_ticks(&o.watch)?,
        aux: cpu_ticks(&o.aux)?,
        client: cpu_ticks(&[std::process::id()])?,
        machine: machine_busy_ticks()?,
    })
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`), summed over `pids`.
fn status_kib(pids: &[u32], field: &str) -> Option<u64> {
    let mut sum = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        sum += line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())?;
    }
    Some(sum)
}

struct Watch {
    rss_start: Option<u64>,
    rss_peak: Cell<u64>,
    /// Highest RSS seen while every `hold` stream was open.
    rss_full: Cell<u64>,
    cpu_start: Cell<Option<CpuSnap>>,
    cpu_end: Cell<Option<CpuSnap>>,
    stop: Cell<bool>,
}

/// Samples RSS every 100 ms until `stop` (counting into the peak only inside the window).
async fn sampler(o: Rc<Opts>, w: Rc<Watch>, hold: Rc<HoldState>, t_start: Instant) {
    if o.watch.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !w.stop.get() {
        tick.tick().await;
        if Instant::now() < t_start {
            continue;
        }
        if let Some(rss) = status_kib(&o.watch, "VmRSS:") {
            w.rss_peak.set(w.rss_peak.get().max(rss));
            if o.mode == Mode::Hold && hold.open_now.get() >= o.concurrency {
                w.rss_full.set(w.rss_full.get().max(rss));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Modes

async fn closed_worker(
    o: Rc<Opts>,
    st: Rc<RefCell<Stats>>,
    issued: Rc<Cell<u64>>,
    t_start: Instant,
    t_end: Instant,
) {
    let mut conn: Option<Conn> = None;
    let mut gaps = Vec::new();
    while Instant::now() < t_end && issued.get() < o.max_requests {
        issued.set(issued.get() + 1);
        let reused = conn.is_some();
        let mut c = match conn.take() {
            Some(c) => c,
            None => match timeout(o.timeout, connect(&o.addr)).await {
                Ok(Ok(c)) => c,
                _ => {
                    if Instant::now() >= t_start {
                        st.borrow_mut().error("connect");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        gaps.clear();
        let result = exchange_retrying(&mut c, reused, &o, &mut gaps, &st).await;
        let now = Instant::now();
        let measured = now >= t_start && now <= t_end;
        match result {
            Ok(Ok(out)) => {
                if measured {
                    st.borrow_mut().record(&o, &out, &gaps, None);
                }
                if out.keep_alive {
                    conn = Some(c);
                }
            }
            Ok(Err(e)) if measured => st.borrow_mut().error(e),
            Err(_) if measured => st.borrow_mut().error("timeout"),
            _ => {}
        }
    }
}

async fn run_closed(o: Rc<Opts>, st: Rc<RefCell<Stats>>, t_start: Instant, t_end: Instant) {
    let issued = Rc::new(Cell::new(0));
    let workers: Vec<_> = (0..o.concurrency)
        .map(|_| {
            tokio::task::spawn_local(closed_worker(
                o.clone(),
                st.clone(),
                issued.clone(),
                t_start,
                t_end,
            ))
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}

async fn rate_one(
    o: Rc<Opts>,
    st: Rc<RefCell<Stats>>,
    pool: Rc<RefCell<Vec<Conn>>>,
    permits: Rc<Semaphore>,
    at: Instant,
    measured: bool,
) {
    let Ok(_permit) = permits.acquire().await else {
        return;
    };
    let pooled = pool.borrow_mut().pop();
    let reused = pooled.is_some();
    let mut c = match pooled {
        Some(c) => c,
        None => match timeout(o.timeout, connect(&o.addr)).await {
            Ok(Ok(c)) => c,
            _ => {
                if measured {
                    st.borrow_mut().error("connect");
                }
                return;
            }
        },
    };
    let mut gaps = Vec::new();
    let result = exchange_retrying(&mut c, reused, &o, &mut gaps, &st).await;
    let sched = at.elapsed();
    match result {
        Ok(Ok(out)) => {
            if measured {
                st.borrow_mut().record(&o, &out, &gaps, Some(sched));
            }
            if out.keep_alive {
                pool.borrow_mut().push(c);
            }
        }
        Ok(Err(e)) if measured => st.borrow_mut().error(e),
        Err(_) if measured => st.borrow_mut().error("timeout"),
        _ => {}
    }
}

async fn run_rate(
    o: Rc<Opts>,
    st: Rc<RefCell<Stats>>,
    t0: Instant,
    t_start: Instant,
    t_end: Instant,
) {
    let interval_ns = (1e9 / o.rate) as u64;
    let pool = Rc::new(RefCell::new(Vec::new()));
    let permits = Rc::new(Semaphore::new(o.concurrency));
    let mut i = 0u64;
    loop {
        let at = t0 + Duration::from_nanos(i * interval_ns);
        if at >= t_end || i >= o.max_requests {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let measured = at >= t_start;
        tokio::task::spawn_local(rate_one(
            o.clone(),
            st.clone(),
            pool.clone(),
            permits.clone(),
            at,
            measured,
        ));
        i += 1;
    }
    // Every request still running holds a permit.
    let all = u32::try_from(o.concurrency).unwrap_or(u32::MAX);
    let _ = timeout(o.timeout, permits.acquire_many(all)).await;
}

#[derive(Default)]
struct HoldState {
    open_now: Cell<usize>,
    max_open: Cell<usize>,
    all_open_at: Cell<Option<Instant>>,
}

async fn hold_one(
    o: Rc<Opts>,
    st: Rc<RefCell<Stats>>,
    hold: Rc<HoldState>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut permit = Some(permit);
    let mut c = match timeout(o.timeout, connect(&o.addr)).await {
        Ok(Ok(c)) => c,
        Ok(Err(_)) => return st.borrow_mut().error("connect"),
        Err(_) => return st.borrow_mut().error("connect_timeout"),
    };
    let mut gaps = Vec::new();
    let mut opened = false;
    let result = {
        let on_head = || {
            opened = true;
            permit.take();
            let now = hold.open_now.get() + 1;
            hold.open_now.set(now);
            if now > hold.max_open.get() {
                hold.max_open.set(now);
                if now >= o.concurrency {
                    hold.all_open_at.set(Some(Instant::now()));
                }
            }
        };
        timeout(o.timeout, exchange(&mut c, &o, &mut gaps, on_head)).await
    };
    if opened {
        hold.open_now.set(hold.open_now.get() - 1);
    }
    match result {
        Ok(Ok(out)) => st.borrow_mut().record(&o, &out, &gaps, None),
        Ok(Err(e)) => st.borrow_mut().error(e),
        Err(_) => st.borrow_mut().error("timeout"),
    }
}

async fn run_hold(o: Rc<Opts>, st: Rc<RefCell<Stats>>, hold: Rc<HoldState>) {
    let ramp = std::sync::Arc::new(Semaphore::new(o.connect_parallel));
    let mut tasks = Vec::with_capacity(o.concurrency);
    for _ in 0..o.concurrency {
        let Ok(permit) = ramp.clone().acquire_owned().await else {
            break;
        };
        tasks.push(tokio::task::spawn_local(hold_one(
            o.clone(),
            st.clone(),
            hold.clone(),
            permit,
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
}

fn main() {
    let o = Rc::new(parse_args());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = LocalSet::new();
    let result = local.block_on(&runtime, run(o.clone()));
    let text = serde_json::to_string_pretty(&result).expect("json");
    match &o.out {
        Some(path) => std::fs::write(path, text + "\n")
            .unwrap_or_else(|e| die(&format!("cannot write {path}: {e}"))),
        None => println!("{text}"),
    }
}

async fn run(o: Rc<Opts>) -> Value {
    let st = Rc::new(RefCell::new(Stats::default()));
    let hold = Rc::new(HoldState::default());
    let t0 = Instant::now();
    let (t_start, t_end) = match o.mode {
        Mode::Hold => (t0, t0 + o.duration),
        _ => (t0 + o.warmup, t0 + o.warmup + o.duration),
    };
    let watch = Rc::new(Watch {
        rss_start: status_kib(&o.watch, "VmRSS:"),
        rss_peak: Cell::new(0),
        rss_full: Cell::new(0),
        cpu_start: Cell::new(None),
        cpu_end: Cell::new(None),
        stop: Cell::new(false),
    });
    tokio::task::spawn_local(sampler(o.clone(), watch.clone(), hold.clone(), t_start));
    if o.mode != Mode::Hold {
        // CPU readings at the edges of the measured window.
        let (o2, w2) = (o.clone(), watch.clone());
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(t_start.into()).await;
            w2.cpu_start.set(cpu_snap(&o2));
            tokio::time::sleep_until(t_end.into()).await;
            w2.cpu_end.set(cpu_snap(&o2));
        });
    } else {
        watch.cpu_start.set(cpu_snap(&o));
    }
    match o.mode {
        Mode::Closed => run_closed(o.clone(), st.clone(), t_start, t_end).await,
        Mode::Rate => run_rate(o.clone(), st.clone(), t0, t_start, t_end).await,
        Mode::Hold => {
            // The whole hold run is bounded by --duration.
            if timeout(o.duration, run_hold(o.clone(), st.clone(), hold.clone()))
                .await
                .is_err()
            {
                let unfinished = o.concurrency as u64
                    - st.borrow().ok
                    - st.borrow().errors.values().sum::<u64>();
                st.borrow_mut()
                    .errors
                    .insert("unfinished_at_deadline".into(), unfinished);
            }
        }
    }
    let finished = Instant::now();
    watch.stop.set(true);
    if watch.cpu_end.get().is_none() {
        // The workers stop at the window's end; read now if the edge timer has not run yet.
        watch.cpu_end.set(cpu_snap(&o));
    }
    let window = match o.mode {
        Mode::Hold => finished - t0,
        _ => t_end - t_start,
    };
    let window_s = window.as_secs_f64();
    let mut st = st.borrow_mut();
    let errors: u64 = st.errors.values().sum();
    let ok = st.ok;
    let cpu = match (watch.cpu_start.get(), watch.cpu_end.get()) {
        (Some(a), Some(b)) => {
            let s = |x: u64, y: u64| y.saturating_sub(x) as f64 / o.clk_tck;
            let seconds = s(a.watch, b.watch);
            let ours = seconds + s(a.aux, b.aux) + s(a.client, b.client);
            let machine = s(a.machine, b.machine);
            json!({
                "ticks": b.watch.saturating_sub(a.watch), "clk_tck": o.clk_tck,
                "seconds": round3(seconds),
                "util": round3(seconds / window_s),
                "us_per_req": if ok > 0 { round(seconds * 1e6 / ok as f64) } else { 0.0 },
                "aux_seconds": round3(s(a.aux, b.aux)),
                "client_seconds": round3(s(a.client, b.client)),
                // CPU used by processes outside this run (a compile next door), in cores.
                "background_cores": round3(((machine - ours) / window_s).max(0.0)),
            })
        }
        _ => Value::Null,
    };
    let rss = if o.watch.is_empty() {
        Value::Null
    } else {
        json!({
            "start": watch.rss_start, "peak": watch.rss_peak.get(),
            "end": status_kib(&o.watch, "VmRSS:"), "hwm": status_kib(&o.watch, "VmHWM:"),
            "at_full": if o.mode == Mode::Hold { Some(watch.rss_full.get()) } else { None },
        })
    };
    let events_per_stream = if o.stream && ok > 0 {
        round(st.events as f64 / ok as f64)
    } else {
        0.0
    };
    json!({
        "label": o.label,
        "mode": o.mode.name(),
        "url": o.url,
        "stream": o.stream,
        "concurrency": o.concurrency,
        "rate": if o.mode == Mode::Rate { Some(o.rate) } else { None },
        "warmup_s": if o.mode == Mode::Hold { 0.0 } else { o.warmup.as_secs_f64() },
        "window_s": round3(window_s),
        "ok": ok,
        "errors": st.errors,
        "error_count": errors,
        "retried_stale": st.retried_stale,
        "rps": round(ok as f64 / window_s),
        "latency_us": summary(&mut st.latency),
        "latency_sched_us": summary(&mut st.latency_sched),
        "ttfe_us": summary(&mut st.ttfe),
        "gap_us": summary(&mut st.gaps),
        "events_per_stream": events_per_stream,
        "cpu": cpu,
        "rss_kib": rss,
        "hold": if o.mode == Mode::Hold {
            json!({
                "target": o.concurrency,
                "max_open": hold.max_open.get(),
                "ramp_s": hold.all_open_at.get().map(|t| round3((t - t0).as_secs_f64())),
            })
        } else { Value::Null },
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
