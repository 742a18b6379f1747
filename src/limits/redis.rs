//! `strategy: redis` with `sync_rate: 0`: every admission and every settlement is one atomic
//! Lua script on a Redis server shared by all instances, running the rule of `admission.rs`
//! on Redis's clock, so N instances enforce one limit. With `sync_rate > 0` the instances
//! admit from their own counters and a third script (`SYNC`) adds what each counted and
//! returns the totals, every `sync_rate` seconds per key.
//!
//! Keys, per limited identity (`<key>` is `aigw:rl:<namespace>:<provider>:<identity>`):
//! `<key>:<size>:<window number>` the tokens counted in a window (expire after two windows);
//! `<key>:inflight`, a sorted set of the requests in flight (`<instance>|<ticket>|<reservation>`,
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

/// Admission: drop lapsed claims, read the windows, the in-flight sums and the estimate,
/// decide (`admission::decide`), record the claim.
/// ARGV: instance, ticket, reservation (0 = unknown), lease ms, sliding (0/1), margin, then
/// (size, limit) per window. Returns {verdict, reservation, used, reset_ms, used, reset_ms, ...}.
const ADMIT: &str = concat!(
    lua_prelude!(),
    r#"
local key, inst, ticket = KEYS[1], ARGV[1], ARGV[2]
local reserve, lease, sliding = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local margin = tonumber(ARGV[6])
local flight, sums = key .. ':inflight', key .. ':flight'
local lapsed = redis.call('ZRANGEBYSCORE', flight, '-inf', now)
if #lapsed > 0 then
  for _, m in ipairs(lapsed) do forget(sums, m) end
  redis.call('ZREMRANGEBYSCORE', flight, '-inf', now)
end
local f = redis.call('HMGET', sums, 'reserved', 'unknown', 'u|' .. inst)
local reserved, unknown, here = tonumber(f[1]) or 0, tonumber(f[2]) or 0, tonumber(f[3]) or 0
local each = margin * tonumber(redis.call('GET', key .. ':est') or '0')
local counted = nil
if unknown <= 0 then counted = 0 elseif each > 0 then counted = unknown * each end
local exhausted, fits = false, reserve > 0 and counted ~= nil
local side, room = reserve <= 0 and each > 0 and counted ~= nil, here <= 0
local out = {}
local n = (#ARGV - 6) / 2
for w = 0, n - 1 do
  local size, limit = tonumber(ARGV[7 + 2 * w]), tonumber(ARGV[8 + 2 * w])
  local ms = size * 1000
  local id = math.floor(now / ms)
  local used = tonumber(redis.call('GET', key .. ':' .. size .. ':' .. id) or '0')
  if sliding then
    local prev = tonumber(redis.call('GET', key .. ':' .. size .. ':' .. (id - 1)) or '0')
    used = used + prev * (ms - (now - id * ms)) / ms
  end
  if used >= limit then exhausted = true end
  if fits and used + reserved + counted + reserve > limit then fits = false end
  if side and used + reserved + counted + each > limit then side = false end
  if used + reserved >= limit then room = false end
  out[#out + 1] = tostring(used)
  out[#out + 1] = tostring((id + 1) * ms - now)
end
local verdict = 'wait'
if exhausted then verdict = 'refuse'
elseif fits then verdict = 'admit'
elseif side or room then verdict = 'admit'; reserve = 0 end
if verdict == 'admit' then
  redis.call('ZADD', flight, now + lease, inst .. '|' .. ticket .. '|' .. reserve)
  if reserve > 0 then redis.call('HINCRBYFLOAT', sums, 'reserved', reserve) else
    redis.call('HINCRBY', sums, 'unknown', 1)
    redis.call('HINCRBY', sums, 'u|' .. inst, 1)
  end
  redis.call('PEXPIRE', flight, lease)
  redis.call('PEXPIRE', sums, lease)
end
table.insert(out, 1, tostring(reserve))
table.insert(out, 1, verdict)
return out
"#
);

/// Settlement: drop the claim, count the tokens in every window and, for a claim of unknown
/// cost, in the key's estimate (`admission::next_estimate`, kept as long as the longest
/// window's counters). ARGV: claim, tokens, sizes...
const SETTLE: &str = concat!(
    lua_prelude!(),
    r#"
local key, claim, tokens = KEYS[1], ARGV[1], tonumber(ARGV[2])
local flight, sums = key .. ':inflight', key .. ':flight'
if redis.call('ZREM', flight, claim) == 1 then
  forget(sums, claim)
  -- No rounding left over from adding and taking away reservations.
  if redis.call('ZCARD', flight) == 0 then redis.call('DEL', sums) end
end
if tokens > 0 then
  local longest = 0
  for i = 3, #ARGV do
    local ms = tonumber(ARGV[i]) * 1000
    local counter = key .. ':' .. ARGV[i] .. ':' .. math.floor(now / ms)
    redis.call('INCRBYFLOAT', counter, tokens)
    redis.call('PEXPIRE', counter, 2 * ms)
    if ms > longest then longest = ms end
  end
  if (tonumber(string.match(claim, '|([^|]*)$')) or 0) <= 0 then
    local est = tonumber(redis.call('GET', key .. ':est') or '0')
    if est <= 0 then est = tokens
    elseif tokens > est then est = est + (tokens - est) / 2
    else est = est + (tokens - est) / 8 end
    redis.call('SET', key .. ':est', tostring(est), 'PX', math.max(2 * longest, 1))
  end
end
return 1
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
static ADMIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ADMIT));
static SETTLE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE));
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

pub async fn admit(
    conn: &mut ConnectionManager,
    key: &str,
    windows: &[Window],
    sliding: bool,
    (instance, ticket): (&str, u64),
    reserve: Option<f64>,
    lease: Duration,
) -> redis::RedisResult<(Verdict, Vec<Seen>)> {
    let mut call = ADMIT_SCRIPT.key(key);
    call.arg(instance)
        .arg(ticket)
        .arg(reserve.unwrap_or(0.0))
        .arg(lease.as_millis() as u64)
        .arg(if sliding { 1 } else { 0 })
        .arg(MARGIN);
    for w in windows {
        call.arg(w.size).arg(w.limit);
    }
    let reply: Vec<String> = call.invoke_async(conn).await?;
    let number = |i: usize| number_at(&reply, i);
    let verdict = match reply.first().map(String::as_str) {
        Some("admit") => Verdict::Admit(number(1)),
        Some("refuse") => Verdict::Refuse,
        _ => Verdict::Wait,
    };
    let seen = (0..windows.len())
        .map(|w| Seen {
            used: number(2 + 2 * w),
            reset_ms: number(3 + 2 * w) as u64,
        })
        .collect();
    Ok((verdict, seen))
}

pub async fn settle(
    conn: &mut ConnectionManager,
    key: &str,
    claim: &str,
    tokens: f64,
    windows: &[Window],
) -> redis::RedisResult<()> {
    let mut call = SETTLE_SCRIPT.key(key);
    call.arg(claim).arg(tokens);
    for w in windows {
        call.arg(w.size);
    }
    call.invoke_async::<i64>(conn).await.map(|_| ())
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
