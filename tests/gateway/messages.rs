//! The Messages API (`/v1/messages`) for Anthropic SDK clients: served on any provider (translated), passed
//! through natively to Anthropic deployments (`cache_control`, `thinking` kept), with the same keys, limits
//! and budgets; and what any stream shares: an error event opening a stream is retried, Anthropic's
//! `ping`s keep a quiet stream alive, and routing passes over deployments without the endpoint.

use crate::providers::{config, rules, REPLY};
use crate::support::*;
use serde_json::{json, Value};

/// The events of a Messages API stream: (name, data).
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut lines = e.lines();
            let name = lines
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .unwrap()
                .to_owned();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[actix_rt::test]
async fn the_messages_api_serves_anthropic_clients_on_any_provider() {
    let mock = Mock::start();
    let cfg = config(&mock, "") + "general_settings:\n  master_key: sk-master\n";
    let gw = Gateway::start(&cfg).await;
    rules(&mock).await;
    let key = anthropic_sdk_key(&gw, "anthropic-sdk").await;
    let headers = [
        ("x-api-key", key.as_str()),
        ("anthropic-version", "2023-06-01"),
    ];
    for (path, group) in [
        ("/v1/messages", "claude"),
        ("/anthropic/v1/messages", "gpt"),
        ("/v1/messages", "gpt-az"),
    ] {
        let body = json!({"model": group, "max_tokens": 64, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Say hello"}]});
        let r = gw.post_with(path, &body, &headers).await;
        assert_eq!(r.status, 200, "{group}: {}", r.body);
        let v = r.json();
        assert_eq!(v["type"], "message", "{v}");
        assert_eq!(v["content"][0]["text"], REPLY);
        assert_eq!(v["stop_reason"], "end_turn");
        assert!(v["usage"]["input_tokens"].as_u64() > Some(0), "{v}");
        assert!(v["usage"]["output_tokens"].as_u64() > Some(0), "{v}");

        let mut stream = body.clone();
        stream["stream"] = json!(true);
        let r = gw.post_with(path, &stream, &headers).await;
        assert_eq!(r.status, 200, "{group}: {}", r.body);
        let ev = events(&r.body);
        assert_eq!(ev.first().unwrap().0, "message_start", "{}", r.body);
        assert_eq!(ev.last().unwrap().0, "message_stop", "{}", r.body);
        let text: String = ev
            .iter()
            .filter_map(|(_, d)| d["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, REPLY, "{group}");
        let delta = ev.iter().find(|(n, _)| n == "message_delta").unwrap();
        assert!(
            delta.1["usage"]["output_tokens"].as_u64() > Some(0),
            "{}",
            r.body
        );
    }
    // Errors in the Messages API's shape.
    let body =
        json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let r = gw.post_with("/v1/messages", &body, &headers).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = gw
        .post_with("/v1/messages", &body, &[("x-api-key", "sk-wrong-key")])
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = gw
        .post_with(
            "/v1/messages",
            &json!({"model": "claude", "messages": []}),
            &headers,
        )
        .await;
    assert_eq!(r.status, 400);
    // Counted like any request, against the key.
    let m = gw.metrics_after(6.0).await;
    assert_eq!(
        m.sum(
            "llm_proxy_total_requests_metric_total",
            &[("api_key_alias", "anthropic-sdk"), ("status_code", "200")]
        ),
        6.0
    );
}

#[actix_rt::test]
async fn the_messages_api_holds_an_ordinary_key_to_its_models_and_budget() {
    let mock = Mock::start();
    let cfg = config(&mock, "  fallbacks: [{gpt-az: [claude]}]\n")
        + "general_settings:\n  master_key: sk-master\n";
    let gw = Gateway::start(&cfg).await;
    rules(&mock).await;
    // A key for the Azure group only (priced), with a tiny budget.
    let key = gw
        .admin(
            "/key/generate",
            &json!({"key_alias": "narrow", "models": ["gpt-az"], "max_budget": 0.000001}),
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let headers = [
        ("x-api-key", key.as_str()),
        ("anthropic-version", "2023-06-01"),
    ];
    let ask = |model: &str| json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]});
    // Another group through the other API: refused, in Anthropic's shape, before any upstream call.
    let r = gw.post_with("/v1/messages", &ask("claude"), &headers).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(
        mock.calls()
            .await
            .get("claude-3-5-sonnet-20241022")
            .copied()
            .unwrap_or(0),
        0
    );
    // Its own group fails upstream: the fallback to a group the key may not use is never taken.
    mock.rule(json!({"model": "my-gpt4o-deployment", "status": 500}))
        .await;
    let r = gw.post_with("/v1/messages", &ask("gpt-az"), &headers).await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(
        mock.calls()
            .await
            .get("claude-3-5-sonnet-20241022")
            .copied()
            .unwrap_or(0),
        0
    );
    // One answer spends the budget; the next request is refused.
    mock.rule(json!({"model": "my-gpt4o-deployment", "reply": REPLY}))
        .await;
    let r = gw.post_with("/v1/messages", &ask("gpt-az"), &headers).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = gw.post_with("/v1/messages", &ask("gpt-az"), &headers).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("udget"),
        "{}",
        r.body
    );
}

async fn anthropic_sdk_key(gw: &Gateway, alias: &str) -> String {
    gw.admin("/key/generate", &json!({"key_alias": alias}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[actix_rt::test]
async fn messages_to_an_anthropic_deployment_pass_through_natively_and_are_charged() {
    let mock = Mock::start();
    let cfg = config(&mock, "") + "general_settings:\n  master_key: sk-master\n";
    let gw = Gateway::start(&cfg).await;
    rules(&mock).await;
    let key = anthropic_sdk_key(&gw, "native").await;
    let headers = [
        ("x-api-key", key.as_str()),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "prompt-caching-2024-07-31"),
    ];
    // What a chat completion cannot carry: a cache breakpoint and extended thinking.
    let body = json!({"model": "claude", "max_tokens": 2048,
        "system": [{"type": "text", "text": "A long, cached preamble.", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "Say hello"}]});
    let r = gw.post_with("/v1/messages", &body, &headers).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["content"][0]["type"], "thinking", "{v}");
    assert_eq!(v["content"][0]["signature"], "sig_mock", "{v}");
    assert_eq!(v["content"][1]["text"], REPLY, "{v}");
    assert_eq!(v["usage"]["cache_read_input_tokens"], 7, "{v}");
    assert_eq!(r.headers["x-llm-model-group"], "claude");

    let mut stream = body.clone();
    stream["stream"] = json!(true);
    let r = gw.post_with("/v1/messages", &stream, &headers).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ev = events(&r.body);
    assert_eq!(ev.first().unwrap().0, "message_start", "{}", r.body);
    assert_eq!(
        ev[0].1["message"]["usage"]["cache_read_input_tokens"], 7,
        "{}",
        r.body
    );
    assert!(
        ev.iter()
            .any(|(_, d)| d["delta"]["type"] == "thinking_delta"),
        "the thinking block streams through: {}",
        r.body
    );
    assert!(ev.iter().any(|(n, _)| n == "ping"), "{}", r.body);
    assert_eq!(ev.last().unwrap().0, "message_stop", "{}", r.body);

    // Both are accounted like any request: tokens (cache reads are input) and spend, against the key.
    let logs = gw.admin_get("/spend/logs").await.json();
    let rows = logs["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{logs}");
    for row in rows {
        assert_eq!(row["status"], "success", "{row}");
        assert_eq!(row["model_group"], "claude", "{row}");
        assert!(row["prompt_tokens"].as_i64().unwrap() > 7, "{row}");
        assert!(row["completion_tokens"].as_i64().unwrap() > 0, "{row}");
    }
    let spend = gw.admin_get(&format!("/key/info?key={key}")).await.json()["info"]["spend"]
        .as_f64()
        .unwrap();
    assert!(spend > 0.0, "{spend}");
    // Cache reads are priced at Anthropic's cache-read rate (a tenth of the input price), not as input.
    let info = gw.admin_get("/model/info").await.json();
    let params = &info["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_name"] == "claude")
        .unwrap()["litellm_params"];
    let (input, output) = (
        params["input_cost_per_token"].as_f64().unwrap(),
        params["output_cost_per_token"].as_f64().unwrap(),
    );
    let read = params["cache_read_input_token_cost"].as_f64().unwrap();
    assert!((read - input * 0.1).abs() < 1e-12, "{params}");
    for row in rows {
        let prompt = row["prompt_tokens"].as_f64().unwrap();
        let completion = row["completion_tokens"].as_f64().unwrap();
        let expected = (prompt - 7.0) * input + 7.0 * read + completion * output;
        let charged = row["spend"].as_f64().unwrap();
        assert!((charged - expected).abs() < 2e-6, "{row}: {expected}");
    }

    // An upstream error comes back in Anthropic's shape, with its type.
    mock.rule(json!({"model": "claude-3-5-sonnet-20241022", "status": 529}))
        .await;
    let r = gw.post_with("/v1/messages", &body, &headers).await;
    assert_eq!(r.status, 529, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "overloaded_error", "{}", r.body);
}

#[actix_rt::test]
async fn a_stream_that_opens_with_an_error_event_is_retried() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock, "")).await;
    rules(&mock).await;
    for (group, model) in [
        ("claude", "claude-3-5-sonnet-20241022"),
        ("gpt", "gpt-plain"),
    ] {
        // The first call answers 200 and then an error event, before any token; the retry succeeds.
        mock.rule(
            json!({"model": model, "reply": REPLY, "stream_error": "overloaded_error", "times": 1}),
        )
        .await;
        let mut body = chat(group);
        body["stream"] = json!(true);
        body["num_retries"] = json!(1);
        let r = gw.post("/v1/chat/completions", &body).await;
        assert_eq!(r.status, 200, "{group}: {}", r.body);
        let text: String = r
            .sse_data()
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, REPLY, "{group}: {}", r.body);
        assert!(!r.body.contains("overloaded"), "{group}: {}", r.body);
        assert_eq!(mock.calls().await.get(model), Some(&2), "{group}");
    }
    // Without a retry left, the error is the request's, with its meaning (Anthropic's overload: 529).
    mock.rule(json!({"model": "claude-3-5-sonnet-20241022", "stream_error": "overloaded_error"}))
        .await;
    let mut body = chat("claude");
    body["stream"] = json!(true);
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 529, "{}", r.body);
    let m = gw.metrics_after(3.0).await;
    assert_eq!(
        m.sum(
            "llm_deployment_failure_responses_total",
            &[("api_provider", "anthropic")]
        ),
        2.0
    );
}

#[actix_rt::test]
async fn anthropic_pings_keep_a_quiet_stream_alive() {
    let mock = Mock::start();
    let cfg = config(&mock, "").replace(
        "      api_key: sk-ant-upstream-secret\n",
        "      api_key: sk-ant-upstream-secret\n      stream_timeout: 1.5\n",
    );
    let gw = Gateway::start(&cfg).await;
    // Nothing but pings for about 2.7 s, one every 300 ms: longer than the deployment's 1.5 s
    // stream_timeout in all, each gap far inside it.
    mock.rule(json!({"model": "claude-3-5-sonnet-20241022", "reply": "Hi", "pings": 8, "frame_delay_ms": 300}))
        .await;
    let mut body = chat("claude");
    body["stream"] = json!(true);
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.sse_data().last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("silent"), "{}", r.body);
    // The same stream to a native Messages API client.
    let msg = json!({"model": "claude", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.post("/v1/messages", &msg).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ev = events(&r.body);
    assert_eq!(ev.last().unwrap().0, "message_stop", "{}", r.body);
}

#[actix_rt::test]
async fn routing_passes_over_deployments_without_the_endpoint() {
    let mock = Mock::start();
    let base = format!("http://127.0.0.1:{}", mock.port);
    let cfg = format!(
        "model_list:
  - model_name: mixed
    llm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_base: {base}
      api_key: sk-ant-upstream-secret
  - model_name: mixed
    llm_params:
      model: openai/gpt-plain
      api_base: {base}/v1
      api_key: sk-upstream-secret
  - model_name: claude-only
    llm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_base: {base}
      api_key: sk-ant-upstream-secret
router_settings:
  num_retries: 0
"
    );
    let gw = Gateway::start(&cfg).await;
    // Every embeddings request goes to the deployment that has embeddings; chat uses both.
    for _ in 0..12 {
        let r = gw
            .post("/v1/embeddings", &json!({"model": "mixed", "input": "a"}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let calls = mock.calls().await;
    assert_eq!(calls.get("gpt-plain"), Some(&12), "{calls:?}");
    assert_eq!(calls.get("claude-3-5-sonnet-20241022"), None, "{calls:?}");
    // A group where no deployment has the endpoint: a clear 400, no upstream call.
    let r = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "claude-only", "input": "a"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error()["param"], "model", "{}", r.body);
    assert!(
        r.error()["message"]
            .as_str()
            .unwrap()
            .contains("embeddings"),
        "{}",
        r.body
    );
    assert_eq!(mock.calls().await.get("claude-3-5-sonnet-20241022"), None);
}

#[actix_rt::test]
async fn a_native_pass_through_sends_only_what_the_key_may_spend_and_the_api_accepts() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock, "")).await;
    rules(&mock).await;
    let ask = || json!({"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]});
    // The client's beta features reach the upstream; the gateway's own fields do not (the API refuses
    // unknown fields, and the mock does too).
    let mut body = ask();
    body["num_retries"] = json!(1);
    body["fallbacks"] = json!(["gpt"]);
    let r = gw
        .post_with(
            "/v1/messages",
            &body,
            &[("anthropic-beta", "prompt-caching-2024-07-31")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["mock_anthropic_beta"], "prompt-caching-2024-07-31");
    // What is billed beyond tokens, or reaches the organisation's resources, is refused before any call.
    let calls = mock
        .calls()
        .await
        .get("claude-3-5-sonnet-20241022")
        .copied();
    let mut search = ask();
    search["tools"] = json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]);
    let r = gw.post("/v1/messages", &search).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let mut mcp = ask();
    mcp["mcp_servers"] = json!([{"type": "url", "url": "https://example.com/mcp", "name": "x"}]);
    assert_eq!(gw.post("/v1/messages", &mcp).await.status, 400);
    let r = gw
        .post_with(
            "/v1/messages",
            &ask(),
            &[("anthropic-beta", "files-api-2025-04-14")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let long = "x".repeat(2000);
    let r = gw
        .post_with("/v1/messages", &ask(), &[("anthropic-beta", long.as_str())])
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        mock.calls()
            .await
            .get("claude-3-5-sonnet-20241022")
            .copied(),
        calls,
        "no refused request reached the upstream"
    );
}

#[actix_rt::test]
async fn a_cut_native_stream_ends_with_a_whole_error_event_and_is_charged() {
    let mock = Mock::start();
    let cfg = config(&mock, "") + "general_settings:\n  master_key: sk-master\n";
    let gw = Gateway::start(&cfg).await;
    rules(&mock).await;
    let key = anthropic_sdk_key(&gw, "cut").await;
    mock.rule(
        json!({"model": "claude-3-5-sonnet-20241022", "reply": REPLY, "cut_stream_after": 5}),
    )
    .await;
    let body = json!({"model": "claude", "max_tokens": 64, "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "Say hello"}]});
    let r = gw
        .post_with("/v1/messages", &body, &[("x-api-key", key.as_str())])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Every event is whole (each parses), and the last one says the stream failed.
    let ev = events(&r.body);
    assert_eq!(ev.first().unwrap().0, "message_start", "{}", r.body);
    let (name, data) = ev.last().unwrap();
    assert_eq!(name, "error", "{}", r.body);
    assert_eq!(data["type"], "error", "{}", r.body);
    assert_eq!(
        ev.iter().filter(|(n, _)| n == "error").count(),
        1,
        "{}",
        r.body
    );
    assert!(!ev.iter().any(|(n, _)| n == "message_stop"), "{}", r.body);
    // Charged for what it generated (the thinking so far counts as output).
    let spend = gw.admin_get(&format!("/key/info?key={key}")).await.json()["info"]["spend"]
        .as_f64()
        .unwrap();
    assert!(spend > 0.0, "{spend}");
    let logs = gw.admin_get("/spend/logs").await.json();
    let row = &logs["data"][0];
    assert_eq!(row["status"], "failure", "{row}");
    assert!(row["prompt_tokens"].as_i64().unwrap() > 0, "{row}");
    assert!(row["completion_tokens"].as_i64().unwrap() > 1, "{row}");
}
