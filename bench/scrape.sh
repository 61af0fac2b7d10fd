#!/usr/bin/env bash
# bench/scrape.sh: what a Prometheus scrape costs the requests (issue 16). One gateway, nginx upstream, a
# body whose `user` (end user) rotates over USERS values, so the gateway holds about USERS x 9 request series
# (plus the histograms' buckets). Runs alternate without and with a scraper that fetches /metrics (gzip, as
# Prometheus asks) in a loop, so the machine's drift falls on both sides; each reports throughput and the
# requests' p99 latency (wrk --latency). Then the scrapes' duration and size, the gateway's RSS and peak RSS,
# and, from a second gateway that sees no end user, its peak RSS under the same load.
#
#   bench/scrape.sh                      # USERS=5000 PAIRS=3 CONCURRENCY=64 DURATION=10s
#
# Environment: GW_DIR (folder with the `llm` binary) [target/release], USERS, PAIRS, CONCURRENCY, DURATION.
# Needs nginx, wrk, curl, python3. Everything binds 127.0.0.1 and stops by itself.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GW_DIR="${GW_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
USERS="${USERS:-5000}"
PAIRS="${PAIRS:-3}"
CONCURRENCY="${CONCURRENCY:-64}"
DURATION="${DURATION:-10s}"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
[[ -x "$GW_DIR/llm" ]] || die "$GW_DIR/llm not found (cargo build --release --bins)"
need wrk
need nginx
need curl
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

TMP="$(mktemp -d /tmp/llm-scrape.XXXXXX)"
PIDS=()
cleanup() {
    for p in ${PIDS[@]+"${PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

UP="$(free_port)"
sed -e "s|@PREFIX@|$TMP|g" -e "s|@PORT@|$UP|g" "$ROOT/bench/nginx.conf" >"$TMP/nginx.conf"
"$NGINX" -p "$TMP" -e "$TMP/error.log" -c "$TMP/nginx.conf" &
PIDS+=("$!")
wait_up "127.0.0.1:$UP/"

# start_gateway NAME: a gateway on a free port; sets GW_URL and GW_PID.
start_gateway() {
    local port
    port="$(free_port)"
    mkdir -p "$TMP/$1"
    bench_config "$TMP/$1/config.yaml" "http://127.0.0.1:$UP/v1"
    python3 - "$TMP/$1/config.yaml" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read().replace('callbacks: ["prometheus"]\n', 'callbacks: ["prometheus"]\n  prometheus_end_user_metrics_max_series_per_metric: 1000000\n')
open(p, "w").write(s)
PY
    "$GW_DIR/llm" --config "$TMP/$1/config.yaml" --host 127.0.0.1 --port "$port" >"$TMP/$1/log" 2>&1 &
    GW_PID="$!"
    PIDS+=("$!")
    GW_URL="http://127.0.0.1:$port"
    wait_up "$GW_URL/health/liveliness"
}

# wrk scripts: one rotating the end user over USERS values, one without an end user.
cat >"$TMP/users.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $BENCH_MASTER_KEY"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"model":"bench-model","user":"customer-' .. (n % $USERS) .. '","messages":[{"role":"user","content":"Say hello"}]}')
end
LUA
bench_wrk_script "$TMP/plain.lua" "$BENCH_MASTER_KEY"

rss() { awk -v k="$2" '$1 == k":" { printf "%.1f MiB", $2 / 1024 }' "/proc/$1/status"; }

start_gateway users
echo "populating: $USERS end users"
wrk -t1 -c"$CONCURRENCY" -d5s -s "$TMP/users.lua" "$GW_URL/v1/chat/completions" >/dev/null
SERIES="$(curl -s "$GW_URL/metrics" | grep -c '_total{\|_count{\|^llm_[a-z_]*{' || true)"
echo "series (counters, gauges, histograms) and created samples in the exposition: $SERIES"

scraper() {
    while :; do
        curl -s -o /dev/null -H 'Accept-Encoding: gzip' -w '%{time_total} %{size_download}\n' "$GW_URL/metrics" >>"$TMP/scrapes"
    done
}

# run WITH_SCRAPER: prints "req/s p99"
run() {
    local out="$TMP/wrk.txt" sp=""
    if [[ "$1" == 1 ]]; then
        scraper &
        sp="$!"
    fi
    wrk -t1 -c"$CONCURRENCY" -d"$DURATION" --latency -s "$TMP/users.lua" "$GW_URL/v1/chat/completions" >"$out"
    if [[ -n "$sp" ]]; then
        kill "$sp" 2>/dev/null || true
        wait "$sp" 2>/dev/null || true
    fi
    grep -q "Non-2xx" "$out" && die "non-2xx answers: $(cat "$out")"
    awk '/^Requests\/sec:/ { r = $2 } $1 == "99%" { p = $2 } END { printf "%.0f %s\n", r, p }' "$out"
}

echo "| pair | without scraper: req/s, p99 | with scraper: req/s, p99 |"
echo "| ---: | --- | --- |"
: >"$TMP/scrapes"
for ((i = 1; i <= PAIRS; i++)); do
    if ((i % 2)); then
        a="$(run 0)"
        b="$(run 1)"
    else
        b="$(run 1)"
        a="$(run 0)"
    fi
    echo "| $i | $a | $b |"
done
awk '{ t[NR] = $1; b += $2 } END { n = asort(t); printf "scrapes during the runs: %d, median %.0f ms, max %.0f ms, %.1f MB gzipped each\n", n, t[int((n + 1) / 2)] * 1000, t[n] * 1000, b / n / 1e6 }' "$TMP/scrapes"
echo "gateway with $USERS end users: RSS $(rss "$GW_PID" VmRSS), peak $(rss "$GW_PID" VmHWM)"
kill "$GW_PID"

start_gateway plain
wrk -t1 -c"$CONCURRENCY" -d"$DURATION" -s "$TMP/plain.lua" "$GW_URL/v1/chat/completions" >"$TMP/plain.txt"
echo "gateway without end users, after $DURATION at c=$CONCURRENCY ($(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$TMP/plain.txt") req/s): RSS $(rss "$GW_PID" VmRSS), peak $(rss "$GW_PID" VmHWM)"
