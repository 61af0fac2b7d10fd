//! Replicas as one gateway: a change made on one replica is in force on the others at once, through Redis
//! announcements (the read-back every second stays as the backstop). PostgreSQL and Redis only.

use crate::support::*;
use std::time::{Duration, Instant};

const CONFIG: &str = "model_list:\n  - model_name: m\n    llm_params: {model: mock/m}\n  - model_name: other\n    llm_params: {model: mock/o}\nllm_settings:\n  callbacks: [prometheus]\ngeneral_settings:\n  master_key: sk-master\n";

async fn call(gw: &Gateway, key: &str, model: &str) -> u16 {
    gw.post_with(
        "/v1/chat/completions",
        &chat(model),
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await
    .status
}

/// How long until `gw` answers `want` for `key` on `model`; fails past 5 s.
async fn until(gw: &Gateway, key: &str, model: &str, want: u16) -> Duration {
    let started = Instant::now();
    loop {
        if call(gw, key, model).await == want {
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
    let r = a
        .admin(
            "/team/new",
            &json!({"team_id": "tr", "models": ["m", "other"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A key asked for on B before it exists (remembered there as unknown), then made on A: usable on B at
    // once, not after the 5 s the unknown key is remembered.
    let key = format!(
        "sk-replica-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    );
    assert_eq!(call(&b, &key, "m").await, 401);
    let r = a
        .admin("/key/generate", &json!({"team_id": "tr", "key": key}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let made = until(&b, &key, "m", 200).await;
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
        took.push(until(&b, &key, "m", 401).await);
        assert_eq!(
            a.admin("/key/unblock", &json!({"key": key})).await.status,
            200
        );
        took.push(until(&b, &key, "m", 200).await);
    }
    // A team's narrowed model list.
    let r = a
        .admin("/team/update", &json!({"team_id": "tr", "models": ["m"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    took.push(until(&b, &key, "other", 401).await);
    // A key's budget.
    let r = a
        .admin("/key/update", &json!({"key": key, "max_budget": 0}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    took.push(until(&b, &key, "m", 400).await);
    // The team's deletion (which deletes its keys).
    let r = a.admin("/team/delete", &json!({"team_ids": ["tr"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    took.push(until(&b, &key, "m", 401).await);
    eprintln!("propagation times: {took:?}");
    for t in &took {
        assert!(*t < Duration::from_millis(500), "{took:?}");
    }
    assert!(
        b.admin_get("/team/info?team_id=tr").await.status == 404,
        "the team is gone on the other replica too"
    );
}
