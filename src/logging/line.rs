//! The access line, written by hand in the shape tracing-subscriber's formatters give it (human:
//! `<time>  INFO access: request name=value ...`; JSON: one flat object), without tracing's
//! per-field formatting machinery: that was ~2.5 µs per request, the largest single cost left on
//! the non-streaming path (loadtest/ANALYSIS.md, session 3).
//!
//! Values a client controls (the model, dropped field names) are escaped: a control character
//! can neither start a fake line nor reach a terminal.

use std::cell::RefCell;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// One line under construction, in this thread's reused buffer.
pub(super) struct Line<'a> {
    buf: &'a mut Vec<u8>,
    json: bool,
}

thread_local! {
    /// The line buffer, and the formatted date and time of the last whole second seen.
    static SCRATCH: RefCell<(Vec<u8>, u64, String)> = const { RefCell::new((Vec::new(), u64::MAX, String::new())) };
}

/// Builds one line with `fill` and hands it to `out`. `json` picks the JSON object form.
pub(super) fn write(
    json: bool,
    target: &str,
    message: &str,
    fill: impl FnOnce(&mut Line<'_>),
    out: impl FnOnce(&[u8]),
) {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let (buf, second, stamp) = &mut *scratch;
        buf.clear();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if now.as_secs() != *second {
            *second = now.as_secs();
            *stamp = date_time(now.as_secs());
        }
        let mut line = Line { buf, json };
        if json {
            line.buf.extend_from_slice(b"{\"timestamp\":\"");
        }
        line.buf.extend_from_slice(stamp.as_bytes());
        line.buf.push(b'.');
        let micros = now.subsec_micros();
        line.buf.extend(
            (0..6)
                .rev()
                .map(|i| b'0' + (micros / 10u32.pow(i) % 10) as u8),
        );
        line.buf.push(b'Z');
        if json {
            line.buf
                .extend_from_slice(b"\",\"level\":\"INFO\",\"message\":");
            json_str(line.buf, message);
        } else {
            line.buf.extend_from_slice(b"  INFO ");
            line.buf.extend_from_slice(target.as_bytes());
            line.buf.extend_from_slice(b": ");
            line.buf.extend_from_slice(message.as_bytes());
        }
        fill(&mut line);
        if json {
            line.buf.extend_from_slice(b",\"target\":");
            json_str(line.buf, target);
            line.buf.push(b'}');
        }
        line.buf.push(b'\n');
        out(line.buf);
    });
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time, as tracing-subscriber writes it.
fn date_time(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

impl Line<'_> {
    #[cfg(test)]
    pub(super) fn for_test(buf: &mut Vec<u8>) -> Line<'_> {
        Line { buf, json: false }
    }

    fn name(&mut self, name: &str) {
        if self.json {
            self.buf.push(b',');
            json_str(self.buf, name);
            self.buf.push(b':');
        } else {
            self.buf.push(b' ');
            self.buf.extend_from_slice(name.as_bytes());
            self.buf.push(b'=');
        }
    }

    /// A string field (`name = value` in tracing): quoted, escaped as Rust's `Debug` does.
    pub(super) fn quoted(&mut self, name: &str, value: &str) {
        self.name(name);
        if self.json {
            json_str(self.buf, value);
        } else if value.bytes().all(|b| plain(b) && b != b'"' && b != b'\\') {
            self.buf.push(b'"');
            self.buf.extend_from_slice(value.as_bytes());
            self.buf.push(b'"');
        } else {
            let _ = write!(self.buf, "{value:?}");
        }
    }

    /// A displayed field (`name = %value` in tracing): bare, unless it holds a control
    /// character, which tracing would have written raw; then quoted and escaped.
    pub(super) fn bare(&mut self, name: &str, value: &str) {
        self.name(name);
        if self.json {
            json_str(self.buf, value);
        } else if value.bytes().all(plain) || !value.chars().any(char::is_control) {
            self.buf.extend_from_slice(value.as_bytes());
        } else {
            let _ = write!(self.buf, "{value:?}");
        }
    }

    pub(super) fn uint(&mut self, name: &str, value: u64) {
        self.name(name);
        let _ = serde_json::to_writer(&mut *self.buf, &value);
    }

    pub(super) fn boolean(&mut self, name: &str, value: bool) {
        self.name(name);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// A float as tracing writes it: Rust's `Debug` (human), a JSON number (JSON).
    pub(super) fn float(&mut self, name: &str, value: f64) {
        self.name(name);
        if self.json {
            let _ = serde_json::to_writer(&mut *self.buf, &value);
        } else {
            let _ = write!(self.buf, "{value:?}");
        }
    }

    /// Milliseconds from whole microseconds: the same text as [`Line::float`] of `micros /
    /// 1000`, without float formatting.
    pub(super) fn millis(&mut self, name: &str, micros: u64) {
        self.name(name);
        let _ = serde_json::to_writer(&mut *self.buf, &(micros / 1000));
        self.buf.push(b'.');
        let digits = (micros % 1000) as u32;
        let digits = [digits / 100, digits / 10 % 10, digits % 10];
        // Shortest form, as `Debug` and JSON write floats: trailing zeros go, one digit stays.
        let keep = digits.iter().rposition(|&d| d != 0).map_or(1, |i| i + 1);
        self.buf
            .extend(digits[..keep].iter().map(|&d| b'0' + d as u8));
    }
}

/// Printable ASCII (space included): written as it is.
fn plain(b: u8) -> bool {
    (0x20..0x7f).contains(&b)
}

fn json_str(buf: &mut Vec<u8>, value: &str) {
    let _ = serde_json::to_writer(buf, value);
}
