//! Issue 11's bypasses and cross-tenant damage, one regression test each: what one ordinary key holder
//! (or a broken upstream) could do before, and what the gateway answers now.

use crate::support::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Two upstream groups `a` and `b` on the mock upstream (models `up-a`, `up-b`), `a` falling back to `b`, and
/// a built-in mock group `m`.
fn two_groups(mock: &Mock, extra: &str) -> String {
    groups_with(mock, "", extra)
}

/// [`two_groups`] with more `router_settings` lines.
fn groups_with(mock: &Mock, router: &str, extra: &str) -> String {
    format!(
        "model_list:\n  - model_name: a\n    llm_params: {{model: openai/up-a, api_base: \"{base}\", api_key: sk-up}}\n    model_info: {{id: dep-a}}\n  - model_name: b\n    llm_params: {{model: openai/up-b, api_base: \"{base}\", api_key: sk-up}}\n    model_info: {{id: dep-b}}\n  - model_name: m\n    llm_params: {{model: mock/m}}\nllm_settings:\n  callbacks: [prometheus]\nrouter_settings:\n  fallbacks: [{{a: [b]}}]\n  context_window_fallbacks: [{{a: [b]}}]\n{router}general_settings:\n  master_key: sk-master\n{extra}",
        base = mock.base()
    )
}

async fn key(gw: &Gateway, body: Value) -> String {
    let r = gw.admin("/key/generate", &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["key"].as_str().unwrap().to_owned()
}

async fn call(gw: &Gateway, key: &str, body: &Value) -> Reply {
    gw.post_with(
        "/v1/chat/completions",
        body,
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await
}

fn calls(c: &std::collections::HashMap<String, u64>, model: &str) -> u64 {
    c.get(model).copied().unwrap_or(0)
}

#[actix_rt::test]
async fn fallbacks_never_reach_a_group_the_caller_may_not_use() {
    let mock = Mock::start();
    mock.rule(json!({"model": "up-a", "status": 500})).await;
    let gw = Gateway::start(&two_groups(&mock, "")).await;
    let only_a = key(&gw, json!({"models": ["a"]})).await;
    let both = key(&gw, json!({"models": ["a", "b"]})).await;

    // The configured fallback is skipped for a key that may not use it: the failure is a's, b is never called.
    let r = call(&gw, &only_a, &chat("a")).await;
    assert_eq!(r.status, 500, "{}", r.body);
    r.error();
    assert_eq!(calls(&mock.calls().await, "up-b"), 0);
    // A key that may use both falls back as configured.
    let r = call(&gw, &both, &chat("a")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(calls(&mock.calls().await, "up-b"), 1);

    // A body naming a forbidden fallback is refused before any upstream call.
    let before = mock.calls().await;
    let mut body = chat("a");
    body["fallbacks"] = json!(["b"]);
    let r = call(&gw, &only_a, &body).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.error()["param"], "fallbacks");
    assert_eq!(mock.calls().await, before, "no upstream call");
    body["fallbacks"] = json!([{"model": "b"}]);
    assert_eq!(call(&gw, &only_a, &body).await.status, 401);

    // Context-window fallbacks too.
    mock.rule(json!({"model": "up-a", "status": 400, "message": "This model's maximum context length is 8 tokens"}))
        .await;
    let r = call(&gw, &only_a, &chat("a")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(calls(&mock.calls().await, "up-b"), 1, "b still untouched");

    // A team's and a user's model lists bind their keys, fallbacks included.
    let r = gw
        .admin("/team/new", &json!({"team_id": "t", "models": ["a"]}))
        .await;
    assert_eq!(r.status, 200);
    let in_team = key(&gw, json!({"team_id": "t"})).await;
    mock.rule(json!({"model": "up-a", "status": 500})).await;
    assert_eq!(call(&gw, &in_team, &chat("a")).await.status, 500);
    assert_eq!(call(&gw, &in_team, &chat("b")).await.status, 401);
    let r = gw
        .admin("/user/new", &json!({"user_id": "u", "models": ["m"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let of_user = key(&gw, json!({"user_id": "u"})).await;
    assert_eq!(call(&gw, &of_user, &chat("m")).await.status, 200);
    let r = call(&gw, &of_user, &chat("b")).await;
    assert_eq!(r.status, 401, "user models are enforced: {}", r.body);
    assert!(r.error()["message"].as_str().unwrap().contains("User"));
    assert_eq!(calls(&mock.calls().await, "up-b"), 1);
}

#[actix_rt::test]
async fn duplicate_keys_are_refused_and_client_errors_never_cool_a_deployment() {
    let mock = Mock::start();
    let gw = Gateway::start(&groups_with(
        &mock,
        "  allowed_fails: 1\n  cooldown_time: 60\n",
        "",
    ))
    .await;
    let body = br#"{"model":"a","stream":false,"messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            body.to_vec(),
            &[("authorization", "Bearer sk-master")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error()["param"], "stream");
    assert!(r.body.contains("more than once"));
    assert_eq!(calls(&mock.calls().await, "up-a"), 0);

    // An upstream refusing the client's request (400, 422) is the client's failure, not the deployment's.
    let body_a = chat("a");
    let ask_a = || call(&gw, "sk-master", &body_a);
    for status in [400, 422, 400, 422, 400] {
        mock.rule(json!({"model": "up-a", "status": status})).await;
        let r = ask_a().await;
        assert_eq!(r.status, status, "{}", r.body);
    }
    let m = gw.metrics().await;
    assert_eq!(m.sum("llm_deployment_state", &[("model_id", "dep-a")]), 0.0);
    assert_eq!(m.sum("llm_deployment_cooled_down_total", &[]), 0.0);
    mock.rule(json!({"model": "up-a"})).await;
    let r = ask_a().await;
    assert_eq!(r.status, 200, "still in service: {}", r.body);
}

#[actix_rt::test]
async fn request_fields_are_validated_before_any_upstream_call() {
    let mock = Mock::start();
    let gw = Gateway::start(&upstream_config(
        &mock,
        "  custom_prometheus_metadata_labels: [metadata.tenant]\n",
    ))
    .await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"model": "gpt-4o", "messages": [42, null]}),
            "messages[0]",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "a"}, "x"]}),
            "messages[1]",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "hacker", "content": "a"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "a"}], "user": "a\u{0}b"}),
            "user",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "a"}], "user": "u".repeat(4096)}),
            "user",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "a"}], "metadata": {"tenant": "x\ny"}}),
            "metadata.tenant",
        ),
    ];
    for (body, param) in cases {
        let r = gw.post("/v1/chat/completions", &body).await;
        assert_eq!(r.status, 400, "{param}: {}", r.body);
        assert_eq!(r.error()["param"], param, "{}", r.body);
    }
    assert!(mock.calls().await.is_empty(), "no upstream call");
    // The valid forms pass.
    let mut ok = chat("gpt-4o");
    ok["user"] = json!("customer-1@example.com");
    ok["metadata"] = json!({"tenant": "acme"});
    assert_eq!(gw.post("/v1/chat/completions", &ok).await.status, 200);
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[actix_rt::test]
async fn the_built_in_mock_cannot_be_made_to_allocate_without_bound() {
    let gw = Gateway::start(
        "model_list:\n  - model_name: e\n    llm_params: {model: mock/e}\nllm_settings:\n  callbacks: [prometheus]\n",
    )
    .await;
    // Warm up the allocator and the handles.
    let small = json!({"model": "e", "input": "hello"});
    assert_eq!(gw.post("/v1/embeddings", &small).await.status, 200);
    let before = rss_kib(gw.pid());
    // A body just under the 4 MiB limit: one input of two million token ids.
    let zeros = format!(
        "{{\"model\":\"e\",\"input\":[{}0]}}",
        "0,".repeat(2 * 1024 * 1024 - 64)
    );
    assert!(zeros.len() < 4 * 1024 * 1024);
    for _ in 0..5 {
        let r = gw
            .post_raw("/v1/embeddings", zeros.clone().into_bytes(), &[])
            .await;
        assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
        assert_eq!(r.json()["data"].as_array().unwrap().len(), 1);
    }
    let grown = rss_kib(gw.pid()).saturating_sub(before);
    assert!(grown < 24 * 1024, "RSS grew by {grown} KiB");
    // Too many inputs, or inputs x dimensions past the cap, are refused.
    let many: Vec<&str> = vec!["a"; 3000];
    let r = gw
        .post("/v1/embeddings", &json!({"model": "e", "input": many}))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error()["param"], "input");
    let r = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "e", "input": vec!["a"; 2000], "dimensions": 8192}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[actix_rt::test]
async fn deleting_a_team_or_a_user_deletes_its_keys() {
    let gw = Gateway::start(&two_groups(&Mock::start(), "")).await;
    assert_eq!(
        gw.admin("/team/new", &json!({"team_id": "t", "max_budget": 1}))
            .await
            .status,
        200
    );
    assert_eq!(
        gw.admin("/user/new", &json!({"user_id": "u"})).await.status,
        200
    );
    let team_key = key(&gw, json!({"team_id": "t"})).await;
    let user_key = key(&gw, json!({"user_id": "u"})).await;
    let other = key(&gw, json!({})).await;
    for k in [&team_key, &user_key, &other] {
        assert_eq!(call(&gw, k, &chat("m")).await.status, 200);
    }
    let r = gw.admin("/team/delete", &json!({"team_ids": ["t"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["deleted_keys"], json!([sha256(&team_key)]));
    let r = gw.admin("/user/delete", &json!({"user_ids": ["u"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let deleted = r.json()["deleted_keys"].clone();
    assert!(
        deleted
            .as_array()
            .unwrap()
            .contains(&json!(sha256(&user_key))),
        "{deleted}"
    );
    for k in [&team_key, &user_key] {
        let r = call(&gw, k, &chat("m")).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    assert_eq!(call(&gw, &other, &chat("m")).await.status, 200);
    // Still gone after a restart (deleted in the store, not only in memory).
    let config = two_groups(&Mock::start(), "");
    let gw = gw.restart(&config).await;
    assert_eq!(call(&gw, &team_key, &chat("m")).await.status, 401);
    assert_eq!(call(&gw, &other, &chat("m")).await.status, 200);
    // A custom key that could never authenticate is refused when it is made.
    for bad in ["sk-with space", "sk-é-accent", "sk-shrt"] {
        let r = gw.admin("/key/generate", &json!({"key": bad})).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    // Admin strings that would poison labels or the database are refused.
    let r = gw
        .admin("/team/new", &json!({"team_id": "bad\u{0}id"}))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error()["param"], "team_id");
}

#[actix_rt::test]
async fn upstream_controlled_values_are_bounded() {
    let mock = Mock::start();
    let other = Mock::start();
    let group = |name: &str| {
        format!(
            "  - model_name: {name}\n    llm_params: {{model: openai/up-{name}, api_base: \"{}\", api_key: sk-up}}\n    model_info: {{id: dep-{name}}}\n",
            mock.base()
        )
    };
    let config = format!(
        "model_list:\n{}{}{}llm_settings:\n  callbacks: [prometheus]\ngeneral_settings:\n  max_stream_duration: 1\n",
        group("r"),
        group("d"),
        group("s")
    );
    let gw = Gateway::start(&config).await;
    // A retry-after of thousands of years cools the deployment for max_retry_after (300 s) at most.
    mock.rule(json!({"model": "up-r", "status": 429, "retry_after": 1e15}))
        .await;
    let r = gw.post("/v1/chat/completions", &chat("r")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    let retry: u64 = r.headers["retry-after"].parse().unwrap();
    assert!(retry <= 300, "retry-after {retry}");
    let dep = health(&gw, "dep-r").await;
    let left = dep["cooldown_remaining_seconds"].as_f64().unwrap();
    assert!(left > 0.0 && left <= 300.0, "{dep}");
    assert_eq!(gw.get("/health/liveliness", &[]).await.status, 200);

    // Redirects are not followed: the other host never sees the request.
    mock.rule(json!({"model": "up-d", "status": 307, "location": format!("{}/chat/completions", other.base())}))
        .await;
    let r = gw.post("/v1/chat/completions", &chat("d")).await;
    assert_ne!(r.status, 200, "{}", r.body);
    r.error();
    assert!(other.calls().await.is_empty(), "redirect followed");

    // A stream that never ends is ended after max_stream_duration, with an error frame.
    mock.rule(json!({"model": "up-s", "endless": true, "frame_delay_ms": 20}))
        .await;
    let mut body = chat("s");
    body["stream"] = json!(true);
    let started = Instant::now();
    let r = gw.post("/v1/chat/completions", &body).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    let last = r.sse_data().last().cloned().unwrap();
    assert!(last.contains("max_stream_duration"), "{last}");
    assert!(r.sse_data().len() > 3, "frames came through until then");
    // The gateway's own limit is not the deployment's failure.
    let s = health(&gw, "dep-s").await;
    assert_eq!(s["failures"], 0, "{s}");

    // A frame that never ends is cut at the frame cap (4 MiB), with an error frame.
    mock.rule(json!({"model": "up-s", "endless_frame_bytes": 6 * 1024 * 1024}))
        .await;
    let r = gw.post("/v1/chat/completions", &body).await;
    assert!(
        r.body.len() < 64 * 1024,
        "the oversized frame is not passed on"
    );
    assert!(r.body.contains("larger than"), "{}", r.body);
}

#[actix_rt::test]
async fn what_metrics_and_health_show_carries_no_secret() {
    let mock = Mock::start();
    let base = format!("http://user:hunter2@127.0.0.1:{}/v1", mock.port);
    let config = format!(
        "model_list:\n  - model_name: g\n    llm_params: {{model: openai/up, api_base: \"{base}\", api_key: sk-upstream-secret}}\nllm_settings:\n  callbacks: [prometheus]\ngeneral_settings:\n  master_key: sk-master-secret\n  metrics_require_master_key: true\n"
    );
    let gw = Gateway::start(&config).await;
    let master = [("authorization", "Bearer sk-master-secret")];
    let r = gw
        .post_with("/v1/chat/completions", &chat("g"), &master)
        .await;
    // The upstream is reached at its host.
    assert_eq!(r.status, 200, "{}", r.body);
    let health = gw
        .get("/health/deployments", &master)
        .await
        .body
        .to_string();
    let r = gw.admin("/key/generate", &json!({})).await;
    assert_eq!(r.status, 401, "sk-master is not this gateway's master key");
    let metrics = metrics_until_with(&gw, &master).await;
    for text in [&health, &metrics] {
        for secret in [
            "hunter2",
            "sk-upstream-secret",
            "sk-master-secret",
            &sha256("sk-master-secret"),
            &sha256("sk-upstream-secret"),
        ] {
            assert!(!text.contains(secret), "`{secret}` shown in: {text}");
        }
    }
    assert!(health.contains(&format!("http://127.0.0.1:{}/v1", mock.port)));
    assert!(
        metrics.contains("api_key_alias=\"master_key\""),
        "{metrics}"
    );
    // /metrics answers only to the master key.
    assert_eq!(gw.get("/metrics", &[]).await.status, 401);
    let vkey = {
        let r = gw.post_with("/key/generate", &json!({}), &master).await;
        r.json()["key"].as_str().unwrap().to_owned()
    };
    let r = gw
        .get("/metrics", &[("authorization", &format!("Bearer {vkey}"))])
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    r.error();
}

async fn metrics_until_with(gw: &Gateway, auth: &[(&str, &str)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = gw.get("/metrics", auth).await;
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body.contains("llm_proxy_total_requests_metric_total{") || Instant::now() > deadline {
            return r.body;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `head` and the first `sent` bytes of a body, then waits for the answer (blocking, on a thread).
fn trickle(port: u16, head: String, sent: &'static [u8]) -> (Duration, String) {
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(sent).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n")
                    && String::from_utf8_lossy(&answer).contains("\"error\"")
                {
                    break;
                }
            }
        }
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

#[actix_rt::test]
async fn slow_bodies_time_out_and_admin_bodies_wait_for_the_master_key() {
    let gw = Gateway::start(&two_groups(&Mock::start(), "  request_body_timeout: 1\n")).await;
    let port = gw.port;
    // A body that never finishes arriving: 408 after request_body_timeout.
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-master\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n".to_string();
    let (took, answer) =
        actix_rt::task::spawn_blocking(move || trickle(port, head, b"{\"model\":"))
            .await
            .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_body_timeout"), "{answer}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    // An admin call without the master key is refused before its body is read: no waiting for it.
    let head = "POST /key/generate HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-wrong\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n".to_string();
    let (took, answer) = actix_rt::task::spawn_blocking(move || trickle(port, head, b"{"))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(took < Duration::from_millis(900), "{took:?}");
}

#[actix_rt::test]
async fn a_flood_of_random_keys_cannot_starve_real_keys_or_the_spend_log() {
    use futures_util::StreamExt;
    let config = two_groups(&Mock::start(), "").replace(
        "  callbacks: [prometheus]\n",
        "  callbacks: [prometheus]\n  service_callback: [prometheus_system]\n",
    );
    let gw = Gateway::start(&config).await;
    let real = key(&gw, json!({})).await;
    let token = sha256(&real);
    // Keys that cannot be virtual keys are refused without a lookup: an idle SQLite gateway makes no store
    // call at all while 300 of them are refused (PostgreSQL replicas read entities back every second, so
    // the count is only compared on SQLite).
    let store_calls = |m: &Metrics| m.sum("llm_sqlite_total_requests_total", &[]);
    let before = store_calls(&gw.metrics().await);
    for i in 0..100 {
        for bad in [
            format!("not-a-key-{i}"),
            format!("sk-with space-{i}"),
            format!("sk-{i}{}", "x".repeat(300)),
        ] {
            let r = call(&gw, &bad, &chat("m")).await;
            assert_eq!(r.status, 401, "{}", r.body);
        }
    }
    if gw.database_url().is_none() {
        assert_eq!(store_calls(&gw.metrics().await), before, "no lookup");
        // A plausible unknown key is looked up (the count moves), then remembered as unknown.
        assert_eq!(
            call(&gw, "sk-plausible-but-unknown", &chat("m"))
                .await
                .status,
            401
        );
        assert_eq!(store_calls(&gw.metrics().await), before + 1.0);
        assert_eq!(
            call(&gw, "sk-plausible-but-unknown", &chat("m"))
                .await
                .status,
            401
        );
        assert_eq!(store_calls(&gw.metrics().await), before + 1.0);
    }
    // 20,000 random, well-formed keys, 64 at a time, while the real key keeps working.
    let url = gw.url("/v1/chat/completions");
    let http = client();
    let flood = {
        let (url, http) = (url.clone(), http.clone());
        actix_rt::spawn(async move {
            let statuses = futures_util::stream::iter(0..20_000)
                .map(|i| {
                    let (url, http) = (url.clone(), http.clone());
                    async move {
                        let key = format!("sk-flood-{i}-{:016x}", rand::random::<u64>());
                        match http
                            .post(url)
                            .insert_header(("authorization", format!("Bearer {key}")))
                            .send_json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
                            .await
                        {
                            Ok(r) => r.status().as_u16(),
                            Err(_) => 0,
                        }
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<u16>>()
                .await;
            statuses
        })
    };
    let mut served = 0;
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    while !flood.is_finished() && started.elapsed() < Duration::from_secs(120) {
        let t = Instant::now();
        let r = call(&gw, &real, &chat("m")).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.status, 200, "{}", r.body);
        served += 1;
        // The spend log keeps flushing: this request's row is written within a few seconds.
        if served % 20 == 0 {
            let t = Instant::now();
            let r = gw
                .admin_get(&format!("/spend/logs?api_key={token}&page_size=1"))
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json()["total"], served, "every served request is logged");
            slowest = slowest.max(t.elapsed());
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let statuses = flood.await.unwrap();
    assert!(
        served >= 20,
        "the real key was served {served} times during the flood"
    );
    assert!(
        slowest < Duration::from_secs(3),
        "a real request or an admin call took {slowest:?} during the flood"
    );
    let unexpected: Vec<&u16> = statuses
        .iter()
        .filter(|s| !matches!(s, 401 | 503))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{:?}",
        &unexpected[..unexpected.len().min(10)]
    );
    assert!(
        statuses.iter().filter(|s| **s == 401).count() > 10_000,
        "most random keys are looked up and refused"
    );
}

#[actix_rt::test]
async fn a_row_the_database_refuses_is_dropped_alone_and_counted() {
    let Ok(base) = std::env::var("LLM_TEST_DATABASE_URL") else {
        eprintln!("PostgreSQL only (LLM_TEST_DATABASE_URL): skipped");
        return;
    };
    let _ = base;
    let config = "model_list:\n  - model_name: m\n    llm_params: {model: mock/m}\nllm_settings:\n  callbacks: [prometheus]\n  service_callback: [prometheus_system]\ngeneral_settings:\n  master_key: sk-master\n";
    let gw = Gateway::start(config).await;
    let url = gw.database_url().unwrap().to_owned();
    // A rule the database enforces and the gateway does not know: rows for end user `poison` are refused.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("ALTER TABLE llm_spend_logs ADD CONSTRAINT no_poison CHECK (end_user <> 'poison')")
        .execute(&pool)
        .await
        .unwrap();
    let ask = |user: &str| {
        let mut b = chat("m");
        b["user"] = json!(user);
        b
    };
    let master = [("authorization", "Bearer sk-master")];
    for user in ["a", "poison", "b", "c"] {
        let r = gw
            .post_with("/v1/chat/completions", &ask(user), &master)
            .await;
        assert_eq!(r.status, 200);
    }
    // The rows around it are written; the refused one is dropped and counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let users: Vec<String> =
            sqlx::query_scalar("SELECT end_user FROM llm_spend_logs ORDER BY end_user")
                .fetch_all(&pool)
                .await
                .unwrap();
        if users == ["a", "b", "c"] {
            break;
        }
        assert!(Instant::now() < deadline, "rows written: {users:?}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    metrics_until(&gw, "the dropped row", |m| {
        m.sum("llm_postgres_fails_total", &[("error_class", "RowDropped")]) == 1.0
    })
    .await;
    // Later rows are not held up.
    let r = gw
        .post_with("/v1/chat/completions", &ask("d"), &master)
        .await;
    assert_eq!(r.status, 200);
    let r = gw.admin_get("/spend/logs?page_size=10").await.json();
    assert_eq!(r["total"], 4, "{r}");
    pool.close().await;
}
