//! Anthropic (`anthropic/claude-...`): OpenAI chat completions translated to the Messages API and back.
//!
//! Request: system and developer messages become `system`; `tool` messages become `tool_result` blocks
//! of a user turn; assistant `tool_calls` become `tool_use` blocks; consecutive turns of one role are
//! merged (the API wants them alternating); images (`image_url`, a data URL or a link) become `image`
//! blocks; `max_tokens` defaults to [`DEFAULT_MAX_TOKENS`]; `stop` becomes `stop_sequences`; tools and
//! `tool_choice` are translated; `user` becomes `metadata.user_id`. Fields the API has no equivalent of
//! are left out.
//!
//! Answer: text blocks become `message.content`, `tool_use` blocks `tool_calls`, `stop_reason` becomes
//! `finish_reason`, and usage becomes `prompt_tokens` (input plus cache reads and writes, as every one of
//! them is billed) and `completion_tokens`. A stream is translated event by event ([`StreamTranslator`])
//! into OpenAI chunks ending with the usage chunk and `[DONE]`.
//!
//! Errors keep Anthropic's message; 529 `overloaded_error` is a retryable service-unavailable error, and a
//! 400 whose message says the prompt is too long is a context-window error.

use super::adapter::{remaining_in, Provider, Translate, UpstreamCall};
use super::mock::unix_now;
use super::target::{Target, TargetParams};
use super::{Endpoint, ProviderKind};
use crate::error::{ApiError, ErrorKind};
use actix_web::http::header::HeaderMap;
use bytes::Bytes;
use serde_json::{json, Map, Value as Json};

/// Anthropic's server tools (run and billed by Anthropic per use, beyond tokens): their type prefixes.
const SERVER_TOOLS: [&str; 3] = ["web_search", "web_fetch", "code_execution"];
/// The gateway's own request fields, never sent upstream.
const GATEWAY_FIELDS: [&str; 7] = [
    "fallbacks",
    "context_window_fallbacks",
    "num_retries",
    "mock_response",
    "mock_testing_fallbacks",
    "caching",
    "tags",
];

/// `max_tokens` when the request sets none (the Messages API requires it).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// The API version sent when `api_version` is not set.
pub const DEFAULT_VERSION: &str = "2023-06-01";

pub struct Anthropic;

/// `{api_base}/v1/messages` (an `api_base` that already ends in `/v1` or `/v1/messages` is kept), with
/// `x-api-key` and `anthropic-version`. Only chat completions exist.
pub fn target(p: &TargetParams<'_>) -> Result<Target, String> {
    let base = p.api_base.trim_end_matches('/');
    let url = if base.ends_with("/v1/messages") {
        base.to_owned()
    } else if base.ends_with("/v1") {
        format!("{base}/messages")
    } else {
        format!("{base}/v1/messages")
    };
    let key = p
        .api_key
        .ok_or("api_key` is required for anthropic deployments")?;
    Target::none()
        .with_url(Endpoint::ChatCompletions, &url, "api_base")?
        .with_header("x-api-key", key.expose(), true, "api_key")?
        .with_header(
            "anthropic-version",
            p.api_version.unwrap_or(DEFAULT_VERSION),
            false,
            "api_version",
        )
}

impl Provider for Anthropic {
    fn body(&self, call: &UpstreamCall<'_>) -> Result<Vec<u8>, ApiError> {
        let mut req = call.view.to_object();
        let out = request(&mut req, call.model, call.stream)?;
        Ok(serde_json::to_vec(&out).unwrap_or_default())
    }

    fn remaining(&self, headers: &HeaderMap) -> (Option<f64>, Option<f64>) {
        remaining_in(
            headers,
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-tokens-remaining",
        )
    }

    fn error(&self, call: &UpstreamCall<'_>, status: u16, body: &[u8]) -> ApiError {
        error(call.provider, status, body)
    }

    fn native_body(&self, call: &UpstreamCall<'_>) -> Option<Result<Vec<u8>, ApiError>> {
        let m = call
            .messages
            .filter(|_| call.endpoint == Endpoint::ChatCompletions)?;
        Some(native_body(m.body, call.model))
    }

    fn stream_error(&self, call: &UpstreamCall<'_>, data: &[u8]) -> ApiError {
        let kind = serde_json::from_slice::<Json>(data)
            .ok()
            .and_then(|v| v.get("error")?.get("type")?.as_str().map(str::to_owned));
        let status = match kind.as_deref() {
            Some("overloaded_error") => 529,
            Some("rate_limit_error") => 429,
            Some("invalid_request_error") => 400,
            Some("authentication_error") => 401,
            Some("permission_error") => 403,
            Some("not_found_error") => 404,
            Some("request_too_large") => 413,
            _ => 500,
        };
        error(call.provider, status, data)
    }

    fn response(&self, call: &UpstreamCall<'_>, body: Bytes) -> Result<Bytes, ApiError> {
        let msg: Json = serde_json::from_slice(&body).map_err(|e| {
            ApiError::upstream_failure(
                call.provider,
                ErrorKind::BadGatewayError,
                format!("upstream `{}` answered malformed JSON: {e}", call.model),
            )
        })?;
        Ok(Bytes::from(
            serde_json::to_vec(&response(&msg, call.model)).unwrap_or_default(),
        ))
    }

    fn translator(&self, call: &UpstreamCall<'_>) -> Option<Box<dyn Translate>> {
        Some(Box::new(StreamTranslator::new(call.model)))
    }
}

/// A Messages API request as the client sent it, for the deployment: only `model` is replaced (by the
/// deployment's). Everything else, `cache_control`, `thinking` and fields added later included, goes as it came.
///
/// Refused (400): what is billed outside tokens, which the gateway could not charge to the key (server tools
/// such as web search and code execution, MCP servers, containers). The gateway's own request fields
/// (`fallbacks`, `num_retries`, `mock_response`, ...) are dropped, as the API would refuse them.
pub fn native_body(body: &[u8], model: &str) -> Result<Vec<u8>, ApiError> {
    let mut req: Map<String, Json> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a JSON object: {e}")))?;
    for field in ["mcp_servers", "container"] {
        if req.contains_key(field) {
            return Err(bad(
                field,
                format!("`{field}` is not passed on by the gateway (billed outside tokens)"),
            ));
        }
    }
    for (i, tool) in req
        .get("tools")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let kind = tool.get("type").and_then(Json::as_str).unwrap_or("custom");
        if SERVER_TOOLS.iter().any(|p| kind.starts_with(p)) {
            return Err(bad(
                &format!("tools[{i}].type"),
                format!(
                    "server tool `{}` is not passed on by the gateway (billed outside tokens)",
                    kind.chars().take(64).collect::<String>()
                ),
            ));
        }
    }
    for field in GATEWAY_FIELDS {
        req.remove(field);
    }
    req.insert("model".into(), Json::String(model.to_owned()));
    Ok(serde_json::to_vec(&req).unwrap_or_default())
}

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message).with_param(param)
}

/// Text of an OpenAI content value (a string, or the text parts of an array).
fn text_of(content: &Json) -> String {
    match content {
        Json::String(s) => s.clone(),
        Json::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Json::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// An OpenAI content part as an Anthropic content block.
fn block_of(part: &Json, at: &str) -> Result<Option<Json>, ApiError> {
    match part.get("type").and_then(Json::as_str) {
        Some("text") => Ok(Some(
            json!({"type": "text", "text": part.get("text").and_then(Json::as_str).unwrap_or("")}),
        )),
        Some("image_url") => {
            let url = part
                .get("image_url")
                .and_then(|u| u.get("url").or(Some(u)))
                .and_then(Json::as_str)
                .ok_or_else(|| bad(at, "`image_url.url` must be a string"))?;
            if let Some(rest) = url.strip_prefix("data:") {
                let (media_type, data) = rest.split_once(";base64,").ok_or_else(|| {
                    bad(at, "an image data URL must be `data:<type>;base64,<data>`")
                })?;
                Ok(Some(json!({"type": "image", "source": {
                    "type": "base64", "media_type": media_type, "data": data}})))
            } else {
                Ok(Some(
                    json!({"type": "image", "source": {"type": "url", "url": url}}),
                ))
            }
        }
        _ => Ok(None),
    }
}

/// OpenAI content as Anthropic blocks.
fn blocks_of(content: &Json, at: &str) -> Result<Vec<Json>, ApiError> {
    match content {
        Json::String(s) if s.is_empty() => Ok(Vec::new()),
        Json::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Json::Array(parts) => {
            let mut out = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                out.extend(block_of(p, &format!("{at}[{i}]"))?);
            }
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

/// Appends a turn, merging it into the previous one when the role is the same.
fn push_turn(turns: &mut Vec<(String, Vec<Json>)>, role: &str, blocks: Vec<Json>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((r, b)) if r == role => b.extend(blocks),
        _ => turns.push((role.to_owned(), blocks)),
    }
}

/// The Messages API body for an OpenAI chat request (`req`, already validated by the gateway).
pub fn request(req: &mut Map<String, Json>, model: &str, stream: bool) -> Result<Json, ApiError> {
    // What the Messages API cannot do is refused, not silently dropped.
    if req.get("n").and_then(Json::as_u64).is_some_and(|n| n > 1) {
        return Err(bad(
            "n",
            "Anthropic deployments answer one choice: `n` must be 1",
        ));
    }
    if let Some(kind) = req
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Json::as_str)
        .filter(|k| *k != "text")
    {
        return Err(bad(
            "response_format",
            format!("Anthropic deployments do not take `response_format` `{kind}`: ask for JSON in the prompt, or use a tool"),
        ));
    }
    let messages = match req.remove("messages") {
        Some(Json::Array(m)) => m,
        _ => return Err(bad("messages", "`messages` must be a non-empty array")),
    };
    let mut system: Vec<Json> = Vec::new();
    let mut turns: Vec<(String, Vec<Json>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = m.get("role").and_then(Json::as_str).unwrap_or("");
        let content = m.get("content").unwrap_or(&Json::Null);
        match role {
            "system" | "developer" => {
                let text = text_of(content);
                if !text.is_empty() {
                    system.push(json!({"type": "text", "text": text}));
                }
            }
            "user" => push_turn(&mut turns, "user", blocks_of(content, &at)?),
            "assistant" => {
                let mut blocks = blocks_of(content, &at)?;
                for (j, call) in m
                    .get("tool_calls")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let f = call.get("function").unwrap_or(&Json::Null);
                    let args = f.get("arguments").and_then(Json::as_str).unwrap_or("{}");
                    let input: Json =
                        serde_json::from_str(if args.trim().is_empty() { "{}" } else { args })
                            .map_err(|_| {
                                bad(
                                    &format!("{at}.tool_calls[{j}].function.arguments"),
                                    "tool call arguments must be a JSON object",
                                )
                            })?;
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").cloned().unwrap_or(Json::Null),
                        "name": f.get("name").cloned().unwrap_or(Json::Null),
                        "input": input,
                    }));
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            "tool" | "function" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Json::as_str)
                    .ok_or_else(|| bad(&at, "a `tool` message needs `tool_call_id`"))?;
                push_turn(
                    &mut turns,
                    "user",
                    vec![
                        json!({"type": "tool_result", "tool_use_id": id, "content": text_of(content)}),
                    ],
                );
            }
            _ => {}
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), Json::String(model.to_owned()));
    out.insert(
        "messages".into(),
        Json::Array(
            turns
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert("system".into(), Json::Array(system));
    }
    let max_tokens = req
        .get("max_tokens")
        .or_else(|| req.get("max_completion_tokens"))
        .and_then(Json::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), max_tokens.into());
    match req.get("stop") {
        Some(Json::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Json::Array(a)) if !a.is_empty() => {
            out.insert("stop_sequences".into(), Json::Array(a.clone()));
        }
        _ => {}
    }
    for k in ["temperature", "top_p", "top_k"] {
        if let Some(v) = req.get(k).filter(|v| v.is_number()) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(Json::Array(tools)) = req.get("tools") {
        let tools: Vec<Json> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                json!({
                    "name": f.get("name").cloned().unwrap_or(Json::Null),
                    "description": f.get("description").cloned().unwrap_or(Json::String(String::new())),
                    "input_schema": f.get("parameters").cloned().unwrap_or(json!({"type": "object"})),
                })
            })
            .collect();
        if !tools.is_empty() {
            out.insert("tools".into(), Json::Array(tools));
        }
    }
    match req.get("tool_choice") {
        Some(Json::String(s)) if s == "auto" => {
            out.insert("tool_choice".into(), json!({"type": "auto"}));
        }
        Some(Json::String(s)) if s == "required" => {
            out.insert("tool_choice".into(), json!({"type": "any"}));
        }
        Some(Json::String(s)) if s == "none" => {
            out.insert("tool_choice".into(), json!({"type": "none"}));
        }
        Some(Json::Object(c)) => {
            if let Some(name) = c.get("function").and_then(|f| f.get("name")) {
                out.insert("tool_choice".into(), json!({"type": "tool", "name": name}));
            }
        }
        _ => {}
    }
    // `parallel_tool_calls: false`: at most one tool call per answer.
    if req.get("parallel_tool_calls") == Some(&Json::Bool(false)) {
        if let Some(Json::Object(choice)) = out.get_mut("tool_choice") {
            choice.insert("disable_parallel_tool_use".into(), Json::Bool(true));
        } else if out.contains_key("tools") {
            out.insert(
                "tool_choice".into(),
                json!({"type": "auto", "disable_parallel_tool_use": true}),
            );
        }
    }
    if let Some(Json::String(user)) = req.get("user") {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if stream {
        out.insert("stream".into(), Json::Bool(true));
    }
    Ok(Json::Object(out))
}

/// An OpenAI chat completion for a Messages API answer.
pub fn response(msg: &Json, model: &str) -> Json {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in msg
        .get("content")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        match b.get("type").and_then(Json::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Json::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": b.get("id").cloned().unwrap_or(Json::Null),
                "type": "function",
                "function": {
                    "name": b.get("name").cloned().unwrap_or(Json::Null),
                    "arguments": serde_json::to_string(b.get("input").unwrap_or(&json!({}))).unwrap_or_default(),
                },
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Json::Null } else { Json::String(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Json::Array(calls);
    }
    json!({
        "id": msg.get("id").cloned().unwrap_or(Json::Null),
        "object": "chat.completion",
        "created": unix_now(),
        "model": msg.get("model").and_then(Json::as_str).unwrap_or(model),
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(msg.get("stop_reason").and_then(Json::as_str)),
        }],
        "usage": usage_of(msg.get("usage").unwrap_or(&Json::Null)),
    })
}

/// An Anthropic error answer in the OpenAI shape.
pub fn error(provider: ProviderKind, status: u16, body: &[u8]) -> ApiError {
    let parsed: Option<Json> = serde_json::from_slice(body).ok();
    let inner = parsed.as_ref().and_then(|v| v.get("error"));
    let message = inner
        .and_then(|e| e.get("message"))
        .and_then(Json::as_str)
        .map(|m| m.chars().take(2000).collect::<String>())
        .unwrap_or_else(|| super::openai_error::error_message(body, status));
    let kind_name = inner
        .and_then(|e| e.get("type"))
        .and_then(Json::as_str)
        .unwrap_or("");
    let mut err = ApiError::upstream(provider, status, message);
    if status == 529 || kind_name == "overloaded_error" {
        err.kind = ErrorKind::ServiceUnavailableError;
    } else if let Some(kind) = super::openai_error::refined_kind(status, b"", &err.message) {
        err.kind = kind;
    }
    err
}

mod stream;
pub use stream::StreamTranslator;
use stream::{finish_reason, usage_of};

#[cfg(test)]
mod tests;
