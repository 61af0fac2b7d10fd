"""End-to-end suite: the release gateway on PostgreSQL and Redis, driven by the official `openai` SDK, scraped
by a real Prometheus; every dashboard panel query and alert expression must return data.

Run by scripts/e2e, which builds the binaries, installs Prometheus and the Python packages, and passes:
  LLM_BIN_DIR    where `llm` and `llm-mock` are
  PROMETHEUS     the prometheus binary; PROMTOOL the promtool binary
  DATABASE_URL   a PostgreSQL server URL whose database this suite may drop and create (llm_e2e)
  REDIS_URL      redis://127.0.0.1:6379
Everything listens on 127.0.0.1 and is stopped at the end.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import anthropic
import openai

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("LLM_BIN_DIR", os.path.join(ROOT, "target", "release"))
PROMETHEUS = os.environ.get("PROMETHEUS", "prometheus")
PROMTOOL = os.environ.get("PROMTOOL", "promtool")
PG = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
MASTER = "sk-e2e-master-key"

procs = []
tmp = tempfile.mkdtemp(prefix="llm-e2e-")
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        raise AssertionError(what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(args, log_name, **kw):
    log = open(os.path.join(tmp, log_name), "w")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **kw)
    procs.append(p)
    return p


def http(method, url, body=None, key=MASTER, expect=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    if expect is not None:
        check(status == expect, f"{method} {url}: {status} {text[:300]}")
    return status, (json.loads(text) if text.strip().startswith(("{", "[")) else text)


def wait_http(url, what, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not come up at {url}")


def fresh_database():
    base, _ = PG.rsplit("/", 1)
    subprocess.run(["psql", "-q", "-d", PG, "-c", "DROP DATABASE IF EXISTS llm_e2e"], check=True)
    subprocess.run(["psql", "-q", "-d", PG, "-c", "CREATE DATABASE llm_e2e"], check=True)
    return base + "/llm_e2e"


def main():
    # --- the mock upstream --------------------------------------------------------------------------
    mock = subprocess.Popen([os.path.join(BIN, "llm-mock"), "--port", "0"], stdout=subprocess.PIPE)
    procs.append(mock)
    mock_port = int(mock.stdout.readline().decode().split()[1])
    mock_base = f"http://127.0.0.1:{mock_port}"

    def rule(r):
        http("POST", mock_base + "/__mock/rules", r, key=None, expect=200)

    rule({"model": "e2e-broken", "status": 500})
    rule({"model": "e2e-limited", "status": 429, "retry_after": 1})
    rule({"model": "e2e-doomed", "status": 503})
    rule({"model": "e2e-doomed-backup", "status": 503})
    rule({"model": "e2e-fast", "remaining_requests": 900, "remaining_tokens": 90000})

    # --- the gateway ------------------------------------------------------------------------------------
    db = fresh_database()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    up = f"{mock_base}/v1"

    def dep(group, model, id_, extra=""):
        return (
            f"  - model_name: {group}\n    llm_params: {{model: openai/{model}, api_base: \"{up}\", api_key: sk-up,"
            f" input_cost_per_token: 0.000001, output_cost_per_token: 0.000002{extra}}}\n"
            f"    model_info: {{id: {id_}}}\n"
        )

    config = (
        "model_list:\n"
        + dep("gpt-main", "e2e-fast", "main-fast")
        + dep("gpt-main", "e2e-broken", "main-broken")
        + dep("gpt-main", "e2e-limited", "main-limited")
        + dep("gpt-backup", "e2e-backup", "backup-1")
        + dep("gpt-doomed", "e2e-doomed", "doomed-1")
        + dep("gpt-doomed-backup", "e2e-doomed-backup", "doomed-backup-1")
        + dep("text-embed", "e2e-embed", "embed-1")
        # Azure OpenAI and Anthropic, on the mock's dialects of them.
        + f"  - model_name: gpt-azure\n    llm_params: {{model: azure/e2e-azure-dep, api_base: \"{mock_base}\","
          " api_version: 2024-10-21, api_key: az-up}\n    model_info: {id: azure-1, base_model: gpt-4o}\n"
        + f"  - model_name: claude\n    llm_params: {{model: anthropic/claude-3-5-sonnet-20241022,"
          f" api_base: \"{mock_base}\", api_key: sk-ant-up}}\n    model_info: {{id: claude-1}}\n"
        + "llm_settings:\n  callbacks: [prometheus]\n  service_callback: [prometheus_system]\n"
        + "  prometheus_initialize_budget_metrics: true\n"
        + "router_settings:\n  num_retries: 2\n  allowed_fails: 1\n  cooldown_time: 2\n"
        + "  fallbacks: [{gpt-main: [gpt-backup]}, {gpt-doomed: [gpt-doomed-backup]}]\n"
        + f"general_settings:\n  master_key: {MASTER}\n  database_url: {db}\n  redis_url: {REDIS}\n"
        + "  store_model_in_db: true\n"
    )
    cfg_path = os.path.join(tmp, "config.yaml")
    with open(cfg_path, "w") as f:
        f.write(config)
    start(
        [os.path.join(BIN, "llm"), "--config", cfg_path, "--host", "127.0.0.1", "--port", str(port)],
        "gateway.log",
    )
    wait_http(base + "/health/liveliness", "the gateway")

    # --- Prometheus, scraping every second, with the alert rules ------------------------------------------
    prom_port = free_port()
    prom_cfg = os.path.join(tmp, "prometheus.yml")
    with open(prom_cfg, "w") as f:
        f.write(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: ['{os.path.join(ROOT, 'grafana', 'alerts.yml')}']\n"
            f"scrape_configs:\n  - job_name: llm\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        )
    start(
        [
            PROMETHEUS,
            f"--config.file={prom_cfg}",
            f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        "prometheus.log",
    )
    prom = f"http://127.0.0.1:{prom_port}"
    wait_http(prom + "/-/ready", "Prometheus", 60)

    # --- keys and a team through the management API -----------------------------------------------------
    http("POST", base + "/team/new", {"team_id": "e2e-team", "team_alias": "E2E team", "max_budget": 10,
                                       "budget_duration": "30d"}, expect=200)
    _, k = http("POST", base + "/key/generate", {
        "team_id": "e2e-team", "key_alias": "e2e-main", "max_budget": 5, "budget_duration": "1d",
        "model_rpm_limit": {"gpt-main": 100000}, "model_tpm_limit": {"gpt-main": 100000000},
    }, expect=200)
    main_key = k["key"]
    _, k = http("POST", base + "/key/generate", {"key_alias": "e2e-tiny", "max_budget": 0.00001}, expect=200)
    tiny_key = k["key"]
    _, k = http("POST", base + "/key/generate", {"key_alias": "e2e-limited", "rpm_limit": 1}, expect=200)
    limited_key = k["key"]

    client = openai.OpenAI(base_url=base + "/v1", api_key=main_key, max_retries=0, timeout=30)

    # --- the SDK: chat, streaming, embeddings, models ---------------------------------------------------------
    models = [m.id for m in client.models.list().data]
    check("gpt-main" in models and "text-embed" in models, f"models: {models}")
    for i in range(12):
        r = client.chat.completions.create(model="gpt-main", messages=[{"role": "user", "content": f"hi {i}"}],
                                           user="e2e-customer")
        check(r.choices[0].message.content, "a chat answer")
        check(r.usage.total_tokens > 0, "usage")
    chunks = list(client.chat.completions.create(
        model="gpt-main", messages=[{"role": "user", "content": "stream please"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(text, "streamed text")
    check(chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0, "usage in the last chunk")
    e = client.embeddings.create(model="text-embed", input=["one", "two"])
    check(len(e.data) == 2 and len(e.data[0].embedding) > 0, "embeddings")

    # --- Azure OpenAI and Anthropic deployments through the same SDK -------------------------------------------
    for group in ("gpt-azure", "claude"):
        r = client.chat.completions.create(model=group, messages=[
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}])
        check(r.choices[0].message.content and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0,
              f"{group}: a chat answer with usage")
        chunks = list(client.chat.completions.create(
            model=group, messages=[{"role": "user", "content": "stream please"}], stream=True,
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        check(text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0,
              f"{group}: streamed text and usage")
    e = client.embeddings.create(model="gpt-azure", input=["one", "two"])
    check(len(e.data) == 2, "Azure embeddings")
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Look it up",
              "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
    r = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "find it"}],
                                       tools=tools, tool_choice="required")
    calls = r.choices[0].message.tool_calls or []
    check(r.choices[0].finish_reason == "tool_calls" and calls and calls[0].function.name == "lookup"
          and json.loads(calls[0].function.arguments), f"Anthropic tool call: {r}")

    # --- the Messages API through the official `anthropic` SDK, on an Anthropic and an Azure group ----------
    ac = anthropic.Anthropic(base_url=base, api_key=main_key, max_retries=0, timeout=30)
    for group in ("claude", "gpt-azure"):
        m = ac.messages.create(model=group, max_tokens=64, system="Be brief.",
                               messages=[{"role": "user", "content": "hello"}])
        check(m.content and m.content[0].text and m.usage.output_tokens > 0, f"/v1/messages on {group}: {m}")
        with ac.messages.stream(model=group, max_tokens=64,
                                messages=[{"role": "user", "content": "stream please"}]) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        check(text and final.usage.output_tokens > 0 and final.stop_reason == "end_turn",
              f"/v1/messages stream on {group}: {final}")
    # To an Anthropic deployment the request passes through natively: extended thinking and a cache
    # breakpoint arrive (the mock answers a thinking block and cache reads), streamed too.
    native = dict(model="claude", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
                  system=[{"type": "text", "text": "A cached preamble.", "cache_control": {"type": "ephemeral"}}],
                  messages=[{"role": "user", "content": "think first"}])
    m = ac.messages.create(**native)
    check(m.content[0].type == "thinking" and m.content[1].text and m.usage.cache_read_input_tokens == 7,
          f"/v1/messages native pass-through: {m}")
    with ac.messages.stream(**native) as s:
        final = s.get_final_message()
    check(final.content[0].type == "thinking" and final.content[0].thinking and final.content[1].text,
          f"/v1/messages native stream: {final}")

    # --- a deployment added through the management API, used through the SDK at once -------------------------
    _, made = http("POST", base + "/model/new", {
        "model_name": "gpt-added", "model_info": {"id": "added-1"},
        "litellm_params": {"model": "openai/e2e-added", "api_base": up, "api_key": "sk-up-added"},
    }, expect=200)
    check(made["litellm_params"]["api_key"] == "********", "the upstream key is masked")
    check("gpt-added" in [m.id for m in client.models.list().data], "the added group is listed")
    r = client.chat.completions.create(model="gpt-added", messages=[{"role": "user", "content": "new model"}])
    check(r.choices[0].message.content and r.usage.total_tokens > 0, "the added deployment answers")
    http("POST", base + "/model/update", {"model_info": {"id": "added-1"}, "litellm_params": {"rpm": 1000}},
         expect=200)
    r = client.chat.completions.create(model="gpt-added", messages=[{"role": "user", "content": "again"}])
    check(r.choices[0].message.content, "the updated deployment answers")

    # --- the SDK's exception classes --------------------------------------------------------------------------
    bad = openai.OpenAI(base_url=base + "/v1", api_key="sk-not-a-key", max_retries=0)
    try:
        bad.chat.completions.create(model="gpt-main", messages=[{"role": "user", "content": "x"}])
        check(False, "a bad key must fail")
    except openai.AuthenticationError as err:
        check(err.status_code == 401, "401")

    tiny = openai.OpenAI(base_url=base + "/v1", api_key=tiny_key, max_retries=0)
    tiny.chat.completions.create(model="gpt-main", messages=[{"role": "user", "content": "spend it"}])
    time.sleep(0.2)
    try:
        tiny.chat.completions.create(model="gpt-main", messages=[{"role": "user", "content": "over budget"}])
        check(False, "over budget must fail")
    except openai.BadRequestError as err:
        check(err.status_code == 400 and "budget" in str(err).lower(), f"400 budget: {err}")

    limited = openai.OpenAI(base_url=base + "/v1", api_key=limited_key, max_retries=0)
    limited.chat.completions.create(model="gpt-main", messages=[{"role": "user", "content": "one"}])
    try:
        limited.chat.completions.create(model="gpt-main", messages=[{"role": "user", "content": "two"}])
        check(False, "past the rpm limit must fail")
    except openai.RateLimitError as err:
        check(err.status_code == 429, "429")

    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        check(False, "an unknown model must fail")
    except openai.NotFoundError as err:
        check(err.status_code == 404, "404")

    # --- fallbacks, cooldowns, failures, over a few scrapes -----------------------------------------------------
    for i in range(40):
        client.chat.completions.create(model="gpt-main", messages=[{"role": "user", "content": f"m {i}"}])
        if i % 4 == 0:
            try:
                client.chat.completions.create(model="gpt-doomed", messages=[{"role": "user", "content": "x"}])
                check(False, "the doomed group and its fallback both fail")
            except openai.APIStatusError as err:
                check(err.status_code in (503, 429), f"doomed: {err.status_code}")
        if i % 10 == 0:
            list(client.chat.completions.create(model="gpt-main", stream=True,
                                                messages=[{"role": "user", "content": "s"}]))
        time.sleep(0.1)
    status, health = http("GET", base + "/health/deployments", expect=200)
    states = {d["model_id"]: d for d in health["deployments"]}
    check(states["main-broken"]["failures"] > 0 and states["main-broken"]["cooldowns"] >= 1,
          f"the broken deployment cooled down: {states['main-broken']}")

    # --- promtool check metrics on the gateway's exposition -----------------------------------------------------
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        exposition = r.read()
    def sample(name):
        for line in exposition.decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    check((sample("llm_redis_total_requests_total") or 0) > 0, "Redis calls are counted (cooldown sharing)")
    check((sample("llm_postgres_total_requests_total") or 0) > 0, "database calls are counted")
    check((sample("llm_self_latency_count") or 0) > 0, "upstream calls are timed")
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True)
    # The spec fixes two names that promtool's naming lint dislikes (hours are not a base unit); they are a
    # contract, so those two findings, and only those, are accepted.
    contract = {
        'llm_api_key_budget_remaining_hours_metric use base unit "seconds" instead of "hours"',
        'llm_team_budget_remaining_hours_metric use base unit "seconds" instead of "hours"',
    }
    findings = [l for l in (lint.stdout + lint.stderr).decode().splitlines() if l.strip()]
    unexpected = [l for l in findings if l.strip() not in contract]
    check(not unexpected, "promtool check metrics: " + "\n".join(unexpected)[:3000])
    print(f"promtool check metrics: clean apart from {len(findings)} findings on spec-mandated names")

    # --- every dashboard query and alert expression returns data ------------------------------------------------
    time.sleep(4)  # a few more scrapes so that rate() windows hold two samples of every series
    queries = json.loads(subprocess.run([sys.executable, os.path.join(ROOT, "grafana", "queries.py")],
                                        check=True, capture_output=True).stdout)
    check(len(queries) >= 20, f"only {len(queries)} queries")
    empty, failed = [], []
    for q in queries:
        for expr, need_data in ((q["expr"], False), (q["signal"], True)):
            url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            status, body = http("GET", url, key=None)
            if status != 200 or body.get("status") != "success":
                failed.append((q["source"], expr, body))
            elif need_data and not body["data"]["result"]:
                empty.append((q["source"], expr))
    check(not failed, "queries with errors:\n" + "\n".join(map(str, failed)))
    check(not empty, "queries without data:\n" + "\n".join(f"{s}: {e}" for s, e in empty))
    print(f"{len(queries)} dashboard and alert queries return data")

    # --- the example configs pass --check-config --------------------------------------------------------------
    env = dict(os.environ, LLM_MASTER_KEY="sk-example", DATABASE_URL="postgresql://x@127.0.0.1/x",
               REDIS_URL="redis://127.0.0.1:6379", OPENAI_API_KEY="sk-x")
    cfg_dir = os.path.join(ROOT, "config")
    configs = sorted(f for f in os.listdir(cfg_dir) if f.endswith((".yaml", ".yml")))
    check(configs, "example configs exist")
    for name in configs:
        r = subprocess.run([os.path.join(BIN, "llm"), "--config", os.path.join(cfg_dir, name), "--check-config"],
                           capture_output=True, env=env)
        check(r.returncode == 0, f"config/{name}: " + (r.stdout + r.stderr).decode())
    print(f"e2e: {checks} checks passed")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        for name in ("gateway.log", "prometheus.log"):
            path = os.path.join(tmp, name)
            if os.path.exists(path):
                print(f"---- {name} (last 40 lines)")
                print("".join(open(path).readlines()[-40:]))
        raise
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
