#!/usr/bin/env bash
# Instructions per request of the gateway on the cross-check's non-streaming request, counted by
# callgrind: a figure that does not move when the machine is busy (wall-clock load tests do).
#
#   loadtest/instructions.sh [--requests N] [--concurrency C] [--keep DIR] [--metered] [--apikey]
#                            [--keyed]
#
# --metered adds the balancer group's metrics-on route: a prometheus plugin with ai_metrics and
# input/output costs (the x-ai-gateway-cost header and every Kong AI series per request).
# --apikey sends the `apikey` header the limits group (loadtest/scenarios-limits.sh) sends to
# every route, its plain one included; --keyed adds that group's keyed route: key-auth and
# ai-rate-limiting-advanced with strategy local, and the header's consumer.
#
# GW_BIN=path measures another build (default target/release/ai-gateway, built if missing).
# It starts the cross-check's hyper mock and the gateway under valgrind (default settings: access
# log at info, one worker), sends 400 warm-up requests, then counts N requests (default 2,000,
# C = 16 keep-alive connections) and prints the total, the figure per request and the functions
# with the largest inclusive counts. Only 127.0.0.1; everything started here is stopped by PID.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LT="$ROOT/loadtest"
N=2000 C=16 KEEP="" METERED=0 KEYED=0 APIKEY=""
while [ $# -gt 0 ]; do
    case $1 in
        --requests) N=$2; shift 2 ;;
        --concurrency) C=$2; shift 2 ;;
        --keep) KEEP=$2; shift 2 ;;
        --metered) METERED=1; shift ;;
        --apikey) APIKEY="loadtest-consumer-key-0001"; shift ;;
        --keyed) KEYED=1 APIKEY="loadtest-consumer-key-0001"; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
BIN="${GW_BIN:-$ROOT/target/release/ai-gateway}"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --quiet)
CARGO_TARGET_DIR="$ROOT/target/loadtest-xc" cargo build --release --quiet \
    --manifest-path "$LT/crosscheck/Cargo.toml" --bin mock
MOCK="$ROOT/target/loadtest-xc/release/mock"
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

mock_port="$(free_port)"; gw_port="$(free_port)"; demo_port="$(free_port)"
MOCK_ADDR="127.0.0.1:$mock_port" "$MOCK" >"$OUT/mock.log" 2>&1 &
PIDS+=($!)
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
      config: {strategy: local, llm_providers: [{name: openai, limit: [1000000000000], window_size: [60]}]}
consumers:
- username: loadtest
  keyauth_credentials: [{key: $APIKEY}]
EOF
fi
# Default settings from the checkout; only the demo mock's port moves (as run.sh's xc group).
(cd "$ROOT" && exec env AIGW_WORKERS=1 AIGW_MOCK__LISTEN="127.0.0.1:$demo_port" \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
    "$BIN" --config "$OUT/deck.yaml" --listen "127.0.0.1:$gw_port") >"$OUT/gateway.log" 2>&1 &
gw_pid=$!
PIDS+=("$gw_pid")
wait_port "$mock_port"
wait_port "$gw_port"

# The cross-check's request (loadtest/run.sh, group xc), over C keep-alive connections.
client() {
    python3 - "$gw_port" "$1" "$C" "$APIKEY" <<'PY'
import http.client, sys, threading
port, n, c = (int(a) for a in sys.argv[1:4])
headers = {"Content-Type": "application/json"}
if sys.argv[4]:
    headers["apikey"] = sys.argv[4]
body = b'{"model":"gpt-mock","messages":[{"role":"user","content":"Say hello."}]}'
bad = []
def run(k):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(k):
        conn.request("POST", "/v1/chat/completions", body, headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != 200 or b'"choices"' not in data:
            bad.append((r.status, data[:200]))
threads = [threading.Thread(target=run, args=(n // c,)) for _ in range(c)]
for t in threads: t.start()
for t in threads: t.join()
if bad:
    sys.exit(f"{len(bad)} bad answers, first: {bad[0]}")
PY
}
client 400
callgrind_control -i on "$gw_pid" >/dev/null
client "$N"
callgrind_control -d "$gw_pid" >/dev/null
callgrind_control -i off "$gw_pid" >/dev/null
# The dump holds the counted requests only (the file written at exit holds the rest).
dump="$OUT/callgrind.out.1"
callgrind_annotate --inclusive=yes "$dump" >"$OUT/inclusive.txt"
total="$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' "$OUT/inclusive.txt")"
echo "requests $N, connections $C: $total instructions, $((total / N)) per request"
echo "largest inclusive counts of the gateway's own functions, per request ($OUT/inclusive.txt):"
grep 'ai_gateway::' "$OUT/inclusive.txt" | sed -n 1,25p |
    awk -v n="$N" '{c = $1; gsub(",", "", c); sub(/^[^)]*\) */, ""); printf "%8d %s\n", c / n, substr($0, 1, 160)}'
