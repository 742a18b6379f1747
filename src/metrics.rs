//! Prometheus metrics, served as text at `GET /metrics` on the status listener.
//!
//! With a `prometheus` plugin on a route, each request on it counts in the gateway's own series
//! (`aigw_*`); with `config.ai_metrics: true` also in Kong's AI series (`ai_llm_*`, Kong's
//! names and labels plus `route` and `service`). Updates are atomic increments (histograms take
//! a short uncontended lock) on one process-wide registry, through handles each route keeps
//! per label combination: no lookup and no allocation per request once a combination has been
//! seen, and nothing at all on routes without the plugin.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::proxy::balancer::Circuit;
use crate::proxy::compile::Snapshot;

/// Kong's `AI_LLM_PROVIDER_LATENCY_BUCKETS` (ms).
const LATENCY_BUCKETS: [f64; 13] = [
    25.0, 50.0, 80.0, 100.0, 250.0, 400.0, 700.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, 60000.0,
];

/// What a route's metrics are labelled with, built once per config generation, and the series
/// its requests have counted in so far.
#[derive(Debug)]
pub struct RouteStats {
    pub route: Arc<str>,
    pub service: Arc<str>,
    /// Kong's AI series too (`ai_metrics: true`).
    pub ai_metrics: bool,
    /// Kong's `per_consumer`: the `consumer` label names the request's consumer (its username,
    /// else its custom_id); otherwise it is empty.
    pub per_consumer: bool,
    latency: OnceLock<Histogram>,
    series: RwLock<Vec<Arc<Series>>>,
}

impl RouteStats {
    pub fn new(route: &str, service: &str, ai_metrics: bool, per_consumer: bool) -> Self {
        Self {
            route: Arc::from(route),
            service: Arc::from(service),
            ai_metrics,
            per_consumer,
            latency: OnceLock::new(),
            series: RwLock::new(Vec::new()),
        }
    }

    /// The series of requests with these labels. Looking a series up in its family hashes
    /// every label (Kong's AI set has ten) under the family's lock: ~10k instructions for the
    /// eight series a metered request counts in (callgrind). A route sees a handful of label
    /// combinations, so each is looked up once and its handles kept here; the families keep
    /// their series for the life of the process, so a kept handle stays the exposed one.
    fn series(
        &self,
        status: u16,
        provider: &'static str,
        model: &str,
        consumer: &Arc<str>,
    ) -> Arc<Series> {
        let matches = |s: &&Arc<Series>| {
            s.status == status
                && s.provider == provider
                && *s.model == *model
                && *s.consumer == **consumer
        };
        let read = |series: &[Arc<Series>]| series.iter().find(matches).cloned();
        if let Some(found) = read(&self.series.read().unwrap_or_else(PoisonError::into_inner)) {
            return found;
        }
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = read(&series) {
            return found;
        }
        let new = Arc::new(Series {
            status,
            provider,
            model: Arc::from(model),
            consumer: consumer.clone(),
            ..Series::default()
        });
        // Past the cap (a client cycling through model names), requests still count, through
        // the families' own lookups.
        if series.len() < SERIES_KEPT {
            series.push(new.clone());
        }
        new
    }
}

/// Label combinations kept per route.
const SERIES_KEPT: usize = 64;

/// The handles of one label combination on a route, each resolved the first time it counts
/// (a series that never counted stays out of the exposition, as before).
#[derive(Debug, Default)]
struct Series {
    status: u16,
    provider: &'static str,
    model: Arc<str>,
    consumer: Arc<str>,
    requests: OnceLock<Counter>,
    ai_requests: OnceLock<Counter>,
    ai_cost: OnceLock<CostCounter>,
    ai_latency: OnceLock<Histogram>,
    ttft: OnceLock<Histogram>,
    /// prompt, completion, total.
    tokens: [OnceLock<Counter>; 3],
}

/// Kong's AI label set (`exporter.lua`, with its `consumer` label), plus route and service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AiLabels {
    ai_provider: &'static str,
    ai_model: Arc<str>,
    cache_status: &'static str,
    vector_db: &'static str,
    embeddings_provider: &'static str,
    embeddings_model: &'static str,
    workspace: &'static str,
    consumer: Arc<str>,
    route: Arc<str>,
    service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    #[prometheus(flatten)]
    ai: AiLabels,
    token_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
    service: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    route: Arc<str>,
    service: Arc<str>,
    code: u16,
    consumer: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    route: Arc<str>,
    service: Arc<str>,
    ai_provider: &'static str,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    route: Arc<str>,
    target: u32,
    ai_provider: &'static str,
    ai_model: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    route: Arc<str>,
    target: u32,
    ai_provider: &'static str,
    ai_model: Arc<str>,
    outcome: String,
}

#[derive(Clone)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(LATENCY_BUCKETS)
    }
}

type CostCounter = Counter<f64, std::sync::atomic::AtomicU64>;

struct Metrics {
    registry: Registry,
    ai_requests: Family<AiLabels, Counter>,
    ai_cost: Family<AiLabels, CostCounter>,
    ai_tokens: Family<TokenLabels, Counter>,
    ai_latency: Family<AiLabels, Histogram, Buckets>,
    requests: Family<StatusLabels, Counter>,
    latency: Family<RouteLabels, Histogram, Buckets>,
    ttft: Family<AiLabels, Histogram, Buckets>,
    upstream_errors: Family<ErrorLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    circuit: Family<TargetLabels, Gauge>,
    open_streams: Gauge,
    in_flight: Gauge,
    generation: Gauge,
    reload_failures: Counter,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            ai_requests: Family::default(),
            ai_cost: Family::default(),
            ai_tokens: Family::default(),
            ai_latency: Family::new_with_constructor(Buckets),
            requests: Family::default(),
            latency: Family::new_with_constructor(Buckets),
            ttft: Family::new_with_constructor(Buckets),
            upstream_errors: Family::default(),
            attempts: Family::default(),
            circuit: Family::default(),
            open_streams: Gauge::default(),
            in_flight: Gauge::default(),
            generation: Gauge::default(),
            reload_failures: Counter::default(),
        };
        // The registry appends `_total` to counters.
        registry.register(
            "ai_llm_requests",
            "AI requests total per ai_provider in Kong",
            m.ai_requests.clone(),
        );
        registry.register(
            "ai_llm_cost",
            "AI requests cost per ai_provider/cache in Kong",
            m.ai_cost.clone(),
        );
        registry.register(
            "ai_llm_tokens",
            "AI requests tokens per ai_provider/cache in Kong",
            m.ai_tokens.clone(),
        );
        registry.register(
            "ai_llm_provider_latency_ms",
            "LLM response Latency for each AI plugins per ai_provider in Kong",
            m.ai_latency.clone(),
        );
        registry.register(
            "aigw_http_requests",
            "Requests answered, by route and status code",
            m.requests.clone(),
        );
        registry.register(
            "aigw_request_latency_ms",
            "Time from request arrival to the end of the answer",
            m.latency.clone(),
        );
        registry.register(
            "aigw_time_to_first_token_ms",
            "Streams: time from request arrival to the first chunk sent to the client",
            m.ttft.clone(),
        );
        registry.register(
            "aigw_upstream_errors",
            "Failed upstream attempts by kind (error, timeout, invalid_header, http_<status>)",
            m.upstream_errors.clone(),
        );
        registry.register(
            "aigw_balancer_attempts",
            "ai-proxy-advanced attempts per target and outcome",
            m.attempts.clone(),
        );
        registry.register(
            "aigw_balancer_circuit_state",
            "Circuit breaker per target: 0 closed, 1 open, 2 half-open (probe allowed)",
            m.circuit.clone(),
        );
        registry.register(
            "aigw_open_streams",
            "Streamed answers in progress",
            m.open_streams.clone(),
        );
        registry.register(
            "aigw_requests_in_flight",
            "Requests between arrival and the start of their answer",
            m.in_flight.clone(),
        );
        registry.register(
            "aigw_config_generation",
            "Generation of the config in force (1 at start, +1 per applied reload)",
            m.generation.clone(),
        );
        registry.register(
            "aigw_config_reload_failures",
            "Reloads rejected because the new file was invalid",
            m.reload_failures.clone(),
        );
        Metrics { registry, ..m }
    })
}

/// The empty `consumer` label, shared so unlabelled requests allocate nothing.
fn no_consumer() -> Arc<str> {
    static EMPTY: OnceLock<Arc<str>> = OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One finished request on a route with the prometheus plugin.
pub struct Finished<'a> {
    pub stats: &'a RouteStats,
    /// The consumer key-auth found (a name, never a credential).
    pub consumer: Option<&'a Arc<str>>,
    pub provider: &'static str,
    pub model: &'a str,
    pub status: u16,
    pub usage: crate::providers::oai::Usage,
    pub cost: Option<f64>,
    pub total: Duration,
    /// The provider's part: response head (buffered answers) or the whole stream.
    pub provider_latency: Option<Duration>,
    pub first_chunk: Option<Duration>,
}

pub fn request_finished(f: Finished<'_>) {
    let m = metrics();
    let stats = f.stats;
    let consumer = match f.consumer {
        Some(name) if stats.per_consumer => name.clone(),
        _ => no_consumer(),
    };
    let series = stats.series(f.status, f.provider, f.model, &consumer);
    let route = || stats.route.clone();
    let service = || stats.service.clone();
    series
        .requests
        .get_or_init(|| {
            m.requests
                .get_or_create(&StatusLabels {
                    route: route(),
                    service: service(),
                    code: f.status,
                    consumer: consumer.clone(),
                })
                .clone()
        })
        .inc();
    stats
        .latency
        .get_or_init(|| {
            m.latency
                .get_or_create(&RouteLabels {
                    route: route(),
                    service: service(),
                })
                .clone()
        })
        .observe(ms(f.total));
    if !stats.ai_metrics || f.provider == "-" {
        return;
    }
    let ai = || AiLabels {
        ai_provider: f.provider,
        ai_model: series.model.clone(),
        cache_status: "",
        vector_db: "",
        embeddings_provider: "",
        embeddings_model: "",
        workspace: "default",
        consumer: consumer.clone(),
        route: route(),
        service: service(),
    };
    series
        .ai_requests
        .get_or_init(|| m.ai_requests.get_or_create(&ai()).clone())
        .inc();
    if let Some(cost) = f.cost {
        series
            .ai_cost
            .get_or_init(|| m.ai_cost.get_or_create(&ai()).clone())
            .inc_by(cost);
    }
    if let Some(latency) = f.provider_latency {
        series
            .ai_latency
            .get_or_init(|| m.ai_latency.get_or_create(&ai()).clone())
            .observe(ms(latency));
    }
    if let Some(first) = f.first_chunk {
        series
            .ttft
            .get_or_init(|| m.ttft.get_or_create(&ai()).clone())
            .observe(ms(first));
    }
    let usage = f.usage;
    let counts = [
        ("prompt_tokens", usage.prompt_tokens),
        ("completion_tokens", usage.completion_tokens),
        (
            "total_tokens",
            usage.prompt_tokens + usage.completion_tokens,
        ),
    ];
    for ((token_type, count), cell) in counts.into_iter().zip(&series.tokens) {
        if count > 0 {
            cell.get_or_init(|| {
                m.ai_tokens
                    .get_or_create(&TokenLabels {
                        ai: ai(),
                        token_type,
                    })
                    .clone()
            })
            .inc_by(count);
        }
    }
}

/// A failed upstream attempt; `kind` is `error`, `timeout`, `invalid_header` or `http_<status>`.
pub fn upstream_error(stats: &RouteStats, provider: &'static str, kind: String) {
    metrics()
        .upstream_errors
        .get_or_create(&ErrorLabels {
            route: stats.route.clone(),
            service: stats.service.clone(),
            ai_provider: provider,
            kind,
        })
        .inc();
}

/// One ai-proxy-advanced attempt; `outcome` is the status or the failure.
pub fn attempt(
    stats: &RouteStats,
    target: usize,
    provider: &'static str,
    model: &str,
    outcome: &str,
) {
    metrics()
        .attempts
        .get_or_create(&AttemptLabels {
            route: stats.route.clone(),
            target: target as u32,
            ai_provider: provider,
            ai_model: Arc::from(model),
            outcome: outcome.to_string(),
        })
        .inc();
}

pub fn reload_failed() {
    metrics().reload_failures.inc();
}

/// The text exposition, with the gauges that are read rather than counted brought up to date.
pub fn render(snapshot: &Snapshot, open_streams: usize, in_flight: usize) -> String {
    let m = metrics();
    m.open_streams.set(open_streams as i64);
    m.in_flight.set(in_flight as i64);
    m.generation.set(snapshot.generation as i64);
    m.circuit.clear();
    for (name, route) in snapshot.route_names.iter().zip(&snapshot.routes) {
        let Some(route) = route else { continue };
        let Some(balancer) = &route.balancer else {
            continue;
        };
        for (i, target) in route.targets.iter().enumerate() {
            let state = match balancer.circuit(i) {
                Circuit::Closed => 0,
                Circuit::Open => 1,
                Circuit::HalfOpen => 2,
            };
            m.circuit
                .get_or_create(&TargetLabels {
                    route: name.clone(),
                    target: i as u32,
                    ai_provider: target.provider.as_str(),
                    ai_model: Arc::from(target.config.model.name.as_deref().unwrap_or("")),
                })
                .set(state);
        }
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::oai::Usage;

    fn exposition() -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &metrics().registry);
        out
    }

    fn finished(stats: &RouteStats, status: u16, model: &str, prompt: u64) {
        request_finished(Finished {
            stats,
            consumer: None,
            provider: "openai",
            model,
            status,
            usage: Usage {
                prompt_tokens: prompt,
                completion_tokens: 2,
                ..Usage::default()
            },
            cost: Some(0.5),
            total: Duration::from_millis(3),
            provider_latency: Some(Duration::from_millis(2)),
            first_chunk: None,
        });
    }

    /// The value of the exposition line that starts with `name{` and has all of `labels`.
    fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .find(|l| labels.iter().all(|label| l.contains(label)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn kept_series_count_like_a_family_lookup() {
        let stats = RouteStats::new("kept-series-route", "svc", true, false);
        finished(&stats, 200, "m-a", 5);
        finished(&stats, 200, "m-a", 7);
        finished(&stats, 200, "m-b", 0);
        finished(&stats, 502, "m-a", 0);
        let text = exposition();
        let route = "route=\"kept-series-route\"";
        let ok = [route, "code=\"200\""];
        assert_eq!(value(&text, "aigw_http_requests_total", &ok), Some(3.0));
        let failed = [route, "code=\"502\""];
        assert_eq!(value(&text, "aigw_http_requests_total", &failed), Some(1.0));
        let a = [route, "ai_model=\"m-a\""];
        assert_eq!(value(&text, "ai_llm_requests_total", &a), Some(3.0));
        assert_eq!(value(&text, "ai_llm_cost_total", &a), Some(1.5));
        let prompt = [route, "ai_model=\"m-a\"", "token_type=\"prompt_tokens\""];
        assert_eq!(value(&text, "ai_llm_tokens_total", &prompt), Some(12.0));
        // A count of zero creates no series, as Kong's exporter.
        let none = [route, "ai_model=\"m-b\"", "token_type=\"prompt_tokens\""];
        assert_eq!(value(&text, "ai_llm_tokens_total", &none), None);
        let latency = [route];
        assert_eq!(
            value(&text, "aigw_request_latency_ms_count", &latency),
            Some(4.0)
        );
        assert_eq!(stats.series.read().unwrap().len(), 3);
    }

    #[test]
    fn past_the_cap_requests_still_count() {
        let stats = RouteStats::new("capped-series-route", "svc", true, false);
        for i in 0..SERIES_KEPT + 5 {
            finished(&stats, 200, &format!("model-{i}"), 1);
        }
        let extra = format!("model-{}", SERIES_KEPT + 2);
        finished(&stats, 200, &extra, 1);
        let text = exposition();
        let labels = [
            "route=\"capped-series-route\"".to_string(),
            format!("ai_model=\"{extra}\""),
        ];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert_eq!(value(&text, "ai_llm_requests_total", &labels), Some(2.0));
        assert_eq!(stats.series.read().unwrap().len(), SERIES_KEPT);
    }
}
