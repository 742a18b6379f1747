//! `aigw-load`: the load client of `loadtest/run.sh`.
//!
//! One thread (a tokio current-thread runtime, so it can be pinned to one core), raw HTTP/1.1
//! keep-alive connections and prebuilt request bytes, so the client costs a few microseconds per
//! request. Three modes:
//!
//! * `closed --concurrency C`: C connections; each sends its next request as soon as the previous
//!   answer has ended (throughput and latency at fixed concurrency).
//! * `rate --rate R --concurrency C`: open loop, one request every 1/R s on a pool of at most C
//!   connections (latency percentiles at a fixed rate; a late answer does not delay the next
//!   request).
//! * `hold --concurrency C`: C streams open at the same time (ramped, at most `--connect-parallel`
//!   waiting for their response head), each read to its end (memory with many open streams).
//!
//! With `--stream` the body is read as SSE: an event ends at a blank line; the client records the
//! time to the first complete event (TTFE), the gap between consecutive events and the event
//! count. In every mode the client reads `/proc/<pid>/stat` (utime + stime) of the `--watch` pids
//! at the start and the end of the measured window and samples their `VmRSS` every 100 ms.
//! The result is one JSON object (stdout, or `--out FILE`). Every run is bounded by
//! `--duration` (plus the per-request `--timeout`) and `--max-requests`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::LocalSet;
use tokio::time::timeout;
mod args;
mod http;
mod modes;
mod procfs;
mod stats;

use args::*;
use http::*;
use modes::*;
use procfs::*;
use stats::*;

fn main() {
    let o = Rc::new(parse_args());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = LocalSet::new();
    let result = local.block_on(&runtime, run(o.clone()));
    let text = serde_json::to_string_pretty(&result).expect("json");
    match &o.out {
        Some(path) => std::fs::write(path, text + "\n")
            .unwrap_or_else(|e| die(&format!("cannot write {path}: {e}"))),
        None => println!("{text}"),
    }
}

async fn run(o: Rc<Opts>) -> Value {
    let st = Rc::new(RefCell::new(Stats::default()));
    let hold = Rc::new(HoldState::default());
    let t0 = Instant::now();
    let (t_start, t_end) = match o.mode {
        Mode::Hold => (t0, t0 + o.duration),
        _ => (t0 + o.warmup, t0 + o.warmup + o.duration),
    };
    let watch = Rc::new(Watch {
        rss_start: status_kib(&o.watch, "VmRSS:"),
        rss_peak: Cell::new(0),
        rss_full: Cell::new(0),
        cpu_start: Cell::new(None),
        cpu_end: Cell::new(None),
        stop: Cell::new(false),
    });
    tokio::task::spawn_local(sampler(o.clone(), watch.clone(), hold.clone(), t_start));
    if o.mode != Mode::Hold {
        // CPU readings at the edges of the measured window.
        let (o2, w2) = (o.clone(), watch.clone());
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(t_start.into()).await;
            w2.cpu_start.set(cpu_snap(&o2));
            tokio::time::sleep_until(t_end.into()).await;
            w2.cpu_end.set(cpu_snap(&o2));
        });
    } else {
        watch.cpu_start.set(cpu_snap(&o));
    }
    match o.mode {
        Mode::Closed => run_closed(o.clone(), st.clone(), t_start, t_end).await,
        Mode::Rate => run_rate(o.clone(), st.clone(), t0, t_start, t_end).await,
        Mode::Hold => {
            // The whole hold run is bounded by --duration.
            if timeout(o.duration, run_hold(o.clone(), st.clone(), hold.clone()))
                .await
                .is_err()
            {
                let unfinished = o.concurrency as u64
                    - st.borrow().ok
                    - st.borrow().errors.values().sum::<u64>();
                st.borrow_mut()
                    .errors
                    .insert("unfinished_at_deadline".into(), unfinished);
            }
        }
    }
    let finished = Instant::now();
    watch.stop.set(true);
    if watch.cpu_end.get().is_none() {
        // The workers stop at the window's end; read now if the edge timer has not run yet.
        watch.cpu_end.set(cpu_snap(&o));
    }
    let window = match o.mode {
        Mode::Hold => finished - t0,
        _ => t_end - t_start,
    };
    let window_s = window.as_secs_f64();
    let mut st = st.borrow_mut();
    let errors: u64 = st.errors.values().sum();
    let ok = st.ok;
    let cpu = match (watch.cpu_start.get(), watch.cpu_end.get()) {
        (Some(a), Some(b)) => {
            let s = |x: u64, y: u64| y.saturating_sub(x) as f64 / o.clk_tck;
            let seconds = s(a.watch, b.watch);
            let ours = seconds + s(a.aux, b.aux) + s(a.client, b.client);
            let machine = s(a.machine, b.machine);
            json!({
                "ticks": b.watch.saturating_sub(a.watch), "clk_tck": o.clk_tck,
                "seconds": round3(seconds),
                "util": round3(seconds / window_s),
                "us_per_req": if ok > 0 { round(seconds * 1e6 / ok as f64) } else { 0.0 },
                "aux_seconds": round3(s(a.aux, b.aux)),
                "client_seconds": round3(s(a.client, b.client)),
                // CPU used by processes outside this run (a compile next door), in cores.
                "background_cores": round3(((machine - ours) / window_s).max(0.0)),
            })
        }
        _ => Value::Null,
    };
    let rss = if o.watch.is_empty() {
        Value::Null
    } else {
        json!({
            "start": watch.rss_start, "peak": watch.rss_peak.get(),
            "end": status_kib(&o.watch, "VmRSS:"), "hwm": status_kib(&o.watch, "VmHWM:"),
            "at_full": if o.mode == Mode::Hold { Some(watch.rss_full.get()) } else { None },
        })
    };
    let events_per_stream = if o.stream && ok > 0 {
        round(st.events as f64 / ok as f64)
    } else {
        0.0
    };
    json!({
        "label": o.label,
        "mode": o.mode.name(),
        "url": o.url,
        "stream": o.stream,
        "concurrency": o.concurrency,
        "rate": if o.mode == Mode::Rate { Some(o.rate) } else { None },
        "warmup_s": if o.mode == Mode::Hold { 0.0 } else { o.warmup.as_secs_f64() },
        "window_s": round3(window_s),
        "ok": ok,
        "errors": st.errors,
        "error_count": errors,
        "retried_stale": st.retried_stale,
        "rps": round(ok as f64 / window_s),
        "latency_us": summary(&mut st.latency),
        "latency_sched_us": summary(&mut st.latency_sched),
        "ttfe_us": summary(&mut st.ttfe),
        "gap_us": summary(&mut st.gaps),
        "events_per_stream": events_per_stream,
        "cpu": cpu,
        "rss_kib": rss,
        "hold": if o.mode == Mode::Hold {
            json!({
                "target": o.concurrency,
                "max_open": hold.max_open.get(),
                "ramp_s": hold.all_open_at.get().map(|t| round3((t - t0).as_secs_f64())),
            })
        } else { Value::Null },
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
