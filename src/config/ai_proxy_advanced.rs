//! The `ai-proxy-advanced` plugin's `config` block, with Kong's field names and defaults
//! (Kong 3.13's schema): `targets[]` of ai-proxy-like targets and a `balancer`.
//!
//! Each target becomes a plain [`AiProxyConfig`] (its own `route_type`, `model`, `auth`,
//! `logging`, plus the plugin-wide `response_streaming`, `max_request_body_size`,
//! `model_name_header`, `llm_format`), so a target is checked, compiled and translated exactly
//! like an `ai-proxy` route.

use serde::Deserialize;
use serde_json::Value;

use super::ai_proxy::{
    default_body_size, AiProxyConfig, AuthConfig, DroppedFields, LlmFormat, LoggingConfig,
    ModelConfig, ResponseStreaming, RouteType,
};
use super::default_true;

pub const DEFAULT_HASH_HEADER: &str = "X-Kong-LLM-Request-ID";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiProxyAdvancedConfig {
    pub targets: Vec<Value>,
    #[serde(default)]
    pub balancer: BalancerConfig,
    #[serde(default)]
    pub response_streaming: ResponseStreaming,
    #[serde(default = "default_body_size")]
    pub max_request_body_size: u64,
    #[serde(default = "default_true")]
    pub model_name_header: bool,
    #[serde(default)]
    pub llm_format: LlmFormat,
    #[serde(default)]
    pub genai_category: Option<String>,
    /// As on `ai-proxy` (our extension): report or refuse untranslatable request fields.
    #[serde(default)]
    pub dropped_fields: DroppedFields,
    /// Only used by the `semantic` algorithm, which this gateway refuses.
    #[serde(default)]
    pub embeddings: Option<Value>,
    #[serde(default)]
    pub vectordb: Option<Value>,
}

/// One target as written; read separately from the plugin so its problems carry its index.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub route_type: RouteType,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    pub model: ModelConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub description: Option<String>,
}

impl std::fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `auth` has a redacting Debug of its own.
        f.debug_struct("TargetConfig")
            .field("route_type", &self.route_type)
            .field("auth", &self.auth)
            .field("model", &self.model)
            .field("weight", &self.weight)
            .finish_non_exhaustive()
    }
}

impl TargetConfig {
    /// The target as the `ai-proxy` config it behaves like, with the plugin-wide fields.
    pub fn as_ai_proxy(&self, plugin: &AiProxyAdvancedConfig) -> AiProxyConfig {
        AiProxyConfig {
            route_type: self.route_type,
            auth: self.auth.clone(),
            model: self.model.clone(),
            logging: self.logging.clone(),
            response_streaming: plugin.response_streaming,
            max_request_body_size: plugin.max_request_body_size,
            // Balanced routes read whole bodies (an upload cannot move between targets).
            body_size_configured: true,
            model_name_header: plugin.model_name_header,
            llm_format: plugin.llm_format,
            genai_category: plugin.genai_category.clone(),
            dropped_fields: plugin.dropped_fields,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    #[default]
    RoundRobin,
    ConsistentHashing,
    LeastConnections,
    LowestLatency,
    LowestUsage,
    Priority,
    /// Accepted by the schema so `validate` can say it is not supported.
    Semantic,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::ConsistentHashing => "consistent-hashing",
            Algorithm::LeastConnections => "least-connections",
            Algorithm::LowestLatency => "lowest-latency",
            Algorithm::LowestUsage => "lowest-usage",
            Algorithm::Priority => "priority",
            Algorithm::Semantic => "semantic",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokensCountStrategy {
    #[default]
    TotalTokens,
    PromptTokens,
    CompletionTokens,
    Cost,
    /// Needs Kong's ai-llm-as-judge plugin; refused by `validate`.
    LlmAccuracy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatencyStrategy {
    /// Time per output token.
    #[default]
    Tpot,
    /// Whole request, end to end.
    E2e,
}

/// nginx's `proxy_next_upstream` conditions, as Kong names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverCriterion {
    Error,
    Timeout,
    InvalidHeader,
    #[serde(rename = "http_403")]
    Http403,
    #[serde(rename = "http_404")]
    Http404,
    #[serde(rename = "http_429")]
    Http429,
    #[serde(rename = "http_500")]
    Http500,
    #[serde(rename = "http_502")]
    Http502,
    #[serde(rename = "http_503")]
    Http503,
    #[serde(rename = "http_504")]
    Http504,
    NonIdempotent,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerConfig {
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default)]
    pub tokens_count_strategy: TokensCountStrategy,
    #[serde(default)]
    pub latency_strategy: LatencyStrategy,
    #[serde(default = "default_hash_header")]
    pub hash_on_header: String,
    /// Kong's ring size for consistent hashing; accepted (rendezvous hashing needs no ring).
    #[serde(default = "default_slots")]
    pub slots: u32,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_timeout")]
    pub connect_timeout: u64,
    #[serde(default = "default_timeout")]
    pub read_timeout: u64,
    #[serde(default = "default_timeout")]
    pub write_timeout: u64,
    #[serde(default = "default_criteria")]
    pub failover_criteria: Vec<FailoverCriterion>,
    /// 0 = circuit breaker off.
    #[serde(default)]
    pub max_fails: u32,
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout: u64,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            algorithm: Algorithm::default(),
            tokens_count_strategy: TokensCountStrategy::default(),
            latency_strategy: LatencyStrategy::default(),
            hash_on_header: default_hash_header(),
            slots: default_slots(),
            retries: default_retries(),
            connect_timeout: default_timeout(),
            read_timeout: default_timeout(),
            write_timeout: default_timeout(),
            failover_criteria: default_criteria(),
            max_fails: 0,
            fail_timeout: default_fail_timeout(),
        }
    }
}

fn default_weight() -> u32 {
    100
}
fn default_hash_header() -> String {
    DEFAULT_HASH_HEADER.to_string()
}
fn default_slots() -> u32 {
    10_000
}
fn default_retries() -> u32 {
    5
}
fn default_timeout() -> u64 {
    60_000
}
fn default_criteria() -> Vec<FailoverCriterion> {
    vec![FailoverCriterion::Error, FailoverCriterion::Timeout]
}
fn default_fail_timeout() -> u64 {
    10_000
}

#[cfg(test)]
mod tests {
    use crate::config::load::load_deck;

    fn problems(plugin: &str) -> Vec<String> {
        let yaml = format!(
            "_format_version: \"3.0\"\nroutes:\n  - name: r\n    paths: [/a]\n    plugins:\n      - {plugin}\n"
        );
        match load_deck(&yaml, &|_| None) {
            Ok(_) => Vec::new(),
            Err(found) => found.iter().map(ToString::to_string).collect(),
        }
    }

    const OPENAI: &str = "{route_type: llm/v1/chat, model: {provider: openai, name: gpt-4o}}";

    #[test]
    fn kong_fields_load_with_their_defaults() {
        let yaml = format!(
            "_format_version: \"3.0\"\nroutes:\n  - name: r\n    paths: [/a]\n    plugins:\n      - {{name: ai-proxy-advanced, config: {{response_streaming: deny, targets: [{OPENAI}, {{route_type: llm/v1/chat, weight: 5, description: backup, logging: {{log_statistics: true}}, model: {{provider: mistral, name: m, options: {{mistral_format: openai}}}}}}]}}}}\n"
        );
        let config = load_deck(&yaml, &|_| None).expect("valid");
        let plugin = config.routes[0].plugin.clone().expect("plugin");
        let balancer = plugin.balancer.clone().expect("balancer");
        assert_eq!(balancer.retries, 5);
        assert_eq!(balancer.hash_on_header, "X-Kong-LLM-Request-ID");
        assert_eq!(balancer.max_fails, 0);
        assert_eq!(plugin.targets.len(), 2);
        assert_eq!(plugin.targets[0].weight, 100);
        assert_eq!(plugin.targets[1].weight, 5);
        let second = &plugin.targets[1].config;
        assert_eq!(
            second.response_streaming,
            crate::config::ai_proxy::ResponseStreaming::Deny
        );
        assert!(second.logging.log_statistics);
    }

    #[test]
    fn semantic_and_llm_accuracy_are_refused_clearly() {
        let found = problems(&format!(
            "{{name: ai-proxy-advanced, config: {{balancer: {{algorithm: semantic, tokens_count_strategy: llm-accuracy}}, targets: [{OPENAI}]}}}}"
        ));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with(
            "routes[0].plugins[0].config.balancer.algorithm: the 'semantic' algorithm is not supported"
        ));
        assert!(found[1].contains("tokens_count_strategy: 'llm-accuracy' is not supported"));
    }

    #[test]
    fn target_problems_carry_the_target_path() {
        let found = problems(&format!(
            "{{name: ai-proxy-advanced, config: {{balancer: {{retries: 40000, failover_criteria: [http_418]}}, targets: [{OPENAI}, {{route_type: llm/v1/embeddings, weight: 0, model: {{provider: anthropic, name: c}}}}]}}}}"
        ));
        assert_eq!(
            found,
            [
                "routes[0].plugins[0].config.balancer.failover_criteria[0]: unknown variant `http_418`, expected one of `error`, `timeout`, `invalid_header`, `http_403`, `http_404`, `http_429`, `http_500`, `http_502`, `http_503`, `http_504`, `non_idempotent`",
            ]
        );
        let found = problems(&format!(
            "{{name: ai-proxy-advanced, config: {{balancer: {{retries: 40000}}, targets: [{OPENAI}, {{route_type: llm/v1/embeddings, weight: 0, model: {{provider: anthropic, name: c}}}}]}}}}"
        ));
        assert_eq!(
            found,
            [
                "routes[0].plugins[0].config.balancer.retries: value should be between 0 and 32767",
                "routes[0].plugins[0].config.targets[1].weight: value should be between 1 and 65535",
                "routes[0].plugins[0].config.targets[1].model.options.anthropic_version: must set 'model.options.anthropic_version' for anthropic provider",
                "routes[0].plugins[0].config.targets[1].route_type: every target of one route must have the same route_type: a client request must suit whichever target serves it",
            ]
        );
    }

    #[test]
    fn empty_targets_and_cost_without_prices_are_problems() {
        let found = problems(
            "{name: ai-proxy-advanced, config: {balancer: {algorithm: lowest-usage, tokens_count_strategy: cost}, targets: []}}",
        );
        assert_eq!(
            found,
            ["routes[0].plugins[0].config.targets: length must be at least 1"]
        );
        let found = problems(&format!(
            "{{name: ai-proxy-advanced, config: {{balancer: {{algorithm: lowest-usage, tokens_count_strategy: cost}}, targets: [{OPENAI}]}}}}"
        ));
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("targets[0].model.options: the 'cost' tokens_count_strategy"));
    }

    #[test]
    fn one_ai_plugin_per_scope_and_prometheus_alongside() {
        let found = problems(&format!(
            "{{name: ai-proxy, config: {OPENAI}}}\n      - {{name: ai-proxy-advanced, config: {{targets: [{OPENAI}]}}}}"
        ));
        assert_eq!(found.len(), 1);
        assert!(
            found[0].contains("duplicate 'ai-proxy-advanced' plugin"),
            "{found:?}"
        );
        let yaml = format!(
            "_format_version: \"3.0\"\nroutes:\n  - name: r\n    paths: [/a]\n    plugins: [{{name: ai-proxy, config: {OPENAI}}}]\nplugins:\n  - {{name: prometheus, config: {{ai_metrics: true, status_code_metrics: true}}}}\n"
        );
        let config = load_deck(&yaml, &|_| None).expect("valid");
        assert!(config.routes[0]
            .prometheus
            .as_ref()
            .is_some_and(|p| p.ai_metrics));
    }
}
