//! Tracing setup (human or JSON lines on stderr) and the access log: one line per request.
//! Lines carry ids, names, statuses, timings and token counts (plus cost and per-token timing
//! when the serving target's `logging.log_statistics` is on), never credentials.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::actors::messages::AccessInfo;
use crate::config::settings::LogFormat;
use crate::providers::oai::Usage;

mod line;

/// The format of the first [`init`], which the access lines (written without tracing's
/// formatter) follow too.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG` overrides `level`.
pub fn init(format: LogFormat, level: &str) {
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Plain text (no colours: built without the `ansi` feature, see Cargo.toml).
        .with_writer(|| BatchedStderr)
        .with_target(true);
    // A second init (tests start several apps in one process) is harmless.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// Log lines of a worker thread waiting for the end of the current event-loop turn.
struct Batch(Vec<u8>);

impl Batch {
    fn flush(&mut self) {
        if !self.0.is_empty() {
            let _ = std::io::stderr().lock().write_all(&self.0);
            self.0.clear();
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Above this a batch is written at once rather than at the end of the turn.
const BATCH_LIMIT: usize = 64 * 1024;

thread_local! {
    static BATCHING: Cell<bool> = const { Cell::new(false) };
    static BATCH: RefCell<Batch> = const { RefCell::new(Batch(Vec::new())) };
}

/// Makes this thread's log lines (the access log: one line per request) go out in one write per
/// turn of its event loop instead of one `write(2)` each; the loop writes them after the work
/// that is ready now, so nothing waits for more traffic. Call it on a worker thread, inside its
/// actix runtime. The per-line write was ~4 % of the gateway's CPU at 30,000 req/s.
pub(crate) fn batch_this_thread() {
    BATCHING.with(|b| b.set(true));
}

fn flush_batch() {
    BATCH.with(|b| b.borrow_mut().flush());
}

/// stderr for the log, batched on threads that called [`batch_this_thread`].
struct BatchedStderr;

impl Write for BatchedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !BATCHING.with(Cell::get) {
            return std::io::stderr().write(buf);
        }
        BATCH.with(|b| {
            let mut batch = b.borrow_mut();
            if batch.0.is_empty() {
                actix_rt::spawn(async { flush_batch() });
            }
            batch.0.extend_from_slice(buf);
            if batch.0.len() >= BATCH_LIMIT {
                batch.flush();
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// What the serving target's `logging.log_statistics` adds to its access line: the cost and
/// the time per output token.
fn statistics(info: &AccessInfo, usage: Usage) -> Option<(Option<f64>, Option<f64>)> {
    let target = info.target.as_ref()?;
    target.config.logging.log_statistics.then(|| {
        let per_token = (usage.completion_tokens > 0)
            .then(|| millis(info.started.elapsed()) / usage.completion_tokens as f64);
        (target.cost(usage), per_token)
    })
}

/// The end of a request: its metrics, when a prometheus plugin applies to its route.
fn count(
    info: &AccessInfo,
    status: u16,
    usage: Usage,
    provider_latency: Option<Duration>,
    first_chunk: Option<Duration>,
) {
    let Some(target) = &info.target else { return };
    let Some(stats) = &target.stats else { return };
    crate::metrics::request_finished(crate::metrics::Finished {
        stats,
        consumer: info.consumer.as_ref(),
        provider: if provider_latency.is_some() {
            info.provider
        } else {
            "-"
        },
        model: &info.model,
        status,
        usage,
        cost: target.cost(usage),
        total: info.started.elapsed(),
        provider_latency,
        first_chunk,
    });
}

/// Whether access lines are written: tracing's filter (`log_level`, `RUST_LOG`) decides, as for
/// any event with target `access` at level INFO.
fn access_enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// The fields both kinds of access line start with.
fn head(line: &mut line::Line<'_>, info: &AccessInfo, status: u16, stream: bool) {
    line.bare("request_id", &info.request_id);
    if let Some(trace_id) = info.trace_id {
        line.bare("trace_id", &trace_id.to_string());
    }
    line.bare("route", &info.route);
    line.quoted("provider", info.provider);
    line.bare("model", &info.model);
    if let Some(consumer) = &info.consumer {
        line.quoted("consumer", consumer);
    }
    line.uint("status", status.into());
    line.boolean("stream", stream);
}

/// The fields both kinds of access line end with.
fn tail(line: &mut line::Line<'_>, info: &AccessInfo, usage: Usage) {
    line.uint("prompt_tokens", usage.prompt_tokens);
    line.uint("completion_tokens", usage.completion_tokens);
    if let Some((cost, per_token)) = statistics(info, usage) {
        if let Some(cost) = cost {
            line.float("cost", cost);
        }
        if let Some(per_token) = per_token {
            line.float("ms_per_output_token", per_token);
        }
    }
    if let Some(tried) = &info.tried {
        line.quoted("tried", tried);
    }
    line.bare("dropped_fields", &info.dropped);
}

/// Writes one access line (the `access` target's `request` event).
fn access_line(fill: impl FnOnce(&mut line::Line<'_>)) {
    let json = FORMAT.get() == Some(&LogFormat::Json);
    line::write(json, "access", "request", fill, |bytes| {
        let _ = BatchedStderr.write_all(bytes);
    });
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// The access line of a buffered answer (or of an error the gateway made itself), and its
/// metrics.
pub fn access(info: &AccessInfo, status: u16, usage: Usage, upstream_latency: Option<Duration>) {
    if access_enabled() {
        let elapsed = info.started.elapsed();
        access_line(|line| buffered_fields(line, info, status, usage, elapsed, upstream_latency));
    }
    count(info, status, usage, upstream_latency, None);
}

fn buffered_fields(
    line: &mut line::Line<'_>,
    info: &AccessInfo,
    status: u16,
    usage: Usage,
    elapsed: Duration,
    upstream_latency: Option<Duration>,
) {
    head(line, info, status, false);
    line.millis("latency_ms", micros(elapsed));
    if let Some(upstream) = upstream_latency {
        line.millis("upstream_ms", micros(upstream));
    }
    tail(line, info, usage);
}

/// The access line of a streamed answer, written when the stream ends, and its metrics.
pub fn access_stream(
    info: &AccessInfo,
    outcome: &'static str,
    usage: Usage,
    first_chunk: Option<Duration>,
) {
    if access_enabled() {
        let elapsed = info.started.elapsed();
        access_line(|line| stream_fields(line, info, outcome, usage, elapsed, first_chunk));
    }
    count(info, 200, usage, Some(info.started.elapsed()), first_chunk);
}

fn stream_fields(
    line: &mut line::Line<'_>,
    info: &AccessInfo,
    outcome: &str,
    usage: Usage,
    elapsed: Duration,
    first_chunk: Option<Duration>,
) {
    head(line, info, 200, true);
    line.quoted("outcome", outcome);
    line.millis("latency_ms", micros(elapsed));
    if let Some(first) = first_chunk {
        line.millis("first_chunk_ms", micros(first));
    }
    tail(line, info, usage);
}

/// Largest payload written to a log line, per direction.
const MAX_LOGGED_PAYLOAD: usize = 64 * 1024;

/// `logging.log_payloads`: the client's request body and the answer (buffered answers) as one
/// `payload` line. Credentials are never in it: the gateway's own are added to the upstream
/// request, not to the client body logged here, and a body field named like the configured
/// body auth parameter is blanked.
pub fn payloads(
    info: &AccessInfo,
    request: &[u8],
    response: Option<&[u8]>,
    secret_field: Option<&str>,
) {
    let request = redact_field(request, secret_field);
    let text = |bytes: &[u8]| {
        let cut = &bytes[..bytes.len().min(MAX_LOGGED_PAYLOAD)];
        String::from_utf8_lossy(cut).into_owned()
    };
    tracing::info!(
        target: "payload",
        request_id = %info.request_id,
        route = %info.route,
        provider = info.provider,
        request = %text(&request),
        response = response.map(text).as_deref(),
        "payload"
    );
}

fn redact_field<'a>(body: &'a [u8], field: Option<&str>) -> std::borrow::Cow<'a, [u8]> {
    let Some(field) = field else {
        return std::borrow::Cow::Borrowed(body);
    };
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut map)) if map.contains_key(field) => {
            map.insert(
                field.to_string(),
                serde_json::Value::String("<redacted>".into()),
            );
            std::borrow::Cow::Owned(serde_json::to_vec(&map).unwrap_or_default())
        }
        _ => std::borrow::Cow::Borrowed(body),
    }
}

#[cfg(test)]
mod tests;
