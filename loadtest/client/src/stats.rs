//! Latency and throughput statistics.

use crate::*;

// ---------------------------------------------------------------------------------------------
// Statistics

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) ok: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) latency: Vec<u64>,
    pub(crate) latency_sched: Vec<u64>,
    pub(crate) ttfe: Vec<u64>,
    pub(crate) gaps: Vec<u64>,
    pub(crate) events: u64,
    /// Requests sent again on a new connection because the server had closed the idle
    /// keep-alive connection they were written to (not errors: any HTTP client does this).
    pub(crate) retried_stale: u64,
}

impl Stats {
    pub(crate) fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
    }

    /// Counts one finished exchange; `sched` is the latency from the scheduled send time.
    pub(crate) fn record(
        &mut self,
        o: &Opts,
        out: &Outcome,
        gaps: &[u64],
        sched: Option<Duration>,
    ) {
        if out.status != 200 {
            return self.error(&format!("status_{}", out.status));
        }
        if !out.expect_ok {
            return self.error("unexpected_body");
        }
        if o.stream && out.events == 0 {
            return self.error("no_events");
        }
        self.ok += 1;
        self.latency.push(out.total.as_nanos() as u64);
        if let Some(s) = sched {
            self.latency_sched.push(s.as_nanos() as u64);
        }
        if o.stream {
            if let Some(t) = out.ttfe {
                self.ttfe.push(t.as_nanos() as u64);
            }
            self.gaps.extend_from_slice(gaps);
            self.events += out.events;
        }
    }
}

pub(crate) fn summary(v: &mut [u64]) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_unstable();
    let n = v.len();
    let at = |p: f64| {
        let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        v[i] as f64 / 1000.0
    };
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64 / 1000.0;
    json!({
        "n": n, "mean": round(mean), "p50": round(at(0.50)), "p90": round(at(0.90)),
        "p99": round(at(0.99)), "p999": round(at(0.999)), "max": round(v[n - 1] as f64 / 1000.0),
    })
}

pub(crate) fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
