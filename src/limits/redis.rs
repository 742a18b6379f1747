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
//! `<key>:inflight`, a sorted set of the requests in flight (`<instance>|<ticket>|<reservation>`,
//! the reservation as the gateway wrote it, so that its settlement names the same member;
//! scored by a lease expiry, so a crashed instance's claims lapse), with `<key>:flight`, a hash
//! of their sums (see `lua_prelude`); and `<key>:est`, the key's estimate of an unknown-cost
//! request's cost, shared by all instances and updated at each settlement (expires with the
//! longest window's counters).
//!
//! The gateway never hangs on Redis: every call is bounded by `redis.timeout`, and after a
//! failure the connection's circuit stays open for a second, during which calls fail at once
//! (the policy then fails open or closed). Settlements that failed are retried once Redis
//! answers again, so claims of requests that ended during an outage do not linger.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, ScriptInvocation, ToRedisArgs};

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

/// Lua shared by the scripts: the clock, and `forget`, which takes a claim out of the
/// in-flight sums `<key>:flight` (`reserved`, `unknown`, and `u|<instance>` per instance), so
/// an admission reads three numbers instead of every claim.
macro_rules! lua_prelude {
    () => {
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function forget(sums, claim)
  local i, r = string.match(claim, '^([^|]*)|[^|]*|(.*)$')
  r = tonumber(r) or 0
  if r > 0 then redis.call('HINCRBYFLOAT', sums, 'reserved', -r) else
    redis.call('HINCRBY', sums, 'unknown', -1)
    if redis.call('HINCRBY', sums, 'u|' .. i, -1) <= 0 then redis.call('HDEL', sums, 'u|' .. i) end
  end
end
"#
    };
}

/// Settlements and admissions, in the order given, in one call. The state of each key it
/// touches (the in-flight sums, the number of claims, the estimate, the window counters) is
/// read once, kept in Lua while the operations change it, and written back once at the end,
/// so an operation costs the Redis server a few table look-ups, not a dozen commands.
///
/// KEYS: the *shapes* the operations name, a key with its windows each (a key may appear twice
/// if a reload changed its windows). ARGV: instance, lease ms, margin, then the operations:
/// - settle: `s`, shape, claim, tokens;
/// - admit: `a`, n, n shapes, ticket, reservation (0 = unknown);
///
/// then per shape: sliding (0/1), m, (size, limit) x m; and last, the index in ARGV where the
/// shapes begin.
///
/// Returns, per admission: the number of its keys judged (in order, up to the first that did
/// not admit; it is admitted, on every key, only if all did), then per judged key: verdict,
/// reservation, snapshot; then the snapshots: a shape and (used, reset_ms) per window, as the
/// admissions after the last settlement of the key saw them.
const BATCH: &str = concat!(
    lua_prelude!(),
    r#"
local tonumber, tostring, floor, call = tonumber, tostring, math.floor, redis.call
local inst, lease, margin = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local last = tonumber(ARGV[#ARGV])
local keys, stored, added, ttl, shapes, snaps = {}, {}, {}, {}, {}, {}
local function num(v) return tonumber(v) or 0 end
local function state(key)
  local s = keys[key]
  if s then return s end
  local flight, sums = key .. ':inflight', key .. ':flight'
  local lapsed = call('ZRANGEBYSCORE', flight, '-inf', now)
  if #lapsed > 0 then
    for _, m in ipairs(lapsed) do forget(sums, m) end
    call('ZREMRANGEBYSCORE', flight, '-inf', now)
  end
  local f = call('HMGET', sums, 'reserved', 'unknown', 'u|' .. inst)
  s = {key = key, flight = flight, sums = sums, reserved = num(f[1]), unknown = num(f[2]),
    here = num(f[3]), claims = call('ZCARD', flight), new = {}, longest = 0, version = 0}
  keys[key] = s
  return s
end
local at = last
for j = 1, #KEYS do
  local m, w, longest = tonumber(ARGV[at + 1]), {}, 0
  for i = 1, m do
    local size = ARGV[at + 2 * i]
    local ms = tonumber(size) * 1000
    local id = floor(now / ms)
    local base = KEYS[j] .. ':' .. size .. ':'
    w[i] = {ms = ms, limit = tonumber(ARGV[at + 1 + 2 * i]), cur = base .. id,
      prev = base .. (id - 1), weight = (ms - (now - id * ms)) / ms,
      reset = tostring((id + 1) * ms - now)}
    if ms > longest then longest = ms end
  end
  shapes[j] = {j = tostring(j), key = KEYS[j], sliding = ARGV[at] == '1', w = w, longest = longest}
  at = at + 2 + 2 * m
end
local function estimate(s)
  if s.est == nil then s.est = num(call('GET', s.key .. ':est')) end
  return s.est
end
-- A window counter with what this call added to it.
local function counter(name)
  local v = stored[name]
  if v == nil then v = num(call('GET', name)); stored[name] = v end
  return v + (added[name] or 0)
end
-- A claim of instance i with reservation r settled: out of the sums (an instance's own count
-- is kept here, another's written).
local function release(s, i, r)
  if r > 0 then s.reserved = s.reserved - r else
    s.unknown = s.unknown - 1
    if i == inst then s.here = s.here - 1
    elseif call('HINCRBY', s.sums, 'u|' .. i, -1) <= 0 then call('HDEL', s.sums, 'u|' .. i) end
  end
  s.claims = s.claims - 1
  s.dirty = true
  if s.claims <= 0 then
    -- No rounding left over from adding and taking away reservations.
    call('DEL', s.sums)
    s.reserved, s.unknown, s.here = 0, 0, 0
  end
end
-- A claim is settled only after the call that admitted it answered, so never in that call.
local function settle(sh, claim, tokens)
  local s = state(sh.key)
  local i, r = string.match(claim, '^([^|]*)|[^|]*|(.*)$')
  r = tonumber(r) or 0
  if call('ZREM', s.flight, claim) == 1 then release(s, i, r) end
  if tokens <= 0 then return end
  for _, w in ipairs(sh.w) do
    added[w.cur] = (added[w.cur] or 0) + tokens
    ttl[w.cur] = 2 * w.ms
  end
  s.version = s.version + 1
  if r <= 0 then
    local est = estimate(s)
    if est <= 0 then est = tokens
    elseif tokens > est then est = est + (tokens - est) / 2
    else est = est + (tokens - est) / 8 end
    s.est, s.learnt = est, true
    if sh.longest > s.longest then s.longest = sh.longest end
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
    snap[#snap + 1] = tostring(u)
    snap[#snap + 1] = w.reset
  end
  snaps[#snaps + 1] = snap
  sh.used, sh.snap, sh.version = used, tostring(#snaps), s.version
end
-- The rule of admission.rs for one key: the verdict and the reservation it keeps.
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
  if exhausted then return 'refuse', 0 end
  if fits then return 'admit', reserve end
  if side or room then return 'admit', 0 end
  return 'wait', 0
end
local function admit(at, out)
  local n = tonumber(ARGV[at])
  local ticket, given = ARGV[at + n + 1], ARGV[at + n + 2]
  local reserve = tonumber(given)
  local count, claims = #out + 1, {}
  out[count] = ''
  for i = 1, n do
    local sh = shapes[tonumber(ARGV[at + i])]
    local s = state(sh.key)
    local verdict, r = judge(sh, s, reserve)
    -- The claim names the reservation as the gateway wrote it, so its settlement finds it.
    local named = '0'
    if r > 0 then named = given end
    local o = #out
    out[o + 1], out[o + 2], out[o + 3] = verdict, named, sh.snap
    claims[i] = {s, r, inst .. '|' .. ticket .. '|' .. named}
    if verdict ~= 'admit' then
      out[count] = tostring(i)
      return at + n + 3
    end
  end
  out[count] = tostring(n)
  for _, c in ipairs(claims) do
    local s, r = c[1], c[2]
    s.new[#s.new + 1] = now + lease
    s.new[#s.new + 1] = c[3]
    s.claims = s.claims + 1
    s.dirty = true
    if r > 0 then s.reserved = s.reserved + r else
      s.unknown = s.unknown + 1
      s.here = s.here + 1
    end
  end
  return at + n + 3
end
local out = {}
at = 4
while at < last do
  if ARGV[at] == 's' then
    settle(shapes[tonumber(ARGV[at + 1])], ARGV[at + 2], tonumber(ARGV[at + 3]))
    at = at + 4
  else
    at = admit(at + 1, out)
  end
end
for _, s in pairs(keys) do
  if s.dirty and s.claims > 0 then
    call('HSET', s.sums, 'reserved', s.reserved, 'unknown', s.unknown)
    if s.here > 0 then call('HSET', s.sums, 'u|' .. inst, s.here)
    else call('HDEL', s.sums, 'u|' .. inst) end
  end
  if #s.new > 0 then
    call('ZADD', s.flight, unpack(s.new))
    call('PEXPIRE', s.flight, lease)
    call('PEXPIRE', s.sums, lease)
  end
  if s.learnt then
    call('SET', s.key .. ':est', s.est, 'PX', math.max(2 * s.longest, 1))
  end
end
for name, tokens in pairs(added) do
  call('INCRBYFLOAT', name, tokens)
  call('PEXPIRE', name, ttl[name])
end
for _, snap in ipairs(snaps) do
  for _, v in ipairs(snap) do out[#out + 1] = v end
end
return out
"#
);

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

/// The claim a ticket leaves in the in-flight set.
pub fn claim(instance: &str, ticket: u64, reserve: f64) -> String {
    format!("{instance}|{ticket}|{reserve}")
}

/// One call of the `BATCH` script: settlements and admissions, run in the order they were
/// added, atomically.
pub struct Batch {
    call: ScriptInvocation<'static>,
    /// `ARGV` entries so far.
    args: usize,
    shapes: Vec<Shape>,
    /// Per admission, the shapes of its keys (indices in `shapes`).
    admissions: Vec<Vec<usize>>,
    settles: usize,
}

/// A key with its windows, as the script's operations name it.
struct Shape {
    key: String,
    windows: Vec<Window>,
    sliding: bool,
}

/// One key's verdict on an admission, and its windows as the script saw them.
pub type Judged = (Verdict, Vec<Seen>);

impl Batch {
    pub fn new(instance: &str, lease: Duration) -> Batch {
        let mut call = BATCH_SCRIPT.prepare_invoke();
        call.arg(instance).arg(lease.as_millis() as u64).arg(MARGIN);
        Batch {
            call,
            args: 3,
            shapes: Vec::new(),
            admissions: Vec::new(),
            settles: 0,
        }
    }

    /// Operations in the call.
    pub fn len(&self) -> usize {
        self.settles + self.admissions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn arg(&mut self, arg: impl ToRedisArgs) {
        self.call.arg(arg);
        self.args += 1;
    }

    /// The index of `key` with `windows` in `shapes`; a settlement (`sliding` None) takes the
    /// key's shape whichever way it slides.
    fn shape(&mut self, key: &str, windows: &[Window], sliding: Option<bool>) -> usize {
        let found = self.shapes.iter().position(|s| {
            s.key == key && s.windows == windows && sliding.is_none_or(|sl| sl == s.sliding)
        });
        found.unwrap_or_else(|| {
            self.shapes.push(Shape {
                key: key.to_string(),
                windows: windows.to_vec(),
                sliding: sliding.unwrap_or(false),
            });
            self.shapes.len() - 1
        })
    }

    /// Drops `claim` from `key`'s requests in flight and counts `tokens` in its windows.
    pub fn settle(&mut self, key: &str, claim: &str, tokens: f64, windows: &[Window]) {
        let shape = self.shape(key, windows, None);
        self.arg("s");
        self.arg(shape + 1);
        self.arg(claim);
        self.arg(tokens);
        self.settles += 1;
    }

    /// Admits request `ticket` on every one of `keys` (its windows), or on none.
    pub fn admit<'k>(
        &mut self,
        keys: impl ExactSizeIterator<Item = (&'k str, &'k [Window])>,
        sliding: bool,
        ticket: u64,
        reserve: Option<f64>,
    ) {
        self.arg("a");
        self.arg(keys.len());
        let mut shapes = Vec::with_capacity(keys.len());
        for (key, windows) in keys {
            let shape = self.shape(key, windows, Some(sliding));
            self.arg(shape + 1);
            shapes.push(shape);
        }
        self.arg(ticket);
        // Written as the claim will name it (see `claim`), and read back from the reply.
        self.arg(reserve.filter(|r| *r > 0.0).unwrap_or(0.0).to_string());
        self.admissions.push(shapes);
    }

    /// Runs the call; per admission, in order, the verdict of each key judged: up to the first
    /// that did not admit (then none of them did).
    pub async fn run(
        mut self,
        conn: &mut ConnectionManager,
    ) -> redis::RedisResult<Vec<Vec<Judged>>> {
        let start = self.args + 1;
        for shape in &self.shapes {
            self.call
                .key(&shape.key)
                .arg(if shape.sliding { 1 } else { 0 })
                .arg(shape.windows.len());
            for w in &shape.windows {
                self.call.arg(w.size).arg(w.limit);
            }
        }
        self.call.arg(start);
        let reply: Vec<String> = self.call.invoke_async(conn).await?;
        let mut words = reply.iter().map(String::as_str);
        let mut word = || words.next().unwrap_or("");
        let number = |v: &str| v.parse::<f64>().unwrap_or(0.0);
        let mut verdicts = Vec::with_capacity(self.admissions.len());
        for shapes in &self.admissions {
            let judged = (number(word()) as usize).min(shapes.len());
            let keys: Vec<(Verdict, usize)> = (0..judged)
                .map(|_| {
                    let (verdict, reserve) = (word(), number(word()));
                    let verdict = match verdict {
                        "admit" => Verdict::Admit(reserve),
                        "refuse" => Verdict::Refuse,
                        _ => Verdict::Wait,
                    };
                    (verdict, number(word()) as usize)
                })
                .collect();
            verdicts.push(keys);
        }
        // The snapshots the verdicts name (from 1): a shape (from 1), then its windows.
        let mut snapshots = Vec::new();
        loop {
            let shape = number(word()) as usize;
            let Some(shape) = self.shapes.get(shape.wrapping_sub(1)) else {
                break;
            };
            let seen: Vec<Seen> = (0..shape.windows.len())
                .map(|_| Seen {
                    used: number(word()),
                    reset_ms: number(word()) as u64,
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
        Ok(verdicts
            .into_iter()
            .map(|keys| keys.into_iter().map(|(v, s)| (v, seen(s))).collect())
            .collect())
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
