# bench/lib.sh: what the bench scripts share (sourced by run.sh, ab.sh and callgrind.sh).

BENCH_MASTER_KEY="sk-bench-master"
BENCH_BODY='{"model":"bench-model","messages":[{"role":"user","content":"Say hello"}]}'

# bench_config FILE API_BASE [DATABASE_URL [REDIS_URL]]: a gateway config with one model, `bench-model`,
# at API_BASE (an OpenAI-compatible base URL ending in /v1), Prometheus metrics on and the bench master key.
bench_config() {
    cat >"$1" <<YAML
model_list:
  - model_name: bench-model
    llm_params: {model: openai/bench-model, api_base: "$2", api_key: sk-bench}
llm_settings:
  callbacks: ["prometheus"]
general_settings:
  master_key: $BENCH_MASTER_KEY
YAML
    if [[ -n "${3:-}" ]]; then echo "  database_url: \"$3\"" >>"$1"; fi
    if [[ -n "${4:-}" ]]; then echo "  redis_url: \"$4\"" >>"$1"; fi
}

# bench_virtual_key GATEWAY_URL: prints a new virtual key in a new team, both with a budget and rpm/tpm
# limits, the key also with model-specific limits, all high enough never to refuse. Prints nothing on failure.
bench_virtual_key() {
    local admin=(curl -sS --max-time 10 -X POST -H 'Content-Type: application/json'
        -H "Authorization: Bearer $BENCH_MASTER_KEY")
    "${admin[@]}" -d '{"team_id":"bench-team","team_alias":"bench","max_budget":1000000,"budget_duration":"30d","rpm_limit":1000000000,"tpm_limit":4000000000}' \
        "$1/team/new" >/dev/null || return 0
    "${admin[@]}" -d '{"key_alias":"bench","team_id":"bench-team","max_budget":1000000,"budget_duration":"30d","rpm_limit":1000000000,"tpm_limit":4000000000,"model_rpm_limit":{"bench-model":1000000000},"model_tpm_limit":{"bench-model":4000000000}}' \
        "$1/key/generate" | sed -n 's/.*"key":"\(sk-[^"]*\)".*/\1/p'
}

# bench_wrk_script FILE KEY: a wrk Lua script posting the bench body with KEY.
bench_wrk_script() {
    cat >"$1" <<LUA
wrk.method = "POST"
wrk.body = '$BENCH_BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $2"
LUA
}

# bench_thread_ticks PID: "thread-name user-ticks system-ticks" per thread name of process PID (digits in
# names folded to N), from /proc/PID/task/*/stat.
bench_thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        printf '%s %s\n' "$(tr -d ' ' <"$t/comm" | sed 's/[0-9][0-9]*/N/g')" \
            "$(awk '{ sub(/^.*\) /, ""); print $12, $13 }' "$t/stat")"
    done 2>/dev/null | awk '{ u[$1] += $2; s[$1] += $3 } END { for (k in u) print k, u[k], s[k] }' | sort
}

# die MESSAGE: prints it and exits 1 (run.sh has its own, with its log).
die() {
    echo "error: $*" >&2
    exit 1
}

# need COMMAND: installs the Debian package of that name when the command is missing.
need() { command -v "$1" >/dev/null || [[ -x "/usr/sbin/$1" ]] || apt-get install -y "$1" >/dev/null; }

# free_port: prints a free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_up URL: waits up to 15 s for URL to answer.
wait_up() {
    for _ in $(seq 1 150); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    die "$1 did not answer"
}
