//! The `prometheus` plugin's `config` block (Kong's schema).

use serde::Deserialize;

/// `ai_metrics` adds Kong's AI series for the routes the plugin applies to; `per_consumer` fills
/// in their `consumer` label (and `aigw_http_requests_total`'s). The other switches are
/// accepted so a Kong file loads unchanged (the gateway's own series are always exported).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    #[serde(default)]
    pub per_consumer: bool,
    #[serde(default)]
    pub status_code_metrics: bool,
    #[serde(default)]
    pub ai_metrics: bool,
    #[serde(default)]
    pub latency_metrics: bool,
    #[serde(default)]
    pub bandwidth_metrics: bool,
    #[serde(default)]
    pub upstream_health_metrics: bool,
    #[serde(default)]
    pub wasm_metrics: bool,
}
