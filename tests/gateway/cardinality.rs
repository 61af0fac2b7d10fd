//! `/metrics` at scale: the cardinality controls (`prometheus_metrics_config`, series TTLs, series of
//! deleted entities removed), the optional budget gauges of users and customers, custom labels on the
//! cooldown counter, and a large exposition streamed in chunks (plain and gzip) with every series once.

use crate::support::*;
use std::time::{Duration, Instant};

const MOCK: &str =
    "model_list:\n  - {model_name: a, llm_params: {model: mock/x, input_cost_per_token: 0.001, output_cost_per_token: 0.002}, model_info: {id: a1}}\n";

/// Scrapes until `ok` holds, for up to `secs` (the TTL tests wait for a sweep).
async fn metrics_within(
    gw: &Gateway,
    secs: u64,
    what: &str,
    ok: impl Fn(&Metrics) -> bool,
) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let m = gw.metrics().await;
        if ok(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "metrics never showed {what}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `prometheus_metrics_config`: only the listed families exist, `include_labels` keeps only those labels,
/// a group without it keeps all; LiteLLM's names (`litellm_...`) are accepted.
#[actix_rt::test]
async fn metrics_config_keeps_only_the_listed_families_and_labels() {
    let gw = Gateway::start(&format!(
        "{MOCK}llm_settings:\n  callbacks: [prometheus]\n  prometheus_metrics_config:\n    - group: requests\n      metrics: [llm_proxy_total_requests_metric, litellm_spend_metric]\n      include_labels: [hashed_api_key, requested_model]\n    - group: health\n      metrics: [llm_deployment_state]\n"
    ))
    .await;
    for u in ["u1", "u2", "u3"] {
        let mut body = chat("a");
        body["user"] = json!(u);
        assert_eq!(gw.post("/v1/chat/completions", &body).await.status, 200);
    }
    let m = gw.metrics_after(3.0).await;
    let families: std::collections::BTreeSet<&str> = m.types.keys().map(String::as_str).collect();
    assert_eq!(
        families,
        [
            "llm_proxy_total_requests_metric_total",
            "llm_proxy_total_requests_metric_created",
            "llm_spend_metric_total",
            "llm_spend_metric_created",
            "llm_deployment_state",
            "llm_metrics_series_dropped_total",
            "llm_metrics_series_dropped_created",
        ]
        .into_iter()
        .collect(),
        "only the listed families (and the dropped-series counter)"
    );
    assert_eq!(
        m.label_names("llm_proxy_total_requests_metric_total"),
        set(&["hashed_api_key", "requested_model"])
    );
    // Three end users, one series: the label that told them apart is gone.
    assert_eq!(m.count("llm_proxy_total_requests_metric_total", &[]), 1);
    assert_eq!(m.sum("llm_proxy_total_requests_metric_total", &[]), 3.0);
    assert!(m.sum("llm_spend_metric_total", &[]) > 0.0);
    assert!(m.label_names("llm_deployment_state").contains("api_base"));
}

/// `prometheus_metrics_config` mistakes fail `--check-config`, each with its path.
#[test]
fn metrics_config_mistakes_are_named() {
    let dir = scratch_dir();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        format!("{MOCK}llm_settings:\n  prometheus_metrics_config:\n    - group: g\n      metrics: [llm_spend_metric, llm_no_such_metric]\n      include_labels: [hashed_api_key, colour]\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm"))
        .args(["--check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("llm_settings.prometheus_metrics_config[0].metrics[1]")
            && text.contains("llm_no_such_metric"),
        "{text}"
    );
    assert!(
        text.contains("llm_settings.prometheus_metrics_config[0].include_labels[1]")
            && text.contains("colour"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `prometheus_metrics_ttl_seconds`: request series not updated for longer are removed (the deployment
/// states stay); a series that moves again comes back from zero.
#[actix_rt::test]
async fn idle_series_go_after_the_ttl() {
    let gw = Gateway::start(&format!(
        "{MOCK}llm_settings:\n  callbacks: [prometheus]\n  prometheus_metrics_ttl_seconds: 1\n  prometheus_metrics_cleanup_interval_seconds: 1\n"
    ))
    .await;
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("a")).await.status,
        200
    );
    gw.metrics_after(1.0).await;
    let m = metrics_within(&gw, 20, "the idle series removed", |m| {
        m.count("llm_proxy_total_requests_metric_total", &[]) == 0
    })
    .await;
    assert_eq!(m.count("llm_spend_metric_total", &[]), 0);
    assert_eq!(m.count("llm_request_total_latency_metric_count", &[]), 0);
    assert_eq!(m.count("llm_deployment_total_requests_total", &[]), 0);
    assert_eq!(
        m.count("llm_deployment_state", &[("model_id", "a1")]),
        1,
        "a deployment's state is not a request series"
    );
    assert_eq!(m.types["llm_proxy_total_requests_metric_total"], "counter");
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("a")).await.status,
        200
    );
    let m = gw.metrics_after(1.0).await;
    assert_eq!(m.sum("llm_proxy_total_requests_metric_total", &[]), 1.0);
}

/// `prometheus_end_user_metrics_ttl_seconds`: an end user's series go when idle, and the end user no
/// longer counts against `prometheus_end_user_metrics_max_series_per_metric`, so a new one gets its own
/// label value instead of `other`. Series without an end user stay.
#[actix_rt::test]
async fn idle_end_users_free_their_place() {
    let gw = Gateway::start(&format!(
        "{MOCK}llm_settings:\n  callbacks: [prometheus]\n  prometheus_end_user_metrics_max_series_per_metric: 1\n  prometheus_end_user_metrics_ttl_seconds: 1\n  prometheus_metrics_cleanup_interval_seconds: 1\n"
    ))
    .await;
    let with_user = |u: &str| {
        let mut body = chat("a");
        body["user"] = json!(u);
        body
    };
    let total = "llm_proxy_total_requests_metric_total";
    assert_eq!(
        gw.post("/v1/chat/completions", &with_user("first"))
            .await
            .status,
        200
    );
    assert_eq!(
        gw.post("/v1/chat/completions", &with_user("second"))
            .await
            .status,
        200
    );
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("a")).await.status,
        200
    );
    let m = gw.metrics_after(3.0).await;
    assert_eq!(m.sum(total, &[("end_user", "first")]), 1.0);
    assert_eq!(
        m.sum(total, &[("end_user", "other")]),
        1.0,
        "past the cap of one"
    );
    metrics_within(&gw, 20, "the end users' series removed", |m| {
        m.count(total, &[("end_user", "first")]) == 0
            && m.count(total, &[("end_user", "other")]) == 0
    })
    .await;
    let m = gw.metrics().await;
    assert_eq!(m.sum(total, &[("end_user", "")]), 1.0, "no end user: kept");
    assert_eq!(
        gw.post("/v1/chat/completions", &with_user("third"))
            .await
            .status,
        200
    );
    let m = gw.metrics_after(2.0).await;
    assert_eq!(
        m.sum(total, &[("end_user", "third")]),
        1.0,
        "the freed place is taken"
    );
}

/// A deleted key's series go from every family, and a deleted team's (its budget gauges and the series
/// labelled with it), so nothing about them is kept until restart.
#[actix_rt::test]
async fn deleted_keys_and_teams_lose_their_series() {
    let gw = Gateway::start(&format!(
        "{MOCK}llm_settings:\n  callbacks: [prometheus]\ngeneral_settings:\n  master_key: sk-master\n"
    ))
    .await;
    let r = gw
        .admin("/team/new", &json!({"team_id": "t-del", "max_budget": 5.0}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut keys = Vec::new();
    for alias in ["stays", "goes"] {
        let r = gw
            .admin(
                "/key/generate",
                &json!({"team_id": "t-del", "key_alias": alias, "max_budget": 1.0}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        keys.push(r.json()["key"].as_str().unwrap().to_owned());
    }
    for k in &keys {
        let auth = format!("Bearer {k}");
        let r = gw
            .post_with(
                "/v1/chat/completions",
                &chat("a"),
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let (stays, goes) = (sha256(&keys[0]), sha256(&keys[1]));
    let m = gw.metrics_after(2.0).await;
    for h in [&stays, &goes] {
        assert_eq!(
            m.count(
                "llm_proxy_total_requests_metric_total",
                &[("hashed_api_key", h)]
            ),
            1
        );
        assert_eq!(
            m.count(
                "llm_remaining_api_key_budget_metric",
                &[("hashed_api_key", h)]
            ),
            1
        );
    }
    let r = gw.admin("/key/delete", &json!({"keys": [keys[1]]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = metrics_until(&gw, "the deleted key's series removed", |m| {
        m.count(
            "llm_remaining_api_key_budget_metric",
            &[("hashed_api_key", &goes)],
        ) == 0
    })
    .await;
    for (name, l, _) in &m.samples {
        assert_ne!(
            l.get("hashed_api_key"),
            Some(&goes),
            "{name} still names the deleted key"
        );
    }
    assert_eq!(
        m.count(
            "llm_proxy_total_requests_metric_total",
            &[("hashed_api_key", &stays)]
        ),
        1
    );
    assert_eq!(
        m.count("llm_spend_metric_total", &[("hashed_api_key", &stays)]),
        1
    );

    let r = gw
        .admin("/team/delete", &json!({"team_ids": ["t-del"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = metrics_until(&gw, "the deleted team's series removed", |m| {
        m.count("llm_remaining_team_budget_metric", &[("team_id", "t-del")]) == 0
    })
    .await;
    for (name, l, _) in &m.samples {
        assert_ne!(
            l.get("team").map(String::as_str),
            Some("t-del"),
            "{name} still names the deleted team"
        );
    }
}

/// The budget gauges of internal users and of end users (customers) with a budget: max, remaining and
/// hours to reset, set on create, moved by requests, removed on delete.
#[actix_rt::test]
async fn user_and_customer_budget_gauges() {
    let gw = Gateway::start(&format!(
        "{MOCK}llm_settings:\n  callbacks: [prometheus]\ngeneral_settings:\n  master_key: sk-master\n"
    ))
    .await;
    let r = gw
        .admin(
            "/user/new",
            &json!({"user_id": "alice", "max_budget": 10.0, "budget_duration": "30d"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let key = r.json()["key"].as_str().unwrap().to_owned();
    let r = gw
        .admin(
            "/customer/new",
            &json!({"user_id": "cust-9", "max_budget": 4.0}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = gw
        .admin("/customer/new", &json!({"user_id": "cust-free"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let m = metrics_until(&gw, "the new budgets", |m| {
        m.count("llm_user_max_budget_metric", &[("user", "alice")]) == 1
            && m.count("llm_customer_max_budget_metric", &[("end_user", "cust-9")]) == 1
    })
    .await;
    assert_eq!(
        m.sum("llm_remaining_user_budget_metric", &[("user", "alice")]),
        10.0
    );
    let hours = m.sum(
        "llm_user_budget_remaining_hours_metric",
        &[("user", "alice")],
    );
    assert!((719.0..=720.0).contains(&hours), "{hours}");
    assert_eq!(
        m.sum(
            "llm_remaining_customer_budget_metric",
            &[("end_user", "cust-9")]
        ),
        4.0
    );
    assert_eq!(
        m.count(
            "llm_remaining_customer_budget_metric",
            &[("end_user", "cust-free")]
        ),
        0,
        "a customer without a budget has no budget gauges"
    );

    let mut body = chat("a");
    body["user"] = json!("cust-9");
    let auth = format!("Bearer {key}");
    let r = gw
        .post_with("/v1/chat/completions", &body, &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let spend = r.json()["usage"]["prompt_tokens"].as_f64().unwrap() * 0.001
        + r.json()["usage"]["completion_tokens"].as_f64().unwrap() * 0.002;
    let m = metrics_until(&gw, "the spend on the gauges", |m| {
        m.sum("llm_remaining_user_budget_metric", &[("user", "alice")]) < 10.0
    })
    .await;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    let user_left = m.sum("llm_remaining_user_budget_metric", &[("user", "alice")]);
    assert!(close(user_left, 10.0 - spend), "{user_left} vs {spend}");
    let cust_left = m.sum(
        "llm_remaining_customer_budget_metric",
        &[("end_user", "cust-9")],
    );
    assert!(close(cust_left, 4.0 - spend), "{cust_left} vs {spend}");

    let r = gw
        .admin("/customer/delete", &json!({"user_ids": ["cust-9"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = gw
        .admin("/user/delete", &json!({"user_ids": ["alice"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    metrics_until(&gw, "the deleted budgets gone", |m| {
        m.count("llm_customer_max_budget_metric", &[]) == 0
            && m.count("llm_user_max_budget_metric", &[]) == 0
    })
    .await;
}

/// `llm_deployment_cooled_down_total` carries the custom metadata labels of the request whose failure
/// cooled the deployment down.
#[actix_rt::test]
async fn the_cooldown_counter_carries_the_custom_labels() {
    let mock = Mock::start();
    mock.rule(json!({"model": "cd-up", "status": 500})).await;
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: g\n    llm_params: {{model: openai/cd-up, api_base: \"{}\", api_key: sk-up}}\n    model_info: {{id: cd1}}\nllm_settings:\n  callbacks: [prometheus]\n  custom_prometheus_metadata_labels: [metadata.tenant]\nrouter_settings:\n  num_retries: 0\n  allowed_fails: 0\n  cooldown_time: 60\n",
        mock.base()
    ))
    .await;
    let mut body = chat("g");
    body["metadata"] = json!({"tenant": "acme"});
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 500, "{}", r.body);
    let m = metrics_until(&gw, "the cooldown", |m| {
        m.sum("llm_deployment_cooled_down_total", &[]) == 1.0
    })
    .await;
    assert_eq!(
        m.sum(
            "llm_deployment_cooled_down_total",
            &[
                ("model_id", "cd1"),
                ("exception_status", "500"),
                ("metadata_tenant", "acme")
            ]
        ),
        1.0
    );
    assert!(m
        .label_names("llm_deployment_state")
        .iter()
        .all(|l| l != "metadata_tenant"));
}

/// A large exposition is streamed in chunks: plain and gzipped bodies parse to the same series, and every
/// series is there exactly once (a series printed twice would make Prometheus refuse the scrape).
#[actix_rt::test]
async fn a_large_exposition_streams_every_series_once() {
    let gw = Gateway::start(&format!(
        "{MOCK}llm_settings:\n  callbacks: [prometheus]\n  prometheus_latency_buckets: [0.5, 5]\n"
    ))
    .await;
    let users = 1500;
    for batch in (0..users).collect::<Vec<_>>().chunks(50) {
        let calls = batch.iter().map(|i| {
            let mut body = chat("a");
            body["user"] = json!(format!("customer-{i:05}"));
            let gw = &gw;
            async move { gw.post("/v1/chat/completions", &body).await.status }
        });
        for status in futures_util::future::join_all(calls).await {
            assert_eq!(status, 200);
        }
    }
    let plain = gw.metrics_after(users as f64).await;
    let r = gw.get("/metrics", &[]).await;
    assert!(
        r.body.len() > 1 << 20,
        "more than a few chunks: {} bytes",
        r.body.len()
    );
    assert_eq!(
        r.headers.get("transfer-encoding").map(String::as_str),
        Some("chunked"),
        "streamed, not built whole"
    );
    let mut seen = std::collections::HashSet::new();
    for line in r.body.lines().filter(|l| !l.starts_with('#')) {
        let series = line.rsplit_once(' ').unwrap().0;
        assert!(seen.insert(series), "printed twice: {series}");
    }
    assert_eq!(
        plain.count("llm_proxy_total_requests_metric_total", &[]),
        users
    );
    assert_eq!(
        plain.count("llm_request_total_latency_metric_count", &[]),
        users
    );
    let mut resp = client()
        .get(gw.url("/metrics"))
        .insert_header(("accept-encoding", "gzip"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers().get("content-encoding").unwrap(), "gzip");
    let raw = resp.body().limit(64 << 20).await.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&raw[..]), &mut text).unwrap();
    let gz = Metrics::parse(&text);
    assert_eq!(
        gz.count("llm_proxy_total_requests_metric_total", &[]),
        users
    );
    assert_eq!(
        gz.sum("llm_proxy_total_requests_metric_total", &[]),
        plain.sum("llm_proxy_total_requests_metric_total", &[])
    );
    eprintln!("exposition: {} bytes, gzipped {}", text.len(), raw.len());
}
