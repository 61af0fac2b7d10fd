#!/usr/bin/env bash
# bench/callgrind.sh: instructions the gateway process executes per request, counted by callgrind, which is
# repeatable where wall-clock numbers on this shared 2-core machine are not (see bench/README.md).
#
#   bench/callgrind.sh [BIN] [master|virtual]
#
# Starts nginx (bench/nginx.conf) as the upstream and BIN (default target/release/llm) under callgrind
# with one worker, sends 500 and then, in a second run, 2500 sequential chat requests over one keep-alive
# connection (the master key, or a virtual key with a budget and limits), and prints
# (Ir(2500) - Ir(500)) / 2000: the per-request cost with start-up and shutdown cancelled out.
# Needs valgrind, nginx, curl, python3. Everything binds 127.0.0.1 and stops by itself.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BIN="$(realpath "${1:-$ROOT/target/release/llm}")"
MODE="${2:-virtual}"
command -v valgrind >/dev/null || { apt-get install -y valgrind >/dev/null || { apt-get update >/dev/null && apt-get install -y valgrind >/dev/null; }; }
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || apt-get install -y nginx >/dev/null
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
TMP="$(mktemp -d /tmp/llm-callgrind.XXXXXX)"
PIDS=()
cleanup() { for p in ${PIDS[@]+"${PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

UP="$(free_port)"
sed -e "s|@PREFIX@|$TMP|g" -e "s|@PORT@|$UP|g" "$ROOT/bench/nginx.conf" >"$TMP/nginx.conf"
"$NGINX" -p "$TMP" -e "$TMP/error.log" -c "$TMP/nginx.conf" &
PIDS+=("$!")
cat >"$TMP/load.py" <<'PY'
import http.client, json, sys
port, n, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "Say hello"}]})
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json", "Authorization": "Bearer " + key})
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
PY

run() {
    local n="$1" port dir key pid
    port="$(free_port)"
    dir="$TMP/run-$n"
    mkdir -p "$dir"
    bench_config "$dir/config.yaml" "http://127.0.0.1:$UP/v1"
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$BIN" --config "$dir/config.yaml" \
        --host 127.0.0.1 --port "$port" --num_workers 1 >/dev/null 2>"$dir/valgrind.log" &
    pid="$!"
    for _ in $(seq 1 200); do curl -s -o /dev/null "127.0.0.1:$port/health/liveliness" && break; sleep 0.2; done
    key="$BENCH_MASTER_KEY"
    if [[ "$MODE" == virtual ]]; then
        key="$(bench_virtual_key "http://127.0.0.1:$port")"
    fi
    python3 "$TMP/load.py" "$port" "$n" "$key"
    sleep 1
    kill -TERM "$pid"
    wait "$pid" || true
    awk '/^summary:/ { s += $2 } END { print s }' "$dir"/cg.out*
}
a="$(run 500)"
b="$(run 2500)"
echo "$(basename "$BIN") ($MODE key): $(( (b - a) / 2000 )) instructions per request (Ir: $a for 500, $b for 2500)"
