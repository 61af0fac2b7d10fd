//! Azure OpenAI and Anthropic deployments behind the OpenAI API, against `llm-mock` speaking their dialects:
//! chat (plain, stream), tools, embeddings (Azure), errors and what they mean for routing, fallbacks
//! between providers, remaining-limit gauges, spend.

use crate::support::*;
use serde_json::{json, Value};

pub(crate) const REPLY: &str = "Hello from the mock upstream";

pub(crate) fn config(mock: &Mock, router: &str) -> String {
    let base = format!("http://127.0.0.1:{}", mock.port);
    format!(
        "model_list:
  - model_name: gpt-az
    llm_params:
      model: azure/my-gpt4o-deployment
      api_base: {base}
      api_version: 2024-10-21
      api_key: az-upstream-secret
    model_info:
      id: az-1
      base_model: gpt-4o
  - model_name: claude
    llm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_base: {base}
      api_key: sk-ant-upstream-secret
    model_info:
      id: ant-1
  - model_name: gpt
    llm_params:
      model: openai/gpt-plain
      api_base: {base}/v1
      api_key: sk-upstream-secret
    model_info:
      id: oai-1
llm_settings:
  callbacks: [prometheus]
router_settings:
  num_retries: 0
  allowed_fails: 1000
{router}"
    )
}

pub(crate) async fn rules(mock: &Mock) {
    for model in [
        "my-gpt4o-deployment",
        "claude-3-5-sonnet-20241022",
        "gpt-plain",
    ] {
        mock.rule(json!({"model": model, "reply": REPLY})).await;
    }
}

fn streamed(r: &Reply) -> (String, Vec<Value>) {
    let data = r.sse_data();
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        r.body
    );
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (text, chunks)
}

#[actix_rt::test]
async fn azure_deployments_serve_chat_streams_completions_and_embeddings() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock, "")).await;
    rules(&mock).await;
    mock.rule(json!({"model": "my-gpt4o-deployment", "reply": REPLY, "remaining_requests": 77, "remaining_tokens": 9000}))
        .await;

    let r = gw.post("/v1/chat/completions", &chat("gpt-az")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["message"]["content"], REPLY);
    assert_eq!(r.headers["x-llm-model-id"], "az-1");

    let mut body = chat("gpt-az");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (text, chunks) = streamed(&r);
    assert_eq!(text, REPLY);
    assert!(chunks.last().unwrap()["usage"]["total_tokens"].as_u64() > Some(0));

    let r = gw
        .post(
            "/v1/completions",
            &json!({"model": "gpt-az", "prompt": "Say hello"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "gpt-az", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    // Every call reached the Azure URL of the deployment (the mock counts by deployment name).
    assert_eq!(mock.calls().await.get("my-gpt4o-deployment"), Some(&4));

    let m = gw.metrics_after(4.0).await;
    let dep = [("api_provider", "azure"), ("model_group", "gpt-az")];
    assert_eq!(m.sum("llm_remaining_requests_metric", &dep), 77.0);
    assert_eq!(m.sum("llm_remaining_tokens", &dep), 9000.0);
    // Priced by `model_info.base_model` (gpt-4o), as the deployment name is no model name.
    assert!(m.sum("llm_spend_metric_total", &[("requested_model", "gpt-az")]) > 0.0);
}

#[actix_rt::test]
async fn an_azure_content_filter_refusal_takes_the_content_policy_fallback() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(
        &mock,
        "  content_policy_fallbacks: [{gpt-az: [gpt]}]\n",
    ))
    .await;
    rules(&mock).await;
    mock.rule(json!({"model": "my-gpt4o-deployment", "status": 400, "code": "content_filter",
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy."}))
        .await;
    let r = gw.post("/v1/chat/completions", &chat("gpt-az")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["x-llm-model-group"], "gpt");
    let m = gw.metrics_after(1.0).await;
    assert_eq!(
        m.sum(
            "llm_deployment_successful_fallbacks_total",
            &[
                ("requested_model", "gpt-az"),
                ("fallback_model", "gpt"),
                ("exception_class", "Azure.ContentPolicyViolationError"),
            ]
        ),
        1.0
    );
}

#[actix_rt::test]
async fn anthropic_deployments_answer_in_the_openai_shape_plain_streamed_and_with_tools() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(&mock, "")).await;
    rules(&mock).await;
    mock.rule(json!({"model": "claude-3-5-sonnet-20241022", "reply": REPLY, "remaining_requests": 55, "remaining_tokens": 40000}))
        .await;

    let mut body = chat("claude");
    body["messages"] = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"}
    ]);
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], REPLY);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64() > Some(0));
    assert!(v["usage"]["completion_tokens"].as_u64() > Some(0));

    body["stream"] = json!(true);
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (text, chunks) = streamed(&r);
    assert_eq!(text, REPLY);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "no usage chunk unless asked"
    );
    body["stream_options"] = json!({"include_usage": true});
    let r = gw.post("/v1/chat/completions", &body).await;
    let (_, chunks) = streamed(&r);
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["prompt_tokens"].as_u64() > Some(0), "{usage}");
    assert!(usage["completion_tokens"].as_u64() > Some(0), "{usage}");

    // Tools, both ways: the call comes back as OpenAI tool_calls, plain and streamed.
    let tools = json!([{"type": "function", "function": {"name": "lookup", "description": "Look it up",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]);
    let body = json!({"model": "claude", "messages": [
        {"role": "user", "content": "Find it"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "lookup", "arguments": "{\"query\":\"before\"}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "nothing"},
        {"role": "user", "content": "Again"}
    ], "tools": tools, "tool_choice": "required"});
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "lookup");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"query": REPLY}));
    let mut stream = body.clone();
    stream["stream"] = json!(true);
    let r = gw.post("/v1/chat/completions", &stream).await;
    let (_, chunks) = streamed(&r);
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"query": REPLY})
    );

    // Anthropic serves chat only.
    let r = gw
        .post("/v1/embeddings", &json!({"model": "claude", "input": "x"}))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    let m = gw.metrics_after(5.0).await;
    let dep = [("api_provider", "anthropic"), ("model_group", "claude")];
    assert_eq!(m.sum("llm_remaining_requests_metric", &dep), 55.0);
    assert_eq!(m.sum("llm_remaining_tokens", &dep), 40000.0);
    assert!(m.sum("llm_spend_metric_total", &[("requested_model", "claude")]) > 0.0);
}

#[actix_rt::test]
async fn anthropic_errors_mean_what_they_say_and_fall_back_to_openai_and_back() {
    let mock = Mock::start();
    let gw = Gateway::start(&config(
        &mock,
        "  fallbacks: [{claude: [gpt]}, {gpt: [claude]}]\n  context_window_fallbacks: [{claude: [gpt]}]\n",
    ))
    .await;
    rules(&mock).await;
    let claude = "claude-3-5-sonnet-20241022";

    // Overloaded (529): a retryable server error; the OpenAI group answers instead.
    mock.rule(json!({"model": claude, "status": 529, "message": "Overloaded"}))
        .await;
    let r = gw.post("/v1/chat/completions", &chat("claude")).await;
    assert_eq!(
        (r.status, r.headers["x-llm-model-group"].as_str()),
        (200, "gpt"),
        "{}",
        r.body
    );

    // A prompt too long is a context-window error: its own fallbacks.
    mock.rule(json!({"model": claude, "status": 400, "message": "prompt is too long: 210000 tokens > 200000 maximum"}))
        .await;
    let r = gw.post("/v1/chat/completions", &chat("claude")).await;
    assert_eq!(
        (r.status, r.headers["x-llm-model-group"].as_str()),
        (200, "gpt"),
        "{}",
        r.body
    );

    // And back: the OpenAI group fails, Anthropic answers.
    mock.rule(json!({"model": claude, "reply": REPLY})).await;
    mock.rule(json!({"model": "gpt-plain", "status": 500}))
        .await;
    let r = gw.post("/v1/chat/completions", &chat("gpt")).await;
    assert_eq!(
        (r.status, r.headers["x-llm-model-group"].as_str()),
        (200, "claude"),
        "{}",
        r.body
    );
    assert_eq!(r.json()["choices"][0]["message"]["content"], REPLY);

    // Rate limited with no fallback left: the client gets Anthropic's status, message and retry-after.
    mock.rule(json!({"model": claude, "status": 429, "message": "Number of requests has exceeded your rate limit", "retry_after": 7}))
        .await;
    let r = gw.post("/v1/chat/completions", &chat("gpt")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.error()["message"]
        .as_str()
        .unwrap()
        .contains("rate limit"));

    let m = gw.metrics_after(4.0).await;
    let failed = |class: &str| {
        m.sum(
            "llm_deployment_failure_responses_total",
            &[("api_provider", "anthropic"), ("exception_class", class)],
        )
    };
    assert_eq!(failed("Anthropic.ServiceUnavailableError"), 1.0);
    assert_eq!(failed("Anthropic.ContextWindowExceededError"), 1.0);
    assert_eq!(failed("Anthropic.RateLimitError"), 1.0);
}

#[actix_rt::test]
async fn a_cut_anthropic_stream_is_charged_for_what_it_generated() {
    let mock = Mock::start();
    let cfg = config(&mock, "") + "general_settings:\n  master_key: sk-master\n";
    let gw = Gateway::start(&cfg).await;
    rules(&mock).await;
    let key = gw
        .admin("/key/generate", &json!({"key_alias": "streamer"}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    mock.rule(
        json!({"model": "claude-3-5-sonnet-20241022", "reply": REPLY, "cut_stream_after": 5}),
    )
    .await;
    let mut body = chat("claude");
    body["stream"] = json!(true);
    let auth = format!("Bearer {key}");
    let r = gw
        .post_with("/v1/chat/completions", &body, &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200);
    let frames = r.sse_data();
    let last: Value = serde_json::from_str(frames.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"].is_string(),
        "a cut stream ends with an error event: {}",
        r.body
    );
    assert!(
        r.body.contains("Hello "),
        "what came before the cut reached the client"
    );
    // Never $0 for a stream that produced output: the key pays for it, the log says it failed.
    let spend = gw.admin_get(&format!("/key/info?key={key}")).await.json()["info"]["spend"]
        .as_f64()
        .unwrap();
    assert!(spend > 0.0, "{spend}");
    let logs = gw.admin_get("/spend/logs").await.json();
    let row = &logs["data"][0];
    assert_eq!(row["status"], "failure");
    assert!(row["completion_tokens"].as_i64().unwrap() > 0, "{row}");
    assert!(row["prompt_tokens"].as_i64().unwrap() > 0, "{row}");
}

#[actix_rt::test]
async fn the_mock_refuses_requests_without_the_headers_each_dialect_requires() {
    let mock = Mock::start();
    let c = client();
    let base = format!("http://127.0.0.1:{}", mock.port);
    let r = c
        .post(format!("{base}/v1/messages"))
        .insert_header(("anthropic-version", "2023-06-01"))
        .send_json(&json!({"model": "c", "max_tokens": 5, "messages": []}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .post(format!("{base}/v1/messages"))
        .insert_header(("x-api-key", "k"))
        .send_json(&json!({"model": "c", "max_tokens": 5, "messages": []}))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = c
        .post(format!(
            "{base}/openai/deployments/d/chat/completions?api-version=2024-10-21"
        ))
        .send_json(&chat("d"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .post(format!("{base}/openai/deployments/d/chat/completions"))
        .insert_header(("api-key", "k"))
        .send_json(&chat("d"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
