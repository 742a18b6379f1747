use super::*;
use crate::config::ai_proxy_advanced::BalancerConfig;

fn balancer(
    algorithm: Algorithm,
    weights: &[u32],
    edit: impl FnOnce(&mut BalancerConfig),
) -> Balancer {
    let mut config = BalancerConfig {
        algorithm,
        ..BalancerConfig::default()
    };
    edit(&mut config);
    Balancer::new(&config, weights.to_vec()).unwrap()
}

fn counts(b: &Balancer, state: &mut BalancerState, n: usize) -> Vec<usize> {
    let mut out = vec![0; b.len()];
    for _ in 0..n {
        match state.pick(b, &[], None) {
            Pick::Target(t) => out[t] += 1,
            other => panic!("no target: {other:?}"),
        }
    }
    out
}

#[test]
fn round_robin_follows_the_weights_exactly_over_a_cycle() {
    let b = balancer(Algorithm::RoundRobin, &[70, 25, 5], |_| {});
    let mut state = BalancerState::new(3);
    assert_eq!(counts(&b, &mut state, 100), vec![70, 25, 5]);
}

#[test]
fn round_robin_skips_tried_targets_and_reports_exhaustion() {
    let b = balancer(Algorithm::RoundRobin, &[1, 1], |_| {});
    let mut state = BalancerState::new(2);
    let Pick::Target(first) = state.pick(&b, &[], None) else {
        panic!()
    };
    assert_eq!(state.pick(&b, &[first], None), Pick::Target(1 - first));
    assert_eq!(state.pick(&b, &[0, 1], None), Pick::Exhausted);
}

#[test]
fn consistent_hashing_is_sticky_and_spreads_keys() {
    let b = balancer(Algorithm::ConsistentHashing, &[100, 100, 100], |_| {});
    let mut state = BalancerState::new(3);
    let mut seen = [0; 3];
    for user in 0..300 {
        let key = format!("user-{user}");
        let Pick::Target(t) = state.pick(&b, &[], Some(key.as_bytes())) else {
            panic!()
        };
        for _ in 0..3 {
            assert_eq!(state.pick(&b, &[], Some(key.as_bytes())), Pick::Target(t));
        }
        seen[t] += 1;
    }
    assert!(seen.iter().all(|&n| n > 60), "uneven spread: {seen:?}");
}

#[test]
fn priority_uses_the_heaviest_group_until_it_is_all_tried() {
    let b = balancer(Algorithm::Priority, &[70, 70, 25], |_| {});
    let mut state = BalancerState::new(3);
    assert_eq!(counts(&b, &mut state, 10), vec![5, 5, 0]);
    assert!(matches!(state.pick(&b, &[0], None), Pick::Target(1)));
    assert_eq!(state.pick(&b, &[0, 1], None), Pick::Target(2));
}

#[test]
fn lowest_latency_prefers_the_fast_target_and_forgives_over_time() {
    let b = balancer(Algorithm::LowestLatency, &[100, 100], |c| {
        c.latency_strategy = LatencyStrategy::E2e
    });
    let mut state = BalancerState::new(2);
    state.observe(&b, 0, Duration::from_millis(300), Usage::default(), 0.0);
    state.observe(&b, 1, Duration::from_millis(10), Usage::default(), 0.0);
    assert_eq!(counts(&b, &mut state, 20), vec![0, 20]);
    // An hour without observations decays the slow target's average below the fast one's.
    state.latency[0].at = Some(Instant::now() - Duration::from_secs(3600));
    assert_eq!(state.pick(&b, &[], None), Pick::Target(0));
}

#[test]
fn tpot_divides_by_output_tokens() {
    let b = balancer(Algorithm::LowestLatency, &[1], |_| {});
    let usage = Usage {
        prompt_tokens: 3,
        completion_tokens: 10,
        ..Usage::default()
    };
    assert_eq!(b.latency_measure(Duration::from_millis(500), usage), 50.0);
}

#[test]
fn lowest_usage_balances_tokens_per_weight() {
    let b = balancer(Algorithm::LowestUsage, &[100, 100], |_| {});
    let mut state = BalancerState::new(2);
    let usage = Usage {
        prompt_tokens: 10,
        completion_tokens: 10,
        ..Usage::default()
    };
    state.observe(&b, 0, Duration::ZERO, usage, 0.0);
    assert_eq!(counts(&b, &mut state, 5), vec![0, 5]);
}

#[test]
fn least_connections_avoids_busy_targets() {
    let b = std::sync::Arc::new(balancer(Algorithm::LeastConnections, &[100, 100], |_| {}));
    let mut state = BalancerState::new(2);
    let _busy = b.start_attempt(0);
    assert_eq!(state.pick(&b, &[], None), Pick::Target(1));
    drop(_busy);
}

#[test]
fn failover_follows_nginx_semantics() {
    let b = balancer(Algorithm::RoundRobin, &[1, 1], |c| {
        c.failover_criteria = vec![
            FailoverCriterion::Error,
            FailoverCriterion::Timeout,
            FailoverCriterion::Http500,
        ]
    });
    // Not yet sent: always moves on.
    assert!(b.fails_over(Failure::Error { sent: false }, false));
    assert!(b.fails_over(Failure::Timeout { sent: false }, false));
    // Sent, non-idempotent (POST): only with non_idempotent listed.
    assert!(!b.fails_over(Failure::Status(500), false));
    assert!(b.fails_over(Failure::Status(500), true));
    assert!(!b.fails_over(Failure::Status(429), true));
    let b = balancer(Algorithm::RoundRobin, &[1, 1], |c| {
        c.failover_criteria = vec![FailoverCriterion::Http429, FailoverCriterion::NonIdempotent]
    });
    assert!(b.fails_over(Failure::Status(429), false));
    assert!(!b.fails_over(Failure::Status(500), false));
    assert!(!b.fails_over(Failure::Error { sent: false }, false));
}

#[test]
fn breaker_opens_after_max_fails_probes_once_and_closes_on_success() {
    let b = balancer(Algorithm::RoundRobin, &[1, 1], |c| {
        c.max_fails = 2;
        c.fail_timeout = 50;
        c.failover_criteria = vec![FailoverCriterion::Http500]
    });
    let mut state = BalancerState::new(2);
    assert!(!b.record(0, Some(Failure::Status(404))), "404 never counts");
    assert!(!b.record(0, Some(Failure::Status(500))));
    assert!(b.record(0, Some(Failure::Status(500))));
    assert_eq!(b.circuit(0), Circuit::Open);
    assert_eq!(counts(&b, &mut state, 4), vec![0, 4]);
    assert_eq!(state.pick(&b, &[1], None), Pick::AllExcluded);
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(b.circuit(0), Circuit::HalfOpen);
    // One probe only.
    assert_eq!(state.pick(&b, &[1], None), Pick::Target(0));
    assert_eq!(state.pick(&b, &[1], None), Pick::AllExcluded);
    b.record(0, None);
    assert_eq!(b.circuit(0), Circuit::Closed);
}

#[test]
fn breaker_off_by_default() {
    let b = balancer(Algorithm::RoundRobin, &[1], |_| {});
    for _ in 0..100 {
        b.record(0, Some(Failure::Error { sent: false }));
    }
    assert_eq!(b.circuit(0), Circuit::Closed);
}

#[test]
fn a_refused_websocket_upgrade_counts_as_its_status() {
    let b = balancer(Algorithm::RoundRobin, &[1, 1], |c| {
        c.failover_criteria = vec![FailoverCriterion::Error, FailoverCriterion::Http503];
    });
    assert_eq!(
        b.failure_of(&GatewayError::UpstreamRefused(503)),
        Some(Failure::Status(503))
    );
    // An unlisted refusal is the provider's answer, like an unlisted HTTP status.
    assert_eq!(b.failure_of(&GatewayError::UpstreamRefused(401)), None);
    assert_eq!(
        b.failure_of(&GatewayError::UpstreamUnreachable("reset".into())),
        Some(Failure::Error { sent: true })
    );
    assert_eq!(b.failure_of(&GatewayError::BadRequest("x".into())), None);
    let refused = b.failure_of(&GatewayError::UpstreamRefused(503)).unwrap();
    assert!(b.fails_over(refused, true));
}
