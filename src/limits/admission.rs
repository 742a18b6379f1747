//! The admission rule shared by the local and the Redis store (the Redis store runs the same
//! rule in a Lua script; `redis.rs` keeps the two in step).
//!
//! The cost of a request is known only from the provider's answer, so every request in flight
//! is either *reserved* (its cost is bounded: prompt bytes plus `max_tokens`, see `estimate`)
//! or *unknown*. A request is admitted
//! 1. as reserved, when no unknown request is in flight anywhere and, in every window,
//!    `used + reserved in flight + its reservation <= limit`; or
//! 2. as unknown, when this instance has no unknown request in flight for the key and, in every
//!    window, `used + reserved in flight < limit`;
//!
//! and otherwise waits (budget committed to requests in flight), unless some window is already
//! exhausted (`used >= limit`), which refuses it. So the tokens admitted in a window never
//! exceed the limit by more than the cost of one unknown request per instance, and nothing is
//! refused while the window has budget left.

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

pub fn decide(
    windows: &[Window],
    seen: &[Seen],
    flight: InFlight,
    reserve: Option<f64>,
) -> Verdict {
    let pairs = || windows.iter().zip(seen);
    if pairs().any(|(w, s)| s.used >= w.limit) {
        return Verdict::Refuse;
    }
    if let Some(r) = reserve.filter(|r| *r > 0.0) {
        if flight.unknown == 0 && pairs().all(|(w, s)| s.used + flight.reserved + r <= w.limit) {
            return Verdict::Admit(r);
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

    #[test]
    fn reserved_requests_run_side_by_side_while_their_bounds_fit() {
        let flight = InFlight {
            reserved: 600.0,
            ..InFlight::default()
        };
        assert_eq!(
            decide(&W, &seen(300.0), flight, Some(100.0)),
            Verdict::Admit(100.0)
        );
        // 300 + 600 + 150 > 1000: the rest is committed; one unknown request may still go.
        assert_eq!(
            decide(&W, &seen(300.0), flight, Some(150.0)),
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
        assert_eq!(decide(&W, &seen(10.0), flight, Some(5.0)), Verdict::Wait);
        assert_eq!(decide(&W, &seen(10.0), flight, None), Verdict::Wait);
        let elsewhere = InFlight {
            unknown_here: 0,
            ..flight
        };
        assert_eq!(
            decide(&W, &seen(10.0), elsewhere, None),
            Verdict::Admit(0.0)
        );
        let full = InFlight {
            reserved: 990.0,
            ..InFlight::default()
        };
        assert_eq!(decide(&W, &seen(10.0), full, None), Verdict::Wait);
    }

    #[test]
    fn an_exhausted_window_refuses() {
        assert_eq!(
            decide(&W, &seen(1000.0), InFlight::default(), Some(1.0)),
            Verdict::Refuse
        );
        let two = [
            W[0],
            Window {
                limit: 10.0,
                size: 1,
            },
        ];
        let both = [
            Seen {
                used: 0.0,
                reset_ms: 1,
            },
            Seen {
                used: 10.0,
                reset_ms: 1,
            },
        ];
        assert_eq!(
            decide(&two, &both, InFlight::default(), None),
            Verdict::Refuse
        );
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
