//! Tracing setup (human or JSON lines on stderr) and the access log: one line per request.
//! Lines carry ids, names, statuses, timings and token counts (plus cost and per-token timing
//! when the serving target's `logging.log_statistics` is on), never credentials.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::actors::messages::AccessInfo;
use crate::config::settings::LogFormat;
use crate::providers::oai::Usage;

/// Installs the global subscriber. `RUST_LOG` overrides `level`.
pub fn init(format: LogFormat, level: &str) {
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

/// The access line of a buffered answer (or of an error the gateway made itself), and its
/// metrics.
pub fn access(info: &AccessInfo, status: u16, usage: Usage, upstream_latency: Option<Duration>) {
    let stats = statistics(info, usage);
    tracing::info!(
        target: "access",
        request_id = %info.request_id,
        route = %info.route,
        provider = info.provider,
        model = %info.model,
        consumer = info.consumer.as_deref(),
        status,
        stream = false,
        latency_ms = millis(info.started.elapsed()),
        upstream_ms = upstream_latency.map(millis),
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        cost = stats.and_then(|s| s.0),
        ms_per_output_token = stats.and_then(|s| s.1),
        tried = info.tried.as_deref(),
        dropped_fields = %info.dropped,
        "request"
    );
    count(info, status, usage, upstream_latency, None);
}

/// The access line of a streamed answer, written when the stream ends, and its metrics.
pub fn access_stream(
    info: &AccessInfo,
    outcome: &'static str,
    usage: Usage,
    first_chunk: Option<Duration>,
) {
    let stats = statistics(info, usage);
    tracing::info!(
        target: "access",
        request_id = %info.request_id,
        route = %info.route,
        provider = info.provider,
        model = %info.model,
        consumer = info.consumer.as_deref(),
        status = 200u16,
        stream = true,
        outcome,
        latency_ms = millis(info.started.elapsed()),
        first_chunk_ms = first_chunk.map(millis),
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        cost = stats.and_then(|s| s.0),
        ms_per_output_token = stats.and_then(|s| s.1),
        tried = info.tried.as_deref(),
        dropped_fields = %info.dropped,
        "request"
    );
    count(info, 200, usage, Some(info.started.elapsed()), first_chunk);
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
