//! Token rate limiting: Kong's `ai-rate-limiting-advanced`, compiled per route, enforced by
//! each worker's `LimiterActor` against a process-wide store (`strategy: local`) or Redis
//! (`strategy: redis`), with the admission rule of `admission.rs`.

pub mod admission;
pub mod local;
pub mod redis;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use bytes::BytesMut;
use serde_json::Value;
use smallvec::SmallVec;

use crate::config::ai_proxy::ProviderName;
use crate::config::load::RateLimitSpec;
use crate::config::rate_limit::{
    provider_by_name, Identifier, RateLimitConfig, Strategy, TokensCountStrategy, WindowType,
};
use crate::error::GatewayError;
use crate::key_auth::Identity;
use crate::providers::oai::Usage;
use admission::{Seen, Window};

/// Where a policy keeps its counters.
#[derive(Debug)]
pub enum Backend {
    /// This process only (`strategy: local`, or `sync_rate: -1`).
    Local,
    /// Every instance, through Redis, synchronously (`sync_rate: 0`).
    Redis(Arc<redis::RedisTarget>),
    /// Every instance, through this process's counters synchronised with Redis every so
    /// often (`sync_rate > 0`).
    Synced(Arc<redis::RedisTarget>, Duration),
}

impl Backend {
    /// The Redis server behind the counters, if any.
    pub fn target(&self) -> Option<&redis::RedisTarget> {
        match self {
            Backend::Local => None,
            Backend::Redis(target) | Backend::Synced(target, _) => Some(target),
        }
    }
}

/// One provider's windows in a policy, with the names of Kong's headers for each window
/// (`x-ai-ratelimit-{limit,remaining,reset}-<size>-<provider>`) and the start of its counters'
/// keys, made once here rather than formatted and validated for every request.
#[derive(Debug)]
struct ProviderLimits {
    provider: ProviderName,
    /// `aigw:rl:<namespace>:<provider>:`: a key is this and the identity.
    prefix: String,
    windows: Arc<[Window]>,
    headers: Arc<[WindowHeaders]>,
}

/// The limit, remaining and reset header names of one window, and the limit's value.
#[derive(Debug)]
pub struct WindowHeaders {
    limit: HeaderName,
    remaining: HeaderName,
    reset: HeaderName,
    limit_value: HeaderValue,
}

fn window_headers(provider: ProviderName, window: &Window) -> Result<WindowHeaders, String> {
    let name = |what: &str| {
        let name = format!(
            "x-ai-ratelimit-{what}-{}-{}",
            window.size,
            provider.as_str()
        );
        HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("{name}: {e}"))
    };
    Ok(WindowHeaders {
        limit: name("limit")?,
        remaining: name("remaining")?,
        reset: name("reset")?,
        limit_value: whole(window.limit),
    })
}

/// One compiled `ai-rate-limiting-advanced` instance.
#[derive(Debug)]
pub struct Policy {
    limits: Vec<ProviderLimits>,
    identifier: Identifier,
    header_name: Option<HeaderName>,
    path: Option<String>,
    count: TokensCountStrategy,
    pub sliding: bool,
    error_code: StatusCode,
    error_message: String,
    hide_providers: bool,
    hide_client_headers: bool,
    pub backend: Backend,
    pub fault_tolerant: bool,
    pub wait: Duration,
}

impl Policy {
    pub fn new(spec: &RateLimitSpec) -> Result<Policy, String> {
        let config: &RateLimitConfig = &spec.config;
        let namespace = config.namespace.as_deref().unwrap_or(&spec.path);
        let limits = config
            .llm_providers
            .iter()
            .filter_map(|p| provider_by_name(&p.name).map(|provider| (provider, p)))
            .map(|(provider, p)| {
                let windows: Arc<[Window]> = p
                    .limit
                    .iter()
                    .zip(&p.window_size)
                    .map(|(&limit, &size)| Window { limit, size })
                    .collect();
                let headers = windows
                    .iter()
                    .map(|w| window_headers(provider, w))
                    .collect::<Result<_, _>>()?;
                Ok(ProviderLimits {
                    provider,
                    prefix: format!("aigw:rl:{namespace}:{}:", provider.as_str()),
                    windows,
                    headers,
                })
            })
            .collect::<Result<_, String>>()?;
        let header_name = config
            .header_name
            .as_deref()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).map_err(|e| format!("header_name: {e}")))
            .transpose()?;
        let local = config.strategy == Strategy::Local || config.sync_rate == Some(-1.0);
        let backend = if local {
            Backend::Local
        } else {
            let redis = config
                .redis
                .as_ref()
                .ok_or("redis: required when strategy is 'redis'")?;
            let target = Arc::new(redis::RedisTarget::new(redis)?);
            match config.sync_rate {
                Some(rate) if rate > 0.0 => Backend::Synced(target, Duration::from_secs_f64(rate)),
                _ => Backend::Redis(target),
            }
        };
        Ok(Policy {
            limits,
            identifier: config.identifier,
            header_name,
            path: config.path.clone(),
            count: config.tokens_count_strategy,
            sliding: config.window_type == WindowType::Sliding,
            error_code: StatusCode::from_u16(config.error_code)
                .map_err(|_| "error_code is not an HTTP status")?,
            error_message: config.error_message.clone(),
            hide_providers: config.error_hide_providers,
            hide_client_headers: config.hide_client_headers,
            backend,
            fault_tolerant: config.fault_tolerant,
            wait: Duration::from_millis(config.wait_timeout),
        })
    }
}

/// A route's limits: the one for everybody and the consumer-scoped ones.
#[derive(Debug)]
pub struct RouteLimits {
    default: Option<Arc<Policy>>,
    consumers: HashMap<usize, Arc<Policy>>,
    /// The providers the route's targets call.
    providers: Vec<ProviderName>,
    /// Kong's `identifier: service` key.
    service: String,
    /// `model.options.input_cost` / `output_cost` for `tokens_count_strategy: cost`.
    costs: (Option<f64>, Option<f64>),
    max_tokens: Option<u64>,
}

impl RouteLimits {
    pub fn new(
        default: Option<&RateLimitSpec>,
        scoped: &[(usize, RateLimitSpec)],
        providers: Vec<ProviderName>,
        service: String,
        costs: (Option<f64>, Option<f64>),
        max_tokens: Option<u64>,
    ) -> Result<Option<RouteLimits>, String> {
        if default.is_none() && scoped.is_empty() {
            return Ok(None);
        }
        let policy = |spec: &RateLimitSpec| -> Result<Arc<Policy>, String> {
            let policy = Policy::new(spec)?;
            if policy.count == TokensCountStrategy::Cost && (costs.0.is_none() || costs.1.is_none())
            {
                return Err(format!(
                    "{}: tokens_count_strategy 'cost' needs model.options.input_cost and output_cost on the route",
                    spec.path
                ));
            }
            Ok(Arc::new(policy))
        };
        Ok(Some(RouteLimits {
            default: default.map(policy).transpose()?,
            consumers: scoped
                .iter()
                .map(|(c, spec)| policy(spec).map(|p| (*c, p)))
                .collect::<Result<_, _>>()?,
            providers,
            service,
            costs,
            max_tokens,
        }))
    }

    /// The ticket a request must be admitted with, or `None` if no limit applies to it.
    pub fn ticket(
        &self,
        identity: &Identity,
        peer: Option<std::net::IpAddr>,
        client: &crate::proxy::request::ClientRequest,
        body: &[u8],
    ) -> Option<Ticket> {
        let policy = identity
            .consumer_index
            .and_then(|c| self.consumers.get(&c))
            .or(self.default.as_ref())?
            .clone();
        let ip = || -> Cow<str> {
            Cow::Owned(peer.map_or_else(|| "-".to_string(), |ip| ip.to_string()))
        };
        let who: Cow<str> = match policy.identifier {
            Identifier::Consumer | Identifier::ConsumerGroup => identity
                .consumer
                .as_ref()
                .map_or_else(ip, |c| Cow::Borrowed(c.id.as_str())),
            Identifier::Credential => identity
                .credential
                .as_deref()
                .map_or_else(ip, Cow::Borrowed),
            Identifier::Ip => ip(),
            Identifier::Service => Cow::Borrowed(&self.service),
            Identifier::Header => policy
                .header_name
                .as_ref()
                .and_then(|h| client.headers.get(h))
                .and_then(|v| v.to_str().ok())
                .map_or_else(ip, Cow::Borrowed),
            Identifier::Path => {
                let path = policy.path.as_deref()?;
                if client.path != path {
                    return None;
                }
                Cow::Borrowed(path)
            }
        };
        let keys: SmallVec<[Limited; 1]> = policy
            .limits
            .iter()
            .filter(|p| self.providers.contains(&p.provider))
            .map(|p| Limited {
                provider: p.provider,
                key: [p.prefix.as_str(), &who].concat(),
                windows: p.windows.clone(),
                headers: p.headers.clone(),
            })
            .collect();
        if keys.is_empty() {
            return None;
        }
        let (bound, prompt_estimate) = self.reservation(policy.count, body);
        Some(Ticket {
            id: next_ticket(),
            policy,
            keys,
            reserve: bound,
            prompt_estimate,
            costs: self.costs,
        })
    }

    /// An upper bound of the request's cost, when one exists, and a prompt-token estimate.
    ///
    /// A token covers at least one byte of the prompt's text, and the JSON around the text
    /// outweighs the chat template's tokens, so the body's length bounds the prompt tokens; the
    /// provider enforces `max_tokens`. Images and audio cost tokens their bytes do not bound,
    /// so a body carrying anything but text parts has no bound.
    fn reservation(&self, count: TokensCountStrategy, body: &[u8]) -> (Option<f64>, f64) {
        let prompt_estimate = (body.len() / 4) as f64;
        // Most bodies name no output bound; with none configured either, only a prompt-only
        // count has a bound, so the body need not be parsed (a key written with escapes is
        // missed, and the request counts as one of unknown cost).
        static MAX: LazyLock<memchr::memmem::Finder<'static>> =
            LazyLock::new(|| memchr::memmem::Finder::new(b"\"max_"));
        let may_bound = self.max_tokens.is_some()
            || count == TokensCountStrategy::PromptTokens
            || MAX.find(body).is_some();
        if !may_bound {
            return (None, prompt_estimate);
        }
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let Some(parsed) = parsed else {
            return (None, prompt_estimate);
        };
        let text_only = parsed
            .get("messages")
            .and_then(Value::as_array)
            .is_none_or(|messages| {
                messages.iter().all(|m| match m.get("content") {
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .all(|p| p.get("type").and_then(Value::as_str) == Some("text")),
                    _ => true,
                })
            });
        let client_max = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| parsed.get(*k).and_then(Value::as_u64));
        // A configured max_tokens overrides the client's (Kong's rule).
        let max = self.max_tokens.or(client_max);
        let prompt = body.len() as f64;
        let bound = match (count, text_only, max) {
            (_, false, _) => None,
            (TokensCountStrategy::PromptTokens, _, _) => Some(prompt),
            (_, _, None) => None,
            (TokensCountStrategy::TotalTokens, _, Some(max)) => Some(prompt + max as f64),
            (TokensCountStrategy::CompletionTokens, _, Some(max)) => Some(max as f64),
            (TokensCountStrategy::Cost, _, Some(max)) => match self.costs {
                (Some(input), Some(output)) => Some((prompt * input + max as f64 * output) / 1e6),
                _ => None,
            },
        };
        (bound, prompt_estimate)
    }
}

fn next_ticket() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One provider's counters for one identity (the windows and header names shared with the
/// policy).
#[derive(Debug, Clone)]
pub struct Limited {
    pub provider: ProviderName,
    pub key: String,
    pub windows: Arc<[Window]>,
    pub headers: Arc<[WindowHeaders]>,
}

/// One request's claim on the limits that apply to it.
#[derive(Debug)]
pub struct Ticket {
    pub id: u64,
    pub policy: Arc<Policy>,
    /// Inline: a route's targets rarely call more than one limited provider.
    pub keys: SmallVec<[Limited; 1]>,
    /// Upper bound of its cost, if known (see `RouteLimits::reservation`).
    pub reserve: Option<f64>,
    prompt_estimate: f64,
    costs: (Option<f64>, Option<f64>),
}

impl Ticket {
    /// What the answer's usage costs under the policy's `tokens_count_strategy`. A stream
    /// that ended before the provider reported usage (the client left, the stream broke) is
    /// charged its reservation, or a prompt estimate when it has none.
    pub fn cost(&self, usage: Usage, completed: bool) -> f64 {
        if !completed && usage.prompt_tokens == 0 && usage.completion_tokens == 0 {
            return self.reserve.unwrap_or(self.prompt_estimate);
        }
        let (prompt, completion) = (usage.prompt_tokens as f64, usage.completion_tokens as f64);
        match self.policy.count {
            TokensCountStrategy::TotalTokens => prompt + completion,
            TokensCountStrategy::PromptTokens => prompt,
            TokensCountStrategy::CompletionTokens => completion,
            TokensCountStrategy::Cost => {
                let (input, output) = (self.costs.0.unwrap_or(0.0), self.costs.1.unwrap_or(0.0));
                (prompt * input + completion * output) / 1e6
            }
        }
    }

    /// Kong's headers for an admitted request, added to `out`: limit, remaining and reset per
    /// window.
    pub fn headers(&self, seen: &[Seen], out: &mut Vec<(HeaderName, HeaderValue)>) {
        if self.policy.hide_client_headers {
            return;
        }
        out.reserve(3 * seen.len());
        for (limited, seen) in self.per_key(seen) {
            let windows = limited.windows.iter().zip(seen).zip(limited.headers.iter());
            for ((w, s), h) in windows {
                let left = (w.limit - s.used).max(0.0);
                out.extend([
                    (h.limit.clone(), h.limit_value.clone()),
                    (h.remaining.clone(), whole(left)),
                    (h.reset.clone(), count(s.reset_ms.div_ceil(1000))),
                ]);
            }
        }
    }

    /// Every key with its windows as seen (`SeenAll`'s order); a key after one that was not
    /// admitted was not looked at and has none.
    fn per_key<'a>(&'a self, seen: &'a [Seen]) -> impl Iterator<Item = (&'a Limited, &'a [Seen])> {
        let mut rest = seen;
        self.keys.iter().map(move |limited| {
            let (mine, after) = rest.split_at(limited.windows.len().min(rest.len()));
            rest = after;
            (limited, mine)
        })
    }

    /// The refusal once a window is exhausted (or the wait for committed budget ran out):
    /// Kong's status and message, `Retry-After` when the exhausted windows reset.
    pub fn refusal(&self, seen: &[Seen]) -> GatewayError {
        let mut retry_ms = 0;
        for (limited, seen) in self.per_key(seen) {
            for (w, s) in limited.windows.iter().zip(seen) {
                if s.used >= w.limit {
                    retry_ms = retry_ms.max(s.reset_ms);
                }
            }
        }
        let retry = retry_ms.div_ceil(1000).max(1);
        let mut headers = Vec::new();
        self.headers(seen, &mut headers);
        headers.push((header::RETRY_AFTER, HeaderValue::from(retry)));
        headers.push((
            HeaderName::from_static("x-ai-ratelimit-retry-after"),
            HeaderValue::from(retry),
        ));
        let mut message = self.policy.error_message.clone();
        if !self.policy.hide_providers {
            let names: Vec<&str> = self.keys.iter().map(|k| k.provider.as_str()).collect();
            message.push_str(&names.join(", "));
        }
        GatewayError::RateLimited(Box::new(Refusal {
            status: self.policy.error_code,
            message,
            headers,
        }))
    }
}

/// A header count: the whole part of a non-negative amount (tokens, or cost in the
/// configured unit), as Kong prints it.
fn whole(amount: f64) -> HeaderValue {
    // `as` saturates: no limit a user writes comes near u64::MAX.
    count(amount.floor() as u64)
}

/// A number as a header value. The digits go into a buffer this thread shares among the values
/// it writes, so a value costs a reference count rather than an allocation of its own (the
/// buffer is replaced when full and freed when its last value is dropped).
fn count(n: u64) -> HeaderValue {
    /// Room for a few hundred values.
    const BUFFER: usize = 4096;
    thread_local! {
        static DIGITS: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    }
    let mut itoa = itoa::Buffer::new();
    let digits = itoa.format(n).as_bytes();
    DIGITS
        .with_borrow_mut(|buffer| {
            if buffer.capacity() - buffer.len() < digits.len() {
                *buffer = BytesMut::with_capacity(BUFFER);
            }
            buffer.extend_from_slice(digits);
            HeaderValue::from_maybe_shared(buffer.split().freeze())
        })
        .unwrap_or_else(|_| HeaderValue::from(n))
}

/// A request the limits refused: Kong's `{"message": ...}` body with these headers.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::request::ClientRequest;

    fn limits(max_tokens: Option<u64>) -> RouteLimits {
        RouteLimits {
            default: None,
            consumers: HashMap::new(),
            providers: Vec::new(),
            service: String::new(),
            costs: (None, None),
            max_tokens,
        }
    }

    /// A route calling openai under one policy written as `config` (YAML).
    fn route_limits(config: &str) -> RouteLimits {
        let spec = RateLimitSpec {
            config: Arc::new(serde_norway::from_str(config).unwrap()),
            path: "routes[0].plugins[1]".into(),
        };
        let providers = vec![ProviderName::Openai];
        RouteLimits::new(
            Some(&spec),
            &[],
            providers,
            "svc".into(),
            (None, None),
            None,
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn a_ticket_names_its_counters_and_kongs_headers() {
        let windows = "llm_providers: [{name: openai, limit: [1000, 50], window_size: [60, 1]}, {name: cohere, limit: [5], window_size: [1]}]";
        let client = ClientRequest::post("/chat", &[("x-team", "blue")], "");
        let anyone = Identity::default();
        let ip = Some(std::net::IpAddr::from([10, 0, 0, 7]));
        let key = |config: &str, peer| {
            let ticket = route_limits(config).ticket(&anyone, peer, &client, b"{}");
            let ticket = ticket.unwrap();
            assert_eq!(ticket.keys.len(), 1, "only the route's provider");
            ticket.keys[0].key.clone()
        };
        let service = format!("{{identifier: service, namespace: ns, {windows}}}");
        assert_eq!(key(&service, ip), "aigw:rl:ns:openai:svc");
        let header = format!("{{identifier: header, header_name: x-team, {windows}}}");
        assert_eq!(key(&header, ip), "aigw:rl:routes[0].plugins[1]:openai:blue");
        // Without a consumer, per-consumer limits count per client address.
        let consumer = format!("{{namespace: ns, {windows}}}");
        assert_eq!(key(&consumer, ip), "aigw:rl:ns:openai:10.0.0.7");
        assert_eq!(key(&consumer, None), "aigw:rl:ns:openai:-");

        let ticket = route_limits(&consumer)
            .ticket(&anyone, ip, &client, b"{}")
            .unwrap();
        let seen = [
            Seen {
                used: 250.5,
                reset_ms: 30_001,
            },
            Seen {
                used: 60.0,
                reset_ms: 400,
            },
        ];
        let mut headers = Vec::new();
        ticket.headers(&seen, &mut headers);
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let expected = [
            ("x-ai-ratelimit-limit-60-openai", "1000"),
            ("x-ai-ratelimit-remaining-60-openai", "749"),
            ("x-ai-ratelimit-reset-60-openai", "31"),
            ("x-ai-ratelimit-limit-1-openai", "50"),
            ("x-ai-ratelimit-remaining-1-openai", "0"),
            ("x-ai-ratelimit-reset-1-openai", "1"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(headers, expected);
    }

    #[test]
    fn counts_stay_whole_across_shared_buffers() {
        // Enough values to fill several of the thread's buffers, all alive at once.
        let values: Vec<(u64, HeaderValue)> = (0..2_000u64)
            .map(|i| i * 7_919_000_003)
            .map(|n| (n, count(n)))
            .collect();
        for (n, value) in &values {
            assert_eq!(value.to_str().unwrap(), n.to_string());
        }
        assert_eq!(whole(12.9), "12");
        assert_eq!(count(u64::MAX), u64::MAX.to_string().as_str());
    }

    #[test]
    fn a_reservation_is_the_prompt_bytes_plus_the_output_bound() {
        let total = TokensCountStrategy::TotalTokens;
        let bounded = br#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":100}"#;
        let len = bounded.len() as f64;
        assert_eq!(
            limits(None).reservation(total, bounded).0,
            Some(len + 100.0)
        );
        let newer = br#"{"messages":[],"max_completion_tokens": 7}"#;
        let n = newer.len() as f64;
        assert_eq!(limits(None).reservation(total, newer).0, Some(n + 7.0));
        // No bound in the body or the config: unknown cost, whatever the count.
        let open = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(limits(None).reservation(total, open).0, None);
        // A configured max_tokens bounds it; a prompt-only count is bounded by the prompt.
        let o = open.len() as f64;
        assert_eq!(limits(Some(5)).reservation(total, open).0, Some(o + 5.0));
        let prompt = TokensCountStrategy::PromptTokens;
        assert_eq!(limits(None).reservation(prompt, open).0, Some(o));
        // Images cost tokens their bytes do not bound.
        let image = br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}],"max_tokens":9}"#;
        assert_eq!(limits(None).reservation(total, image).0, None);
        assert_eq!(
            limits(None).reservation(total, open).1,
            (open.len() / 4) as f64
        );
    }
}
