//! `LimiterActor`: one per worker. It admits and settles token-limit tickets against the
//! process-wide local store or, through this worker's own Redis connections, against Redis;
//! it owns those connections, their circuits, their queues and the settlements waiting for
//! Redis to return, and lends them to the worker's route actors (`Limiter`): a request's Redis
//! admission and every settlement run on the worker's thread without a mailbox hop, as
//! `strategy: local` admissions decided at once do.
//!
//! A request whose window's remaining budget is committed to requests in flight waits (in the
//! actor for `strategy: local`), looking again whenever a local request settles (and at least
//! every 20 ms for Redis, where other instances settle), until the policy's `wait_timeout`.
//!
//! `sync_rate: 0`: a worker has at most one script call in flight per Redis server. The
//! admissions and settlements that arrive meanwhile wait in the link's queue and go together
//! in the next call (`drain`), so under load one call serves the requests of a whole
//! event-loop turn, and an admission is still judged against Redis's counters as they stand
//! when its call runs, after every settlement queued before it.
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
use smallvec::SmallVec;
use tokio::sync::oneshot;

use crate::error::GatewayError;
use crate::limits::admission::{SeenAll, Verdict};
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

/// A settlement for Redis: the ticket's key (index in its keys) counts `tokens`; `learn`: the
/// request was admitted as unknown cost, so its cost teaches the key's estimate.
struct PendingSettle {
    ticket: Arc<Ticket>,
    key: usize,
    tokens: f64,
    learn: bool,
}

/// Links made so far in this process (each worker's to each server), to name them.
static LINKS: AtomicU64 = AtomicU64::new(0);

/// The most settlements, and the most admissions, one script call carries (a backlog of
/// settlements after an outage goes in several).
const BATCH_MAX: usize = 256;

/// One worker's connection to one Redis server.
struct Link {
    conn: ConnectionManager,
    /// `<instance>.<n>`: what Redis records this link's claims under (see `redis::BATCH`).
    name: Rc<str>,
    /// `sync_rate: 0`: the claims Redis admitted through this link that have not settled.
    held: store::Held,
    open_until: Option<Instant>,
    /// Settlements that failed, retried once Redis answers again.
    pending: Vec<PendingSettle>,
    /// `sync_rate: 0`: the work for the next script call, gathered while one is in flight.
    queue: Queue,
    /// A script call of `queue` is in flight or about to be sent (see `drain`).
    busy: bool,
}

impl Link {
    fn circuit_open(&self) -> bool {
        self.open_until.is_some_and(|t| Instant::now() < t)
    }
}

#[derive(Default)]
struct Queue {
    settles: Vec<PendingSettle>,
    admissions: Vec<Waiting>,
}

/// The verdicts of one admission's keys (and its claims, if admitted), or why Redis gave none.
type Verdicts = Result<(Vec<store::Judged>, Option<HeldClaims>), String>;

/// An admission waiting for the next script call.
struct Waiting {
    ticket: Arc<Ticket>,
    reply: oneshot::Sender<Verdicts>,
}

/// This worker's connections to Redis servers, by target.
type Links = Rc<RefCell<HashMap<String, Link>>>;

#[derive(Default)]
pub struct LimiterActor {
    links: Links,
}

/// A worker's limiter as its route actors hold it: the actor, and the Redis links it owns, lent
/// to them (as the provider actor lends its pools) so that a request's Redis admission and every
/// settlement go straight to the link's queue on the worker's thread, without a mailbox hop.
#[derive(Clone)]
pub struct Limiter {
    actor: Addr<LimiterActor>,
    links: Links,
}

impl Limiter {
    /// Starts this worker's limiter actor.
    pub fn start() -> Limiter {
        let actor = LimiterActor::default();
        let links = actor.links.clone();
        Limiter {
            actor: actor.start(),
            links,
        }
    }
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
    pub seen: SeenAll,
    /// Per key, the reservation its claim records.
    reserves: Reserves,
}

/// Per limited key, the reservation admitted (inline: usually one key).
type Reserves = SmallVec<[f64; 1]>;

/// What one attempt at admission found.
enum Try {
    Admitted(SeenAll, Reserves, Option<HeldClaims>),
    Wait(SeenAll),
    Refused(SeenAll),
    Unavailable(String),
}

impl Handler<Admit> for LimiterActor {
    type Result = ResponseFuture<Result<Admitted, GatewayError>>;

    fn handle(&mut self, Admit(ticket): Admit, _ctx: &mut Context<Self>) -> Self::Result {
        let admitted = admit(self.links.clone(), ticket);
        // Only Redis admissions (never sent here) hold claims in a link.
        Box::pin(async { admitted.await.map(|(admitted, _)| admitted) })
    }
}

/// Admits `ticket`, waiting while the budget is committed to requests in flight; with the
/// claims this worker's link holds for it if Redis admitted it (`sync_rate: 0`).
async fn admit(
    links: Links,
    ticket: Arc<Ticket>,
) -> Result<(Admitted, Option<HeldClaims>), GatewayError> {
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
            Try::Admitted(seen, reserves, held) => return Ok((Admitted { seen, reserves }, held)),
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
}

/// Admits every key of the ticket, or none: a key that cannot admit releases the ones before.
fn try_local(ticket: &Ticket) -> Try {
    let now = now_ms();
    let mut seen_all = SeenAll::new();
    let mut reserves = Reserves::new();
    for (i, limited) in ticket.keys.iter().enumerate() {
        let verdict = LOCAL.admit(
            &limited.key,
            &limited.windows,
            ticket.policy.sliding,
            ticket.reserve,
            ticket.id,
            now,
            &mut seen_all,
        );
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
    Try::Admitted(seen_all, reserves, None)
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
    settle_redis(links, target, retry);
    LOCAL.synced(&limited.key, &pushed, totals.as_deref(), now_ms());
}

/// This worker's link to `target` (made on first use) for `use_link`, unless its circuit is
/// open.
fn with_link<T>(
    links: &RefCell<HashMap<String, Link>>,
    target: &RedisTarget,
    use_link: impl FnOnce(&mut Link) -> T,
) -> Result<T, String> {
    let mut links = links.borrow_mut();
    if !links.contains_key(target.id()) {
        let n = LINKS.fetch_add(1, Ordering::Relaxed);
        let link = Link {
            conn: target.connect()?,
            name: format!("{}.{n}", *INSTANCE).into(),
            held: store::Held::default(),
            open_until: None,
            pending: Vec::new(),
            queue: Queue::default(),
            busy: false,
        };
        links.insert(target.id().to_string(), link);
    }
    let link = links.get_mut(target.id()).expect("inserted above");
    if link.circuit_open() {
        return Err(format!("redis {} unavailable (circuit open)", target.label));
    }
    Ok(use_link(link))
}

/// This worker's connection to `target`, unless its circuit is open.
fn link(
    links: &RefCell<HashMap<String, Link>>,
    target: &RedisTarget,
) -> Result<ConnectionManager, String> {
    with_link(links, target, |link| link.conn.clone())
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

/// `sync_rate: 0`: one admission through the link's next script call (see `drain`).
async fn try_redis(
    links: &Rc<RefCell<HashMap<String, Link>>>,
    target: &Arc<RedisTarget>,
    ticket: &Arc<Ticket>,
) -> Try {
    let (reply, verdicts) = oneshot::channel();
    let waiting = Waiting {
        ticket: ticket.clone(),
        reply,
    };
    let start = with_link(links, target, |link| {
        link.queue.admissions.push(waiting);
        !std::mem::replace(&mut link.busy, true)
    });
    match start {
        Ok(true) => {
            actix::spawn(drain(links.clone(), target.clone()));
        }
        Ok(false) => {}
        Err(reason) => return Try::Unavailable(reason),
    }
    let (judged, held) = match tokio::time::timeout(target.timeout, verdicts).await {
        Ok(Ok(Ok(answer))) => answer,
        Ok(Ok(Err(reason))) => return Try::Unavailable(reason),
        Ok(Err(_)) => return Try::Unavailable(format!("redis {}: call dropped", target.label)),
        Err(_) => {
            return Try::Unavailable(format!(
                "redis {}: no answer within {:?}",
                target.label, target.timeout
            ))
        }
    };
    let mut seen_all = SeenAll::new();
    let mut reserves = Reserves::new();
    let mut refused = None;
    for (verdict, seen) in judged {
        seen_all.extend(seen);
        match verdict {
            Verdict::Admit(reserve) => reserves.push(reserve),
            other => refused = Some(other),
        }
    }
    match refused {
        None => Try::Admitted(seen_all, reserves, held),
        Some(Verdict::Refuse) => Try::Refused(seen_all),
        Some(_) => Try::Wait(seen_all),
    }
}

/// Queues settlements for `target`'s next script call; while its circuit is open they wait
/// for Redis to answer again.
fn settle_redis(
    links: &Rc<RefCell<HashMap<String, Link>>>,
    target: &Arc<RedisTarget>,
    settles: Vec<PendingSettle>,
) {
    if settles.is_empty() {
        return;
    }
    let start = {
        let mut all = links.borrow_mut();
        let Some(link) = all.get_mut(target.id()) else {
            return;
        };
        if link.circuit_open() {
            link.pending.extend(settles);
            return;
        }
        link.queue.settles.extend(settles);
        !std::mem::replace(&mut link.busy, true)
    };
    if start {
        actix::spawn(drain(links.clone(), target.clone()));
    }
}

/// Sends the link's queue to Redis, one script call at a time, until it is empty: what
/// arrives while a call is in flight goes in the next one, settlements first (a settled claim
/// frees room for the admissions after it). Started on the worker's thread when work arrives
/// and no call is in flight, it runs after the tasks that are ready, so the requests of one
/// event-loop turn share a call. (Yielding once more before each call, to gather more, made
/// calls no cheaper for Redis and cost the gateway a turn: measured, 0.67x against 0.72x.)
async fn drain(links: Rc<RefCell<HashMap<String, Link>>>, target: Arc<RedisTarget>) {
    loop {
        let taken = {
            let mut all = links.borrow_mut();
            let Some(link) = all.get_mut(target.id()) else {
                return;
            };
            let settles = first(&mut link.queue.settles, BATCH_MAX);
            let mut admissions = first(&mut link.queue.admissions, BATCH_MAX);
            // Requests that stopped waiting (their answer would come too late).
            admissions.retain(|a| !a.reply.is_closed());
            if settles.is_empty() && admissions.is_empty() {
                link.busy = false;
                return;
            }
            if link.circuit_open() {
                let reason = format!("redis {} unavailable (circuit open)", target.label);
                link.pending.extend(settles);
                for a in admissions {
                    let _ = a.reply.send(Err(reason.clone()));
                }
                continue;
            }
            (link.conn.clone(), link.name.clone(), settles, admissions)
        };
        let (mut conn, name, settles, admissions) = taken;
        let mut batch = store::Batch::new(&name, &INSTANCE, LEASE);
        for s in &settles {
            let limited = &s.ticket.keys[s.key];
            batch.settle(&limited.key, &limited.windows, s.tokens, s.learn);
        }
        for a in &admissions {
            let keys = a.ticket.keys.iter();
            let keys = keys.map(|l| (l.key.as_str(), &l.windows[..]));
            batch.admit(keys, a.ticket.policy.sliding, a.ticket.reserve);
        }
        let call = match links.borrow().get(target.id()) {
            Some(link) => batch.call(&link.held),
            None => return,
        };
        let result = match tokio::time::timeout(target.timeout, call.run(&mut conn)).await {
            Ok(Ok(judged)) => Ok(judged),
            Ok(Err(e)) => Err(format!("redis {}: {e}", target.label)),
            Err(_) => Err(format!(
                "redis {}: no answer within {:?}",
                target.label, target.timeout
            )),
        };
        let retry = record(&links, &target, result.is_ok());
        let replies: Vec<(Waiting, Verdicts)> = {
            let mut all = links.borrow_mut();
            let Some(link) = all.get_mut(target.id()) else {
                return;
            };
            link.queue.settles.extend(retry);
            match result {
                Ok(judged) => admissions
                    .into_iter()
                    .zip(judged)
                    .map(|(a, judged)| {
                        let held = hold(&links, &target, link, &a.ticket, &judged);
                        (a, Ok((judged, held)))
                    })
                    .collect(),
                Err(reason) => {
                    link.pending.extend(settles);
                    let failed = |a| (a, Err(reason.clone()));
                    admissions.into_iter().map(failed).collect()
                }
            }
        };
        // Outside the borrow: an answer its request no longer takes gives its claims back.
        for (a, verdicts) in replies {
            let _ = a.reply.send(verdicts);
        }
    }
}

/// The claims this worker's link holds for a request Redis admitted (`sync_rate: 0`), from
/// the script's answer until the request settles: the link states them with each call. Dropped
/// by a request that went away before taking its answer, they go back at once.
struct HeldClaims {
    links: Links,
    target: Arc<RedisTarget>,
    ticket: Arc<Ticket>,
    reserves: Vec<f64>,
    /// What the request cost, counted in Redis as the claims go.
    tokens: f64,
}

/// `judged`, if it admitted the ticket: its claims, now held by `link`.
fn hold(
    links: &Links,
    target: &Arc<RedisTarget>,
    link: &mut Link,
    ticket: &Arc<Ticket>,
    judged: &[store::Judged],
) -> Option<HeldClaims> {
    let reserves = judged.iter().map(|(verdict, _)| match verdict {
        Verdict::Admit(reserve) => Some(*reserve),
        _ => None,
    });
    let reserves: Vec<f64> = reserves.collect::<Option<_>>()?;
    if reserves.len() != ticket.keys.len() {
        return None;
    }
    for (limited, reserve) in ticket.keys.iter().zip(&reserves) {
        link.held.hold(&limited.key, *reserve);
    }
    Some(HeldClaims {
        links: links.clone(),
        target: target.clone(),
        ticket: ticket.clone(),
        reserves,
        tokens: 0.0,
    })
}

impl Drop for HeldClaims {
    fn drop(&mut self) {
        if let Some(link) = self.links.borrow_mut().get_mut(self.target.id()) {
            for (limited, reserve) in self.ticket.keys.iter().zip(&self.reserves) {
                link.held.release(&limited.key, *reserve);
            }
        }
        let settles = settlements(&self.ticket, &self.reserves, self.tokens);
        settle_redis(&self.links, &self.target, settles);
    }
}

/// A request's settlements for Redis, one per key.
fn settlements(ticket: &Arc<Ticket>, reserves: &[f64], tokens: f64) -> Vec<PendingSettle> {
    let settles = reserves
        .iter()
        .enumerate()
        .map(|(key, reserve)| PendingSettle {
            ticket: ticket.clone(),
            key,
            tokens,
            learn: *reserve <= 0.0,
        });
    settles.collect()
}

/// The first `n` of `items`, taken out.
fn first<T>(items: &mut Vec<T>, n: usize) -> Vec<T> {
    if items.len() <= n {
        return std::mem::take(items);
    }
    let rest = items.split_off(n);
    std::mem::replace(items, rest)
}

/// A request ended: counts its tokens and drops its claims (`held`: Redis admitted it).
fn settle(
    links: &Links,
    ticket: &Arc<Ticket>,
    reserves: &[f64],
    held: Option<HeldClaims>,
    tokens: f64,
) {
    settle_here(ticket, tokens);
    match &ticket.policy.backend {
        Backend::Local => {}
        Backend::Redis(target) => match held {
            // It gives its claims back, and settles, as it goes.
            Some(mut held) => held.tokens = tokens,
            // Admitted by the fallback: the tokens still count in Redis.
            None => settle_redis(links, target, settlements(ticket, reserves, tokens)),
        },
        Backend::Synced(target, every) => {
            for limited in &ticket.keys {
                schedule_sync(links, target, *every, limited);
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
    /// The worker's Redis links, lent by its limiter actor, for the settlement.
    links: Links,
    ticket: Arc<Ticket>,
    reserves: Reserves,
    /// Its claims in this worker's Redis link (see `HeldClaims`).
    held: Option<HeldClaims>,
    /// Until settled or released.
    unsettled: bool,
}

/// A ticket's admission as `Permit::admit` finds it.
pub enum Admission {
    /// Admitted or refused at once.
    Decided(Result<(Permit, SeenAll), GatewayError>),
    /// To be waited for with `Permit::pending`.
    Pending(Arc<Ticket>),
}

impl Permit {
    /// Decides on `ticket` at once where that needs nothing the actor owns and no wait:
    /// `strategy: local` admitted or refused outright is decided here, on the caller's thread
    /// (the same worker), without a mailbox round trip or a future.
    pub fn admit(limiter: &Limiter, ticket: Ticket) -> Admission {
        let ticket = Arc::new(ticket);
        if let Backend::Local = ticket.policy.backend {
            match try_local(&ticket) {
                Try::Admitted(seen, reserves, _) => {
                    let permit = Permit::new(limiter, ticket, reserves, None);
                    return Admission::Decided(Ok((permit, seen)));
                }
                Try::Refused(seen) => return Admission::Decided(Err(ticket.refusal(&seen))),
                Try::Wait(_) | Try::Unavailable(_) => {}
            }
        }
        Admission::Pending(ticket)
    }

    /// Asks `limiter` to admit `ticket`, waiting while the budget is committed.
    pub async fn acquire(
        limiter: &Limiter,
        ticket: Ticket,
    ) -> Result<(Permit, SeenAll), GatewayError> {
        match Permit::admit(limiter, ticket) {
            Admission::Decided(decided) => decided,
            Admission::Pending(ticket) => Permit::pending(limiter.clone(), ticket).await,
        }
    }

    /// Admits a ticket `admit` did not decide: Redis admissions go to the worker's link, lent
    /// by the actor, from here; a local one that must wait goes to the actor, which looks again
    /// as requests settle.
    pub async fn pending(
        limiter: Limiter,
        ticket: Arc<Ticket>,
    ) -> Result<(Permit, SeenAll), GatewayError> {
        let (admitted, held) = match &ticket.policy.backend {
            Backend::Redis(_) => admit(limiter.links.clone(), ticket.clone()).await?,
            Backend::Local | Backend::Synced(..) => {
                let admitted = limiter
                    .actor
                    .send(Admit(ticket.clone()))
                    .await
                    .map_err(|e| GatewayError::Internal(format!("limiter unavailable: {e}")))??;
                (admitted, None)
            }
        };
        Ok((
            Permit::new(&limiter, ticket, admitted.reserves, held),
            admitted.seen,
        ))
    }

    fn new(
        limiter: &Limiter,
        ticket: Arc<Ticket>,
        reserves: Reserves,
        held: Option<HeldClaims>,
    ) -> Permit {
        Permit {
            links: limiter.links.clone(),
            ticket,
            reserves,
            held,
            unsettled: true,
        }
    }

    pub fn ticket(&self) -> &Arc<Ticket> {
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
        // On the worker's thread, with the links the actor lends (see `acquire`); a local
        // settlement wakes the waiters.
        let reserves = std::mem::take(&mut self.reserves);
        let held = self.held.take();
        settle(&self.links, &self.ticket, &reserves, held, tokens);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.finish(0.0);
    }
}
