//! The admission rule shared by the local and the Redis store (the Redis store runs the same
//! rule in a Lua script; `redis.rs` keeps the two in step).
//!
//! The cost of a request is known only from the provider's answer, so every request in flight
//! is either *reserved* (its cost is bounded: prompt bytes plus `max_tokens`, see
//! `RouteLimits::reservation`) or *unknown*. Each key also has an *estimate* of what its unknown-cost requests cost (see
//! [`next_estimate`]: a running average of the ones that settled, quick to rise and slow to
//! fall), and while requests run side by side each unknown one in flight is counted at
//! [`MARGIN`] times it. A request is admitted
//! 1. as reserved, when in every window `used + reserved in flight + unknown in flight counted
//!    at the estimate + its reservation <= limit` (with no estimate yet: only while no unknown
//!    request is in flight); or
//! 2. as unknown, side by side with others, when it has no cost bound, the key has an estimate
//!    and in every window `used + reserved in flight + (unknown in flight + 1) x MARGIN x
//!    estimate <= limit`; or
//! 3. as unknown, one at a time (no estimate yet, near the limit, or a bound that does not
//!    fit), when this instance has no unknown request in flight for the key and, in every
//!    window, `used + reserved in flight < limit`;
//!
//! and otherwise waits (budget committed to requests in flight), unless some window is already
//! exhausted (`used >= limit`), which refuses it. Nothing is refused while the window has
//! budget left. The tokens admitted in a window exceed the limit by at most the cost of one
//! unknown request per instance (rule 3), plus whatever the unknown requests in flight side by
//! side (rule 2) cost beyond MARGIN x the estimate they were counted at. So while a key's
//! requests cost on average no more than twice its estimate, the bound is the limit plus one
//! request per instance, as with one unknown request at a time.

use smallvec::SmallVec;

/// While unknown-cost requests run side by side, each is counted at this many times its key's
/// estimate, so that they are admitted only while the window is well below its limit and a
/// burst of requests costlier than usual (up to twice the average) still fits.
pub const MARGIN: f64 = 2.0;

/// A key's estimate of an unknown-cost request's cost after one settled at `cost`: the first
/// sets it; a costlier one moves it half-way up at once, a cheaper one an eighth of the way
/// down, so the estimate errs high. Requests that counted nothing (failed, released) say
/// nothing about the cost and leave it.
pub fn next_estimate(estimate: Option<f64>, cost: f64) -> Option<f64> {
    if cost <= 0.0 || !cost.is_finite() {
        return estimate;
    }
    Some(match estimate {
        None => cost,
        Some(e) if cost > e => e + (cost - e) / 2.0,
        Some(e) => e + (cost - e) / 8.0,
    })
}

/// One limit: at most `limit` tokens (or cost) per `size` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub limit: f64,
    pub size: u64,
}

/// A window as the store sees it now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    pub used: f64,
    /// Milliseconds until the current window ends.
    pub reset_ms: u64,
}

/// Every window of a request's keys as the store saw them: key by key, each key's windows in
/// order (see `Ticket::per_key`). Inline for the usual one key with a few windows.
pub type SeenAll = SmallVec<[Seen; 4]>;

/// What is in flight for a key.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InFlight {
    /// Sum of the reservations of reserved requests.
    pub reserved: f64,
    /// Unknown-cost requests, everywhere.
    pub unknown: u32,
    /// Unknown-cost requests of this instance.
    pub unknown_here: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Admitted with this reservation (0 = unknown cost).
    Admit(f64),
    Wait,
    Refuse,
}

/// The verdict on a request with `reserve` (its cost bound, if it has one) for a key whose
/// windows stand at `seen`, with `flight` in flight and `estimate` (see [`next_estimate`]).
pub fn decide(
    windows: &[Window],
    seen: &[Seen],
    flight: InFlight,
    estimate: Option<f64>,
    reserve: Option<f64>,
) -> Verdict {
    let pairs = || windows.iter().zip(seen);
    if pairs().any(|(w, s)| s.used >= w.limit) {
        return Verdict::Refuse;
    }
    let each = estimate.filter(|e| *e > 0.0).map(|e| MARGIN * e);
    // The unknown requests in flight, counted at the estimate; with none yet, nothing is
    // known to fit beside them.
    let unknown = match (flight.unknown, each) {
        (0, _) => Some(0.0),
        (n, Some(each)) => Some(f64::from(n) * each),
        (_, None) => None,
    };
    let reserve = reserve.filter(|r| *r > 0.0);
    if let (Some(r), Some(unknown)) = (reserve, unknown) {
        if pairs().all(|(w, s)| s.used + flight.reserved + unknown + r <= w.limit) {
            return Verdict::Admit(r);
        }
    }
    // A request whose bound does not fit is not counted at the estimate: it may cost that much.
    if let (None, Some(each), Some(unknown)) = (reserve, each, unknown) {
        if pairs().all(|(w, s)| s.used + flight.reserved + unknown + each <= w.limit) {
            return Verdict::Admit(0.0);
        }
    }
    if flight.unknown_here == 0 && pairs().all(|(w, s)| s.used + flight.reserved < w.limit) {
        return Verdict::Admit(0.0);
    }
    Verdict::Wait
}

/// A fixed or sliding window counter: the current window's total and the previous one's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counter {
    /// `now / size`, the window this counter's `current` belongs to.
    pub window: u64,
    pub current: f64,
    pub previous: f64,
}

impl Counter {
    /// Moves the counter to the window of `now_ms`.
    pub fn roll(&mut self, size: u64, now_ms: u64) {
        let window = now_ms / (size * 1000);
        if window == self.window {
            return;
        }
        self.previous = if window == self.window + 1 {
            self.current
        } else {
            0.0
        };
        self.current = 0.0;
        self.window = window;
    }

    /// Kong's sliding window weighs the previous window by the part of it still inside the
    /// last `size` seconds; a fixed window counts the current one only.
    pub fn seen(&self, size: u64, now_ms: u64, sliding: bool) -> Seen {
        let size_ms = size * 1000;
        let into = now_ms - self.window * size_ms;
        let used = if sliding {
            self.current + self.previous * (size_ms - into) as f64 / size_ms as f64
        } else {
            self.current
        };
        Seen {
            used,
            reset_ms: size_ms - into,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: [Window; 1] = [Window {
        limit: 1000.0,
        size: 60,
    }];

    fn seen(used: f64) -> [Seen; 1] {
        [Seen { used, reset_ms: 1 }]
    }

    /// `W`, unused, and a one-second window of `limit` with `used` spent.
    fn with_second_window(limit: f64, used: f64) -> ([Window; 2], [Seen; 2]) {
        let second = Window { limit, size: 1 };
        ([W[0], second], [seen(0.0)[0], seen(used)[0]])
    }

    #[test]
    fn reserved_requests_run_side_by_side_while_their_bounds_fit() {
        let flight = InFlight {
            reserved: 600.0,
            ..InFlight::default()
        };
        assert_eq!(
            decide(&W, &seen(300.0), flight, None, Some(100.0)),
            Verdict::Admit(100.0)
        );
        // 300 + 600 + 150 > 1000: the rest is committed; one unknown request may still go.
        assert_eq!(
            decide(&W, &seen(300.0), flight, None, Some(150.0)),
            Verdict::Admit(0.0)
        );
    }

    #[test]
    fn a_committed_budget_makes_requests_wait_not_fail() {
        let flight = InFlight {
            reserved: 0.0,
            unknown: 1,
            unknown_here: 1,
        };
        assert_eq!(
            decide(&W, &seen(10.0), flight, None, Some(5.0)),
            Verdict::Wait
        );
        assert_eq!(decide(&W, &seen(10.0), flight, None, None), Verdict::Wait);
        let elsewhere = elsewhere(flight);
        assert_eq!(
            decide(&W, &seen(10.0), elsewhere, None, None),
            Verdict::Admit(0.0)
        );
        let full = InFlight {
            reserved: 990.0,
            ..InFlight::default()
        };
        assert_eq!(decide(&W, &seen(10.0), full, None, None), Verdict::Wait);
    }

    #[test]
    fn an_exhausted_window_refuses() {
        assert_eq!(
            decide(
                &W,
                &seen(1000.0),
                InFlight::default(),
                Some(50.0),
                Some(1.0)
            ),
            Verdict::Refuse
        );
        let (two, both) = with_second_window(10.0, 10.0);
        assert_eq!(
            decide(&two, &both, InFlight::default(), Some(1.0), None),
            Verdict::Refuse
        );
    }

    /// `flight` with none of its unknown requests on this instance.
    fn elsewhere(flight: InFlight) -> InFlight {
        InFlight {
            unknown_here: 0,
            ..flight
        }
    }

    fn unknown(n: u32) -> InFlight {
        InFlight {
            reserved: 0.0,
            unknown: n,
            unknown_here: n,
        }
    }

    #[test]
    fn unknown_requests_run_side_by_side_far_from_the_limit() {
        // Estimate 10, counted at 20 each: 100 used + 40 reserved + (30 + 1) x 20 = 760 fits.
        let flight = InFlight {
            reserved: 40.0,
            ..unknown(30)
        };
        assert_eq!(
            decide(&W, &seen(100.0), flight, Some(10.0), None),
            Verdict::Admit(0.0)
        );
        // Other instances' unknown requests count at the estimate too.
        let elsewhere = elsewhere(flight);
        assert_eq!(
            decide(&W, &seen(100.0), elsewhere, Some(10.0), None),
            Verdict::Admit(0.0)
        );
        // (44 + 1) x 20 = 900 is the most that fits beside 100 used.
        assert_eq!(
            decide(&W, &seen(100.0), unknown(44), Some(10.0), None),
            Verdict::Admit(0.0)
        );
        assert_eq!(
            decide(&W, &seen(100.0), unknown(45), Some(10.0), None),
            Verdict::Wait
        );
    }

    #[test]
    fn near_the_limit_unknown_requests_go_one_at_a_time() {
        // 990 used: 990 + 20 > 1000, so only one unknown request per instance, as without an
        // estimate, and it is still admitted while budget is left.
        assert_eq!(
            decide(&W, &seen(990.0), unknown(0), Some(10.0), None),
            Verdict::Admit(0.0)
        );
        assert_eq!(
            decide(&W, &seen(990.0), unknown(1), Some(10.0), None),
            Verdict::Wait
        );
        let elsewhere = elsewhere(unknown(1));
        assert_eq!(
            decide(&W, &seen(990.0), elsewhere, Some(10.0), None),
            Verdict::Admit(0.0)
        );
        // Any window near its limit makes it serial.
        let (two, both) = with_second_window(50.0, 25.0);
        assert_eq!(
            decide(&two, &both, unknown(1), Some(10.0), None),
            Verdict::Wait
        );
        assert_eq!(
            decide(&two, &both, unknown(0), Some(10.0), None),
            Verdict::Admit(0.0)
        );
    }

    #[test]
    fn without_an_estimate_unknown_requests_go_one_at_a_time() {
        assert_eq!(
            decide(&W, &seen(0.0), unknown(0), None, None),
            Verdict::Admit(0.0)
        );
        assert_eq!(
            decide(&W, &seen(0.0), unknown(1), None, None),
            Verdict::Wait
        );
        // A zero estimate (nothing learnt) is no estimate.
        assert_eq!(
            decide(&W, &seen(0.0), unknown(1), Some(0.0), None),
            Verdict::Wait
        );
    }

    #[test]
    fn reserved_requests_count_unknown_ones_at_the_estimate() {
        let flight = InFlight {
            reserved: 200.0,
            ..unknown(5)
        };
        // 300 + 200 + 5 x 20 + 400 = 1000 fits; without an estimate it waits for the five.
        assert_eq!(
            decide(&W, &seen(300.0), flight, Some(10.0), Some(400.0)),
            Verdict::Admit(400.0)
        );
        assert_eq!(
            decide(&W, &seen(300.0), flight, None, Some(400.0)),
            Verdict::Wait
        );
        // One token more does not fit: it may go as the instance's one unknown request only
        // when it has none in flight.
        assert_eq!(
            decide(&W, &seen(300.0), flight, Some(10.0), Some(401.0)),
            Verdict::Wait
        );
        let elsewhere = elsewhere(flight);
        assert_eq!(
            decide(&W, &seen(300.0), elsewhere, Some(10.0), Some(401.0)),
            Verdict::Admit(0.0)
        );
    }

    #[test]
    fn a_spent_window_refuses_whatever_is_in_flight() {
        for flight in [unknown(0), unknown(3)] {
            for estimate in [None, Some(1.0)] {
                for reserve in [None, Some(1.0)] {
                    assert_eq!(
                        decide(&W, &seen(1000.5), flight, estimate, reserve),
                        Verdict::Refuse
                    );
                }
            }
        }
    }

    #[test]
    fn the_estimate_rises_fast_and_falls_slowly() {
        assert_eq!(next_estimate(None, 0.0), None, "nothing counted");
        assert_eq!(next_estimate(None, 80.0), Some(80.0));
        assert_eq!(next_estimate(Some(80.0), 160.0), Some(120.0));
        assert_eq!(next_estimate(Some(80.0), 0.0), Some(80.0));
        assert_eq!(next_estimate(Some(80.0), 40.0), Some(75.0));
        assert_eq!(next_estimate(Some(80.0), f64::NAN), Some(80.0));
    }

    #[test]
    fn counters_roll_and_slide() {
        let mut c = Counter::default();
        c.roll(10, 5_000);
        c.current = 100.0;
        c.roll(10, 12_500);
        assert_eq!((c.current, c.previous), (0.0, 100.0));
        // 2.5 s into the new window: 75 % of the previous one still counts.
        assert_eq!(c.seen(10, 12_500, true).used, 75.0);
        assert_eq!(c.seen(10, 12_500, false).used, 0.0);
        assert_eq!(c.seen(10, 12_500, false).reset_ms, 7_500);
        c.roll(10, 40_000);
        assert_eq!((c.current, c.previous), (0.0, 0.0), "a gap forgets both");
    }
}
