# ai-proxy-advanced and metrics scenarios (issue 12), sourced by run.sh after the stream
# scenarios. A second gateway (same CPU, same settings) serves three routes on the same mock:
#   /single   one ai-proxy target                            (the baseline of this block)
#   /lb       ai-proxy-advanced, round-robin over two targets (balancer + retry bookkeeping)
#   /metered  ai-proxy with a prometheus plugin (ai_metrics: true) and input/output costs
# chat-small runs against each; the budget is req/s(/lb) and req/s(/metered) >= 0.90 x
# req/s(/single). Figures: $OUT/balancer--*.json, summary in $OUT/balancer.md and
# loadtest/BALANCER.md.

LB_PORT="$(free_port)"
LB_STATUS_PORT="$(free_port)"
lb_target() {
    cat <<EOF
                - route_type: llm/v1/chat
                  auth: {header_name: Authorization, header_value: Bearer loadtest-key}
                  model: {provider: openai, name: gpt-4o-mini, options: {upstream_url: "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"}}
EOF
}
{
    cat <<EOF
_format_version: "3.0"
services:
  - name: loadtest
    url: http://127.0.0.1:$MOCK_PORT
    routes:
      - name: single
        paths: ["/single"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {header_name: Authorization, header_value: Bearer loadtest-key}
              model: {provider: openai, name: gpt-4o-mini, options: {upstream_url: "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"}}
      - name: lb
        paths: ["/lb"]
        plugins:
          - name: ai-proxy-advanced
            config:
              balancer: {algorithm: round-robin}
              targets:
EOF
    lb_target
    lb_target
    cat <<EOF
      - name: metered
        paths: ["/metered"]
        plugins:
          - name: prometheus
            config: {ai_metrics: true}
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {header_name: Authorization, header_value: Bearer loadtest-key}
              model: {provider: openai, name: gpt-4o-mini, options: {input_cost: 0.15, output_cost: 0.6, upstream_url: "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"}}
EOF
} >"$TMP/deck-balancer.yaml"
# The main settings plus a status listener (top-level keys go before the [mock] table).
awk -v listen="127.0.0.1:$LB_STATUS_PORT" \
    '/^\[mock\]/ && !done {print "status_listen = \"" listen "\""; done=1} {print}' \
    "$TMP/settings.toml" >"$TMP/settings-balancer.toml"
log "balancer scenarios: second ai-gateway on 127.0.0.1:$LB_PORT (cpu $GW_CPU)"
spawn "$GW_CPU" "$TMP/gateway-balancer.log" env RUST_LOG=warn "$BIN" \
    --settings "$TMP/settings-balancer.toml" --config "$TMP/deck-balancer.yaml" \
    --listen "127.0.0.1:$LB_PORT"
LB_PID=$SPAWNED
if wait_port "$LB_PORT" "$LB_PID"; then
    # run_case knows the main targets; these three are added here.
    eval "main_$(declare -f target_setup)"
    target_setup() {
        case "$1" in
            gw-single|gw-lb|gw-metered)
                TARGS=(--url "http://127.0.0.1:$LB_PORT/${1#gw-}/v1/chat/completions"
                    --body "$TMP/openai-$2.json" --watch "$LB_PID" --aux "$MOCK_PID" --expect Mock) ;;
            *) main_target_setup "$@" ;;
        esac
    }
    for t in gw-single gw-lb gw-metered; do
        run_case balancer "$t" small 0 closed --concurrency "$CONCURRENCY" --warmup "$WARMUP" \
            --duration "$WINDOW" --timeout 10
    done
    curl -s "http://127.0.0.1:$LB_STATUS_PORT/metrics" >"$OUT/balancer-metrics.txt" || true
    python3 - "$OUT" "$LT/BALANCER.md" "$QUICK" <<'PY' >&2 || true
import json, sys, time
out, md, quick = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
def rps(t):
    try:
        d = json.load(open(f"{out}/balancer--{t}.json"))
        return None if d.get("failed") else d["rps"]
    except (OSError, KeyError, ValueError):
        return None
base = rps("gw-single")
metrics = open(f"{out}/balancer-metrics.txt").read()
counted = sum(float(l.split()[-1]) for l in metrics.splitlines()
              if l.startswith("ai_llm_requests_total{") and 'route="metered"' in l)
lines = [
    "# ai-proxy-advanced and metrics overhead",
    "",
    f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}{' (quick: 2 s windows, a smoke test only)' if quick else ''}:",
    "chat-small (64 connections, closed loop) against one gateway worker, same mock, same CPU.",
    "Budget: each scenario keeps >= 90 % of the single-target req/s.",
    "",
    "| scenario | req/s | vs single | budget |",
    "|---|---|---|---|",
]
for t, what in [("gw-single", "one ai-proxy target"), ("gw-lb", "ai-proxy-advanced, round-robin, 2 targets"),
                ("gw-metered", "prometheus plugin, ai_metrics + cost")]:
    r = rps(t)
    ratio = (r / base) if (r and base) else None
    verdict = "" if t == "gw-single" else ("met" if ratio and ratio >= 0.9 else "NOT met")
    lines.append(f"| {what} | {r if r is not None else 'failed'} | "
                 f"{f'{ratio:.3f}' if ratio else '-'} | {verdict} |")
lines += ["", f"`ai_llm_requests_total` for the metered route after the run: {counted:.0f}", ""]
text = "\n".join(lines)
open(f"{out}/balancer.md", "w").write(text)
open(md, "w").write(text)
print(text)
PY
else
    log "  the balancer gateway did not start (see $TMP/gateway-balancer.log)"
fi
stop_pid "$LB_PID"
