//! The HTTP/1.1 exchange over raw keep-alive connections: framing, chunked decoding, SSE event timing.

use crate::*;

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 exchange

pub(crate) struct Conn {
    pub(crate) sock: TcpStream,
    pub(crate) buf: Vec<u8>,
}

pub(crate) async fn connect(addr: &str) -> std::io::Result<Conn> {
    let sock = TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    Ok(Conn {
        sock,
        buf: Vec::with_capacity(8192),
    })
}

pub(crate) async fn read_more(conn: &mut Conn) -> Result<usize, &'static str> {
    if conn.buf.capacity() - conn.buf.len() < 2048 {
        conn.buf.reserve(8192);
    }
    conn.sock.read_buf(&mut conn.buf).await.map_err(|_| "read")
}

pub(crate) enum Framing {
    Length(usize),
    Chunked(ChunkDecoder),
    Eof,
}

#[derive(Clone, Copy)]
pub(crate) enum ChunkState {
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
pub(crate) struct ChunkDecoder {
    pub(crate) state: ChunkState,
    pub(crate) size: usize,
    pub(crate) line_len: usize,
}

impl ChunkDecoder {
    pub(crate) fn new() -> Self {
        ChunkDecoder {
            state: ChunkState::Size,
            size: 0,
            line_len: 0,
        }
    }

    pub(crate) fn done(&self) -> bool {
        matches!(self.state, ChunkState::Done)
    }

    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut impl FnMut(&[u8]),
    ) -> Result<(), &'static str> {
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
pub(crate) struct Scan<'a> {
    pub(crate) stream: bool,
    pub(crate) start: Instant,
    pub(crate) prev_nl: bool,
    pub(crate) events: u64,
    pub(crate) first: Option<Duration>,
    pub(crate) last: Option<Instant>,
    /// The body, or for streams only its last bytes: what `expect` is looked for in.
    pub(crate) keep: Vec<u8>,
    pub(crate) bytes: u64,
    pub(crate) gaps: &'a mut Vec<u64>,
}

pub(crate) const STREAM_TAIL: usize = 512;
pub(crate) const BODY_KEEP: usize = 64 * 1024;

impl Scan<'_> {
    pub(crate) fn data(&mut self, d: &[u8], now: Instant) {
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

pub(crate) struct Outcome {
    pub(crate) status: u16,
    pub(crate) keep_alive: bool,
    pub(crate) total: Duration,
    pub(crate) ttfe: Option<Duration>,
    pub(crate) events: u64,
    pub(crate) expect_ok: bool,
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Sends the request and reads the whole answer. `on_head` runs once the response head is in.
pub(crate) async fn exchange(
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
pub(crate) async fn exchange_retrying(
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
