//! Overload: 1,000 streams held open at once through one gateway (2 workers) all complete with
//! every chunk, nothing leaks afterwards, and the gateway's memory stays bounded. The RSS
//! figures are printed (`cargo test --test overload -- --nocapture`).

mod common;

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;

const STREAMS: usize = 1000;

/// The soft and hard open-files limits of this process.
fn nofile_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Each stream costs a socket here, two in the gateway and one in the mock (all inherit this
/// process's limit); raise the soft limit up to the hard one if the default is too low.
fn ensure_open_files(needed: u64) {
    let (soft, hard) = nofile_limits();
    if soft >= needed {
        return;
    }
    let target = hard.min(needed.max(4096));
    // prlimit changes a running process's limit without unsafe code in the test.
    let _ = Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string()])
        .arg(format!("--nofile={target}:{hard}"))
        .status();
    let (soft, _) = nofile_limits();
    assert!(
        soft >= needed,
        "open-files limit {soft} is below the {needed} this test needs (hard limit {hard})"
    );
}

struct Outcome {
    first_event: Instant,
    finished: Instant,
    content: String,
    done: bool,
}

/// What one wave of [`STREAMS`] concurrent streams did.
struct Wave {
    peak_streams: u64,
    rss_peak: u64,
    rss_after: u64,
}

/// Opens [`STREAMS`] streams at once (each ~4 s long: four 1 s frame gaps, far longer than
/// the ramp-up), checks every one completed while all were open together, and that nothing
/// is left in flight afterwards.
fn wave(gw: &Proc, status: u16) -> Wave {
    let pid = gw.pid();
    let body = chat_body("overload", true).to_string();
    let start = Arc::new(Barrier::new(STREAMS + 1));
    let port = gw.port;
    let clients: Vec<_> = (0..STREAMS)
        .map(|_| {
            let body = body.clone();
            let start = start.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    start.wait();
                    let mut conn = RawConn::post(
                        port,
                        "/chat",
                        &[("x-mock-fault", "chunk_delay=1000,chunks=2")],
                        body.as_bytes(),
                    );
                    assert!(conn.read_until(b"data: "), "{}", conn.text());
                    let first_event = Instant::now();
                    conn.read_to_end();
                    let text = conn.response().text();
                    Outcome {
                        first_event,
                        finished: Instant::now(),
                        content: sse_content(&text),
                        done: text.trim_end().ends_with("data: [DONE]"),
                    }
                })
                .unwrap()
        })
        .collect();
    start.wait();

    let mut peak_streams = 0;
    let mut rss_peak = 0;
    poll_until(Duration::from_secs(20), || {
        let open = gateway_status(status)["open_streams"].as_u64().unwrap();
        peak_streams = peak_streams.max(open);
        rss_peak = rss_peak.max(rss_kib(pid).unwrap_or(0));
        open as usize >= STREAMS
    });
    let outcomes: Vec<Outcome> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_no_leaks(status);

    let complete = outcomes
        .iter()
        .filter(|o| o.done && o.content == "w1 w2")
        .count();
    assert_eq!(complete, STREAMS, "streams dropped or cut");
    let last_open = outcomes.iter().map(|o| o.first_event).max().unwrap();
    let first_close = outcomes.iter().map(|o| o.finished).min().unwrap();
    assert!(
        last_open < first_close,
        "the streams were not all open at the same time"
    );
    Wave {
        peak_streams,
        rss_peak,
        rss_after: rss_kib(pid).unwrap(),
    }
}

#[test]
fn a_thousand_concurrent_streams_twice_complete_and_memory_stays_bounded() {
    ensure_open_files(STREAMS as u64 * 2 + 512);
    let mock = start_mock();
    let path = write_deck(&deck(&[("chat", "/chat", &openai_route(mock.port, ""))]));
    let (gw, status) = start_gateway_with_status(&path, &[]);
    let rss_idle = rss_kib(gw.pid()).unwrap();
    let first = wave(&gw, status);
    let second = wave(&gw, status);
    println!(
        "{STREAMS} concurrent streams: gateway RSS idle {rss_idle} KiB; wave 1 peak {} KiB, after {} KiB; wave 2 peak {} KiB, after {} KiB",
        first.rss_peak, first.rss_after, second.rss_peak, second.rss_after
    );
    for w in [&first, &second] {
        assert_eq!(w.peak_streams as usize, STREAMS);
        // A generous bound that still catches per-stream buffering gone wrong.
        assert!(
            w.rss_peak < rss_idle + 100 * 1024,
            "RSS grew from {rss_idle} to {} KiB",
            w.rss_peak
        );
    }
    // The counters above prove nothing is left in flight; memory must not grow per wave either
    // (the allocator and the upstream keep-alive pool keep some of what wave 1 used: a few MiB
    // more after wave 2, levelling off; a leak of 25 KiB a stream would exceed this bound).
    assert!(
        second.rss_after < first.rss_after + 24 * 1024,
        "RSS kept growing: {} then {} KiB",
        first.rss_after,
        second.rss_after
    );
    assert_eq!(mock_stats(&mock)["cancelled_streams"], 0);
}
