//! The mock's Anthropic dialect: `POST /v1/messages` as the Messages API answers it. Requires `x-api-key`
//! (401 `authentication_error`) and `anthropic-version` and `max_tokens` (400 `invalid_request_error`);
//! answers a message with usage, or the stream's events (`message_start`, `content_block_*`, `ping`,
//! `message_delta` with usage, `message_stop`). A request with `tools` and a `tool_choice` of `any` or
//! `tool` is answered with a `tool_use` block. Rules (per model) apply as in the OpenAI dialect: status
//! (Anthropic's error body; 529 is `overloaded_error`), `retry_after`, latency, remaining headers
//! (`anthropic-ratelimit-*-remaining`), frame delay, a cut stream.

use super::rules::{paced, take, MockState, Rule};
use crate::providers::mock::default_reply;
use crate::providers::wire::estimate_tokens;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::{json, Value as Json};
use std::time::Duration;

fn error(status: u16, kind: &str, message: &str) -> HttpResponse {
    let code = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(code)
        .json(json!({"type": "error", "error": {"type": kind, "message": message}}))
}

fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Input tokens, estimated from the text of `system` and the messages.
fn input_tokens(body: &Json) -> u64 {
    let mut text = String::new();
    let mut add = |v: &Json| match v {
        Json::String(s) => text.push_str(s),
        Json::Array(blocks) => {
            for b in blocks {
                if let Some(t) = b.get("text").and_then(Json::as_str) {
                    text.push_str(t);
                }
                if let Some(Json::String(t)) = b.get("content") {
                    text.push_str(t);
                }
            }
        }
        _ => {}
    };
    add(body.get("system").unwrap_or(&Json::Null));
    for m in body
        .get("messages")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        add(m.get("content").unwrap_or(&Json::Null));
    }
    estimate_tokens(&text).max(1)
}

/// The tool the request makes the model call, if it does.
fn forced_tool(body: &Json) -> Option<String> {
    let tools = body.get("tools")?.as_array()?;
    let choice = body.get("tool_choice")?;
    match choice.get("type").and_then(Json::as_str)? {
        "tool" => choice.get("name").and_then(Json::as_str).map(str::to_owned),
        "any" => tools
            .first()?
            .get("name")
            .and_then(Json::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

fn frame(event: &str, data: Json) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// The request fields the Messages API takes (and the mock's `mock` rule).
const KNOWN_FIELDS: [&str; 18] = [
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "mock",
];

/// Cache-read tokens an answer reports when the request marked a `cache_control` breakpoint.
pub const CACHE_READ_TOKENS: u64 = 7;
/// The reasoning of a thinking block (when the request enabled `thinking`).
const THINKING: &str = "The mock considers the question.";

pub async fn messages(req: HttpRequest, body: Bytes, state: web::Data<MockState>) -> HttpResponse {
    if req.headers().get("x-api-key").is_none() {
        return error(401, "authentication_error", "x-api-key header is required");
    }
    if req.headers().get("anthropic-version").is_none() {
        return error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    let Ok(body) = serde_json::from_slice::<Json>(&body) else {
        return error(400, "invalid_request_error", "the body is not valid JSON");
    };
    let Some(model) = body.get("model").and_then(Json::as_str).map(str::to_owned) else {
        return error(400, "invalid_request_error", "model: Field required");
    };
    // The API refuses fields it does not know (the mock's own `mock` rule aside).
    if let Some(extra) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())))
    {
        return error(
            400,
            "invalid_request_error",
            &format!("{extra}: Extra inputs are not permitted"),
        );
    }
    if body.get("max_tokens").and_then(Json::as_u64).is_none() {
        return error(400, "invalid_request_error", "max_tokens: Field required");
    }
    if !body.get("messages").is_some_and(Json::is_array) {
        return error(400, "invalid_request_error", "messages: Field required");
    }
    // A per-request rule arrives only on a request passed through as the client wrote it.
    let per_request = body
        .get("mock")
        .and_then(|m| serde_json::from_value(m.clone()).ok());
    let (rule, call, since): (Rule, u64, u64) = take(&state, &model, per_request);
    if let Some(ms) = rule.latency_ms {
        actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut resp = HttpResponse::Ok();
    if let Some(v) = rule.remaining_requests {
        resp.insert_header(("anthropic-ratelimit-requests-remaining", v.to_string()));
    }
    if let Some(v) = rule.remaining_tokens {
        resp.insert_header(("anthropic-ratelimit-tokens-remaining", v.to_string()));
    }
    if let Some(status) = rule.status_for(call, since) {
        let msg = rule
            .message
            .clone()
            .unwrap_or_else(|| format!("mock upstream answered {status}"));
        let mut r = error(status, error_type(status), &msg);
        if let Some(s) = rule.retry_after {
            r.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_str(&s.to_string())
                    .unwrap_or(actix_web::http::header::HeaderValue::from_static("1")),
            );
        }
        return r;
    }
    let reply = rule.reply.clone().unwrap_or_else(|| default_reply(&model));
    let input = input_tokens(&body);
    let output = estimate_tokens(&reply).max(1);
    let id = format!("msg_mock_{call}");
    let tool = forced_tool(&body);
    let stop = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    // Only a request sent as the client wrote it (not translated from a chat completion) can carry
    // `cache_control` and `thinking`: the answer shows they arrived (cache reads, a thinking block).
    let cache_read = if body.to_string().contains("\"cache_control\"") {
        CACHE_READ_TOKENS
    } else {
        0
    };
    let thinking = body.get("thinking").is_some_and(Json::is_object);
    let usage = json!({"input_tokens": input, "output_tokens": output,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": cache_read});
    let stream = body.get("stream").and_then(Json::as_bool).unwrap_or(false);
    if let (true, Some(kind)) = (stream, rule.stream_error_for(call, since)) {
        let frames = vec![frame(
            "error",
            json!({"type": "error", "error": {"type": kind, "message": format!("mock upstream stream {kind}")}}),
        )];
        return resp
            .content_type("text/event-stream")
            .streaming(paced(frames, &rule));
    }
    if !stream {
        let mut content = match &tool {
            Some(name) => {
                json!([{"type": "tool_use", "id": "toolu_mock", "name": name, "input": {"query": reply}}])
            }
            None => json!([{"type": "text", "text": reply}]),
        };
        if thinking {
            if let Some(blocks) = content.as_array_mut() {
                blocks.insert(
                    0,
                    json!({"type": "thinking", "thinking": THINKING, "signature": "sig_mock"}),
                );
            }
        }
        let mut msg = json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null, "usage": usage,
        });
        // The mock shows which beta features the request asked for (the real API would apply them).
        if let Some(beta) = req
            .headers()
            .get("anthropic-beta")
            .and_then(|v| v.to_str().ok())
        {
            msg["mock_anthropic_beta"] = json!(beta);
        }
        return resp.json(msg);
    }
    let mut frames = vec![
        frame(
            "message_start",
            json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
                "model": model, "content": [], "stop_reason": null,
                "usage": {"input_tokens": input, "output_tokens": 1, "cache_read_input_tokens": cache_read}}}),
        ),
        frame("ping", json!({"type": "ping"})),
    ];
    for _ in 0..rule.pings.unwrap_or(0) {
        frames.push(frame("ping", json!({"type": "ping"})));
    }
    // Content blocks after a thinking block are numbered after it.
    let first = usize::from(thinking);
    if thinking {
        frames.push(frame(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": ""}}),
        ));
        frames.push(frame(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": THINKING}}),
        ));
        frames.push(frame(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "signature_delta", "signature": "sig_mock"}}),
        ));
        frames.push(frame(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
    }
    match &tool {
        Some(name) => {
            frames.push(frame("content_block_start", json!({"type": "content_block_start", "index": first,
                "content_block": {"type": "tool_use", "id": "toolu_mock", "name": name, "input": {}}})));
            let args = json!({"query": reply}).to_string();
            let (a, b) = args.split_at(args.len() / 2);
            for part in [a, b] {
                frames.push(frame(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": first,
                    "delta": {"type": "input_json_delta", "partial_json": part}}),
                ));
            }
        }
        None => {
            frames.push(frame(
                "content_block_start",
                json!({"type": "content_block_start", "index": first,
                "content_block": {"type": "text", "text": ""}}),
            ));
            for word in reply.split_inclusive(' ') {
                frames.push(frame(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": first,
                    "delta": {"type": "text_delta", "text": word}}),
                ));
            }
        }
    }
    frames.push(frame(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": first}),
    ));
    frames.push(frame(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": output}}),
    ));
    frames.push(frame("message_stop", json!({"type": "message_stop"})));
    let body = paced(frames, &rule);
    resp.content_type("text/event-stream").streaming(body)
}
