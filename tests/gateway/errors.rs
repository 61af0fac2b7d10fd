//! Bad input and failing upstreams: the OpenAI error shape with the right status, and the failure metrics.

use crate::support::*;

#[actix_rt::test]
async fn bad_requests_get_clear_errors_and_count_as_failures() {
    let mock = Mock::start();
    let gw = Gateway::start(&upstream_config(
        &mock,
        "general_settings:\n  max_request_size_mb: 0.01\n",
    ))
    .await;

    let r = gw
        .post_raw("/v1/chat/completions", b"{\"model\": ".to_vec(), &[])
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("not a valid JSON object"));

    let r = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": 42, "messages": []}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error()["param"], "model");

    let r = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": "hi"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error()["param"], "messages");

    let r = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [], "stream": "yes"}),
        )
        .await;
    assert_eq!(r.status, 400);

    let mut body = chat("gpt-4o");
    body["stream"] = json!("yes");
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error()["param"], "stream");

    // Unknown model: 404 (the OpenAI SDK's NotFoundError) naming the available groups; the label is
    // bounded to `other`.
    let r = gw
        .post("/v1/chat/completions", &chat("no-such-model-xyz"))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error()["code"], "model_not_found");
    assert_eq!(r.error()["param"], "model");
    let msg = r.error()["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("Available models: gpt-4o"), "{msg}");

    // Over the body limit (0.01 MiB here).
    let big =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(20_000)}]});
    let r = gw.post("/v1/chat/completions", &big).await;
    assert_eq!(r.status, 413);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("max_request_size_mb"));

    let r = gw.get("/v1/nothing-here", &[]).await;
    assert_eq!(r.status, 404);
    r.error();

    assert!(
        mock.calls().await.is_empty(),
        "no bad request reached the upstream"
    );
    let m = gw.metrics_after(7.0).await;
    assert_eq!(m.sum("llm_proxy_failed_requests_metric_total", &[]), 7.0);
    assert_eq!(m.sum("llm_proxy_total_requests_metric_total", &[]), 7.0);
    assert_eq!(
        m.sum(
            "llm_proxy_failed_requests_metric_total",
            &[
                ("requested_model", "other"),
                ("exception_status", "404"),
                ("exception_class", "NotFoundError")
            ]
        ),
        1.0
    );
    assert_eq!(
        m.sum(
            "llm_proxy_failed_requests_metric_total",
            &[("exception_status", "413")]
        ),
        1.0
    );
    assert_eq!(
        m.sum(
            "llm_proxy_total_requests_metric_total",
            &[("status_code", "400")]
        ),
        5.0
    );
    // The client's free text never becomes a label value.
    assert!(!m.text.contains("no-such-model-xyz"));
}

#[actix_rt::test]
async fn upstream_failures_pass_status_and_move_failure_counters() {
    let mock = Mock::start();
    let gw = Gateway::start(&upstream_config(&mock, "")).await;

    mock.rule(json!({"model": "gpt-4o-2024", "status": 429, "retry_after": 2, "message": "Rate limit reached", "times": 1}))
        .await;
    let r = gw.post("/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "2");
    let e = r.error();
    assert_eq!(e["message"], "Rate limit reached");
    assert_eq!(e["type"], "rate_limit_error");

    mock.rule(json!({"model": "gpt-4o-2024", "status": 500, "times": 1}))
        .await;
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o"))
            .await
            .status,
        500
    );

    mock.rule(json!({"model": "gpt-4o-2024", "status": 503, "times": 1}))
        .await;
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o"))
            .await
            .status,
        503
    );

    mock.rule(json!({"model": "gpt-4o-2024", "malformed": true}))
        .await;
    let r = gw.post("/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(r.status, 502);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));

    mock.rule(json!({"model": "gpt-4o-2024"})).await;
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o"))
            .await
            .status,
        200
    );

    let m = gw.metrics_after(5.0).await;
    let fail = |status: &'static str, class: &'static str| {
        m.sum(
            "llm_deployment_failure_responses_total",
            &[
                ("exception_status", status),
                ("exception_class", class),
                ("model_id", "dep-1"),
                ("requested_model", "gpt-4o"),
            ],
        )
    };
    assert_eq!(fail("429", "Openai.RateLimitError"), 1.0);
    assert_eq!(fail("500", "Openai.InternalServerError"), 1.0);
    assert_eq!(fail("503", "Openai.ServiceUnavailableError"), 1.0);
    assert_eq!(fail("502", "Openai.BadGatewayError"), 1.0);
    assert_eq!(
        m.sum(
            "llm_deployment_total_requests_total",
            &[("model_id", "dep-1")]
        ),
        5.0
    );
    assert_eq!(m.sum("llm_deployment_success_responses_total", &[]), 1.0);
    assert_eq!(
        m.sum(
            "llm_proxy_failed_requests_metric_total",
            &[
                ("exception_status", "429"),
                ("exception_class", "Openai.RateLimitError"),
                ("requested_model", "gpt-4o")
            ]
        ),
        1.0
    );
    assert_eq!(
        m.sum(
            "llm_proxy_total_requests_metric_total",
            &[("status_code", "429")]
        ),
        1.0
    );
    assert_eq!(
        m.sum(
            "llm_proxy_total_requests_metric_total",
            &[("status_code", "200")]
        ),
        1.0
    );
    assert_eq!(
        m.sum(
            "llm_llm_api_failed_requests_metric_total",
            &[("model", "gpt-4o-2024")]
        ),
        4.0
    );
    // The last call succeeded: the deployment is healthy again.
    assert_eq!(m.sum("llm_deployment_state", &[("model_id", "dep-1")]), 0.0);
    // The upstream key never shows up in metrics.
    assert!(!m.text.contains("sk-upstream-secret"));
}

#[actix_rt::test]
async fn partial_outage_state_and_unreachable_upstream() {
    let port = free_port();
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: dead\n    llm_params: {{model: openai/x, api_base: http://127.0.0.1:{port}/v1}}\n    model_info: {{id: dead-1}}\nllm_settings:\n  callbacks: [prometheus]\n"
    ))
    .await;
    let r = gw.post("/v1/chat/completions", &chat("dead")).await;
    assert_eq!(r.status, 502);
    r.error();
    let m = gw.metrics_after(1.0).await;
    assert_eq!(
        m.sum(
            "llm_deployment_failure_responses_total",
            &[("exception_class", "Openai.APIConnectionError")]
        ),
        1.0
    );
    assert_eq!(
        m.sum("llm_deployment_state", &[("model_id", "dead-1")]),
        1.0
    );
    assert_eq!(
        m.count("llm_deployment_state", &[]),
        1,
        "one state series per deployment"
    );
}

#[actix_rt::test]
async fn a_stream_cut_halfway_ends_with_an_error_event_and_counts_as_failed() {
    let mock = Mock::start();
    let gw = Gateway::start(&upstream_config(&mock, "")).await;
    mock.rule(json!({"model": "gpt-4o-2024", "cut_stream_after": 3}))
        .await;
    let mut body = chat("gpt-4o");
    body["stream"] = json!(true);
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200);
    let frames = r.sse_data();
    assert_eq!(frames.len(), 4, "{frames:?}");
    let last: Value = serde_json::from_str(frames.last().unwrap()).unwrap();
    let msg = last["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("broke") || msg.contains("ended before"),
        "{msg}"
    );
    let m = gw.metrics_after(1.0).await;
    assert_eq!(
        m.sum(
            "llm_proxy_failed_requests_metric_total",
            &[("exception_class", "Openai.APIConnectionError")]
        ),
        1.0
    );
    assert_eq!(m.sum("llm_deployment_failure_responses_total", &[]), 1.0);
    assert_eq!(
        m.sum(
            "llm_proxy_total_requests_metric_total",
            &[("status_code", "200")]
        ),
        0.0
    );
}

#[actix_rt::test]
async fn master_key_guards_the_api_and_optionally_metrics() {
    let mock = Mock::start();
    let gw = Gateway::start(&upstream_config(
        &mock,
        "  require_auth_for_metrics_endpoint: true\ngeneral_settings:\n  master_key: sk-master-123\n",
    ))
    .await;
    let r = gw.post("/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error()["type"], "authentication_error");
    let r = gw
        .post_with(
            "/v1/chat/completions",
            &chat("gpt-4o"),
            &[("authorization", "Bearer sk-wrong")],
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(!r.body.contains("sk-master-123") && !r.body.contains("sk-wrong"));
    for h in [
        ("authorization", "Bearer sk-master-123"),
        ("api-key", "sk-master-123"),
        ("x-api-key", "sk-master-123"),
    ] {
        let r = gw
            .post_with("/v1/chat/completions", &chat("gpt-4o"), &[h])
            .await;
        assert_eq!(r.status, 200, "{h:?}");
    }
    assert_eq!(gw.get("/v1/models", &[]).await.status, 401);
    let r = gw.get("/metrics", &[]).await;
    assert_eq!(r.status, 401);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("require_auth_for_metrics_endpoint"));
    let r = gw
        .get("/metrics", &[("authorization", "Bearer sk-master-123")])
        .await;
    assert_eq!(r.status, 200);
    let m = Metrics::parse(&r.body);
    assert_eq!(
        m.sum(
            "llm_proxy_failed_requests_metric_total",
            &[("exception_status", "401")]
        ),
        2.0
    );
    assert!(
        !gw.log().contains("sk-master-123"),
        "the master key must not be logged"
    );
}

#[actix_rt::test]
async fn upstream_timeouts_answer_408_and_count() {
    let mock = Mock::start();
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: slow\n    llm_params: {{model: openai/slow-model, api_base: {}, timeout: 0.3, stream_timeout: 0.3}}\nllm_settings:\n  callbacks: [prometheus]\n  request_timeout: 30\n",
        mock.base()
    ))
    .await;
    mock.rule(json!({"model": "slow-model", "latency_ms": 1500}))
        .await;
    let started = std::time::Instant::now();
    let r = gw.post("/v1/chat/completions", &chat("slow")).await;
    assert_eq!(r.status, 408, "{}", r.body);
    assert_eq!(r.error()["type"], "timeout_error");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1400),
        "the deployment's timeout applies"
    );
    // A stream that goes silent after its first frames is cut by stream_timeout.
    mock.rule(json!({"model": "slow-model", "frame_delay_ms": 1500}))
        .await;
    let mut body = chat("slow");
    body["stream"] = json!(true);
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200);
    assert!(
        r.sse_data().last().unwrap().contains("stream_timeout"),
        "{}",
        r.body
    );
    let m = gw.metrics_after(2.0).await;
    assert_eq!(
        m.sum(
            "llm_deployment_failure_responses_total",
            &[("exception_class", "Openai.Timeout")]
        ),
        2.0
    );
}

#[actix_rt::test]
async fn a_client_that_leaves_mid_request_is_still_counted() {
    let mock = Mock::start();
    let gw = Gateway::start(&upstream_config(&mock, "")).await;
    mock.rule(json!({"model": "gpt-4o-2024", "latency_ms": 1500}))
        .await;
    let gone = client()
        .post(gw.url("/v1/chat/completions"))
        .timeout(std::time::Duration::from_millis(200))
        .send_json(&chat("gpt-4o"))
        .await;
    assert!(gone.is_err(), "the client gave up");
    // The gateway finishes the upstream call it started (the provider bills it), and accounts for it once.
    let m = gw.metrics_after(1.0).await;
    assert_eq!(m.sum("llm_proxy_total_requests_metric_total", &[]), 1.0);
    assert_eq!(m.sum("llm_deployment_total_requests_total", &[]), 1.0);
    assert!(m.sum("llm_spend_metric_total", &[]) > 0.0);
}
