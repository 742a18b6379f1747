//! Semantic checks on entities that parsed: Kong's ranges, formats and cross-field rules.
//!
//! Every check records its problem and goes on, so one run reports everything wrong with a
//! file. Messages about the ai-proxy plugin are Kong's own (`kong/plugins/ai-proxy/schema.lua`,
//! `kong/llm/schemas/init.lua`) where Kong has one. Entity-level rules are reported at the
//! plugin's `config`, field rules at the field. No message echoes a configured value: values
//! may be credentials or come from the environment.

use serde_json::Value;
use url::Url;

use crate::config::ai_proxy::{AiProxyConfig, LlmFormat, ProviderName, RouteType};
use crate::config::ai_proxy_advanced::{
    AiProxyAdvancedConfig, Algorithm, TargetConfig, TokensCountStrategy,
};
use crate::config::deck::{DeckRoute, DeckService};
use crate::config::problem::{field, item, Problems};
use crate::providers::{Driver, DriverError};

/// Kong's service timeouts are integers between 1 and 2^31 - 2 milliseconds.
const MAX_TIMEOUT_MS: u64 = 2_147_483_646;
const MAX_RETRIES: u64 = 32_767;
const REDIRECT_CODES: [u16; 5] = [426, 301, 302, 307, 308];
/// The `genai_category` values Kong's schema accepts (3.11 - 3.13).
const GENAI_CATEGORIES: [&str; 6] = [
    "text/generation",
    "text/embeddings",
    "audio/speech",
    "audio/transcription",
    "image/generation",
    "video/generation",
];

/// A Kong `$(source.key)` template (resolved per request, spec section 3.2): its value cannot be
/// checked at load time.
fn is_template(value: &str) -> bool {
    value.contains("$(")
}

fn is_absolute_http_url(value: &str) -> bool {
    Url::parse(value)
        .map(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
        .unwrap_or(false)
}

fn is_ws_url(value: &str) -> bool {
    Url::parse(value)
        .map(|url| matches!(url.scheme(), "ws" | "wss") && url.host_str().is_some())
        .unwrap_or(false)
}

/// Checks the raw `config` of an ai-proxy plugin before it is deserialised. Kong's strings are
/// non-empty unless a schema says otherwise, and no ai-proxy field is a list; serde would read a
/// list into a record positionally, so lists are refused here. Returns false when the config
/// must not be deserialised.
pub(crate) fn check_config_shape(raw: &Value, path: &str, problems: &mut Problems) -> bool {
    match raw {
        Value::String(s) if s.is_empty() => {
            problems.push(path, "length must be at least 1");
            true
        }
        Value::Array(_) => {
            problems.push(path, "invalid type: list, no ai-proxy field takes a list");
            false
        }
        Value::Object(map) => map.iter().fold(true, |ok, (key, child)| {
            check_config_shape(child, &field(path, key), problems) && ok
        }),
        _ => true,
    }
}

/// The cross-field and range rules of Kong's ai-proxy schema (kong-ai-proxy.md section 1.6).
/// `path` is the plugin's `config`.
pub(crate) fn check_ai_proxy(config: &AiProxyConfig, path: &str, problems: &mut Problems) {
    let provider = config.model.provider;
    let options = config.model.options.as_ref();
    let model_path = field(path, "model");
    let options_path = field(&model_path, "options");

    if let Some(auth) = &config.auth {
        let auth_path = field(path, "auth");
        if matches!(provider, ProviderName::Bedrock | ProviderName::Gemini) && auth.allow_override {
            problems.push(
                field(&auth_path, "allow_override"),
                "bedrock and gemini only support auth.allow_override = false",
            );
        }
        all_or_none(
            &[
                ("auth.header_name", auth.header_name.is_some()),
                ("auth.header_value", auth.header_value.is_some()),
            ],
            path,
            problems,
        );
        all_or_none(
            &[
                ("auth.param_name", auth.param_name.is_some()),
                ("auth.param_value", auth.param_value.is_some()),
                ("auth.param_location", auth.param_location.is_some()),
            ],
            path,
            problems,
        );
    }

    // The provider's own required options, at their field paths.
    if let Err(DriverError::Missing(missing)) = Driver::from_config(config) {
        for m in missing {
            problems.push(field(&options_path, m.option), m.to_string());
        }
    }

    if provider == ProviderName::Anthropic
        && config.route_type == RouteType::Completions
        && config.logging.log_statistics
    {
        problems.push(
            path,
            "anthropic does not support statistics when route_type is llm/v1/completions",
        );
    }

    if !provider.serves(config.route_type) {
        problems.push(
            field(path, "route_type"),
            format!(
                "provider '{}' does not support route_type '{}'",
                provider.as_str(),
                config.route_type.as_str()
            ),
        );
    }

    check_llm_format(config, path, problems);

    if let Some(category) = &config.genai_category {
        if !GENAI_CATEGORIES.contains(&category.as_str()) {
            problems.push(
                field(path, "genai_category"),
                format!("expected one of: {}", GENAI_CATEGORIES.join(", ")),
            );
        }
    }

    let Some(options) = options else {
        return;
    };
    let mut in_range = |value: Option<f64>, name: &str, low: f64, high: f64, message: &str| {
        if value.is_some_and(|v| !(low..=high).contains(&v)) {
            problems.push(field(&options_path, name), message);
        }
    };
    in_range(
        options.temperature,
        "temperature",
        0.0,
        5.0,
        "must be between 0 and 5",
    );
    in_range(options.top_p, "top_p", 0.0, 1.0, "must be between 0 and 1");
    in_range(
        options.top_k.map(|k| k as f64),
        "top_k",
        0.0,
        500.0,
        "must be between 0 and 500",
    );
    for (name, cost) in [
        ("input_cost", options.input_cost),
        ("output_cost", options.output_cost),
    ] {
        if cost.is_some_and(|c| c <= 0.0) {
            problems.push(field(&options_path, name), "must be greater than 0");
        }
    }
    if let Some(url) = &options.upstream_url {
        let realtime = config.route_type == RouteType::Realtime;
        if !(is_template(url) || is_absolute_http_url(url) || (realtime && is_ws_url(url))) {
            problems.push(
                field(&options_path, "upstream_url"),
                if realtime {
                    "must be an absolute http(s) or ws(s) URL"
                } else {
                    "must be an absolute http(s) URL"
                },
            );
        }
    }
    if let Some(gemini) = &options.gemini {
        all_or_none(
            &[
                (
                    "model.options.gemini.api_endpoint",
                    gemini.api_endpoint.is_some(),
                ),
                (
                    "model.options.gemini.project_id",
                    gemini.project_id.is_some(),
                ),
                (
                    "model.options.gemini.location_id",
                    gemini.location_id.is_some(),
                ),
            ],
            path,
            problems,
        );
    }
}

/// Kong's rule for fields that only mean something together, with Kong's text.
fn all_or_none(fields: &[(&str, bool)], path: &str, problems: &mut Problems) {
    if fields.iter().any(|(_, set)| *set) && !fields.iter().all(|(_, set)| *set) {
        let names: Vec<String> = fields.iter().map(|(name, _)| format!("'{name}'")).collect();
        problems.push(
            path,
            format!(
                "all or none of these fields must be set: {}",
                names.join(", ")
            ),
        );
    }
}

/// The plugin-wide rules of `ai-proxy-advanced` (Kong 3.13's schema ranges), and what this
/// gateway cannot do. `path` is the plugin's `config`.
pub(crate) fn check_advanced(config: &AiProxyAdvancedConfig, path: &str, problems: &mut Problems) {
    if config.targets.is_empty() {
        problems.push(field(path, "targets"), "length must be at least 1");
    }
    let balancer = field(path, "balancer");
    if config.balancer.algorithm == Algorithm::Semantic {
        problems.push(
            field(&balancer, "algorithm"),
            "the 'semantic' algorithm is not supported by this gateway (it needs an embeddings \
             model and a vector database); choose round-robin, consistent-hashing, \
             least-connections, lowest-latency, lowest-usage or priority",
        );
    }
    if config.balancer.tokens_count_strategy == TokensCountStrategy::LlmAccuracy {
        problems.push(
            field(&balancer, "tokens_count_strategy"),
            "'llm-accuracy' is not supported by this gateway (it needs Kong's ai-llm-as-judge \
             plugin); choose total-tokens, prompt-tokens, completion-tokens or cost",
        );
    }
    if u64::from(config.balancer.retries) > MAX_RETRIES {
        problems.push(
            field(&balancer, "retries"),
            format!("value should be between 0 and {MAX_RETRIES}"),
        );
    }
    if !(10..=65_536).contains(&config.balancer.slots) {
        problems.push(
            field(&balancer, "slots"),
            "value should be between 10 and 65536",
        );
    }
    for (name, value) in [
        ("connect_timeout", config.balancer.connect_timeout),
        ("read_timeout", config.balancer.read_timeout),
        ("write_timeout", config.balancer.write_timeout),
        ("fail_timeout", config.balancer.fail_timeout),
    ] {
        if !(1..=MAX_TIMEOUT_MS).contains(&value) {
            problems.push(
                field(&balancer, name),
                format!("value should be between 1 and {MAX_TIMEOUT_MS}"),
            );
        }
    }
    if actix_web::http::header::HeaderName::from_bytes(config.balancer.hash_on_header.as_bytes())
        .is_err()
    {
        problems.push(
            field(&balancer, "hash_on_header"),
            "must be a valid header name",
        );
    }
}

/// One `ai-proxy-advanced` target: its weight, the ai-proxy rules for the config it stands for,
/// and what the balancer needs of it. `path` is `config.targets[i]`.
pub(crate) fn check_target(
    target: &TargetConfig,
    as_ai_proxy: &AiProxyConfig,
    plugin: &AiProxyAdvancedConfig,
    path: &str,
    problems: &mut Problems,
) {
    if !(1..=65_535).contains(&target.weight) {
        problems.push(field(path, "weight"), "value should be between 1 and 65535");
    }
    check_ai_proxy(as_ai_proxy, path, problems);
    let costs = target
        .model
        .options
        .as_ref()
        .is_some_and(|o| o.input_cost.is_some() && o.output_cost.is_some());
    if plugin.balancer.tokens_count_strategy == TokensCountStrategy::Cost
        && plugin.balancer.algorithm == Algorithm::LowestUsage
        && !costs
    {
        problems.push(
            field(&field(path, "model"), "options"),
            "the 'cost' tokens_count_strategy needs 'model.options.input_cost' and \
             'model.options.output_cost' on every target",
        );
    }
}

/// Native client formats (`llm_format` other than openai) are chat pass-throughs to their own
/// provider (kong-ai-proxy.md 1.6 rules 11-12, genai-routes.md 4.2). Kong 3.13's `anthropic`
/// format translates to any provider, so only the route type rule applies to it.
fn check_llm_format(config: &AiProxyConfig, path: &str, problems: &mut Problems) {
    let native = match config.llm_format {
        LlmFormat::Openai => return,
        LlmFormat::Anthropic => None,
        LlmFormat::Bedrock => Some(ProviderName::Bedrock),
        LlmFormat::Gemini => Some(ProviderName::Gemini),
        LlmFormat::Cohere => Some(ProviderName::Cohere),
        LlmFormat::Huggingface => Some(ProviderName::Huggingface),
    };
    if config.route_type != RouteType::Chat {
        problems.push(
            path,
            "native provider options in llm_format can only be used with the 'llm/v1/chat' route_type",
        );
        problems.push(field(path, "route_type"), "value must be llm/v1/chat");
    }
    if let Some(required) = native.filter(|p| *p != config.model.provider) {
        let name = required.as_str();
        problems.push(
            path,
            format!("native llm_format '{name}' can only be used with the '{name}' model.provider"),
        );
        problems.push(
            field(&field(path, "model"), "provider"),
            format!("value must be {name}"),
        );
    }
}

/// Kong's rules for an http route: something to match on, well-formed paths, methods and hosts,
/// and no stream-routing fields.
pub(crate) fn check_route(route: &DeckRoute, path: &str, problems: &mut Problems) {
    let default_protocols = ["http".to_string(), "https".to_string()];
    let protocols = route.protocols.as_deref().unwrap_or(&default_protocols);
    if protocols.is_empty() {
        problems.push(field(path, "protocols"), "length must be at least 1");
    }
    for (i, protocol) in protocols.iter().enumerate() {
        // `ws`/`wss` are Kong's protocols for realtime routes (WebSocket upgrades over HTTP).
        if !matches!(protocol.as_str(), "http" | "https" | "ws" | "wss") {
            problems.push(
                item(&field(path, "protocols"), i),
                format!("unsupported protocol '{protocol}': routes must use 'http', 'https', 'ws' or 'wss'"),
            );
        }
    }
    let https = protocols.iter().any(|p| p == "https" || p == "wss");

    let has_matcher = !route.paths.is_empty()
        || !route.hosts.is_empty()
        || !route.methods.is_empty()
        || !route.headers.is_empty()
        || (https && !route.snis.is_empty());
    if !has_matcher {
        problems.push(
            path,
            if https {
                "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'"
            } else {
                "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"
            },
        );
    }

    for (i, route_path) in route.paths.iter().enumerate() {
        let at = item(&field(path, "paths"), i);
        match route_path.strip_prefix('~') {
            Some(pattern) if pattern.starts_with('/') => {
                if let Err(err) = regex::Regex::new(pattern) {
                    problems.push(at, format!("invalid regex: {}", regex_reason(&err)));
                }
            }
            None if route_path.starts_with('/') => {}
            _ => problems.push(at, "should start with: / (fixed path) or ~/ (regex path)"),
        }
    }
    for (i, method) in route.methods.iter().enumerate() {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            problems.push(
                item(&field(path, "methods"), i),
                "must be upper-case letters, e.g. 'POST'",
            );
        }
    }
    for (i, host) in route.hosts.iter().enumerate() {
        let at = item(&field(path, "hosts"), i);
        let wildcards = host.matches('*').count();
        if host.is_empty() {
            problems.push(at, "length must be at least 1");
        } else if wildcards > 1 {
            problems.push(at, "invalid wildcard: must have at most one wildcard");
        } else if wildcards == 1 && !(host.starts_with("*.") || host.ends_with(".*")) {
            problems.push(
                at,
                "invalid wildcard: must be placed at leftmost or rightmost label",
            );
        }
    }
    if route
        .headers
        .keys()
        .any(|name| name.eq_ignore_ascii_case("host"))
    {
        problems.push(
            field(path, "headers"),
            "cannot contain 'host' header, which must be specified in the 'hosts' attribute",
        );
    }
    if !route.snis.is_empty() && !https {
        problems.push(
            field(path, "snis"),
            "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls', 'tls_passthrough', or 'wss'",
        );
    }
    for (name, list) in [
        ("sources", &route.sources),
        ("destinations", &route.destinations),
    ] {
        if !list.is_empty() {
            problems.push(
                field(path, name),
                format!("cannot set '{name}' when 'protocols' is 'http' or 'https'"),
            );
        }
    }
    if let Some(code) = route.https_redirect_status_code {
        if !REDIRECT_CODES.contains(&code) {
            problems.push(
                field(path, "https_redirect_status_code"),
                "expected one of: 426, 301, 302, 307, 308",
            );
        }
    }
}

/// The `regex` crate's message spans several lines (pattern, caret, reason); keep the reason,
/// which also keeps the pattern itself out of the message.
fn regex_reason(err: &regex::Error) -> String {
    let text = err.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .unwrap_or("the pattern does not compile")
        .to_string()
}

/// Checks a service's numbers and address and returns its normalised URL,
/// `scheme://host:port[/path]`, or `None` when the service names no host.
pub(crate) fn check_service(
    service: &DeckService,
    path: &str,
    problems: &mut Problems,
) -> Option<String> {
    for (name, value) in [
        ("connect_timeout", service.connect_timeout),
        ("read_timeout", service.read_timeout),
        ("write_timeout", service.write_timeout),
    ] {
        if value.is_some_and(|v| !(1..=MAX_TIMEOUT_MS).contains(&v)) {
            problems.push(
                field(path, name),
                format!("value should be between 1 and {MAX_TIMEOUT_MS}"),
            );
        }
    }
    if service.retries.is_some_and(|r| r > MAX_RETRIES) {
        problems.push(
            field(path, "retries"),
            format!("value should be between 0 and {MAX_RETRIES}"),
        );
    }
    service_url(service, path, problems)
}

fn service_url(service: &DeckService, path: &str, problems: &mut Problems) -> Option<String> {
    let mut scheme = None;
    let mut host = None;
    let mut port = None;
    let mut url_path = None;
    if let Some(raw) = &service.url {
        let at = field(path, "url");
        match Url::parse(raw) {
            Err(_) => problems.push(&at, "must be an absolute URL, e.g. http://host:port/path"),
            Ok(url) => {
                scheme = Some(url.scheme().to_string());
                port = url.port();
                if url.path() != "/" {
                    url_path = Some(url.path().to_string());
                }
                match url.host_str() {
                    Some(h) => host = Some(h.to_string()),
                    None => problems.push(&at, "missing host in url"),
                }
            }
        }
    }
    // As in decK, explicit fields win over the parts of `url`.
    if let Some(protocol) = &service.protocol {
        scheme = Some(protocol.clone());
    }
    if let Some(h) = &service.host {
        // A bare IPv6 address needs brackets in a URL.
        host = Some(if h.contains(':') && !h.starts_with('[') {
            format!("[{h}]")
        } else {
            h.clone()
        });
    }
    if service.port.is_some() {
        port = service.port;
    }
    if let Some(p) = &service.path {
        if p.starts_with('/') {
            url_path = Some(p.clone());
        } else {
            problems.push(field(path, "path"), "should start with: /");
        }
    }
    let scheme = scheme.unwrap_or_else(|| "http".to_string());
    let default_port = match scheme.as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => {
            let at = if service.protocol.is_some() {
                "protocol"
            } else {
                "url"
            };
            problems.push(
                field(path, at),
                format!("unsupported protocol '{scheme}': services must use 'http', 'https', 'ws' or 'wss'"),
            );
            return None;
        }
    };
    let Some(host) = host else {
        if service.url.is_none()
            && (service.protocol.is_some() || service.port.is_some() || service.path.is_some())
        {
            problems.push(field(path, "host"), "required field missing");
        }
        return None;
    };
    Some(format!(
        "{scheme}://{host}:{}{}",
        port.unwrap_or(default_port),
        url_path.unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the shape check, deserialisation and semantic checks on one plugin `config`
    /// written in YAML, as the loader does, and returns the problems as displayed.
    fn check(yaml: &str) -> Vec<String> {
        let raw: Value = serde_norway::from_str(yaml).expect("test YAML parses");
        let mut problems = Problems::default();
        if check_config_shape(&raw, "config", &mut problems) {
            if let Some(config) = problems.parse_at::<AiProxyConfig>(&raw, "config") {
                check_ai_proxy(&config, "config", &mut problems);
            }
        }
        problems.list.iter().map(ToString::to_string).collect()
    }

    fn valid(yaml: &str) {
        let problems = check(yaml);
        assert!(problems.is_empty(), "expected valid, got {problems:#?}");
    }

    const CHAT: &str = "route_type: llm/v1/chat\n";

    #[test]
    fn all_fourteen_route_types_are_accepted_where_the_provider_serves_them() {
        for route_type in RouteType::ALL {
            let rt = route_type.as_str();
            valid(&format!("route_type: {rt}\nmodel: {{provider: openai}}"));
            valid(&format!("route_type: {rt}\nmodel: {{provider: azure, options: {{azure_instance: i, azure_deployment_id: d}}}}"));
        }
        assert_eq!(
            check("route_type: llm/v1/files\nmodel: {provider: anthropic, options: {anthropic_version: '2023-06-01'}}"),
            ["config.route_type: provider 'anthropic' does not support route_type 'llm/v1/files'"]
        );
        assert_eq!(
            check("route_type: audio/v1/audio/speech\nmodel: {provider: cohere}"),
            ["config.route_type: provider 'cohere' does not support route_type 'audio/v1/audio/speech'"]
        );
        // Translated: Responses to chat on every provider, images to gemini's and bedrock's.
        valid("route_type: llm/v1/responses\nmodel: {provider: anthropic, options: {anthropic_version: '2023-06-01'}}");
        valid("route_type: llm/v1/responses\nmodel: {provider: cohere}");
        valid("route_type: image/v1/images/generations\nmodel: {provider: gemini}");
    }

    #[test]
    fn realtime_upstream_urls_may_be_websocket_urls() {
        valid("route_type: realtime/v1/realtime\nmodel: {provider: openai, options: {upstream_url: 'wss://api.example.com/v1/realtime'}}");
        valid("route_type: realtime/v1/realtime\nmodel: {provider: openai, options: {upstream_url: 'http://127.0.0.1:9/v1/realtime'}}");
        assert_eq!(
            check("route_type: llm/v1/files\nmodel: {provider: openai, options: {upstream_url: 'ws://h/v1/files'}}"),
            ["config.model.options.upstream_url: must be an absolute http(s) URL"]
        );
    }

    #[test]
    fn rule_1_bedrock_and_gemini_refuse_allow_override() {
        for provider in ["bedrock", "gemini"] {
            assert_eq!(
                check(&format!("{CHAT}auth: {{allow_override: true}}\nmodel: {{provider: {provider}}}")),
                ["config.auth.allow_override: bedrock and gemini only support auth.allow_override = false"]
            );
            valid(&format!(
                "{CHAT}auth: {{allow_override: false}}\nmodel: {{provider: {provider}}}"
            ));
        }
        valid(&format!("{CHAT}auth: {{header_name: a, header_value: b, allow_override: true}}\nmodel: {{provider: openai}}"));
    }

    #[test]
    fn rule_2_header_auth_is_all_or_none() {
        let message = "config: all or none of these fields must be set: 'auth.header_name', 'auth.header_value'";
        assert_eq!(
            check(&format!(
                "{CHAT}auth: {{header_name: Authorization}}\nmodel: {{provider: openai}}"
            )),
            [message]
        );
        assert_eq!(
            check(&format!(
                "{CHAT}auth: {{header_value: Bearer x}}\nmodel: {{provider: openai}}"
            )),
            [message]
        );
        valid(&format!("{CHAT}auth: {{header_name: Authorization, header_value: Bearer x}}\nmodel: {{provider: openai}}"));
    }

    #[test]
    fn rule_3_param_auth_is_all_or_none_and_combines_with_header_auth() {
        let message = "config: all or none of these fields must be set: 'auth.param_name', 'auth.param_value', 'auth.param_location'";
        assert_eq!(
            check(&format!(
                "{CHAT}auth: {{param_name: key, param_value: v}}\nmodel: {{provider: gemini}}"
            )),
            [message]
        );
        assert_eq!(
            check(&format!(
                "{CHAT}auth: {{param_location: query}}\nmodel: {{provider: gemini}}"
            )),
            [message]
        );
        valid(&format!("{CHAT}auth: {{param_name: key, param_value: v, param_location: body}}\nmodel: {{provider: gemini}}"));
        valid(&format!(
            "{CHAT}auth: {{header_name: a, header_value: b, param_name: key, param_value: v, param_location: query}}\nmodel: {{provider: openai}}"
        ));
    }

    #[test]
    fn rules_4_and_8_llama2_needs_a_format_and_an_upstream_url() {
        assert_eq!(
            check(&format!("{CHAT}model: {{provider: llama2}}")),
            [
                "config.model.options.llama2_format: must set 'model.options.llama2_format' for llama2 provider",
                "config.model.options.upstream_url: must set 'model.options.upstream_url' for self-hosted providers/models",
            ]
        );
        assert_eq!(
            check(&format!("{CHAT}model: {{provider: llama2, options: {{llama2_format: raw}}}}")),
            ["config.model.options.upstream_url: must set 'model.options.upstream_url' for self-hosted providers/models"]
        );
        // Rule 13: self-hosted models need no auth block.
        valid(&format!(
            "{CHAT}model: {{provider: llama2, options: {{llama2_format: ollama, upstream_url: 'http://localhost:11434/api/chat'}}}}"
        ));
    }

    #[test]
    fn rule_5_mistral_needs_a_format_but_no_upstream_url() {
        assert_eq!(
            check(&format!("{CHAT}model: {{provider: mistral}}")),
            ["config.model.options.mistral_format: must set 'model.options.mistral_format' for mistral provider"]
        );
        valid(&format!(
            "{CHAT}model: {{provider: mistral, options: {{mistral_format: ollama}}}}"
        ));
    }

    #[test]
    fn rule_6_anthropic_needs_a_version() {
        assert_eq!(
            check(&format!("{CHAT}model: {{provider: anthropic, name: claude}}")),
            ["config.model.options.anthropic_version: must set 'model.options.anthropic_version' for anthropic provider"]
        );
        valid(&format!(
            "{CHAT}model: {{provider: anthropic, options: {{anthropic_version: '2023-06-01'}}}}"
        ));
    }

    #[test]
    fn rule_7_azure_needs_instance_version_and_deployment() {
        assert_eq!(
            check(&format!("{CHAT}model: {{provider: azure}}")),
            [
                "config.model.options.azure_instance: must set 'model.options.azure_instance' for azure provider",
                "config.model.options.azure_deployment_id: must set 'model.options.azure_deployment_id' for azure provider",
            ]
        );
        assert_eq!(
            check(&format!(
                "{CHAT}model: {{provider: azure, options: {{azure_instance: i, azure_deployment_id: d, azure_api_version: null}}}}"
            )),
            ["config.model.options.azure_api_version: must set 'model.options.azure_api_version' for azure provider"]
        );
        valid(&format!("{CHAT}model: {{provider: azure, options: {{azure_instance: i, azure_deployment_id: d}}}}"));
    }

    #[test]
    fn rule_9_anthropic_completions_cannot_log_statistics() {
        let base = "model: {provider: anthropic, options: {anthropic_version: '2023-06-01'}}";
        assert_eq!(
            check(&format!("route_type: llm/v1/completions\nlogging: {{log_statistics: true}}\n{base}")),
            ["config: anthropic does not support statistics when route_type is llm/v1/completions"]
        );
        valid(&format!("route_type: llm/v1/completions\n{base}"));
        valid(&format!("{CHAT}logging: {{log_statistics: true}}\n{base}"));
    }

    #[test]
    fn rule_10_gemini_vertex_fields_are_all_or_none() {
        assert_eq!(
            check(&format!(
                "{CHAT}model: {{provider: gemini, options: {{gemini: {{api_endpoint: e, location_id: l}}}}}}"
            )),
            ["config: all or none of these fields must be set: 'model.options.gemini.api_endpoint', 'model.options.gemini.project_id', 'model.options.gemini.location_id'"]
        );
        valid(&format!(
            "{CHAT}model: {{provider: gemini, options: {{gemini: {{api_endpoint: e, project_id: p, location_id: l}}}}}}"
        ));
        valid(&format!(
            "{CHAT}model: {{provider: gemini, options: {{gemini: {{}}}}}}"
        ));
    }

    #[test]
    fn rule_11_native_formats_need_the_chat_route_type() {
        assert_eq!(
            check("route_type: llm/v1/completions\nllm_format: gemini\nmodel: {provider: gemini}"),
            [
                "config: native provider options in llm_format can only be used with the 'llm/v1/chat' route_type",
                "config.route_type: value must be llm/v1/chat",
            ]
        );
        valid(&format!(
            "{CHAT}llm_format: gemini\nmodel: {{provider: gemini}}"
        ));
        valid("route_type: llm/v1/completions\nllm_format: openai\nmodel: {provider: gemini}");
    }

    #[test]
    fn rule_12_native_formats_need_their_own_provider() {
        for format in ["bedrock", "gemini", "cohere", "huggingface"] {
            assert_eq!(
                check(&format!("{CHAT}llm_format: {format}\nmodel: {{provider: openai}}")),
                [
                    format!("config: native llm_format '{format}' can only be used with the '{format}' model.provider"),
                    format!("config.model.provider: value must be {format}"),
                ]
            );
            valid(&format!(
                "{CHAT}llm_format: {format}\nmodel: {{provider: {format}}}"
            ));
        }
        // Kong 3.13's anthropic format translates to any provider.
        valid(&format!(
            "{CHAT}llm_format: anthropic\nmodel: {{provider: openai}}"
        ));
    }

    #[test]
    fn rule_14_ranges() {
        let options = |o: &str| {
            check(&format!(
                "{CHAT}model: {{provider: openai, options: {{{o}}}}}"
            ))
        };
        assert_eq!(
            options("temperature: 5.01"),
            ["config.model.options.temperature: must be between 0 and 5"]
        );
        assert_eq!(
            options("temperature: -0.1"),
            ["config.model.options.temperature: must be between 0 and 5"]
        );
        assert_eq!(
            options("top_p: 1.5"),
            ["config.model.options.top_p: must be between 0 and 1"]
        );
        assert_eq!(
            options("top_k: 501"),
            ["config.model.options.top_k: must be between 0 and 500"]
        );
        assert_eq!(
            options("input_cost: 0"),
            ["config.model.options.input_cost: must be greater than 0"]
        );
        assert_eq!(
            options("output_cost: -1"),
            ["config.model.options.output_cost: must be greater than 0"]
        );
        assert!(options("top_k: -1")[0]
            .starts_with("config.model.options.top_k: invalid value: integer `-1`, expected a non-negative integer"));
        valid(&format!(
            "{CHAT}model: {{provider: openai, options: {{temperature: 0, top_p: 1, top_k: 500, input_cost: 0.01, output_cost: 30, max_tokens: 0}}}}"
        ));
        valid(&format!(
            "{CHAT}model: {{provider: openai, options: {{temperature: 5}}}}"
        ));
    }

    #[test]
    fn max_request_body_size_zero_means_unlimited() {
        valid(&format!(
            "{CHAT}max_request_body_size: 0\nmodel: {{provider: openai}}"
        ));
        assert!(check(&format!(
            "{CHAT}max_request_body_size: -5\nmodel: {{provider: openai}}"
        ))[0]
            .starts_with("config.max_request_body_size: invalid value"));
    }

    #[test]
    fn upstream_url_must_be_absolute_http_unless_templated() {
        let url = |u: &str| {
            check(&format!(
                "{CHAT}model: {{provider: openai, options: {{upstream_url: '{u}'}}}}"
            ))
        };
        let message = ["config.model.options.upstream_url: must be an absolute http(s) URL"];
        assert_eq!(url("/v1/chat"), message);
        assert_eq!(url("ftp://example.com/x"), message);
        assert_eq!(url("localhost:8080"), message);
        assert!(url("https://api.example.com/v1/chat/completions").is_empty());
        assert!(url("http://127.0.0.1:18181/openai").is_empty());
        assert!(url("http://$(headers.x-upstream-host)/v1").is_empty());
    }

    #[test]
    fn templates_are_valid_in_model_name_and_options() {
        valid(&format!(
            "{CHAT}model: {{provider: azure, name: '$(uri_captures.model)', options: {{azure_instance: '$(headers.x-instance)', azure_deployment_id: 'dep-$(query_params.d)'}}}}"
        ));
    }

    #[test]
    fn genai_category_must_be_known() {
        valid(&format!(
            "{CHAT}genai_category: text/generation\nmodel: {{provider: openai}}"
        ));
        assert_eq!(
            check(&format!("{CHAT}genai_category: text/poetry\nmodel: {{provider: openai}}")),
            ["config.genai_category: expected one of: text/generation, text/embeddings, audio/speech, audio/transcription, image/generation, video/generation"]
        );
    }

    #[test]
    fn several_rules_are_reported_together() {
        assert_eq!(
            check(
                "route_type: llm/v1/completions
llm_format: bedrock
auth: {header_name: x, allow_override: true, param_value: v}
logging: {log_statistics: true}
model: {provider: gemini, options: {temperature: 9, gemini: {project_id: p}}}"
            )
            .len(),
            9
        );
    }

    #[test]
    fn shape_check_reports_empty_strings_and_lists() {
        let raw: Value = serde_json::json!({"a": "", "b": {"c": ["x"], "d": ""}, "e": 1});
        let mut problems = Problems::default();
        assert!(!check_config_shape(&raw, "config", &mut problems));
        let found: Vec<String> = problems.list.iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "config.a: length must be at least 1",
                "config.b.c: invalid type: list, no ai-proxy field takes a list",
                "config.b.d: length must be at least 1",
            ]
        );
    }
}
