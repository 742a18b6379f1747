"""One scenario group's table (run.sh's balancer and limits groups): the req/s of each run of
the group against its baseline (the first row) and the row's budget, written to OUT/GROUP.md
and to MD, and printed.

Usage: group_report.py OUT MD QUICK GROUP TITLE INTRO NOTE ROW...
  QUICK  1 for a --quick run (2 s windows: a smoke test only)
  INTRO  what ran and the budgets, one paragraph; NOTE a line after the table (may be empty)
  ROW    TARGET|WHAT|BUDGET: the run out/<stamp>/GROUP--TARGET.json, what it measures, and the
         least share of the baseline's req/s it must keep (empty for the baseline)
"""

import json
import sys
import time


def run(out: str, group: str, target: str):
    try:
        d = json.load(open(f"{out}/{group}--{target}.json"))
        return None if d.get("failed") else d
    except (OSError, ValueError):
        return None


def main() -> None:
    out, md, quick, group, title, intro, note = sys.argv[1:8]
    rows = [r.split("|", 2) for r in sys.argv[8:]]
    base = (run(out, group, rows[0][0]) or {}).get("rps")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"# {title}",
        "",
        f"Run {when}{' (quick: 2 s windows, a smoke test only)' if quick == '1' else ''}: {intro}",
        "",
        "| scenario | req/s | errors | vs baseline | budget |",
        "|---|---|---|---|---|",
    ]
    for target, what, budget in rows:
        d = run(out, group, target)
        rps = d.get("rps") if d else None
        ratio = rps / base if (rps and base) else None
        verdict = ""
        if budget:
            met = ratio is not None and ratio >= float(budget)
            verdict = f"{'met' if met else 'NOT met'} (>= {float(budget):.2f})"
        errors = d.get("error_count") if d else "-"
        shown = f"{ratio:.3f}" if ratio else "-"
        lines.append(
            f"| {what} | {rps if rps is not None else 'failed'} | {errors} | {shown} | {verdict} |"
        )
    lines += ["", note, ""] if note else [""]
    text = "\n".join(lines)
    open(f"{out}/{group}.md", "w").write(text)
    open(md, "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
