//! Token limits shared by several gateway instances through a real Redis (Debian's
//! redis-server, installed when missing), behind a real nginx round-robining between them:
//! the admitted tokens stay within the stated bound under 32 concurrent OpenAI SDK clients,
//! streams count across instances, and a Redis that dies fails open (logged, still limited by
//! each instance's own counts) or closed (503, quickly) and the limits resume when it is back,
//! also under steady traffic; the batched Lua script decides as `admission::decide`;
//! `sync_rate > 0` counts locally and holds its bound; Redis over TLS (`ssl: true`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const ALICE: &str = "alice-key-0001";

/// Chat routes (path, `ai-rate-limiting-advanced` config) with key-auth, for Alice.
fn deck(mock_port: u16, routes: &[(&str, String)]) -> String {
    let routes: Vec<(&str, String)> = routes
        .iter()
        .map(|(path, limit)| {
            let plugins = plugin("key-auth", "{}") + &plugin("ai-rate-limiting-advanced", limit);
            (*path, plugins)
        })
        .collect();
    let alice =
        format!("consumers:\n  - username: alice\n    keyauth_credentials: [{{key: {ALICE}}}]\n");
    consumer_deck(mock_port, &routes, &alice)
}

/// The fixed window of [`redis_limit`], in seconds: an hour, so that a test rarely has to wait
/// for one that outlasts it (see [`in_one_window`]).
const WINDOW: u64 = 3600;
const REMAINING: &str = "x-ai-ratelimit-remaining-3600-openai";

/// `tokens` per [`WINDOW`] (fixed) counted in the Redis at `port`; `extra` adds fields.
fn redis_limit(port: u16, tokens: u64, extra: &str) -> String {
    format!("{{strategy: redis, window_type: fixed, redis: {{host: 127.0.0.1, port: {port}, timeout: 1000}}, llm_providers: [{{name: openai, limit: [{tokens}], window_size: [{WINDOW}]}}], {extra}}}")
}

/// Starts the test in a window with two minutes left (a flood lasts at most one): the counts
/// it checks would start again from zero where a window ends.
fn in_one_window() {
    wait_for_window_room(WINDOW, Duration::from_secs(120));
}

fn chat(port: u16, path: &str, stream: bool) -> Response {
    chat_as(port, path, ALICE, stream)
}

#[test]
fn two_instances_behind_nginx_hold_one_limit_under_32_clients() {
    in_one_window();
    let redis = start_redis_on(None);
    let mock = start_mock();
    let limit = redis_limit(redis.port, 1000, "sync_rate: 0");
    let path = write_deck(&deck(mock.port, &[("/chat", limit)]));
    let gateways = [start_gateway(&path, &[]), start_gateway(&path, &[])];
    let nginx = start_nginx(&[gateways[0].port, gateways[1].port]);

    let base = nginx.url("/chat");
    let out = run_python(
        "limits_client.py",
        &["flood", &base, ALICE, "32", "16", "60"],
    );
    let results: Vec<Value> = serde_json::from_str(&out).unwrap();
    let ok: Vec<&Value> = results.iter().filter(|r| r["status"] == 200).collect();
    let admitted: u64 = ok
        .iter()
        .map(|r| r["usage"]["total_tokens"].as_u64().unwrap())
        .sum();
    let largest = ok
        .iter()
        .map(|r| r["usage"]["total_tokens"].as_u64().unwrap())
        .max()
        .unwrap();
    let refused: Vec<&Value> = results.iter().filter(|r| r["status"] != 200).collect();
    eprintln!(
        "admitted {admitted} tokens in {} requests (largest {largest}); {} refused",
        ok.len(),
        refused.len()
    );
    assert_eq!(refused.len(), 32, "every client was refused once");
    assert!(refused.iter().all(|r| r["status"] == 429), "{refused:?}");
    // The stated bound: the limit plus one request per instance.
    assert!(admitted <= 1000 + 2 * largest, "admitted {admitted}");
    // Nothing is refused while the window has budget: refusals only once it is spent.
    assert!(admitted >= 1000, "refused early at {admitted}");
    for gw in &gateways {
        assert!(gw.logs().contains("consumer=\"alice\"") || gw.logs().contains("consumer=alice"));
    }
    let served = mock_stats(&mock)["requests"].as_u64().unwrap();
    assert_eq!(
        served,
        ok.len() as u64,
        "refused requests never reached the provider"
    );
}

#[test]
fn streams_count_across_instances() {
    in_one_window();
    let redis = start_redis_on(None);
    let mock = start_mock();
    let limit = redis_limit(redis.port, 1000, "sync_rate: 0");
    let path = write_deck(&deck(mock.port, &[("/chat", limit)]));
    let (a, b) = (start_gateway(&path, &[]), start_gateway(&path, &[]));
    let remaining = |r: &Response| -> u64 { r.header(REMAINING).unwrap().parse().unwrap() };
    let first = chat(a.port, "/chat", true);
    assert_eq!(first.status, 200);
    assert_eq!(remaining(&first), 1000);
    assert!(
        poll_until(Duration::from_secs(5), || remaining(&chat(
            b.port, "/chat", false
        )) >= 1),
        "instance b answers"
    );
    // The stream on a (8 tokens) and the buffered calls are all seen by b.
    let seen = chat(b.port, "/chat", false);
    assert!(
        remaining(&seen) <= 1000 - 8,
        "the stream on the other instance counted"
    );
}

#[test]
fn redis_down_fails_open_or_closed_quickly_and_limits_resume() {
    in_one_window();
    let redis = start_redis_on(None);
    let redis_port = redis.port;
    let mock = start_mock();
    let open = redis_limit(redis_port, 30, "sync_rate: 0");
    let closed = redis_limit(redis_port, 30, "sync_rate: 0, fault_tolerant: false");
    let path = write_deck(&deck(mock.port, &[("/open", open), ("/closed", closed)]));
    let (gw, status_port) = start_gateway_with_status(&path, &[]);
    assert_eq!(chat(gw.port, "/open", false).status, 200);
    assert_eq!(chat(gw.port, "/closed", false).status, 200);

    drop(redis); // killed by its PID
    let started = Instant::now();
    let served = chat(gw.port, "/open", false);
    assert_eq!(served.status, 200, "fail-open serves: {}", served.text());
    let served_at = served
        .header(REMAINING)
        .expect("fail-open still limits, with this instance's counts");
    assert_eq!(served_at, "22", "the 8 tokens counted before the outage");
    assert!(gw.wait_for_log("rate-limit store unreachable", Duration::from_secs(5)));
    assert!(
        gateway_status(status_port)["rate_limit_failed_open"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let refused = chat(gw.port, "/closed", false);
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("rate limiting is unavailable"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "never hangs on Redis"
    );
    let quick = Instant::now();
    assert_eq!(chat(gw.port, "/closed", false).status, 503);
    assert!(
        quick.elapsed() < Duration::from_millis(1000),
        "the circuit answers at once"
    );

    // Failing open still limits: this instance's own counts (8 + 8 so far) reach the limit.
    let mut admitted = 16;
    let refused = loop {
        let r = chat(gw.port, "/open", false);
        if r.status != 200 {
            break r;
        }
        admitted += r.json()["usage"]["total_tokens"].as_u64().unwrap();
        assert!(admitted < 100, "fail-open over-admits without bound");
    };
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert!(refused.header("retry-after").is_some());
    assert!((30..38).contains(&admitted), "admitted {admitted} of 30");
    let warned = gw
        .logs()
        .matches("limiting with this instance's own counts")
        .count();
    assert_eq!(warned, 1, "an outage is logged once, not per request");
    assert_eq!(
        mock_stats(&mock)["requests"].as_u64().unwrap(),
        admitted / 8 + 1,
        "the refused requests never reached the provider (one /closed call did)"
    );

    // Redis is back (empty): the limit holds again.
    let _redis = start_redis_on(Some(redis_port));
    let back = poll_until(Duration::from_secs(10), || {
        chat(gw.port, "/closed", false).status == 200
    });
    assert!(back, "limits resume when Redis returns");
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(chat(gw.port, "/closed", false).status);
    }
    assert!(statuses.contains(&429), "counting again: {statuses:?}");
}

/// Requests that keep failing open (and settling) while Redis is away do not hold the
/// connection's circuit open: once Redis is back, the requests are counted in it again.
#[test]
fn redis_returns_under_steady_fail_open_traffic() {
    let redis = start_redis_on(None);
    let redis_port = redis.port;
    let mock = start_mock();
    let open = redis_limit(redis_port, 1_000_000, "sync_rate: 0");
    let path = write_deck(&deck(mock.port, &[("/open", open)]));
    let (gw, status_port) = start_gateway_with_status(&path, &[]);
    assert_eq!(chat(gw.port, "/open", false).status, 200);
    let failed_open = || {
        gateway_status(status_port)["rate_limit_failed_open"]
            .as_u64()
            .unwrap()
    };
    drop(redis);
    // Served (and settled) throughout, every one failing open, for longer than the circuit's
    // second.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(chat(gw.port, "/open", false).status, 200);
    }
    assert!(failed_open() > 0);
    let _redis = start_redis_on(Some(redis_port));
    let back = poll_until(Duration::from_secs(10), || {
        let before = failed_open();
        (0..5).all(|_| chat(gw.port, "/open", false).status == 200) && failed_open() == before
    });
    assert!(back, "still failing open after Redis returned");
}

#[test]
fn unknown_cost_calls_run_side_by_side_with_an_estimate_shared_through_redis() {
    let redis = start_redis_on(None);
    let mock = start_mock();
    let limit = |sync: &str| {
        format!("{{strategy: redis, window_type: fixed, redis: {{host: 127.0.0.1, port: {}, timeout: 1000}}, llm_providers: [{{name: openai, limit: [{UNKNOWN_COST_LIMIT}], window_size: [{UNKNOWN_COST_WINDOW}]}}], sync_rate: {sync}}}", redis.port)
    };
    let routes = [("/shared", limit("0")), ("/synced", limit("0.25"))];
    let path = write_deck(&deck(mock.port, &routes));
    let (a, b) = (start_gateway(&path, &[]), start_gateway(&path, &[]));
    // b runs calls side by side on the estimate a's first call left in Redis.
    assert_unknown_cost_admission(&mock, a.port, b.port, "/shared", ALICE);
    // sync_rate > 0 admits from the instance's own counters and estimate.
    assert_unknown_cost_admission(&mock, a.port, a.port, "/synced", ALICE);
}

/// The Redis script decides as `admission::decide` does: a pseudo-random run of script calls
/// (two instances, each with its link; each call carries settlements of the link's claims, then
/// admissions, several at once, which contend for what is left; admissions with and without
/// reservations, on one key or on two at once) against a real Redis, checked step by step
/// against the Rust rule fed with the same claims, counts and estimates, applied in the call's
/// order.
#[test]
fn the_redis_scripts_run_the_admission_rule() {
    use ai_gateway::limits::admission::{decide, next_estimate, InFlight, Seen, Verdict, Window};
    use ai_gateway::limits::redis::{Batch, Held};

    /// One key as the rule sees it: claims in flight (instance, ticket, reservation), tokens
    /// counted, estimate.
    #[derive(Default)]
    struct Model {
        claims: Vec<(&'static str, u64, f64)>,
        used: f64,
        estimate: Option<f64>,
    }
    impl Model {
        fn flight(&self, here: &str) -> InFlight {
            let mut flight = InFlight::default();
            for (instance, _, r) in &self.claims {
                if *r > 0.0 {
                    flight.reserved += r;
                } else {
                    flight.unknown += 1;
                    flight.unknown_here += u32::from(*instance == here);
                }
            }
            flight
        }
    }

    let redis = start_redis_on(None);
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    // The second key's budget runs out first, so two-key admissions stop at it.
    let keys = [
        (
            "aigw:rl:test:openai:alice",
            [Window {
                limit: 6000.0,
                size: 86_400,
            }],
        ),
        (
            "aigw:rl:test:mistral:alice",
            [Window {
                limit: 2500.0,
                size: 86_400,
            }],
        ),
    ];
    // The run's counts are checked against one window's.
    wait_for_window_room(86_400, Duration::from_secs(60));
    let lease = Duration::from_secs(60);
    actix_rt::System::new().block_on(async {
        let mut conn = redis::Client::open(url)
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap();
        let mut models = [Model::default(), Model::default()];
        let instances = ["a", "b"];
        let links = ["a.0", "b.0"];
        let mut held = [Held::default(), Held::default()];
        let mut seed = 0x2545_f491_u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % n
        };
        let mut verdicts = std::collections::HashMap::new();
        let mut ticket = 0;
        for call in 0..300 {
            let h = next(2) as usize;
            let here = instances[h];
            let mut batch = Batch::new(links[h], here, lease);
            // Settlements first: some of this link's claims in flight, on either key.
            for _ in 0..next(7) {
                let k = next(2) as usize;
                let model = &mut models[k];
                let mine: Vec<usize> = (0..model.claims.len())
                    .filter(|&i| model.claims[i].0 == here)
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let (_, _, r) = model.claims.remove(mine[next(mine.len() as u64) as usize]);
                let tokens = next(60) as f64;
                let (key, windows) = &keys[k];
                batch.settle(key, windows, tokens, r == 0.0);
                held[h].release(key, r);
                model.used += tokens;
                if r == 0.0 {
                    model.estimate = next_estimate(model.estimate, tokens);
                }
            }
            // Then admissions, each decided after the ones before it in the call.
            let mut expected = Vec::new();
            // The link holds what was admitted once the answer is in.
            let mut admitted = Vec::new();
            for _ in 0..1 + next(6) {
                ticket += 1;
                // Some reservations have more digits than Lua prints.
                let reserve = match next(6) {
                    0 | 1 => Some((1 + next(8)) as f64 * 25.0),
                    2 => Some((1 + next(8)) as f64 * 25.0 + 1.0 / 3.0),
                    _ => None,
                };
                let on = if next(4) == 0 { &[0, 1][..] } else { &[0][..] };
                let beside = models[0].flight(here).unknown_here > 0;
                let mut judged = Vec::new();
                for &k in on {
                    let model = &models[k];
                    let seen = vec![Seen {
                        used: model.used,
                        reset_ms: 0,
                    }];
                    let verdict = decide(
                        &keys[k].1,
                        &seen,
                        model.flight(here),
                        model.estimate,
                        reserve,
                    );
                    judged.push((k, verdict, seen));
                    if !matches!(verdict, Verdict::Admit(_)) {
                        break;
                    }
                }
                if judged.len() == on.len()
                    && judged.iter().all(|j| matches!(j.1, Verdict::Admit(_)))
                {
                    for (k, verdict, _) in &judged {
                        if let Verdict::Admit(r) = verdict {
                            models[*k].claims.push((here, ticket, *r));
                            admitted.push((keys[*k].0, *r));
                        }
                    }
                }
                let (k, last, _) = judged.last().unwrap();
                let kind = match (last, judged.len(), k) {
                    (Verdict::Admit(r), _, _) if *r > 0.0 => "Admit reserved",
                    (Verdict::Admit(_), 2, _) => "Admit on two keys",
                    (Verdict::Admit(_), _, _) if beside => "Admit unknown side by side",
                    (Verdict::Admit(_), _, _) => "Admit unknown",
                    (Verdict::Wait, _, 1) => "Wait on the second key",
                    (Verdict::Wait, _, _) => "Wait",
                    (Verdict::Refuse, _, _) => "Refuse",
                };
                let windows = on.iter().map(|&k| (keys[k].0, &keys[k].1[..]));
                batch.admit(windows, false, reserve);
                expected.push((judged, kind));
            }
            // What the link holds as the call goes: admissions are held as they are judged.
            let replies = batch.call(&held[h]).run(&mut conn).await.unwrap();
            for (key, r) in admitted {
                held[h].hold(key, r);
            }
            assert_eq!(replies.len(), expected.len(), "call {call}");
            for ((judged, _), reply) in expected.iter().zip(&replies) {
                assert_eq!(
                    reply.len(),
                    judged.len(),
                    "call {call}: {reply:?} {judged:?}"
                );
                for ((k, verdict, seen), (got, got_seen)) in judged.iter().zip(reply) {
                    assert_eq!(got_seen[0].used, seen[0].used, "call {call}, key {k}");
                    assert_eq!(got, verdict, "call {call}, key {k}");
                }
            }
            let kinds: Vec<&str> = expected.iter().map(|(_, kind)| *kind).collect();
            for kind in &kinds {
                *verdicts.entry(kind.to_string()).or_insert(0) += 1;
            }
            // Admissions of one call contending for what is left: some go, the next waits.
            if kinds.iter().any(|k| k.starts_with("Admit"))
                && kinds.iter().any(|k| k.starts_with("Wait"))
            {
                *verdicts
                    .entry("one call admits and waits".to_string())
                    .or_insert(0) += 1;
            }
        }
        eprintln!("{verdicts:?}");
        for kind in [
            "Admit reserved",
            "Admit unknown",
            "Admit unknown side by side",
            "Admit on two keys",
            "Wait",
            "Wait on the second key",
            "Refuse",
            "one call admits and waits",
        ] {
            assert!(verdicts.contains_key(kind), "{kind}: {verdicts:?}");
        }
        // Settling every claim (through the link that holds it) leaves nothing in flight.
        for (h, here) in instances.iter().enumerate() {
            let mut batch = Batch::new(links[h], here, lease);
            for (k, model) in models.iter_mut().enumerate() {
                for (_, _, r) in model.claims.extract_if(.., |c| c.0 == *here) {
                    batch.settle(keys[k].0, &keys[k].1, 1.0, r == 0.0);
                    held[h].release(keys[k].0, r);
                }
            }
            batch.call(&held[h]).run(&mut conn).await.unwrap();
        }
        let lapsing = "aigw:rl:test:lapse:alice";
        let held_keys = |conn: &mut redis::aio::ConnectionManager| {
            let mut conn = conn.clone();
            async move {
                let mut found = Vec::new();
                for key in [keys[0].0, keys[1].0, lapsing] {
                    let fields: Vec<String> = redis::cmd("HKEYS")
                        .arg(format!("{key}:held"))
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    found.extend(fields);
                }
                found
            }
        };
        assert_eq!(held_keys(&mut conn).await, Vec::<String>::new());
        // A link that never settles (its instance died) lapses with its lease: the next call
        // that reads the key drops it, and no longer counts its claim.
        let short = Duration::from_millis(200);
        let mut batch = Batch::new("c.0", "c", short);
        batch.admit([(lapsing, &keys[1].1[..])].into_iter(), false, None);
        let judged = batch.call(&Held::default()).run(&mut conn).await.unwrap();
        assert!(matches!(judged[0][0].0, Verdict::Admit(_)), "{judged:?}");
        assert_eq!(held_keys(&mut conn).await, vec!["c.0".to_string()]);
        let mut batch = Batch::new("c.1", "c", lease);
        batch.admit([(lapsing, &keys[1].1[..])].into_iter(), false, None);
        let judged = batch.call(&Held::default()).run(&mut conn).await.unwrap();
        assert_eq!(
            judged[0][0].0,
            Verdict::Wait,
            "c's unknown-cost request is in flight"
        );
        tokio::time::sleep(short + Duration::from_millis(50)).await;
        let mut batch = Batch::new("a.0", "a", lease);
        batch.settle(lapsing, &keys[1].1, 0.0, false);
        batch.call(&Held::default()).run(&mut conn).await.unwrap();
        assert_eq!(held_keys(&mut conn).await, Vec::<String>::new());
        // A claim whose answer nobody took (the link never held it) is gone with the link's
        // next call, which states what the link holds: settlements are idempotent.
        for expected in [vec!["d.0".to_string()], vec![]] {
            let mut batch = Batch::new("d.0", "d", lease);
            if expected.is_empty() {
                batch.settle(lapsing, &keys[1].1, 0.0, false);
            } else {
                batch.admit([(lapsing, &keys[1].1[..])].into_iter(), false, None);
            }
            batch.call(&Held::default()).run(&mut conn).await.unwrap();
            assert_eq!(held_keys(&mut conn).await, expected);
        }
    });
}

/// Script calls Redis has served (`EVALSHA` and `EVAL`), from `INFO commandstats`.
fn script_calls(redis_port: u16) -> u64 {
    let client = redis::Client::open(format!("redis://127.0.0.1:{redis_port}/")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
fn synced_instances_count_locally_and_hold_the_limit_within_two_sync_intervals() {
    in_one_window();
    let redis = start_redis_on(None);
    let mock = start_mock();
    let every = 0.25;
    let limit = 8000;
    let synced = redis_limit(redis.port, limit, &format!("sync_rate: {every}"));
    let path = write_deck(&deck(mock.port, &[("/chat", synced)]));
    let gateways = [start_gateway(&path, &[]), start_gateway(&path, &[])];
    let nginx = start_nginx(&[gateways[0].port, gateways[1].port]);
    let before = script_calls(redis.port);

    let out = run_python(
        "limits_client.py",
        &["flood", &nginx.url("/chat"), ALICE, "32", "16", "60"],
    );
    let results: Vec<Value> = serde_json::from_str(&out).unwrap();
    let ok: Vec<&Value> = results.iter().filter(|r| r["status"] == 200).collect();
    let tokens = |r: &Value| r["usage"]["total_tokens"].as_u64().unwrap();
    let admitted: u64 = ok.iter().map(|r| tokens(r)).sum();
    let largest = ok.iter().map(|r| tokens(r)).max().unwrap();
    // The most tokens admitted within two sync intervals (one for an instance to add what it
    // counted, one for the others to read it) plus a scheduling margin: requests whose
    // [start, end] overlaps any such span.
    let span = 2.0 * every + 0.25;
    let per_interval = ok
        .iter()
        .map(|r| r["t0"].as_f64().unwrap())
        .map(|from| {
            ok.iter()
                .filter(|r| {
                    r["t1"].as_f64().unwrap() >= from && r["t0"].as_f64().unwrap() <= from + span
                })
                .map(|r| tokens(r))
                .sum::<u64>()
        })
        .max()
        .unwrap();
    let calls = script_calls(redis.port) - before;
    eprintln!(
        "admitted {admitted} tokens in {} requests (at most {per_interval} per {span} s); {calls} Redis script calls",
        ok.len()
    );
    let refused: Vec<&Value> = results.iter().filter(|r| r["status"] != 200).collect();
    assert_eq!(refused.len(), 32, "every client was refused once");
    assert!(refused.iter().all(|r| r["status"] == 429), "{refused:?}");
    assert!(admitted >= limit, "refused early at {admitted}");
    // The stated bound: the limit, plus what was admitted in two sync intervals, plus one
    // request per instance.
    assert!(
        admitted <= limit + per_interval + 2 * largest,
        "admitted {admitted} > {limit} + {per_interval} + 2 x {largest}"
    );
    // Counted locally: Redis sees a sync per key per interval and instance, not two calls per
    // request as with sync_rate 0.
    assert!(
        calls * 4 < ok.len() as u64,
        "{calls} Redis calls for {} requests",
        ok.len()
    );
    assert_eq!(
        mock_stats(&mock)["requests"].as_u64().unwrap(),
        ok.len() as u64,
        "refused requests never reached the provider"
    );
}

#[test]
fn redis_over_tls_shares_limits_and_verifies_certificates_when_asked() {
    in_one_window();
    let (redis, ca) = start_redis_tls();
    let mock = start_mock();
    // The limit as `redis_limit` writes it, on a server that speaks TLS only.
    let tls = |verify: bool, extra: &str| {
        redis_limit(redis.port, 30, extra).replace(
            "timeout: 1000}",
            &format!("timeout: 1000, ssl: true, ssl_verify: {verify}}}"),
        )
    };
    let path = write_deck(&deck(
        mock.port,
        &[
            ("/chat", tls(false, "sync_rate: 0")),
            // The test's private CA is in no trust store: verification refuses the server.
            (
                "/verified",
                tls(true, "sync_rate: 0, fault_tolerant: false"),
            ),
        ],
    ));
    let (a, b) = (start_gateway(&path, &[]), start_gateway(&path, &[]));
    let remaining = |r: &Response| r.header(REMAINING).map(str::to_string);
    let first = chat(a.port, "/chat", false);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(remaining(&first).as_deref(), Some("30"));
    // Instance b sees a's tokens: they went through Redis, over TLS.
    assert!(
        poll_until(Duration::from_secs(5), || remaining(&chat(
            b.port, "/chat", false
        ))
        .as_deref()
        .is_some_and(|r| r.parse::<u64>().unwrap() <= 22)),
        "the other instance saw the tokens"
    );
    assert!(
        !a.logs().contains("rate-limit store unreachable"),
        "{}",
        a.logs()
    );
    let refused = chat(a.port, "/verified", false);
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("rate limiting is unavailable"));
    // With the CA in the trust store (here SSL_CERT_FILE, which replaces the system's) the
    // server is verified, and the limit is the one the other instances count in.
    let trusted = start_gateway(&path, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let verified = chat(trusted.port, "/verified", false);
    assert_eq!(verified.status, 200, "{}", verified.text());
    assert_eq!(remaining(&verified).as_deref(), Some("30"));
    let again = chat(trusted.port, "/verified", false);
    assert!(
        remaining(&again).is_some_and(|r| r.parse::<u64>().unwrap() < 30),
        "counted in Redis: {:?}",
        remaining(&again)
    );
}
