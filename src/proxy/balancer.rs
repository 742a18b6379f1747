//! The `ai-proxy-advanced` balancer: which target serves an attempt, whether a failed attempt
//! moves on to another target, and the circuit breaker.
//!
//! State is split by how it must be shared:
//! * [`Balancer`] (compiled once per config generation, shared by every worker) holds the
//!   settings and, per target, the circuit breaker and the in-flight count as atomics: a
//!   target that fails is excluded process-wide after `max_fails`, not `max_fails` per worker,
//!   and least-connections sees every worker's connections. No lock is taken.
//! * [`BalancerState`] (one per route per worker, owned by that worker's route actor) holds
//!   the round-robin position, the latency averages and the usage totals: what one worker
//!   learns steers that worker's traffic, which needs no synchronisation at all.
//!
//! A reload compiles a new generation: both kinds of state start fresh for it (requests in
//! flight finish on the old one).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderName;

use super::compile::Timeouts;
use crate::config::ai_proxy_advanced::{
    Algorithm, BalancerConfig, FailoverCriterion, LatencyStrategy, TokensCountStrategy,
};
use crate::error::GatewayError;
use crate::providers::oai::Usage;

/// How long an unobserved latency average takes to decay by a factor e: a target that was slow
/// is tried again once its average has decayed below the others'.
const LATENCY_DECAY: Duration = Duration::from_secs(10);
/// Weight of a new latency observation below the current average (peaks replace it at once).
const LATENCY_ALPHA: f64 = 0.3;

/// Why an attempt failed, in nginx's `proxy_next_upstream` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Connection refused or broken; `sent` once the request may have reached the target.
    Error {
        sent: bool,
    },
    /// Connect (`sent: false`) or read (`sent: true`) timeout.
    Timeout {
        sent: bool,
    },
    /// An empty, malformed or untranslatable answer.
    InvalidHeader,
    Status(u16),
}

impl Failure {
    /// The short form used in headers, logs and metric labels.
    pub fn label(self) -> String {
        match self {
            Failure::Error { .. } => "error".into(),
            Failure::Timeout { .. } => "timeout".into(),
            Failure::InvalidHeader => "invalid_header".into(),
            Failure::Status(s) => s.to_string(),
        }
    }
}

/// Circuit state of one target, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    /// `fail_timeout` has passed: the next request probes the target.
    HalfOpen,
}

#[derive(Default)]
struct TargetHealth {
    fails: AtomicU32,
    /// Start of the current `fail_timeout` counting window, ms since the balancer's epoch.
    window_start: AtomicU64,
    /// 0 = closed; else excluded until then (ms since the epoch), then one probe.
    open_until: AtomicU64,
    in_flight: AtomicU32,
}

/// Counts a target's attempt in flight (least-connections) until dropped.
pub struct InFlightGuard {
    balancer: std::sync::Arc<Balancer>,
    target: usize,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.balancer.health[self.target]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Balancer {
    pub algorithm: Algorithm,
    tokens: TokensCountStrategy,
    latency: LatencyStrategy,
    pub hash_header: HeaderName,
    pub retries: u32,
    pub timeouts: Timeouts,
    criteria: Vec<FailoverCriterion>,
    max_fails: u32,
    fail_timeout_ms: u64,
    weights: Vec<u32>,
    health: Vec<TargetHealth>,
    epoch: Instant,
}

impl Balancer {
    pub fn new(config: &BalancerConfig, weights: Vec<u32>) -> Result<Balancer, String> {
        let hash_header = HeaderName::from_bytes(config.hash_on_header.as_bytes())
            .map_err(|_| "balancer.hash_on_header is not a valid header name".to_string())?;
        Ok(Balancer {
            algorithm: config.algorithm,
            tokens: config.tokens_count_strategy,
            latency: config.latency_strategy,
            hash_header,
            retries: config.retries,
            timeouts: Timeouts {
                connect: Duration::from_millis(config.connect_timeout),
                read: Duration::from_millis(config.read_timeout),
                write: Duration::from_millis(config.write_timeout),
            },
            criteria: config.failover_criteria.clone(),
            max_fails: config.max_fails,
            fail_timeout_ms: config.fail_timeout,
            health: weights.iter().map(|_| TargetHealth::default()).collect(),
            weights: weights.into_iter().map(|w| w.max(1)).collect(),
            epoch: Instant::now(),
        })
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    fn now_ms(&self) -> u64 {
        // Never 0, which means "closed" in `open_until`.
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn listed(&self, c: FailoverCriterion) -> bool {
        self.criteria.contains(&c)
    }

    fn status_listed(&self, status: u16) -> bool {
        let criterion = match status {
            403 => FailoverCriterion::Http403,
            404 => FailoverCriterion::Http404,
            429 => FailoverCriterion::Http429,
            500 => FailoverCriterion::Http500,
            502 => FailoverCriterion::Http502,
            503 => FailoverCriterion::Http503,
            504 => FailoverCriterion::Http504,
            _ => return false,
        };
        self.listed(criterion)
    }

    /// Whether an upstream status is a failure under `failover_criteria`.
    pub fn is_failure_status(&self, status: u16) -> bool {
        self.status_listed(status)
    }

    /// How a failed upstream call counts; `None` for the client's own mistakes and the client
    /// leaving, which end the request. A refused WebSocket upgrade counts as its status does.
    pub fn failure_of(&self, error: &GatewayError) -> Option<Failure> {
        Some(match error {
            GatewayError::UpstreamConnect(_) | GatewayError::Identity(_) => {
                Failure::Error { sent: false }
            }
            GatewayError::UpstreamUnreachable(_) => Failure::Error { sent: true },
            GatewayError::UpstreamConnectTimeout(_) => Failure::Timeout { sent: false },
            GatewayError::UpstreamTimeout(_) => Failure::Timeout { sent: true },
            GatewayError::UpstreamProtocol(_) | GatewayError::Transformation { .. } => {
                Failure::InvalidHeader
            }
            GatewayError::UpstreamRefused(status) if self.is_failure_status(*status) => {
                Failure::Status(*status)
            }
            _ => return None,
        })
    }

    /// nginx's `proxy_next_upstream`: a listed condition moves the request on, except that a
    /// non-idempotent request (every LLM call is a POST) that may have reached the target moves
    /// on only with `non_idempotent` listed.
    pub fn fails_over(&self, failure: Failure, idempotent: bool) -> bool {
        let (listed, sent) = match failure {
            Failure::Error { sent } => (self.listed(FailoverCriterion::Error), sent),
            Failure::Timeout { sent } => (self.listed(FailoverCriterion::Timeout), sent),
            Failure::InvalidHeader => (self.listed(FailoverCriterion::InvalidHeader), true),
            Failure::Status(s) => (self.status_listed(s), true),
        };
        listed && (!sent || idempotent || self.listed(FailoverCriterion::NonIdempotent))
    }

    /// Kong's circuit breaker counts errors, timeouts and invalid answers always, listed
    /// statuses too, and 403/404 never.
    fn counts_against(&self, failure: Failure) -> bool {
        match failure {
            Failure::Status(403 | 404) => false,
            Failure::Status(s) => self.status_listed(s),
            _ => true,
        }
    }

    pub fn circuit(&self, target: usize) -> Circuit {
        let open_until = self.health[target].open_until.load(Ordering::Relaxed);
        if open_until == 0 {
            Circuit::Closed
        } else if self.now_ms() < open_until {
            Circuit::Open
        } else {
            Circuit::HalfOpen
        }
    }

    /// Milliseconds until the first excluded target may be probed again.
    pub fn retry_after_ms(&self) -> u64 {
        let now = self.now_ms();
        self.health
            .iter()
            .map(|h| h.open_until.load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .map(|t| t.saturating_sub(now))
            .min()
            .unwrap_or(0)
    }

    /// Claims the one probe of a half-open target: the first caller moves its exclusion on by
    /// `fail_timeout`, so a probe that never reports back is retried later, not forever.
    fn claim_probe(&self, target: usize) -> bool {
        let health = &self.health[target];
        let open_until = health.open_until.load(Ordering::Relaxed);
        let now = self.now_ms();
        open_until == 0
            || (now >= open_until
                && health
                    .open_until
                    .compare_exchange(
                        open_until,
                        now + self.fail_timeout_ms,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok())
    }

    /// Records an attempt's outcome for the circuit breaker; returns whether it opened the
    /// circuit.
    pub fn record(&self, target: usize, failure: Option<Failure>) -> bool {
        if self.max_fails == 0 {
            return false;
        }
        let health = &self.health[target];
        if !failure.is_some_and(|f| self.counts_against(f)) {
            if failure.is_none() && health.open_until.load(Ordering::Relaxed) != 0 {
                // A successful probe restores the target.
                health.open_until.store(0, Ordering::Relaxed);
                health.fails.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let now = self.now_ms();
        if health.open_until.load(Ordering::Relaxed) != 0 {
            // A failed probe: excluded for another `fail_timeout`.
            health
                .open_until
                .store(now + self.fail_timeout_ms, Ordering::Relaxed);
            return false;
        }
        let start = health.window_start.load(Ordering::Relaxed);
        let fails = if now.saturating_sub(start) > self.fail_timeout_ms {
            health.window_start.store(now, Ordering::Relaxed);
            health.fails.store(1, Ordering::Relaxed);
            1
        } else {
            health.fails.fetch_add(1, Ordering::Relaxed) + 1
        };
        if fails >= self.max_fails {
            health
                .open_until
                .store(now + self.fail_timeout_ms, Ordering::Relaxed);
            health.fails.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Counts an attempt in flight on `target` until the guard is dropped.
    pub fn start_attempt(self: &std::sync::Arc<Self>, target: usize) -> InFlightGuard {
        self.health[target]
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            balancer: self.clone(),
            target,
        }
    }

    /// The usage measure `lowest-usage` balances on.
    pub fn usage_measure(&self, usage: Usage, cost: f64) -> f64 {
        match self.tokens {
            TokensCountStrategy::PromptTokens => usage.prompt_tokens as f64,
            TokensCountStrategy::CompletionTokens => usage.completion_tokens as f64,
            TokensCountStrategy::Cost => cost,
            _ => (usage.prompt_tokens + usage.completion_tokens) as f64,
        }
    }

    /// The latency measure `lowest-latency` balances on: ms per output token, or end to end.
    pub fn latency_measure(&self, elapsed: Duration, usage: Usage) -> f64 {
        let ms = elapsed.as_secs_f64() * 1000.0;
        match self.latency {
            LatencyStrategy::Tpot if usage.completion_tokens > 0 => {
                ms / usage.completion_tokens as f64
            }
            _ => ms,
        }
    }
}

/// The outcome of choosing a target for an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Target(usize),
    /// Every target not yet tried is excluded by the circuit breaker.
    AllExcluded,
    /// Every target has been tried.
    Exhausted,
}

/// A decaying peak EWMA of one target's latency.
#[derive(Debug, Clone, Copy, Default)]
struct Ewma {
    value: f64,
    at: Option<Instant>,
}

impl Ewma {
    /// The average now: it decays towards 0 while the target is not observed, so a target that
    /// was slow is tried again eventually.
    fn score(&self, now: Instant) -> f64 {
        match self.at {
            None => 0.0,
            Some(at) => {
                let idle = now.saturating_duration_since(at).as_secs_f64();
                self.value * (-idle / LATENCY_DECAY.as_secs_f64()).exp()
            }
        }
    }

    fn observe(&mut self, sample: f64, now: Instant) {
        let current = self.score(now);
        self.value = if self.at.is_none() || sample > current {
            sample
        } else {
            current + (sample - current) * LATENCY_ALPHA
        };
        self.at = Some(now);
    }
}

/// One worker's balancing state for one route.
#[derive(Debug, Default)]
pub struct BalancerState {
    /// Smooth weighted round-robin (nginx's) current weights.
    current: Vec<i64>,
    latency: Vec<Ewma>,
    usage: Vec<f64>,
}

impl BalancerState {
    pub fn new(targets: usize) -> BalancerState {
        BalancerState {
            current: vec![0; targets],
            latency: vec![Ewma::default(); targets],
            usage: vec![0.0; targets],
        }
    }

    /// Chooses a target that has not been `tried`, skipping targets the circuit breaker
    /// excludes; `hash_key` is the value of `hash_on_header`, if the client sent it.
    pub fn pick(&mut self, b: &Balancer, tried: &[usize], hash_key: Option<&[u8]>) -> Pick {
        let untried: Vec<usize> = (0..b.len()).filter(|i| !tried.contains(i)).collect();
        if untried.is_empty() {
            return Pick::Exhausted;
        }
        let mut candidates: Vec<usize> = untried
            .iter()
            .copied()
            .filter(|&i| b.circuit(i) != Circuit::Open)
            .collect();
        while !candidates.is_empty() {
            let chosen = self.choose(b, &candidates, hash_key);
            if b.claim_probe(chosen) {
                return Pick::Target(chosen);
            }
            // Another request is probing this half-open target.
            candidates.retain(|&c| c != chosen);
        }
        Pick::AllExcluded
    }

    fn choose(&mut self, b: &Balancer, candidates: &[usize], hash_key: Option<&[u8]>) -> usize {
        let now = Instant::now();
        match b.algorithm {
            Algorithm::ConsistentHashing => match hash_key {
                Some(key) => rendezvous(key, candidates, &b.weights),
                None => self.round_robin(b, candidates),
            },
            Algorithm::Priority => {
                let top = candidates.iter().map(|&c| b.weights[c]).max().unwrap_or(0);
                let group: Vec<usize> = candidates
                    .iter()
                    .copied()
                    .filter(|&c| b.weights[c] == top)
                    .collect();
                self.round_robin(b, &group)
            }
            Algorithm::LeastConnections => self.lowest(b, candidates, |_, c| {
                f64::from(b.health[c].in_flight.load(Ordering::Relaxed)) / f64::from(b.weights[c])
            }),
            Algorithm::LowestLatency => {
                self.lowest(b, candidates, |state, c| state.latency[c].score(now))
            }
            Algorithm::LowestUsage => self.lowest(b, candidates, |state, c| {
                state.usage[c] / f64::from(b.weights[c])
            }),
            Algorithm::RoundRobin | Algorithm::Semantic => self.round_robin(b, candidates),
        }
    }

    /// The candidates with the lowest score, round-robin among ties.
    fn lowest(
        &mut self,
        b: &Balancer,
        candidates: &[usize],
        score: impl Fn(&BalancerState, usize) -> f64,
    ) -> usize {
        let scores: Vec<f64> = candidates.iter().map(|&c| score(self, c)).collect();
        let min = scores.iter().copied().fold(f64::INFINITY, f64::min);
        let tied: Vec<usize> = candidates
            .iter()
            .zip(&scores)
            .filter(|(_, &s)| s <= min)
            .map(|(&c, _)| c)
            .collect();
        self.round_robin(b, &tied)
    }

    /// nginx's smooth weighted round-robin over `candidates`.
    fn round_robin(&mut self, b: &Balancer, candidates: &[usize]) -> usize {
        let mut total = 0i64;
        let mut best = candidates[0];
        for &c in candidates {
            let w = i64::from(b.weights[c]);
            self.current[c] += w;
            total += w;
            if self.current[c] > self.current[best] {
                best = c;
            }
        }
        self.current[best] -= total;
        best
    }

    /// Learns from a completed attempt (lowest-latency and lowest-usage).
    pub fn observe(
        &mut self,
        b: &Balancer,
        target: usize,
        elapsed: Duration,
        usage: Usage,
        cost: f64,
    ) {
        match b.algorithm {
            Algorithm::LowestLatency => {
                let sample = b.latency_measure(elapsed, usage);
                self.latency[target].observe(sample, Instant::now());
            }
            Algorithm::LowestUsage => self.usage[target] += b.usage_measure(usage, cost),
            _ => {}
        }
    }
}

/// Weighted rendezvous hashing: the same key always picks the same target while it is
/// available, and only the keys of a target that goes away move.
fn rendezvous(key: &[u8], candidates: &[usize], weights: &[u32]) -> usize {
    let mut best = (candidates[0], f64::NEG_INFINITY);
    for &c in candidates {
        let mut h = fnv1a(key);
        h = fnv1a_extend(h, &(c as u64).to_le_bytes());
        // Uniform in (0, 1), then the weighted score -w / ln(u).
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -f64::from(weights[c]) / u.ln();
        if score > best.1 {
            best = (c, score);
        }
    }
    best.0
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(FNV_OFFSET, bytes)
}

fn fnv1a_extend(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // A final avalanche so nearby keys spread over the whole range.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests;
