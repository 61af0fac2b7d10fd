//! Resilient routing through HTTP: retries, cooldowns and their end, fallbacks of each kind, streams, the
//! routing strategies, and the scenario of the issue, all checked against the mock upstream's own call
//! counts and the gateway's `/metrics`.

use crate::support::*;
use std::time::Duration;

/// One `model_list` entry on the mock upstream: group, upstream model (the mock counts calls per upstream
/// model), id, and extra `llm_params` (flow style, without braces).
fn entry(mock: &Mock, group: &str, model: &str, id: &str, params: &str) -> String {
    format!(
        "  - model_name: {group}\n    llm_params: {{model: openai/{model}, api_base: \"{}\", api_key: sk-up, input_cost_per_token: 0.000001, output_cost_per_token: 0.000002{}{params}}}\n    model_info: {{id: {id}}}\n",
        mock.base(),
        if params.is_empty() { "" } else { ", " },
    )
}

fn config(entries: &[String], router: &str) -> String {
    format!(
        "model_list:\n{}llm_settings:\n  callbacks: [prometheus]\nrouter_settings:\n{router}",
        entries.concat()
    )
}

fn state(m: &Metrics, id: &str) -> f64 {
    let labels = [("model_id", id)];
    let series: Vec<_> = m.matching("llm_deployment_state", &labels).collect();
    assert_eq!(
        series.len(),
        1,
        "one state series per deployment: {series:?}"
    );
    series[0].2
}

fn calls(c: &std::collections::HashMap<String, u64>, model: &str) -> u64 {
    c.get(model).copied().unwrap_or(0)
}

#[actix_rt::test]
async fn retries_land_on_another_deployment_and_count_once() {
    let mock = Mock::start();
    mock.rule(json!({"model": "r-bad", "status": 500})).await;
    let gw = Gateway::start(&config(
        &[
            entry(&mock, "g", "r-bad", "bad", ""),
            entry(&mock, "g", "r-good", "good", ""),
        ],
        "  num_retries: 1\n  allowed_fails: 1000\n",
    ))
    .await;
    for _ in 0..30 {
        let r = gw.post("/v1/chat/completions", &chat("g")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.headers["x-llm-model-id"], "good");
    }
    let c = mock.calls().await;
    assert_eq!(calls(&c, "r-good"), 30);
    let bad = calls(&c, "r-bad");
    assert!(
        bad > 3 && bad < 27,
        "the first pick is random: {bad} of 30 went to the bad one"
    );
    let m = gw.metrics_after(30.0).await;
    let m = if m.sum("llm_deployment_failure_responses_total", &[]) < bad as f64 {
        metrics_until(&gw, "every failed attempt", |m| {
            m.sum("llm_deployment_failure_responses_total", &[]) >= bad as f64
        })
        .await
    } else {
        m
    };
    assert_eq!(m.sum("llm_proxy_total_requests_metric_total", &[]), 30.0);
    assert_eq!(m.sum("llm_proxy_failed_requests_metric_total", &[]), 0.0);
    assert_eq!(
        m.sum(
            "llm_deployment_failure_responses_total",
            &[("model_id", "bad"), ("exception_status", "500")]
        ),
        bad as f64
    );
    assert_eq!(
        m.sum(
            "llm_deployment_success_responses_total",
            &[("model_id", "good")]
        ),
        30.0
    );
    assert_eq!(
        m.sum("llm_deployment_total_requests_total", &[]),
        30.0 + bad as f64
    );

    // `num_retries: 0` in the body: no retry, the client sees the upstream's 500.
    let mut body = chat("g");
    body["num_retries"] = json!(0);
    let mut saw_500 = false;
    for _ in 0..20 {
        let r = gw.post("/v1/chat/completions", &body).await;
        saw_500 |= r.status == 500;
    }
    assert!(saw_500, "without retries some requests fail");
}

#[actix_rt::test]
async fn cooldown_starts_blocks_routing_and_ends_with_state_0_1_2_0() {
    let mock = Mock::start();
    mock.rule(json!({"model": "c-one", "status": 500})).await;
    // `c-one` is picked first while it is up (weights 10^9 to 1).
    let gw = Gateway::start(&config(
        &[
            entry(&mock, "g", "c-one", "one", "weight: 1000000000"),
            entry(&mock, "g", "c-two", "two", "weight: 1"),
        ],
        "  num_retries: 1\n  allowed_fails: 1\n  cooldown_time: 1\n",
    ))
    .await;
    fresh_minute().await;
    let m = gw.metrics().await;
    assert_eq!(state(&m, "one"), 0.0);

    // First failure: within allowed_fails, partial outage.
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-llm-model-id"], "two");
    metrics_until(&gw, "state 1", |m| state(m, "one") == 1.0).await;

    // Second failure in the minute: cooled down, complete outage.
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    assert_eq!(r.status, 200);
    let m = metrics_until(&gw, "state 2", |m| state(m, "one") == 2.0).await;
    assert_eq!(
        m.sum(
            "llm_deployment_cooled_down_total",
            &[("model_id", "one"), ("exception_status", "500")]
        ),
        1.0
    );
    let h = health(&gw, "one").await;
    assert_eq!(h["state"], 2);
    assert_eq!(h["cooling_down"], true);
    assert_eq!(h["last_error"]["status"], 500);
    assert!(h["cooldown_until"].is_string());

    // While it cools down, routing skips it.
    for _ in 0..5 {
        let r = gw.post("/v1/chat/completions", &chat("g")).await;
        assert_eq!(r.headers["x-llm-model-id"], "two");
    }
    assert_eq!(calls(&mock.calls().await, "c-one"), 2);

    // It recovers upstream; after the cooldown one probe goes to it, succeeds, and the state is 0 again.
    mock.rule(json!({"model": "c-one"})).await;
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    assert_eq!(r.headers["x-llm-model-id"], "one");
    let m = metrics_until(&gw, "state 0", |m| state(m, "one") == 0.0).await;
    assert_eq!(m.sum("llm_deployment_cooled_down_total", &[]), 1.0);
    assert_eq!(state(&m, "two"), 0.0);
    let h = health(&gw, "one").await;
    assert_eq!(h["cooling_down"], false);
    assert_eq!(h["on_probation"], false);
    assert_eq!(h["recent_failures"], 0);
}

#[actix_rt::test]
async fn rate_limit_cools_down_for_its_retry_after_and_lone_deployment_still_serves() {
    let mock = Mock::start();
    mock.rule(json!({"model": "rl", "status": 429, "retry_after": 3, "times": 1}))
        .await;
    let gw = Gateway::start(&config(
        &[entry(&mock, "solo", "rl", "solo-1", "")],
        "  cooldown_time: 1\n",
    ))
    .await;
    let r = gw.post("/v1/chat/completions", &chat("solo")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.headers["retry-after"], "3");
    let h = health(&gw, "solo-1").await;
    assert_eq!(h["cooling_down"], true);
    let left = h["cooldown_remaining_seconds"].as_f64().unwrap();
    assert!(
        left > 2.0 && left <= 3.0,
        "retry-after beats the 1 s cooldown_time: {left}"
    );
    let m = metrics_until(&gw, "the cooldown", |m| {
        m.sum("llm_deployment_cooled_down_total", &[]) == 1.0
    })
    .await;
    assert_eq!(
        m.sum(
            "llm_deployment_cooled_down_total",
            &[("exception_status", "429"), ("model_id", "solo-1")]
        ),
        1.0
    );
    // The group has nothing else: the request is still served rather than refused.
    let r = gw.post("/v1/chat/completions", &chat("solo")).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[actix_rt::test]
async fn every_deployment_cooling_down_answers_503_with_the_earliest_recovery() {
    let mock = Mock::start();
    for m in ["d-a", "d-b"] {
        mock.rule(json!({"model": m, "status": 429, "retry_after": 4}))
            .await;
    }
    let gw = Gateway::start(&config(
        &[
            entry(&mock, "g", "d-a", "da", ""),
            entry(&mock, "g", "d-b", "db", ""),
        ],
        "  num_retries: 1\n  cooldown_time: 1\n",
    ))
    .await;
    // Both are tried, both rate limit: the client gets the upstream's 429.
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.error()["type"], "rate_limit_error");
    // Now both cool down: 503 without an upstream call, retry-after at the earliest recovery.
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let secs: u64 = r.headers["retry-after"].parse().unwrap();
    assert!((1..=4).contains(&secs), "{secs}");
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("cooling down"));
    let c = mock.calls().await;
    assert_eq!(calls(&c, "d-a") + calls(&c, "d-b"), 2);
    let m = gw.metrics_after(2.0).await;
    assert_eq!(
        m.sum(
            "llm_proxy_failed_requests_metric_total",
            &[
                ("exception_status", "503"),
                ("exception_class", "ServiceUnavailableError")
            ]
        ),
        1.0
    );
}

#[actix_rt::test]
async fn each_fallback_kind_triggers_on_its_error() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(
        &[
            entry(&mock, "main", "f-main", "main-1", ""),
            entry(&mock, "general", "f-general", "general-1", ""),
            entry(&mock, "bigger", "f-bigger", "bigger-1", ""),
            entry(&mock, "safer", "f-safer", "safer-1", ""),
        ],
        "  allowed_fails: 1000\n  fallbacks: [{main: [general]}]\n  context_window_fallbacks: [{main: [bigger]}]\n  content_policy_fallbacks: [{main: [safer]}]\n",
    ))
    .await;
    let group_of = |r: &Reply| r.headers["x-llm-model-group"].clone();

    mock.rule(json!({"model": "f-main", "status": 400, "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens."})).await;
    let r = gw.post("/v1/chat/completions", &chat("main")).await;
    assert_eq!((r.status, group_of(&r)), (200, "bigger".to_owned()));

    mock.rule(json!({"model": "f-main", "status": 400, "message": "Your request was rejected as a result of our safety system: content management policy."})).await;
    let r = gw.post("/v1/chat/completions", &chat("main")).await;
    assert_eq!((r.status, group_of(&r)), (200, "safer".to_owned()));

    mock.rule(json!({"model": "f-main", "status": 500})).await;
    let r = gw.post("/v1/chat/completions", &chat("main")).await;
    assert_eq!((r.status, group_of(&r)), (200, "general".to_owned()));

    // Fallbacks named in the request win over the configured ones.
    let mut body = chat("main");
    body["fallbacks"] = json!(["safer"]);
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!((r.status, group_of(&r)), (200, "safer".to_owned()));

    // A plain bad request is the client's fault: no fallback.
    mock.rule(json!({"model": "f-main", "status": 400, "message": "bad temperature"}))
        .await;
    let r = gw.post("/v1/chat/completions", &chat("main")).await;
    assert_eq!(r.status, 400);

    // The fallback fails too: the client gets the fallback's error, counted as a failed fallback.
    mock.rule(json!({"model": "f-main", "status": 500})).await;
    mock.rule(json!({"model": "f-general", "status": 503}))
        .await;
    let r = gw.post("/v1/chat/completions", &chat("main")).await;
    assert_eq!(r.status, 503, "{}", r.body);

    let m = gw.metrics_after(6.0).await;
    let ok = |to: &str, class: &str, status: &str| {
        m.sum(
            "llm_deployment_successful_fallbacks_total",
            &[
                ("requested_model", "main"),
                ("fallback_model", to),
                ("exception_class", class),
                ("exception_status", status),
            ],
        )
    };
    assert_eq!(
        ok("bigger", "Openai.ContextWindowExceededError", "400"),
        1.0
    );
    assert_eq!(
        ok("safer", "Openai.ContentPolicyViolationError", "400"),
        1.0
    );
    assert_eq!(ok("general", "Openai.InternalServerError", "500"), 1.0);
    assert_eq!(ok("safer", "Openai.InternalServerError", "500"), 1.0);
    assert_eq!(m.sum("llm_deployment_successful_fallbacks_total", &[]), 4.0);
    assert_eq!(
        m.sum(
            "llm_deployment_failed_fallbacks_total",
            &[("requested_model", "main"), ("fallback_model", "general")]
        ),
        1.0
    );
    // One request, one count, whatever the attempts: requested_model stays the group asked for.
    assert_eq!(
        m.sum(
            "llm_proxy_total_requests_metric_total",
            &[("requested_model", "main")]
        ),
        6.0
    );
}

#[actix_rt::test]
async fn streams_are_retried_before_their_first_byte_never_after() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(
        &[
            entry(&mock, "s", "s-first", "first", "weight: 1000000000"),
            entry(&mock, "s", "s-second", "second", "weight: 1"),
        ],
        "  num_retries: 2\n  allowed_fails: 1000\n",
    ))
    .await;
    let mut body = chat("s");
    body["stream"] = json!(true);

    // Fails before any byte: retried on the other deployment, the client sees one whole stream.
    mock.rule(json!({"model": "s-first", "status": 502})).await;
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-llm-model-id"], "second");
    let data = r.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let c = mock.calls().await;
    assert_eq!((calls(&c, "s-first"), calls(&c, "s-second")), (1, 1));

    // Breaks after its first frames reached the client: not retried, the client gets an error event.
    mock.rule(json!({"model": "s-first", "cut_stream_after": 2}))
        .await;
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-llm-model-id"], "first");
    let data = r.sse_data();
    assert!(data.iter().any(|d| d.contains("\"error\"")), "{data:?}");
    assert!(!data.iter().any(|d| d == "[DONE]"));
    let c = mock.calls().await;
    assert_eq!((calls(&c, "s-first"), calls(&c, "s-second")), (2, 1));
}

#[actix_rt::test]
async fn strategies_pick_as_specified() {
    // latency-based: the faster deployment takes the traffic once both are measured.
    let mock = Mock::start();
    mock.rule(json!({"model": "lat-slow", "latency_ms": 250}))
        .await;
    let gw = Gateway::start(&config(
        &[
            entry(&mock, "g", "lat-slow", "slow", ""),
            entry(&mock, "g", "lat-fast", "fast", ""),
        ],
        "  routing_strategy: latency-based-routing\n",
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("g")).await.status,
            200
        );
    }
    let before = calls(&mock.calls().await, "lat-slow");
    assert!(before >= 1, "the unmeasured deployment is tried");
    for _ in 0..30 {
        gw.post("/v1/chat/completions", &chat("g")).await;
    }
    let after = calls(&mock.calls().await, "lat-slow");
    assert!(
        after - before <= 1,
        "{} of 30 went to the slow one",
        after - before
    );
    drop(gw);

    // least-busy: requests spread by what is in flight. Each request is sent once the previous one has
    // reached the upstream (so its in-flight count is taken), and all stay in flight far longer than the
    // sending takes, however loaded the machine: the spread is exact, not a race.
    mock.rule(json!({"model": "busy-a", "latency_ms": 4000}))
        .await;
    mock.rule(json!({"model": "busy-b", "latency_ms": 4000}))
        .await;
    let gw = Gateway::start(&config(
        &[
            entry(&mock, "g", "busy-a", "a", ""),
            entry(&mock, "g", "busy-b", "b", ""),
        ],
        "  routing_strategy: least-busy\n",
    ))
    .await;
    let mut waiting = Vec::new();
    let http = client();
    for i in 0..8u64 {
        let (url, body, http) = (gw.url("/v1/chat/completions"), chat("g"), http.clone());
        waiting.push(actix_rt::spawn(async move {
            http.post(url).send_json(&body).await.unwrap().status()
        }));
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let c = mock.calls().await;
            if calls(&c, "busy-a") + calls(&c, "busy-b") > i {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "request {i} never reached the upstream"
            );
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for w in waiting {
        assert_eq!(w.await.unwrap(), 200);
    }
    let c = mock.calls().await;
    assert_eq!((calls(&c, "busy-a"), calls(&c, "busy-b")), (4, 4));
    drop(gw);

    // usage-based: each deployment's rpm is respected; past both, 429.
    fresh_minute().await;
    let gw = Gateway::start(&config(
        &[
            entry(&mock, "g", "use-a", "ua", "rpm: 2"),
            entry(&mock, "g", "use-b", "ub", "rpm: 3"),
        ],
        "  routing_strategy: usage-based-routing\n",
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("g")).await.status,
            200
        );
    }
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    let c = mock.calls().await;
    assert_eq!((calls(&c, "use-a"), calls(&c, "use-b")), (2, 3));
    drop(gw);

    // simple-shuffle: weights 1 and 3.
    let gw = Gateway::start(&config(
        &[
            entry(&mock, "g", "w-one", "w1", "weight: 1"),
            entry(&mock, "g", "w-three", "w3", "weight: 3"),
        ],
        "  routing_strategy: simple-shuffle\n",
    ))
    .await;
    for _ in 0..200 {
        gw.post("/v1/chat/completions", &chat("g")).await;
    }
    let heavy = calls(&mock.calls().await, "w-three");
    assert!(
        (125..=175).contains(&heavy),
        "{heavy} of 200 with weight 3 of 4"
    );
}

/// The scenario: group A has two deployments, one answering 429 with `retry-after: 2`, the other
/// 500 on every second call; group B is A's fallback. 300 requests, paced over about 12 s so cooldowns
/// end and probes happen. Every request succeeds, and `/metrics` accounts for every upstream call.
#[actix_rt::test]
async fn scenario_rate_limited_and_flaky_group_with_a_fallback() {
    let mock = Mock::start();
    mock.rule(json!({"model": "sc-limited", "status": 429, "retry_after": 2}))
        .await;
    mock.rule(json!({"model": "sc-flaky", "status": 500, "every": 2}))
        .await;
    let gw = Gateway::start(&config(
        &[
            entry(&mock, "A", "sc-limited", "a-limited", ""),
            entry(&mock, "A", "sc-flaky", "a-flaky", ""),
            entry(&mock, "B", "sc-backup", "b-backup", ""),
        ],
        "  num_retries: 1\n  cooldown_time: 1\n  allowed_fails: 3\n  fallbacks: [{A: [B]}]\n",
    ))
    .await;
    fresh_minute().await;
    for i in 0..300 {
        let r = gw.post("/v1/chat/completions", &chat("A")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        actix_rt::time::sleep(Duration::from_millis(40)).await;
    }
    let c = mock.calls().await;
    let (limited, flaky, backup) = (
        calls(&c, "sc-limited"),
        calls(&c, "sc-flaky"),
        calls(&c, "sc-backup"),
    );
    assert!(
        limited >= 3,
        "the rate-limited one is probed after each cooldown: {limited}"
    );
    assert!(flaky >= 10 && backup >= 1, "{flaky} {backup}");
    let attempts = (limited + flaky + backup) as f64;
    let m = metrics_until(&gw, "every attempt", |m| {
        m.sum("llm_proxy_total_requests_metric_total", &[]) >= 300.0
            && m.sum("llm_deployment_total_requests_total", &[]) >= attempts
    })
    .await;
    let sum = |name: &str, labels: &[(&str, &str)]| m.sum(name, labels);
    assert_eq!(sum("llm_proxy_total_requests_metric_total", &[]), 300.0);
    assert_eq!(sum("llm_proxy_failed_requests_metric_total", &[]), 0.0);
    assert_eq!(
        sum(
            "llm_proxy_total_requests_metric_total",
            &[("requested_model", "A")]
        ),
        300.0
    );
    // Every call to the rate-limited deployment failed with 429 and cooled it down once.
    assert_eq!(
        sum(
            "llm_deployment_failure_responses_total",
            &[("model_id", "a-limited"), ("exception_status", "429")]
        ),
        limited as f64
    );
    assert_eq!(
        sum(
            "llm_deployment_cooled_down_total",
            &[("model_id", "a-limited"), ("exception_status", "429")]
        ),
        limited as f64
    );
    // Every second call to the flaky one failed with 500; the others succeeded.
    assert_eq!(
        sum(
            "llm_deployment_failure_responses_total",
            &[("model_id", "a-flaky"), ("exception_status", "500")]
        ),
        (flaky / 2) as f64
    );
    assert_eq!(
        sum(
            "llm_deployment_success_responses_total",
            &[("model_id", "a-flaky")]
        ),
        (flaky - flaky / 2) as f64
    );
    let flaky_cooldowns = sum(
        "llm_deployment_cooled_down_total",
        &[("model_id", "a-flaky"), ("exception_status", "500")],
    );
    assert_eq!(
        health(&gw, "a-flaky").await["cooldowns"].as_f64().unwrap(),
        flaky_cooldowns
    );
    assert_eq!(
        sum(
            "llm_deployment_failure_responses_total",
            &[("model_id", "b-backup")]
        ),
        0.0
    );
    // Every call to B was a fallback from A that succeeded.
    assert_eq!(
        sum(
            "llm_deployment_successful_fallbacks_total",
            &[("requested_model", "A"), ("fallback_model", "B")]
        ),
        backup as f64
    );
    assert_eq!(sum("llm_deployment_failed_fallbacks_total", &[]), 0.0);
    assert_eq!(sum("llm_deployment_total_requests_total", &[]), attempts);
    // One state series per deployment; the limited one is cooling down or waiting on its probe.
    for id in ["a-limited", "a-flaky", "b-backup"] {
        let s = state(&m, id);
        assert!([0.0, 1.0, 2.0].contains(&s));
    }
    assert_eq!(state(&m, "a-limited"), 2.0);
    assert_eq!(state(&m, "b-backup"), 0.0);
}

#[actix_rt::test]
async fn the_overall_timeout_bounds_every_attempt() {
    let mock = Mock::start();
    mock.rule(json!({"model": "slow-a", "latency_ms": 1500}))
        .await;
    mock.rule(json!({"model": "slow-b", "latency_ms": 1500}))
        .await;
    let gw = Gateway::start(&config(
        &[
            entry(&mock, "g", "slow-a", "sa", ""),
            entry(&mock, "g", "slow-b", "sb", ""),
        ],
        "  num_retries: 3\n  timeout: 0.5\n  allowed_fails: 1000\n",
    ))
    .await;
    let started = std::time::Instant::now();
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    let took = started.elapsed();
    assert_eq!(r.status, 408, "{}", r.body);
    assert_eq!(r.error()["type"], "timeout_error");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1200),
        "{took:?}"
    );
    // The request's own deadline is not the deployments' fault: neither is cooled down.
    for id in ["sa", "sb"] {
        assert_eq!(health(&gw, id).await["cooling_down"], false, "{id}");
    }
}

/// Two replicas sharing Redis: a cooldown one of them starts is adopted by the other within a second or so.
#[actix_rt::test]
async fn replicas_share_cooldowns_through_redis() {
    let Some(redis) = redis_url() else { return };
    let mock = Mock::start();
    let id = format!("shared-{}", std::process::id());
    mock.rule(json!({"model": "sh-limited", "status": 429, "retry_after": 30}))
        .await;
    let cfg = format!(
        "{}  cooldown_time: 1\ngeneral_settings:\n  redis_url: {redis}\n",
        config(
            &[
                entry(&mock, "g", "sh-limited", &id, ""),
                entry(&mock, "g", "sh-ok", "sh-ok-1", ""),
            ],
            "  num_retries: 1\n",
        )
    );
    let a = Gateway::start(&cfg).await;
    // On PostgreSQL, a replica on the same database (replicas are told apart from other gateways sharing
    // the Redis by their database); on SQLite, a second gateway.
    let b = match a.replica(&cfg).await {
        Some(b) => b,
        None => Gateway::start(&cfg).await,
    };
    assert_eq!(health(&b, &id).await["cooling_down"], false);
    // Send to A until its first pick lands on the rate-limited deployment and cools it down.
    for _ in 0..50 {
        assert_eq!(a.post("/v1/chat/completions", &chat("g")).await.status, 200);
        if health(&a, &id).await["cooling_down"] == true {
            break;
        }
    }
    assert_eq!(health(&a, &id).await["cooling_down"], true);
    let seen = std::time::Instant::now();
    let deadline = seen + Duration::from_secs(5);
    loop {
        let h = health(&b, &id).await;
        // The gate and the actor's state are read one after the other: wait for both.
        if h["cooling_down"] == true && h["state"] == 2 {
            assert!(h["cooldown_remaining_seconds"].as_f64().unwrap() > 20.0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica B never adopted the cooldown: {h}"
        );
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    // Announced on Redis, not found by B's once-a-second read: well within half a second.
    let took = seen.elapsed();
    eprintln!("cooldown adopted by the other replica after {took:?}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    // Counted once, on the replica that decided it.
    let m = b.metrics().await;
    assert_eq!(m.sum("llm_deployment_cooled_down_total", &[]), 0.0);
    // B routes around it without having seen a single failure itself.
    for _ in 0..10 {
        let r = b.post("/v1/chat/completions", &chat("g")).await;
        assert_eq!(r.headers["x-llm-model-id"], "sh-ok-1");
    }
    let m = b.metrics().await;
    assert_eq!(m.sum("llm_deployment_failure_responses_total", &[]), 0.0);
}
