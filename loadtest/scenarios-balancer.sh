# ai-proxy-advanced and metrics scenarios (issue 12), sourced by run.sh after the stream
# scenarios. A second gateway (same CPU, same settings) serves three routes on the same mock:
#   /single   one ai-proxy target                            (the baseline of this block)
#   /lb       ai-proxy-advanced, round-robin over two targets (balancer + retry bookkeeping)
#   /metered  ai-proxy with a prometheus plugin (ai_metrics: true) and input/output costs
# chat-small runs against each; the budget is req/s(/lb) and req/s(/metered) >= 0.90 x
# req/s(/single). Figures: $OUT/balancer--*.json, summary (group_report.py) in $OUT/balancer.md and
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
    deck_header
    cat <<EOF
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
    counted="$(awk '/^ai_llm_requests_total\{/ && /route="metered"/ {n += $NF} END {printf "%.0f", n}' \
        "$OUT/balancer-metrics.txt" 2>/dev/null || true)"
    python3 "$LT/group_report.py" "$OUT" "$LT/BALANCER.md" "$QUICK" balancer \
        "ai-proxy-advanced and metrics overhead" \
        "chat-small ($CONCURRENCY connections, closed loop) against one gateway worker, same mock, same CPU. Budget: each scenario keeps >= 90 % of the single-target req/s." \
        "\`ai_llm_requests_total\` for the metered route after the run: ${counted:-0}" \
        "gw-single|one ai-proxy target|" \
        "gw-lb|ai-proxy-advanced, round-robin, 2 targets|0.90" \
        "gw-metered|prometheus plugin, ai_metrics + cost|0.90" >&2 || true
else
    log "  the balancer gateway did not start (see $TMP/gateway-balancer.log)"
fi
stop_pid "$LB_PID"
