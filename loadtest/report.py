#!/usr/bin/env python3
"""Turns one loadtest/run.sh output directory into loadtest/RESULTS.md and loadtest/results.json,
and appends the run's budget figures to loadtest/history.jsonl (the before/after table).

    python3 loadtest/report.py loadtest/out/<stamp>
"""

import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OPENAI = ["direct-openai", "nginx-openai", "gw-openai"]
ANTHROPIC = ["direct-anthropic", "nginx-anthropic", "gw-anthropic"]
NOISY_CORES = 0.10  # background CPU (in cores) above which a row is flagged


def load(out):
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "*--*.json"))):
        scen, target = os.path.basename(path)[:-5].split("--", 1)
        with open(path) as f:
            runs.setdefault(scen, {})[target] = json.load(f)
    with open(os.path.join(out, "facts.json")) as f:
        facts = json.load(f)
    return facts, runs


def get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def family(target):
    return "anthropic" if target.endswith("anthropic") else "openai"


def baseline(runs, target, kind):
    """The direct or nginx run carrying the same upstream format as `target`."""
    return runs.get(f"{kind}-{family(target)}")


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def fmt(v, digits=0, suffix=""):
    if v is None:
        return "–"
    if isinstance(v, float) and digits == 0:
        return f"{v:,.0f}{suffix}"
    return f"{v:,.{digits}f}{suffix}"


def fx(v):
    return "–" if v is None else f"{v:.2f}x"


def mib(kib):
    return None if kib is None else kib / 1024


def noisy(r):
    bg = get(r, "cpu", "background_cores")
    return bg is not None and bg > NOISY_CORES


def errors(r):
    n = r.get("error_count", 0)
    if not n:
        return "0"
    return f"{n} ({', '.join(f'{k}: {v}' for k, v in sorted(r['errors'].items()))})"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def name(target, r):
    flag = " ⚠" if noisy(r) else ""
    return f"`{target}`{flag}"


# ---------------------------------------------------------------------------------------------
# Scenario tables


def scenario_table(runs, header, row):
    """A row a target: its name, then `row(r, d, n)` of its run and its direct and nginx
    baselines (the runs with the same upstream format), or `failed` and dashes."""
    rows = []
    for t, r in runs.items():
        if r.get("failed"):
            rows.append([name(t, r), "failed"] + ["–"] * (len(header) - 2))
        else:
            d, n = baseline(runs, t, "direct"), baseline(runs, t, "nginx")
            rows.append([name(t, r)] + row(r, d, n))
    return table(header, rows)


def closed_table(runs):
    def row(r, d, n):
        cpu = get(r, "cpu", "us_per_req")
        return [
            fmt(r["rps"]), fx(ratio(r["rps"], get(d, "rps"))),
            fx(ratio(r["rps"], get(n, "rps"))),
            fmt(get(r, "latency_us", "p50")), fmt(get(r, "latency_us", "p99")),
            fmt(cpu, 1), fx(ratio(cpu, get(n, "cpu", "us_per_req"))),
            fmt(get(r, "cpu", "util"), 2), fmt(mib(get(r, "rss_kib", "peak")), 1),
            errors(r), fmt(get(r, "cpu", "background_cores"), 2),
        ]
    return scenario_table(runs, [
        "target", "req/s", "×direct", "×nginx", "p50 µs", "p99 µs", "CPU µs/req",
        "CPU ×nginx", "core util", "RSS peak MiB", "errors", "background cores"], row)


def rate_table(runs):
    def row(r, d, n):
        p50, p99 = get(r, "latency_us", "p50"), get(r, "latency_us", "p99")

        def added(b, k):
            v = get(b, "latency_us", k)
            return None if v is None or get(r, "latency_us", k) is None else get(r, "latency_us", k) - v

        return [
            fmt(r["rps"]), fmt(p50, 1), fmt(added(d, "p50"), 1), fmt(added(n, "p50"), 1),
            fmt(get(r, "latency_us", "p90"), 1), fmt(p99, 1), fmt(added(d, "p99"), 1),
            fmt(added(n, "p99"), 1), fmt(get(r, "latency_us", "p999"), 1),
            fmt(get(r, "cpu", "us_per_req"), 1), errors(r),
        ]
    return scenario_table(runs, [
        "target", "req/s", "p50 µs", "p50 +direct", "p50 +nginx", "p90 µs", "p99 µs",
        "p99 +direct", "p99 +nginx", "p99.9 µs", "CPU µs/req", "errors"], row)


def stream_table(runs):
    def row(r, d, n):
        cpu = get(r, "cpu", "us_per_req")
        events = r.get("events_per_stream") or None
        per_event = None if cpu is None or not events else cpu / events
        n_events = get(n, "events_per_stream")
        n_cpu = get(n, "cpu", "us_per_req")
        n_per_event = None if n_cpu is None or not n_events else n_cpu / n_events
        return [
            fmt(r["rps"]), fx(ratio(r["rps"], get(d, "rps"))),
            fx(ratio(r["rps"], get(n, "rps"))), fmt(events, 0),
            fmt(get(r, "ttfe_us", "p50")), fmt(get(r, "ttfe_us", "p99")),
            fmt(get(r, "latency_us", "p50")), fmt(cpu, 1), fmt(per_event, 2),
            fx(ratio(per_event, n_per_event)), errors(r),
            fmt(get(r, "cpu", "background_cores"), 2),
        ]
    return scenario_table(runs, [
        "target", "streams/s", "×direct", "×nginx", "events/stream", "TTFC p50 µs",
        "TTFC p99 µs", "stream p50 µs", "CPU µs/stream", "CPU µs/event",
        "µs/event ×nginx", "errors", "background cores"], row)


def paced_table(runs):
    def row(r, d, n):
        def added(b, metric, k):
            a, v = get(r, metric, k), get(b, metric, k)
            return None if a is None or v is None else a - v

        return [
            fmt(r["rps"], 1), fmt(get(r, "ttfe_us", "p50"), 1),
            fmt(added(d, "ttfe_us", "p50"), 1), fmt(added(n, "ttfe_us", "p50"), 1),
            fmt(get(r, "ttfe_us", "p99"), 1), fmt(added(d, "ttfe_us", "p99"), 1),
            fmt(get(r, "gap_us", "p50"), 1), fmt(get(r, "gap_us", "p99"), 1),
            fmt(added(d, "latency_us", "p50"), 1), fmt(added(d, "latency_us", "p99"), 1),
            fmt(get(r, "cpu", "us_per_req"), 1), errors(r),
        ]
    return scenario_table(runs, [
        "target", "streams/s", "TTFC p50 µs", "+direct", "+nginx", "TTFC p99 µs",
        "+direct", "chunk gap p50 µs", "gap p99 µs", "last chunk p50 +direct",
        "last chunk p99 +direct", "CPU µs/stream", "errors"], row)


def hold_table(runs, facts):
    def row(r, d, n):
        at_full = get(r, "rss_kib", "at_full") or None
        start = get(r, "rss_kib", "start")
        peak = get(r, "rss_kib", "peak")
        target = get(r, "hold", "target") or 1
        per_stream = None if peak is None or start is None else (peak - start) / target
        return [
            fmt(target), fmt(get(r, "hold", "max_open")), fmt(r["ok"]), errors(r),
            fmt(get(r, "hold", "ramp_s"), 2), fmt(mib(start), 1), fmt(mib(at_full), 1),
            fmt(mib(peak), 1), fmt(per_stream, 1), fmt(get(r, "cpu", "seconds"), 2),
        ]
    return scenario_table(runs, [
        "target", "streams", "max open at once", "completed", "errors", "all open after s",
        "RSS before MiB", "RSS all open MiB", "RSS peak MiB", "KiB/stream", "CPU s"], row)


# ---------------------------------------------------------------------------------------------
# Budgets


def budgets(facts, runs):
    def rps(scen, t):
        return get(runs, scen, t, "rps")

    def lat(scen, t, k, metric="latency_us"):
        return get(runs, scen, t, metric, k)

    def diff(a, b):
        return None if a is None or b is None else a - b

    out = []

    def add(key, what, value, unit, limit, op, note=""):
        if value is None:
            met = None
        else:
            met = value >= limit if op == ">=" else value <= limit
        out.append({"key": key, "what": what, "value": value, "unit": unit, "limit": limit,
                    "op": op, "met": met, "note": note})

    add("throughput_openai", "non-streaming req/s, openai route ÷ nginx (small prompt, c=64)",
        ratio(rps("chat-small", "gw-openai"), rps("chat-small", "nginx-openai")), "x", 0.70, ">=")
    add("throughput_anthropic", "non-streaming req/s, anthropic route ÷ nginx carrying the "
        "Anthropic exchange", ratio(rps("chat-small", "gw-anthropic"),
                                    rps("chat-small", "nginx-anthropic")), "x", 0.60, ">=")
    add("cpu_per_request_openai", "gateway CPU per request ÷ nginx's, openai route (small, c=64)",
        ratio(get(runs, "chat-small", "gw-openai", "cpu", "us_per_req"),
              get(runs, "chat-small", "nginx-openai", "cpu", "us_per_req")), "x", 1.5, "<=")
    add("added_p50_1000rps", "added latency p50 at 1,000 req/s (gateway − direct), openai",
        diff(lat("rate-1000", "gw-openai", "p50"), lat("rate-1000", "direct-openai", "p50")),
        "µs", 100, "<=")
    add("added_p99_1000rps", "added latency p99 at 1,000 req/s (gateway − direct), openai",
        diff(lat("rate-1000", "gw-openai", "p99"), lat("rate-1000", "direct-openai", "p99")),
        "µs", 1000, "<=")
    add("stream_openai", f"streams/s ({facts['stream_chunks']} back-to-back chunks) ÷ nginx, "
        "openai route", ratio(rps("stream-50", "gw-openai"), rps("stream-50", "nginx-openai")),
        "x", 0.80, ">=")
    add("stream_anthropic", "streams/s ÷ nginx, anthropic route",
        ratio(rps("stream-50", "gw-anthropic"), rps("stream-50", "nginx-anthropic")), "x",
        0.80, ">=")
    add("ttfc_openai", "paced stream: added time to first chunk p50 (gateway − direct), openai",
        diff(lat("stream-paced", "gw-openai", "p50", "ttfe_us"),
             lat("stream-paced", "direct-openai", "p50", "ttfe_us")), "µs", 1000, "<=")
    add("ttfc_anthropic", "paced stream: added time to first chunk p50, anthropic",
        diff(lat("stream-paced", "gw-anthropic", "p50", "ttfe_us"),
             lat("stream-paced", "direct-anthropic", "p50", "ttfe_us")), "µs", 1000, "<=")
    add("idle_rss", "gateway idle RSS after start", mib(facts.get("gw_idle_rss_kib")), "MiB", 20,
        "<=")
    xc = lambda scen, peer, *k: get(runs, f"xc-{scen}", peer, *k)
    add("xc_throughput", "cross-check (wrk, hyper mock, default settings): req/s ÷ nginx",
        ratio(xc("nonstream", "gw", "rps"), xc("nonstream", "nginx", "rps")), "x", 0.70, ">=")
    add("xc_cpu_per_request", "cross-check: gateway CPU per request ÷ nginx's",
        ratio(xc("nonstream", "gw", "cpu_us_per_req"), xc("nonstream", "nginx", "cpu_us_per_req")),
        "x", 1.5, "<=")
    add("xc_stream", f"cross-check: streams/s ({facts.get('xc_chunks', 20)} back-to-back chunks) "
        "÷ nginx", ratio(xc("stream", "gw", "rps"), xc("stream", "nginx", "rps")), "x", 0.80, ">=")
    ttfc = diff(xc("paced", "gw", "ttfc_p50_ms"), xc("paced", "nginx", "ttfc_p50_ms"))
    add("xc_ttfc", "cross-check: paced stream time to first chunk p50, gateway − nginx",
        None if ttfc is None else ttfc * 1000, "µs", 1000, "<=")
    add("xc_idle_rss", "cross-check: idle RSS with the default settings",
        mib(facts.get("xc_gw_idle_rss_kib")), "MiB", 20, "<=")
    hold_scen = next((s for s in runs if s.startswith("hold-")), None)
    for t in ("gw-openai", "gw-anthropic"):
        r = get(runs, hold_scen, t) if hold_scen else None
        key = f"hold_rss_{family(t)}"
        what = f"RSS with {facts['hold']:,} concurrent open streams, {family(t)} route"
        if r is None or r.get("failed"):
            add(key, what, None, "MiB", 250, "<=")
            continue
        held = get(r, "rss_kib", "at_full") or get(r, "rss_kib", "peak")
        start = get(r, "rss_kib", "start") or 0
        wanted = facts.get("hold_wanted", facts["hold"])
        note = ""
        if held is not None and wanted != facts["hold"]:
            # Fewer streams fit under this machine's open-file cap: scale the growth.
            note = (f"extrapolated from {facts['hold']:,} streams ({mib(held):.1f} MiB): the "
                    f"open-file limit ({facts['nofile']}) cannot hold {wanted:,}")
            held = start + (held - start) * wanted / facts["hold"]
            what = f"RSS with {wanted:,} concurrent open streams, {family(t)} route"
        complete = r.get("error_count", 0) == 0 and get(r, "hold", "max_open") == facts["hold"]
        if not complete:
            note = (note + "; " if note else "") + (
                f"errors: {r.get('error_count')}, max open {get(r, 'hold', 'max_open')}")
        add(key, what, mib(held), "MiB", 250, "<=", note)
        if not complete:
            out[-1]["met"] = False
    if not facts.get("anthropic"):
        for b in out:
            if "anthropic" in b["key"]:
                b["note"] = "not available: the anthropic translator is not in this build"
    return out


def budget_rows(bs):
    rows = []
    for b in bs:
        value = "–" if b["value"] is None else (
            f"{b['value']:.2f}x" if b["unit"] == "x" else f"{b['value']:,.1f} {b['unit']}")
        limit = f"{b['op']} {b['limit']}{'x' if b['unit'] == 'x' else ' ' + b['unit']}"
        met = {True: "**met**", False: "**not met**", None: "not measured"}[b["met"]]
        rows.append([b["what"], value, limit, met, b["note"]])
    return table(["budget", "measured", "limit", "verdict", "note"], rows)


# ---------------------------------------------------------------------------------------------
# Profile and wrk


CATEGORIES = [
    ("kernel (TCP, syscalls, scheduler)", lambda dso, sym: dso.startswith("[kernel")),
    ("allocator (malloc/free)", lambda dso, sym: re.search(
        r"malloc|free|_int_|realloc|calloc|unlink_chunk|tcache", sym) is not None),
    ("memcpy/memset/memcmp", lambda dso, sym: re.search(r"mem(move|cpy|set|cmp)", sym)
     is not None),
    ("serde_json", lambda dso, sym: "serde_json" in sym or "serde::" in sym),
    ("ai_gateway code", lambda dso, sym: "ai_gateway" in sym),
    ("actix / awc / http", lambda dso, sym: re.search(r"actix|awc|h1::|http::|httparse", sym)
     is not None),
    ("tokio", lambda dso, sym: "tokio" in sym or "mio::" in sym),
    ("tracing", lambda dso, sym: "tracing" in sym),
]


def parse_profile(path):
    entries = []
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)", line)
            if m:
                entries.append((float(m.group(1)), m.group(2), m.group(3).strip()))
    return entries


def profile_section(out):
    files = sorted(glob.glob(os.path.join(out, "profile-*.txt")))
    if not files:
        return ""
    parts = ["## Profile (perf, cpu-clock samples of the gateway process under c=64 load)\n",
             "Self time by symbol, flat (no call graphs: the release build has no frame "
             "pointers). Categories are symbol-name matches over entries ≥ 0.3%.\n"]
    for path in files:
        pname = os.path.basename(path)[len("profile-"):-4]
        entries = parse_profile(path)
        if not entries:
            continue
        cats = {}
        for pct, dso, sym in entries:
            for cname, match in CATEGORIES:
                if match(dso, sym):
                    cats[cname] = cats.get(cname, 0) + pct
                    break
            else:
                cats["other"] = cats.get("other", 0) + pct
        parts.append(f"### {pname}\n")
        parts.append(table(["category", "% of gateway CPU"],
                           [[c, f"{v:.1f}"] for c, v in sorted(cats.items(),
                                                               key=lambda x: -x[1])]))
        parts.append("")
        top = [[f"{pct:.2f}", dso, "`" + sym[:110].replace("|", "\\|") + "`"]
               for pct, dso, sym in entries[:20]]
        parts.append(table(["%", "dso", "symbol"], top))
        parts.append("")
    return "\n".join(parts) + "\n"


def xc_section(facts, runs):
    """The cross-check (`xc` group): wrk and sseload against the hyper mock, nginx and the
    gateway with its default settings."""
    if not any(k.startswith("xc-") for k in runs):
        return ""
    peers = ["direct", "nginx", "floor", "gw"]
    rows = []
    for scen in ("nonstream", "stream", "paced"):
        rr = runs.get(f"xc-{scen}", {})
        n = rr.get("nginx")
        for p in peers:
            r = rr.get(p)
            if r is None:
                continue
            if r.get("failed"):
                rows.append([scen, f"`{p}`", "failed"] + ["–"] * 8)
                continue
            cpu = r.get("cpu_us_per_req")
            errs = sum(r.get(k) or 0 for k in ("err_connect", "err_read", "err_write",
                                                "err_timeout", "non2xx", "errors", "non200",
                                                "no_done"))
            if scen == "nonstream":
                lat = [fmt(r.get("p50_ms"), 2), fmt(r.get("p99_ms"), 2)]
            else:
                lat = [fmt(r.get("ttfc_p50_ms"), 2), fmt(r.get("ttfc_p99_ms"), 2)]
            rows.append([scen, f"`{p}`", fmt(r.get("rps")), fx(ratio(r.get("rps"), get(n, "rps"))),
                         *lat, fmt(cpu, 1), fx(ratio(cpu, get(n, "cpu_us_per_req"))),
                         fmt(r.get("core_util"), 2), fmt(mib(r.get("rss_kib")), 1), errs])
    text = ("## Cross-check: wrk + hyper mock, gateway with its default settings\n\n"
            "The setup a new user would try (ISSUE 14): `wrk -t1 -c64` (non-streaming) and "
            "`sseload` (streams, c=64) from `loadtest/crosscheck/`, a minimal hyper 1 mock "
            f"upstream ({facts.get('xc_chunks', 20)} content chunks per stream, "
            f"{facts.get('xc_paced_delay_ms', 5)} ms apart when paced), nginx with the "
            "cross-check's config, and the gateway started from the checkout with only "
            "`--config`/`--listen` (settings/default.toml: access log at info). "
            "Same pinning and scheduling as the rest of the run. The hyper mock and wrk need "
            "less CPU than aigw-load and the actix mock, so the proxy core saturates first "
            "and the ratios compare two saturated proxies (see ANALYSIS.md). p50/p99 are "
            "per request for non-streaming rows and TTFC for stream rows, in ms; CPU µs per "
            "request or per stream. `floor` (non-streaming only) is a bare actix-web + awc "
            "pass-through built like the gateway (`loadtest/floor/`: same vendored patches, "
            "allocator and release profile, no translation, actors or logging): the least any "
            "gateway on this stack can cost.\n\n")
    return text + table(["scenario", "target", "req/s or streams/s", "×nginx", "p50 ms",
                         "p99 ms", "CPU µs/req", "CPU ×nginx", "core util", "RSS MiB",
                         "errors"], rows) + "\n\n"


def bench_section(out):
    """`cargo bench --bench translate` (criterion): the middle estimate per benchmark."""
    path = os.path.join(out, "bench.txt")
    if not os.path.exists(path):
        return ""
    rows = []
    name = None
    for line in open(path):
        m = re.match(r"^(\S+/\S+)\s*(time:.*)?$", line.strip())
        if m and "/" in m.group(1) and not line.strip().startswith(("time:", "thrpt:")):
            name = m.group(1)
        t = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
        if t and name:
            rows.append([f"`{name}`", f"{t.group(1)} {t.group(2)}"])
            name = None
    if not rows:
        return ""
    return ("## Translation micro-benchmark (`cargo bench --bench translate`)\n\n"
            "Pure translation functions on the fixtures (criterion, middle estimate; `stream` is "
            "a whole fixture stream). Pinned to the gateway's CPU.\n\n"
            + table(["benchmark", "time"], rows) + "\n\n")


def wrk_section(out):
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "wrk--*.txt"))):
        target = os.path.basename(path)[5:-4]
        text = open(path).read()
        m = re.search(r"WRKJSON (\{.*\})", text)
        if not m:
            rows.append([f"`{target}`", "failed", "–", "–", "–"])
            continue
        d = json.loads(m.group(1))
        rows.append([f"`{target}`", fmt(d["requests"] / (d["duration_us"] / 1e6)),
                     fmt(d["p50"]), fmt(d["p99"]), d["errors"]])
    if not rows:
        return ""
    return ("## Load-generator cross-check (wrk -t1 -c64, chat-small, same pinning)\n\n"
            + table(["target", "req/s", "p50 µs", "p99 µs", "errors"], rows) + "\n\n")


# ---------------------------------------------------------------------------------------------
# History (before/after)


def history_section(history):
    full = [h for h in history if not h.get("quick")] or history
    full = full[-8:]
    if not full:
        return ""
    keys = [b["key"] for b in full[-1]["budgets"]]
    header = ["budget"] + [f"{h['label']} ({h['date_utc'][:8]})" for h in full]
    rows = []
    for k in keys:
        row = [k]
        for h in full:
            b = next((b for b in h["budgets"] if b["key"] == k), None)
            if b is None or b["value"] is None:
                row.append("–")
            else:
                v = f"{b['value']:.2f}x" if b["unit"] == "x" else f"{b['value']:,.1f}"
                row.append(v + ("" if b["met"] else " ✗"))
        rows.append(row)
    return ("## Budget figures across runs (before/after)\n\n"
            "One column per full run of `loadtest/run.sh` (labelled with `--label`, default the "
            "git revision); ✗ = budget not met. Rows come from `loadtest/history.jsonl`.\n\n"
            + table(header, rows) + "\n\n")


def main():
    out = sys.argv[1].rstrip("/")
    facts, runs = load(out)
    bs = budgets(facts, runs)
    hist_path = os.path.join(HERE, "history.jsonl")
    history = []
    if os.path.exists(hist_path):
        with open(hist_path) as f:
            history = [json.loads(line) for line in f if line.strip()]
    entry = {"label": facts["label"], "date_utc": facts["date_utc"], "git_rev": facts["git_rev"],
             "git_dirty": facts["git_dirty"], "quick": facts["quick"], "budgets": bs}
    # Re-rendering the same run replaces its entry instead of adding a second one.
    history = [h for h in history if h.get("date_utc") != entry["date_utc"]] + [entry]
    with open(hist_path, "w") as f:
        f.writelines(json.dumps(h) + "\n" for h in history)

    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump({"facts": facts, "budgets": bs, "runs": runs}, f, indent=1, sort_keys=True)
        f.write("\n")

    f_ = facts
    md = [f"# Load test results — {f_['label']}\n",
          f"Generated by `loadtest/run.sh{' --quick' if f_['quick'] else ''}` on "
          f"{f_['date_utc']} (git `{f_['git_rev']}`{', uncommitted changes' if f_['git_dirty'] else ''}"
          f"); the whole run took {f_['duration_s']} s. Raw per-run JSON: `results.json`; "
          "how it works: `README.md`.\n"]
    if f_["quick"]:
        md.append("> **Quick run** (`--quick`): 2 s windows and fewer held streams; a smoke "
                  "test, not a measurement.\n")
    md.append("## Budgets\n")
    md.append(budget_rows(bs) + "\n")
    # Hand-written: why a budget is not met and what would close it (kept across runs).
    analysis = os.path.join(HERE, "ANALYSIS.md")
    if os.path.exists(analysis):
        md.append(open(analysis).read().strip() + "\n")
    noisy_rows = [f"{s}/{t}" for s, rr in runs.items() for t, r in rr.items() if noisy(r)]
    if noisy_rows:
        md.append(f"> ⚠ Other processes used more than {NOISY_CORES} of a core during "
                  f"{len(noisy_rows)} run(s) ({', '.join(noisy_rows[:6])}"
                  f"{', ...' if len(noisy_rows) > 6 else ''}): those figures are disturbed; "
                  "re-run on a quiet machine.\n")
    md.append(history_section(history))
    md.append("## Machine and setup\n")
    md.append(table(["fact", "value"], [
        ["CPU", f"{f_['cpu_model']}, {f_['nproc']} CPUs"],
        ["memory", f"{f_['mem_total_kib'] / 1048576:.1f} GiB"],
        ["OS / kernel", f"{f_['os']} / {f_['kernel']}"],
        ["rustc", f_["rustc"]], ["nginx", f_["nginx"]],
        ["pinning", f"gateway and nginx on CPU {f_['gw_cpu']}; mock provider and load client "
                    f"on CPU {f_['load_cpu']} (taskset)"],
        ["scheduling", {"rr": "SCHED_RR priority 50 for every process of the run",
                        "nice": "nice -20 for every process of the run",
                        "none": "default"}.get(f_["sched"], f_["sched"])],
        ["gateway", "1 worker, log level warn, mock disabled, "
                    "`max_connections_per_worker` raised to hold the streams (settings.toml); "
                    "the cross-check's gateway: default settings"],
        ["nginx", "1 worker process, upstream keepalive 1024, proxy_buffering off, "
                  "HTTP/1.1 upstream, access_log off"],
        ["mock provider", "`ai-gateway mock-provider --workers 1`, AIGW_MOCK_NO_LOG=1"],
        ["load client", "`loadtest/client` (aigw-load: one thread, raw HTTP/1.1 keep-alive)"],
        ["open files", f_["nofile"]],
        ["windows", f"{f_['warmup_s']} s warm-up + {f_['window_s']} s measured per run; "
                    f"c={f_['concurrency']}; fixed rate {f_['rate']} req/s"],
    ]) + "\n")
    md.append("## Idle memory\n")
    md.append(table(["process", "RSS MiB"], [
        ["ai-gateway, 1 s after start", fmt(mib(f_["gw_idle_rss_kib"]), 1)],
        ["ai-gateway, idle after the throughput and streaming runs",
         fmt(mib(f_["gw_idle_rss_after_load_kib"]), 1)],
        ["ai-gateway, 3 s after the last held stream ended", fmt(mib(f_["gw_rss_end_kib"]), 1)],
        ["ai-gateway, 20 s later (idle upstream connections expired)",
         fmt(mib(f_.get("gw_rss_settled_kib")), 1)],
        ["`cargo test --release --test stream_memory` (400 quiet streams, ≤ 25 KiB each)",
         f_.get("stream_memory_test") or "not run"],
        ["nginx (master + worker)", fmt(mib(f_["nginx_idle_rss_kib"]), 1)],
        ["mock provider", fmt(mib(f_["mock_idle_rss_kib"]), 1)],
    ]) + "\n")

    order = OPENAI + ANTHROPIC

    def ordered(scen):
        rr = runs.get(scen, {})
        return {t: rr[t] for t in order if t in rr}

    sections = [
        ("chat-small", "Non-streaming chat, small prompt, closed loop c=64",
         "Throughput and latency at fixed concurrency. `×nginx` compares with nginx carrying "
         "the same upstream format. CPU µs/req = utime+stime of the target process(es) over the "
         "window ÷ requests; core util = that CPU ÷ window (1.00 = the pinned core was "
         "saturated; below that, the other core — mock + client — was the limit).", closed_table),
        ("chat-8k", "Non-streaming chat, 8 KiB prompt, closed loop c=64", "", closed_table),
        ("rate-1000", "Fixed rate 1,000 req/s (open loop), small prompt",
         "Latency from the request's first byte written to its last byte read. `+direct` / "
         "`+nginx` = this target's percentile minus the baseline's.", rate_table),
        ("stream-50", f"Streaming, {f_['stream_chunks']} back-to-back chunks, closed loop c=64",
         "TTFC = time to the first complete SSE event; CPU µs/event = CPU per stream ÷ events "
         "per stream (the per-chunk overhead). The mock writes each event in its own write, so "
         "every event is one upstream read for nginx and the gateway alike.", stream_table),
        ("stream-paced", f"Paced streaming: {f_['paced_chunks']} chunks, one every "
                         f"{f_['paced_delay_ms']} ms, {f_.get('paced_rate', 128)} streams/s "
                         "arriving evenly (open loop)",
         "Added time to the first chunk, and to the last one (the whole stream). Gaps are between "
         "consecutive events as the client sees them: for the anthropic rows the gateway turns 26 "
         "native events into 23 OpenAI ones (`ping`, `content_block_start/stop` produce nothing), "
         "so its gaps around those are 40-60 ms by design; compare the last-chunk columns.",
         paced_table),
    ]
    for scen, title, text, render in sections:
        if scen not in runs:
            continue
        md.append(f"## {title}\n")
        if text:
            md.append(text + "\n")
        md.append(render(ordered(scen)) + "\n")
    hold_scen = next((s for s in runs if s.startswith("hold-")), None)
    if hold_scen:
        md.append(f"## {f_['hold']:,} concurrent slow streams ({f_['hold_chunks']} chunks, one "
                  f"every {f_['hold_delay_ms']} ms)\n")
        md.append("All streams are opened (at most 500 waiting for their head at once) and "
                  "held until they end; RSS sampled every 100 ms. `RSS all open` = highest "
                  "sample while every stream was open. The gateway's RSS does not fall back "
                  "after its streams end (see Idle memory), so a later gateway row starts from "
                  "the earlier peak.\n")
        md.append(hold_table(ordered(hold_scen), facts) + "\n")
    if not f_.get("anthropic"):
        md.append("> The anthropic scenarios are **not available**: this build's anthropic "
                  "provider is a placeholder. Re-run `loadtest/run.sh` once it lands.\n")
    md.append(xc_section(facts, runs))
    md.append(wrk_section(out))
    md.append(bench_section(out))
    md.append(profile_section(out))
    md.append("## Exact commands\n")
    md.append("Processes under test (ports are picked free at each run):\n")
    md.append("```sh\n"
              "AIGW_MOCK_NO_LOG=1 RUST_LOG=warn taskset -c LOAD_CPU target/release/ai-gateway "
              "mock-provider --listen 127.0.0.1:MOCK --workers 1\n"
              "RUST_LOG=warn taskset -c GW_CPU target/release/ai-gateway --settings settings.toml "
              "--config deck.yaml --listen 127.0.0.1:GW\n"
              "taskset -c GW_CPU nginx -e error.log -p DIR -c nginx.conf\n"
              "```\n")
    md.append("(each prefixed with the scheduling command above; `deck.yaml`, `settings.toml` "
              "and `nginx.conf` are kept in the run's output directory, "
              "`loadtest/out/<stamp>/`). Load client runs:\n")
    cmds = open(os.path.join(out, "commands.txt")).read().strip().splitlines()
    short = [re.sub(r"/tmp/aigw-loadtest\.\w+/", "", c).replace(
        os.path.dirname(HERE) + "/", "") for c in cmds]
    md.append("```sh\n" + "\n".join(short) + "\n```\n")
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write("\n".join(md))


if __name__ == "__main__":
    main()
