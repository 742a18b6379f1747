use super::*;
use crate::config::ai_proxy::{Llama2Format, ProviderName, RouteType};
use crate::config::env_subst::env_of;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/deck/",
            $name
        ))
    };
}

const OPENAI_KEY: &str = "sk-test-0123456789";

/// Every `DECK_` variable is set to a recognisable fake secret.
fn any_deck_var(name: &str) -> Option<String> {
    name.starts_with("DECK_").then(|| format!("secret-{name}"))
}

fn load(text: &str) -> Result<GatewayConfig, Vec<ConfigProblem>> {
    load_deck(text, &any_deck_var)
}

fn ok(text: &str) -> GatewayConfig {
    load(text).unwrap_or_else(|problems| panic!("expected a valid file, got {problems:#?}"))
}

fn problems(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => panic!("expected problems"),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

fn route<'a>(config: &'a GatewayConfig, name: &str) -> &'a RouteSpec {
    config
        .routes
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no route {name}"))
}

/// The name of the service the route belongs to.
fn service_name<'a>(config: &'a GatewayConfig, route_name: &str) -> Option<&'a str> {
    route(config, route_name)
        .service
        .as_ref()
        .map(|s| s.name.as_str())
}

/// Each named route's plugin comes from this place in the file (`None`: the route has none).
fn assert_plugins_at(config: &GatewayConfig, expected: &[(&str, Option<&str>)]) {
    for &(name, path) in expected {
        assert_eq!(route(config, name).plugin_path.as_deref(), path, "{name}");
    }
}

/// A minimal valid ai-proxy config block, indented for a nested plugin.
const OPENAI_CONFIG: &str = "{route_type: llm/v1/chat, model: {provider: openai}}";

#[test]
fn workshop_seed_loads_verbatim() {
    let env = env_of(&[("DECK_OPENAI_API_KEY", OPENAI_KEY)]);
    let config = load_deck(fixture!("ai-proxy.yaml"), &env).expect("seed file is valid");
    assert_eq!(config.routes.len(), 2);

    let openai = route(&config, "openai-chat");
    assert_eq!(openai.paths, ["/openai"]);
    assert!(openai.methods.is_empty() && openai.hosts.is_empty());
    assert!(openai.strip_path);
    let service = openai
        .service
        .as_ref()
        .expect("nested route has its service");
    assert_eq!(service.name, "ai");
    assert_eq!(service.url.as_deref(), Some("http://localhost:32000"));
    assert_eq!(
        (
            service.connect_timeout_ms,
            service.read_timeout_ms,
            service.write_timeout_ms
        ),
        (60_000, 60_000, 60_000)
    );
    assert_eq!(service.retries, 5);
    assert_eq!(
        openai.plugin_path.as_deref(),
        Some("services[0].routes[0].plugins[0]")
    );
    let plugin = openai
        .plugin
        .as_deref()
        .map(AiPlugin::first)
        .expect("openai route has ai-proxy");
    assert_eq!(plugin.route_type, RouteType::Chat);
    assert_eq!(plugin.model.provider, ProviderName::Openai);
    assert_eq!(plugin.model.name.as_deref(), Some("gpt-4o"));
    let options = plugin.model.options.as_ref().expect("options");
    assert_eq!(options.max_tokens, Some(512));
    assert_eq!(options.temperature, Some(1.0));
    let auth = plugin.auth.as_ref().expect("auth");
    assert_eq!(auth.header_name.as_deref(), Some("Authorization"));
    assert_eq!(
        auth.header_value.as_deref(),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(
        plugin.max_request_body_size,
        crate::config::ai_proxy::DEFAULT_MAX_REQUEST_BODY_SIZE
    );

    let ollama = route(&config, "ollama-chat");
    assert_eq!(ollama.paths, ["/api/chat"]);
    let plugin = ollama
        .plugin
        .as_deref()
        .map(AiPlugin::first)
        .expect("ollama route has ai-proxy");
    assert_eq!(plugin.model.provider, ProviderName::Llama2);
    assert_eq!(plugin.model.name.as_deref(), Some("llama3"));
    assert!(plugin.auth.is_none());
    let options = plugin.model.options.as_ref().expect("options");
    assert_eq!(options.llama2_format, Some(Llama2Format::Ollama));
    assert_eq!(
        options.upstream_url.as_deref(),
        Some("http://localhost:11434/api/chat")
    );
}

#[test]
fn workshop_seed_without_model_lets_clients_choose() {
    let env = env_of(&[("DECK_OPENAI_API_KEY", OPENAI_KEY)]);
    let config = load_deck(fixture!("ai-proxy-no-model.yaml"), &env).expect("valid");
    let plugin = route(&config, "openai-chat")
        .plugin
        .as_deref()
        .map(AiPlugin::first)
        .cloned()
        .expect("plugin");
    assert_eq!(plugin.model.provider, ProviderName::Openai);
    assert_eq!(plugin.model.name, None);
    assert_eq!(
        route(&config, "ollama-chat")
            .plugin
            .as_deref()
            .map(AiPlugin::first)
            .and_then(|p| p.model.name.as_deref()),
        Some("llama3")
    );
}

#[test]
fn workshop_seed_without_its_variable_names_variable_and_field() {
    let problems = load_deck(fixture!("ai-proxy.yaml"), &env_of(&[])).unwrap_err();
    assert_eq!(
        problems,
        vec![ConfigProblem::new(
            "services[0].routes[0].plugins[0].config.auth.header_value",
            "environment variable 'DECK_OPENAI_API_KEY' is not set"
        )]
    );
}

#[test]
fn multi_provider_file_resolves_every_attachment() {
    let config = ok(fixture!("multi-provider.yaml"));
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    // File order: nested routes by service, then top-level routes; the disabled service's
    // route is left out.
    assert_eq!(
        names,
        [
            "openai-chat",
            "openai-embeddings",
            "openai-by-model",
            "azure-chat",
            "anthropic-chat",
            "mistral-chat",
            "llama-completions",
            "gemini-chat",
            "vertex-native",
            "bedrock-chat",
            "hf-chat",
            "cohere-chat",
        ]
    );
    let expected = [
        ("openai-chat", Some("services[0].routes[0].plugins[0]")),
        ("openai-embeddings", Some("services[0].plugins[0]")),
        ("openai-by-model", Some("services[0].routes[2].plugins[0]")),
        ("gemini-chat", Some("plugins[1]")),
        ("vertex-native", Some("plugins[2]")),
        ("bedrock-chat", Some("plugins[0]")),
        ("hf-chat", Some("routes[3].plugins[0]")),
        ("cohere-chat", Some("plugins[3]")),
        ("mistral-chat", Some("services[3].routes[0].plugins[0]")),
    ];
    assert_plugins_at(&config, &expected);

    let chat = route(&config, "openai-chat");
    assert_eq!(chat.methods, ["POST"]);
    assert_eq!(chat.hosts, ["*.example.com", "api.example.com"]);
    assert!(!chat.strip_path);
    let service = chat.service.as_ref().expect("service");
    assert_eq!(
        service.url.as_deref(),
        Some("https://api.openai.com:443/v1")
    );
    assert_eq!(
        (
            service.connect_timeout_ms,
            service.read_timeout_ms,
            service.write_timeout_ms
        ),
        (5_000, 120_000, 60_000)
    );
    assert_eq!(service.retries, 2);
    assert_eq!(
        chat.plugin
            .as_deref()
            .map(AiPlugin::first)
            .and_then(|p| p.auth.as_ref())
            .and_then(|a| a.header_value.as_deref()),
        Some("Bearer secret-DECK_OPENAI_API_KEY")
    );

    let azure = route(&config, "azure-chat").service.as_ref().expect("svc");
    assert_eq!(
        azure.url.as_deref(),
        Some("https://my-instance.openai.azure.com:443/openai")
    );
    assert_eq!(service_name(&config, "vertex-native"), Some("google"));
    assert!(route(&config, "bedrock-chat").service.is_none());
    assert_eq!(
        route(&config, "llama-completions")
            .plugin
            .as_deref()
            .map(AiPlugin::first)
            .map(|p| p.max_request_body_size),
        Some(0),
        "0 means unlimited and is allowed"
    );
}

#[test]
fn many_errors_are_all_reported_at_once() {
    let expected = [
            "_format_version: expected one of: 3.0, 2.1, 1.1",
            "servicess: unknown top-level key",
            "services[0].read_timeout: value should be between 1 and 2147483646",
            "services[0].url: unsupported protocol 'ftp': services must use 'http', 'https', 'ws' or 'wss'",
            "services[0].routes[0].paths[0]: should start with: / (fixed path) or ~/ (regex path)",
            "services[0].routes[0].paths[1]: invalid regex: invalid capture group character",
            "services[0].routes[0].methods[0]: must be upper-case letters, e.g. 'POST'",
            "services[0].routes[0].plugins[0].config: all or none of these fields must be set: 'auth.header_name', 'auth.header_value'",
            "services[0].routes[0].plugins[0].config.model.options.anthropic_version: must set 'model.options.anthropic_version' for anthropic provider",
            "services[0].routes[0].plugins[0].config.model.options.temperature: must be between 0 and 5",
            "services[0].routes[0].plugins[0].config.model.options.top_p: must be between 0 and 1",
            "services[0].routes[0].plugins[0].config.model.options.top_k: must be between 0 and 500",
            "services[0].routes[0].plugins[0].config.model.options.input_cost: must be greater than 0",
            "services[0].routes[0].plugins[1].name: unknown plugin 'rate-limiting'",
            "services[0].routes[1].hosts[0]: invalid wildcard: must have at most one wildcard",
            "services[0].routes[1].plugins[0].config.model.provider: unknown variant `foo`, expected one of `openai`",
            "services[1].protokol: unknown field `protokol`, expected one of `name`",
            "routes[0].plugins[0].config: native provider options in llm_format can only be used with the 'llm/v1/chat' route_type",
            "routes[0].plugins[0].config.route_type: value must be llm/v1/chat",
            "routes[0].plugins[0].config: native llm_format 'bedrock' can only be used with the 'bedrock' model.provider",
            "routes[0].plugins[0].config.model.provider: value must be bedrock",
            "routes[0].plugins[0].config.model.options.upstream_url: must be an absolute http(s) URL",
            "routes[1]: must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'",
            "plugins[1].consumer: the 'ai-proxy' plugin cannot be scoped to a consumer",
            "plugins[1].config.model.options.colour: unknown field `colour`, expected one of `max_tokens`",
            "plugins[2].config.auth.allow_override: bedrock and gemini only support auth.allow_override = false",
            "plugins[2].config: all or none of these fields must be set: 'auth.param_name', 'auth.param_value', 'auth.param_location'",
            "plugins[2].config: all or none of these fields must be set: 'model.options.gemini.api_endpoint', 'model.options.gemini.project_id', 'model.options.gemini.location_id'",
            "routes[0].service: unknown service 'nowhere'",
            "services[0].routes[1].name: route name 'chat' is already used by services[0].routes[0]",
            "plugins[0].route: unknown route 'missing-route'",
            "plugins[1].consumer: unknown consumer 'alice'",
        ];
    let actual = problems(fixture!("many-errors.yaml"));
    assert_eq!(actual.len(), expected.len(), "{actual:#?}");
    for (actual, expected) in actual.iter().zip(expected) {
        assert!(
            actual.starts_with(expected),
            "{actual:?} should start with {expected:?}"
        );
    }
}

#[test]
fn json_is_accepted() {
    let config = ok(
        r#"{"_format_version": "3.0", "services": [{"name": "s", "url": "http://h",
            "routes": [{"name": "r", "paths": ["/x"], "plugins": [{"name": "ai-proxy",
            "config": {"route_type": "llm/v1/chat", "model": {"provider": "openai"}}}]}]}]}"#,
    );
    assert_eq!(
        route(&config, "r")
            .service
            .as_ref()
            .and_then(|s| s.url.as_deref()),
        Some("http://h:80")
    );
}

#[test]
fn route_plugin_beats_service_plugin_beats_global() {
    let config = ok(&format!(
        "_format_version: '3.0'
services:
  - name: s
    url: http://h
    plugins: [{{name: ai-proxy, config: {OPENAI_CONFIG}}}]
    routes:
      - {{name: on-route, paths: [/a], plugins: [{{name: ai-proxy, config: {OPENAI_CONFIG}}}]}}
      - {{name: on-service, paths: [/b]}}
      - name: disabled-on-route
        paths: [/c]
        plugins: [{{name: ai-proxy, enabled: false, config: {OPENAI_CONFIG}}}]
routes:
  - {{name: global-only, paths: [/d]}}
plugins:
  - {{name: ai-proxy, config: {OPENAI_CONFIG}}}
"
    ));
    assert_plugins_at(
        &config,
        &[
            ("on-route", Some("services[0].routes[0].plugins[0]")),
            ("on-service", Some("services[0].plugins[0]")),
            // A disabled route plugin does not shadow the service's.
            ("disabled-on-route", Some("services[0].plugins[0]")),
            ("global-only", Some("plugins[0]")),
        ],
    );
}

#[test]
fn top_level_plugins_attach_by_name_or_id_and_win_by_scope() {
    let config = ok(&format!(
        "_format_version: '3.0'
services:
  - {{name: s, id: 7f3c, url: http://h}}
routes:
  - {{name: r1, service: s, paths: [/a]}}
  - {{id: r2-id, service: {{id: 7f3c}}, paths: [/b]}}
  - {{name: r3, paths: [/c]}}
plugins:
  - {{name: ai-proxy, route: r1, config: {OPENAI_CONFIG}}}
  - {{name: ai-proxy, service: 7f3c, config: {OPENAI_CONFIG}}}
  - {{name: ai-proxy, route: {{id: r2-id}}, service: {{name: s}}, config: {OPENAI_CONFIG}}}
"
    ));
    assert_plugins_at(
        &config,
        &[
            ("r1", Some("plugins[0]")),
            ("r2-id", Some("plugins[2]")),
            // No global plugin, no service.
            ("r3", None),
        ],
    );
    assert_eq!(service_name(&config, "r2-id"), Some("s"));
    assert!(route(&config, "r3").plugin.is_none());
}

#[test]
fn a_service_plugin_applies_to_its_top_level_routes() {
    let config = ok(&format!(
        "services:
  - name: s
    url: http://h
    plugins: [{{name: ai-proxy, config: {OPENAI_CONFIG}}}]
routes:
  - {{name: r, service: s, paths: [/a]}}
"
    ));
    assert_plugins_at(&config, &[("r", Some("services[0].plugins[0]"))]);
}

#[test]
fn bad_references_are_problems() {
    let found = problems(&format!(
        "services:
  - name: s
    url: http://h
    routes:
      - {{name: nested, service: other, paths: [/n]}}
  - {{name: other, url: http://o}}
routes:
  - {{name: r, service: {{name: ghost}}, paths: [/a]}}
  - {{name: bad-ref, service: [1], paths: [/b]}}
plugins:
  - {{name: ai-proxy, service: ghost, config: {OPENAI_CONFIG}}}
  - {{name: ai-proxy, route: ghost, config: {OPENAI_CONFIG}}}
  - {{name: ai-proxy, route: r, service: s, config: {OPENAI_CONFIG}}}
"
    ));
    assert_eq!(
            found,
            [
                "routes[1].service: expected a name or id, or a mapping with `name` or `id`",
                "services[0].routes[0].service: a route nested under a service belongs to that service: remove 'service'",
                "routes[0].service: unknown service 'ghost'",
                "plugins[0].service: unknown service 'ghost'",
                "plugins[1].route: unknown route 'ghost'",
                "plugins[2].route: the route does not belong to the plugin's service",
            ]
        );
}

#[test]
fn duplicate_plugins_at_one_scope_are_problems() {
    let found = problems(&format!(
        "services:
  - name: s
    url: http://h
    plugins:
      - {{name: ai-proxy, config: {OPENAI_CONFIG}}}
      - {{name: ai-proxy, enabled: false, config: {OPENAI_CONFIG}}}
    routes:
      - name: r
        paths: [/a]
        plugins: [{{name: ai-proxy, config: {OPENAI_CONFIG}}}]
plugins:
  - {{name: ai-proxy, route: r, config: {OPENAI_CONFIG}}}
  - {{name: ai-proxy, service: s, config: {OPENAI_CONFIG}}}
"
    ));
    assert_eq!(
            found,
            [
                "services[0].plugins[1]: duplicate 'ai-proxy' plugin on services[0]: already configured at services[0].plugins[0]",
                "plugins[0]: duplicate 'ai-proxy' plugin on services[0].routes[0]: already configured at services[0].routes[0].plugins[0]",
                "plugins[1]: duplicate 'ai-proxy' plugin on services[0]: already configured at services[0].plugins[0]",
            ]
        );
}

#[test]
fn unknown_and_consumer_scoped_plugins_are_problems() {
    let found = problems(&format!(
        "routes:
  - name: r
    paths: [/a]
    plugins:
      - {{name: rate-limiting, enabled: false}}
      - {{name: ai-proxy, consumer: {{id: c1}}, config: {OPENAI_CONFIG}}}
      - {{name: ai-proxy, route: r, config: {OPENAI_CONFIG}}}
consumers:
  - username: alice
    plugins: [{{name: ai-proxy, config: {OPENAI_CONFIG}}}, {{name: key-auth}}]
  - username: bob
consumer_groups:
  - name: g
    plugins: [{{name: key-auth}}]
"
    ));
    assert_eq!(
        found,
        [
            "consumer_groups[0].plugins: plugins scoped to a consumer group are not supported",
            "routes[0].plugins[0].name: unknown plugin 'rate-limiting' (supported: 'ai-proxy', 'ai-proxy-advanced', 'prometheus', 'key-auth', 'ai-rate-limiting-advanced')",
            "routes[0].plugins[1].consumer: the 'ai-proxy' plugin cannot be scoped to a consumer",
            "consumers[0].plugins[0]: the 'ai-proxy' plugin cannot be scoped to a consumer",
            "consumers[0].plugins[1]: the 'key-auth' plugin cannot be scoped to a consumer",
            "routes[0].plugins[2].route: a nested plugin is scoped by the entity it is nested in: remove this reference",
            "routes[0].plugins[2]: duplicate 'ai-proxy' plugin on routes[0]: already configured at routes[0].plugins[1]",
        ]
    );
}

const RATE_LIMIT: &str = "{llm_providers: [{name: openai, limit: [1000], window_size: [60]}]}";

#[test]
fn consumers_keys_and_consumer_scoped_limits_resolve() {
    let config = ok(&format!(
        "services:
  - name: s
    url: http://127.0.0.1:9
    plugins: [{{name: key-auth, config: {{key_names: [x-key], hide_credentials: true}}}}]
    routes:
      - name: r
        paths: [/a]
        plugins:
          - {{name: ai-proxy, config: {OPENAI_CONFIG}}}
          - {{name: ai-rate-limiting-advanced, config: {RATE_LIMIT}}}
      - name: other
        paths: [/b]
plugins:
  - {{name: ai-rate-limiting-advanced, consumer: bob, route: r, config: {RATE_LIMIT}}}
consumers:
  - username: alice
    custom_id: a-1
    keyauth_credentials: [{{key: k-alice}}, {{key: k-alice-2}}]
    plugins: [{{name: ai-rate-limiting-advanced, config: {RATE_LIMIT}}}]
  - username: bob
    keyauth_credentials: [{{key: k-bob}}]
"
    ));
    assert_eq!(config.consumers.len(), 2);
    assert_eq!(config.consumers[0].keys, ["k-alice", "k-alice-2"]);
    assert_eq!(config.consumers[0].custom_id.as_deref(), Some("a-1"));
    let r = route(&config, "r");
    let key_auth = r.key_auth.as_ref().expect("service key-auth applies");
    assert_eq!(key_auth.key_names, ["x-key"]);
    assert!(key_auth.hide_credentials && key_auth.key_in_header && !key_auth.key_in_body);
    assert_eq!(
        r.rate_limit.as_ref().unwrap().path,
        "services[0].routes[0].plugins[1]"
    );
    let scoped: Vec<(usize, &str)> = r
        .consumer_rate_limits
        .iter()
        .map(|(c, spec)| (*c, spec.path.as_str()))
        .collect();
    assert_eq!(scoped, [(0, "consumers[0].plugins[0]"), (1, "plugins[0]")]);
    let other = route(&config, "other");
    assert!(other.key_auth.is_some() && other.rate_limit.is_none());
    assert_eq!(
        other.consumer_rate_limits.len(),
        1,
        "alice's applies everywhere"
    );
}

#[test]
fn key_auth_consumer_and_limit_mistakes_are_reported() {
    let found = problems(
        "plugins:
  - {name: key-auth, config: {key_names: [], anonymous: nobody, key_in_header: false, key_in_query: false}}
  - name: ai-rate-limiting-advanced
    config:
      strategy: redis
      identifier: header
      sync_rate: -2
      error_code: 99
      request_prompt_count_function: return 1
      llm_providers:
        - {name: requestPrompt, limit: [1], window_size: [60]}
        - {name: openai, limit: [0, 5], window_size: [0]}
        - {name: openai, limit: [5], window_size: [60]}
consumers:
  - custom_id: ''
    keyauth_credentials: [{key: secret-1}, {key: ''}]
  - username: b
    keyauth_credentials: [{key: secret-1}]
",
    );
    let expected = [
        "plugins[0].config.key_names: length must be at least 1",
        "plugins[0].config: at least one of 'key_in_header', 'key_in_query', 'key_in_body' must be true",
        "plugins[1].config.llm_providers[0].name: 'requestPrompt' counts with request_prompt_count_function, a Lua hook this gateway does not run",
        "plugins[1].config.llm_providers[1]: 'limit' and 'window_size' must be lists of the same, non-zero length",
        "plugins[1].config.llm_providers[1].limit[0]: must be greater than 0",
        "plugins[1].config.llm_providers[1].window_size[0]: must be greater than 0",
        "plugins[1].config.llm_providers[2].name: provider listed twice",
        "plugins[1].config.sync_rate: must be -1, 0 or a positive number of seconds",
        "plugins[1].config.header_name: required when identifier is 'header'",
        "plugins[1].config.error_code: must be between 100 and 599",
        "plugins[1].config.request_prompt_count_function: Lua functions are not supported",
        "plugins[1].config.redis.host: required when strategy is 'redis'",
        "consumers[0]: at least one of these fields must be non-empty: 'custom_id', 'username'",
        "consumers[0].keyauth_credentials[1].key: length must be at least 1",
        "consumers[1].keyauth_credentials[0].key: this key is already used by consumers[0].keyauth_credentials[0]",
    ];
    assert_eq!(found, expected);
    assert!(
        found.iter().all(|p| !p.contains("secret-1")),
        "keys are never echoed"
    );
}

#[test]
fn a_plugin_without_config_is_a_problem() {
    assert_eq!(
        problems("plugins: [{name: ai-proxy}]"),
        ["plugins[0].config: required field missing"]
    );
    assert_eq!(
        problems("plugins: [{config: {}}]"),
        ["plugins[0].name: required field missing"]
    );
}

#[test]
fn unknown_fields_are_reported_at_every_level() {
    let found = problems(
            "services:
  - name: s
    hots: h
    routes:
      - name: r
        pathz: [/a]
        plugins:
          - name: ai-proxy
            enabeld: true
            config: {route_type: llm/v1/chat, model: {provider: openai}}
  - name: t
    routes:
      - name: u
        paths: [/u]
        plugins:
          - name: ai-proxy
            config: {route_type: llm/v1/chat, model: {provider: openai}, extra: 1}
      - name: u2
        paths: [/u2]
        plugins:
          - name: ai-proxy
            config: {route_type: llm/v1/chat, model: {provider: openai, nam: x}}
      - name: v
        paths: [/v]
        plugins:
          - name: ai-proxy
            config: {route_type: llm/v1/chat, model: {provider: openai, options: {temprature: 1}}}
      - name: w
        paths: [/w]
        plugins:
          - name: ai-proxy
            config: {route_type: llm/v1/chat, auth: {header: x}, model: {provider: openai}}
      - name: x
        paths: [/x]
        plugins:
          - name: ai-proxy
            config: {route_type: llm/v1/chat, model: {provider: gemini, options: {gemini: {region: x}}}}
",
        );
    let paths: Vec<&str> = found
        .iter()
        .map(|p| p.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(
        paths,
        [
            "services[0].hots",
            "services[1].routes[0].plugins[0].config.extra",
            "services[1].routes[1].plugins[0].config.model.nam",
            "services[1].routes[2].plugins[0].config.model.options.temprature",
            "services[1].routes[3].plugins[0].config.auth.header",
            "services[1].routes[4].plugins[0].config.model.options.gemini.region",
        ],
        "{found:#?}"
    );
    assert!(found[0].contains("unknown field `hots`, expected one of `name`, `id`, `url`"));
    // The route itself failed to parse, so its plugin errors are not reached; the
    // service's other problems still are.
    let found = problems("routes: [{name: r, pathz: [/a]}, {name: q, paths: [/q], plugins: [{name: ai-proxy, enabeld: true, config: {}}]}]");
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("routes[0].pathz: unknown field `pathz`"));
    assert!(found[1].starts_with("routes[1].plugins[0].enabeld: unknown field `enabeld`"));
}

#[test]
fn type_and_range_errors_have_exact_paths() {
    let found = problems(
        "routes:
  - name: r
    paths: [/a]
    strip_path: maybe
  - name: q
    paths: [/q]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          max_request_body_size: -1
          model: {provider: openai}
  - name: p
    paths: [/p]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          model: {provider: openai, options: {temperature: hot}}
  - name: o
    paths: [/o]
    plugins:
      - name: ai-proxy
        config:
          model: {provider: openai}
  - name: n
    paths: [/n]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          model: {name: gpt-4o}
  - name: m
    paths: [/m]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          model: {provider: openai, options: {max_tokens: 1.5, top_k: -1}}
",
    );
    assert_eq!(
            found,
            [
                "routes[0].strip_path: invalid type: string \"maybe\", expected a boolean",
                "routes[1].plugins[0].config.max_request_body_size: invalid value: integer `-1`, expected a non-negative integer",
                "routes[2].plugins[0].config.model.options.temperature: invalid type: string \"hot\", expected a number",
                "routes[3].plugins[0].config.route_type: required field missing",
                "routes[4].plugins[0].config.model.provider: required field missing",
                "routes[5].plugins[0].config.model.options.max_tokens: invalid type: floating point `1.5`, expected a non-negative integer",
            ]
        );
}

#[test]
fn lists_where_records_belong_are_refused() {
    let found = problems(
        "services: [[a, b]]
routes:
  - name: r
    paths: [/a]
    plugins: [{name: ai-proxy, config: {route_type: llm/v1/chat, model: [openai, gpt-4o]}}]
plugins: {name: ai-proxy}
",
    );
    assert_eq!(
        found,
        [
            "services[0]: invalid type: list, expected a mapping",
            "routes[0].plugins[0].config.model: invalid type: list, no ai-proxy field takes a list",
            "plugins: invalid type: mapping, expected a list",
        ]
    );
}

#[test]
fn empty_strings_are_refused_in_plugin_config() {
    let found = problems(
            "routes:
  - name: r
    paths: [/a]
    plugins:
      - name: ai-proxy
        config: {route_type: llm/v1/chat, auth: {header_name: Authorization, header_value: ''}, model: {provider: openai, name: ''}}
",
        );
    assert_eq!(
        found,
        [
            "routes[0].plugins[0].config.auth.header_value: length must be at least 1",
            "routes[0].plugins[0].config.model.name: length must be at least 1",
        ]
    );
}

#[test]
fn env_values_with_newlines_and_quotes_cannot_break_the_file() {
    let tricky = "line1\nline2: \"quoted\"\n  - not: yaml";
    let env = env_of(&[("DECK_KEY", tricky)]);
    let text = "routes:
  - name: r
    paths: [/a]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {header_name: x-api-key, header_value: '${{ env \"DECK_KEY\" }}'}
          model: {provider: openai}
";
    let config = load_deck(text, &env).expect("valid");
    let value = route(&config, "r")
        .plugin
        .as_deref()
        .map(AiPlugin::first)
        .and_then(|p| p.auth.as_ref())
        .and_then(|a| a.header_value.clone());
    assert_eq!(value.as_deref(), Some(tricky));
}

#[test]
fn env_problems_are_collected_with_paths() {
    let found = problems(
        "services:
  - name: s
    url: ${{ env \"DECK_URL\" }}
    routes:
      - name: r
        paths: ['${{ env \"HOME\" }}']
",
    );
    // any_deck_var sets DECK_URL, so only HOME is refused; the invalid URL it yields is
    // reported without the value. The unsubstituted path then fails its own check too.
    assert_eq!(
            found,
            [
                "services[0].routes[0].paths[0]: environment variable 'HOME' is not allowed: only DECK_-prefixed variables can be used",
                "services[0].url: must be an absolute URL, e.g. http://host:port/path",
                "services[0].routes[0].paths[0]: should start with: / (fixed path) or ~/ (regex path)",
            ]
        );
}

#[test]
fn typed_env_substitution_feeds_numbers() {
    let env = env_of(&[("DECK_MAX", "256"), ("DECK_STREAM", "true")]);
    let config = load_deck(
        "routes:
  - name: r
    paths: [/a]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          model_name_header: ${{ env \"DECK_STREAM\" | toBool }}
          model: {provider: openai, options: {max_tokens: '${{ env \"DECK_MAX\" | toInt }}'}}
",
        &env,
    )
    .expect("valid");
    let plugin = route(&config, "r")
        .plugin
        .as_deref()
        .map(AiPlugin::first)
        .cloned()
        .expect("plugin");
    assert_eq!(
        plugin.model.options.as_ref().and_then(|o| o.max_tokens),
        Some(256)
    );
    assert!(plugin.model_name_header);
}

#[test]
fn secrets_never_appear_in_problems() {
    let secret = "sk-live-SECRET-VALUE";
    let env = env_of(&[("DECK_KEY", secret)]);
    let text = format!(
        "routes:
  - name: r
    paths: [/a]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {{header_name: Authorization, header_value: 12345678}}
          model: {{provider: openai}}
  - name: r2
    paths: [/r2]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {{allow_override: '{secret}'}}
          model: {{provider: openai}}
  - name: q
    paths: [/q]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {{param_name: key, param_value: x, param_location: '{secret}'}}
          model: {{provider: openai}}
  - name: p
    paths: [/p]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          model: {{provider: '${{{{ env \"DECK_KEY\" }}}}'}}
  - name: o
    paths: [/o]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          model: {{provider: openai, options: {{max_tokens: '${{{{ env \"DECK_KEY\" }}}}'}}}}
  - name: n
    paths: [/n]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          model: {{provider: openai, options: {{upstream_url: '${{{{ env \"DECK_KEY\" }}}}'}}}}
"
    );
    let found: Vec<String> = load_deck(&text, &env)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
            found,
            [
                "routes[0].plugins[0].config.auth.header_value: invalid type: integer, expected a string",
                "routes[1].plugins[0].config.auth.allow_override: invalid type: string, expected a boolean",
                "routes[2].plugins[0].config.auth.param_location: unknown variant, expected `query` or `body`",
                "routes[3].plugins[0].config.model.provider: unknown variant, expected one of `openai`, `azure`, `anthropic`, `cohere`, `mistral`, `llama2`, `gemini`, `bedrock`, `huggingface`",
                "routes[4].plugins[0].config.model.options.max_tokens: invalid type: string, expected a non-negative integer",
                "routes[5].plugins[0].config.model.options.upstream_url: must be an absolute http(s) URL",
            ]
        );
    for problem in &found {
        assert!(
            !problem.contains(secret) && !problem.contains("12345678"),
            "{problem}"
        );
    }
}

#[test]
fn debug_output_of_a_loaded_config_redacts_credentials() {
    let env = env_of(&[("DECK_OPENAI_API_KEY", OPENAI_KEY)]);
    let config = load_deck(fixture!("ai-proxy.yaml"), &env).expect("valid");
    let debug = format!("{config:?}");
    assert!(debug.contains("openai-chat"));
    assert!(!debug.contains(OPENAI_KEY), "{debug}");
}

#[test]
fn underscore_keys_and_known_sections_are_ignored() {
    let config = ok("_format_version: '1.1'
_konnect: {control_plane_name: x}
_info: {select_tags: [a]}
_workspace: default
_transform: false
_anything_new: 1
upstreams: [{name: u, targets: [{target: 'h:1'}]}]
certificates: []
ca_certificates: []
consumers: [{username: a}]
consumer_groups: []
vaults: [{prefix: env, name: env}]
keys: []
routes: [{name: r, paths: [/a]}]
");
    assert_eq!(config.routes.len(), 1);
    assert!(route(&config, "r").plugin.is_none());
    ok("_format_version: 3.0\nroutes: [{name: r, paths: [/a]}]");
    ok("_format_version: '2.1'");
    assert_eq!(
        problems("_format_version: [3]"),
        ["_format_version: expected one of: 3.0, 2.1, 1.1"]
    );
    assert_eq!(
            problems("service: []"),
            ["service: unknown top-level key: expected `services`, `routes`, `plugins` or another decK section"]
        );
}

#[test]
fn service_urls_are_normalised_with_default_ports() {
    let config = ok("services:
  - {name: a, url: 'http://example.com', routes: [{name: a, paths: [/a]}]}
  - {name: b, url: 'https://example.com/base/', routes: [{name: b, paths: [/b]}]}
  - {name: c, url: 'http://example.com:8080/v1', routes: [{name: c, paths: [/c]}]}
  - {name: d, protocol: https, host: api.example.com, routes: [{name: d, paths: [/d]}]}
  - {name: e, host: example.com, port: 9000, path: /p, routes: [{name: e, paths: [/e]}]}
  - {name: f, url: 'http://example.com/x', port: 8443, protocol: https, routes: [{name: f, paths: [/f]}]}
  - {name: g, host: '::1', routes: [{name: g, paths: [/g]}]}
  - {name: h, url: 'HTTP://Example.COM', routes: [{name: h, paths: [/h]}]}
  - {name: i, routes: [{name: i, paths: [/i]}]}
  - {id: 0a1b, url: 'http://example.com', routes: [{name: j, paths: [/j]}]}
  - {url: 'http://example.com', routes: [{paths: [/k]}]}
");
    let url = |name: &str| {
        route(&config, name)
            .service
            .as_ref()
            .and_then(|s| s.url.clone())
    };
    assert_eq!(url("a").as_deref(), Some("http://example.com:80"));
    assert_eq!(url("b").as_deref(), Some("https://example.com:443/base/"));
    assert_eq!(url("c").as_deref(), Some("http://example.com:8080/v1"));
    assert_eq!(url("d").as_deref(), Some("https://api.example.com:443"));
    assert_eq!(url("e").as_deref(), Some("http://example.com:9000/p"));
    assert_eq!(url("f").as_deref(), Some("https://example.com:8443/x"));
    assert_eq!(url("g").as_deref(), Some("http://[::1]:80"));
    assert_eq!(url("h").as_deref(), Some("http://example.com:80"));
    assert_eq!(url("i"), None);
    assert_eq!(service_name(&config, "j"), Some("0a1b"));
    let unnamed = &config.routes[10];
    assert_eq!(unnamed.name, "services[10].routes[0]");
    assert_eq!(
        unnamed.service.as_ref().map(|s| s.name.as_str()),
        Some("services[10]")
    );
}

#[test]
fn bad_service_addresses_and_numbers_are_problems() {
    let found = problems(
        "services:
  - {name: a, url: 'not a url'}
  - {name: b, url: 'grpc://h:50051'}
  - {name: c, protocol: tcp, host: h}
  - {name: d, protocol: https, port: 443}
  - {name: e, host: h, path: relative}
  - {name: f, url: 'http://h', connect_timeout: 0, write_timeout: 2147483647, retries: 40000}
  - {name: g, url: 'http://h', port: 70000}
",
    );
    assert_eq!(
            found,
            [
                "services[0].url: must be an absolute URL, e.g. http://host:port/path",
                "services[1].url: unsupported protocol 'grpc': services must use 'http', 'https', 'ws' or 'wss'",
                "services[2].protocol: unsupported protocol 'tcp': services must use 'http', 'https', 'ws' or 'wss'",
                "services[3].host: required field missing",
                "services[4].path: should start with: /",
                "services[5].connect_timeout: value should be between 1 and 2147483646",
                "services[5].write_timeout: value should be between 1 and 2147483646",
                "services[5].retries: value should be between 0 and 32767",
                "services[6].port: invalid value: integer `70000`, expected an integer between 0 and 65535",
            ]
        );
}

#[test]
fn disabled_services_hide_their_routes() {
    let config = ok("services:
  - {name: off, url: 'http://h', enabled: false, routes: [{name: hidden, paths: [/a]}]}
routes:
  - {name: also-hidden, service: off, paths: [/b]}
  - {name: shown, paths: [/c]}
");
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["shown"]);
}

#[test]
fn route_matchers_follow_kong_rules() {
    let config = ok("routes:
  - {name: regex, paths: ['~/models/(?<model>[^/]+)$', /plain], methods: [POST, GET], hosts: ['*.example.com', 'api.*', 'exact.com:8000']}
  - {name: by-host, hosts: [api.example.com]}
  - {name: by-method, methods: [DELETE]}
  - {name: by-header, headers: {x-version: [v2]}}
  - {name: http-only, protocols: [http], paths: [/h]}
");
    assert_eq!(route(&config, "regex").methods, ["POST", "GET"]);
    assert_eq!(config.routes.len(), 5);

    let found = problems("routes:
  - {name: a}
  - {name: b, protocols: [http]}
  - {name: c, paths: ['~^/x', '~/(', '']}
  - {name: d, hosts: ['a.*.com', '', 'x*'], methods: [Get, '']}
  - {name: e, protocols: [grpc], paths: [/e]}
  - {name: f, protocols: [http], paths: [/f], snis: [a.com], headers: {Host: [x]}, sources: [{ip: 1.1.1.1}]}
  - {name: g, paths: [/g], https_redirect_status_code: 200, path_handling: v2}
  - {name: h, paths: [/h], protocols: []}
  - {name: i, paths: [/i], https_redirect_status_code: 200}
");
    assert_eq!(
            found,
            [
                "routes[0]: must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'",
                "routes[1]: must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'",
                "routes[2].paths[0]: should start with: / (fixed path) or ~/ (regex path)",
                "routes[2].paths[1]: invalid regex: unclosed group",
                "routes[2].paths[2]: should start with: / (fixed path) or ~/ (regex path)",
                "routes[3].methods[0]: must be upper-case letters, e.g. 'POST'",
                "routes[3].methods[1]: must be upper-case letters, e.g. 'POST'",
                "routes[3].hosts[0]: invalid wildcard: must be placed at leftmost or rightmost label",
                "routes[3].hosts[1]: length must be at least 1",
                "routes[3].hosts[2]: invalid wildcard: must be placed at leftmost or rightmost label",
                "routes[4].protocols[0]: unsupported protocol 'grpc': routes must use 'http', 'https', 'ws' or 'wss'",
                "routes[5].headers: cannot contain 'host' header, which must be specified in the 'hosts' attribute",
                "routes[5].snis: 'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls', 'tls_passthrough', or 'wss'",
                "routes[5].sources: cannot set 'sources' when 'protocols' is 'http' or 'https'",
                "routes[6].path_handling: unknown variant `v2`, expected `v0` or `v1`",
                "routes[7].protocols: length must be at least 1",
                "routes[8].https_redirect_status_code: expected one of: 426, 301, 302, 307, 308",
            ]
        );
}

#[test]
fn route_names_fall_back_to_id_then_path() {
    let config = ok("services:
  - name: s
    url: http://h
    routes:
      - {id: 4d2c, paths: [/a]}
      - {paths: [/b]}
");
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["4d2c", "services[0].routes[1]"]);
}

#[test]
fn duplicate_service_names_and_ids_are_problems() {
    ok("services: [{name: same, id: same}]");
    assert_eq!(
        problems("services:\n  - {name: s, id: x}\n  - {name: s}\n  - {id: x}\n"),
        [
            "services[1].name: service name 's' is already used by services[0]",
            "services[2].id: service id 'x' is already used by services[0]",
        ]
    );
}

#[test]
fn yaml_anchors_and_merge_keys_are_resolved() {
    let config = ok(&format!(
        "_format_version: '3.0'
_shared: &openai {OPENAI_CONFIG}
routes:
  - name: a
    paths: [/a]
    plugins: [{{name: ai-proxy, config: *openai}}]
  - name: b
    paths: [/b]
    plugins:
      - name: ai-proxy
        config:
          <<: *openai
          response_streaming: deny
"
    ));
    assert!(route(&config, "a").plugin.is_some());
    assert_eq!(
        route(&config, "b")
            .plugin
            .as_deref()
            .map(AiPlugin::first)
            .map(|p| p.response_streaming),
        Some(crate::config::ai_proxy::ResponseStreaming::Deny)
    );
}

#[test]
fn yaml_syntax_errors_give_line_and_column() {
    let found = problems("services:\n  - name: a\n    url: [http://h\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("invalid YAML: "), "{}", found[0]);
    assert!(found[0].contains("line 4 column 1"), "{}", found[0]);

    let found = problems("routes: []\nroutes: []\n");
    assert!(
        found[0].contains("duplicate entry with key \"routes\""),
        "{}",
        found[0]
    );
    assert!(found[0].contains("line 1 column 1"), "{}", found[0]);
}

#[test]
fn empty_and_non_mapping_files_are_problems() {
    assert_eq!(
        problems(""),
        ["the file is empty: expected a decK mapping with `_format_version` and `services`"]
    );
    assert_eq!(problems("# nothing\n").len(), 1);
    assert_eq!(
        problems("- a\n- b\n"),
        ["expected a mapping at the top level of the decK file"]
    );
}

#[test]
fn a_file_with_no_routes_is_valid_and_empty() {
    assert!(ok("_format_version: '3.0'\nservices: []").routes.is_empty());
}

#[test]
fn unreadable_file_is_one_problem_naming_the_path() {
    let path = std::env::temp_dir().join("aigw-no-such-deck-file.yaml");
    let problems = load_deck_file(&path, &any_deck_var).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "");
    assert!(
        problems[0].message.contains("aigw-no-such-deck-file.yaml"),
        "{}",
        problems[0]
    );
}

#[test]
fn load_deck_file_reads_a_fixture() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/deck/ai-proxy.yaml");
    let config = load_deck_file(&path, &any_deck_var).expect("valid");
    assert_eq!(config.routes.len(), 2);
}

/// The provider fixtures' `config.json` files are the configs the translators are tested
/// with; each must pass the loader as an ai-proxy plugin.
#[test]
fn provider_fixture_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let configs: Vec<_> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|provider| std::fs::read_dir(provider.path()).ok())
        .flatten()
        .flatten()
        .map(|case| case.path().join("config.json"))
        .filter(|path| path.is_file())
        .collect();
    for path in configs {
        let config = std::fs::read_to_string(&path).expect("fixture is readable");
        let deck = format!(
            "routes: [{{name: r, paths: [/r], plugins: [{{name: ai-proxy, config: {config}}}]}}]"
        );
        if let Err(problems) = load_deck(&deck, &any_deck_var) {
            panic!("{}: {problems:#?}", path.display());
        }
    }
}

#[test]
fn problem_display_omits_an_empty_path() {
    assert_eq!(ConfigProblem::new("", "bad file").to_string(), "bad file");
    assert_eq!(
        ConfigProblem::new("routes[0]", "bad route").to_string(),
        "routes[0]: bad route"
    );
}

#[test]
fn process_env_reads_the_environment() {
    // PATH is set in every test environment; reading it mutates nothing.
    assert!(process_env("PATH").is_some());
    assert_eq!(process_env("AIGW_SURELY_UNSET_VARIABLE_1234"), None);
}

#[test]
fn a_redis_server_name_other_than_its_host_is_refused() {
    let limit = |server_name: &str| {
        format!(
            "plugins:
  - name: ai-rate-limiting-advanced
    config:
      strategy: redis
      redis: {{host: redis.internal, ssl: true, ssl_verify: true, server_name: {server_name}}}
      llm_providers: [{{name: openai, limit: [1000], window_size: [60]}}]
"
        )
    };
    assert_eq!(
        problems(&limit("cache.example.com")),
        ["plugins[0].config.redis.server_name: must equal 'host' (the TLS name sent and verified is the host's): set 'host' to this name"]
    );
    assert!(load(&limit("redis.internal")).is_ok());
}
