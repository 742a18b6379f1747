//! `strategy: local` (and `sync_rate: -1`): one store per process, shared by every worker, so
//! all workers of an instance enforce one limit. Each operation holds the lock for a few map
//! lookups; waiters are woken whenever a request settles.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::admission::{decide, Counter, InFlight, Seen, Verdict, Window};

#[derive(Default)]
struct KeyState {
    /// Per window size (seconds).
    counters: HashMap<u64, Counter>,
    /// Ticket -> reservation (0 = unknown cost).
    in_flight: HashMap<u64, f64>,
}

impl KeyState {
    fn idle(&self, now_ms: u64) -> bool {
        self.in_flight.is_empty()
            && self
                .counters
                .iter()
                .all(|(size, c)| now_ms / (size * 1000) > c.window + 1)
    }
}

#[derive(Default)]
pub struct LocalStore {
    keys: Mutex<HashMap<String, KeyState>>,
    /// Notified when a request settles, so waiters look again.
    pub settled: Notify,
}

/// Keys are dropped once idle, checked every this many operations.
const PRUNE_EVERY: usize = 4096;

impl LocalStore {
    /// Admits `ticket` (recording it in flight) or says why not, with every window's state.
    pub fn admit(
        &self,
        key: &str,
        windows: &[Window],
        sliding: bool,
        reserve: Option<f64>,
        ticket: u64,
        now_ms: u64,
    ) -> (Verdict, Vec<Seen>) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() % PRUNE_EVERY == PRUNE_EVERY - 1 {
            keys.retain(|_, state| !state.idle(now_ms));
        }
        let state = keys.entry(key.to_string()).or_default();
        let seen: Vec<Seen> = windows
            .iter()
            .map(|w| {
                let counter = state.counters.entry(w.size).or_default();
                counter.roll(w.size, now_ms);
                counter.seen(w.size, now_ms, sliding)
            })
            .collect();
        let mut flight = InFlight::default();
        for reserve in state.in_flight.values() {
            if *reserve > 0.0 {
                flight.reserved += reserve;
            } else {
                flight.unknown += 1;
                flight.unknown_here += 1;
            }
        }
        let verdict = decide(windows, &seen, flight, reserve);
        if let Verdict::Admit(reserved) = verdict {
            state.in_flight.insert(ticket, reserved);
        }
        (verdict, seen)
    }

    /// Ends `ticket`, counting `tokens` in every window of the key.
    pub fn settle(&self, key: &str, windows: &[Window], ticket: u64, tokens: f64, now_ms: u64) {
        {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            let state = keys.entry(key.to_string()).or_default();
            state.in_flight.remove(&ticket);
            for w in windows {
                let counter = state.counters.entry(w.size).or_default();
                counter.roll(w.size, now_ms);
                counter.current += tokens;
            }
        }
        self.settled.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: [Window; 1] = [Window {
        limit: 100.0,
        size: 60,
    }];

    #[test]
    fn admits_counts_and_refuses_once_the_window_is_spent() {
        let store = LocalStore::default();
        let (v, seen) = store.admit("k", &W, false, Some(60.0), 1, 1_000);
        assert_eq!((v, seen[0].used), (Verdict::Admit(60.0), 0.0));
        // 60 reserved: a second 60 does not fit, but one unknown-cost request may go.
        assert_eq!(
            store.admit("k", &W, false, Some(60.0), 2, 1_000).0,
            Verdict::Admit(0.0)
        );
        assert_eq!(
            store.admit("k", &W, false, Some(60.0), 3, 1_000).0,
            Verdict::Wait
        );
        store.settle("k", &W, 1, 50.0, 2_000);
        store.settle("k", &W, 2, 70.0, 2_000);
        let (v, seen) = store.admit("k", &W, false, Some(1.0), 4, 3_000);
        assert_eq!((v, seen[0].used), (Verdict::Refuse, 120.0));
        assert_eq!(
            store.admit("other", &W, false, None, 5, 3_000).0,
            Verdict::Admit(0.0)
        );
        // The next window starts empty.
        assert_eq!(
            store.admit("k", &W, false, None, 6, 61_000).0,
            Verdict::Admit(0.0)
        );
    }
}
