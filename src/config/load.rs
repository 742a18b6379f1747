//! Loading a decK file into the gateway's resolved, immutable route table.
//!
//! Two phases (STYLE.md): the text is parsed into raw entities (`deck.rs`, `ai_proxy.rs`), then
//! checked (`validate.rs`) and resolved: references between entities, plugin precedence (route >
//! service > global) and service defaults. Every phase records problems with their field path
//! and carries on, so a user sees every mistake in one run. Only a clean file yields a
//! [`GatewayConfig`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::ai_proxy::AiProxyConfig;
use crate::config::ai_proxy_advanced::{AiProxyAdvancedConfig, BalancerConfig, TargetConfig};
use crate::config::deck::{
    DeckPlugin, DeckRoute, DeckService, EntityRef, AI_PROXY, AI_PROXY_ADVANCED, AI_RATE_LIMITING,
    CONSUMER_GROUPS, FORMAT_VERSIONS, IGNORED_TOP_LEVEL_KEYS, KEY_AUTH, PROMETHEUS,
};
use crate::config::key_auth::{DeckConsumer, KeyAuthConfig};
use crate::config::problem::{field, item, kind, ConfigProblem, Problems};
use crate::config::prometheus::PrometheusConfig;
use crate::config::rate_limit::RateLimitConfig;
use crate::config::{env_subst, key_auth, rate_limit, validate};

mod resolve;
#[cfg(test)]
mod tests;

use resolve::{consumer_spec, resolve};

/// Kong's service defaults.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_RETRIES: u64 = 5;

/// The validated, resolved gateway config: one entry per route, in file order (routes nested
/// in services first, in service order, then top-level `routes`). Routes of disabled services
/// are left out, as Kong answers 404 for them.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub routes: Vec<RouteSpec>,
    /// The `consumers` section, in file order; routes refer to them by index.
    pub consumers: Vec<ConsumerSpec>,
}

/// A consumer and its key-auth keys.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub username: Option<String>,
    pub custom_id: Option<String>,
    pub id: Option<String>,
    pub keys: Vec<String>,
}

/// An `ai-rate-limiting-advanced` plugin that applies to a route, with its field path (the
/// default counter namespace, so a reload that keeps the plugin keeps its counters).
#[derive(Debug, Clone)]
pub struct RateLimitSpec {
    pub config: Arc<RateLimitConfig>,
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// The route's name, else its id, else its field path like `services[0].routes[1]`.
    pub name: String,
    /// As written: `/openai`, `~/models/(?<model>[^/]+)$`.
    pub paths: Vec<String>,
    /// Upper-case; empty matches any method.
    pub methods: Vec<String>,
    /// Empty matches any host; may hold wildcards such as `*.example.com`.
    pub hosts: Vec<String>,
    /// Header name (lower-case) -> accepted values; every listed header must match one value.
    pub headers: Vec<(String, Vec<String>)>,
    /// Kong's default is true.
    pub strip_path: bool,
    pub service: Option<ServiceSpec>,
    /// The ai-proxy or ai-proxy-advanced plugin that applies (route > service > global), if any.
    pub plugin: Option<Arc<AiPlugin>>,
    /// Field path of that plugin, e.g. `services[0].routes[0].plugins[0]` or `plugins[2]`, for logs.
    pub plugin_path: Option<String>,
    /// The prometheus plugin that applies (route > service > global), if any.
    pub prometheus: Option<PrometheusConfig>,
    /// The key-auth plugin that applies (route > service > global), if any.
    pub key_auth: Option<Arc<KeyAuthConfig>>,
    /// The rate-limiting plugin for requests without a consumer-scoped one.
    pub rate_limit: Option<RateLimitSpec>,
    /// Consumer-scoped rate-limiting plugins (index into `GatewayConfig::consumers`), which win
    /// over `rate_limit` for that consumer's requests.
    pub consumer_rate_limits: Vec<(usize, RateLimitSpec)>,
}

/// The AI plugin serving a route: `ai-proxy` is one target without a balancer.
#[derive(Debug)]
pub struct AiPlugin {
    pub targets: Vec<AiTarget>,
    /// `None` for `ai-proxy`: one target, no retries.
    pub balancer: Option<BalancerConfig>,
}

#[derive(Debug)]
pub struct AiTarget {
    pub config: Arc<AiProxyConfig>,
    pub weight: u32,
}

impl AiPlugin {
    /// The `ai-proxy` config (the first target's, for `ai-proxy-advanced`).
    pub fn first(&self) -> &Arc<AiProxyConfig> {
        &self.targets[0].config
    }

    pub fn single(config: Arc<AiProxyConfig>) -> AiPlugin {
        AiPlugin {
            targets: vec![AiTarget { config, weight: 1 }],
            balancer: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// The service's name, else its id, else its field path like `services[0]`.
    pub name: String,
    /// `scheme://host:port[/path]`, from `url` or `protocol`/`host`/`port`/`path`; a missing
    /// port takes the scheme's default (80 or 443).
    pub url: Option<String>,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub retries: u64,
}

/// Parses (YAML or JSON; JSON is YAML), substitutes `${{ env "DECK_X" }}`, validates and
/// resolves plugin precedence. Returns every problem found, not just the first.
pub fn load_deck(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GatewayConfig, Vec<ConfigProblem>> {
    let mut document = parse_yaml(text).map_err(|problem| vec![problem])?;
    let top = match &mut document {
        Value::Object(top) => top,
        Value::Null => {
            return Err(vec![ConfigProblem::new(
                "",
                "the file is empty: expected a decK mapping with `_format_version` and `services`",
            )])
        }
        _ => {
            return Err(vec![ConfigProblem::new(
                "",
                "expected a mapping at the top level of the decK file",
            )])
        }
    };
    let mut problems = Problems::default();
    check_top_level(top, env, &mut problems);
    let tree = read_tree(top, &mut problems);
    let routes = resolve(&tree, &mut problems);
    if problems.list.is_empty() {
        let consumers = tree.consumers.iter().map(consumer_spec).collect();
        Ok(GatewayConfig { routes, consumers })
    } else {
        Err(problems.list)
    }
}

/// Same as [`load_deck`], reading the file; an unreadable file is one problem naming the path.
pub fn load_deck_file(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GatewayConfig, Vec<ConfigProblem>> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        vec![ConfigProblem::new(
            "",
            format!("cannot read {}: {err}", path.display()),
        )]
    })?;
    load_deck(&text, env)
}

/// The process environment as a lookup for [`load_deck`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// YAML is a superset of JSON, so one parser reads both. Anchors, aliases and `<<` merge keys
/// are resolved; duplicate keys are an error, as in decK.
fn parse_yaml(text: &str) -> Result<Value, ConfigProblem> {
    let invalid = |err: serde_norway::Error| {
        let mut message = format!("invalid YAML: {err}");
        if let Some(at) = err.location().filter(|_| !message.contains(" line ")) {
            message.push_str(&format!(" at line {} column {}", at.line(), at.column()));
        }
        ConfigProblem::new("", message)
    };
    let mut yaml: serde_norway::Value = serde_norway::from_str(text).map_err(invalid)?;
    yaml.apply_merge().map_err(invalid)?;
    serde_json::to_value(yaml)
        .map_err(|err| ConfigProblem::new("", format!("unsupported YAML content: {err}")))
}

/// Checks the top-level keys and substitutes environment variables in the sections the gateway
/// reads. Ignored sections are not substituted: a variable they need is not our business.
fn check_top_level(
    top: &mut Map<String, Value>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) {
    for (key, value) in top.iter_mut() {
        match key.as_str() {
            "_format_version" => {
                let version = match value {
                    Value::String(s) => Some(s.clone()),
                    // `_format_version: 3.0` unquoted is a YAML number; decK reads it as text.
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                };
                if !version.is_some_and(|v| FORMAT_VERSIONS.contains(&v.as_str())) {
                    problems.push(key.as_str(), "expected one of: 3.0, 2.1, 1.1");
                }
            }
            // decK metadata: `_info`, `_konnect`, `_transform`, `_workspace`, `_plugin_configs`...
            k if k.starts_with('_') => {}
            "services" | "routes" | "plugins" | "consumers" => {
                let substituted = env_subst::substitute(value, env, key, &mut problems.list);
                problems.from_env.extend(substituted);
            }
            CONSUMER_GROUPS => report_consumer_group_plugins(value, problems),
            k if IGNORED_TOP_LEVEL_KEYS.contains(&k) => {}
            k => problems.push(
                k,
                "unknown top-level key: expected `services`, `routes`, `plugins` or another decK section",
            ),
        }
    }
}

const CONSUMER_GROUP_PLUGIN: &str = "plugins scoped to a consumer group are not supported";

fn report_consumer_group_plugins(value: &Value, problems: &mut Problems) {
    let Some(entries) = value.as_array() else {
        return;
    };
    for (i, entry) in entries.iter().enumerate() {
        if entry
            .get("plugins")
            .and_then(Value::as_array)
            .is_some_and(|plugins| !plugins.is_empty())
        {
            problems.push(
                field(&item(CONSUMER_GROUPS, i), "plugins"),
                CONSUMER_GROUP_PLUGIN,
            );
        }
    }
}

/// The entities that parsed, each with its field path.
struct Tree {
    services: Vec<ServiceNode>,
    routes: Vec<RouteNode>,
    plugins: Vec<PluginNode>,
    consumers: Vec<ConsumerNode>,
}

struct ConsumerNode {
    path: String,
    consumer: DeckConsumer,
    plugins: Vec<PluginNode>,
}

struct ServiceNode {
    path: String,
    service: DeckService,
    /// Normalised URL, when the service names a host.
    url: Option<String>,
    routes: Vec<RouteNode>,
    plugins: Vec<PluginNode>,
}

struct RouteNode {
    path: String,
    route: DeckRoute,
    plugins: Vec<PluginNode>,
}

struct PluginNode {
    path: String,
    plugin: DeckPlugin,
    /// The parsed and checked config of a valid plugin the gateway runs.
    config: Option<PluginConfig>,
}

enum PluginConfig {
    Ai(Arc<AiPlugin>),
    Prometheus(PrometheusConfig),
    KeyAuth(Arc<KeyAuthConfig>),
    RateLimit(Arc<RateLimitConfig>),
}

/// The plugin kinds of which one instance applies per request (the most specific scope wins).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Ai,
    Prometheus,
    KeyAuth,
    RateLimit,
}

fn kind_of(name: &str) -> Option<Kind> {
    match name {
        AI_PROXY | AI_PROXY_ADVANCED => Some(Kind::Ai),
        PROMETHEUS => Some(Kind::Prometheus),
        KEY_AUTH => Some(Kind::KeyAuth),
        AI_RATE_LIMITING => Some(Kind::RateLimit),
        _ => None,
    }
}

fn list<'a>(value: Option<&'a Value>, path: &str, problems: &mut Problems) -> &'a [Value] {
    match value {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) => items,
        Some(other) => {
            problems.push(
                path,
                format!("invalid type: {}, expected a list", kind(other)),
            );
            &[]
        }
    }
}

fn read_tree(top: &Map<String, Value>, problems: &mut Problems) -> Tree {
    let services = list(top.get("services"), "services", problems)
        .iter()
        .enumerate()
        .filter_map(|(i, raw)| read_service(raw, &item("services", i), problems))
        .collect();
    let routes = read_routes(
        list(top.get("routes"), "routes", problems),
        "routes",
        problems,
    );
    let plugins = read_plugins(
        list(top.get("plugins"), "plugins", problems),
        "plugins",
        problems,
    );
    let consumers = list(top.get("consumers"), "consumers", problems)
        .iter()
        .enumerate()
        .filter_map(|(i, raw)| read_consumer(raw, &item("consumers", i), problems))
        .collect();
    Tree {
        services,
        routes,
        plugins,
        consumers,
    }
}

fn read_consumer(raw: &Value, path: &str, problems: &mut Problems) -> Option<ConsumerNode> {
    let consumer: DeckConsumer = problems.parse_at(raw, path)?;
    key_auth::check_consumer(&consumer, path, problems);
    let plugins_path = field(path, "plugins");
    let plugins = read_plugins(&consumer.plugins, &plugins_path, problems);
    for node in &plugins {
        if node.plugin.consumer.is_some() {
            problems.push(
                field(&node.path, "consumer"),
                "a nested plugin is scoped by the entity it is nested in: remove this reference",
            );
        }
    }
    Some(ConsumerNode {
        path: path.to_string(),
        consumer,
        plugins,
    })
}

fn read_service(raw: &Value, path: &str, problems: &mut Problems) -> Option<ServiceNode> {
    let service: DeckService = problems.parse_at(raw, path)?;
    let url = validate::check_service(&service, path, problems);
    let routes = read_routes(&service.routes, &field(path, "routes"), problems);
    let plugins = read_plugins(&service.plugins, &field(path, "plugins"), problems);
    Some(ServiceNode {
        path: path.to_string(),
        service,
        url,
        routes,
        plugins,
    })
}

fn read_routes(raw: &[Value], base: &str, problems: &mut Problems) -> Vec<RouteNode> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, raw)| {
            let path = item(base, i);
            let route: DeckRoute = problems.parse_at(raw, &path)?;
            validate::check_route(&route, &path, problems);
            let plugins = read_plugins(&route.plugins, &field(&path, "plugins"), problems);
            Some(RouteNode {
                path,
                route,
                plugins,
            })
        })
        .collect()
}

fn read_plugins(raw: &[Value], base: &str, problems: &mut Problems) -> Vec<PluginNode> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, raw)| {
            let path = item(base, i);
            let plugin: DeckPlugin = problems.parse_at(raw, &path)?;
            let consumer_nested = base.starts_with("consumers[");
            let config = read_plugin_config(&plugin, &path, consumer_nested, problems);
            Some(PluginNode {
                path,
                plugin,
                config,
            })
        })
        .collect()
}

fn read_plugin_config(
    plugin: &DeckPlugin,
    path: &str,
    consumer_nested: bool,
    problems: &mut Problems,
) -> Option<PluginConfig> {
    if plugin.consumer_group.is_some() {
        problems.push(field(path, "consumer_group"), CONSUMER_GROUP_PLUGIN);
    }
    let Some(kind) = kind_of(&plugin.name) else {
        problems.push(
            field(path, "name"),
            format!(
                "unknown plugin '{}' (supported: '{AI_PROXY}', '{AI_PROXY_ADVANCED}', '{PROMETHEUS}', '{KEY_AUTH}', '{AI_RATE_LIMITING}')",
                plugin.name
            ),
        );
        return None;
    };
    // Kong's key-auth cannot be scoped to a consumer (it finds the consumer); the other
    // plugins here serve a route whoever calls it. Token limits per consumer are the point.
    if kind != Kind::RateLimit && (consumer_nested || plugin.consumer.is_some()) {
        let at = if consumer_nested {
            path.to_string()
        } else {
            field(path, "consumer")
        };
        problems.push(
            at,
            format!(
                "the '{}' plugin cannot be scoped to a consumer",
                plugin.name
            ),
        );
    }
    let config_path = field(path, "config");
    if kind == Kind::KeyAuth || kind == Kind::RateLimit {
        return read_access_plugin(plugin, kind, &config_path, problems);
    }
    if plugin.name == PROMETHEUS {
        return match plugin.config.as_ref() {
            None => Some(PluginConfig::Prometheus(PrometheusConfig::default())),
            Some(raw) => problems
                .parse_at(raw, &config_path)
                .map(PluginConfig::Prometheus),
        };
    }
    let Some(raw) = plugin.config.as_ref() else {
        problems.push(&config_path, "required field missing");
        return None;
    };
    let ai = if plugin.name == AI_PROXY_ADVANCED {
        read_advanced(raw, &config_path, problems)?
    } else {
        AiPlugin::single(read_ai_proxy(raw, &config_path, problems)?)
    };
    Some(PluginConfig::Ai(Arc::new(ai)))
}

/// key-auth (usually written without a config block: every field has a default) and
/// ai-rate-limiting-advanced.
fn read_access_plugin(
    plugin: &DeckPlugin,
    kind: Kind,
    path: &str,
    problems: &mut Problems,
) -> Option<PluginConfig> {
    let empty = Value::Object(Map::new());
    let raw = match (plugin.config.as_ref(), kind) {
        (Some(raw), _) => raw,
        (None, Kind::KeyAuth) => &empty,
        (None, _) => {
            problems.push(path, "required field missing");
            return None;
        }
    };
    let before = problems.list.len();
    let config = if kind == Kind::KeyAuth {
        let config: KeyAuthConfig = problems.parse_at(raw, path)?;
        key_auth::check(&config, path, problems);
        PluginConfig::KeyAuth(Arc::new(config))
    } else {
        let config: RateLimitConfig = problems.parse_at(raw, path)?;
        rate_limit::check(&config, path, problems);
        PluginConfig::RateLimit(Arc::new(config))
    };
    (problems.list.len() == before).then_some(config)
}

fn read_ai_proxy(raw: &Value, path: &str, problems: &mut Problems) -> Option<Arc<AiProxyConfig>> {
    if !validate::check_config_shape(raw, path, problems) {
        return None;
    }
    let mut config: AiProxyConfig = problems.parse_at(raw, path)?;
    config.body_size_configured = raw.get("max_request_body_size").is_some();
    if config.route_type == crate::config::ai_proxy::RouteType::Preserve {
        tracing::warn!(
            plugin = %path,
            "route_type 'preserve' is deprecated (Kong 3.10): use llm_format or a dedicated route_type"
        );
    }
    let before = problems.list.len();
    validate::check_ai_proxy(&config, path, problems);
    (problems.list.len() == before).then(|| Arc::new(config))
}

/// An `ai-proxy-advanced` config: the plugin-wide fields, then each target checked as the
/// ai-proxy config it stands for, at its own path (`config.targets[1].model...`).
fn read_advanced(raw: &Value, path: &str, problems: &mut Problems) -> Option<AiPlugin> {
    let config: AiProxyAdvancedConfig = problems.parse_at(raw, path)?;
    let before = problems.list.len();
    validate::check_advanced(&config, path, problems);
    let targets_path = field(path, "targets");
    let mut targets = Vec::with_capacity(config.targets.len());
    for (i, raw_target) in config.targets.iter().enumerate() {
        let target_path = item(&targets_path, i);
        if !validate::check_config_shape(raw_target, &target_path, problems) {
            continue;
        }
        let Some(target) = problems.parse_at::<TargetConfig>(raw_target, &target_path) else {
            continue;
        };
        let ai_proxy = target.as_ai_proxy(&config);
        validate::check_target(&target, &ai_proxy, &config, &target_path, problems);
        if let Some(first) = targets.first().map(|t: &AiTarget| t.config.route_type) {
            if first != ai_proxy.route_type {
                problems.push(
                    field(&target_path, "route_type"),
                    "every target of one route must have the same route_type: a client request \
                     must suit whichever target serves it",
                );
            }
        }
        targets.push(AiTarget {
            config: Arc::new(ai_proxy),
            weight: target.weight,
        });
    }
    (problems.list.len() == before).then_some(AiPlugin {
        targets,
        balancer: Some(config.balancer),
    })
}
