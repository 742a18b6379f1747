//! Tracing setup (human or JSON lines on stderr) and the access log: one line per request.
//! Lines carry ids, names, statuses, timings and token counts, never credentials.

use std::io::IsTerminal;
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
        .with_writer(std::io::stderr)
        // Colours only on a terminal: piped logs (files, journald, grep) stay plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    // A second init (tests start several apps in one process) is harmless.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// The access line of a buffered answer (or of an error the gateway made itself).
pub fn access(info: &AccessInfo, status: u16, usage: Usage, upstream_latency: Option<Duration>) {
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
        tried = info.tried.as_deref(),
        dropped_fields = %info.dropped,
        "request"
    );
}

/// The access line of a streamed answer, written when the stream ends.
pub fn access_stream(info: &AccessInfo, outcome: &'static str, usage: Usage) {
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
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        tried = info.tried.as_deref(),
        dropped_fields = %info.dropped,
        "request"
    );
}
