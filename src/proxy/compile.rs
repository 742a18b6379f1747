//! Turns a validated [`GatewayConfig`] into what the hot path uses: per route, the provider
//! driver, parsed auth headers and timeouts; plus the router. Built once per config generation,
//! so no request ever parses config.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};

use super::balancer::Balancer;
use super::template;
use crate::config::ai_proxy::{
    AiProxyConfig, ModelOptions, ParamLocation, ProviderName, RouteType,
};
use crate::config::load::{AiPlugin, GatewayConfig, RouteSpec};
use crate::config::problem::ConfigProblem;
use crate::config::settings::Settings;
use crate::formats::ClientFormat;
use crate::key_auth::{Consumers, KeyAuth};
use crate::limits::RouteLimits;
use crate::metrics::RouteStats;
use crate::providers::Driver;
use crate::router::Router;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
}

/// A credential the gateway adds to upstream requests.
#[derive(Clone)]
pub struct ParamAuth {
    pub name: String,
    pub value: String,
    pub location: ParamLocation,
}

#[derive(Clone, Default)]
pub struct CompiledAuth {
    /// Marked sensitive, so HTTP debug output never shows it.
    pub header: Option<(HeaderName, HeaderValue)>,
    pub param: Option<ParamAuth>,
    /// Kong's `allow_override`: a credential the client sent under the same name is kept.
    pub allow_override: bool,
}

impl CompiledAuth {
    /// Whether the gateway injects any credential, in which case the client's own credential
    /// headers are never forwarded alongside it.
    pub fn injects(&self) -> bool {
        self.header.is_some() || self.param.is_some()
    }

    fn from_config(config: &AiProxyConfig) -> Result<CompiledAuth, String> {
        let Some(auth) = &config.auth else {
            return Ok(CompiledAuth::default());
        };
        let header = match (&auth.header_name, &auth.header_value) {
            (Some(name), Some(value)) => {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("auth.header_name '{name}' is not a valid header name"))?;
                let mut value = HeaderValue::from_str(value)
                    .map_err(|_| "auth.header_value is not a valid header value".to_string())?;
                value.set_sensitive(true);
                Some((name, value))
            }
            _ => None,
        };
        let param = match (&auth.param_name, &auth.param_value, auth.param_location) {
            (Some(name), Some(value), Some(location)) => Some(ParamAuth {
                name: name.clone(),
                value: value.clone(),
                location,
            }),
            _ => None,
        };
        Ok(CompiledAuth {
            header,
            param,
            allow_override: auth.allow_override,
        })
    }
}

/// One route's compiled `ai-proxy` plugin.
pub struct CompiledRoute {
    pub name: String,
    pub config: Arc<AiProxyConfig>,
    pub provider: ProviderName,
    pub driver: Driver,
    pub options: Arc<ModelOptions>,
    pub model_templated: bool,
    pub options_templated: bool,
    pub auth: CompiledAuth,
    pub timeouts: Timeouts,
    /// `None` = unlimited (`max_request_body_size: 0`).
    pub body_limit: Option<u64>,
    /// `X-Kong-LLM-Model` value prefix, `provider/`.
    pub model_header_prefix: String,
    /// The whole `X-Kong-LLM-Model` value when the configured model is fixed (the usual case),
    /// built once instead of per request.
    pub fixed_model_header: Option<HeaderValue>,
    /// How this route's clients speak (`llm_format` with the provider).
    pub client_format: ClientFormat,
    /// An `ai-proxy-advanced` target: its configured model replaces the client's (the client
    /// cannot know which target serves it), where ai-proxy refuses a different model.
    pub model_overrides_client: bool,
    /// Metrics labels, when a prometheus plugin applies to the route.
    pub stats: Option<Arc<RouteStats>>,
}

impl CompiledRoute {
    /// Whether a multipart upload to this target streams: OpenAI's upload APIs take the form
    /// as the client sent it, while Gemini and Bedrock image edits are read whole into JSON.
    pub fn streams_uploads(&self) -> bool {
        self.route_type().takes_uploads() && self.provider.speaks_openai_api()
    }

    /// Compiles one plugin config; the error is a config problem message.
    pub fn new(
        name: &str,
        config: Arc<AiProxyConfig>,
        timeouts: Timeouts,
    ) -> Result<CompiledRoute, String> {
        let driver = Driver::from_config(&config).map_err(|e| e.to_string())?;
        // Responses on a provider that only chats: translated to chat and back.
        let responses_translated = config.route_type == RouteType::Responses
            && !driver.supports(RouteType::Responses)
            && driver.supports(RouteType::Chat);
        let client_format = if responses_translated {
            ClientFormat::ResponsesTranslated
        } else {
            ClientFormat::of(config.llm_format, config.model.provider)
        };
        if !driver.supports(config.route_type)
            && config.route_type != RouteType::Preserve
            && !responses_translated
        {
            return Err(format!(
                "provider '{}' does not support route_type '{}'",
                config.model.provider.as_str(),
                config.route_type.as_str()
            ));
        }
        let auth = CompiledAuth::from_config(&config)?;
        let options = config.model.options.clone().unwrap_or_default();
        Ok(CompiledRoute {
            name: name.to_string(),
            provider: config.model.provider,
            model_templated: config
                .model
                .name
                .as_deref()
                .is_some_and(template::is_template),
            options_templated: template::options_are_templated(&options),
            options: Arc::new(options),
            driver,
            auth,
            timeouts,
            body_limit: (config.max_request_body_size > 0).then_some(config.max_request_body_size),
            model_header_prefix: format!("{}/", config.model.provider.as_str()),
            fixed_model_header: config
                .model
                .name
                .as_deref()
                .filter(|name| !template::is_template(name))
                .and_then(|name| {
                    HeaderValue::from_str(&format!("{}/{name}", config.model.provider.as_str()))
                        .ok()
                }),
            client_format,
            model_overrides_client: false,
            stats: None,
            config,
        })
    }

    pub fn route_type(&self) -> RouteType {
        self.config.route_type
    }

    /// The limit on a streamed multipart upload: only a `max_request_body_size` the operator
    /// set (the default exists to bound what the gateway reads into memory, and an upload is
    /// never held whole).
    pub fn upload_limit(&self) -> Option<u64> {
        self.config
            .body_size_configured
            .then_some(self.body_limit)
            .flatten()
    }

    /// Kong's cost: `input_cost` / `output_cost` are per million tokens; `None` unless both
    /// are configured.
    pub fn cost(&self, usage: crate::providers::oai::Usage) -> Option<f64> {
        let (input, output) = (self.options.input_cost?, self.options.output_cost?);
        Some((usage.prompt_tokens as f64 * input + usage.completion_tokens as f64 * output) / 1e6)
    }
}

#[cfg(test)]
impl CompiledRoute {
    /// A route compiled from an `ai-proxy` config written as JSON, with 60 s timeouts, for
    /// unit tests.
    pub(crate) fn from_json(config: serde_json::Value) -> CompiledRoute {
        let config: AiProxyConfig = serde_json::from_value(config).unwrap();
        let t = Duration::from_secs(60);
        let timeouts = Timeouts {
            connect: t,
            read: t,
            write: t,
        };
        CompiledRoute::new("test", Arc::new(config), timeouts).unwrap()
    }
}

/// One route's compiled AI plugin: one target for `ai-proxy`; for `ai-proxy-advanced` every
/// target and the balancer that chooses among them.
pub struct AiRoute {
    pub targets: Vec<Arc<CompiledRoute>>,
    pub balancer: Option<Arc<Balancer>>,
    /// Plugin-wide, so the same for every target.
    pub body_limit: Option<u64>,
    /// The key-auth plugin that applies to the route, if any.
    pub key_auth: Option<KeyAuth>,
    /// The token limits that apply to the route, if any.
    pub limits: Option<RouteLimits>,
}

impl AiRoute {
    /// The target of an `ai-proxy` route; the first target of an `ai-proxy-advanced` one.
    /// A multipart upload streams only when every target takes it streamed. A route whose
    /// targets disagree (OpenAI and Gemini image edits) reads it once, within
    /// `max_request_body_size`, so every attempt, failover to the other provider included,
    /// gets the whole form.
    pub fn streams_uploads(&self) -> bool {
        self.targets.iter().all(|t| t.streams_uploads())
    }

    pub fn first(&self) -> &Arc<CompiledRoute> {
        &self.targets[0]
    }

    fn new(
        name: &str,
        plugin: &AiPlugin,
        service_timeouts: Timeouts,
        path: &str,
        stats: Option<Arc<RouteStats>>,
    ) -> Result<AiRoute, Vec<ConfigProblem>> {
        let balancer = match &plugin.balancer {
            None => None,
            Some(config) => {
                let weights = plugin.targets.iter().map(|t| t.weight).collect();
                Some(Arc::new(Balancer::new(config, weights).map_err(
                    |message| {
                        vec![ConfigProblem {
                            path: format!("{path}.config"),
                            message,
                        }]
                    },
                )?))
            }
        };
        // ai-proxy-advanced's balancer has its own per-attempt timeouts.
        let timeouts = balancer.as_ref().map_or(service_timeouts, |b| b.timeouts);
        let mut targets = Vec::with_capacity(plugin.targets.len());
        let mut problems = Vec::new();
        for (i, target) in plugin.targets.iter().enumerate() {
            let at = match balancer {
                Some(_) => format!("{path}.config.targets[{i}]"),
                None => format!("{path}.config"),
            };
            match CompiledRoute::new(name, target.config.clone(), timeouts) {
                Ok(mut route) => {
                    route.model_overrides_client = balancer.is_some();
                    route.stats = stats.clone();
                    targets.push(Arc::new(route));
                }
                Err(message) => problems.push(ConfigProblem { path: at, message }),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(AiRoute {
            body_limit: targets[0].body_limit,
            targets,
            balancer,
            key_auth: None,
            limits: None,
        })
    }
}

/// One config generation: routes and the router over them. Shared, immutable.
pub struct Snapshot {
    pub generation: u64,
    /// Indexed like the router's routes; `None` for routes without an AI plugin.
    pub routes: Vec<Option<Arc<AiRoute>>>,
    /// Shared, so the access log names a route without copying its name per request.
    pub route_names: Vec<Arc<str>>,
    pub router: Router,
}

/// The route's token limits, counted against the providers its targets call.
fn limits_of(spec: &RouteSpec, route: &AiRoute) -> Result<Option<RouteLimits>, String> {
    let mut providers: Vec<ProviderName> = route.targets.iter().map(|t| t.provider).collect();
    providers.dedup();
    let options = &route.first().options;
    RouteLimits::new(
        spec.rate_limit.as_ref(),
        &spec.consumer_rate_limits,
        providers,
        spec.service
            .as_ref()
            .map_or_else(|| spec.name.clone(), |s| s.name.clone()),
        (options.input_cost, options.output_cost),
        options.max_tokens,
    )
}

/// Compiles a validated config; problems found here (a provider that cannot serve the route
/// type, an unusable header value) are reported like load problems.
pub fn compile(
    config: &GatewayConfig,
    settings: &Settings,
    generation: u64,
) -> Result<Snapshot, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let consumers = Arc::new(Consumers::new(&config.consumers));
    let mut routes = Vec::with_capacity(config.routes.len());
    for spec in &config.routes {
        let (Some(plugin), Some(path)) = (&spec.plugin, &spec.plugin_path) else {
            routes.push(None);
            continue;
        };
        let timeouts = match &spec.service {
            Some(s) => Timeouts {
                connect: Duration::from_millis(s.connect_timeout_ms),
                read: Duration::from_millis(s.read_timeout_ms),
                write: Duration::from_millis(s.write_timeout_ms),
            },
            None => Timeouts {
                connect: Duration::from_millis(settings.connect_timeout_ms),
                read: Duration::from_millis(settings.read_timeout_ms),
                write: Duration::from_millis(settings.write_timeout_ms),
            },
        };
        let stats = spec.prometheus.as_ref().map(|p| {
            Arc::new(RouteStats::new(
                &spec.name,
                spec.service.as_ref().map_or("", |s| s.name.as_str()),
                p.ai_metrics,
                p.per_consumer,
            ))
        });
        let compiled =
            AiRoute::new(&spec.name, plugin, timeouts, path, stats).and_then(|mut route| {
                if let Some(config) = &spec.key_auth {
                    let key_auth = KeyAuth::new(config.clone(), consumers.clone())
                        .map_err(|message| vec![ConfigProblem::new(spec.name.clone(), message)])?;
                    route.key_auth = Some(key_auth);
                }
                route.limits = limits_of(spec, &route)
                    .map_err(|message| vec![ConfigProblem::new(spec.name.clone(), message)])?;
                Ok(route)
            });
        match compiled {
            Ok(route) => routes.push(Some(Arc::new(route))),
            Err(mut found) => problems.append(&mut found),
        }
    }
    let router = Router::new(&config.routes).map_err(|message| {
        vec![ConfigProblem {
            path: String::new(),
            message,
        }]
    });
    match (problems.is_empty(), router) {
        (true, Ok(router)) => Ok(Snapshot {
            generation,
            routes,
            route_names: config
                .routes
                .iter()
                .map(|r| Arc::from(r.name.as_str()))
                .collect(),
            router,
        }),
        (_, Err(mut router_problems)) => {
            problems.append(&mut router_problems);
            Err(problems)
        }
        (false, Ok(_)) => Err(problems),
    }
}
