#!/usr/bin/env bash
# bench/replicas.sh: throughput of N gateway replicas (one worker each) sharing one PostgreSQL database and
# one Redis, in front of one nginx upstream, with one virtual key carrying a budget and rpm/tpm limits (set
# high enough never to refuse: every request goes through the shared leases). One wrk per replica, all at
# once; requests/s summed. Then the same with one replica, for comparison.
#
#   bench/replicas.sh
#
# Environment (defaults in brackets)
#   REPLICAS        replicas                                          [3]
#   CONCURRENCY     wrk connections in all (split over the replicas)  [64]
#   DURATION        measured run after a 2 s warm-up                  [10s]
#   ROUNDS          rounds of (N replicas, 1 replica)                 [2]
#   PG_ADMIN_URL    a PostgreSQL database to create the bench database from
#                   [postgresql://postgres@127.0.0.1:5432/postgres]
#   REDIS_URL       [redis://127.0.0.1:6379]
#
# Needs nginx, wrk, curl, psql, python3, a release build (cargo build --release --bins). Everything binds
# 127.0.0.1 and stops by itself.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPLICAS="${REPLICAS:-3}"
CONCURRENCY="${CONCURRENCY:-64}"
DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-2}"
PG_ADMIN_URL="${PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
BIN="${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/llm}"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

[[ -x "$BIN" ]] || die "$BIN not found (cargo build --release --bins)"
need wrk
need nginx
need curl
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

TMP="$(mktemp -d /tmp/llm-replicas.XXXXXX)"
DB="llm_bench_replicas_$$"
PIDS=()
cleanup() {
    for p in ${PIDS[@]+"${PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE $DB" >/dev/null
DB_URL="${PG_ADMIN_URL%/*}/$DB"
UP="$(free_port)"
sed -e "s|@PREFIX@|$TMP|g" -e "s|@PORT@|$UP|g" "$ROOT/bench/nginx.conf" >"$TMP/nginx.conf"
"$NGINX" -p "$TMP" -e "$TMP/error.log" -c "$TMP/nginx.conf" &
PIDS+=("$!")
wait_up "127.0.0.1:$UP/"

bench_config "$TMP/config.yaml" "http://127.0.0.1:$UP/v1" "$DB_URL" "$REDIS_URL"
URLS=()
for ((i = 0; i < REPLICAS; i++)); do
    port="$(free_port)"
    "$BIN" --config "$TMP/config.yaml" --host 127.0.0.1 --port "$port" --num_workers 1 >"$TMP/log.$i" 2>&1 &
    PIDS+=("$!")
    URLS+=("http://127.0.0.1:$port")
    wait_up "http://127.0.0.1:$port/health/liveliness"
done
KEY="$(bench_virtual_key "${URLS[0]}")"
[[ "$KEY" == sk-* ]] || die "could not create the virtual key"
bench_wrk_script "$TMP/post.lua" "$KEY"
# The first answers that are not 200, on wrk's output (shown when a run fails).
cat >>"$TMP/post.lua" <<'LUA'
local shown = 0
response = function(status, headers, body)
  if status ~= 200 and shown < 3 then
    shown = shown + 1
    print(status, body)
  end
end
LUA
for u in "${URLS[@]}"; do
    code="$(curl -s -o "$TMP/smoke" -w '%{http_code}' -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' -d "$BENCH_BODY" "$u/v1/chat/completions")"
    [[ "$code" == 200 ]] || die "$u answered $code: $(cat "$TMP/smoke")"
done

# run N: N wrk at once, one per replica, CONCURRENCY / N connections each; prints the summed req/s.
run() {
    local n="$1" c=$((CONCURRENCY / $1)) i
    for ((i = 0; i < n; i++)); do
        wrk -t1 -c"$c" -d2s -s "$TMP/post.lua" "${URLS[$i]}/v1/chat/completions" >/dev/null &
    done
    wait_wrk
    for ((i = 0; i < n; i++)); do
        wrk -t1 -c"$c" -d"$DURATION" -s "$TMP/post.lua" "${URLS[$i]}/v1/chat/completions" >"$TMP/wrk.$i" &
    done
    wait_wrk
    for ((i = 0; i < n; i++)); do
        grep -q "Non-2xx" "$TMP/wrk.$i" && die "replica $i: non-2xx answers: $(cat "$TMP/wrk.$i")
one answer now: $(curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
            -d "$BENCH_BODY" "${URLS[$i]}/v1/chat/completions")"
    done
    for ((i = 0; i < n; i++)); do awk '/^Requests\/sec:/ { print $2 }' "$TMP/wrk.$i"; done |
        awk '{ s += $1 } END { printf "%.0f", s }'
}
# Waits for the wrk processes started by run (not nginx or the gateways).
wait_wrk() {
    local p
    for p in $(jobs -p); do
        if ps -o comm= -p "$p" 2>/dev/null | grep -q '^wrk$'; then wait "$p"; fi
    done
}

echo "$REPLICAS replicas (1 worker each) on PostgreSQL + Redis, virtual key with budget and rpm/tpm limits, c=$CONCURRENCY in all"
echo "| round | $REPLICAS replicas req/s | 1 replica req/s |"
echo "| ---: | ---: | ---: |"
for ((r = 1; r <= ROUNDS; r++)); do
    many="$(run "$REPLICAS")"
    one="$(run 1)"
    echo "| $r | $many | $one |"
done
