//! The `ai-rate-limiting-advanced` plugin's `config` block, with Kong's field names and
//! defaults, plus two fields Kong lacks (`wait_timeout`, and `fault_tolerant` borrowed from
//! Kong's `rate-limiting` plugin) that make the cross-instance behaviour explicit.

use serde::Deserialize;
use serde_json::Value;

use crate::config::ai_proxy::ProviderName;
use crate::config::default_true;
use crate::config::problem::{field, item, Problems};

pub const DEFAULT_ERROR_MESSAGE: &str = "AI token rate limit exceeded for provider(s): ";

fn default_error_code() -> u16 {
    429
}

fn default_error_message() -> String {
    DEFAULT_ERROR_MESSAGE.to_string()
}

fn default_wait_timeout() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub llm_providers: Vec<LlmProviderLimit>,
    #[serde(default)]
    pub strategy: Strategy,
    /// Seconds between counter syncs with Redis: `0` every request, `-1` node memory only.
    /// Unset: `0` with `strategy: redis`.
    pub sync_rate: Option<f64>,
    #[serde(default)]
    pub window_type: WindowType,
    #[serde(default)]
    pub identifier: Identifier,
    pub header_name: Option<String>,
    pub path: Option<String>,
    #[serde(default)]
    pub tokens_count_strategy: TokensCountStrategy,
    #[serde(default = "default_error_code")]
    pub error_code: u16,
    #[serde(default = "default_error_message")]
    pub error_message: String,
    #[serde(default)]
    pub error_hide_providers: bool,
    #[serde(default)]
    pub hide_client_headers: bool,
    /// Counters of plugins with the same namespace are shared; unset, each plugin instance
    /// counts on its own.
    pub namespace: Option<String>,
    #[serde(default)]
    pub retry_after_jitter_max: u64,
    pub redis: Option<RedisConfig>,
    /// Kong `rate-limiting`'s name: with Redis unreachable, serve (true, logged) or answer 503.
    #[serde(default = "default_true")]
    pub fault_tolerant: bool,
    /// How long (ms) a request waits while the window's remaining budget is committed to
    /// requests in flight, before it is refused.
    #[serde(default = "default_wait_timeout")]
    pub wait_timeout: u64,
    /// Kong-only knobs with no meaning here, accepted so Kong files load.
    pub dictionary_name: Option<String>,
    pub disable_penalty: Option<bool>,
    pub decrease_by_fractions_in_redis: Option<bool>,
    pub llm_format: Option<String>,
    /// Lua hooks: refused by validation (this gateway runs no Lua).
    pub request_prompt_count_function: Option<String>,
    pub custom_cost_count_function: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmProviderLimit {
    /// A provider name (`openai`, `anthropic`, ...), or `requestPrompt` which Kong counts with
    /// a Lua function (refused here).
    pub name: String,
    pub limit: Vec<f64>,
    pub window_size: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Local,
    Redis,
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowType {
    #[default]
    Sliding,
    Fixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Identifier {
    #[default]
    Consumer,
    Credential,
    Ip,
    Service,
    Header,
    Path,
    ConsumerGroup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokensCountStrategy {
    #[default]
    TotalTokens,
    PromptTokens,
    CompletionTokens,
    Cost,
}

fn default_redis_port() -> u16 {
    6379
}

fn default_redis_timeout() -> u64 {
    2000
}

/// Kong's shared Redis schema (the fields a single server needs; Sentinel and Cluster are
/// refused by validation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub host: Option<String>,
    #[serde(default = "default_redis_port")]
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    #[serde(default)]
    pub database: i64,
    #[serde(default)]
    pub ssl: bool,
    #[serde(default)]
    pub ssl_verify: bool,
    pub server_name: Option<String>,
    /// Milliseconds, for connecting and for every command.
    #[serde(default = "default_redis_timeout")]
    pub timeout: u64,
    pub connect_timeout: Option<u64>,
    pub read_timeout: Option<u64>,
    pub send_timeout: Option<u64>,
    pub keepalive_pool_size: Option<u64>,
    pub keepalive_backlog: Option<u64>,
    pub connection_is_proxied: Option<bool>,
    pub sentinel_master: Option<String>,
    pub sentinel_role: Option<String>,
    pub sentinel_nodes: Option<Value>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    pub cluster_nodes: Option<Value>,
    pub cluster_max_redirections: Option<u64>,
    pub cloud_authentication: Option<Value>,
}

/// The provider a limit names, as the ai-proxy plugin spells it.
pub fn provider_by_name(name: &str) -> Option<ProviderName> {
    serde_json::from_value(Value::String(name.to_string())).ok()
}

/// Kong's rules, plus what this gateway cannot do (Lua hooks, the database strategy, Redis
/// Sentinel and Cluster), each refused with the field that asks for it.
pub(crate) fn check(config: &RateLimitConfig, path: &str, problems: &mut Problems) {
    let providers = field(path, "llm_providers");
    if config.llm_providers.is_empty() {
        problems.push(&providers, "length must be at least 1");
    }
    for (i, limit) in config.llm_providers.iter().enumerate() {
        let at = item(&providers, i);
        if limit.name == "requestPrompt" {
            problems.push(
                field(&at, "name"),
                "'requestPrompt' counts with request_prompt_count_function, a Lua hook this gateway does not run",
            );
        } else if provider_by_name(&limit.name).is_none() {
            problems.push(
                field(&at, "name"),
                format!("unknown provider '{}'", limit.name),
            );
        }
        if config.llm_providers[..i]
            .iter()
            .any(|l| l.name == limit.name)
        {
            problems.push(field(&at, "name"), "provider listed twice");
        }
        if limit.limit.is_empty() || limit.limit.len() != limit.window_size.len() {
            problems.push(
                &at,
                "'limit' and 'window_size' must be lists of the same, non-zero length",
            );
        }
        for (j, value) in limit.limit.iter().enumerate() {
            if !(value.is_finite() && *value > 0.0) {
                problems.push(item(&field(&at, "limit"), j), "must be greater than 0");
            }
        }
        for (j, size) in limit.window_size.iter().enumerate() {
            if *size == 0 {
                problems.push(
                    item(&field(&at, "window_size"), j),
                    "must be greater than 0",
                );
            }
        }
    }
    if config.strategy == Strategy::Cluster {
        problems.push(
            field(path, "strategy"),
            "'cluster' keeps counters in Kong's database, which this gateway has not: use 'local' or 'redis'",
        );
    }
    if let Some(rate) = config.sync_rate {
        if !(rate == -1.0 || rate >= 0.0) {
            problems.push(
                field(path, "sync_rate"),
                "must be -1, 0 or a positive number of seconds",
            );
        }
    }
    match config.identifier {
        Identifier::Header if config.header_name.as_deref().is_none_or(str::is_empty) => problems
            .push(
                field(path, "header_name"),
                "required when identifier is 'header'",
            ),
        Identifier::Path if config.path.as_deref().is_none_or(str::is_empty) => {
            problems.push(field(path, "path"), "required when identifier is 'path'")
        }
        Identifier::ConsumerGroup => problems.push(
            field(path, "identifier"),
            "consumer groups are not supported: use 'consumer'",
        ),
        _ => {}
    }
    if !(100..=599).contains(&config.error_code) {
        problems.push(field(path, "error_code"), "must be between 100 and 599");
    }
    for (name, set) in [
        (
            "request_prompt_count_function",
            config.request_prompt_count_function.is_some(),
        ),
        (
            "custom_cost_count_function",
            config.custom_cost_count_function.is_some(),
        ),
    ] {
        if set {
            problems.push(field(path, name), "Lua functions are not supported");
        }
    }
    let redis_path = field(path, "redis");
    match (&config.redis, config.strategy) {
        (None, Strategy::Redis) => problems.push(
            field(&redis_path, "host"),
            "required when strategy is 'redis'",
        ),
        (Some(redis), Strategy::Redis) if redis.host.as_deref().is_none_or(str::is_empty) => {
            problems.push(
                field(&redis_path, "host"),
                "required when strategy is 'redis'",
            )
        }
        _ => {}
    }
    if let Some(redis) = &config.redis {
        for (name, set) in [
            ("sentinel_master", redis.sentinel_master.is_some()),
            ("sentinel_nodes", redis.sentinel_nodes.is_some()),
            ("cluster_nodes", redis.cluster_nodes.is_some()),
            ("cloud_authentication", redis.cloud_authentication.is_some()),
        ] {
            if set {
                problems.push(
                    field(&redis_path, name),
                    "only a single Redis server (host, port) is supported",
                );
            }
        }
        if redis.timeout == 0 {
            problems.push(field(&redis_path, "timeout"), "must be greater than 0");
        }
        // The redis client names the server it dials: SNI and the verified name are `host`.
        if let Some(name) = &redis.server_name {
            if Some(name.as_str()) != redis.host.as_deref() {
                problems.push(
                    field(&redis_path, "server_name"),
                    "must equal 'host' (the TLS name sent and verified is the host's): set 'host' to this name",
                );
            }
        }
    }
}
