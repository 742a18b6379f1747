#!/usr/bin/env bash
# The ai-gateway load test: builds release, starts the mock provider, nginx and the gateway on
# 127.0.0.1, runs every scenario against direct / nginx / ai-gateway, stops what it started (by
# PID) and writes loadtest/RESULTS.md and loadtest/results.json. See loadtest/README.md.
#
#   loadtest/run.sh [--quick] [--label NAME] [--sched rr|nice|none] [--no-profile]
#                   [--no-build] [--hold N] [--keep] [--only GROUPS]
set -euo pipefail

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'

  --quick        short smoke run (~2 min after the build): 2 s windows, 1,000 held streams
  --label NAME   name of this run in the history table (default: git revision, +dirty)
  --sched MODE   rr (default as root): SCHED_RR priority 50 for every process of the run, so a
                 compile next door cannot distort it; nice: nice -20; none: as started.
                 The xc group always runs as started, like the cross-check it reproduces.
  --no-profile   skip the perf profile of the gateway (full runs profile when perf works)
  --no-build     use the existing target/release/ai-gateway
  --hold N       streams held open at once in the memory scenario (default 10000; quick 1000)
  --keep         keep the temp dir (configs, logs) for inspection
  --only GROUPS  run only these scenario groups (comma-separated; default all): own (chat-small,
                 chat-8k, rate-1000, stream-50, stream-paced), balancer, limits (key-auth and
                 token limits, local and Redis), hold, xc (the cross-check: wrk and
                 a hyper mock, gateway with its default settings), wrk, profile, bench
                 (cargo bench --bench translate: the translation micro-benchmark)
Environment: GW_BIN runs that gateway binary instead of target/release/ai-gateway (with
--no-build). GW_CPU (default 0) runs the gateway and nginx; LOAD_CPU (default 1) runs the
mock provider and the load client.
EOF
}

QUICK=0
LABEL=""
SCHED=""
PROFILE=1
BUILD=1
HOLD=""
KEEP=0
GROUPS_ALL="own balancer limits hold xc wrk profile bench"
ONLY="$GROUPS_ALL"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --label) LABEL="$2"; shift ;;
        --sched) SCHED="$2"; shift ;;
        --no-profile) PROFILE=0 ;;
        --no-build) BUILD=0 ;;
        --hold) HOLD="$2"; shift ;;
        --keep) KEEP=1 ;;
        --only) ONLY="${2//,/ }"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
# wants GROUP: is this scenario group part of the run (--only)?
wants() { case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
for g in $ONLY; do
    case " $GROUPS_ALL " in *" $g "*) ;; *) echo "--only: unknown group $g" >&2; exit 2 ;; esac
done
LT="$ROOT/loadtest"
GW_CPU="${GW_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
export CARGO_TERM_COLOR=never

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------------------------------------------
# Durations and sizes (seconds; every run is also bounded by its client's --timeout)
if [ "$QUICK" = 1 ]; then
    WARMUP=1; WINDOW=2; PACED_WINDOW=3; HOLD="${HOLD:-1000}"
    HOLD_CHUNKS=10; HOLD_DELAY_MS=500; HOLD_BOUND=40; PROFILE=0; WRK_CHECK=0
    XC_WARMUP=1; XC_WINDOW=3
else
    WARMUP=2; WINDOW=10; PACED_WINDOW=10; HOLD="${HOLD:-10000}"
    HOLD_CHUNKS=40; HOLD_DELAY_MS=500; HOLD_BOUND=120; WRK_CHECK=1
    XC_WARMUP=4; XC_WINDOW=10
fi
wants wrk || WRK_CHECK=0
wants profile || PROFILE=0
XC=0
wants xc && XC=1
# The cross-check's own shape (../crosscheck in ISSUE 14): 20 content chunks, 5 ms apart when paced.
XC_CHUNKS=20
XC_PACED_DELAY_MS=5
CONCURRENCY=64
RATE=1000
STREAM_CHUNKS=50
PACED_CHUNKS=20
PACED_DELAY_MS=20
# Paced streams arrive at a fixed rate (open loop), as independent users do: a closed loop of 64
# paced streams starts and ends them in step, so its TTFC measured each stream's place in a burst
# of 64 simultaneous requests (300-2,300 µs p50 run to run for one binary; ANALYSIS.md).
PACED_RATE=128

# ------------------------------------------------------------------------------------------
# Tools: installed when missing (Debian packages; needs root or sudo)
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        as_root apt-get update -qq >/dev/null || true
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
command -v cargo >/dev/null || { echo "cargo is required" >&2; exit 1; }
command -v taskset >/dev/null || apt_install util-linux
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    log "installing nginx-light"
    apt_install nginx-light || apt_install nginx
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
if { [ "$WRK_CHECK" = 1 ] || [ "$XC" = 1 ]; } && ! command -v wrk >/dev/null; then
    log "installing wrk (load-generator cross-check)"
    apt_install wrk || { WRK_CHECK=0; XC=0; log "no wrk: the cross-check is skipped"; }
fi
PERF_OK=0
if [ "$PROFILE" = 1 ]; then
    command -v perf >/dev/null || apt_install linux-perf || true
    if command -v perf >/dev/null && perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; then
        PERF_OK=1
    else
        log "perf record does not work here: no profile"
    fi
fi

NPROC="$(nproc)"
if [ "$NPROC" -lt 2 ]; then
    log "only $NPROC CPU: the gateway and the load share it; results are not comparable"
    GW_CPU=0; LOAD_CPU=0
fi

# Scheduling of every process of the run (gateway, nginx, mock, client).
if [ -z "$SCHED" ]; then
    if [ "$(id -u)" = 0 ] && command -v chrt >/dev/null; then SCHED="rr"; else SCHED="nice"; fi
fi
# Under rr the load client gets one priority step above the mock it shares a CPU with: it runs
# as soon as bytes arrive instead of waiting out the mock's time slice (which would delay every
# first chunk until the mock has written its whole backlog).
case "$SCHED" in
    rr) PRIO=(chrt -r 50); PRIO_CLIENT=(chrt -r 51); PRIO_SAMPLER=(chrt -r 52) ;;
    nice) if [ "$(id -u)" = 0 ]; then PRIO=(nice -n -19); PRIO_CLIENT=(nice -n -20)
          else PRIO=(nice -n 0); PRIO_CLIENT=(nice -n 0); fi; PRIO_SAMPLER=("${PRIO_CLIENT[@]}") ;;
    none) PRIO=(env); PRIO_CLIENT=(env); PRIO_SAMPLER=(env) ;;
    *) echo "--sched must be rr, nice or none" >&2; exit 2 ;;
esac
on_load_cpu() { "${PRIO_CLIENT[@]}" taskset -c "$LOAD_CPU" "$@"; }
# spawn CPU LOG COMMAND...: starts COMMAND in the background pinned to CPU; the subshell execs
# into it, so SPAWNED is the PID of the process itself (recorded to be stopped at the end).
STARTED=()
spawn() {
    local cpu="$1" logf="$2"
    shift 2
    (exec "${PRIO[@]}" taskset -c "$cpu" "$@") >"$logf" 2>&1 &
    SPAWNED=$!
    STARTED+=("$SPAWNED")
}

# 10,000 streams need ~20,000 sockets in the gateway alone.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"
HOLD_WANTED="$HOLD"
# The gateway (and nginx) hold two sockets per stream (client + upstream) plus ~30 other files.
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((2 * HOLD + 128)) ]; then
    HOLD=$(((NOFILE - 128) / 2 / 100 * 100))
    log "open files are capped at $NOFILE here: holding $HOLD streams instead of $HOLD_WANTED" \
        "(the report extrapolates the memory to $HOLD_WANTED)"
fi

# ------------------------------------------------------------------------------------------
# Build
if [ "$BUILD" = 1 ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
# GW_BIN: another build of the gateway (e.g. a copy of an older one, for a before/after).
BIN="${GW_BIN:-$ROOT/target/release/ai-gateway}"
[ -x "$BIN" ] || { echo "$BIN is missing (run without --no-build)" >&2; exit 1; }
log "building the load client (loadtest/client)"
CARGO_TARGET_DIR="$ROOT/target/loadtest-client" cargo build --release --quiet \
    --manifest-path "$LT/client/Cargo.toml"
LOAD="$ROOT/target/loadtest-client/release/aigw-load"
if [ "$XC" = 1 ]; then
    log "building the cross-check tools (loadtest/crosscheck: hyper mock, sseload)"
    CARGO_TARGET_DIR="$ROOT/target/loadtest-xc" cargo build --release --quiet \
        --manifest-path "$LT/crosscheck/Cargo.toml"
    log "building the framework floor (loadtest/floor: bare actix-web + awc pass-through)"
    CARGO_TARGET_DIR="$ROOT/target/loadtest-floor" cargo build --release --quiet \
        --manifest-path "$LT/floor/Cargo.toml"
fi
XC_BIN="$ROOT/target/loadtest-xc/release"
FLOOR_BIN="$ROOT/target/loadtest-floor/release/aigw-floor"

# ------------------------------------------------------------------------------------------
# Processes: everything started here is recorded and stopped by PID.
TMP="$(mktemp -d "${TMPDIR:-/tmp}/aigw-loadtest.XXXXXX")"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$LT/out/$STAMP"
mkdir -p "$OUT"
STARTED_AT="$(date +%s)"

stop_pid() {
    local pid="$1" _
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
    if [ "$KEEP" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    local port="$1" pid="$2" _
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { echo "process $pid exited" >&2; return 1; }
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "port $port did not open" >&2
    return 1
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

MOCK_PORT="$(free_port)"; GW_PORT="$(free_port)"; NGX_PORT="$(free_port)"
while [ "$GW_PORT" = "$MOCK_PORT" ]; do GW_PORT="$(free_port)"; done
while [ "$NGX_PORT" = "$MOCK_PORT" ] || [ "$NGX_PORT" = "$GW_PORT" ]; do NGX_PORT="$(free_port)"; done

log "mock provider on 127.0.0.1:$MOCK_PORT (cpu $LOAD_CPU)"
spawn "$LOAD_CPU" "$TMP/mock.log" env AIGW_MOCK_NO_LOG=1 RUST_LOG=warn "$BIN" mock-provider \
    --listen "127.0.0.1:$MOCK_PORT" --workers 1
MOCK_PID=$SPAWNED
wait_port "$MOCK_PORT" "$MOCK_PID"

# The start of every scenario's decK file: one service on the mock, its routes to follow.
deck_header() {
    cat <<EOF
_format_version: "3.0"
services:
  - name: loadtest
    url: http://127.0.0.1:$MOCK_PORT
    routes:
EOF
}

# decK file: an OpenAI route and an Anthropic route (when this build has the translator).
write_deck() {
    deck_header
    cat <<EOF
      - name: openai-chat
        paths: ["/openai"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {header_name: Authorization, header_value: Bearer loadtest-key}
              model:
                provider: openai
                name: gpt-4o-mini
                options: {upstream_url: "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"}
EOF
    if [ "$1" = with-anthropic ]; then
        cat <<EOF
      - name: anthropic-chat
        paths: ["/anthropic"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {header_name: x-api-key, header_value: loadtest-key}
              model:
                provider: anthropic
                name: claude-3-5-haiku-20241022
                options:
                  anthropic_version: "2023-06-01"
                  max_tokens: 256
                  upstream_url: "http://127.0.0.1:$MOCK_PORT/v1/messages"
EOF
    fi
}
cat >"$TMP/settings.toml" <<EOF
workers = 1
log_level = "warn"
# The default (4096) would queue the held streams beyond it for a pool slot.
max_connections_per_worker = $((HOLD + 1024))
[mock]
enabled = false
EOF

start_gateway() {
    spawn "$GW_CPU" "$TMP/gateway.log" env RUST_LOG=warn "$BIN" --settings "$TMP/settings.toml" \
        --config "$TMP/deck.yaml" --listen "127.0.0.1:$GW_PORT"
    GW_PID=$SPAWNED
    wait_port "$GW_PORT" "$GW_PID" 2>/dev/null
}
log "ai-gateway on 127.0.0.1:$GW_PORT (cpu $GW_CPU)"
write_deck with-anthropic >"$TMP/deck.yaml"
ANTHROPIC=1
if ! start_gateway; then
    if grep -q anthropic "$TMP/gateway.log"; then
        log "anthropic route not available in this build: $(grep -m1 anthropic "$TMP/gateway.log")"
        ANTHROPIC=0
        write_deck openai-only >"$TMP/deck.yaml"
        start_gateway || { cat "$TMP/gateway.log" >&2; exit 1; }
    else
        cat "$TMP/gateway.log" >&2
        exit 1
    fi
fi
sleep 1
GW_IDLE_RSS="$(rss_kib "$GW_PID")"

mkdir -p "$TMP/nginx"
NGX_USER=""
[ "$(id -u)" = 0 ] && NGX_USER="user root root;"
cat >"$TMP/nginx/nginx.conf" <<EOF
$NGX_USER
worker_processes 1;
daemon off;
master_process on;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
worker_rlimit_nofile $((2 * HOLD + 4096));
events { worker_connections $((2 * HOLD + 2048)); multi_accept on; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/client_body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_buffer_size 64k;
  client_max_body_size 16m;
  upstream mock {
    server 127.0.0.1:$MOCK_PORT;
    keepalive 1024;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
  }
  server {
    listen 127.0.0.1:$NGX_PORT backlog=4096;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
EOF
log "nginx on 127.0.0.1:$NGX_PORT (cpu $GW_CPU)"
spawn "$GW_CPU" "$TMP/nginx/stdout.log" "$NGINX" -e "$TMP/nginx/error.log" -p "$TMP/nginx" \
    -c "$TMP/nginx/nginx.conf"
NGX_PID=$SPAWNED
wait_port "$NGX_PORT" "$NGX_PID"
NGX_WORKERS="$(cat /proc/"$NGX_PID"/task/*/children 2>/dev/null | xargs)"
NGX_PIDS="$(echo "$NGX_PID $NGX_WORKERS" | xargs | tr ' ' ',')"
sleep 0.5
NGX_IDLE_RSS=0
for p in ${NGX_PIDS//,/ }; do NGX_IDLE_RSS=$((NGX_IDLE_RSS + $(rss_kib "$p"))); done
MOCK_IDLE_RSS="$(rss_kib "$MOCK_PID")"

# ------------------------------------------------------------------------------------------
# Request bodies: the same upstream exchange for every target (what the gateway sends upstream
# is what direct and nginx send).
python3 - "$TMP" <<'EOF'
import json, sys
tmp = sys.argv[1]
small = "Hello! Please answer with a short greeting."
words = "The quick brown fox jumps over the lazy dog while the gateway measures its latency. "
big = (words * (8192 // len(words) + 1))[:8192]
def openai(model, text, stream):
    return {"messages": [{"role": "user", "content": text}], "model": model, "stream": stream}
def anthropic(text, stream):
    return {"model": "claude-3-5-haiku-20241022", "max_tokens": 256,
            "messages": [{"role": "user", "content": text}], "stream": stream}
for size, text in (("small", small), ("8k", big)):
    for stream in (False, True):
        suffix = "-stream" if stream else ""
        bodies = {
            f"openai-{size}{suffix}": openai("gpt-4o-mini", text, stream),
            f"anthropic-native-{size}{suffix}": anthropic(text, stream),
            f"anthropic-gw-{size}{suffix}": openai("claude-3-5-haiku-20241022", text, stream),
        }
        for name, body in bodies.items():
            with open(f"{tmp}/{name}.json", "w") as f:
                json.dump(body, f, separators=(",", ":"))
EOF

# ------------------------------------------------------------------------------------------
# Targets: URL, body, headers, watched pids and the text a good answer contains. The gateway gets
# the client's OpenAI request; direct and nginx get what the gateway sends upstream.
target_setup() { # TARGET SIZE(small|8k) STREAM(0|1) -> TARGS
    local t="$1" size="$2" stream="$3" sfx=""
    [ "$stream" = 1 ] && sfx="-stream"
    local oai_auth=(--header "authorization: Bearer loadtest-key")
    local ant_auth=(--header "x-api-key: loadtest-key" --header "anthropic-version: 2023-06-01")
    case "$t" in
        direct-openai) TARGS=(--url "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
            --body "$TMP/openai-$size$sfx.json" "${oai_auth[@]}" --watch "$MOCK_PID") ;;
        nginx-openai) TARGS=(--url "http://127.0.0.1:$NGX_PORT/v1/chat/completions"
            --body "$TMP/openai-$size$sfx.json" "${oai_auth[@]}" --watch "$NGX_PIDS" --aux "$MOCK_PID") ;;
        gw-openai) TARGS=(--url "http://127.0.0.1:$GW_PORT/openai/v1/chat/completions"
            --body "$TMP/openai-$size$sfx.json" --watch "$GW_PID" --aux "$MOCK_PID") ;;
        direct-anthropic) TARGS=(--url "http://127.0.0.1:$MOCK_PORT/v1/messages"
            --body "$TMP/anthropic-native-$size$sfx.json" "${ant_auth[@]}" --watch "$MOCK_PID") ;;
        nginx-anthropic) TARGS=(--url "http://127.0.0.1:$NGX_PORT/v1/messages"
            --body "$TMP/anthropic-native-$size$sfx.json" "${ant_auth[@]}" --watch "$NGX_PIDS" --aux "$MOCK_PID") ;;
        gw-anthropic) TARGS=(--url "http://127.0.0.1:$GW_PORT/anthropic/v1/chat/completions"
            --body "$TMP/anthropic-gw-$size$sfx.json" --watch "$GW_PID" --aux "$MOCK_PID") ;;
        *) echo "unknown target $t" >&2; return 1 ;;
    esac
    if [ "$stream" = 0 ]; then
        TARGS+=(--expect Mock)
    elif [ "$t" = direct-anthropic ] || [ "$t" = nginx-anthropic ]; then
        TARGS+=(--stream --expect message_stop)
    else
        TARGS+=(--stream --expect "[DONE]")
    fi
}
TARGETS=(direct-openai nginx-openai gw-openai)
if [ "$ANTHROPIC" = 1 ]; then TARGETS+=(direct-anthropic nginx-anthropic gw-anthropic); fi

COMMANDS="$OUT/commands.txt"
: >"$COMMANDS"
# run_case SCENARIO TARGET SIZE STREAM MODE [client args...]
run_case() {
    local scen="$1" target="$2" size="$3" stream="$4" mode="$5"
    shift 5
    local TARGS=()
    target_setup "$target" "$size" "$stream"
    local out="$OUT/$scen--$target.json"
    local cmd=("$LOAD" "$mode" "${TARGS[@]}" "$@" --label "$scen/$target"
        --clk-tck "$(getconf CLK_TCK)" --out "$out")
    {
        printf '%s taskset -c %s' "${PRIO_CLIENT[*]}" "$LOAD_CPU"
        printf " %q" "${cmd[@]}"
        printf '\n'
    } >>"$COMMANDS"
    log "$scen / $target"
    if ! on_load_cpu timeout 600 "${cmd[@]}" 2>>"$OUT/client.log"; then
        log "  client failed (see $OUT/client.log)"
        echo "{\"label\":\"$scen/$target\",\"failed\":true}" >"$out"
    fi
    python3 - "$out" <<'PY' >&2 || true
import json, sys
d = json.load(open(sys.argv[1]))
if d.get("failed"):
    sys.exit()
lat = d.get("latency_us") or {}
cpu = d.get("cpu") or {}
print(f"    ok={d['ok']} err={d['error_count']} rps={d['rps']} p50={lat.get('p50')}us "
      f"p99={lat.get('p99')}us cpu/req={cpu.get('us_per_req')}us util={cpu.get('util')} "
      f"background={cpu.get('background_cores')} cores")
PY
}

# ------------------------------------------------------------------------------------------
# Scenario groups (--only picks some). A new group: a group_NAME function, its name in
# GROUPS_ALL and GROUP_ORDER, and its budgets and table in report.py.

# own: the gateway's own scenarios against direct and nginx, driven by aigw-load.
group_own() {
    local t
    log "scenarios: ${TARGETS[*]} (window ${WINDOW}s, warmup ${WARMUP}s)"
    for t in "${TARGETS[@]}"; do
        run_case chat-small "$t" small 0 closed --concurrency "$CONCURRENCY" --warmup "$WARMUP" \
            --duration "$WINDOW" --timeout 10
    done
    for t in "${TARGETS[@]}"; do
        run_case chat-8k "$t" 8k 0 closed --concurrency "$CONCURRENCY" --warmup "$WARMUP" \
            --duration "$WINDOW" --timeout 10
    done
    for t in "${TARGETS[@]}"; do
        run_case rate-1000 "$t" small 0 rate --rate "$RATE" --concurrency "$CONCURRENCY" \
            --warmup "$WARMUP" --duration "$WINDOW" --timeout 10
    done
    for t in "${TARGETS[@]}"; do
        run_case stream-50 "$t" small 1 closed --concurrency "$CONCURRENCY" --warmup "$WARMUP" \
            --duration "$WINDOW" --timeout 10 --header "x-mock-fault: chunks=$STREAM_CHUNKS"
    done
    for t in "${TARGETS[@]}"; do
        run_case stream-paced "$t" small 1 rate --rate "$PACED_RATE" --concurrency $((2 * CONCURRENCY)) \
            --warmup "$WARMUP" --duration "$PACED_WINDOW" --timeout 20 \
            --header "x-mock-fault: chunks=$PACED_CHUNKS,chunk_delay=$PACED_DELAY_MS"
    done
    sleep 2
    GW_IDLE_RSS_AFTER="$(rss_kib "$GW_PID")"
}

# balancer: ai-proxy-advanced round-robin and metrics-on scenarios (issue 12), in their own file.
group_balancer() {
    # shellcheck source=loadtest/scenarios-balancer.sh
    source "$LT/scenarios-balancer.sh"
}

# limits: key-auth + token limits, local and through a private redis-server (issue 13).
group_limits() {
    # shellcheck source=loadtest/scenarios-limits.sh
    source "$LT/scenarios-limits.sh"
}

# hold: many slow streams open at once, for memory.
group_hold() {
    local t hold_s
    local hold_targets=(gw-openai nginx-openai)
    [ "$ANTHROPIC" = 1 ] && hold_targets+=(gw-anthropic)
    hold_s=$((HOLD_CHUNKS * HOLD_DELAY_MS / 1000))
    for t in "${hold_targets[@]}"; do
        run_case "hold-$HOLD" "$t" small 1 hold --concurrency "$HOLD" --connect-parallel 500 \
            --duration "$HOLD_BOUND" --timeout "$((hold_s + 60))" \
            --header "x-mock-fault: chunks=$HOLD_CHUNKS,chunk_delay=$HOLD_DELAY_MS"
        sleep 3 # let the closed connections and the pools settle
    done
    GW_RSS_END="$(rss_kib "$GW_PID")"
    sleep 20 # past the upstream pool's idle limit (15 s): does the memory come back?
    GW_RSS_SETTLED="$(rss_kib "$GW_PID")"
    # tests/stream_memory.rs measures a release build, so `cargo test` (debug) skips it: it runs
    # here, where the release build exists (400 quiet streams, fails above 25 KiB each).
    log "cargo test --release --test stream_memory"
    echo "cargo test --release --test stream_memory" >>"$COMMANDS"
    if cargo test --release --quiet --test stream_memory -- --nocapture \
        >"$OUT/stream-memory-test.txt" 2>&1; then
        STREAM_MEMORY_TEST='"passed"'
    else
        STREAM_MEMORY_TEST='"FAILED"'
        log "  tests/stream_memory.rs FAILED (see $OUT/stream-memory-test.txt)"
    fi
}

# xc: the cross-check, as a new user would measure (ISSUE 14): wrk -t1 -c64 for non-streaming,
# the minimal hyper 1 mock (loadtest/crosscheck) as upstream, its sseload for streams, nginx with
# the cross-check's config, and a second gateway started with its DEFAULT settings (the
# checkout's settings/default.toml: log level info with the access log, one worker per CPU it
# may use) and only --config/--listen. Same pinning and scheduling as above.
cpu_ticks() { # PIDS (comma-separated) -> their utime+stime in clock ticks
    local sum=0 p
    for p in ${1//,/ }; do
        sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$sum"
}
# xc_record TXT PEER SCENARIO PIDS TICKS NANOS RSS_KIB: the client's figures plus the target's CPU.
xc_record() {
    python3 - "$@" "$(getconf CLK_TCK)" <<'PY'
import json, re, sys
path, peer, scen, pids, ticks, ns, rss, clk = sys.argv[1:9]
text = open(path).read()
m = re.search(r"WRKJSON (\{.*\})", text) or re.search(r"^(\{.*\})\s*$", text, re.M)
d = json.loads(m.group(1)) if m else {}
cpu_s = int(ticks) / int(clk)
wall = int(ns) / 1e9
done = d.get("requests") or d.get("ok") or 0
d.update(peer=peer, scenario=scen, watch=pids, cpu_s=cpu_s, window_s=wall,
         core_util=cpu_s / wall if wall else None, rss_kib=int(rss) if rss else None,
         cpu_us_per_req=(cpu_s * 1e6 / done) if done else None)
if not done:
    d["failed"] = True
print(json.dumps(d))
PY
}
group_xc() {
    local xtmp="$TMP/xc" mock_port paced_port ngx_port gw_port demo_port floor_port
    # Every process at normal priority, as the cross-check runs them: under the run's SCHED_RR
    # the load client preempts the mock it shares a CPU with on every reply, the load CPU then
    # saturates first (direct 49k req/s against 73k) and nginx, left idle part of the time, pays
    # more CPU per request, so both ratios flattered the gateway (ANALYSIS.md, session 7).
    local -a PRIO=(env) PRIO_CLIENT=(env) PRIO_SAMPLER=(env)
    local peer url paced_url pids f c0 c1 t0 t1 lp scen u
    mkdir -p "$xtmp/nginx"
    mock_port="$(free_port)"; paced_port="$(free_port)"; ngx_port="$(free_port)"
    gw_port="$(free_port)"; demo_port="$(free_port)"; floor_port="$(free_port)"
    log "cross-check: hyper mocks on 127.0.0.1:$mock_port and :$paced_port (cpu $LOAD_CPU)"
    spawn "$LOAD_CPU" "$xtmp/mock.log" env MOCK_ADDR="127.0.0.1:$mock_port" \
        MOCK_CHUNKS="$XC_CHUNKS" MOCK_CHUNK_DELAY_MS=0 "$XC_BIN/mock"
    local mock_pid=$SPAWNED
    spawn "$LOAD_CPU" "$xtmp/mock-paced.log" env MOCK_ADDR="127.0.0.1:$paced_port" \
        MOCK_CHUNKS="$XC_CHUNKS" MOCK_CHUNK_DELAY_MS="$XC_PACED_DELAY_MS" "$XC_BIN/mock"
    local paced_pid=$SPAWNED
    wait_port "$mock_port" "$mock_pid"
    wait_port "$paced_port" "$paced_pid"
    sed -e "s#__RUN__#$xtmp/nginx#g; s#__PORT__#$ngx_port#; s#__UP__#127.0.0.1:$mock_port#" \
        -e "s#__UP_PACED__#127.0.0.1:$paced_port#; s#__USER__#$NGX_USER#" \
        "$LT/crosscheck/nginx.conf.tmpl" >"$xtmp/nginx/nginx.conf"
    spawn "$GW_CPU" "$xtmp/nginx/stdout.log" "$NGINX" -e "$xtmp/nginx/error.log" \
        -p "$xtmp/nginx" -c "$xtmp/nginx/nginx.conf"
    local ngx_pid=$SPAWNED
    wait_port "$ngx_port" "$ngx_pid"
    local ngx_pids
    ngx_pids="$(echo "$ngx_pid $(cat /proc/"$ngx_pid"/task/*/children 2>/dev/null)" | xargs | tr ' ' ',')"
    python3 - "$xtmp/deck.yaml" "$mock_port" "$paced_port" <<'PY'
import sys
path, fast, paced = sys.argv[1:4]
route = """  - name: {name}
    paths: [{path}]
    plugins:
    - name: ai-proxy
      config:
        route_type: llm/v1/chat
        auth: {{header_name: Authorization, header_value: Bearer sk-bench}}
        model:
          provider: openai
          name: gpt-mock
          options: {{upstream_url: "http://127.0.0.1:{port}/v1/chat/completions"}}
"""
with open(path, "w") as f:
    f.write('_format_version: "3.0"\nservices:\n- name: bench\n'
            f'  url: http://127.0.0.1:{fast}\n  routes:\n')
    f.write(route.format(name="fast", path="/v1", port=fast))
    f.write(route.format(name="paced", path="/paced", port=paced))
PY
    # Default settings: started from the checkout (settings/default.toml); only the demo mock's
    # port is moved, so a gateway already running on this machine cannot collide with it.
    log "cross-check: ai-gateway with its default settings on 127.0.0.1:$gw_port (cpu $GW_CPU)"
    spawn "$GW_CPU" "$xtmp/gateway.log" env AIGW_MOCK__LISTEN="127.0.0.1:$demo_port" "$BIN" \
        --config "$xtmp/deck.yaml" --listen "127.0.0.1:$gw_port"
    local xgw_pid=$SPAWNED
    wait_port "$gw_port" "$xgw_pid"
    # The framework floor: what actix-web + awc cost with nothing of the gateway on top
    # (non-streaming only; it buffers answers).
    log "cross-check: framework floor on 127.0.0.1:$floor_port (cpu $GW_CPU)"
    spawn "$GW_CPU" "$xtmp/floor.log" env FLOOR_ADDR="127.0.0.1:$floor_port" \
        FLOOR_UPSTREAM="http://127.0.0.1:$mock_port/v1/chat/completions" "$FLOOR_BIN"
    local floor_pid=$SPAWNED
    wait_port "$floor_port" "$floor_pid"
    sleep 1
    XC_GW_IDLE_RSS="$(rss_kib "$xgw_pid")"
    local body_ns='{"model":"gpt-mock","messages":[{"role":"user","content":"Say hello."}]}'
    local body_st='{"model":"gpt-mock","messages":[{"role":"user","content":"Say hello."}],"stream":true}'
    for peer in direct nginx floor gw; do
        case $peer in
            direct) url="http://127.0.0.1:$mock_port/v1/chat/completions"
                paced_url="http://127.0.0.1:$paced_port/v1/chat/completions"; pids=$mock_pid ;;
            nginx) url="http://127.0.0.1:$ngx_port/v1/chat/completions"
                paced_url="http://127.0.0.1:$ngx_port/paced/v1/chat/completions"; pids=$ngx_pids ;;
            floor) url="http://127.0.0.1:$floor_port/v1/chat/completions"; pids=$floor_pid ;;
            gw) url="http://127.0.0.1:$gw_port/v1/chat/completions"
                paced_url="http://127.0.0.1:$gw_port/paced/v1/chat/completions"; pids=$xgw_pid ;;
        esac
        log "cross-check / $peer: non-streaming (wrk)"
        f="$OUT/xc-nonstream--$peer"
        echo "WRK_BODY='$body_ns' ${PRIO_CLIENT[*]} taskset -c $LOAD_CPU wrk -t1" \
            "-c$CONCURRENCY -d${XC_WINDOW}s --latency -s loadtest/crosscheck/post.lua $url" >>"$COMMANDS"
        WRK_BODY="$body_ns" on_load_cpu timeout 120 wrk -t1 -c"$CONCURRENCY" -d"${XC_WARMUP}s" \
            --timeout 10s -s "$LT/crosscheck/post.lua" "$url" >/dev/null 2>&1 || true
        c0=$(cpu_ticks "$pids"); t0=$(date +%s%N)
        WRK_BODY="$body_ns" on_load_cpu timeout 120 wrk -t1 -c"$CONCURRENCY" -d"${XC_WINDOW}s" \
            --timeout 10s --latency -s "$LT/crosscheck/post.lua" "$url" >"$f.txt" 2>&1 || true
        c1=$(cpu_ticks "$pids"); t1=$(date +%s%N)
        xc_record "$f.txt" "$peer" nonstream "$pids" $((c1 - c0)) $((t1 - t0)) \
            "$(rss_kib "${pids%%,*}")" >"$f.json"
        [ "$peer" = floor ] && continue
        for scen in stream paced; do
            u=$url
            [ "$scen" = paced ] && u=$paced_url
            # Direct, paced: the paced mock is the process doing the work.
            [ "$peer/$scen" = direct/paced ] && pids=$paced_pid
            log "cross-check / $peer: $scen (sseload)"
            f="$OUT/xc-$scen--$peer"
            echo "${PRIO_CLIENT[*]} taskset -c $LOAD_CPU target/loadtest-xc/release/sseload $u" \
                "-c $CONCURRENCY -w $XC_WARMUP -d $XC_WINDOW -b '$body_st'" >>"$COMMANDS"
            on_load_cpu timeout 120 "$XC_BIN/sseload" "$u" -c "$CONCURRENCY" -w "$XC_WARMUP" \
                -d "$XC_WINDOW" -b "$body_st" >"$f.txt" 2>&1 &
            lp=$!
            # The window starts after sseload's warm-up. The sample is taken by a process of
            # the run's own priority: under SCHED_RR this shell would only get the CPU back
            # once the real-time processes have finished.
            "${PRIO_SAMPLER[@]}" bash -c 'sleep "$1"; shift; s=0
                for p in ${1//,/ }; do s=$((s + $(awk "{print \$14 + \$15}" /proc/$p/stat 2>/dev/null || echo 0))); done
                echo "$s $(date +%s%N)"' _ "$XC_WARMUP" "$pids" >"$f.t0" &
            local sp=$!
            wait "$lp" || true
            wait "$sp" || true
            c1=$(cpu_ticks "$pids"); t1=$(date +%s%N)
            read -r c0 t0 <"$f.t0"
            rm -f "$f.t0"
            xc_record "$f.txt" "$peer" "$scen" "$pids" $((c1 - c0)) $((t1 - t0)) \
                "$(rss_kib "${pids%%,*}")" >"$f.json"
        done
    done
    cp "$xtmp/deck.yaml" "$OUT/xc-deck.yaml"
    cp "$xtmp/nginx/nginx.conf" "$OUT/xc-nginx.conf"
    for p in "$xgw_pid" "$floor_pid" "$ngx_pid" "$paced_pid" "$mock_pid"; do stop_pid "$p"; done
}

# bench: the translation micro-benchmark (benches/translate.rs), pinned like the gateway.
group_bench() {
    log "cargo bench --bench translate (cpu $GW_CPU)"
    echo "${PRIO[*]} taskset -c $GW_CPU cargo bench --bench translate -- --noplot" >>"$COMMANDS"
    "${PRIO[@]}" taskset -c "$GW_CPU" cargo bench --quiet --bench translate -- --noplot \
        >"$OUT/bench.txt" 2>"$OUT/bench.log" || log "  cargo bench failed (see $OUT/bench.log)"
}

GW_IDLE_RSS_AFTER=null; GW_RSS_END=null; GW_RSS_SETTLED=null; XC_GW_IDLE_RSS=null
STREAM_MEMORY_TEST=null
GROUP_ORDER="own balancer limits xc hold"
for g in $GROUP_ORDER; do
    if wants "$g"; then "group_$g"; fi
done

# Load-generator cross-check: the same closed-loop run with wrk.
if [ "$WRK_CHECK" = 1 ]; then
    cat >"$TMP/post.lua" <<EOF
wrk.method = "POST"
wrk.body = io.open("$TMP/openai-small.json"):read("*a")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer loadtest-key"
done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"errors":%d,"p50":%.1f,"p99":%.1f}\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
EOF
    for pair in "direct-openai|http://127.0.0.1:$MOCK_PORT/v1/chat/completions" \
        "nginx-openai|http://127.0.0.1:$NGX_PORT/v1/chat/completions" \
        "gw-openai|http://127.0.0.1:$GW_PORT/openai/v1/chat/completions"; do
        name="${pair%%|*}"; url="${pair#*|}"
        log "wrk cross-check / $name"
        echo "${PRIO_CLIENT[*]} taskset -c $LOAD_CPU wrk -t1 -c$CONCURRENCY -d${WINDOW}s -s post.lua $url" >>"$COMMANDS"
        on_load_cpu timeout 60 wrk -t1 -c"$CONCURRENCY" -d2s -s "$TMP/post.lua" "$url" >/dev/null 2>&1 || true
        on_load_cpu timeout 60 wrk -t1 -c"$CONCURRENCY" -d"${WINDOW}s" -s "$TMP/post.lua" "$url" \
            >"$OUT/wrk--$name.txt" 2>&1 || true
    done
fi

# Profile: perf samples of the gateway while the client drives one route.
if [ "$PERF_OK" = 1 ]; then
    PROFILE_CASES=("openai|gw-openai|0" "openai-stream|gw-openai|1")
    [ "$ANTHROPIC" = 1 ] && PROFILE_CASES+=("anthropic|gw-anthropic|0" "anthropic-stream|gw-anthropic|1")
    for c in "${PROFILE_CASES[@]}"; do
        IFS='|' read -r pname ptarget pstream <<<"$c"
        extra=()
        [ "$pstream" = 1 ] && extra=(--header "x-mock-fault: chunks=$STREAM_CHUNKS")
        log "profile / $pname"
        run_case "profile-$pname" "$ptarget" small "$pstream" closed --concurrency "$CONCURRENCY" \
            --warmup 1 --duration 8 --timeout 10 "${extra[@]}" &
        client_job=$!
        sleep 2
        timeout 30 perf record -e cpu-clock -F 4000 -p "$GW_PID" -o "$TMP/perf-$pname.data" \
            -- sleep 5 >/dev/null 2>&1 || true
        wait "$client_job" || true
        perf report -i "$TMP/perf-$pname.data" --no-children --stdio --sort dso,symbol \
            --percent-limit 0.3 2>/dev/null | grep -v '^#' | grep -v '^$' | head -80 \
            >"$OUT/profile-$pname.txt" || true
    done
fi

if wants bench; then group_bench; fi

# ------------------------------------------------------------------------------------------
# Facts, then the report.
ENDED_AT="$(date +%s)"
GIT_REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
GIT_DIRTY=0
[ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] && GIT_DIRTY=1
if [ -z "$LABEL" ]; then
    LABEL="$GIT_REV"
    [ "$GIT_DIRTY" = 0 ] || LABEL="$LABEL+dirty"
fi
cat >"$OUT/facts.json" <<EOF
{
  "label": "$LABEL",
  "date_utc": "$STAMP",
  "git_rev": "$GIT_REV",
  "git_dirty": $([ "$GIT_DIRTY" = 1 ] && echo true || echo false),
  "quick": $([ "$QUICK" = 1 ] && echo true || echo false),
  "cpu_model": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)",
  "nproc": $NPROC,
  "mem_total_kib": $(awk '/MemTotal/ {print $2}' /proc/meminfo),
  "kernel": "$(uname -r)",
  "os": "$(grep -m1 '^PRETTY_NAME=' /etc/os-release | cut -d= -f2 | tr -d '"')",
  "rustc": "$(rustc --version)",
  "nginx": "$("$NGINX" -v 2>&1 | cut -d/ -f2)",
  "sched": "$SCHED",
  "gw_cpu": $GW_CPU,
  "load_cpu": $LOAD_CPU,
  "nofile": "$NOFILE",
  "anthropic": $([ "$ANTHROPIC" = 1 ] && echo true || echo false),
  "concurrency": $CONCURRENCY,
  "rate": $RATE,
  "window_s": $WINDOW,
  "warmup_s": $WARMUP,
  "stream_chunks": $STREAM_CHUNKS,
  "paced_chunks": $PACED_CHUNKS,
  "paced_rate": $PACED_RATE,
  "paced_delay_ms": $PACED_DELAY_MS,
  "hold": $HOLD,
  "hold_wanted": $HOLD_WANTED,
  "hold_chunks": $HOLD_CHUNKS,
  "hold_delay_ms": $HOLD_DELAY_MS,
  "gw_idle_rss_kib": $GW_IDLE_RSS,
  "gw_idle_rss_after_load_kib": $GW_IDLE_RSS_AFTER,
  "gw_rss_end_kib": $GW_RSS_END,
  "gw_rss_settled_kib": $GW_RSS_SETTLED,
  "stream_memory_test": $STREAM_MEMORY_TEST,
  "nginx_idle_rss_kib": $NGX_IDLE_RSS,
  "mock_idle_rss_kib": $MOCK_IDLE_RSS,
  "duration_s": $((ENDED_AT - STARTED_AT)),
  "perf": $([ "$PERF_OK" = 1 ] && echo true || echo false),
  "wrk": $([ "$WRK_CHECK" = 1 ] && echo true || echo false),
  "groups": "$ONLY",
  "xc": $([ "$XC" = 1 ] && echo true || echo false),
  "xc_chunks": $XC_CHUNKS,
  "xc_paced_delay_ms": $XC_PACED_DELAY_MS,
  "xc_window_s": $XC_WINDOW,
  "xc_warmup_s": $XC_WARMUP,
  "xc_gw_idle_rss_kib": $XC_GW_IDLE_RSS
}
EOF
cp "$TMP/deck.yaml" "$TMP/settings.toml" "$OUT/"
cp "$TMP/nginx/nginx.conf" "$OUT/nginx.conf"
python3 "$LT/report.py" "$OUT"
log "done in $((ENDED_AT - STARTED_AT)) s: loadtest/RESULTS.md, loadtest/results.json (raw: ${OUT#"$ROOT"/})"
