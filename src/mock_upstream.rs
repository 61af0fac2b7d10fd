//! A standalone mock upstream (the `llm-mock` binary) for tests and benchmarks, speaking the OpenAI wire
//! format and the Azure OpenAI and Anthropic dialects (`/openai/deployments/{name}/...` with `api-key` and
//! `api-version`; `/v1/messages` with `x-api-key` and `anthropic-version`, see `mock_upstream/anthropic.rs`),
//! each refusing a request without its required headers as the real service does. It can be told, per model (`POST /__mock/rules`) or per request (a `"mock": {...}` object in
//! the body, which the gateway passes through), to add latency, answer a status (with `retry-after`), send
//! `x-ratelimit-*` headers, stream slowly, cut a stream halfway, omit usage, or answer malformed JSON.
//!
//! `GET /__mock/calls` counts calls per model; `DELETE /__mock/rules` forgets all rules and counts.

use crate::providers::wire::{estimate_prompt_tokens, RequestView};
use crate::providers::{mock, Endpoint};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use serde_json::json;
use std::collections::HashMap;

mod anthropic;
mod rules;
use rules::{lock, paced, take};
pub use rules::{MockState, Rule};
use std::time::Duration;

fn error_body(status: u16, message: &str) -> serde_json::Value {
    let kind = match status {
        429 => "rate_limit_exceeded",
        401 => "invalid_api_key",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": status.to_string()}})
}

async fn answer(endpoint: Endpoint, body: Bytes, state: web::Data<MockState>) -> HttpResponse {
    answer_as(endpoint, body, state, None).await
}

/// Azure's dialect: `/openai/deployments/{deployment}/...?api-version=...` with an `api-key` (or a bearer
/// token); the deployment name stands for the model (rules and counts are kept under it).
async fn azure(
    endpoint: Endpoint,
    req: HttpRequest,
    deployment: web::Path<String>,
    body: Bytes,
    state: web::Data<MockState>,
) -> HttpResponse {
    let has_version = req
        .query_string()
        .split('&')
        .any(|p| p.starts_with("api-version=") && p.len() > "api-version=".len());
    if !has_version {
        return HttpResponse::NotFound()
            .json(json!({"error": {"code": "404", "message": "Resource not found"}}));
    }
    let key = req.headers().get("api-key").is_some()
        || req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer "));
    if !key {
        return HttpResponse::Unauthorized().json(json!({"error": {"code": "401",
            "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}));
    }
    answer_as(endpoint, body, state, Some(deployment.into_inner())).await
}

async fn answer_as(
    endpoint: Endpoint,
    body: Bytes,
    state: web::Data<MockState>,
    model: Option<String>,
) -> HttpResponse {
    let view = match RequestView::parse(&body) {
        Ok(v) => v,
        Err(e) => return HttpResponse::BadRequest().json(error_body(400, &e.message)),
    };
    let model = match model
        .map(Ok)
        .unwrap_or_else(|| view.model().map(|m| m.into_owned()))
    {
        Ok(m) => m,
        Err(e) => return HttpResponse::BadRequest().json(error_body(400, &e.message)),
    };
    let per_request: Option<Rule> = view
        .get("mock")
        .and_then(|raw| serde_json::from_str(raw.get()).ok());
    let (rule, call, since) = take(&state, &model, per_request);
    if let Some(ms) = rule.latency_ms {
        actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut resp = HttpResponse::Ok();
    if let Some(v) = rule.remaining_requests {
        resp.insert_header(("x-ratelimit-remaining-requests", v.to_string()));
    }
    if let Some(v) = rule.remaining_tokens {
        resp.insert_header(("x-ratelimit-remaining-tokens", v.to_string()));
    }
    if let Some(status) = rule.status_for(call, since) {
        {
            let code = actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
            resp.status(code);
            if let Some(s) = rule.retry_after {
                resp.insert_header(("retry-after", s.to_string()));
            }
            if let Some(l) = &rule.location {
                resp.insert_header(("location", l.clone()));
            }
            let msg = rule
                .message
                .clone()
                .unwrap_or_else(|| format!("mock upstream answered {status}"));
            let mut body = error_body(status, &msg);
            if let Some(code) = &rule.code {
                body["error"]["code"] = json!(code);
            }
            return resp.json(body);
        }
    }
    if rule.malformed {
        return resp
            .content_type("application/json")
            .body("{\"id\": \"broken\", \"choices\": [");
    }
    let reply = rule
        .reply
        .clone()
        .unwrap_or_else(|| mock::default_reply(&model));
    let prompt_tokens = estimate_prompt_tokens(&view);
    let stream = endpoint.can_stream() && view.stream().unwrap_or(false);
    if stream && (rule.endless || rule.endless_frame_bytes.is_some()) {
        return resp
            .content_type("text/event-stream")
            .streaming(endless(endpoint, &model, &rule));
    }
    if let (true, Some(kind)) = (stream, rule.stream_error_for(call, since)) {
        let body =
            json!({"error": {"message": format!("mock upstream stream {kind}"), "type": kind}});
        let frames = vec![Bytes::from(format!("data: {body}\n\n"))];
        return resp
            .content_type("text/event-stream")
            .streaming(paced(frames, &rule));
    }
    if stream {
        let include_usage = view.include_usage().unwrap_or(false) && !rule.omit_usage;
        let frames = mock::stream_frames(endpoint, &model, &reply, prompt_tokens, include_usage);
        let frames: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
        let body = paced(frames, &rule);
        return resp.content_type("text/event-stream").streaming(body);
    }
    let inputs = view
        .get("input")
        .and_then(|r| crate::providers::wire::InputShape::of(r.get()))
        .map_or(1, |s| s.inputs.clamp(1, mock::MAX_EMBEDDING_INPUTS));
    let (bytes, _) = mock::response_body(endpoint, &model, &reply, prompt_tokens, 8, inputs);
    if rule.omit_usage {
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("usage");
        }
        return resp.json(v);
    }
    resp.content_type("application/json").body(bytes)
}

/// A stream that never finishes: content frames forever, or one frame that never ends.
fn endless(
    endpoint: Endpoint,
    model: &str,
    rule: &Rule,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let frame = Bytes::from(
        mock::stream_frames(endpoint, model, "tick", 1, false)
            .into_iter()
            .next()
            .unwrap_or_default(),
    );
    let delay = Duration::from_millis(rule.frame_delay_ms.unwrap_or(10));
    // (frames sent, bytes of the unending frame left)
    let state = (0u64, rule.endless_frame_bytes);
    futures_util::stream::unfold(state, move |(n, left)| {
        let frame = frame.clone();
        async move {
            if n == 0 {
                return Some((Ok(frame), (1, left)));
            }
            match left {
                Some(0) => {
                    // Sent the whole unending frame: hold the connection open, silent.
                    actix_web::rt::time::sleep(Duration::from_secs(3600)).await;
                    None
                }
                Some(k) => {
                    let part = k.min(64 * 1024);
                    let mut chunk = Vec::with_capacity(part + 8);
                    if n == 1 {
                        chunk.extend_from_slice(b"data: ");
                    }
                    chunk.resize(part, b'x');
                    Some((Ok(Bytes::from(chunk)), (n + 1, Some(k - part))))
                }
                None => {
                    actix_web::rt::time::sleep(delay).await;
                    Some((Ok(frame), (n + 1, None)))
                }
            }
        }
    })
}

async fn set_rule(rule: web::Json<Rule>, state: web::Data<MockState>) -> HttpResponse {
    let rule = rule.into_inner();
    let Some(model) = rule.model.clone() else {
        return HttpResponse::BadRequest().json(error_body(400, "`model` is required"));
    };
    let mut models = lock(&state);
    let m = models.entry(model).or_default();
    m.rule = rule;
    m.calls_since_rule = 0;
    HttpResponse::Ok().json(json!({"ok": true}))
}

async fn reset(state: web::Data<MockState>) -> HttpResponse {
    lock(&state).clear();
    HttpResponse::Ok().json(json!({"ok": true}))
}

async fn calls(state: web::Data<MockState>) -> HttpResponse {
    let counts: HashMap<String, u64> = lock(&state)
        .iter()
        .map(|(k, v)| (k.clone(), v.calls))
        .collect();
    HttpResponse::Ok().json(counts)
}

async fn models(_: HttpRequest) -> HttpResponse {
    HttpResponse::Ok().json(json!({"object": "list", "data": []}))
}

/// Serves until stopped. `on_bound` receives the bound port (tests pass port 0).
pub async fn serve(
    host: &str,
    port: u16,
    workers: usize,
    on_bound: impl FnOnce(u16),
) -> std::io::Result<()> {
    let state = web::Data::new(MockState::default());
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
            .route("/__mock/rules", web::post().to(set_rule))
            .route("/__mock/rules", web::delete().to(reset))
            .route("/__mock/calls", web::get().to(calls))
            .route("/v1/messages", web::post().to(anthropic::messages))
            .route(
                "/openai/deployments/{deployment}/chat/completions",
                web::post().to(|r, p, b, s| azure(Endpoint::ChatCompletions, r, p, b, s)),
            )
            .route(
                "/openai/deployments/{deployment}/completions",
                web::post().to(|r, p, b, s| azure(Endpoint::Completions, r, p, b, s)),
            )
            .route(
                "/openai/deployments/{deployment}/embeddings",
                web::post().to(|r, p, b, s| azure(Endpoint::Embeddings, r, p, b, s)),
            );
        for prefix in ["", "/v1"] {
            app = app
                .route(
                    &format!("{prefix}/chat/completions"),
                    web::post().to(|b: Bytes, s: web::Data<MockState>| {
                        answer(Endpoint::ChatCompletions, b, s)
                    }),
                )
                .route(
                    &format!("{prefix}/completions"),
                    web::post().to(|b: Bytes, s: web::Data<MockState>| {
                        answer(Endpoint::Completions, b, s)
                    }),
                )
                .route(
                    &format!("{prefix}/embeddings"),
                    web::post()
                        .to(|b: Bytes, s: web::Data<MockState>| answer(Endpoint::Embeddings, b, s)),
                )
                .route(&format!("{prefix}/models"), web::get().to(models));
        }
        app
    })
    .workers(workers.max(1))
    .tcp_nodelay(true)
    .backlog(4096)
    .bind((host, port))?;
    let bound = server.addrs().first().map(|a| a.port()).unwrap_or(port);
    on_bound(bound);
    server.run().await
}
