//! `LimiterActor`: one per worker. It admits and settles token-limit tickets against the
//! process-wide local store or, through this worker's own Redis connections, against Redis;
//! it owns those connections, their circuits and the settlements waiting for Redis to return.
//!
//! A request whose window's remaining budget is committed to requests in flight waits here,
//! looking again whenever a local request settles (and at least every 20 ms for Redis, where
//! other instances settle), until the policy's `wait_timeout`.
//!
//! `sync_rate > 0`: requests are admitted and settled in the process-wide store alone; each
//! admission or settlement of a key makes sure a sync of it is scheduled, at most one per key
//! per process, `sync_rate` after the previous one started. A sync runs on the worker that
//! scheduled it, through that worker's Redis connection and circuit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::{Actor, Addr, Context, Handler, Message, ResponseFuture};
use redis::aio::ConnectionManager;

use crate::error::GatewayError;
use crate::limits::admission::{Seen, Verdict, Window};
use crate::limits::local::LocalStore;
use crate::limits::redis::{self as store, RedisTarget};
use crate::limits::{Backend, Limited, Ticket};
use crate::providers::oai::Usage;

/// The process-wide store of `strategy: local` limits, shared by every worker.
static LOCAL: LazyLock<LocalStore> = LazyLock::new(LocalStore::default);

/// This process among the instances sharing a Redis server.
static INSTANCE: LazyLock<String> =
    LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());

/// Requests served without a limit check because Redis could not be reached (fail-open).
pub static FAILED_OPEN: AtomicU64 = AtomicU64::new(0);

/// How long a Redis claim outlives its request if the instance dies before settling it.
const LEASE: Duration = Duration::from_secs(180);
/// How long a failed Redis connection is left alone before the next try.
const CIRCUIT_OPEN: Duration = Duration::from_secs(1);
/// The longest a waiting request goes without looking again.
const POLL: Duration = Duration::from_millis(20);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A settlement Redis did not take: key, claim, tokens, window sizes.
type PendingSettle = (String, String, f64, Vec<Window>);

/// One worker's connection to one Redis server.
struct Link {
    conn: ConnectionManager,
    open_until: Option<Instant>,
    /// Settlements that failed, retried once Redis answers again.
    pending: Vec<PendingSettle>,
}

#[derive(Default)]
pub struct LimiterActor {
    links: Rc<RefCell<HashMap<String, Link>>>,
}

impl Actor for LimiterActor {
    type Context = Context<Self>;
}

/// Admit a request: the ticket's windows as seen, or the refusal.
#[derive(Message)]
#[rtype(result = "Result<Admitted, GatewayError>")]
pub struct Admit(pub Arc<Ticket>);

pub struct Admitted {
    /// Per limited key, per window.
    pub seen: Vec<Vec<Seen>>,
    /// Per key, the reservation its claim records (Redis claims are named by it).
    reserves: Vec<f64>,
}

/// A request ended: count its tokens and drop its claim.
#[derive(Message)]
#[rtype(result = "()")]
struct Settle {
    ticket: Arc<Ticket>,
    reserves: Vec<f64>,
    tokens: f64,
}

/// What one attempt at admission found.
enum Try {
    Admitted(Vec<Vec<Seen>>, Vec<f64>),
    Wait(Vec<Vec<Seen>>),
    Refused(Vec<Vec<Seen>>),
    Unavailable(String),
}

impl Handler<Admit> for LimiterActor {
    type Result = ResponseFuture<Result<Admitted, GatewayError>>;

    fn handle(&mut self, Admit(ticket): Admit, _ctx: &mut Context<Self>) -> Self::Result {
        let links = self.links.clone();
        Box::pin(async move {
            let deadline = Instant::now() + ticket.policy.wait;
            loop {
                let settled = LOCAL.settled.notified();
                tokio::pin!(settled);
                settled.as_mut().enable();
                let mut outcome = match &ticket.policy.backend {
                    Backend::Local => try_local(&ticket),
                    Backend::Redis(target) => try_redis(&links, target, &ticket).await,
                    Backend::Synced(target, every) => try_synced(&links, target, *every, &ticket),
                };
                // An outage is logged by its first request, then once a minute.
                let log = |backend: &Backend| {
                    backend
                        .target()
                        .is_none_or(|target| target.outage_log_due(now_ms()))
                };
                if let Try::Unavailable(reason) = &outcome {
                    if ticket.policy.fault_tolerant {
                        // Fail open onto this process's own counts (which include every
                        // request it settled), so a slow or dead Redis cannot over-admit
                        // without bound: each instance still enforces the limit by itself.
                        let failed_open = FAILED_OPEN.fetch_add(1, Ordering::Relaxed) + 1;
                        if log(&ticket.policy.backend) {
                            tracing::warn!(error = %reason, failed_open, "rate-limit store unreachable: limiting with this instance's own counts (fault_tolerant; logged once a minute while it lasts)");
                        }
                        outcome = try_local(&ticket);
                    }
                }
                match outcome {
                    Try::Admitted(seen, reserves) => return Ok(Admitted { seen, reserves }),
                    Try::Refused(seen) => return Err(ticket.refusal(&seen)),
                    Try::Unavailable(reason) => {
                        if log(&ticket.policy.backend) {
                            tracing::warn!(error = %reason, "rate-limit store unreachable: refusing (fault_tolerant: false; logged once a minute while it lasts)");
                        }
                        return Err(GatewayError::LimiterUnavailable(reason));
                    }
                    Try::Wait(seen) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(ticket.refusal(&seen));
                        }
                        let _ = tokio::time::timeout(left.min(POLL), settled).await;
                    }
                }
            }
        })
    }
}

/// Admits every key of the ticket, or none: a key that cannot admit releases the ones before.
fn try_local(ticket: &Ticket) -> Try {
    let now = now_ms();
    let mut seen_all = Vec::with_capacity(ticket.keys.len());
    let mut reserves = Vec::with_capacity(ticket.keys.len());
    for (i, limited) in ticket.keys.iter().enumerate() {
        let (verdict, seen) = LOCAL.admit(
            &limited.key,
            &limited.windows,
            ticket.policy.sliding,
            ticket.reserve,
            ticket.id,
            now,
        );
        seen_all.push(seen);
        match verdict {
            Verdict::Admit(reserve) => reserves.push(reserve),
            other => {
                for earlier in &ticket.keys[..i] {
                    LOCAL.settle(&earlier.key, &earlier.windows, ticket.id, 0.0, now, false);
                }
                return match other {
                    Verdict::Refuse => Try::Refused(seen_all),
                    _ => Try::Wait(seen_all),
                };
            }
        }
    }
    Try::Admitted(seen_all, reserves)
}

/// `sync_rate > 0`: admission in the process-wide store, whose counters the syncs keep at
/// Redis's totals; unavailable (so failing open onto the same counts, or closed) while the
/// key's last sync failed.
fn try_synced(
    links: &Rc<RefCell<HashMap<String, Link>>>,
    target: &Arc<RedisTarget>,
    every: Duration,
    ticket: &Ticket,
) -> Try {
    let mut failed = false;
    for limited in &ticket.keys {
        failed |= schedule_sync(links, target, every, limited);
    }
    if failed {
        return Try::Unavailable(format!("redis {}: the last sync failed", target.label));
    }
    try_local(ticket)
}

/// Schedules a sync of `limited` unless one is; says whether its last sync failed.
fn schedule_sync(
    links: &Rc<RefCell<HashMap<String, Link>>>,
    target: &Arc<RedisTarget>,
    every: Duration,
    limited: &Limited,
) -> bool {
    let (due, failed) = LOCAL.sync_due(&limited.key, every.as_millis() as u64, now_ms());
    if let Some(due) = due {
        let (links, target, limited) = (links.clone(), target.clone(), limited.clone());
        actix::spawn(async move {
            tokio::time::sleep(Duration::from_millis(due)).await;
            sync(&links, &target, &limited).await;
        });
    }
    failed
}

/// One sync of a key: adds what this process counted in Redis and takes Redis's totals.
async fn sync(
    links: &Rc<RefCell<HashMap<String, Link>>>,
    target: &Arc<RedisTarget>,
    limited: &Limited,
) {
    let pushed = LOCAL.take_unsynced(&limited.key, &limited.windows, now_ms());
    let totals = match link(links, target) {
        Ok(mut conn) => {
            let call = store::sync(&mut conn, &limited.key, &pushed);
            match tokio::time::timeout(target.timeout, call).await {
                Ok(Ok(totals)) => Some(totals),
                _ => None,
            }
        }
        Err(_) => None,
    };
    let retry = record(links, target, totals.is_some());
    flush(links.clone(), target.clone(), retry);
    LOCAL.synced(&limited.key, &pushed, totals.as_deref(), now_ms());
}

/// This worker's connection to `target`, unless its circuit is open.
fn link(
    links: &RefCell<HashMap<String, Link>>,
    target: &RedisTarget,
) -> Result<ConnectionManager, String> {
    let mut links = links.borrow_mut();
    if let Some(link) = links.get(target.id()) {
        if link.open_until.is_some_and(|t| Instant::now() < t) {
            return Err(format!("redis {} unavailable (circuit open)", target.label));
        }
        return Ok(link.conn.clone());
    }
    let conn = target.connect()?;
    links.insert(
        target.id().to_string(),
        Link {
            conn: conn.clone(),
            open_until: None,
            pending: Vec::new(),
        },
    );
    Ok(conn)
}

/// Records the outcome of a Redis call on the link's circuit; returns settlements to retry.
fn record(
    links: &RefCell<HashMap<String, Link>>,
    target: &RedisTarget,
    ok: bool,
) -> Vec<PendingSettle> {
    let mut links = links.borrow_mut();
    let Some(link) = links.get_mut(target.id()) else {
        return Vec::new();
    };
    if ok {
        if link.open_until.take().is_some() {
            target.outage_over();
            tracing::info!(redis = %target.label, "rate-limit store reachable again");
        }
        std::mem::take(&mut link.pending)
    } else {
        if link.open_until.is_none() {
            tracing::warn!(redis = %target.label, "rate-limit store failed; retrying in 1 s");
        }
        link.open_until = Some(Instant::now() + CIRCUIT_OPEN);
        Vec::new()
    }
}

async fn try_redis(
    links: &Rc<RefCell<HashMap<String, Link>>>,
    target: &Arc<RedisTarget>,
    ticket: &Ticket,
) -> Try {
    let mut conn = match link(links, target) {
        Ok(conn) => conn,
        Err(reason) => return Try::Unavailable(reason),
    };
    let mut seen_all = Vec::with_capacity(ticket.keys.len());
    let mut reserves: Vec<f64> = Vec::with_capacity(ticket.keys.len());
    for (i, limited) in ticket.keys.iter().enumerate() {
        let call = store::admit(
            &mut conn,
            &limited.key,
            &limited.windows,
            ticket.policy.sliding,
            (&INSTANCE, ticket.id),
            ticket.reserve,
            LEASE,
        );
        let result = match tokio::time::timeout(target.timeout, call).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => Err(format!("redis {}: {e}", target.label)),
            Err(_) => Err(format!(
                "redis {}: no answer within {:?}",
                target.label, target.timeout
            )),
        };
        let retry = record(links, target, result.is_ok());
        flush(links.clone(), target.clone(), retry);
        let (verdict, seen) = match result {
            Ok(found) => found,
            Err(reason) => return Try::Unavailable(reason),
        };
        seen_all.push(seen);
        match verdict {
            Verdict::Admit(reserve) => reserves.push(reserve),
            other => {
                for (earlier, reserve) in ticket.keys[..i].iter().zip(&reserves) {
                    let claim = store::claim(&INSTANCE, ticket.id, *reserve);
                    let release =
                        store::settle(&mut conn, &earlier.key, &claim, 0.0, &earlier.windows);
                    let _ = tokio::time::timeout(target.timeout, release).await;
                }
                return match other {
                    Verdict::Refuse => Try::Refused(seen_all),
                    _ => Try::Wait(seen_all),
                };
            }
        }
    }
    Try::Admitted(seen_all, reserves)
}

/// Retries settlements that failed while Redis was away.
fn flush(
    links: Rc<RefCell<HashMap<String, Link>>>,
    target: Arc<RedisTarget>,
    pending: Vec<PendingSettle>,
) {
    if pending.is_empty() {
        return;
    }
    actix::spawn(async move {
        for (key, claim, tokens, windows) in pending {
            settle_redis(&links, &target, key, claim, tokens, windows).await;
        }
    });
}

async fn settle_redis(
    links: &Rc<RefCell<HashMap<String, Link>>>,
    target: &Arc<RedisTarget>,
    key: String,
    claim: String,
    tokens: f64,
    windows: Vec<Window>,
) {
    let ok = match link(links, target) {
        Ok(mut conn) => {
            let call = store::settle(&mut conn, &key, &claim, tokens, &windows);
            matches!(tokio::time::timeout(target.timeout, call).await, Ok(Ok(())))
        }
        Err(_) => false,
    };
    if ok {
        let retry = record(links, target, true);
        flush(links.clone(), target.clone(), retry);
        return;
    }
    record(links, target, false);
    if let Some(link) = links.borrow_mut().get_mut(target.id()) {
        link.pending.push((key, claim, tokens, windows));
    }
}

impl Handler<Settle> for LimiterActor {
    type Result = ();

    fn handle(&mut self, msg: Settle, _ctx: &mut Context<Self>) {
        let Settle {
            ticket,
            reserves,
            tokens,
        } = msg;
        settle_here(&ticket, tokens);
        match &ticket.policy.backend {
            Backend::Local => {}
            Backend::Redis(target) => {
                let (links, target) = (self.links.clone(), target.clone());
                actix::spawn(async move {
                    for (limited, reserve) in ticket.keys.iter().zip(reserves) {
                        let claim = store::claim(&INSTANCE, ticket.id, reserve);
                        let (key, windows) = (limited.key.clone(), limited.windows.clone());
                        settle_redis(&links, &target, key, claim, tokens, windows).await;
                    }
                });
            }
            Backend::Synced(target, every) => {
                for limited in &ticket.keys {
                    schedule_sync(&self.links, target, *every, limited);
                }
            }
        }
    }
}

/// Counts a settled request in this process. Every backend counts here: the counts themselves
/// (local), the counts a Redis outage falls back on (redis), or the counts the next sync adds
/// (synced).
fn settle_here(ticket: &Ticket, tokens: f64) {
    let now = now_ms();
    let synced = matches!(ticket.policy.backend, Backend::Synced(..));
    for limited in &ticket.keys {
        LOCAL.settle(
            &limited.key,
            &limited.windows,
            ticket.id,
            tokens,
            now,
            synced,
        );
    }
}

/// An admitted request's claim on its limits: settled with the answer's usage, or released
/// (nothing counted) if dropped unsettled, so no path can leak a claim.
pub struct Permit {
    limiter: Addr<LimiterActor>,
    ticket: Arc<Ticket>,
    reserves: Vec<f64>,
    /// Until settled or released.
    unsettled: bool,
}

impl Permit {
    /// Asks `limiter` to admit `ticket`, waiting while the budget is committed.
    pub async fn acquire(
        limiter: &Addr<LimiterActor>,
        ticket: Ticket,
    ) -> Result<(Permit, Vec<Vec<Seen>>), GatewayError> {
        let ticket = Arc::new(ticket);
        // `strategy: local` needs nothing the actor owns: a request admitted or refused at once
        // is decided here, on the caller's thread (the same worker), without a mailbox round
        // trip; one that must wait goes to the actor, which looks again as requests settle.
        let at_once = match &ticket.policy.backend {
            Backend::Local => match try_local(&ticket) {
                Try::Admitted(seen, reserves) => Some(Admitted { seen, reserves }),
                Try::Refused(seen) => return Err(ticket.refusal(&seen)),
                Try::Wait(_) | Try::Unavailable(_) => None,
            },
            _ => None,
        };
        let admitted = match at_once {
            Some(admitted) => admitted,
            None => limiter
                .send(Admit(ticket.clone()))
                .await
                .map_err(|e| GatewayError::Internal(format!("limiter unavailable: {e}")))??,
        };
        let permit = Permit {
            limiter: limiter.clone(),
            ticket,
            reserves: admitted.reserves,
            unsettled: true,
        };
        Ok((permit, admitted.seen))
    }

    pub fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    /// Counts what the request cost; `completed` is false for a stream cut short.
    pub fn settle(mut self, usage: Usage, completed: bool) {
        let tokens = self.ticket.cost(usage, completed);
        self.finish(tokens);
    }

    fn finish(&mut self, tokens: f64) {
        if !std::mem::take(&mut self.unsettled) {
            return;
        }
        // Local counts need no actor either (see `acquire`); a settlement wakes the waiters.
        if matches!(self.ticket.policy.backend, Backend::Local) {
            settle_here(&self.ticket, tokens);
        } else {
            self.limiter.do_send(Settle {
                ticket: self.ticket.clone(),
                reserves: std::mem::take(&mut self.reserves),
                tokens,
            });
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.finish(0.0);
    }
}
