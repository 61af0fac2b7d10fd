#!/usr/bin/env bash
# bench/run.sh: throughput and latency of the `llm` gateway against calling its upstream directly.
#
# What it does
#   1. Starts an upstream on 127.0.0.1: nginx (default) answering POST /v1/chat/completions with a
#      fixed OpenAI chat completion (bench/nginx.conf, 1 worker, keep-alive on, access log off), or
#      the `llm-mock` binary with UPSTREAM=mock.
#   2. Starts the gateway (`llm`) with Prometheus metrics on and a master key, its one model pointing
#      at that upstream, and checks that one request through it answers 200 with a usage block.
#   3. For each concurrency, runs wrk against the upstream ("direct") and against the gateway,
#      alternating direct, gateway, direct, gateway... ROUNDS times so machine drift cancels out, each
#      run preceded by a WARMUP run at the same concurrency. Every run sends the same request.
#   3b. When `examples/passthrough` is built (`cargo build --release --example passthrough`), also runs
#      it ("bare"): an actix-web + awc proxy that forwards bodies with no parsing, auth or metrics. It
#      tells what actix-web + awc cost on this machine, apart from what the gateway does.
#   4. Prints a markdown table (means over rounds) and the gateway's request counter from /metrics.
#      Raw wrk outputs go to bench/results/<timestamp>-<upstream>.txt (gitignored).
#
# Prerequisite: `cargo build --release --bins` (this script never runs cargo). nginx and wrk are
# installed with apt-get when missing.
#
# Environment (defaults in brackets)
#   UPSTREAM         nginx | mock                                   [nginx]
#   CONCURRENCY      space-separated wrk connection counts           [1 8 64]
#   DURATION         measured wrk run length                         [10s]
#   WARMUP           unmeasured wrk run before every measured run    [2s]
#   ROUNDS           direct/gateway pairs per concurrency            [2]
#   GATEWAY_WORKERS  gateway --num_workers              [nproc, the gateway's own default]
#                    On a 2-core machine the cores are shared by the gateway, the upstream (1 nginx
#                    worker) and wrk (1 thread); GATEWAY_WORKERS=1 compares like for like with the
#                    one-worker bare pass-through.
#   AUTH             virtual | master: the key wrk sends to the gateway    [virtual]
#                    virtual: a key made with /key/generate, in a team, with a max budget, rpm/tpm
#                    limits and model-specific limits (set high enough never to refuse), so every
#                    request goes through auth, budget checks, limit windows and spend settlement.
#   MOCK_WORKERS     llm-mock --workers with UPSTREAM=mock           [1]
#   LLM_BIN_DIR      where `llm` and `llm-mock` are      [$CARGO_TARGET_DIR/release, else target/release]
#   THREAD_CPU       1: after each gateway run, print the CPU time each gateway thread (grouped by
#                    thread name) used per request, from /proc/PID/task/*/stat: where the gateway's
#                    share of the two cores goes under load (callgrind's sequential runs cannot show it)
#   GATEWAY_URL      TESTING ONLY: do not start `llm`; use this base URL (http://127.0.0.1:PORT) as
#                    "the gateway", or the word `direct` for the upstream this script started, to test
#                    the script without a build (e.g. GATEWAY_URL=direct DURATION=3s bench/run.sh).
#                    The ratio is then ~100% and the /metrics step is skipped.
#
# Defaults take about 2.5 minutes: 3 concurrencies x 2 rounds x 2 targets x (10 s + 2 s warm-up).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

UPSTREAM="${UPSTREAM:-nginx}"
CONCURRENCY="${CONCURRENCY:-1 8 64}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
ROUNDS="${ROUNDS:-2}"
GATEWAY_WORKERS="${GATEWAY_WORKERS:-$(nproc)}"
MOCK_WORKERS="${MOCK_WORKERS:-1}"
AUTH="${AUTH:-virtual}"
GATEWAY_URL="${GATEWAY_URL:-}"
if [[ -n "${LLM_BIN_DIR:-}" ]]; then
    BIN_DIR="$LLM_BIN_DIR"
elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    BIN_DIR="$CARGO_TARGET_DIR/release"
else
    BIN_DIR="target/release"
fi

# shellcheck source=bench/lib.sh
source bench/lib.sh
MASTER_KEY="$BENCH_MASTER_KEY"
BODY="$BENCH_BODY"

log() { printf '%s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

case "$UPSTREAM" in
    nginx | mock) ;;
    *) die "UPSTREAM must be nginx or mock, not '$UPSTREAM'" ;;
esac
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ "$GATEWAY_WORKERS" =~ ^[1-9][0-9]*$ ]] || die "GATEWAY_WORKERS must be a positive integer"
for c in $CONCURRENCY; do
    [[ "$c" =~ ^[1-9][0-9]*$ ]] || die "CONCURRENCY entries must be positive integers, not '$c'"
done

# ---------------------------------------------------------------------------------------- tools

apt_install() {
    local sudo=()
    if [[ "$(id -u)" -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root or sudo to apt-get install $*"
        sudo=(sudo)
    fi
    log "installing $* with apt-get"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >&2; then
        "${sudo[@]}" apt-get update >&2
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >&2
    fi
}

find_nginx() {
    if command -v nginx >/dev/null; then
        command -v nginx
    elif [[ -x /usr/sbin/nginx ]]; then
        echo /usr/sbin/nginx
    fi
}

command -v wrk >/dev/null || apt_install wrk
command -v curl >/dev/null || apt_install curl
command -v python3 >/dev/null || die "python3 is needed to find free ports"
NGINX=""
if [[ "$UPSTREAM" == nginx ]]; then
    NGINX="$(find_nginx)"
    if [[ -z "$NGINX" ]]; then
        apt_install nginx
        NGINX="$(find_nginx)"
        [[ -n "$NGINX" ]] || die "nginx still not found after apt-get install"
    fi
fi

if [[ -z "$GATEWAY_URL" && ! -x "$BIN_DIR/llm" ]]; then
    die "$BIN_DIR/llm not found: run \`cargo build --release --bins\` first (or set LLM_BIN_DIR)"
fi
if [[ "$UPSTREAM" == mock && ! -x "$BIN_DIR/llm-mock" ]]; then
    die "$BIN_DIR/llm-mock not found: run \`cargo build --release --bins\` first (or set LLM_BIN_DIR)"
fi

# ------------------------------------------------------------------------------ processes, cleanup

TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/llm-bench.XXXXXX")"
PIDS=()
WRK_PID=""

stop_pid() {
    local pid="$1" i
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    if [[ -n "$WRK_PID" ]]; then stop_pid "$WRK_PID"; fi
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        stop_pid "$pid"
    done
    rm -rf "$TMP_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Waits until URL answers any HTTP status, while process PID is alive; else prints LOGFILE and fails.
wait_http() {
    local name="$1" url="$2" pid="$3" logfile="$4" i
    for ((i = 0; i < 150; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited during startup; its log ($logfile):"
            cat "$logfile" >&2 || true
            die "$name did not start"
        fi
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)" != 000 ]]; then
            return 0
        fi
        sleep 0.1
    done
    log "$name log ($logfile):"
    cat "$logfile" >&2 || true
    die "$name did not answer $url within 15 s"
}

# ------------------------------------------------------------------------------------ upstream

if [[ "$UPSTREAM" == nginx ]]; then
    NGINX_PORT="$(free_port)"
    sed -e "s|@PREFIX@|$TMP_DIR|g" -e "s|@PORT@|$NGINX_PORT|g" bench/nginx.conf >"$TMP_DIR/nginx.conf"
    "$NGINX" -p "$TMP_DIR" -e "$TMP_DIR/error.log" -c "$TMP_DIR/nginx.conf" \
        >"$TMP_DIR/nginx.out" 2>&1 &
    PIDS+=("$!")
    wait_http nginx "http://127.0.0.1:$NGINX_PORT/" "$!" "$TMP_DIR/nginx.out"
    DIRECT_URL="http://127.0.0.1:$NGINX_PORT"
    UPSTREAM_DESC="nginx $("$NGINX" -v 2>&1 | sed 's|.*nginx/||'), 1 worker"
else
    "$BIN_DIR/llm-mock" --host 127.0.0.1 --port 0 --workers "$MOCK_WORKERS" \
        >"$TMP_DIR/mock.out" 2>"$TMP_DIR/mock.err" &
    MOCK_PID="$!"
    PIDS+=("$MOCK_PID")
    MOCK_PORT=""
    for ((i = 0; i < 150; i++)); do
        MOCK_PORT="$(awk '$1 == "LISTENING" { print $2; exit }' "$TMP_DIR/mock.out")"
        [[ -n "$MOCK_PORT" ]] && break
        kill -0 "$MOCK_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z "$MOCK_PORT" ]]; then
        cat "$TMP_DIR/mock.err" >&2 || true
        die "llm-mock did not print LISTENING <port>"
    fi
    DIRECT_URL="http://127.0.0.1:$MOCK_PORT"
    UPSTREAM_DESC="llm-mock, $MOCK_WORKERS worker(s)"
fi

# ------------------------------------------------------------------------------- bare pass-through

TARGETS="direct gateway"
BARE=""
if [[ -z "$GATEWAY_URL" && -x "$BIN_DIR/examples/passthrough" ]]; then
    BARE_PORT="$(free_port)"
    "$BIN_DIR/examples/passthrough" "$BARE_PORT" "$DIRECT_URL/v1/chat/completions" >"$TMP_DIR/bare.log" 2>&1 &
    PIDS+=("$!")
    wait_http bare "http://127.0.0.1:$BARE_PORT/" "$!" "$TMP_DIR/bare.log"
    BARE="http://127.0.0.1:$BARE_PORT"
    TARGETS="direct bare gateway"
fi

# ------------------------------------------------------------------------------------- gateway

GATEWAY_LOG="$TMP_DIR/gateway.log"
if [[ -z "$GATEWAY_URL" ]]; then
    GATEWAY_PORT="$(free_port)"
    bench_config "$TMP_DIR/config.yaml" "$DIRECT_URL/v1"
    "$BIN_DIR/llm" --config "$TMP_DIR/config.yaml" --host 127.0.0.1 --port "$GATEWAY_PORT" \
        --num_workers "$GATEWAY_WORKERS" >"$GATEWAY_LOG" 2>&1 &
    GATEWAY_PID="$!"
    PIDS+=("$!")
    wait_http gateway "http://127.0.0.1:$GATEWAY_PORT/health/liveliness" "$!" "$GATEWAY_LOG"
    GATEWAY="http://127.0.0.1:$GATEWAY_PORT"
    GATEWAY_DESC="llm, $GATEWAY_WORKERS worker(s)"
else
    if [[ "$GATEWAY_URL" == direct ]]; then GATEWAY="$DIRECT_URL"; else GATEWAY="${GATEWAY_URL%/}"; fi
    GATEWAY_DESC="GATEWAY_URL override $GATEWAY (testing only, not the llm gateway)"
    : >"$GATEWAY_LOG"
fi

# One request must answer 200 with a usage block, else show why and stop.
smoke() {
    local name="$1" url="$2" out="$TMP_DIR/smoke.$1.json" code
    code="$(curl -sS -o "$out" -w '%{http_code}' --max-time 10 -X POST \
        -H 'Content-Type: application/json' -H "Authorization: Bearer $BENCH_KEY" \
        -d "$BODY" "$url/v1/chat/completions" || true)"
    if [[ "$code" != 200 ]] || ! grep -Eq '"usage"[[:space:]]*:[[:space:]]*\{' "$out" \
        || ! grep -q '"total_tokens"' "$out"; then
        log "$name check failed: POST $url/v1/chat/completions answered HTTP $code, body:"
        cat "$out" >&2 2>/dev/null || true
        log ""
        if [[ "$name" == gateway && -z "$GATEWAY_URL" ]]; then
            log "gateway log ($GATEWAY_LOG):"
            cat "$GATEWAY_LOG" >&2 || true
        fi
        die "$name does not answer a chat completion with usage"
    fi
}
# The key the load uses: the master key, or a virtual key with a budget and limits.
BENCH_KEY="$MASTER_KEY"
if [[ "$AUTH" == virtual && -z "$GATEWAY_URL" ]]; then
    BENCH_KEY="$(bench_virtual_key "$GATEWAY")"
    [[ "$BENCH_KEY" == sk-* ]] || die "could not create the virtual key (gateway log: $GATEWAY_LOG)"
    GATEWAY_DESC="$GATEWAY_DESC, virtual key with budget and limits"
else
    GATEWAY_DESC="$GATEWAY_DESC, master key"
fi

smoke direct "$DIRECT_URL"
smoke gateway "$GATEWAY"

# ----------------------------------------------------------------------------------------- wrk

bench_wrk_script "$TMP_DIR/post.lua" "$BENCH_KEY"

# Prints "req_per_s p50_ms p99_ms errors requests" from one wrk --latency output.
parse_wrk() {
    awk '
        function ms(v,  n, u) {
            n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "us") return n / 1000
            if (u == "ms") return n
            if (u == "s") return n * 1000
            if (u == "m") return n * 60000
            if (u == "h") return n * 3600000
            return n
        }
        /Latency Distribution/ { dist = 1; next }
        dist && $1 == "50%" { p50 = ms($2) }
        dist && $1 == "99%" { p99 = ms($2); dist = 0 }
        /requests in/ { reqs = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { err += $NF }
        /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        END {
            if (rps == "" || p50 == "" || p99 == "") exit 1
            printf "%s %.4f %.4f %d %d\n", rps, p50, p99, err, reqs
        }' "$1"
}

STAMP="$(date +%Y%m%d-%H%M%S)"
mkdir -p bench/results
RESULTS="bench/results/$STAMP-$UPSTREAM.txt"
RUNS="$TMP_DIR/runs.txt" # concurrency target round rps p50 p99 errors
: >"$RUNS"
GATEWAY_SENT=1            # the smoke request

THREAD_CPU="${THREAD_CPU:-}"
# wrk runs in the background and is waited for, so INT/TERM reach the traps (and cleanup) at once.
run_wrk() {
    local target="$1" url="$2" conns="$3" dur="$4" out="$5"
    wrk -t1 -c"$conns" -d"$dur" --timeout 10s --latency -s "$TMP_DIR/post.lua" \
        "$url/v1/chat/completions" >"$out" 2>&1 &
    WRK_PID="$!"
    if ! wait "$WRK_PID"; then
        WRK_PID=""
        cat "$out" >&2
        die "wrk failed against $target ($url)"
    fi
    WRK_PID=""
}

GIT_REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null || true)" ]]; then
    GIT_REV="$GIT_REV (dirty)"
fi
CPU_MODEL="$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
{
    echo "# llm gateway benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- machine: $(nproc) CPUs, ${CPU_MODEL:-unknown CPU}, kernel $(uname -r)"
    echo "- commit: $GIT_REV"
    echo "- upstream (direct): $UPSTREAM_DESC"
    echo "- gateway: $GATEWAY_DESC"
    echo "- load: wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }'), 1 thread, connections = concurrency," \
        "$DURATION per run after a $WARMUP warm-up, $ROUNDS round(s) alternating $TARGETS"
    echo
} | tee "$RESULTS"

for c in $CONCURRENCY; do
    for ((r = 1; r <= ROUNDS; r++)); do
        for target in $TARGETS; do
            case "$target" in
                direct) url="$DIRECT_URL" ;;
                bare) url="$BARE" ;;
                *) url="$GATEWAY" ;;
            esac
            log "c=$c round $r/$ROUNDS: $target (warm-up $WARMUP, then $DURATION)"
            run_wrk "$target" "$url" "$c" "$WARMUP" "$TMP_DIR/warm.txt"
            if [[ -n "$THREAD_CPU" && "$target" == gateway && -n "${GATEWAY_PID:-}" ]]; then
                bench_thread_ticks "$GATEWAY_PID" >"$TMP_DIR/ticks.before"
            fi
            run_wrk "$target" "$url" "$c" "$DURATION" "$TMP_DIR/wrk.txt"
            if [[ -n "$THREAD_CPU" && "$target" == gateway && -n "${GATEWAY_PID:-}" ]]; then
                bench_thread_ticks "$GATEWAY_PID" >"$TMP_DIR/ticks.after"
                read -r _ _ _ _ n_reqs < <(parse_wrk "$TMP_DIR/wrk.txt") || n_reqs=0
                hz="$(getconf CLK_TCK)"
                awk -v n="$n_reqs" -v hz="$hz" '
                    NR == FNR { b[$1] = $2 + $3; next }
                    { d = $2 + $3 - b[$1]; if (d > 0) { printf "  %-28s %6.2f us/request\n", $1, d * 1e6 / hz / n; t += d } }
                    END { printf "  %-28s %6.2f us/request (%d requests)\n", "all threads", t * 1e6 / hz / n, n }' \
                    "$TMP_DIR/ticks.before" "$TMP_DIR/ticks.after" | tee -a "$RESULTS" >&2
            fi
            {
                echo "### target=$target concurrency=$c round=$r url=$url"
                cat "$TMP_DIR/wrk.txt"
                echo
            } >>"$RESULTS"
            read -r rps p50 p99 errs reqs < <(parse_wrk "$TMP_DIR/wrk.txt") \
                || die "could not parse wrk output (kept in $RESULTS)"
            echo "$c $target $r $rps $p50 $p99 $errs" >>"$RUNS"
            if [[ "$target" == gateway ]]; then
                read -r _ _ _ _ warm_reqs < <(parse_wrk "$TMP_DIR/warm.txt") || warm_reqs=0
                GATEWAY_SENT=$((GATEWAY_SENT + reqs + warm_reqs))
            fi
        done
    done
done

# -------------------------------------------------------------------------------------- report

TABLE="$(awk -v order="$CONCURRENCY" '
    {
        key = $1 SUBSEP $2
        n[key]++; rps[key] += $4; p50[key] += $5; p99[key] += $6; err[key] += $7
    }
    END {
        print "| concurrency | direct req/s | bare pass-through req/s | gateway req/s | gateway/direct | gateway/bare | direct p50 (ms) | gateway p50 (ms) | added p50 (ms) | direct p99 (ms) | gateway p99 (ms) |"
        print "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        k = split(order, cs, " ")
        for (i = 1; i <= k; i++) {
            c = cs[i]; d = c SUBSEP "direct"; g = c SUBSEP "gateway"; b = c SUBSEP "bare"
            if (!(d in n) || !(g in n)) continue
            dr = rps[d] / n[d]; gr = rps[g] / n[g]; br = (b in n) ? rps[b] / n[b] : 0
            d50 = p50[d] / n[d]; g50 = p50[g] / n[g]
            d99 = p99[d] / n[d]; g99 = p99[g] / n[g]
            printf "| %s | %.0f | %s | %.0f | %.1f%% | %s | %.3f | %.3f | %+.3f | %.3f | %.3f |\n",
                c, dr, (br > 0 ? sprintf("%.0f", br) : "-"), gr, (dr > 0 ? 100 * gr / dr : 0),
                (br > 0 ? sprintf("%.1f%%", 100 * gr / br) : "-"), d50, g50, g50 - d50, d99, g99
            if (err[d] > 0) warn = warn sprintf("\nWARNING: c=%s direct: %d non-2xx responses or socket errors", c, err[d])
            if (err[g] > 0) warn = warn sprintf("\nWARNING: c=%s gateway: %d non-2xx responses or socket errors", c, err[g])
        }
        printf "\nMeans over rounds (latencies: mean of the per-run wrk percentiles).%s\n", warn
    }' "$RUNS")"
printf '%s\n\n' "$TABLE" | tee -a "$RESULTS"

if [[ -z "$GATEWAY_URL" ]]; then
    METRICS="$(curl -sS --max-time 10 -H "Authorization: Bearer $MASTER_KEY" "$GATEWAY/metrics" || true)"
    TOTAL="$(printf '%s\n' "$METRICS" | awk '
        $1 ~ /^llm_proxy_total_requests_metric_total([{]|$)/ { s += $NF; found = 1 }
        END { if (found) printf "%.0f", s; else printf "missing" }')"
    echo "gateway /metrics: llm_proxy_total_requests_metric_total (sum) = $TOTAL;" \
        "requests wrk completed through the gateway (incl. warm-ups + 1 check) ~ $GATEWAY_SENT" | tee -a "$RESULTS"
else
    echo "gateway /metrics: skipped (GATEWAY_URL override)" | tee -a "$RESULTS"
fi
log ""
log "raw wrk outputs: $RESULTS"
