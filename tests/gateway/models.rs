//! The model list at run time: the config file read again (`POST /config/reload`, SIGHUP) adds, changes and
//! removes deployments without a restart; a broken file is refused whole; requests already on a removed
//! deployment finish on it; `/v1/models`, `/health/deployments` and `/metrics` follow at once.

use crate::support::*;
use std::time::Duration;

fn deployment(group: &str, id: &str, extra: &str) -> String {
    answering(group, id, &format!("from {id}"), extra)
}

fn answering(group: &str, id: &str, answer: &str, extra: &str) -> String {
    format!(
        "  - model_name: {group}\n    llm_params: {{model: mock/{group}-model, mock_response: {answer}{extra}}}\n    model_info: {{id: {id}}}\n"
    )
}

fn config(deployments: &[String], router: &str) -> String {
    format!(
        "model_list:\n{}llm_settings:\n  callbacks: [prometheus]\nrouter_settings:\n{router}general_settings:\n  master_key: sk-master\n",
        deployments.concat()
    )
}

async fn model_ids(gw: &Gateway) -> Vec<String> {
    let r = gw.admin_get("/health/deployments").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["model_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn groups(gw: &Gateway) -> Vec<String> {
    let r = gw
        .get("/v1/models", &[("authorization", "Bearer sk-master")])
        .await;
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn answer_of(gw: &Gateway, group: &str) -> (u16, String) {
    let r = gw
        .post_with(
            "/v1/chat/completions",
            &chat(group),
            &[("authorization", "Bearer sk-master")],
        )
        .await;
    let text = if r.status == 200 {
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    } else {
        r.body.clone()
    };
    (r.status, text)
}

#[actix_rt::test]
async fn a_reload_adds_changes_and_removes_deployments() {
    let before = config(
        &[deployment("a", "a1", ""), deployment("b", "b1", "")],
        "  num_retries: 0\n",
    );
    let gw = Gateway::start(&before).await;
    assert_eq!(answer_of(&gw, "b").await.0, 200);
    metrics_until(&gw, "b1's state", |m| {
        m.count("llm_deployment_state", &[("model_id", "b1")]) == 1
    })
    .await;

    // a1 changes its answer (same labels: same series, same actor), a2 joins group a, b goes.
    let after = config(
        &[
            answering("a", "a1", "changed", ""),
            deployment("a", "a2", ""),
        ],
        "  num_retries: 0\n",
    );
    std::fs::write(gw.dir.join("config.yaml"), &after).unwrap();
    let r = gw.admin("/config/reload", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["added"], json!(["a2"]));
    assert_eq!(j["removed"], json!(["b1"]));
    assert_eq!(j["changed"], json!(["a1"]));

    assert_eq!(model_ids(&gw).await, ["a1", "a2"]);
    assert_eq!(groups(&gw).await, ["a"]);
    let (status, body) = answer_of(&gw, "b").await;
    assert_eq!(status, 404, "{body}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (status, text) = answer_of(&gw, "a").await;
        assert_eq!(status, 200);
        seen.insert(text);
    }
    assert!(
        seen.contains("changed") && seen.contains("from a2"),
        "{seen:?}"
    );
    assert!(!seen.contains("from a1"), "{seen:?}");
    // b1's series go once its last request ended; a2's state exists.
    let m = metrics_until(&gw, "b1's series removed", |m| {
        m.count("llm_deployment_state", &[("model_id", "b1")]) == 0
    })
    .await;
    assert_eq!(m.count("llm_deployment_state", &[("model_id", "a2")]), 1);
    assert_eq!(
        m.count(
            "llm_deployment_success_responses_total",
            &[("model_id", "b1")]
        ),
        0
    );
    assert!(
        m.sum(
            "llm_deployment_success_responses_total",
            &[("model_id", "a1")]
        ) >= 1.0,
        "a1 kept its series"
    );
}

#[actix_rt::test]
async fn a_broken_file_is_refused_whole_and_the_running_list_kept() {
    let good = config(&[deployment("a", "a1", "")], "");
    let gw = Gateway::start(&good).await;
    std::fs::write(
        gw.dir.join("config.yaml"),
        config(
            &[
                deployment("a", "a1", ""),
                "  - model_name: c\n    llm_params: {model: nope/x}\n".to_string(),
            ],
            "  routing_strategy: fastest-please\n",
        ),
    )
    .unwrap();
    let r = gw.admin("/config/reload", &json!({})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let msg = r.error()["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("model_list[1].llm_params.model") && msg.contains("routing_strategy"),
        "every problem listed: {msg}"
    );
    std::fs::write(gw.dir.join("config.yaml"), "model_list: [\n").unwrap();
    let r = gw.admin("/config/reload", &json!({})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(model_ids(&gw).await, ["a1"]);
    assert_eq!(answer_of(&gw, "a").await.0, 200);
    // Only the master key reloads.
    let r = gw.post("/config/reload", &json!({})).await;
    assert_eq!(r.status, 401);
}

/// SIGHUP reloads too; a request already on a deployment that the reload removes finishes on it.
#[actix_rt::test]
async fn sighup_reloads_and_in_flight_requests_finish_on_removed_deployments() {
    let gw = Gateway::start(&config(
        &[
            deployment("slow", "s1", ", mock_latency_ms: 1500"),
            deployment("a", "a1", ""),
        ],
        "",
    ))
    .await;
    let slow = {
        let url = gw.url("/v1/chat/completions");
        actix_rt::spawn(async move {
            let mut r = client()
                .post(url)
                .insert_header(("authorization", "Bearer sk-master"))
                .send_json(&chat("slow"))
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, body)
        })
    };
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(
        gw.dir.join("config.yaml"),
        config(&[deployment("a", "a1", "")], ""),
    )
    .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while model_ids(&gw).await != ["a1"] {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "from s1");
    assert_eq!(answer_of(&gw, "slow").await.0, 404);
    assert!(gw.log().contains("SIGHUP: config reloaded"), "{}", gw.log());
}

fn api_config(extra_general: &str) -> String {
    format!(
        "model_list:\n{}llm_settings:\n  callbacks: [prometheus]\ngeneral_settings:\n  master_key: sk-master\n  store_model_in_db: true\n{extra_general}",
        deployment("a", "a1", "")
    )
}

/// Create, use, update (one field), restart, delete: a deployment made through the API behaves as a
/// configured one, is stored, and never shows its upstream key.
#[actix_rt::test]
async fn models_made_through_the_api_serve_survive_a_restart_and_go() {
    let config = api_config("");
    let gw = Gateway::start(&config).await;
    let r = gw
        .admin(
            "/model/new",
            &json!({"model_name": "b", "litellm_params": {"model": "mock/b-model", "mock_response": "from the api", "api_key": "sk-upstream-secret-1"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("sk-upstream-secret-1"), "{}", r.body);
    let id = r.json()["model_info"]["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["litellm_params"]["api_key"], "********");
    // In force at once: routing, /v1/models, /health/deployments, /model/info.
    assert_eq!(answer_of(&gw, "b").await, (200, "from the api".to_string()));
    assert_eq!(groups(&gw).await, ["a", "b"]);
    assert_eq!(model_ids(&gw).await, ["a1".to_string(), id.clone()]);
    let info = gw
        .admin_get(&format!("/v1/model/info?litellm_model_id={id}"))
        .await;
    assert_eq!(info.status, 200, "{}", info.body);
    assert!(!info.body.contains("sk-upstream-secret-1"));
    assert_eq!(info.json()["data"][0]["model_info"]["db_model"], true);
    let all = gw.admin_get("/model/info").await.json();
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    assert_eq!(all["data"][0]["model_info"]["db_model"], false);
    let groups_info = gw.admin_get("/model_group/info").await.json();
    assert_eq!(groups_info["data"][1]["model_group"], "b");

    // Update one field: the rest stays.
    let r = gw
        .admin(
            "/model/update",
            &json!({"model_info": {"id": id}, "litellm_params": {"rpm": 7}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["litellm_params"]["rpm"], 7);
    assert_eq!(answer_of(&gw, "b").await, (200, "from the api".to_string()));
    let r = gw
        .admin(
            "/model/update",
            &json!({"model_info": {"id": id}, "litellm_params": {"model": "nope/x"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.error()["message"]
            .as_str()
            .unwrap()
            .contains("unknown provider"),
        "{}",
        r.body
    );

    // Mistakes are named; config entries are the file's; unknown ids are 404.
    let r = gw
        .admin(
            "/model/new",
            &json!({"model_name": "c", "litellm_params": {"model": "mock/c"}, "colour": 1}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error()["param"], "colour");
    let r = gw.admin("/model/new", &json!({"model_name": "c", "litellm_params": {"model": "mock/c"}, "model_info": {"id": "a1"}})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = gw.admin("/model/delete", &json!({"id": "a1"})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("config file"), "{}", r.body);
    // The server's environment cannot be read through the API: `os.environ/` only in credentials.
    let r = gw
        .admin("/model/new", &json!({"model_name": "c", "litellm_params": {"model": "mock/c"}, "model_info": {"note": "os.environ/HOME"}}))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("model_info.note") && !r.body.contains("/root"),
        "{}",
        r.body
    );
    // Ids are label values and message fields: a plain alphabet.
    let r = gw
        .admin("/model/new", &json!({"model_name": "c", "litellm_params": {"model": "mock/c"}, "model_info": {"id": "x|y"}}))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    // A masked key sent back keeps the stored one (the stored row still validates and serves).
    let r = gw
        .admin("/model/update", &json!({"model_info": {"id": id}, "litellm_params": {"api_key": "********", "mock_response": "from the api"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = gw
        .admin("/model/delete", &json!({"id": "no-such-model"}))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = gw
        .post(
            "/model/new",
            &json!({"model_name": "c", "litellm_params": {"model": "mock/c"}}),
        )
        .await;
    assert_eq!(r.status, 401, "master key only");

    // Stored: back after a restart, with the update.
    let gw = gw.restart(&config).await;
    assert_eq!(answer_of(&gw, "b").await, (200, "from the api".to_string()));
    let info = gw
        .admin_get(&format!("/model/info?litellm_model_id={id}"))
        .await
        .json();
    assert_eq!(info["data"][0]["litellm_params"]["rpm"], 7);

    let r = gw.admin("/model/delete", &json!({"id": id})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(answer_of(&gw, "b").await.0, 404);
    assert_eq!(groups(&gw).await, ["a"]);
    metrics_until(&gw, "the deleted deployment's series removed", |m| {
        m.count("llm_deployment_state", &[("model_id", &id)]) == 0
    })
    .await;
    let gw = gw.restart(&config).await;
    assert_eq!(model_ids(&gw).await, ["a1"]);
}

#[actix_rt::test]
async fn the_model_api_is_off_without_store_model_in_db() {
    let gw = Gateway::start(&config(&[deployment("a", "a1", "")], "")).await;
    let r = gw
        .admin(
            "/model/new",
            &json!({"model_name": "b", "litellm_params": {"model": "mock/b"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("store_model_in_db"), "{}", r.body);
    // Reading what runs needs no store.
    assert_eq!(gw.admin_get("/model/info").await.status, 200);
}

/// A model made on one replica is in force on another within a second (PostgreSQL; with Redis the change
/// is announced, without it the other replica's read-back finds it).
#[actix_rt::test]
async fn a_model_made_on_one_replica_is_in_force_on_the_others() {
    let redis = redis_url()
        .map(|r| format!("  redis_url: {r}\n"))
        .unwrap_or_default();
    let config = api_config(&redis);
    let a = Gateway::start(&config).await;
    let Some(b) = a.replica(&config).await else {
        eprintln!("PostgreSQL only (LLM_TEST_DATABASE_URL): skipped");
        return;
    };
    let r = a
        .admin(
            "/model/new",
            &json!({"model_name": "shared", "litellm_params": {"model": "mock/s", "mock_response": "made on a"}, "model_info": {"id": "shared-1"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let started = std::time::Instant::now();
    while answer_of(&b, "shared").await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never in force on b"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "in force on the other replica after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        answer_of(&b, "shared").await,
        (200, "made on a".to_string())
    );
    let r = b.admin("/model/delete", &json!({"id": "shared-1"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let started = std::time::Instant::now();
    while answer_of(&a, "shared").await.0 != 404 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never removed on a"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The models table is the schema's first change: a database written before versions were recorded (a
/// SQLite file made by the build before this one, `tests/fixtures/schema-v1.db`: team `fixture-team`, key
/// `sk-fixture-key-0001` with one request's spend) opens, keeps its data and takes the new version.
#[actix_rt::test]
async fn a_database_from_before_schema_versions_is_migrated() {
    let dir = scratch_dir();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema-v1.db"),
        dir.join("llm.db"),
    )
    .unwrap();
    let config = "model_list:\n  - {model_name: m, llm_params: {model: mock/m, mock_response: fixture answer}, model_info: {id: m1}}\ngeneral_settings:\n  master_key: sk-master\n  store_model_in_db: true\n";
    let gw = Gateway::start_in(dir.clone(), config, None).await;
    let info = gw.admin_get("/key/info?key=sk-fixture-key-0001").await;
    assert_eq!(info.status, 200, "{}", info.body);
    assert_eq!(info.json()["info"]["key_alias"], "fixture", "{}", info.body);
    assert_eq!(
        info.json()["info"]["team_id"],
        "fixture-team",
        "{}",
        info.body
    );
    let r = gw
        .post_with(
            "/v1/chat/completions",
            &chat("m"),
            &[("authorization", "Bearer sk-fixture-key-0001")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = gw
        .admin("/model/new", &json!({"model_name": "n", "litellm_params": {"model": "mock/n"}, "model_info": {"id": "n1"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(gw.log().contains("schema version applied"), "{}", gw.log());
    // Opened again: nothing left to apply, the model is there.
    let gw = gw.restart(config).await;
    assert_eq!(model_ids(&gw).await, ["m1", "n1"]);
    assert_eq!(
        gw.log().matches("schema version applied").count(),
        2,
        "versions 1 and 2, once: {}",
        gw.log()
    );
}
