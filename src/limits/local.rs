//! `strategy: local` (and `sync_rate: -1`): one store per process, shared by every worker, so
//! all workers of an instance enforce one limit. Each operation holds the lock for a few map
//! lookups; waiters are woken whenever a request settles.
//!
//! With `sync_rate > 0` the same store admits, and a key also remembers the tokens it counted
//! that Redis has not been told of yet; a sync (see `LimiterActor`) adds them in Redis and
//! brings the key's counters to Redis's totals, which include every instance's.
//!
//! The maps hash with foldhash (seeded per process), which costs a fraction of SipHash on the
//! short keys here; each operation hashes its key once (`entry_ref`).

use std::sync::Mutex;

use hashbrown::HashMap;

use tokio::sync::Notify;

use super::admission::{decide, next_estimate, Counter, InFlight, SeenAll, Verdict, Window};

#[derive(Default)]
struct KeyState {
    counters: Windows,
    /// Ticket -> reservation (0 = unknown cost).
    in_flight: HashMap<u64, f64>,
    /// The sum of `in_flight`'s reservations and the number of its unknown-cost requests.
    flight: InFlight,
    /// What an unknown-cost request of the key costs (see `admission::next_estimate`).
    estimate: Option<f64>,
    /// `sync_rate > 0`: the tokens counted here and not yet added in Redis.
    unsynced: Windows,
    sync: SyncMark,
}

/// A key's counters per window size (seconds). A policy has a handful of windows at most, so
/// a scan beats hashing the size.
#[derive(Default)]
struct Windows(Vec<(u64, Counter)>);

impl Windows {
    /// The counter of windows of `size`, made on first use.
    fn of(&mut self, size: u64) -> &mut Counter {
        let i = match self.0.iter().position(|(s, _)| *s == size) {
            Some(i) => i,
            None => {
                self.0.push((size, Counter::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }
}

/// `sync_rate > 0`: where a key stands with Redis.
#[derive(Default)]
struct SyncMark {
    /// When the last sync started (ms).
    last_ms: Option<u64>,
    /// A sync is scheduled or running.
    scheduled: bool,
    /// The last sync failed.
    failed: bool,
}

/// What one sync adds in Redis for one window size: the tokens of window number `window` and of
/// the one before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pushed {
    pub size: u64,
    pub window: u64,
    pub current: f64,
    pub previous: f64,
}

impl KeyState {
    fn start(&mut self, ticket: u64, reserved: f64) {
        if let Some(earlier) = self.in_flight.insert(ticket, reserved) {
            self.forget(earlier);
        }
        if reserved > 0.0 {
            self.flight.reserved += reserved;
        } else {
            self.flight.unknown += 1;
        }
    }

    /// Ends `ticket`; its reservation, if it was in flight.
    fn end(&mut self, ticket: u64) -> Option<f64> {
        let reserved = self.in_flight.remove(&ticket)?;
        self.forget(reserved);
        if self.in_flight.is_empty() {
            // No rounding left over from adding and taking away reservations.
            self.flight = InFlight::default();
        }
        Some(reserved)
    }

    fn forget(&mut self, reserved: f64) {
        if reserved > 0.0 {
            self.flight.reserved -= reserved;
        } else {
            self.flight.unknown -= 1;
        }
    }

    fn idle(&self, now_ms: u64) -> bool {
        !self.sync.scheduled
            && self.in_flight.is_empty()
            && self
                .counters
                .0
                .iter()
                .all(|(size, c)| now_ms / (size * 1000) > c.window + 1)
    }
}

/// The state of `key`, made on first use (the key is allocated only then).
fn state<'a>(keys: &'a mut HashMap<String, KeyState>, key: &str) -> &'a mut KeyState {
    keys.entry_ref(key).or_default()
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
    /// Admits `ticket` (recording it in flight) or says why not; appends every window's state
    /// to `seen`.
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &self,
        key: &str,
        windows: &[Window],
        sliding: bool,
        reserve: Option<f64>,
        ticket: u64,
        now_ms: u64,
        seen: &mut SeenAll,
    ) -> Verdict {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() % PRUNE_EVERY == PRUNE_EVERY - 1 {
            keys.retain(|_, state| !state.idle(now_ms));
        }
        let state = state(&mut keys, key);
        let first = seen.len();
        seen.extend(windows.iter().map(|w| {
            let counter = state.counters.of(w.size);
            counter.roll(w.size, now_ms);
            counter.seen(w.size, now_ms, sliding)
        }));
        let flight = InFlight {
            unknown_here: state.flight.unknown,
            ..state.flight
        };
        let verdict = decide(windows, &seen[first..], flight, state.estimate, reserve);
        if let Verdict::Admit(reserved) = verdict {
            state.start(ticket, reserved);
        }
        verdict
    }

    /// Ends `ticket`, counting `tokens` in every window of the key (and in its estimate if it
    /// was admitted here at unknown cost); with `unsynced` (`sync_rate > 0`) the tokens also
    /// wait for the key's next sync.
    pub fn settle(
        &self,
        key: &str,
        windows: &[Window],
        ticket: u64,
        tokens: f64,
        now_ms: u64,
        unsynced: bool,
    ) {
        {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            let state = state(&mut keys, key);
            if state.end(ticket) == Some(0.0) {
                state.estimate = next_estimate(state.estimate, tokens);
            }
            for w in windows {
                let counter = state.counters.of(w.size);
                counter.roll(w.size, now_ms);
                counter.current += tokens;
                if unsynced {
                    let counter = state.unsynced.of(w.size);
                    counter.roll(w.size, now_ms);
                    counter.current += tokens;
                }
            }
        }
        self.settled.notify_waiters();
    }

    /// `sync_rate > 0`, on every admission and settlement of `key`: when its next sync is due
    /// (ms from now) unless one is scheduled already, and whether the last one failed.
    pub fn sync_due(&self, key: &str, every_ms: u64, now_ms: u64) -> (Option<u64>, bool) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let state = state(&mut keys, key);
        let mark = &mut state.sync;
        if mark.scheduled {
            return (None, mark.failed);
        }
        mark.scheduled = true;
        let due = mark
            .last_ms
            .map_or(0, |last| (last + every_ms).saturating_sub(now_ms));
        (Some(due), mark.failed)
    }

    /// Starts a sync of `key`: takes the tokens Redis has not been told of, per window.
    pub fn take_unsynced(&self, key: &str, windows: &[Window], now_ms: u64) -> Vec<Pushed> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let state = state(&mut keys, key);
        state.sync.last_ms = Some(now_ms);
        windows
            .iter()
            .map(|w| {
                let counter = state.unsynced.of(w.size);
                counter.roll(w.size, now_ms);
                let pushed = Pushed {
                    size: w.size,
                    window: counter.window,
                    current: counter.current,
                    previous: counter.previous,
                };
                counter.current = 0.0;
                counter.previous = 0.0;
                pushed
            })
            .collect()
    }

    /// Ends a sync of `key`. With Redis's totals (current and previous window, per entry of
    /// `pushed`, every instance's tokens included), the key's counters become those totals plus
    /// what settled here since the sync started; without (Redis failed), `pushed` waits for the
    /// next sync.
    pub fn synced(&self, key: &str, pushed: &[Pushed], totals: Option<&[(f64, f64)]>, now_ms: u64) {
        {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            let state = state(&mut keys, key);
            state.sync.scheduled = false;
            state.sync.failed = totals.is_none();
            for (i, p) in pushed.iter().enumerate() {
                let unsynced = state.unsynced.of(p.size);
                unsynced.roll(p.size, now_ms);
                match totals {
                    Some(totals) => {
                        let counter = state.counters.of(p.size);
                        counter.roll(p.size, now_ms);
                        // A window that ended during the sync keeps its count.
                        if counter.window == p.window && unsynced.window == p.window {
                            counter.current = totals[i].0 + unsynced.current;
                            counter.previous = totals[i].1;
                        }
                    }
                    None if unsynced.window == p.window => {
                        unsynced.current += p.current;
                        unsynced.previous += p.previous;
                    }
                    None if unsynced.window == p.window + 1 => unsynced.previous += p.current,
                    None => {}
                }
            }
        }
        self.settled.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl LocalStore {
        /// `admit` on fixed windows, with the key's windows as seen returned.
        fn admit_seen(
            &self,
            key: &str,
            windows: &[Window],
            (reserve, ticket): (Option<f64>, u64),
            now_ms: u64,
        ) -> (Verdict, SeenAll) {
            let mut seen = SeenAll::new();
            let verdict = self.admit(key, windows, false, reserve, ticket, now_ms, &mut seen);
            (verdict, seen)
        }
    }

    const W: [Window; 1] = [Window {
        limit: 100.0,
        size: 60,
    }];

    #[test]
    fn admits_counts_and_refuses_once_the_window_is_spent() {
        let store = LocalStore::default();
        let (v, seen) = store.admit_seen("k", &W, (Some(60.0), 1), 1_000);
        assert_eq!((v, seen[0].used), (Verdict::Admit(60.0), 0.0));
        // 60 reserved: a second 60 does not fit, but one unknown-cost request may go.
        assert_eq!(
            store.admit_seen("k", &W, (Some(60.0), 2), 1_000).0,
            Verdict::Admit(0.0)
        );
        assert_eq!(
            store.admit_seen("k", &W, (Some(60.0), 3), 1_000).0,
            Verdict::Wait
        );
        store.settle("k", &W, 1, 50.0, 2_000, false);
        store.settle("k", &W, 2, 70.0, 2_000, false);
        let (v, seen) = store.admit_seen("k", &W, (Some(1.0), 4), 3_000);
        assert_eq!((v, seen[0].used), (Verdict::Refuse, 120.0));
        assert_eq!(
            store.admit_seen("other", &W, (None, 5), 3_000).0,
            Verdict::Admit(0.0)
        );
        // The next window starts empty.
        assert_eq!(
            store.admit_seen("k", &W, (None, 6), 61_000).0,
            Verdict::Admit(0.0)
        );
    }

    #[test]
    fn unknown_requests_go_side_by_side_once_their_cost_is_known() {
        let store = LocalStore::default();
        let admit = |ticket| store.admit_seen("k", &W, (None, ticket), 1_000).0;
        // No estimate yet: one at a time.
        assert_eq!(admit(1), Verdict::Admit(0.0));
        assert_eq!(admit(2), Verdict::Wait);
        // A released request (nothing counted) teaches nothing.
        store.settle("k", &W, 1, 0.0, 1_000, false);
        assert_eq!(admit(2), Verdict::Admit(0.0));
        assert_eq!(admit(3), Verdict::Wait);
        store.settle("k", &W, 2, 10.0, 1_000, false);
        // 10 used, estimate 10 counted at 20 each: four fit beside each other (10 + 4 x 20).
        for ticket in 3..7 {
            assert_eq!(admit(ticket), Verdict::Admit(0.0), "ticket {ticket}");
        }
        assert_eq!(admit(7), Verdict::Wait);
        // Two settle at 10: 30 used, two in flight; 30 + 3 x 20 fits, 30 + 4 x 20 does not.
        store.settle("k", &W, 3, 10.0, 1_000, false);
        store.settle("k", &W, 4, 10.0, 1_000, false);
        assert_eq!(admit(7), Verdict::Admit(0.0));
        assert_eq!(admit(8), Verdict::Wait);
        // Near the limit: back to one at a time, and still admitted while budget is left.
        for ticket in 5..8 {
            store.settle("k", &W, ticket, 20.0, 1_000, false);
        }
        let (verdict, seen) = store.admit_seen("k", &W, (None, 8), 1_000);
        assert_eq!((verdict, seen[0].used), (Verdict::Admit(0.0), 90.0));
        assert_eq!(admit(9), Verdict::Wait);
        store.settle("k", &W, 8, 15.0, 1_000, false);
        assert_eq!(admit(9), Verdict::Refuse);
    }

    #[test]
    fn each_window_size_keeps_its_own_counter() {
        let store = LocalStore::default();
        let two = [
            Window {
                limit: 100.0,
                size: 60,
            },
            Window {
                limit: 10.0,
                size: 1,
            },
        ];
        store.admit_seen("k", &two, (None, 1), 1_000);
        store.settle("k", &two, 1, 8.0, 1_500, false);
        let (v, seen) = store.admit_seen("k", &two, (None, 2), 1_900);
        assert_eq!(v, Verdict::Admit(0.0));
        assert_eq!((seen[0].used, seen[1].used), (8.0, 8.0));
        store.settle("k", &two, 2, 5.0, 1_950, false);
        // The one-second window is spent; a second later it is empty, the minute one is not.
        let (v, seen) = store.admit_seen("k", &two, (None, 3), 1_990);
        assert_eq!((v, seen[1].used), (Verdict::Refuse, 13.0));
        let (v, seen) = store.admit_seen("k", &two, (None, 4), 2_000);
        assert_eq!(v, Verdict::Admit(0.0));
        assert_eq!((seen[0].used, seen[1].used), (13.0, 0.0));
        // A policy naming the windows the other way round finds the same counters.
        let reversed = [two[1], two[0]];
        store.settle("k", &reversed, 4, 1.0, 2_100, false);
        let (_, seen) = store.admit_seen("k", &reversed, (None, 5), 2_200);
        assert_eq!((seen[0].used, seen[1].used), (1.0, 14.0));
    }

    #[test]
    fn a_sync_adds_what_settled_here_and_takes_redis_totals() {
        let store = LocalStore::default();
        assert_eq!(store.sync_due("k", 1_000, 1_000), (Some(0), false));
        assert_eq!(
            store.sync_due("k", 1_000, 1_000),
            (None, false),
            "one at a time"
        );
        store.admit_seen("k", &W, (None, 1), 1_000);
        store.settle("k", &W, 1, 30.0, 1_100, true);
        let pushed = store.take_unsynced("k", &W, 1_200);
        assert_eq!(
            pushed,
            [Pushed {
                size: 60,
                window: 0,
                current: 30.0,
                previous: 0.0
            }]
        );
        // 5 more settle while Redis adds the 30 to another instance's 50.
        store.settle("k", &W, 2, 5.0, 1_300, true);
        store.synced("k", &pushed, Some(&[(80.0, 0.0)]), 1_400);
        let (verdict, seen) = store.admit_seen("k", &W, (None, 3), 1_500);
        assert_eq!((verdict, seen[0].used), (Verdict::Admit(0.0), 85.0));
        // The next sync is due a sync interval after the last one started, and pushes the 5.
        assert_eq!(store.sync_due("k", 1_000, 1_500), (Some(700), false));
        let pushed = store.take_unsynced("k", &W, 2_200);
        assert_eq!(pushed[0].current, 5.0);
        // Redis failed: the 5 wait for the next sync, which knows it failed.
        store.synced("k", &pushed, None, 2_300);
        assert_eq!(store.sync_due("k", 1_000, 2_300), (Some(900), true));
        assert_eq!(store.take_unsynced("k", &W, 3_200)[0].current, 5.0);
    }
}
