//! Virtual keys, teams, users and end users through the management API: enforcement, spend, budget metrics,
//! budget resets, restarts. Runs on SQLite, and on PostgreSQL when `LLM_TEST_DATABASE_URL` is set.

use crate::support::*;

/// One model on the built-in mock; each request's cost is deterministic.
const CONFIG: &str = "model_list:\n  - model_name: m\n    llm_params:\n      model: mock/m\n      mock_response: Four words of answer\n      input_cost_per_token: 0.001\n      output_cost_per_token: 0.002\n  - model_name: other\n    llm_params: {model: mock/o}\nllm_settings:\n  callbacks: [prometheus]\n  prometheus_initialize_budget_metrics: true\ngeneral_settings:\n  master_key: sk-master\n";

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "same question every time"}]})
}

async fn call(gw: &Gateway, key: &str, body: &Value) -> Reply {
    gw.post_with(
        "/v1/chat/completions",
        body,
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await
}

fn cost_of(reply: &Reply) -> f64 {
    let u = &reply.json()["usage"];
    u["prompt_tokens"].as_f64().unwrap() * 0.001 + u["completion_tokens"].as_f64().unwrap() * 0.002
}

/// Rate limits use fixed one-minute windows: a check that needs several requests in one window waits out
/// the last seconds of a minute first.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[actix_rt::test]
async fn management_api_validates_and_guards() {
    let gw = Gateway::start(CONFIG).await;
    // The master key guards every admin route.
    let r = gw.post("/key/generate", &json!({})).await;
    assert_eq!(r.status, 401);
    r.error();
    let r = gw
        .post_with(
            "/key/generate",
            &json!({}),
            &[("authorization", "Bearer sk-not-master")],
        )
        .await;
    assert_eq!(r.status, 401);
    // Bad fields are named; nothing is written.
    let r = gw
        .admin("/key/generate", &json!({"max_budget": "lots"}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error()["param"], "max_budget");
    let r = gw
        .admin("/key/generate", &json!({"budget_duration": "soon"}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error()["param"], "budget_duration");
    let r = gw.admin("/key/generate", &json!({"colour": "red"})).await;
    assert_eq!(r.status, 400);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("unknown field `colour`"));
    let r = gw.admin("/key/generate", &json!({"team_id": "nope"})).await;
    assert_eq!(r.status, 400);
    let r = gw
        .post_raw(
            "/team/new",
            b"{oops".to_vec(),
            &[("authorization", "Bearer sk-master")],
        )
        .await;
    assert_eq!(r.status, 400);
    r.error();
    let list = gw.admin_get("/key/list").await.json();
    assert_eq!(list["total_count"], 0, "no half-written key");
    // Unknown ids are 404.
    assert_eq!(gw.admin_get("/key/info?key=sk-unknown").await.status, 404);
    assert_eq!(gw.admin_get("/team/info?team_id=nope").await.status, 404);
    assert_eq!(
        gw.admin("/team/update", &json!({"team_id": "nope", "max_budget": 1}))
            .await
            .status,
        404
    );
    assert_eq!(
        gw.admin("/key/delete", &json!({"keys": ["sk-unknown"]}))
            .await
            .status,
        404
    );
    assert_eq!(
        gw.admin("/user/delete", &json!({"user_ids": ["nobody"]}))
            .await
            .status,
        404
    );
    assert_eq!(
        gw.admin_get("/customer/info?end_user_id=nobody")
            .await
            .status,
        404
    );

    // Key lifecycle: generate, info, update, block, unblock, delete.
    let k = gw
        .admin(
            "/key/generate",
            &json!({"key_alias": "k", "models": ["m"], "duration": "1h", "metadata": {"a": 1}}),
        )
        .await;
    assert_eq!(k.status, 200, "{}", k.body);
    let key = k.json()["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-"));
    assert!(
        !gw.admin_get("/key/list").await.body.contains(&key),
        "keys are listed by hash only"
    );
    assert_eq!(call(&gw, &key, &ask("m")).await.status, 200);
    let r = call(&gw, &key, &ask("other")).await;
    assert_eq!(r.status, 401, "the key's models list");
    assert_eq!(
        gw.admin("/key/block", &json!({"key": key})).await.status,
        200
    );
    assert_eq!(call(&gw, &key, &ask("m")).await.status, 401);
    assert_eq!(
        gw.admin("/key/unblock", &json!({"key": key})).await.status,
        200
    );
    assert_eq!(call(&gw, &key, &ask("m")).await.status, 200);
    let r = gw
        .admin("/key/update", &json!({"key": key, "models": []}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(call(&gw, &key, &ask("other")).await.status, 200);
    let info = gw.admin_get(&format!("/key/info?key={key}")).await.json();
    assert_eq!(info["info"]["key_alias"], "k");
    assert!(info["info"]["expires"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        gw.admin("/key/delete", &json!({"keys": [key]}))
            .await
            .json()["deleted_keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(call(&gw, &key, &ask("m")).await.status, 401);
    // Keys never appear in the log.
    assert!(!gw.log().contains(&key));
}

#[actix_rt::test]
async fn the_whole_story_limits_budgets_metrics_reset_and_restart() {
    let gw = Gateway::start(CONFIG).await;
    // A team with a budget, a user, a key with an rpm limit, a key with a model limit and a short budget.
    let team = gw
        .admin("/team/new", &json!({"team_id": "team-a", "team_alias": "Team A", "max_budget": 10.0, "budget_duration": "30d"}))
        .await;
    assert_eq!(team.status, 200, "{}", team.body);
    assert!(team.json()["budget_reset_at"].as_str().is_some());
    let user = gw
        .admin(
            "/user/new",
            &json!({"user_id": "alice", "user_email": "a@example.com", "auto_create_key": false}),
        )
        .await;
    assert_eq!(user.status, 200, "{}", user.body);
    assert_eq!(
        gw.admin(
            "/team/member_add",
            &json!({"team_id": "team-a", "member": {"user_id": "alice", "role": "user"}})
        )
        .await
        .status,
        200
    );
    let limited = gw
        .admin("/key/generate", &json!({"team_id": "team-a", "user_id": "alice", "key_alias": "limited", "rpm_limit": 3, "model_rpm_limit": {"m": 100}, "model_tpm_limit": {"m": 100000}}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();

    // rpm: three requests pass, the fourth is refused with 429 and retry-after.
    fresh_minute().await;
    let mut cost = 0.0;
    for _ in 0..3 {
        let r = call(&gw, &limited, &ask("m")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        cost = cost_of(&r);
    }
    let r = call(&gw, &limited, &ask("m")).await;
    assert_eq!(r.status, 429);
    assert!(r.headers["retry-after"].parse::<u64>().unwrap() >= 1);
    assert_eq!(r.error()["type"], "rate_limit_error");

    // Budget: a key allowed about 2.5 requests of spend, resetting every few seconds.
    let budget = cost * 2.5;
    let spender = gw
        .admin("/key/generate", &json!({"team_id": "team-a", "key_alias": "spender", "max_budget": budget, "budget_duration": "4s"}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ok = 0;
    let refused = loop {
        let r = call(&gw, &spender, &ask("m")).await;
        if r.status != 200 {
            break r;
        }
        ok += 1;
        assert!(ok <= 3, "the budget did not stop the key");
    };
    assert_eq!(ok, 3, "spend 0, 1x, 2x are under the budget; 3x is not");
    assert_eq!(refused.status, 400);
    let e = refused.error();
    assert_eq!(e["type"], "budget_exceeded");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("Budget has been exceeded"));

    // Metrics: spend, tokens, budget gauges, rejections.
    let m = gw.metrics_after(8.0).await;
    let spender_hash = crate::support::sha256(&spender);
    let limited_hash = crate::support::sha256(&limited);
    let s = |m: &Metrics, name: &str, h: &str| m.sum(name, &[("hashed_api_key", h)]);
    assert!(close(
        s(&m, "llm_spend_metric_total", &limited_hash),
        3.0 * cost
    ));
    assert!(close(
        s(&m, "llm_spend_metric_total", &spender_hash),
        3.0 * cost
    ));
    let labelled = [
        ("team", "team-a"),
        ("team_alias", "Team A"),
        ("user", "alice"),
        ("api_key_alias", "limited"),
    ];
    assert!(
        close(m.sum("llm_spend_metric_total", &labelled), 3.0 * cost),
        "key, team and user labels"
    );
    assert!(s(&m, "llm_total_tokens_total", &limited_hash) > 0.0);
    assert!(close(
        s(&m, "llm_api_key_max_budget_metric", &spender_hash),
        budget
    ));
    assert!(close(
        s(&m, "llm_remaining_api_key_budget_metric", &spender_hash),
        budget - 3.0 * cost
    ));
    assert!(
        s(
            &m,
            "llm_api_key_budget_remaining_hours_metric",
            &spender_hash
        ) > 0.0
    );
    assert_eq!(
        s(&m, "llm_remaining_api_key_budget_metric", &limited_hash),
        f64::INFINITY,
        "no max budget"
    );
    assert!(close(
        m.sum(
            "llm_team_max_budget_metric",
            &[("team_id", "team-a"), ("team_alias", "Team A")]
        ),
        10.0
    ));
    assert!(close(
        m.sum("llm_remaining_team_budget_metric", &[("team_id", "team-a")]),
        10.0 - 6.0 * cost
    ));
    let hours = m.sum(
        "llm_team_budget_remaining_hours_metric",
        &[("team_id", "team-a")],
    );
    assert!(hours > 719.0 && hours <= 720.0, "{hours}");
    assert_eq!(
        m.sum(
            "llm_remaining_api_key_requests_for_model",
            &[("hashed_api_key", &limited_hash), ("model", "m")]
        ),
        97.0
    );
    assert!(
        m.sum(
            "llm_remaining_api_key_tokens_for_model",
            &[("hashed_api_key", &limited_hash), ("model", "m")]
        ) < 100000.0
    );
    assert_eq!(
        m.count(
            "llm_remaining_api_key_requests_for_model",
            &[("hashed_api_key", &spender_hash)]
        ),
        0
    );
    assert_eq!(
        m.sum(
            "llm_proxy_failed_requests_metric_total",
            &[
                ("exception_class", "RateLimitError"),
                ("exception_status", "429"),
                ("hashed_api_key", &limited_hash)
            ]
        ),
        1.0
    );
    assert_eq!(
        m.sum(
            "llm_proxy_failed_requests_metric_total",
            &[
                ("exception_class", "BudgetExceededError"),
                ("exception_status", "400"),
                ("api_key_alias", "spender")
            ]
        ),
        1.0
    );

    // The spend log has every successful request, attributed.
    let logs = gw.admin_get("/spend/logs?team_id=team-a").await.json();
    let rows = logs["data"].as_array().unwrap();
    assert_eq!(rows.iter().filter(|r| r["status"] == "success").count(), 6);
    assert!(rows
        .iter()
        .all(|r| r["model_group"] == "m" && !r["model_id"].as_str().unwrap().is_empty()));
    let logged: f64 = rows.iter().map(|r| r["spend"].as_f64().unwrap()).sum();
    assert!(close(logged, 6.0 * cost));
    let report = gw
        .admin_get("/global/spend/report?group_by=key")
        .await
        .json();
    assert!(close(report["total_spend"].as_f64().unwrap(), 6.0 * cost));

    // The budget resets after its duration, without a restart.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(12);
    loop {
        let info = gw
            .admin_get(&format!("/key/info?key={spender}"))
            .await
            .json();
        if info["info"]["spend"].as_f64() == Some(0.0) {
            assert!(info["info"]["budget_reset_at"].as_str().is_some());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "budget never reset: {info}"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        call(&gw, &spender, &ask("m")).await.status,
        200,
        "a fresh period admits again"
    );
    let m = gw.metrics_after(9.0).await;
    assert!(close(
        s(&m, "llm_remaining_api_key_budget_metric", &spender_hash),
        budget - cost
    ));

    // Restart: spend, keys and gauges survive.
    let team_spend = gw.admin_get("/team/info?team_id=team-a").await.json()["team_info"]["spend"]
        .as_f64()
        .unwrap();
    assert!(close(team_spend, 7.0 * cost));
    let gw = gw.restart(CONFIG).await;
    let info = gw
        .admin_get(&format!("/key/info?key={limited}"))
        .await
        .json();
    assert!(
        close(info["info"]["spend"].as_f64().unwrap(), 3.0 * cost),
        "{info}"
    );
    let t = gw.admin_get("/team/info?team_id=team-a").await.json();
    assert!(
        close(t["team_info"]["spend"].as_f64().unwrap(), 7.0 * cost),
        "{t}"
    );
    assert_eq!(t["team_info"]["members_with_roles"][0]["user_id"], "alice");
    assert_eq!(
        gw.admin_get("/user/info?user_id=alice").await.json()["keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Budget gauges exist from boot (prometheus_initialize_budget_metrics), before any request.
    let m = gw.metrics().await;
    assert!(close(
        m.sum("llm_remaining_team_budget_metric", &[("team_id", "team-a")]),
        10.0 - 7.0 * cost
    ));
    assert!(close(
        s(&m, "llm_api_key_max_budget_metric", &spender_hash),
        budget
    ));
    // The key still works (within its rpm window it is still limited: three were taken this minute).
    let r = call(&gw, &spender, &ask("m")).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[actix_rt::test]
async fn concurrent_requests_never_overspend_and_spend_is_exact() {
    let gw = Gateway::start(CONFIG).await;
    let probe = gw.admin("/key/generate", &json!({})).await.json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let cost = cost_of(&call(&gw, &probe, &ask("m")).await);
    let key = gw
        .admin(
            "/key/generate",
            &json!({"key_alias": "busy", "max_budget": cost * 100.5}),
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // 200 requests, at most 20 in flight at once.
    let workers: Vec<_> = (0..20)
        .map(|_| {
            let (url, key) = (gw.url("/v1/chat/completions"), key.clone());
            async move {
                let client = client();
                let mut statuses = Vec::new();
                for _ in 0..10 {
                    let r = client
                        .post(url.as_str())
                        .insert_header(("authorization", format!("Bearer {key}")))
                        .send_json(&ask("m"))
                        .await
                        .unwrap();
                    statuses.push(r.status().as_u16());
                }
                statuses
            }
        })
        .collect();
    let statuses: Vec<u16> = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 400),
        "{statuses:?}"
    );
    // The budget allows 101 (spend 100 x cost is still under 100.5 x cost); at most 20 more were in flight.
    assert!((101..=121).contains(&ok), "{ok} admitted");
    let info = gw.admin_get(&format!("/key/info?key={key}")).await.json();
    let spend = info["info"]["spend"].as_f64().unwrap();
    assert!(
        close(spend, ok as f64 * cost),
        "spend {spend} for {ok} requests of {cost}"
    );
    let m = gw.metrics_after(201.0).await;
    assert!(close(
        m.sum("llm_spend_metric_total", &[("api_key_alias", "busy")]),
        ok as f64 * cost
    ));
    assert_eq!(
        m.sum(
            "llm_proxy_total_requests_metric_total",
            &[("api_key_alias", "busy"), ("status_code", "200")]
        ),
        ok as f64
    );
    let logs = gw
        .admin_get(&format!("/spend/logs?api_key={key}&size=1000"))
        .await
        .json();
    assert_eq!(logs["total"], ok as u64);
}

#[actix_rt::test]
async fn end_users_and_team_limits_are_enforced() {
    let gw = Gateway::start(CONFIG).await;
    let probe = gw.admin("/key/generate", &json!({})).await.json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let cost = cost_of(&call(&gw, &probe, &ask("m")).await);
    assert_eq!(
        gw.admin(
            "/customer/new",
            &json!({"user_id": "cust-1", "max_budget": cost * 1.5})
        )
        .await
        .status,
        200
    );
    let mut body = ask("m");
    body["user"] = json!("cust-1");
    assert_eq!(call(&gw, &probe, &body).await.status, 200);
    assert_eq!(call(&gw, &probe, &body).await.status, 200);
    let r = call(&gw, &probe, &body).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error()["type"], "budget_exceeded");
    let c = gw
        .admin_get("/customer/info?end_user_id=cust-1")
        .await
        .json();
    assert!(close(c["spend"].as_f64().unwrap(), 2.0 * cost));
    assert_eq!(
        gw.admin(
            "/customer/update",
            &json!({"user_id": "cust-1", "max_budget": 100})
        )
        .await
        .status,
        200
    );
    assert_eq!(call(&gw, &probe, &body).await.status, 200);
    assert_eq!(
        gw.admin(
            "/customer/update",
            &json!({"user_id": "cust-1", "blocked": true})
        )
        .await
        .status,
        200
    );
    assert_eq!(call(&gw, &probe, &body).await.status, 403);

    // A team's rpm limit binds all its keys together; its models list too.
    fresh_minute().await;
    gw.admin(
        "/team/new",
        &json!({"team_id": "t2", "rpm_limit": 2, "models": ["m"]}),
    )
    .await;
    let a = gw
        .admin("/key/generate", &json!({"team_id": "t2"}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = gw
        .admin("/key/generate", &json!({"team_id": "t2"}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(call(&gw, &a, &ask("other")).await.status, 401);
    assert_eq!(call(&gw, &a, &ask("m")).await.status, 200);
    assert_eq!(call(&gw, &b, &ask("m")).await.status, 200);
    assert_eq!(call(&gw, &b, &ask("m")).await.status, 429);
    // max_parallel_requests and tpm on a key.
    let t = gw
        .admin("/key/generate", &json!({"tpm_limit": 1}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(call(&gw, &t, &ask("m")).await.status, 200);
    assert_eq!(
        call(&gw, &t, &ask("m")).await.status,
        429,
        "the first request used the minute's tokens"
    );
}

#[actix_rt::test]
async fn a_broken_stream_is_charged_for_what_it_generated() {
    let mock = Mock::start();
    let gw = Gateway::start(&upstream_config(
        &mock,
        "general_settings:\n  master_key: sk-master\n",
    ))
    .await;
    let key = gw
        .admin("/key/generate", &json!({"key_alias": "streamer"}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    mock.rule(json!({"model": "gpt-4o-2024", "cut_stream_after": 3}))
        .await;
    let mut body = chat("gpt-4o");
    body["stream"] = json!(true);
    let r = call(&gw, &key, &body).await;
    assert_eq!(r.status, 200);
    assert!(r.sse_data().last().unwrap().contains("error"));
    // Text came through before the break: the key pays for it, and the spend log says the request failed.
    let spend = gw.admin_get(&format!("/key/info?key={key}")).await.json()["info"]["spend"]
        .as_f64()
        .unwrap();
    assert!(spend > 0.0, "{spend}");
    let logs = gw.admin_get("/spend/logs").await.json();
    let row = &logs["data"][0];
    assert_eq!(row["status"], "failure");
    assert!(close(row["spend"].as_f64().unwrap(), spend));
    assert!(row["completion_tokens"].as_i64().unwrap() > 0);
}

/// Two replicas on one PostgreSQL database: each enforces the key's budget on the spend of both (read back
/// at every flush), not only on its own share. Skipped on SQLite, whose file one process owns.
#[actix_rt::test]
async fn replicas_on_one_database_enforce_the_shared_budget() {
    let a = Gateway::start(CONFIG).await;
    let Some(b) = a.replica(CONFIG).await else {
        eprintln!("SQLite run: the shared-budget test needs PostgreSQL (LLM_TEST_DATABASE_URL)");
        return;
    };
    let first = call(&a, "sk-master", &ask("m")).await;
    let cost = cost_of(&first);
    // Room for 10 requests in all.
    let r = a
        .admin(
            "/key/generate",
            &json!({"max_budget": cost * 10.0 - cost / 2.0}),
        )
        .await;
    let key = r.json()["key"].as_str().unwrap().to_owned();
    for _ in 0..6 {
        assert_eq!(call(&a, &key, &ask("m")).await.status, 200);
        assert_eq!(call(&b, &key, &ask("m")).await.status, 200);
    }
    // Each replica spent 6 of the 10: alone, neither is over budget. After a flush each sees 12.
    actix_rt::time::sleep(std::time::Duration::from_millis(2500)).await;
    for gw in [&a, &b] {
        let r = call(gw, &key, &ask("m")).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.error()["type"], "budget_exceeded");
    }
    let info = a.admin_get(&format!("/key/info?key={key}")).await.json();
    assert!(
        close(info["info"]["spend"].as_f64().unwrap(), cost * 12.0),
        "{info}"
    );

    // A key blocked, then deleted, on one replica stops working on the other after a flush.
    let r = a.admin("/key/generate", &json!({})).await;
    let other = r.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(call(&b, &other, &ask("m")).await.status, 200);
    assert_eq!(
        a.admin("/key/block", &json!({"key": other})).await.status,
        200
    );
    until_status(&b, &other, 401).await;
    assert_eq!(
        a.admin("/key/unblock", &json!({"key": other})).await.status,
        200
    );
    until_status(&b, &other, 200).await;
    assert_eq!(
        a.admin("/key/delete", &json!({"keys": [other]}))
            .await
            .status,
        200
    );
    until_status(&b, &other, 401).await;
}

/// Calls `gw` with `key` until it answers `want` (another replica's change arrives with a flush), or fails
/// after 5 s.
async fn until_status(gw: &Gateway, key: &str, want: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = call(gw, key, &ask("m")).await;
        if r.status == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {} instead of {want}: {}",
            r.status,
            r.body
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Two replicas sharing Redis enforce one key's rpm limit together: 4 per minute in all, not 4 each.
#[actix_rt::test]
async fn replicas_share_rate_limits_through_redis() {
    let Some(redis) = redis_url() else { return };
    let config = format!("{CONFIG}  redis_url: {redis}\n");
    let a = Gateway::start(&config).await;
    // Replicas share a database (PostgreSQL); on SQLite each has its own file, and the same key is made on
    // both, as a shared database would give (SQLite gateways on one Redis share one namespace).
    let (b, shared_db) = match a.replica(&config).await {
        Some(b) => (b, true),
        None => (Gateway::start(&config).await, false),
    };
    let key = format!(
        "sk-shared-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    for gw in if shared_db { vec![&a] } else { vec![&a, &b] } {
        let r = gw
            .admin("/key/generate", &json!({"key": key, "rpm_limit": 4}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    fresh_minute().await;
    for gw in [&a, &b, &a, &b] {
        assert_eq!(call(gw, &key, &ask("m")).await.status, 200);
    }
    // Leased from one counter in Redis: the fifth is refused at once, on either replica.
    for gw in [&a, &b] {
        let r = call(gw, &key, &ask("m")).await;
        assert_eq!(r.status, 429, "{}", r.body);
        assert!(r.headers.contains_key("retry-after"));
    }
    // After a sync (every 200 ms) each replica's own window is in Redis too (metrics, outage mode).
    actix_rt::time::sleep(std::time::Duration::from_millis(700)).await;
    // In Redis: one field per replica holding its own count (written whole at every sync, so a push
    // repeated after a lost answer counts nothing twice), 4 in all after several syncs.
    let minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60;
    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let fields: Vec<u64> = redis::cmd("HVALS")
        .arg(format!("llm:rlh:k:{}:{minute}:r", sha256(&key)))
        .query(&mut conn)
        .unwrap();
    assert_eq!(fields, [2, 2], "one field per replica");
    // The lease counter: every request granted, none more.
    let counters: Vec<String> = redis::cmd("KEYS")
        .arg(format!("llm:q:*:k:{}:r:{minute}", sha256(&key)))
        .query(&mut conn)
        .unwrap();
    assert_eq!(counters.len(), 1, "{counters:?}");
    let claimed: u64 = redis::cmd("GET")
        .arg(&counters[0])
        .query(&mut conn)
        .unwrap();
    assert_eq!(claimed, 4);
}

/// Internal users: their own rpm limit over all their keys, and `/user/list` with paging.
#[actix_rt::test]
async fn user_rate_limits_and_user_list() {
    let gw = Gateway::start(CONFIG).await;
    let r = gw
        .admin(
            "/user/new",
            &json!({"user_id": "bob", "rpm_limit": 2, "user_email": "bob@example.com"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let first = r.json()["key"].as_str().unwrap().to_owned();
    let second = gw
        .admin("/key/generate", &json!({"user_id": "bob"}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        gw.admin(
            "/user/new",
            &json!({"user_id": "carol", "auto_create_key": false})
        )
        .await
        .status,
        200
    );
    fresh_minute().await;
    assert_eq!(call(&gw, &first, &ask("m")).await.status, 200);
    assert_eq!(call(&gw, &second, &ask("m")).await.status, 200);
    let r = call(&gw, &first, &ask("m")).await;
    assert_eq!(r.status, 429, "the user's two keys share the user's limit");
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("rpm_limit of user bob"));

    let list = gw.admin_get("/user/list?page_size=1").await.json();
    assert_eq!(list["total"], 2);
    assert_eq!(list["total_pages"], 2);
    assert_eq!(list["users"][0]["user_id"], "bob");
    assert_eq!(list["users"][0]["rpm_limit"], 2);
    let list = gw.admin_get("/user/list?page=2&page_size=1").await.json();
    assert_eq!(list["users"][0]["user_id"], "carol");
    let r = gw.admin_get("/user/list?page=0").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error()["param"], "page");
    let r = gw.get("/user/list", &[]).await;
    assert_eq!(r.status, 401);
}

/// `maximum_spend_logs_retention_period`: each retention pass (here every second) deletes the spend-log rows
/// older than the period and keeps the newer ones.
#[actix_rt::test]
async fn spend_logs_past_the_retention_period_are_deleted() {
    let config = CONFIG.replace(
        "general_settings:\n  master_key: sk-master\n",
        "general_settings:\n  master_key: sk-master\n  maximum_spend_logs_retention_period: 3s\n  maximum_spend_logs_retention_interval: 1s\n",
    );
    let gw = Gateway::start(&config).await;
    let rows = |v: Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["model_group"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(call(&gw, "sk-master", &ask("m")).await.status, 200);
    assert_eq!(
        rows(gw.admin_get("/spend/logs").await.json()),
        ["m"],
        "the row is logged (and younger than the period)"
    );
    // Past the period: the next pass deletes it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !rows(gw.admin_get("/spend/logs").await.json()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old row was never deleted"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A new row stays until it, too, is older than the period.
    assert_eq!(call(&gw, "sk-master", &ask("other")).await.status, 200);
    actix_rt::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(rows(gw.admin_get("/spend/logs").await.json()), ["other"]);
    assert!(
        gw.log().contains("spend log retention"),
        "the deletion is logged: {}",
        gw.log()
    );
}
