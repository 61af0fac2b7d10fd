//! Replicas as one gateway: a change made on one replica is in force on the others at once, through Redis
//! announcements (the read-back every second stays as the backstop). PostgreSQL and Redis only.

use crate::support::*;
use std::time::{Duration, Instant};

const CONFIG: &str = "model_list:\n  - model_name: m\n    llm_params: {model: mock/m}\n  - model_name: other\n    llm_params: {model: mock/o}\nllm_settings:\n  callbacks: [prometheus]\ngeneral_settings:\n  master_key: sk-master\n";

/// The status of one chat request with `key`. Sent with the gateway's own upstream client (pooled,
/// `TCP_NODELAY`): the propagation times measured with it are not padded by the test client's Nagle waits.
async fn call(gw: &Gateway, key: &str, model: &str) -> u16 {
    let mut sent = llm::providers::http::client()
        .post(gw.url("/v1/chat/completions"))
        .insert_header(("authorization", format!("Bearer {key}")))
        .timeout(Duration::from_secs(30))
        .send_json(&chat(model))
        .await
        .expect("the gateway answers");
    // Read to the end, so that the connection goes back to the pool.
    let _ = sent.body().await;
    sent.status().as_u16()
}

/// How long until every one of `gws` answers `want` for `key` on `model`; fails past 5 s.
async fn until(gws: &[&Gateway], key: &str, model: &str, want: u16) -> Duration {
    let started = Instant::now();
    let mut left: Vec<&Gateway> = gws.to_vec();
    loop {
        let mut still = Vec::new();
        for gw in left {
            if call(gw, key, model).await != want {
                still.push(gw);
            }
        }
        left = still;
        if left.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never answered {want}"
        );
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_rt::test]
async fn changes_on_one_replica_are_in_force_on_the_others_at_once() {
    let Some(redis) = redis_url() else { return };
    let config = format!("{CONFIG}  redis_url: {redis}\n");
    let a = Gateway::start(&config).await;
    let Some(b) = a.replica(&config).await else {
        eprintln!("PostgreSQL only (LLM_TEST_DATABASE_URL): skipped");
        return;
    };
    let c = a.replica(&config).await.unwrap();
    let others = [&b, &c];
    let r = a
        .admin(
            "/team/new",
            &json!({"team_id": "tr", "models": ["m", "other"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A key asked for on B and C before it exists (remembered there as unknown), then made on A: usable
    // on both at once, not after the 5 s the unknown key is remembered.
    let key = format!(
        "sk-replica-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    );
    assert_eq!(call(&b, &key, "m").await, 401);
    assert_eq!(call(&c, &key, "m").await, 401);
    let r = a
        .admin("/key/generate", &json!({"team_id": "tr", "key": key}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let made = until(&others, &key, "m", 200).await;
    assert!(made < Duration::from_millis(500), "{made:?}");
    assert_eq!(call(&b, &key, "other").await, 200);

    // Block and unblock, five times: each reaches the other replica well before its read-back would
    // (every second), which five draws in a row would not all do by chance.
    let mut took = Vec::new();
    for _ in 0..5 {
        assert_eq!(
            a.admin("/key/block", &json!({"key": key})).await.status,
            200
        );
        took.push(until(&others, &key, "m", 401).await);
        assert_eq!(
            a.admin("/key/unblock", &json!({"key": key})).await.status,
            200
        );
        took.push(until(&others, &key, "m", 200).await);
    }
    // A team's narrowed model list.
    let r = a
        .admin("/team/update", &json!({"team_id": "tr", "models": ["m"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    took.push(until(&others, &key, "other", 401).await);
    // A key's budget.
    let r = a
        .admin("/key/update", &json!({"key": key, "max_budget": 0}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    took.push(until(&others, &key, "m", 400).await);
    // The team's deletion (which deletes its keys).
    let r = a.admin("/team/delete", &json!({"team_ids": ["tr"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    took.push(until(&others, &key, "m", 401).await);
    eprintln!("propagation times: {took:?}");
    // In force on both other replicas: 2-10 ms when this test runs alone (a request to each included).
    // The read-back alone (every second) would make the median about 500 ms; single changes may take
    // longer while the whole suite loads both cores, so the median is what must stay within 100 ms.
    let mut sorted = took.clone();
    sorted.sort();
    assert!(
        sorted[sorted.len() / 2] < Duration::from_millis(100),
        "{took:?}"
    );
    for t in &took {
        assert!(*t < Duration::from_millis(1000), "{took:?}");
    }
    assert!(
        b.admin_get("/team/info?team_id=tr").await.status == 404,
        "the team is gone on the other replica too"
    );
}

/// One replica set for the bound tests: three gateways on one PostgreSQL database and one Redis, before
/// the mock upstream (a priced model, `gpt-4o`, `dep-1`). `None` (skipped) without both.
async fn three_replicas(mock: &Mock) -> Option<[Gateway; 3]> {
    let redis = redis_url()?;
    let cfg = upstream_config(
        mock,
        &format!("general_settings:\n  master_key: sk-master\n  redis_url: {redis}\n"),
    );
    let a = Gateway::start(&cfg).await;
    let Some(b) = a.replica(&cfg).await else {
        eprintln!("PostgreSQL only (LLM_TEST_DATABASE_URL): skipped");
        return None;
    };
    let c = a.replica(&cfg).await?;
    Some([a, b, c])
}

/// Sends `total` requests from `workers` concurrent clients, request i to replica i mod 3; returns the
/// statuses and each successful answer's total tokens and cost in micro-dollars (1 and 2 per token).
async fn hammer(
    gws: &[Gateway; 3],
    key: &str,
    body: &Value,
    workers: usize,
    total: usize,
) -> (Vec<u16>, Vec<(i64, i64)>) {
    let next = std::cell::Cell::new(0usize);
    let results = std::cell::RefCell::new((Vec::new(), Vec::new()));
    let worker = || async {
        loop {
            let i = next.get();
            if i >= total {
                return;
            }
            next.set(i + 1);
            let r = gws[i % 3]
                .post_with(
                    "/v1/chat/completions",
                    body,
                    &[("authorization", &format!("Bearer {key}"))],
                )
                .await;
            let mut out = results.borrow_mut();
            out.0.push(r.status);
            if r.status == 200 {
                let u = &r.json()["usage"];
                let (p, c) = (
                    u["prompt_tokens"].as_i64().unwrap(),
                    u["completion_tokens"].as_i64().unwrap(),
                );
                out.1.push((p + c, p + 2 * c));
            }
        }
    };
    futures_util::future::join_all((0..workers).map(|_| worker())).await;
    results.into_inner()
}

/// A management call that must succeed; its answer.
async fn admin_ok(gw: &Gateway, path: &str, body: Value) -> Value {
    let r = gw.admin(path, &body).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json()
}

/// A new key made with `body`.
async fn key_of(gw: &Gateway, body: Value) -> String {
    admin_ok(gw, "/key/generate", body).await["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Requests in flight at once in the bound tests (the figure).
const IN_FLIGHT: usize = 12;

/// rpm, tpm and max_parallel_requests of one key, hammered through three replicas at once: admitted within
/// the bound (rpm exactly; tpm by at most what the requests in flight use).
#[actix_rt::test]
async fn three_replicas_hold_rate_limits_together() {
    let mock = Mock::start();
    mock.rule(json!({"model": "gpt-4o-2024", "latency_ms": 20}))
        .await;
    let Some(gws) = three_replicas(&mock).await else {
        return;
    };
    let new_key = |body: Value| key_of(&gws[0], body);
    // What one request uses (the mock answers the same question the same way).
    let probe = new_key(json!({})).await;
    let (_, used) = hammer(&gws, &probe, &chat("gpt-4o"), 1, 1).await;
    let (tokens, _) = used[0];

    minute_with(30.0).await;
    let rpm = new_key(json!({"rpm_limit": 30})).await;
    let (statuses, _) = hammer(&gws, &rpm, &chat("gpt-4o"), IN_FLIGHT, 90).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    eprintln!("rpm_limit 30 over 3 replicas, {IN_FLIGHT} in flight: {admitted} admitted");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // Granted one by one from one counter: never more than the limit; fewer only by slices a replica
    // still held when the others were refused (at most one each).
    assert!((27..=30).contains(&admitted), "{admitted}");

    let tpm_limit = tokens * 10 + tokens / 2;
    let tpm = new_key(json!({ "tpm_limit": tpm_limit })).await;
    let (_, used) = hammer(&gws, &tpm, &chat("gpt-4o"), IN_FLIGHT, 60).await;
    let spent: i64 = used.iter().map(|u| u.0).sum();
    eprintln!(
        "tpm_limit {tpm_limit} ({tokens} a request) over 3 replicas: {spent} tokens admitted ({} requests)",
        used.len()
    );
    assert!(spent >= tpm_limit, "{spent} < {tpm_limit}");
    assert!(
        spent <= tpm_limit + IN_FLIGHT as i64 * tokens,
        "{spent} tokens"
    );

    // Parallel requests: twelve at once, each held 1.5 s upstream, against a limit of 4.
    mock.rule(json!({"model": "gpt-4o-2024", "latency_ms": 1500}))
        .await;
    let par = new_key(json!({"max_parallel_requests": 4})).await;
    let (statuses, _) = hammer(&gws, &par, &chat("gpt-4o"), IN_FLIGHT, IN_FLIGHT).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    eprintln!("max_parallel_requests 4 over 3 replicas, 12 at once: {admitted} admitted");
    assert!((1..=4).contains(&admitted), "{statuses:?}");
    // Every slot is given back when its request ends.
    let mut conn = redis::Client::open(redis_url().unwrap().as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let held: Vec<String> = redis::cmd("KEYS")
            .arg(format!("llm:q:*:k:{}:p", sha256(&par)))
            .query(&mut conn)
            .unwrap();
        if held.is_empty() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "slots kept");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Budgets of a key, a team, a user and an end user, hammered through three replicas at once: spend ends
/// between the budget and the budget plus what the requests in flight cost, and every record of it (the
/// store, `/key/info` on every replica, `llm_spend_metric_total` summed over replicas, the spend logs)
/// equals successes x price to the micro-dollar.
#[actix_rt::test]
async fn three_replicas_hold_budgets_together_and_agree_on_spend() {
    let mock = Mock::start();
    mock.rule(json!({"model": "gpt-4o-2024", "latency_ms": 20}))
        .await;
    let Some(gws) = three_replicas(&mock).await else {
        return;
    };
    let admin = |path: &'static str, body: Value| admin_ok(&gws[0], path, body);
    let probe = key_of(&gws[0], json!({})).await;
    let (_, used) = hammer(&gws, &probe, &chat("gpt-4o"), 1, 1).await;
    let (_, price) = used[0];
    // 10.5 requests' worth.
    let budget = (price * 21 / 2) as f64 / 1e6;
    let suffix = rand::random::<u32>();
    let team = format!("bt-{suffix}");
    let user = format!("bu-{suffix}");
    let end_user = format!("be-{suffix}");
    admin("/team/new", json!({"team_id": team, "max_budget": budget})).await;
    admin(
        "/user/new",
        json!({"user_id": user, "max_budget": budget, "auto_create_key": false}),
    )
    .await;
    admin(
        "/customer/new",
        json!({"user_id": end_user, "max_budget": budget}),
    )
    .await;
    let key_of = |body: Value| key_of(&gws[0], body);
    let cases = [
        ("key", key_of(json!({ "max_budget": budget })).await, None),
        ("team", key_of(json!({ "team_id": team })).await, None),
        ("user", key_of(json!({ "user_id": user })).await, None),
        ("end user", key_of(json!({})).await, Some(end_user.clone())),
    ];
    let mut key_spend = 0;
    for (what, key, end_user) in &cases {
        let mut body = chat("gpt-4o");
        if let Some(u) = end_user {
            body["user"] = json!(u);
        }
        let (statuses, used) = hammer(&gws, key, &body, IN_FLIGHT, 60).await;
        let spent: i64 = used.iter().map(|u| u.1).sum();
        eprintln!(
            "{what} max_budget {budget} over 3 replicas: {} admitted, spend {spent} micro-USD",
            used.len()
        );
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 400),
            "{what}: {statuses:?}"
        );
        let max = price * 21 / 2;
        assert!(spent >= max, "{what}: {spent} < {max}");
        assert!(
            spent <= max + IN_FLIGHT as i64 * price,
            "{what}: {spent} micro-USD"
        );
        if *what == "key" {
            key_spend = spent;
        }
    }

    // Exact spend of the budgeted key, everywhere.
    let (key, hash) = (&cases[0].1, sha256(&cases[0].1));
    let pool = sqlx::PgPool::connect(gws[0].database_url().unwrap())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT spend_micros FROM llm_keys WHERE id = $1")
            .bind(&hash)
            .fetch_one(&pool)
            .await
            .unwrap();
        let logged: Option<i64> = sqlx::query_scalar(
            "SELECT sum(spend_micros)::bigint FROM llm_spend_logs WHERE api_key = $1",
        )
        .bind(&hash)
        .fetch_one(&pool)
        .await
        .unwrap();
        let mut infos = Vec::new();
        let mut metric = 0.0;
        for gw in &gws {
            let info = gw.admin_get(&format!("/key/info?key={key}")).await.json();
            infos.push((info["info"]["spend"].as_f64().unwrap() * 1e6).round() as i64);
            metric += gw
                .metrics()
                .await
                .sum("llm_spend_metric_total", &[("hashed_api_key", &hash)]);
        }
        let metric = (metric * 1e6).round() as i64;
        if stored == key_spend
            && logged == Some(key_spend)
            && metric == key_spend
            && infos.iter().all(|i| *i == key_spend)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "spend {key_spend}: store {stored}, spend logs {logged:?}, metrics {metric}, /key/info {infos:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A budget period ends once across three replicas (one of them resets it, in the store), and every
/// replica's budget gauges show the new period within a second.
#[actix_rt::test]
async fn three_replicas_reset_a_budget_once_and_all_show_it() {
    let mock = Mock::start();
    let Some(gws) = three_replicas(&mock).await else {
        return;
    };
    let key = key_of(&gws[0], json!({"max_budget": 1.0, "budget_duration": "3s"})).await;
    let hash = sha256(&key);
    let pool = sqlx::PgPool::connect(gws[0].database_url().unwrap())
        .await
        .unwrap();
    let reset_at = || async {
        sqlx::query_scalar::<_, Option<i64>>("SELECT budget_reset_at FROM llm_keys WHERE id = $1")
            .bind(&hash)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let first = reset_at().await;
    let remaining = |m: &Metrics| {
        m.sum(
            "llm_remaining_api_key_budget_metric",
            &[("hashed_api_key", &hash)],
        )
    };
    // Spend on every replica: each one's gauge shows less than the budget.
    for gw in &gws {
        assert_eq!(call(gw, &key, "gpt-4o").await, 200);
        metrics_until(gw, "spend in the budget gauge", |m| {
            let r = remaining(m);
            r > 0.0 && r < 1.0
        })
        .await;
    }
    let started = Instant::now();
    while reset_at().await == first {
        assert!(started.elapsed() < Duration::from_secs(10), "no reset");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = Instant::now();
    for gw in &gws {
        metrics_until(gw, "the new period in the budget gauge", |m| {
            remaining(m) == 1.0
        })
        .await;
    }
    let took = seen.elapsed();
    eprintln!("every replica's gauge showed the new period {took:?} after the store did");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let resets: usize = gws
        .iter()
        .map(|gw| {
            gw.log()
                .lines()
                .filter(|l| l.contains("budget period reset") && l.contains(&hash[..8]))
                .count()
        })
        .sum();
    assert_eq!(resets, 1, "one replica resets the period");
}

/// Seconds left of `pr-bad-1`'s cooldown on `gw`.
async fn cooldown_left(gw: &Gateway) -> f64 {
    health(gw, "pr-bad-1").await["cooldown_remaining_seconds"]
        .as_f64()
        .unwrap_or(0.0)
}

/// A deployment cooled down on one of three replicas: skipped by all of them while it lasts (state 2
/// everywhere, counted once), then probed by one replica only, whose outcome every replica follows.
#[actix_rt::test]
async fn three_replicas_share_a_cooldown_and_probe_it_once() {
    let Some(redis) = redis_url() else { return };
    let mock = Mock::start();
    let dep = |model: &str, id: &str| {
        format!(
            "  - model_name: g\n    llm_params: {{model: openai/{model}, api_base: \"{}\", api_key: sk-up}}\n    model_info: {{id: {id}}}\n",
            mock.base()
        )
    };
    let cfg = format!(
        "model_list:\n{}{}llm_settings:\n  callbacks: [prometheus]\n  service_callback: [prometheus_system]\nrouter_settings:\n  num_retries: 2\n  allowed_fails: 0\n  cooldown_time: 3\ngeneral_settings:\n  redis_url: {redis}\n",
        dep("pr-bad", "pr-bad-1"),
        dep("pr-ok", "pr-ok-1"),
    );
    mock.rule(json!({"model": "pr-bad", "status": 500})).await;
    let a = Gateway::start(&cfg).await;
    let Some(b) = a.replica(&cfg).await else {
        eprintln!("PostgreSQL only (LLM_TEST_DATABASE_URL): skipped");
        return;
    };
    let c = a.replica(&cfg).await.unwrap();
    let gws = [&a, &b, &c];
    let bad_calls = || async { mock.calls().await.get("pr-bad").copied().unwrap_or(0) };
    // Every replica skips it at once, state 2 everywhere.
    let cooled_everywhere = || async {
        let started = Instant::now();
        loop {
            let mut all = true;
            for gw in gws {
                let h = health(gw, "pr-bad-1").await;
                all &= h["cooling_down"] == true && h["state"] == 2;
            }
            if all {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "not cooled everywhere"
            );
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    };
    // A burst over the three replicas: every request answered (by pr-ok-1 when pr-bad-1 fails or is out).
    let body = chat("g");
    let burst = || async {
        let sends = (0..30).map(|i| gws[i % 3].post("/v1/chat/completions", &body));
        for r in futures_util::future::join_all(sends).await {
            assert_eq!(r.status, 200, "{}", r.body);
        }
    };
    while health(&a, "pr-bad-1").await["cooling_down"] != true {
        assert_eq!(a.post("/v1/chat/completions", &chat("g")).await.status, 200);
    }
    let took = cooled_everywhere().await;
    eprintln!("cooldown in force on every replica {took:?} after the first saw it");
    let cooled: f64 = futures_util::future::join_all(gws.map(|gw| gw.metrics()))
        .await
        .iter()
        .map(|m| {
            m.sum(
                "llm_deployment_cooled_down_total",
                &[("model_id", "pr-bad-1")],
            )
        })
        .sum();
    assert_eq!(cooled, 1.0, "counted once, where it was decided");

    // The cooldown ends while the deployment still fails: one replica probes it (one upstream call), the
    // probe fails, and the new cooldown is in force everywhere again.
    actix_rt::time::sleep(Duration::from_secs_f64(cooldown_left(&a).await + 0.2)).await;
    let before = bad_calls().await;
    let redis_fails = || async {
        let mut n = 0.0;
        for gw in gws {
            n += gw.metrics().await.sum("llm_redis_fails_total", &[]);
        }
        n
    };
    let fails = redis_fails().await;
    burst().await;
    let probes = bad_calls().await - before;
    if redis_fails().await == fails {
        assert_eq!(probes, 1, "one probe across the replicas");
    } else {
        // A replica that could not reach Redis just then probes on its own (the documented fallback).
        eprintln!("Redis calls failed during the burst: {probes} probes");
        assert!((1..=3).contains(&probes), "{probes}");
    }
    cooled_everywhere().await;

    // Back: the next probe succeeds on one replica, and every replica ends its probation with it.
    mock.rule(json!({"model": "pr-bad"})).await;
    actix_rt::time::sleep(Duration::from_secs_f64(cooldown_left(&a).await + 0.2)).await;
    burst().await;
    let started = Instant::now();
    for gw in gws {
        loop {
            let h = health(gw, "pr-bad-1").await;
            if h["cooling_down"] == false && h["state"] == 0 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "still out: {h}");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eprintln!(
        "recovery in force on every replica {:?} after the burst",
        started.elapsed()
    );
}
