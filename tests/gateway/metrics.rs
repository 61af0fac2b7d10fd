//! The `/metrics` contract: every family of the spec with exactly its labels, `_total` and `_created`
//! samples, buckets, custom metadata labels, the provider's remaining-limit headers, bounded end users.

use crate::support::*;

const USER_LABELS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "requested_model",
    "team",
    "team_alias",
    "user",
];

fn with(base: &[&str], extra: &[&str]) -> std::collections::BTreeSet<String> {
    let mut s = set(base);
    s.extend(extra.iter().map(|x| x.to_string()));
    s
}

#[actix_rt::test]
async fn every_family_has_exactly_the_spec_labels() {
    let mock = Mock::start();
    let gw = Gateway::start(&upstream_config(
        &mock,
        "  custom_prometheus_metadata_labels: [metadata.foo]\n",
    ))
    .await;
    mock.rule(json!({"model": "gpt-4o-2024", "remaining_requests": 99, "remaining_tokens": 9000}))
        .await;
    let mut body = chat("gpt-4o");
    body["metadata"] = json!({"foo": "bar"});
    body["user"] = json!("customer-7");
    assert_eq!(gw.post("/v1/chat/completions", &body).await.status, 200);
    body["stream"] = json!(true);
    assert_eq!(gw.post("/v1/chat/completions", &body).await.status, 200);
    mock.rule(json!({"model": "gpt-4o-2024", "status": 500}))
        .await;
    assert_eq!(gw.post("/v1/chat/completions", &body).await.status, 500);

    let m = gw.metrics_after(3.0).await;
    let key = ["hashed_api_key", "api_key_alias", "team", "team_alias"];
    let dep = [
        "requested_model",
        "llm_model_name",
        "model_id",
        "api_base",
        "api_provider",
    ];
    let custom = ["metadata_foo"];
    let expect: Vec<(&str, std::collections::BTreeSet<String>)> = vec![
        (
            "llm_proxy_total_requests_metric_total",
            with(USER_LABELS, &["status_code", "metadata_foo"]),
        ),
        (
            "llm_proxy_failed_requests_metric_total",
            with(
                USER_LABELS,
                &["exception_status", "exception_class", "metadata_foo"],
            ),
        ),
        (
            "llm_deployment_success_responses_total",
            with(&dep, &[&key[..], &custom].concat()),
        ),
        (
            "llm_deployment_failure_responses_total",
            with(
                &dep,
                &[&key[..], &custom, &["exception_status", "exception_class"]].concat(),
            ),
        ),
        (
            "llm_deployment_total_requests_total",
            with(&dep, &[&key[..], &custom].concat()),
        ),
        (
            "llm_remaining_requests_metric",
            set(&[
                "model_group",
                "api_provider",
                "api_base",
                "llm_model_name",
                "hashed_api_key",
                "api_key_alias",
            ]),
        ),
        (
            "llm_remaining_tokens",
            set(&[
                "model_group",
                "api_provider",
                "api_base",
                "llm_model_name",
                "hashed_api_key",
                "api_key_alias",
            ]),
        ),
        (
            "llm_request_total_latency_metric_bucket",
            with(USER_LABELS, &["model", "metadata_foo"]),
        ),
        (
            "llm_overhead_latency_metric_bucket",
            with(USER_LABELS, &["model", "metadata_foo"]),
        ),
        (
            "llm_llm_api_latency_metric_bucket",
            with(USER_LABELS, &["model", "metadata_foo"]),
        ),
        (
            "llm_llm_api_time_to_first_token_metric_bucket",
            with(&["model"], &[&key[..], &custom].concat()),
        ),
        (
            "llm_deployment_latency_per_output_token_bucket",
            with(
                &["llm_model_name", "model_id", "api_base", "api_provider"],
                &[&key[..], &custom].concat(),
            ),
        ),
        (
            "llm_total_tokens_total",
            with(USER_LABELS, &["model", "metadata_foo"]),
        ),
        (
            "llm_input_tokens_total",
            with(USER_LABELS, &["model", "metadata_foo"]),
        ),
        (
            "llm_output_tokens_total",
            with(USER_LABELS, &["model", "metadata_foo"]),
        ),
        (
            "llm_spend_metric_total",
            with(USER_LABELS, &["model", "metadata_foo"]),
        ),
        (
            "llm_requests_metric_total",
            with(
                &[
                    "end_user",
                    "hashed_api_key",
                    "api_key_alias",
                    "model",
                    "team",
                    "team_alias",
                    "user",
                ],
                &custom,
            ),
        ),
        (
            "llm_llm_api_failed_requests_metric_total",
            with(
                &[
                    "end_user",
                    "hashed_api_key",
                    "api_key_alias",
                    "model",
                    "team",
                    "team_alias",
                    "user",
                ],
                &custom,
            ),
        ),
        (
            "llm_deployment_state",
            set(&["llm_model_name", "model_id", "api_base", "api_provider"]),
        ),
    ];
    for (name, labels) in expect {
        assert_eq!(m.label_names(name), labels, "{name}");
    }
    // Counters are typed and exposed with `_total`, each series with a `_created` sample.
    for c in [
        "llm_proxy_total_requests_metric",
        "llm_proxy_failed_requests_metric",
        "llm_deployment_success_responses",
        "llm_deployment_failure_responses",
        "llm_deployment_total_requests",
        "llm_total_tokens",
        "llm_input_tokens",
        "llm_output_tokens",
        "llm_spend_metric",
        "llm_requests_metric",
        "llm_llm_api_failed_requests_metric",
    ] {
        assert_eq!(m.types[&format!("{c}_total")], "counter", "{c}");
        assert_eq!(m.types[&format!("{c}_created")], "gauge", "{c}");
        let total = m.count(&format!("{c}_total"), &[]);
        assert!(total > 0, "{c}");
        assert_eq!(m.count(&format!("{c}_created"), &[]), total, "{c}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        for (_, _, ts) in m.matching(&format!("{c}_created"), &[]) {
            assert!((now - ts).abs() < 120.0, "{c}_created is a unix time");
        }
    }
    for h in [
        "llm_request_total_latency_metric",
        "llm_llm_api_time_to_first_token_metric",
    ] {
        assert_eq!(m.types[h], "histogram");
        assert!(m.count(&format!("{h}_created"), &[]) > 0);
    }
    // Values of the labels.
    assert_eq!(
        m.sum(
            "llm_proxy_total_requests_metric_total",
            &[("metadata_foo", "bar"), ("end_user", "customer-7")]
        ),
        3.0
    );
    assert_eq!(
        m.sum(
            "llm_remaining_requests_metric",
            &[("model_group", "gpt-4o"), ("llm_model_name", "gpt-4o-2024")]
        ),
        99.0
    );
    assert_eq!(
        m.sum("llm_remaining_tokens", &[("api_provider", "openai")]),
        9000.0
    );
    assert_eq!(m.sum("llm_deployment_state", &[("model_id", "dep-1")]), 1.0);
    // Reference latency buckets.
    let les: Vec<String> = m
        .matching("llm_request_total_latency_metric_bucket", &[])
        .filter(|(_, l, _)| l["requested_model"] == "gpt-4o")
        .map(|(_, l, _)| l["le"].clone())
        .take(18)
        .collect();
    assert_eq!(
        les,
        [
            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.0", "5.0", "10.0",
            "30.0", "60.0", "120.0", "300.0", "420.0", "600.0", "+Inf"
        ]
    );
    let per_token_les = m.count("llm_deployment_latency_per_output_token_bucket", &[]);
    assert_eq!(
        per_token_les, 15,
        "prometheus_client default buckets, 14 + Inf"
    );

    // `/metrics/` answers the same, without a redirect.
    let r = gw.get("/metrics/", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].starts_with("text/plain; version=0.0.4"));
}

#[actix_rt::test]
async fn configured_latency_buckets_are_used() {
    let mock = Mock::start();
    let gw = Gateway::start(&upstream_config(
        &mock,
        "  prometheus_latency_buckets: [0.5, 1, 5]\n",
    ))
    .await;
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o"))
            .await
            .status,
        200
    );
    let m = gw.metrics_after(1.0).await;
    let les: Vec<String> = m
        .matching("llm_llm_api_latency_metric_bucket", &[])
        .map(|(_, l, _)| l["le"].clone())
        .collect();
    assert_eq!(les, ["0.5", "1.0", "5.0", "+Inf"]);
}

#[actix_rt::test]
async fn end_users_past_the_cap_fold_into_other() {
    let mock = Mock::start();
    let gw = Gateway::start(&upstream_config(
        &mock,
        "  prometheus_end_user_metrics_max_series_per_metric: 2\n",
    ))
    .await;
    for u in ["a", "b", "c", "d", "a"] {
        let mut body = chat("gpt-4o");
        body["user"] = json!(u);
        assert_eq!(gw.post("/v1/chat/completions", &body).await.status, 200);
    }
    let m = gw.metrics_after(5.0).await;
    let total = "llm_proxy_total_requests_metric_total";
    assert_eq!(m.sum(total, &[("end_user", "a")]), 2.0);
    assert_eq!(m.sum(total, &[("end_user", "b")]), 1.0);
    assert_eq!(m.sum(total, &[("end_user", "other")]), 2.0);
    assert_eq!(m.sum(total, &[]), 5.0, "totals stay exact");
}

#[actix_rt::test]
async fn state_series_exist_from_boot() {
    let gw = Gateway::start("model_list:\n  - {model_name: a, llm_params: {model: mock/x}, model_info: {id: a1}}\nllm_settings:\n  callbacks: [prometheus]\n").await;
    let m = gw.metrics().await;
    assert_eq!(
        m.sum(
            "llm_deployment_state",
            &[("model_id", "a1"), ("api_provider", "mock")]
        ),
        0.0
    );
    assert_eq!(m.count("llm_deployment_state", &[("model_id", "a1")]), 1);
    // Families with no series yet still declare themselves.
    assert_eq!(m.types["llm_proxy_total_requests_metric_total"], "counter");
    assert_eq!(m.types["llm_deployment_cooled_down_total"], "counter");
}

/// A scraper that accepts gzip (Prometheus does) gets the exposition gzipped; one that refuses it (or does
/// not ask) gets plain text.
#[actix_rt::test]
async fn the_exposition_is_gzipped_for_scrapers_that_accept_it() {
    let gw = Gateway::start("model_list:\n  - {model_name: a, llm_params: {model: mock/x}, model_info: {id: a1}}\nllm_settings:\n  callbacks: [prometheus]\n").await;
    for _ in 0..5 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("a")).await.status,
            200
        );
    }
    let plain = gw.metrics_after(5.0).await;
    let mut r = client()
        .get(gw.url("/metrics"))
        .insert_header(("accept-encoding", "gzip"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get("content-encoding").unwrap(), "gzip");
    let raw = r.body().limit(64 << 20).await.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&raw[..]), &mut text).unwrap();
    let m = Metrics::parse(&text);
    assert_eq!(
        m.sum("llm_proxy_total_requests_metric_total", &[]),
        plain.sum("llm_proxy_total_requests_metric_total", &[])
    );
    assert_eq!(m.count("llm_deployment_state", &[("model_id", "a1")]), 1);
    eprintln!("exposition: {} bytes, gzipped {}", text.len(), raw.len());
    assert!(
        raw.len() * 4 < text.len(),
        "{} of {}",
        raw.len(),
        text.len()
    );
    let r = gw.get("/metrics", &[("accept-encoding", "gzip;q=0")]).await;
    assert!(!r.headers.contains_key("content-encoding"));
    assert!(r.body.contains("llm_deployment_state"));
}

/// `prometheus_exclude_labels`: the listed labels leave every family that had them, and the series they
/// told apart become one.
#[actix_rt::test]
async fn excluded_labels_leave_every_family() {
    let gw = Gateway::start("model_list:\n  - {model_name: a, llm_params: {model: mock/x}, model_info: {id: a1}}\nllm_settings:\n  callbacks: [prometheus]\n  prometheus_exclude_labels: [end_user, api_base]\n").await;
    for u in ["u1", "u2", "u3"] {
        let mut body = chat("a");
        body["user"] = json!(u);
        assert_eq!(gw.post("/v1/chat/completions", &body).await.status, 200);
    }
    let m = gw.metrics_after(3.0).await;
    for family in [
        "llm_proxy_total_requests_metric_total",
        "llm_spend_metric_total",
        "llm_total_tokens_total",
        "llm_request_total_latency_metric_bucket",
    ] {
        let names = m.label_names(family);
        assert!(!names.is_empty(), "{family} has series");
        assert!(!names.contains("end_user"), "{family}: {names:?}");
    }
    // Three end users, one series.
    assert_eq!(m.count("llm_proxy_total_requests_metric_total", &[]), 1);
    assert_eq!(m.sum("llm_proxy_total_requests_metric_total", &[]), 3.0);
    let names = m.label_names("llm_deployment_state");
    assert!(
        !names.contains("api_base") && names.contains("model_id"),
        "{names:?}"
    );
}

/// `prometheus_max_series_per_metric`: past the cap, new label sets fold into one `other` series per
/// family, counted in `llm_metrics_series_dropped_total`; nothing is lost from the totals.
#[actix_rt::test]
async fn series_past_the_cap_fold_into_other() {
    let gw = Gateway::start("model_list:\n  - {model_name: a, llm_params: {model: mock/x}, model_info: {id: a1}}\nllm_settings:\n  callbacks: [prometheus]\n  prometheus_max_series_per_metric: 3\n").await;
    for u in ["u1", "u2", "u3", "u4", "u5", "u6", "u4"] {
        let mut body = chat("a");
        body["user"] = json!(u);
        assert_eq!(gw.post("/v1/chat/completions", &body).await.status, 200);
    }
    let m = gw.metrics_after(7.0).await;
    let family = "llm_proxy_total_requests_metric_total";
    assert_eq!(m.count(family, &[]), 4, "three end users and `other`");
    assert_eq!(m.sum(family, &[]), 7.0);
    assert_eq!(
        m.sum(
            family,
            &[("end_user", "other"), ("hashed_api_key", "other")]
        ),
        4.0
    );
    assert_eq!(
        m.sum(
            "llm_metrics_series_dropped_total",
            &[("metric", "llm_proxy_total_requests_metric")]
        ),
        3.0,
        "u4, u5, u6 folded (u4's second request reuses the handle its first resolved)"
    );
    // Histograms too.
    let buckets: std::collections::BTreeSet<String> = m
        .matching("llm_request_total_latency_metric_count", &[])
        .map(|(_, l, _)| l.get("end_user").cloned().unwrap_or_default())
        .collect();
    assert_eq!(buckets.len(), 4, "{buckets:?}");
}

/// Custom metadata labels are on the fallback counters too: the request that fell back has the values.
#[actix_rt::test]
async fn fallback_counters_carry_the_custom_labels() {
    let mock = Mock::start();
    let dep = |group: &str, model: &str| {
        format!(
            "  - model_name: {group}\n    llm_params: {{model: openai/{model}, api_base: \"{}\", api_key: sk-up}}\n",
            mock.base()
        )
    };
    let gw = Gateway::start(&format!(
        "model_list:\n{}{}llm_settings:\n  callbacks: [prometheus]\n  custom_prometheus_metadata_labels: [metadata.foo]\nrouter_settings:\n  num_retries: 0\n  fallbacks: [{{main: [spare]}}]\n",
        dep("main", "cl-main"),
        dep("spare", "cl-spare")
    ))
    .await;
    mock.rule(json!({"model": "cl-main", "status": 500})).await;
    let mut body = chat("main");
    body["metadata"] = json!({"foo": "bar"});
    assert_eq!(gw.post("/v1/chat/completions", &body).await.status, 200);
    let m = gw.metrics_after(1.0).await;
    assert_eq!(
        m.sum(
            "llm_deployment_successful_fallbacks_total",
            &[("fallback_model", "spare"), ("metadata_foo", "bar")]
        ),
        1.0
    );
}
