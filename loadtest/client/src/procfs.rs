//! `/proc` readings of the processes under test: CPU ticks and RSS samples.

use crate::*;

// ---------------------------------------------------------------------------------------------
// /proc readings of the processes under test

/// utime + stime in clock ticks, summed over `pids` (all threads of each process).
pub(crate) fn cpu_ticks(pids: &[u32]) -> Option<u64> {
    let mut sum = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        sum += utime + stime;
    }
    Some(sum)
}

/// Busy ticks of the whole machine (all CPUs, everything but idle and iowait).
pub(crate) fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    Some(v.iter().take(8).sum::<u64>() - v.get(3)? - v.get(4)?)
}

/// CPU ticks of the processes under test, the run's other processes, this client and the
/// whole machine, read at one instant.
#[derive(Clone, Copy)]
pub(crate) struct CpuSnap {
    pub(crate) watch: u64,
    pub(crate) aux: u64,
    pub(crate) client: u64,
    pub(crate) machine: u64,
}

pub(crate) fn cpu_snap(o: &Opts) -> Option<CpuSnap> {
    Some(CpuSnap {
        watch: cpu_ticks(&o.watch)?,
        aux: cpu_ticks(&o.aux)?,
        client: cpu_ticks(&[std::process::id()])?,
        machine: machine_busy_ticks()?,
    })
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`), summed over `pids`.
pub(crate) fn status_kib(pids: &[u32], field: &str) -> Option<u64> {
    let mut sum = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        sum += line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())?;
    }
    Some(sum)
}

pub(crate) struct Watch {
    pub(crate) rss_start: Option<u64>,
    pub(crate) rss_peak: Cell<u64>,
    /// Highest RSS seen while every `hold` stream was open.
    pub(crate) rss_full: Cell<u64>,
    pub(crate) cpu_start: Cell<Option<CpuSnap>>,
    pub(crate) cpu_end: Cell<Option<CpuSnap>>,
    pub(crate) stop: Cell<bool>,
}

/// Samples RSS every 100 ms until `stop` (counting into the peak only inside the window).
pub(crate) async fn sampler(o: Rc<Opts>, w: Rc<Watch>, hold: Rc<HoldState>, t_start: Instant) {
    if o.watch.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !w.stop.get() {
        tick.tick().await;
        if Instant::now() < t_start {
            continue;
        }
        if let Some(rss) = status_kib(&o.watch, "VmRSS:") {
            w.rss_peak.set(w.rss_peak.get().max(rss));
            if o.mode == Mode::Hold && hold.open_now.get() >= o.concurrency {
                w.rss_full.set(w.rss_full.get().max(rss));
            }
        }
    }
}
