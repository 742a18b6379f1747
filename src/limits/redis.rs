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
use redis::{Script, ScriptInvocation};

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
/// ARGV: instance, lease ms, margin, then the operations:
/// - settle: `s`, key index (in KEYS), claim, tokens, n, n window sizes;
/// - admit: `a`, ticket, reservation (0 = unknown), sliding (0/1), n keys, then per key: key
///   index, m, (size, limit) x m.
///
/// Returns, per admission: the number of its keys judged (in order, up to the first that did
/// not admit; it is admitted, on every key, only if all did), then per judged key: verdict,
/// reservation, (used, reset_ms) per window.
const BATCH: &str = concat!(
    lua_prelude!(),
    r#"
local inst, lease, margin = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local function num(v) return tonumber(v) or 0 end
local keys, stored, added, ttl = {}, {}, {}, {}
local function state(k)
  local s = keys[k]
  if s then return s end
  local key = KEYS[k]
  local flight, sums = key .. ':inflight', key .. ':flight'
  local lapsed = redis.call('ZRANGEBYSCORE', flight, '-inf', now)
  if #lapsed > 0 then
    for _, m in ipairs(lapsed) do forget(sums, m) end
    redis.call('ZREMRANGEBYSCORE', flight, '-inf', now)
  end
  local f = redis.call('HMGET', sums, 'reserved', 'unknown', 'u|' .. inst)
  s = {key = key, flight = flight, sums = sums, reserved = num(f[1]), unknown = num(f[2]),
    here = num(f[3]), claims = redis.call('ZCARD', flight), new = {}, longest = 0}
  keys[k] = s
  return s
end
local function estimate(s)
  if s.est == nil then s.est = num(redis.call('GET', s.key .. ':est')) end
  return s.est
end
-- A window counter with what this call added to it.
local function counter(name)
  local v = stored[name]
  if v == nil then v = num(redis.call('GET', name)); stored[name] = v end
  return v + (added[name] or 0)
end
-- A claim settled: out of the sums (an instance's own count is kept here, another's written).
local function release(s, claim)
  local i, r = string.match(claim, '^([^|]*)|[^|]*|(.*)$')
  r = tonumber(r) or 0
  if r > 0 then s.reserved = s.reserved - r else
    s.unknown = s.unknown - 1
    if i == inst then s.here = s.here - 1
    elseif redis.call('HINCRBY', s.sums, 'u|' .. i, -1) <= 0 then redis.call('HDEL', s.sums, 'u|' .. i) end
  end
  s.claims = s.claims - 1
  s.dirty = true
  if s.claims <= 0 then
    -- No rounding left over from adding and taking away reservations.
    redis.call('DEL', s.sums)
    s.reserved, s.unknown, s.here = 0, 0, 0
  end
end
-- A claim is settled only after the call that admitted it answered, so never in that call.
local function settle(k, claim, tokens, at, n)
  local s = state(k)
  if redis.call('ZREM', s.flight, claim) == 1 then release(s, claim) end
  if tokens <= 0 then return end
  local longest = 0
  for j = at, at + n - 1 do
    local ms = tonumber(ARGV[j]) * 1000
    local name = s.key .. ':' .. ARGV[j] .. ':' .. math.floor(now / ms)
    added[name] = (added[name] or 0) + tokens
    ttl[name] = 2 * ms
    if ms > longest then longest = ms end
  end
  if (tonumber(string.match(claim, '|([^|]*)$')) or 0) <= 0 then
    local est = estimate(s)
    if est <= 0 then est = tokens
    elseif tokens > est then est = est + (tokens - est) / 2
    else est = est + (tokens - est) / 8 end
    s.est, s.learnt = est, true
    if longest > s.longest then s.longest = longest end
  end
end
-- The rule of admission.rs for one key: the verdict, the reservation it keeps, what it saw.
local function judge(s, reserve, sliding, at, n)
  local each = margin * estimate(s)
  local counted = nil
  if s.unknown <= 0 then counted = 0 elseif each > 0 then counted = s.unknown * each end
  local exhausted, fits = false, reserve > 0 and counted ~= nil
  local side, room = reserve <= 0 and each > 0 and counted ~= nil, s.here <= 0
  local seen = {}
  for w = 0, n - 1 do
    local size, limit = ARGV[at + 2 * w], tonumber(ARGV[at + 1 + 2 * w])
    local ms = tonumber(size) * 1000
    local id = math.floor(now / ms)
    local used = counter(s.key .. ':' .. size .. ':' .. id)
    if sliding then
      used = used + counter(s.key .. ':' .. size .. ':' .. (id - 1)) * (ms - (now - id * ms)) / ms
    end
    if used >= limit then exhausted = true end
    if fits and used + s.reserved + counted + reserve > limit then fits = false end
    if side and used + s.reserved + counted + each > limit then side = false end
    if used + s.reserved >= limit then room = false end
    seen[#seen + 1] = tostring(used)
    seen[#seen + 1] = tostring((id + 1) * ms - now)
  end
  if exhausted then return 'refuse', 0, seen end
  if fits then return 'admit', reserve, seen end
  if side or room then return 'admit', 0, seen end
  return 'wait', 0, seen
end
local function admit(at, out)
  local ticket, given, sliding = ARGV[at], ARGV[at + 1], ARGV[at + 2] == '1'
  local reserve, n = tonumber(given), tonumber(ARGV[at + 3])
  at = at + 4
  local count, judged, claims, all = #out + 1, 0, {}, true
  out[count] = ''
  for _ = 1, n do
    local k, m = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
    if all then
      local s = state(k)
      local verdict, r, seen = judge(s, reserve, sliding, at + 2, m)
      -- The claim names the reservation as the gateway wrote it, so its settlement finds it.
      local named = '0'
      if r > 0 then named = given end
      out[#out + 1] = verdict
      out[#out + 1] = named
      for _, v in ipairs(seen) do out[#out + 1] = v end
      judged = judged + 1
      all = verdict == 'admit'
      claims[#claims + 1] = {s, r, inst .. '|' .. ticket .. '|' .. named}
    end
    at = at + 2 + 2 * m
  end
  out[count] = tostring(judged)
  if not all then return at end
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
  return at
end
local out, at = {}, 4
while at <= #ARGV do
  if ARGV[at] == 's' then
    local n = tonumber(ARGV[at + 4])
    settle(tonumber(ARGV[at + 1]), ARGV[at + 2], tonumber(ARGV[at + 3]), at + 5, n)
    at = at + 5 + n
  else
    at = admit(at + 1, out)
  end
end
for _, s in pairs(keys) do
  if s.dirty and s.claims > 0 then
    redis.call('HSET', s.sums, 'reserved', s.reserved, 'unknown', s.unknown)
    if s.here > 0 then redis.call('HSET', s.sums, 'u|' .. inst, s.here)
    else redis.call('HDEL', s.sums, 'u|' .. inst) end
  end
  if #s.new > 0 then
    redis.call('ZADD', s.flight, unpack(s.new))
    redis.call('PEXPIRE', s.flight, lease)
    redis.call('PEXPIRE', s.sums, lease)
  end
  if s.learnt then
    redis.call('SET', s.key .. ':est', s.est, 'PX', math.max(2 * s.longest, 1))
  end
end
for name, tokens in pairs(added) do
  redis.call('INCRBYFLOAT', name, tokens)
  redis.call('PEXPIRE', name, ttl[name])
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
    /// The distinct keys, as the call names them (`KEYS`).
    keys: Vec<String>,
    /// Per admission, the number of windows of each of its keys, to read the reply.
    admissions: Vec<Vec<usize>>,
    settles: usize,
}

/// One key's verdict on an admission, and its windows as the script saw them.
pub type Judged = (Verdict, Vec<Seen>);

impl Batch {
    pub fn new(instance: &str, lease: Duration) -> Batch {
        let mut call = BATCH_SCRIPT.prepare_invoke();
        call.arg(instance).arg(lease.as_millis() as u64).arg(MARGIN);
        Batch {
            call,
            keys: Vec::new(),
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

    /// The 1-based index of `key` in `KEYS`.
    fn key(&mut self, key: &str) -> usize {
        let at = match self.keys.iter().position(|k| k == key) {
            Some(at) => at,
            None => {
                self.call.key(key);
                self.keys.push(key.to_string());
                self.keys.len() - 1
            }
        };
        at + 1
    }

    /// Drops `claim` from `key`'s requests in flight and counts `tokens` in its windows.
    pub fn settle(&mut self, key: &str, claim: &str, tokens: f64, windows: &[Window]) {
        let key = self.key(key);
        self.call
            .arg("s")
            .arg(key)
            .arg(claim)
            .arg(tokens)
            .arg(windows.len());
        for w in windows {
            self.call.arg(w.size);
        }
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
        // Written as the claim will name it (see `claim`), and read back from the reply.
        let reserve = reserve.filter(|r| *r > 0.0).unwrap_or(0.0).to_string();
        let mut shape = Vec::with_capacity(keys.len());
        let mut args = Vec::with_capacity(keys.len());
        for (key, windows) in keys {
            args.push((self.key(key), windows));
            shape.push(windows.len());
        }
        self.call
            .arg("a")
            .arg(ticket)
            .arg(reserve)
            .arg(if sliding { 1 } else { 0 })
            .arg(args.len());
        for (key, windows) in args {
            self.call.arg(key).arg(windows.len());
            for w in windows {
                self.call.arg(w.size).arg(w.limit);
            }
        }
        self.admissions.push(shape);
    }

    /// Runs the call; per admission, in order, the verdict of each key judged: up to the first
    /// that did not admit (then none of them did).
    pub async fn run(&self, conn: &mut ConnectionManager) -> redis::RedisResult<Vec<Vec<Judged>>> {
        let reply: Vec<String> = self.call.invoke_async(conn).await?;
        let mut words = reply.iter().map(String::as_str);
        let mut word = || words.next().unwrap_or("");
        let number = |v: &str| v.parse::<f64>().unwrap_or(0.0);
        let mut out = Vec::with_capacity(self.admissions.len());
        for shape in &self.admissions {
            let judged = number(word()) as usize;
            let mut keys = Vec::with_capacity(judged);
            for windows in shape.iter().take(judged) {
                let (verdict, reserve) = (word(), number(word()));
                let verdict = match verdict {
                    "admit" => Verdict::Admit(reserve),
                    "refuse" => Verdict::Refuse,
                    _ => Verdict::Wait,
                };
                let seen = (0..*windows)
                    .map(|_| Seen {
                        used: number(word()),
                        reset_ms: number(word()) as u64,
                    })
                    .collect();
                keys.push((verdict, seen));
            }
            out.push(keys);
        }
        Ok(out)
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
