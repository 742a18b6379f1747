#!/usr/bin/env bash
# Instructions per request of the gateway on the cross-check's non-streaming request, counted by
# callgrind: a figure that does not move when the machine is busy (wall-clock load tests do).
#
#   loadtest/instructions.sh [--requests N] [--concurrency C] [--keep DIR] [--metered] [--apikey]
#                            [--keyed] [--shared [--profile-redis | --cpu]] [--stream]
#
# --stream sends the cross-check's streamed request instead ("stream": true; the mock answers
# 20 chunks back to back) and reads each stream to its [DONE]: the figure is per stream.
# --metered adds the balancer group's metrics-on route: a prometheus plugin with ai_metrics and
# input/output costs (the x-ai-gateway-cost header and every Kong AI series per request).
# --apikey sends the `apikey` header the limits group (loadtest/scenarios-limits.sh) sends to
# every route, its plain one included; --keyed adds that group's keyed route: key-auth and
# ai-rate-limiting-advanced with strategy local, and the header's consumer. --shared is --keyed
# with the group's /shared route instead (strategy redis, sync_rate 0: every admission and
# settlement in a script call to a redis-server started here, on its own port), and also prints
# Redis's script calls per request.
# --profile-redis (implies --shared) runs redis-server under callgrind instead, the gateway
# natively, and prints Redis's instructions per request and per script call (with Redis the slow
# side, each call carries about C requests' admissions and settlements). --cpu (implies
# --shared) runs nothing under valgrind: the load client (loadtest/client, closed loop, C = 64
# unless given) sends N requests (default 100,000) as in run.sh's limits group (gateway on CPU
# 0, redis-server, the mock and the client on CPU 1) and prints the CPU per request of
# redis-server and of the gateway (utime + stime from /proc; busy-machine noise stays in the
# batching, so compare script calls per request too).
#
# GW_BIN=path measures another build (default target/release/ai-gateway, built if missing).
# It starts the cross-check's hyper mock and the gateway under valgrind (default settings: access
# log at info, one worker), sends 400 warm-up requests, then counts N requests (default 2,000,
# C = 16 keep-alive connections) and prints the total, the figure per request and the functions
# with the largest inclusive counts. Only 127.0.0.1; everything started here is stopped by PID.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LT="$ROOT/loadtest"
N="" C="" KEEP="" METERED=0 KEYED=0 APIKEY="" SHARED=0 PROFILE_REDIS=0 CPU=0 STREAM=0
while [ $# -gt 0 ]; do
    case $1 in
        --requests) N=$2; shift 2 ;;
        --concurrency) C=$2; shift 2 ;;
        --keep) KEEP=$2; shift 2 ;;
        --metered) METERED=1; shift ;;
        --stream) STREAM=1; shift ;;
        --apikey) APIKEY="loadtest-consumer-key-0001"; shift ;;
        --keyed) KEYED=1 APIKEY="loadtest-consumer-key-0001"; shift ;;
        --shared) KEYED=1 SHARED=1 APIKEY="loadtest-consumer-key-0001"; shift ;;
        --profile-redis) KEYED=1 SHARED=1 PROFILE_REDIS=1 APIKEY="loadtest-consumer-key-0001"; shift ;;
        --cpu) KEYED=1 SHARED=1 CPU=1 APIKEY="loadtest-consumer-key-0001"; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
if [ "$CPU" = 1 ]; then N="${N:-100000}" C="${C:-64}"; else N="${N:-2000}" C="${C:-16}"; fi
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
BIN="${GW_BIN:-$ROOT/target/release/ai-gateway}"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --quiet)
CARGO_TARGET_DIR="$ROOT/target/loadtest-xc" cargo build --release --quiet \
    --manifest-path "$LT/crosscheck/Cargo.toml" --bin mock
MOCK="$ROOT/target/loadtest-xc/release/mock"
if [ "$CPU" = 1 ]; then
    CARGO_TARGET_DIR="$ROOT/target/loadtest-client" cargo build --release --quiet \
        --manifest-path "$LT/client/Cargo.toml"
    LOAD="$ROOT/target/loadtest-client/release/aigw-load"
fi
# --cpu pins as run.sh does: the gateway on CPU 0, everything else on CPU 1.
PIN0=() PIN1=()
[ "$CPU" = 1 ] && PIN0=(taskset -c 0) PIN1=(taskset -c 1)
OUT="${KEEP:-$(mktemp -d "${TMPDIR:-/tmp}/aigw-instr.XXXXXX")}"
mkdir -p "$OUT"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 600); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "port $1 never opened" >&2; return 1
}
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

mock_port="$(free_port)"; gw_port="$(free_port)"; demo_port="$(free_port)"; redis_port="$(free_port)"
MOCK_ADDR="127.0.0.1:$mock_port" "${PIN1[@]}" "$MOCK" >"$OUT/mock.log" 2>&1 &
PIDS+=($!)
LIMIT="strategy: local"
if [ "$SHARED" = 1 ]; then
    LIMIT="strategy: redis, sync_rate: 0, redis: {host: 127.0.0.1, port: $redis_port, timeout: 5000}"
    REDIS=(/usr/bin/redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no)
    if [ "$PROFILE_REDIS" = 1 ]; then
        REDIS=(valgrind --tool=callgrind --instr-atstart=no
            --callgrind-out-file="$OUT/redis.callgrind.out" "${REDIS[@]}")
    fi
    "${PIN1[@]}" "${REDIS[@]}" >"$OUT/redis.log" 2>&1 &
    redis_pid=$!
    PIDS+=("$redis_pid")
fi
cat >"$OUT/deck.yaml" <<EOF
_format_version: "3.0"
services:
- name: bench
  url: http://127.0.0.1:$mock_port
  routes:
  - name: fast
    paths: [/v1]
    plugins:
$(if [ "$METERED" = 1 ]; then printf '%s\n' "    - name: prometheus" "      config: {ai_metrics: true}"; fi)
    - name: ai-proxy
      config:
        route_type: llm/v1/chat
        auth: {header_name: Authorization, header_value: Bearer sk-bench}
        model:
          provider: openai
          name: gpt-mock
          options: {$([ "$METERED" = 1 ] && printf 'input_cost: 0.15, output_cost: 0.6, ')upstream_url: "http://127.0.0.1:$mock_port/v1/chat/completions"}
EOF
if [ "$KEYED" = 1 ]; then
    cat >>"$OUT/deck.yaml" <<EOF
    - name: key-auth
    - name: ai-rate-limiting-advanced
      config: {$LIMIT, llm_providers: [{name: openai, limit: [1000000000000], window_size: [60]}]}
consumers:
- username: loadtest
  keyauth_credentials: [{key: $APIKEY}]
EOF
fi
# Default settings from the checkout; only the demo mock's port moves (as run.sh's xc group).
GW=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out")
if [ "$PROFILE_REDIS" = 1 ] || [ "$CPU" = 1 ]; then GW=(); fi
(cd "$ROOT" && exec "${PIN0[@]}" env AIGW_WORKERS=1 AIGW_MOCK__LISTEN="127.0.0.1:$demo_port" \
    "${GW[@]}" "$BIN" --config "$OUT/deck.yaml" --listen "127.0.0.1:$gw_port") >"$OUT/gateway.log" 2>&1 &
gw_pid=$!
PIDS+=("$gw_pid")
wait_port "$mock_port"
wait_port "$gw_port"
[ "$SHARED" = 1 ] && wait_port "$redis_port"

# The cross-check's request (loadtest/run.sh, group xc), over C keep-alive connections.
client() {
    python3 - "$gw_port" "$1" "$C" "$APIKEY" "$STREAM" <<'PY'
import http.client, sys, threading
port, n, c = (int(a) for a in sys.argv[1:4])
headers = {"Content-Type": "application/json"}
if sys.argv[4]:
    headers["apikey"] = sys.argv[4]
stream = sys.argv[5] == "1"
body = b'{"model":"gpt-mock","messages":[{"role":"user","content":"Say hello."}]%s}' % (
    b',"stream":true' if stream else b"")
expect = b"data: [DONE]" if stream else b'"choices"'
bad = []
def run(k):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(k):
        conn.request("POST", "/v1/chat/completions", body, headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != 200 or expect not in data:
            bad.append((r.status, data[:200]))
threads = [threading.Thread(target=run, args=(n // c,)) for _ in range(c)]
for t in threads: t.start()
for t in threads: t.join()
if bad:
    sys.exit(f"{len(bad)} bad answers, first: {bad[0]}")
PY
}
# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Script calls redis-server has served (EVALSHA and EVAL).
script_calls() {
    redis-cli -p "$redis_port" INFO commandstats |
        awk -F'calls=' '/^cmdstat_eval(sha)?:/ {split($2, v, ","); n += v[1]} END {print n + 0}'
}
if [ "$CPU" = 1 ]; then
    body="$OUT/body.json"
    printf '%s' '{"model":"gpt-mock","messages":[{"role":"user","content":"Say hello."}]}' >"$body"
    load() { # SECONDS MAX_REQUESTS
        taskset -c 1 "$LOAD" closed --url "http://127.0.0.1:$gw_port/v1/chat/completions" \
            --body "$body" --header "content-type: application/json" --header "apikey: $APIKEY" \
            --concurrency "$C" --warmup 0 --duration "$1" --max-requests "$2" --expect choices
    }
    load 2 1000000 >/dev/null
    redis_before="$(cpu_ticks "$redis_pid")" gw_before="$(cpu_ticks "$gw_pid")" calls_before="$(script_calls)"
    load 600 "$N" >"$OUT/load.json"
    redis_after="$(cpu_ticks "$redis_pid")" gw_after="$(cpu_ticks "$gw_pid")" calls_after="$(script_calls)"
    sent="$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["ok"] + sum(r["errors"].values()))' "$OUT/load.json")"
    awk -v r="$((redis_after - redis_before))" -v g="$((gw_after - gw_before))" \
        -v hz="$(getconf CLK_TCK)" -v n="$sent" -v c="$((calls_after - calls_before))" \
        'BEGIN {printf "requests %d, connections %d: redis-server %.2f us CPU per request, gateway %.2f us, %d script calls (%.2f requests per call)\n", n, '"$C"', r / hz * 1e6 / n, g / hz * 1e6 / n, c, n / c}'
    exit 0
fi
PROFILED="$gw_pid"
[ "$PROFILE_REDIS" = 1 ] && PROFILED="$redis_pid"
client 400
callgrind_control -i on "$PROFILED" >/dev/null
[ "$SHARED" = 1 ] && calls_before="$(script_calls)"
client "$N"
[ "$SHARED" = 1 ] && calls_after="$(script_calls)"
callgrind_control -d "$PROFILED" >/dev/null
callgrind_control -i off "$PROFILED" >/dev/null
if [ "$SHARED" = 1 ]; then
    calls=$((calls_after - calls_before))
    awk -v n="$N" -v c="$calls" 'BEGIN {printf "%d script calls (%.2f requests per call)\n", c, n / c}'
fi
if [ "$PROFILE_REDIS" = 1 ]; then
    # The dump of redis-server (the gateway ran natively).
    callgrind_annotate --inclusive=yes "$OUT/redis.callgrind.out.1" >"$OUT/redis-inclusive.txt"
    total="$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' "$OUT/redis-inclusive.txt")"
    echo "redis-server: $total instructions, $((total / N)) per request, $((total / calls)) per script call ($OUT/redis-inclusive.txt)"
    exit 0
fi
# The dump holds the counted requests only (the file written at exit holds the rest).
dump="$OUT/callgrind.out.1"
callgrind_annotate --inclusive=yes "$dump" >"$OUT/inclusive.txt"
total="$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' "$OUT/inclusive.txt")"
echo "$([ "$STREAM" = 1 ] && echo streams || echo requests) $N, connections $C: $total instructions, $((total / N)) per $([ "$STREAM" = 1 ] && echo stream || echo request)"
echo "largest inclusive counts of the gateway's own functions, per request ($OUT/inclusive.txt):"
grep 'ai_gateway::' "$OUT/inclusive.txt" | sed -n 1,25p |
    awk -v n="$N" '{c = $1; gsub(",", "", c); sub(/^[^)]*\) */, ""); printf "%8d %s\n", c / n, substr($0, 1, 160)}'
