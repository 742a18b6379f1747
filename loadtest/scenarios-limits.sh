# Consumers and token-limit scenarios (issue 13), sourced by run.sh. A second gateway (same CPU,
# same settings) serves four routes on the same mock; a private redis-server (installed when
# missing) runs on the load CPU, like the mock, as the external service it is:
#   /plain    ai-proxy only                                           (the baseline of this block)
#   /keyed    + key-auth + ai-rate-limiting-advanced, strategy local  (budget: >= 90 % of /plain)
#   /shared   + key-auth + ai-rate-limiting-advanced, strategy redis, sync_rate 0: every
#             admission and settlement in Redis, batched per worker     (budget: >= 75 % of /plain)
#   /synced   the same with sync_rate 1: counted locally, synced every second (reported, with
#             the same 75 % budget)
# The limits are far above what a run spends, so no request is refused (a refusal is an error
# of the load client: the body lacks "Mock"). chat-small runs against each, in RL_ROUNDS
# (default 5) interleaved rounds. Figures: $OUT/limits--<route>--r<round>.json, summary
# (group_report.py: medians of the rounds) in $OUT/limits.md and loadtest/LIMITS.md.

RL_PORT="$(free_port)"
RL_REDIS_PORT="$(free_port)"
RL_KEY="loadtest-consumer-key-0001"
if ! command -v redis-server >/dev/null && [ ! -x /usr/bin/redis-server ]; then
    log "installing redis-server"
    apt_install redis-server || true
fi
REDIS_SERVER="$(command -v redis-server || echo /usr/bin/redis-server)"

rl_route() { # NAME [PLUGIN CONFIG of ai-rate-limiting-advanced]
    cat <<EOF
      - name: $1
        paths: ["/$1"]
        plugins:
          - name: ai-proxy
            config: {route_type: llm/v1/chat, auth: {header_name: Authorization, header_value: Bearer loadtest-key}, model: {provider: openai, name: gpt-4o-mini, options: {upstream_url: "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"}}}
EOF
    if [ -n "${2:-}" ]; then
        cat <<EOF
          - name: key-auth
          - name: ai-rate-limiting-advanced
            config: {$2, llm_providers: [{name: openai, limit: [1000000000000], window_size: [60]}]}
EOF
    fi
}
RL_REDIS="redis: {host: 127.0.0.1, port: $RL_REDIS_PORT, timeout: 1000}"
{
    deck_header
    rl_route plain
    rl_route keyed "strategy: local"
    rl_route shared "strategy: redis, sync_rate: 0, $RL_REDIS"
    rl_route synced "strategy: redis, sync_rate: 1, $RL_REDIS"
    cat <<EOF
consumers:
  - username: loadtest
    keyauth_credentials: [{key: $RL_KEY}]
EOF
} >"$TMP/deck-limits.yaml"

log "limits scenarios: redis-server on 127.0.0.1:$RL_REDIS_PORT (cpu $LOAD_CPU)"
spawn "$LOAD_CPU" "$TMP/redis.log" "$REDIS_SERVER" --port "$RL_REDIS_PORT" --bind 127.0.0.1 \
    --save "" --appendonly no --daemonize no
RL_REDIS_PID=$SPAWNED
log "limits scenarios: second ai-gateway on 127.0.0.1:$RL_PORT (cpu $GW_CPU)"
spawn "$GW_CPU" "$TMP/gateway-limits.log" env RUST_LOG=warn "$BIN" \
    --settings "$TMP/settings.toml" --config "$TMP/deck-limits.yaml" --listen "127.0.0.1:$RL_PORT"
RL_PID=$SPAWNED
if wait_port "$RL_REDIS_PORT" "$RL_REDIS_PID" && wait_port "$RL_PORT" "$RL_PID"; then
    # run_case knows the main targets; these four are added here.
    eval "main_rl_$(declare -f target_setup)"
    target_setup() {
        case "$1" in
            rl-plain|rl-keyed|rl-shared|rl-synced)
                TARGS=(--url "http://127.0.0.1:$RL_PORT/${1#rl-}/v1/chat/completions"
                    --body "$TMP/openai-$2.json" --header "apikey: $RL_KEY"
                    --watch "$RL_PID" --aux "$MOCK_PID,$RL_REDIS_PID" --expect Mock) ;;
            *) main_rl_target_setup "$@" ;;
        esac
    }
    # Interleaved rounds, each the four routes back to back in a short window: a busy host's
    # drift (the plain route's own CPU per request moved 23-43 µs within runs of session 7)
    # then hits every route of a round alike, and the verdict is the median of the per-round
    # ratios (group_report.py), not one window per route minutes apart.
    rounds="${RL_ROUNDS:-5}"
    [ "$QUICK" = 1 ] && rounds=1
    round_window=$(( WINDOW / rounds > 3 ? WINDOW / rounds : 3 ))
    for r in $(seq 1 "$rounds"); do
        for t in rl-plain rl-keyed rl-shared rl-synced; do
            run_case limits "$t" small 0 closed --concurrency "$CONCURRENCY" --warmup 1 \
                --duration "$round_window" --timeout 10
            mv "$OUT/limits--$t.json" "$OUT/limits--$t--r$r.json"
        done
    done
    failed_open="$(grep -c "rate-limit store unreachable" "$TMP/gateway-limits.log" || true)"
    python3 "$LT/group_report.py" "$OUT" "$LT/LIMITS.md" "$QUICK" limits \
        "Consumers and token-limit overhead" \
        "chat-small ($CONCURRENCY connections, closed loop) against one gateway worker, same mock, same CPU; redis-server on the load CPU; $rounds interleaved rounds of the four routes, ${round_window} s each. Budgets: key-auth + local limiting keeps >= 90 % of the plain route's req/s, Redis limiting >= 75 % (the median of the per-round ratios)." \
        "Requests the limits failed open (Redis unreachable) during the runs: ${failed_open:-0}" \
        "rl-plain|ai-proxy only|" \
        "rl-keyed|key-auth + ai-rate-limiting-advanced, strategy local|0.90" \
        "rl-shared|key-auth + ai-rate-limiting-advanced, redis, sync_rate 0|0.75" \
        "rl-synced|key-auth + ai-rate-limiting-advanced, redis, sync_rate 1|0.75" >&2 || true
else
    log "  the limits gateway or redis-server did not start (see $TMP/gateway-limits.log, $TMP/redis.log)"
fi
stop_pid "$RL_PID"
stop_pid "$RL_REDIS_PID"
