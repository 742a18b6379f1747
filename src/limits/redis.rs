//! `strategy: redis` with `sync_rate: 0`: every admission and every settlement is decided and
//! recorded in Redis, on a server shared by all instances, by an atomic Lua script (`BATCH`)
//! running the rule of `admission.rs` on Redis's clock, so N instances enforce one limit.
//! One call carries many operations: each worker sends the settlements and admissions that
//! arrived while its previous call was in flight together (see `LimiterActor`), settlements
//! first, and the script runs them in order, each admission judged against the counters as the
//! operations before it left them, exactly as separate calls would have. It reads a key's
//! state once per call, keeps it in Lua while the operations change it and writes it back
//! once, so the server's work per request is a few table look-ups rather than a dozen
//! commands. With `sync_rate > 0` the instances admit from their own counters and a second
//! script (`SYNC`) adds what each counted and returns the totals, every `sync_rate` seconds
//! per key.
//!
//! Keys, per limited identity (`<key>` is `aigw:rl:<namespace>:<provider>:<identity>`):
//! `<key>:<size>:<window number>` the tokens counted in a window (expire after two windows);
//! `<key>:held`, what is in flight: a hash with one field per link (a worker's connection to
//! the server), the sum of its claims' reservations, its unknown-cost claims and a lease expiry
//! (see `BATCH`: a link states its own with every call, so settlements are idempotent, and a
//! crashed instance's claims lapse with its lease); and `<key>:est`, the key's estimate of an
//! unknown-cost request's cost, shared by all instances and updated at each settlement
//! (expires with the longest window's counters).
//!
//! The gateway never hangs on Redis: every call is bounded by `redis.timeout`, and after a
//! failure the connection's circuit stays open for a second, during which calls fail at once
//! (the policy then fails open or closed). Settlements that failed are retried once Redis
//! answers again, so the tokens of requests that ended during an outage count, and the next
//! call states the claims the link still holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::admission::{Seen, Verdict, Window, MARGIN};
use super::local::Pushed;
use crate::config::rate_limit::RedisConfig;

/// While a server is unreachable, requests log it this often.
pub const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(60);

/// A Redis server as a policy names it.
pub struct RedisTarget {
    /// The connection URL (with credentials: never logged).
    url: String,
    /// `ssl_verify: true`: the trust anchors, as PEM (see [`trusted_roots`]).
    roots: Option<Vec<u8>>,
    /// `host:port`, for logs.
    pub label: String,
    pub timeout: Duration,
    /// When requests were last told (logged) that this server is unreachable, in ms since the
    /// epoch; 0 while it answers.
    outage_logged_ms: AtomicU64,
}

/// Neither the URL (credentials) nor the certificates.
impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("label", &self.label)
            .field("verified", &self.roots.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisTarget {
    pub fn new(config: &RedisConfig) -> Result<RedisTarget, String> {
        let host = config.host.as_deref().unwrap_or("127.0.0.1");
        let scheme = if config.ssl { "rediss" } else { "redis" };
        let mut url = url::Url::parse(&format!(
            "{scheme}://{host}:{}/{}",
            config.port, config.database
        ))
        .map_err(|e| format!("redis: {e}"))?;
        if let Some(user) = &config.username {
            url.set_username(user)
                .map_err(|_| "redis.username: not usable in a URL")?;
        }
        if let Some(password) = &config.password {
            url.set_password(Some(password))
                .map_err(|_| "redis.password: not usable in a URL")?;
        }
        let mut url = url.to_string();
        if config.ssl && !config.ssl_verify {
            url.push_str("#insecure");
        }
        Ok(RedisTarget {
            url,
            roots: (config.ssl && config.ssl_verify).then(trusted_roots),
            label: format!("{host}:{}", config.port),
            timeout: Duration::from_millis(config.timeout),
            outage_logged_ms: AtomicU64::new(0),
        })
    }

    /// Whether a request that finds the server unreachable at `now_ms` logs it: the first one
    /// of an outage, then one every `OUTAGE_LOG_EVERY`, not every request.
    pub fn outage_log_due(&self, now_ms: u64) -> bool {
        let last = self.outage_logged_ms.load(Ordering::Relaxed);
        (last == 0 || now_ms >= last.saturating_add(OUTAGE_LOG_EVERY.as_millis() as u64))
            && self
                .outage_logged_ms
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The server answers again: the next outage is logged at once.
    pub fn outage_over(&self) {
        self.outage_logged_ms.store(0, Ordering::Relaxed);
    }

    /// Identifies the server and credentials, so each worker keeps one connection per target.
    pub fn id(&self) -> &str {
        &self.url
    }

    /// A lazily connecting, self-reconnecting connection bounded by the target's timeout.
    pub fn connect(&self) -> Result<ConnectionManager, String> {
        let client = match &self.roots {
            Some(roots) => redis::Client::build_with_tls(
                self.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(roots.clone()),
                },
            ),
            None => redis::Client::open(self.url.as_str()),
        }
        .map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())
    }
}

/// The certificates `ssl_verify: true` trusts: the system's store, as Kong's
/// `lua_ssl_trusted_certificate = system` (`SSL_CERT_FILE` / `SSL_CERT_DIR` replace it, so a
/// private CA can be added without touching the system), plus the bundled public roots for a
/// machine without one. Read when the config is loaded, so a reload picks up a new CA.
fn trusted_roots() -> Vec<u8> {
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        tracing::warn!(error = %error, "reading the system's trusted certificates");
    }
    let certs = system
        .certs
        .iter()
        .map(|c| c.as_ref())
        .chain(
            webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .map(|c| c.as_ref()),
        )
        .map(|der| pem::Pem::new("CERTIFICATE", der));
    pem::encode_many(&certs.collect::<Vec<_>>()).into_bytes()
}

/// Settlements and admissions, in the order given, in one call. The state of each key it
/// touches (what is in flight, the estimate, the window counters) is read once, kept in Lua
/// while the operations change it, and written back once at the end, so an operation costs the
/// Redis server a few table look-ups and no command. Numbers arrive as strings, and arithmetic
/// converts them (with one parse where `tonumber` makes two); operations name their shapes by
/// the string that names them, a table look-up.
///
/// In flight: `<key>:held` has one field per link (a worker's connection), what the link's
/// admitted requests that have not settled reserve, `<reserved> <unknown> <lease expiry ms>`.
/// The gateway states its link's part with every call (`Held`), so a settlement counts in it
/// exactly once however often it is sent, and a claim nobody received the answer for is gone
/// the next call; a link silent for a lease (its instance died) is dropped by whichever call
/// reads it next. Links are named `<instance>.<n>`, so a key knows this instance's unknown-cost
/// requests in flight however many workers admitted them.
///
/// KEYS: the keys the operations name. ARGV: link, instance, lease ms, margin, the number of
/// shapes; then per key this link's (reserved, unknown) in flight; then per shape (a key with
/// its windows; a key may have two if a reload changed its windows): its name, its key (index
/// in KEYS), sliding (0/1), m, (size, limit) x m; then the operations:
/// - settle: `r` (a reserved request) or `u` (an unknown-cost one, which teaches the key's
///   estimate), shape, tokens (> 0; a settlement that counts nothing only changes what the
///   link holds);
/// - admit: `a`, shape, reservation (0 = unknown); on several keys: `A`, n, n shapes,
///   reservation.
///
/// Returns, per admission, per key judged (in order, up to the first that did not admit; it is
/// admitted, on every key, only if all did): snapshot x 4 + verdict (0 admitted with its
/// reservation, 1 admitted as unknown cost, 2 wait, 3 refused); then the snapshots: a shape
/// (its index, from 1) and (used, reset_ms) per window, as the admissions after the last
/// settlement of the key saw them.
const BATCH: &str = r#"
local call, match, sub, floor = redis.call, string.match, string.sub, math.floor
local t = call('TIME')
local now = t[1] * 1000 + floor(t[2] / 1000)
local link, lease, margin, last = ARGV[1], ARGV[3] + 0, ARGV[4] + 0, #ARGV
local ours, stamp = ARGV[2] .. '.', ' ' .. (now + lease)
local keys, shapes, at = {}, {}, 6
for k = 1, #KEYS do
  local key = KEYS[k]
  local s = {key = key, held = key .. ':held', rs = ARGV[at], r = ARGV[at] + 0,
    u = ARGV[at + 1] + 0, gone = {}, version = 0}
  local reserved, unknown, here = s.r, s.u, s.u
  local h = call('HGETALL', s.held)
  for i = 1, #h, 2 do
    local name = h[i]
    if name == link then s.had = true else
      local r, u, e = match(h[i + 1], '^(%S+) (%S+) (%S+)$')
      if e == nil or e + 0 < now then s.gone[#s.gone + 1] = name else
        reserved, unknown = reserved + r, unknown + u
        if sub(name, 1, #ours) == ours then here = here + u end
      end
    end
  end
  s.reserved, s.unknown, s.here = reserved, unknown, here
  keys[k] = s
  at = at + 2
end
for j = 1, ARGV[5] + 0 do
  local s, m, w, longest = keys[ARGV[at + 1] + 0], ARGV[at + 3] + 0, {}, 0
  for i = 1, m do
    local size = ARGV[at + 2 + 2 * i]
    local ms = size * 1000
    local id = floor(now / ms)
    local base = s.key .. ':' .. size .. ':'
    w[i] = {ms = ms, limit = ARGV[at + 3 + 2 * i] + 0, cur = base .. id,
      prev = base .. (id - 1), weight = (ms - (now - id * ms)) / ms, reset = (id + 1) * ms - now}
    if ms > longest then longest = ms end
  end
  shapes[ARGV[at]] = {j = j, s = s, sliding = ARGV[at + 2] == '1', w = w, longest = longest}
  at = at + 4 + 2 * m
end
local stored, added, ttl, snaps, out, n = {}, {}, {}, {}, {}, 0
local function estimate(s)
  if s.est == nil then
    local v = call('GET', s.key .. ':est')
    s.est = v and v + 0 or 0
  end
  return s.est
end
-- A window counter with what this call added to it.
local function counter(name)
  local v = stored[name]
  if v == nil then
    v = call('GET', name)
    v = v and v + 0 or 0
    stored[name] = v
  end
  return v + (added[name] or 0)
end
local function settle(sh, tokens, learn)
  local s = sh.s
  for _, w in ipairs(sh.w) do
    added[w.cur] = (added[w.cur] or 0) + tokens
    ttl[w.cur] = 2 * w.ms
  end
  s.version = s.version + 1
  if learn then
    local est = estimate(s)
    if est <= 0 then est = tokens
    elseif tokens > est then est = est + (tokens - est) / 2
    else est = est + (tokens - est) / 8 end
    s.est, s.learnt = est, true
    if sh.longest > (s.longest or 0) then s.longest = sh.longest end
  end
end
-- The shape's windows as they stand: read again after a settlement counted in the key.
local function look(sh, s)
  if sh.version == s.version then return end
  local used, snap = {}, {sh.j}
  for i, w in ipairs(sh.w) do
    local u = counter(w.cur)
    if sh.sliding then u = u + counter(w.prev) * w.weight end
    used[i] = u
    snap[2 * i], snap[2 * i + 1] = tostring(u), w.reset
  end
  snaps[#snaps + 1] = snap
  sh.used, sh.snap, sh.version = used, #snaps, s.version
end
-- The rule of admission.rs for one key, as a verdict (see above).
local function judge(sh, s, reserve)
  look(sh, s)
  local each = margin * estimate(s)
  local counted = nil
  if s.unknown <= 0 then counted = 0 elseif each > 0 then counted = s.unknown * each end
  local exhausted, fits = false, reserve > 0 and counted ~= nil
  local side, room = reserve <= 0 and each > 0 and counted ~= nil, s.here <= 0
  local reserved, used = s.reserved, sh.used
  for i, w in ipairs(sh.w) do
    local u, limit = used[i], w.limit
    if u >= limit then exhausted = true end
    if fits and u + reserved + counted + reserve > limit then fits = false end
    if side and u + reserved + counted + each > limit then side = false end
    if u + reserved >= limit then room = false end
  end
  if exhausted then return 3 end
  if fits then return 0 end
  if side or room then return 1 end
  return 2
end
-- An admission on the k shapes named from ARGV[at]; returns where the next operation starts.
local function admit(at, k)
  local given, verdicts = ARGV[at + k], {}
  local reserve = 0
  if given ~= '0' then reserve = given + 0 end
  for i = 1, k do
    local sh = shapes[ARGV[at + i - 1]]
    local v = judge(sh, sh.s, reserve)
    n = n + 1
    out[n] = sh.snap * 4 + v
    if v > 1 then return at + k + 1 end
    verdicts[i] = v
  end
  for i = 1, k do
    local s = shapes[ARGV[at + i - 1]].s
    if verdicts[i] == 0 then s.reserved, s.r, s.moved = s.reserved + reserve, s.r + reserve, true
    else s.unknown, s.here, s.u = s.unknown + 1, s.here + 1, s.u + 1 end
  end
  return at + k + 1
end
while at <= last do
  local op = ARGV[at]
  if op == 'a' then at = admit(at + 1, 1)
  elseif op == 'A' then at = admit(at + 2, ARGV[at + 1] + 0)
  else
    settle(shapes[ARGV[at + 1]], ARGV[at + 2] + 0, op == 'u')
    at = at + 3
  end
end
for _, s in ipairs(keys) do
  if s.r > 0 or s.u > 0 then
    -- What the gateway stated, or the sum written out in full.
    local r = s.rs
    if s.moved then r = string.format('%.17g', s.r) end
    call('HSET', s.held, link, r .. ' ' .. s.u .. stamp)
    call('PEXPIRE', s.held, lease)
  elseif s.had then s.gone[#s.gone + 1] = link end
  if #s.gone > 0 then call('HDEL', s.held, unpack(s.gone)) end
  if s.learnt then call('SET', s.key .. ':est', s.est, 'PX', math.max(2 * s.longest, 1)) end
end
for name, tokens in pairs(added) do
  call('INCRBYFLOAT', name, tokens)
  -- Counters only grow: one that stood at 0 (or was not read) may be new, and gets its lifetime.
  if (stored[name] or 0) == 0 then call('PEXPIRE', name, ttl[name]) end
end
for _, snap in ipairs(snaps) do
  for _, v in ipairs(snap) do n = n + 1; out[n] = v end
end
return out
"#;

/// Sync (`sync_rate > 0`): add the tokens an instance counted, per window size, to the window
/// they were counted in (numbered on the instance's clock) and the one before, and return both
/// windows' totals. ARGV: (size, window number, tokens, tokens of the window before) per window.
/// Returns {current, previous, current, previous, ...}.
const SYNC: &str = r#"
local key, out = KEYS[1], {}
for i = 1, #ARGV, 4 do
  local size, id = ARGV[i], tonumber(ARGV[i + 1])
  local ms = tonumber(size) * 1000
  local cur = key .. ':' .. size .. ':' .. id
  local prev = key .. ':' .. size .. ':' .. (id - 1)
  for _, kv in ipairs({{cur, tonumber(ARGV[i + 2])}, {prev, tonumber(ARGV[i + 3])}}) do
    if kv[2] > 0 then
      redis.call('INCRBYFLOAT', kv[1], kv[2])
      redis.call('PEXPIRE', kv[1], 2 * ms)
    end
  end
  out[#out + 1] = redis.call('GET', cur) or '0'
  out[#out + 1] = redis.call('GET', prev) or '0'
end
return out
"#;

/// The scripts, hashed once (`EVALSHA` names them by their SHA-1).
static BATCH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(BATCH));
static SYNC_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SYNC));

/// Entry `i` of a script's reply as a number (0 when missing).
fn number_at(reply: &[String], i: usize) -> f64 {
    reply
        .get(i)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// What one link (a worker's connection to a server) has in flight, per key: the claims of the
/// requests Redis admitted through it that have not settled. `Batch` states it with every call,
/// and Redis keeps it for other instances to read (see `BATCH`).
#[derive(Default)]
pub struct Held(HashMap<String, Holding>);

#[derive(Default, Clone, Copy)]
struct Holding {
    /// The sum of the reserved claims' reservations, and how many they are.
    reserved: f64,
    reservations: u32,
    unknown: u32,
}

impl Held {
    /// A claim with `reserve` (0 = unknown cost) admitted on `key`.
    pub fn hold(&mut self, key: &str, reserve: f64) {
        if !self.0.contains_key(key) {
            self.0.insert(key.to_string(), Holding::default());
        }
        let h = self.0.get_mut(key).expect("inserted above");
        if reserve > 0.0 {
            h.reserved += reserve;
            h.reservations += 1;
        } else {
            h.unknown += 1;
        }
    }

    /// A claim `hold` recorded ended.
    pub fn release(&mut self, key: &str, reserve: f64) {
        let Some(h) = self.0.get_mut(key) else {
            return;
        };
        if reserve > 0.0 {
            h.reservations = h.reservations.saturating_sub(1);
            // Exactly 0 once none is left: no rounding left over from adding and taking away.
            h.reserved = if h.reservations == 0 {
                0.0
            } else {
                h.reserved - reserve
            };
        } else {
            h.unknown = h.unknown.saturating_sub(1);
        }
        if h.reservations == 0 && h.unknown == 0 {
            self.0.remove(key);
        }
    }

    fn get(&self, key: &str) -> Holding {
        self.0.get(key).copied().unwrap_or_default()
    }
}

/// One call of the `BATCH` script: settlements and admissions, run in the order they were
/// added, atomically.
pub struct Batch<'a> {
    link: &'a str,
    instance: &'a str,
    lease: Duration,
    keys: Vec<&'a str>,
    shapes: Vec<Shape<'a>>,
    ops: Vec<Op>,
    /// The shapes of the admissions' keys, in order (`Op::Admit` takes a range).
    admitted: Vec<usize>,
}

/// A key (index in `keys`) with its windows, as the script's operations name it.
struct Shape<'a> {
    key: usize,
    windows: &'a [Window],
    sliding: bool,
}

enum Op {
    Settle {
        shape: usize,
        tokens: f64,
        learn: bool,
    },
    /// The shapes `admitted[from..to]`.
    Admit {
        from: usize,
        to: usize,
        reserve: f64,
    },
}

/// One key's verdict on an admission, and its windows as the script saw them.
pub type Judged = (Verdict, Vec<Seen>);

impl<'a> Batch<'a> {
    /// A call through `link`, a link of `instance` (named `<instance>.<n>`, see `BATCH`).
    pub fn new(link: &'a str, instance: &'a str, lease: Duration) -> Batch<'a> {
        Batch {
            link,
            instance,
            lease,
            keys: Vec::new(),
            shapes: Vec::new(),
            ops: Vec::new(),
            admitted: Vec::new(),
        }
    }

    /// The index of `key` with `windows` in `shapes`; a settlement (`sliding` None) takes the
    /// key's shape whichever way it slides.
    fn shape(&mut self, key: &'a str, windows: &'a [Window], sliding: Option<bool>) -> usize {
        let found = self.shapes.iter().position(|s| {
            self.keys[s.key] == key
                && s.windows == windows
                && sliding.is_none_or(|sl| sl == s.sliding)
        });
        found.unwrap_or_else(|| {
            let key = match self.keys.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    self.keys.push(key);
                    self.keys.len() - 1
                }
            };
            self.shapes.push(Shape {
                key,
                windows,
                sliding: sliding.unwrap_or(false),
            });
            self.shapes.len() - 1
        })
    }

    /// Counts `tokens` of a request that ended in `key`'s windows; `learn`: it had no
    /// reservation, so its cost teaches the key's estimate. The call also states what the link
    /// holds for `key` (a request that counted nothing only changes that).
    pub fn settle(&mut self, key: &'a str, windows: &'a [Window], tokens: f64, learn: bool) {
        let shape = self.shape(key, windows, None);
        if tokens > 0.0 {
            self.ops.push(Op::Settle {
                shape,
                tokens,
                learn,
            });
        }
    }

    /// Admits a request with `reserve` (its cost bound, if any) on every one of `keys` (its
    /// windows), or on none.
    pub fn admit(
        &mut self,
        keys: impl Iterator<Item = (&'a str, &'a [Window])>,
        sliding: bool,
        reserve: Option<f64>,
    ) {
        let from = self.admitted.len();
        for (key, windows) in keys {
            let shape = self.shape(key, windows, Some(sliding));
            self.admitted.push(shape);
        }
        self.ops.push(Op::Admit {
            from,
            to: self.admitted.len(),
            reserve: reserve.filter(|r| *r > 0.0).unwrap_or(0.0),
        });
    }

    /// The `EVALSHA` command, every argument written straight into one buffer.
    fn command(&self, held: &Held) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(BATCH_SCRIPT.get_hash()).arg(self.keys.len());
        for key in &self.keys {
            cmd.arg(*key);
        }
        cmd.arg(self.link)
            .arg(self.instance)
            .arg(self.lease.as_millis() as u64)
            .arg(MARGIN)
            .arg(self.shapes.len());
        for key in &self.keys {
            let h = held.get(key);
            cmd.arg(h.reserved).arg(h.unknown);
        }
        for (i, shape) in self.shapes.iter().enumerate() {
            cmd.arg(i + 1)
                .arg(shape.key + 1)
                .arg(u8::from(shape.sliding))
                .arg(shape.windows.len());
            for w in shape.windows {
                cmd.arg(w.size).arg(w.limit);
            }
        }
        for op in &self.ops {
            match *op {
                Op::Settle {
                    shape,
                    tokens,
                    learn,
                } => {
                    cmd.arg(if learn { "u" } else { "r" })
                        .arg(shape + 1)
                        .arg(tokens);
                }
                Op::Admit { from, to, reserve } => {
                    if to - from == 1 {
                        cmd.arg("a");
                    } else {
                        cmd.arg("A").arg(to - from);
                    }
                    for shape in &self.admitted[from..to] {
                        cmd.arg(shape + 1);
                    }
                    if reserve > 0.0 {
                        cmd.arg(reserve);
                    } else {
                        cmd.arg("0");
                    }
                }
            }
        }
        cmd
    }

    /// The call, stating what `held` holds for its keys (see `BATCH`).
    pub fn call(self, held: &Held) -> Call<'a> {
        Call {
            cmd: self.command(held),
            batch: self,
        }
    }

    /// The verdicts in the script's reply (see `BATCH`).
    fn verdicts(&self, reply: &[redis::Value]) -> Vec<Vec<Judged>> {
        let mut words = reply.iter();
        let mut judged = Vec::new();
        for op in &self.ops {
            let Op::Admit { from, to, reserve } = *op else {
                continue;
            };
            let mut keys = Vec::with_capacity(to - from);
            for _ in from..to {
                let word = words.next().map_or(0, integer);
                let verdict = match word & 3 {
                    0 => Verdict::Admit(reserve),
                    1 => Verdict::Admit(0.0),
                    2 => Verdict::Wait,
                    _ => Verdict::Refuse,
                };
                keys.push((verdict, (word >> 2) as usize));
                if !matches!(verdict, Verdict::Admit(_)) {
                    break;
                }
            }
            judged.push(keys);
        }
        // The snapshots the verdicts name (from 1): a shape (from 1), then its windows.
        let mut snapshots = Vec::new();
        while let Some(shape) = words.next() {
            let Some(shape) = self.shapes.get((integer(shape) as usize).wrapping_sub(1)) else {
                break;
            };
            let seen: Vec<Seen> = (0..shape.windows.len())
                .map(|_| Seen {
                    used: words.next().map_or(0.0, float),
                    reset_ms: words.next().map_or(0, integer) as u64,
                })
                .collect();
            snapshots.push(seen);
        }
        let seen = |snapshot: usize| {
            snapshots
                .get(snapshot.wrapping_sub(1))
                .cloned()
                .unwrap_or_default()
        };
        judged
            .into_iter()
            .map(|keys| keys.into_iter().map(|(v, s)| (v, seen(s))).collect())
            .collect()
    }
}

/// A `Batch` ready to send.
pub struct Call<'a> {
    cmd: redis::Cmd,
    batch: Batch<'a>,
}

impl Call<'_> {
    /// Runs the call; per admission, in order, the verdict of each key judged: up to the first
    /// that did not admit (then none of them did).
    pub async fn run(self, conn: &mut ConnectionManager) -> redis::RedisResult<Vec<Vec<Judged>>> {
        let reply = match self.cmd.query_async::<redis::Value>(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                BATCH_SCRIPT.load_async(conn).await?;
                self.cmd.query_async(conn).await?
            }
            reply => reply?,
        };
        let redis::Value::Array(reply) = reply else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "the batch script answered no array",
            )));
        };
        Ok(self.batch.verdicts(&reply))
    }
}

/// A reply entry as an integer (0 if it is none).
fn integer(v: &redis::Value) -> i64 {
    match v {
        redis::Value::Int(i) => *i,
        redis::Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// A reply entry as a number (0 if it is none).
fn float(v: &redis::Value) -> f64 {
    match v {
        redis::Value::Int(i) => *i as f64,
        redis::Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Adds `pushed` in Redis; returns Redis's totals (current, previous window) per entry.
pub async fn sync(
    conn: &mut ConnectionManager,
    key: &str,
    pushed: &[Pushed],
) -> redis::RedisResult<Vec<(f64, f64)>> {
    let mut call = SYNC_SCRIPT.key(key);
    for p in pushed {
        call.arg(p.size)
            .arg(p.window)
            .arg(p.current)
            .arg(p.previous);
    }
    let reply: Vec<String> = call.invoke_async(conn).await?;
    let number = |i: usize| number_at(&reply, i);
    Ok((0..pushed.len())
        .map(|w| (number(2 * w), number(2 * w + 1)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_logged_once_a_minute_until_the_server_answers() {
        let config: RedisConfig = serde_json::from_str(r#"{"host": "127.0.0.1"}"#).unwrap();
        let target = RedisTarget::new(&config).unwrap();
        assert!(target.outage_log_due(1_000));
        assert!(!target.outage_log_due(1_001));
        assert!(!target.outage_log_due(60_999));
        assert!(target.outage_log_due(61_000));
        target.outage_over();
        assert!(target.outage_log_due(61_001), "a new outage");
    }
}
