//! Proxying: chat (plain and streaming), completions, embeddings, models, health, through the upstream and
//! the built-in mock, with the metrics each request leaves behind.

use crate::support::*;

#[actix_rt::test]
async fn chat_through_upstream_passes_the_body_and_counts_usage() {
    let mock = Mock::start();
    let gw = Gateway::start(&upstream_config(&mock, "")).await;
    let r = gw.post("/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    // The upstream saw the deployment's model name, not the group.
    assert_eq!(v["model"], "gpt-4o-2024");
    assert_eq!(v["object"], "chat.completion");
    let usage = v["usage"].clone();
    assert_eq!(r.headers["x-llm-model-id"], "dep-1");
    assert_eq!(mock.calls().await["gpt-4o-2024"], 1);

    // Without the /v1 prefix too.
    let r2 = gw.post("/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(r2.status, 200);

    let m = gw.metrics_after(2.0).await;
    let ok = [("requested_model", "gpt-4o"), ("status_code", "200")];
    assert_eq!(m.sum("llm_proxy_total_requests_metric_total", &ok), 2.0);
    let tok = [("requested_model", "gpt-4o"), ("model", "gpt-4o-2024")];
    assert_eq!(
        m.sum("llm_input_tokens_total", &tok),
        2.0 * usage["prompt_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        m.sum("llm_output_tokens_total", &tok),
        2.0 * usage["completion_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        m.sum("llm_total_tokens_total", &tok),
        2.0 * usage["total_tokens"].as_f64().unwrap()
    );
    let expected_spend = 2.0
        * (usage["prompt_tokens"].as_f64().unwrap() * 0.000001
            + usage["completion_tokens"].as_f64().unwrap() * 0.000002);
    assert!((m.sum("llm_spend_metric_total", &tok) - expected_spend).abs() < 1e-12);
    let dep = [
        ("model_id", "dep-1"),
        ("llm_model_name", "gpt-4o-2024"),
        ("api_provider", "openai"),
        ("requested_model", "gpt-4o"),
    ];
    let base = mock.base();
    let dep_base = [("api_base", base.as_str())];
    assert_eq!(m.sum("llm_deployment_success_responses_total", &dep), 2.0);
    assert_eq!(
        m.sum("llm_deployment_success_responses_total", &dep_base),
        2.0
    );
    assert_eq!(m.sum("llm_deployment_total_requests_total", &dep), 2.0);
    assert_eq!(m.sum("llm_deployment_failure_responses_total", &[]), 0.0);
    assert_eq!(
        m.sum("llm_requests_metric_total", &[("model", "gpt-4o-2024")]),
        2.0
    );
    for h in [
        "llm_request_total_latency_metric",
        "llm_llm_api_latency_metric",
        "llm_overhead_latency_metric",
    ] {
        assert_eq!(m.sum(&format!("{h}_count"), &[]), 2.0, "{h}");
    }
    assert_eq!(
        m.sum(
            "llm_deployment_latency_per_output_token_count",
            &[("model_id", "dep-1")]
        ),
        2.0
    );
    // Time to first token is for streams only.
    assert_eq!(
        m.count("llm_llm_api_time_to_first_token_metric_count", &[]),
        0
    );
    // Total latency covers the upstream call.
    assert!(
        m.sum("llm_request_total_latency_metric_sum", &[])
            >= m.sum("llm_llm_api_latency_metric_sum", &[])
    );
    assert_eq!(m.sum("llm_deployment_state", &[("model_id", "dep-1")]), 0.0);
}

#[actix_rt::test]
async fn streaming_passes_frames_through_and_honours_include_usage() {
    let mock = Mock::start();
    let gw = Gateway::start(&upstream_config(&mock, "")).await;

    // The client asks for usage: it gets the usage frame.
    let mut body = chat("gpt-4o");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers["content-type"].starts_with("text/event-stream"));
    let frames = r.sse_data();
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let usage_frames: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str::<Value>(f).unwrap())
        .filter(|v| v.get("usage").is_some_and(|u| !u.is_null()))
        .collect();
    assert_eq!(usage_frames.len(), 1);
    let usage = usage_frames[0]["usage"].clone();
    let text: String = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str::<Value>(f).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "This is a mock response from gpt-4o-2024.");

    // The client does not ask: no usage frame reaches it, but the gateway still counts the tokens.
    body.as_object_mut().unwrap().remove("stream_options");
    let r = gw.post("/chat/completions", &body).await;
    assert_eq!(r.status, 200);
    let frames = r.sse_data();
    assert_eq!(frames.last().unwrap(), "[DONE]");
    assert!(frames[..frames.len() - 1]
        .iter()
        .all(|f| serde_json::from_str::<Value>(f)
            .unwrap()
            .get("usage")
            .is_none()));

    let m = gw.metrics_after(2.0).await;
    assert_eq!(
        m.sum(
            "llm_proxy_total_requests_metric_total",
            &[("status_code", "200")]
        ),
        2.0
    );
    assert_eq!(
        m.sum("llm_output_tokens_total", &[]),
        2.0 * usage["completion_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        m.sum("llm_input_tokens_total", &[]),
        2.0 * usage["prompt_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        m.sum(
            "llm_llm_api_time_to_first_token_metric_count",
            &[("model", "gpt-4o-2024")]
        ),
        2.0
    );
    let ttft = m.sum("llm_llm_api_time_to_first_token_metric_sum", &[]);
    assert!(ttft > 0.0 && ttft <= m.sum("llm_llm_api_latency_metric_sum", &[]));
}

#[actix_rt::test]
async fn stream_without_upstream_usage_is_counted_locally() {
    let mock = Mock::start();
    let gw = Gateway::start(&upstream_config(&mock, "")).await;
    mock.rule(json!({"model": "gpt-4o-2024", "omit_usage": true}))
        .await;
    let mut body = chat("gpt-4o");
    body["stream"] = json!(true);
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200);
    let m = gw.metrics_after(1.0).await;
    // "This is a mock response from gpt-4o-2024." is 41 characters: 11 tokens at four characters a token.
    assert_eq!(m.sum("llm_output_tokens_total", &[]), 11.0);
    assert!(m.sum("llm_input_tokens_total", &[]) > 0.0);
}

#[actix_rt::test]
async fn completions_and_embeddings() {
    let mock = Mock::start();
    let config = format!(
        "model_list:\n  - model_name: gpt-4o\n    llm_params: {{model: openai/gpt-4o-2024, api_base: {}}}\n  - model_name: local-embed\n    llm_params: {{model: mock/embed-small}}\nllm_settings:\n  callbacks: [prometheus]\n",
        mock.base()
    );
    let gw = Gateway::start(&config).await;

    let r = gw
        .post(
            "/v1/completions",
            &json!({"model": "gpt-4o", "prompt": "Once upon"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["object"], "text_completion");

    let r = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "gpt-4o", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);

    // The built-in mock provider answers offline.
    let r = gw
        .post(
            "/embeddings",
            &json!({"model": "local-embed", "input": "hello", "dimensions": 4}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(v["usage"]["prompt_tokens"], 2);

    let m = gw.metrics_after(3.0).await;
    assert_eq!(
        m.sum(
            "llm_proxy_total_requests_metric_total",
            &[("requested_model", "gpt-4o")]
        ),
        2.0
    );
    assert_eq!(
        m.sum(
            "llm_input_tokens_total",
            &[("requested_model", "local-embed")]
        ),
        2.0
    );
    assert_eq!(
        m.sum(
            "llm_output_tokens_total",
            &[("requested_model", "local-embed")]
        ),
        0.0
    );
    assert_eq!(
        m.sum(
            "llm_deployment_success_responses_total",
            &[("api_provider", "mock"), ("llm_model_name", "embed-small")]
        ),
        1.0
    );
}

#[actix_rt::test]
async fn builtin_mock_chat_streams_and_uses_mock_response() {
    let gw = Gateway::start(
        "model_list:\n  - model_name: m\n    llm_params:\n      model: mock/m1\n      mock_response: Fixed answer here\n      mock_latency_ms: 30\nllm_settings:\n  callbacks: [prometheus]\n",
    )
    .await;
    let r = gw.post("/v1/chat/completions", &chat("m")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Fixed answer here"
    );
    let mut body = chat("m");
    body["stream"] = json!(true);
    body["mock_response"] = json!("per request");
    let r = gw.post("/v1/chat/completions", &body).await;
    let frames = r.sse_data();
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let m = gw.metrics_after(2.0).await;
    assert_eq!(
        m.sum("llm_llm_api_time_to_first_token_metric_count", &[]),
        1.0
    );
    // The mock's latency is upstream time: at least 2 x 30 ms of API latency.
    assert!(m.sum("llm_llm_api_latency_metric_sum", &[]) >= 0.06);
}

#[actix_rt::test]
async fn models_and_health() {
    let gw = Gateway::start(
        "model_list:\n  - {model_name: a, llm_params: {model: mock/x}}\n  - {model_name: b, llm_params: {model: mock/y}}\n  - {model_name: a, llm_params: {model: mock/z}}\n",
    )
    .await;
    for path in ["/v1/models", "/models"] {
        let r = gw.get(path, &[]).await;
        assert_eq!(r.status, 200);
        let ids: Vec<String> = r.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }
    let r = gw.get("/health/liveliness", &[]).await;
    assert_eq!(r.json(), json!("I'm alive!"));
    let r = gw.get("/health/readiness", &[]).await;
    assert_eq!(r.json()["status"], "healthy");
    let r = gw.get("/health/deployments", &[]).await;
    assert_eq!(r.json()["deployments"].as_array().unwrap().len(), 3);
    // Metrics are off without the prometheus callback, and say how to turn them on.
    let r = gw.get("/metrics", &[]).await;
    assert_eq!(r.status, 404);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("llm_settings.callbacks"));
}

#[actix_rt::test]
async fn weighted_shuffle_spreads_by_weight() {
    let mock = Mock::start();
    let config = format!(
        "model_list:\n  - model_name: g\n    llm_params: {{model: openai/heavy, api_base: {b}, weight: 3}}\n  - model_name: g\n    llm_params: {{model: openai/light, api_base: {b}, weight: 1}}\n",
        b = mock.base()
    );
    let gw = Gateway::start(&config).await;
    for _ in 0..400 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("g")).await.status,
            200
        );
    }
    let calls = mock.calls().await;
    let heavy = calls["heavy"] as f64;
    // 300 expected; 4 standard deviations of a binomial(400, 0.75) is about 35.
    assert!((heavy - 300.0).abs() < 40.0, "{calls:?}");
    assert_eq!(calls["heavy"] + calls["light"], 400);
}
