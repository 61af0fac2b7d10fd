#!/usr/bin/env bash
# bench/ab.sh: A/B throughput of two gateway builds (or two keys) against one nginx upstream, with many
# short alternating runs, because on this shared 2-core VM one run's throughput moves by a fifth from the
# next (bench/README.md). Both gateways start once and stay up; each pair runs A then B, the next pair B
# then A, so drift over the session falls on both sides equally.
#
#   A_DIR=/tmp/core-target/release A_AUTH=master B_DIR=target/release B_AUTH=virtual bench/ab.sh
#
# Environment (defaults in brackets)
#   A_DIR, B_DIR      folders holding the `llm` binary                 [target/release]
#   A_AUTH, B_AUTH    master | virtual (a key in a team, with a budget, rpm/tpm and model limits,
#                     set high enough never to refuse, as bench/run.sh makes it)   [master, virtual]
#   A_DB, B_DB        general_settings.database_url of each side, e.g. sqlite:///dev/shm/b.db or
#                     postgresql://postgres@127.0.0.1:5432/test     [SQLite llm.db beside the config]
#   A_REDIS, B_REDIS  general_settings.redis_url of each side, e.g. redis://127.0.0.1:6379   [none]
#   PAIRS             A/B pairs                                         [10]
#   CONCURRENCY       wrk connections                                   [64]
#   DURATION, WARMUP  measured run and unmeasured warm-up before each   [5s, 1s]
#   GATEWAY_WORKERS   --num_workers of both gateways                    [nproc]
#   A_ENV, B_ENV      environment of each gateway, e.g. "RUST_LOG=warn"   []
#   PIN               1: gateways on CPU 1, nginx and wrk on CPU 0 (use with GATEWAY_WORKERS=1: the
#                     gateway's CPU per request then comes with less noise from the load generator)
#   THREAD_CPU        1: also print each side's CPU per request by thread name (summed over all pairs),
#                     and the whole machine's busy CPU per request ("machine": wrk, nginx and the
#                     kernel's own threads, e.g. writing the database file back, included)
#
# Prints every pair and then means, medians and the median of the per-pair ratios B/A. Needs nginx, wrk,
# curl, python3 (installed with apt-get when missing). Everything binds 127.0.0.1 and stops by itself.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
A_DIR="${A_DIR:-$ROOT/target/release}"
B_DIR="${B_DIR:-$ROOT/target/release}"
A_AUTH="${A_AUTH:-master}"
B_AUTH="${B_AUTH:-virtual}"
PAIRS="${PAIRS:-10}"
CONCURRENCY="${CONCURRENCY:-64}"
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-1s}"
GATEWAY_WORKERS="${GATEWAY_WORKERS:-$(nproc)}"
THREAD_CPU="${THREAD_CPU:-}"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for side in A B; do
    dir="${side}_DIR" auth="${side}_AUTH"
    [[ -x "${!dir}/llm" ]] || die "${!dir}/llm not found (cargo build --release --bins)"
    [[ "${!auth}" == master || "${!auth}" == virtual ]] || die "$auth must be master or virtual"
done
[[ "$PAIRS" =~ ^[1-9][0-9]*$ ]] || die "PAIRS must be a positive integer"
PIN_LOAD=() PIN_GW=()
if [[ -n "${PIN:-}" ]]; then
    command -v taskset >/dev/null || die "PIN needs taskset (util-linux)"
    PIN_LOAD=(taskset -c 0) PIN_GW=(taskset -c 1)
fi
need wrk
need nginx
need curl
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

TMP="$(mktemp -d /tmp/llm-ab.XXXXXX)"
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
${PIN_LOAD[@]+"${PIN_LOAD[@]}"} "$NGINX" -p "$TMP" -e "$TMP/error.log" -c "$TMP/nginx.conf" &
PIDS+=("$!")
wait_up "127.0.0.1:$UP/"

declare -A URL KEY PID
for side in A B; do
    dir="${side}_DIR" auth="${side}_AUTH" db="${side}_DB" envs="${side}_ENV" redis="${side}_REDIS"
    port="$(free_port)"
    mkdir -p "$TMP/$side"
    bench_config "$TMP/$side/config.yaml" "http://127.0.0.1:$UP/v1" "${!db:-}" "${!redis:-}"
    # shellcheck disable=SC2086 # A_ENV / B_ENV are lists of NAME=value words
    env ${!envs:-} ${PIN_GW[@]+"${PIN_GW[@]}"} "${!dir}/llm" --config "$TMP/$side/config.yaml" \
        --host 127.0.0.1 --port "$port" \
        --num_workers "$GATEWAY_WORKERS" >"$TMP/$side/log" 2>&1 &
    PID[$side]="$!"
    PIDS+=("$!")
    URL[$side]="http://127.0.0.1:$port"
    wait_up "${URL[$side]}/health/liveliness"
    KEY[$side]="$BENCH_MASTER_KEY"
    if [[ "${!auth}" == virtual ]]; then
        KEY[$side]="$(bench_virtual_key "${URL[$side]}")"
        [[ "${KEY[$side]}" == sk-* ]] || die "could not create the virtual key on $side"
    fi
    code="$(curl -s -o "$TMP/$side/smoke" -w '%{http_code}' -H "Authorization: Bearer ${KEY[$side]}" \
        -H 'Content-Type: application/json' -d "$BENCH_BODY" "${URL[$side]}/v1/chat/completions")"
    [[ "$code" == 200 ]] || die "$side answered $code: $(cat "$TMP/$side/smoke")"
    bench_wrk_script "$TMP/$side/post.lua" "${KEY[$side]}"
done


# Busy CPU ticks of the whole machine (every process and kernel thread: wrk, nginx, writeback...).
machine() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }

run() {
    local side="$1" out="$TMP/wrk.txt" rps n
    ${PIN_LOAD[@]+"${PIN_LOAD[@]}"} wrk -t1 -c"$CONCURRENCY" -d"$WARMUP" -s "$TMP/$side/post.lua" "${URL[$side]}/v1/chat/completions" >/dev/null
    [[ -n "$THREAD_CPU" ]] && bench_thread_ticks "${PID[$side]}" >"$TMP/$side/t0" && machine >"$TMP/$side/m0"
    ${PIN_LOAD[@]+"${PIN_LOAD[@]}"} wrk -t1 -c"$CONCURRENCY" -d"$DURATION" -s "$TMP/$side/post.lua" "${URL[$side]}/v1/chat/completions" >"$out"
    if [[ -n "$THREAD_CPU" ]]; then
        bench_thread_ticks "${PID[$side]}" >"$TMP/$side/t1"
        machine >"$TMP/$side/m1"
        paste "$TMP/$side/m0" "$TMP/$side/m1" | awk -v hz="$(getconf CLK_TCK)" '{ print "machine", ($2 - $1) / hz, 0 }' >>"$TMP/$side/cpu"
        awk -v hz="$(getconf CLK_TCK)" 'NR == FNR { u[$1] = $2; s[$1] = $3; next } { print $1, ($2 - u[$1]) / hz, ($3 - s[$1]) / hz }' \
            "$TMP/$side/t0" "$TMP/$side/t1" >>"$TMP/$side/cpu"
        awk '/requests in/ { print $1 }' "$out" >>"$TMP/$side/reqs"
        # This run's CPU per request: all the gateway's threads, and the whole machine.
        n="$(awk '/requests in/ { print $1 }' "$out")"
        awk -v n="$n" -v side="$side" -v hz="$(getconf CLK_TCK)" 'NR == FNR { t0[$1] = $2 + $3; next }
            { t += $2 + $3 - t0[$1] } END { printf "%s gateway %.2f\n", side, t / hz * 1e6 / n }' \
            "$TMP/$side/t0" "$TMP/$side/t1" >>"$TMP/runs"
        paste "$TMP/$side/m0" "$TMP/$side/m1" | awk -v n="$n" -v side="$side" -v hz="$(getconf CLK_TCK)" \
            '{ printf "%s machine %.2f\n", side, ($2 - $1) / hz * 1e6 / n }' >>"$TMP/runs"
    fi
    grep -q "Non-2xx" "$out" && die "$side: non-2xx answers: $(cat "$out")"
    rps="$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")"
    echo "$rps"
}

echo "A: ${A_DIR}/llm, ${A_AUTH} key; B: ${B_DIR}/llm, ${B_AUTH} key; ${GATEWAY_WORKERS} workers, c=$CONCURRENCY," \
    "$PAIRS pairs of $DURATION after $WARMUP warm-ups"
echo "| pair | A req/s | B req/s | B/A |"
echo "| ---: | ---: | ---: | ---: |"
: >"$TMP/pairs"
for ((i = 1; i <= PAIRS; i++)); do
    if ((i % 2)); then
        a="$(run A)"
        b="$(run B)"
    else
        b="$(run B)"
        a="$(run A)"
    fi
    echo "$a $b" >>"$TMP/pairs"
    awk -v i="$i" -v a="$a" -v b="$b" 'BEGIN { printf "| %d | %d | %d | %+.1f%% |\n", i, a, b, 100 * (b / a - 1) }'
done
python3 - "$TMP/pairs" <<'PY'
import statistics, sys
pairs = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
a = [p[0] for p in pairs]
b = [p[1] for p in pairs]
r = [y / x - 1 for x, y in pairs]
print(f"| mean | {statistics.mean(a):.0f} | {statistics.mean(b):.0f} | {100 * (statistics.mean(b) / statistics.mean(a) - 1):+.1f}% |")
print(f"| median | {statistics.median(a):.0f} | {statistics.median(b):.0f} | {100 * (statistics.median(b) / statistics.median(a) - 1):+.1f}% |")
print(f"\nmedian of the per-pair ratios B/A: {100 * statistics.median(r):+.1f}% (pairs from {100 * min(r):+.1f}% to {100 * max(r):+.1f}%)")
PY
if [[ -n "$THREAD_CPU" ]]; then
    echo "CPU per request, run by run (us; mean, median, standard deviation, then each run):"
    python3 - "$TMP/runs" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    side, what, us = line.split()
    runs[(side, what)].append(float(us))
for (side, what), v in sorted(runs.items()):
    print(f"  {side} {what:8} {statistics.mean(v):6.2f} {statistics.median(v):6.2f} {statistics.pstdev(v):5.2f}  "
          + " ".join(f"{x:.1f}" for x in v))
PY
    for side in A B; do
        echo "CPU per request by thread, $side:"
        n="$(awk '{ s += $1 } END { print s }' "$TMP/$side/reqs")"
        awk -v n="$n" '{ u[$1] += $2; s[$1] += $3; if ($1 != "machine") { tu += $2; ts += $3 } }
            END {
                for (k in u) if (k == "machine") printf "  %-22s %6.2f us (busy CPU of all processes)\n", k, u[k] * 1e6 / n
                for (k in u) if (k != "machine" && u[k] + s[k] > 0) printf "  %-22s %6.2f us (user %.2f, system %.2f)\n", k, (u[k] + s[k]) * 1e6 / n, u[k] * 1e6 / n, s[k] * 1e6 / n
                printf "  %-22s %6.2f us (user %.2f, system %.2f)\n", "all threads", (tu + ts) * 1e6 / n, tu * 1e6 / n, ts * 1e6 / n
            }' "$TMP/$side/cpu" | sort
    done
fi
