"""One scenario group's table (run.sh's balancer and limits groups): the req/s of each run of
the group against its baseline (the first row) and the row's budget, written to OUT/GROUP.md
and to MD, and printed.

Usage: group_report.py OUT MD QUICK GROUP TITLE INTRO NOTE ROW...
  QUICK  1 for a --quick run (2 s windows: a smoke test only)
  INTRO  what ran and the budgets, one paragraph; NOTE a line after the table (may be empty)
  ROW    TARGET|WHAT|BUDGET: the run out/<stamp>/GROUP--TARGET.json, what it measures, and the
         least share of the baseline's req/s it must keep (empty for the baseline)

A group run in interleaved rounds (GROUP--TARGET--r<N>.json, the limits group) is reported by
its medians: req/s over the rounds, and the ratio as the median of the per-round ratios to the
baseline's run of the same round, with their range.
"""

import glob
import json
import re
import statistics
import sys
import time


def run(out: str, group: str, target: str):
    try:
        d = json.load(open(f"{out}/{group}--{target}.json"))
        return None if d.get("failed") else d
    except (OSError, ValueError):
        return None


def rounds(out: str, group: str, target: str) -> dict:
    """The target's runs by round number; {0: the single run} for a group without rounds."""
    found = {}
    for path in glob.glob(f"{out}/{group}--{target}--r*.json"):
        number = int(re.search(r"--r(\d+)\.json$", path).group(1))
        found[number] = run(out, group, f"{target}--r{number}")
    return found or {0: run(out, group, target)}


def main() -> None:
    out, md, quick, group, title, intro, note = sys.argv[1:8]
    rows = [r.split("|", 2) for r in sys.argv[8:]]
    base = rounds(out, group, rows[0][0])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"# {title}",
        "",
        f"Run {when}{' (quick: 2 s windows, a smoke test only)' if quick == '1' else ''}: {intro}",
        "",
        "| scenario | req/s | errors | vs baseline | per round | budget |",
        "|---|---|---|---|---|---|",
    ]
    for target, what, budget in rows:
        runs = rounds(out, group, target)
        done = {n: d for n, d in runs.items() if d and d.get("rps")}
        rps = statistics.median(d["rps"] for d in done.values()) if done else None
        ratios = [
            d["rps"] / base[n]["rps"]
            for n, d in sorted(done.items())
            if base.get(n) and base[n].get("rps")
        ]
        ratio = statistics.median(ratios) if ratios else None
        verdict = ""
        if budget:
            met = ratio is not None and ratio >= float(budget)
            verdict = f"{'met' if met else 'NOT met'} (>= {float(budget):.2f})"
        errors = sum(d.get("error_count", 0) for d in done.values()) if done else "-"
        shown = f"{ratio:.3f}" if ratio else "-"
        spread = f"{min(ratios):.3f}-{max(ratios):.3f}" if len(ratios) > 1 else ""
        lines.append(
            f"| {what} | {rps if rps is not None else 'failed'} | {errors} | {shown} | {spread} | {verdict} |"
        )
    lines += ["", note, ""] if note else [""]
    text = "\n".join(lines)
    open(f"{out}/{group}.md", "w").write(text)
    open(md, "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
