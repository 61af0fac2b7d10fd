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
use super::wire::SseFrames;
use super::{Endpoint, ProviderKind};
use crate::error::{ApiError, ErrorKind};
use actix_web::http::header::HeaderMap;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value as Json};

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
pub fn native_body(body: &[u8], model: &str) -> Result<Vec<u8>, ApiError> {
    let mut req: Map<String, Json> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a JSON object: {e}")))?;
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
    if let Some(Json::String(user)) = req.get("user") {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if stream {
        out.insert("stream".into(), Json::Bool(true));
    }
    Ok(Json::Object(out))
}

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
fn finish_reason(stop: Option<&str>) -> Json {
    match stop {
        None => Json::Null,
        Some("max_tokens") => "length".into(),
        Some("tool_use") => "tool_calls".into(),
        Some("refusal") => "content_filter".into(),
        Some(_) => "stop".into(),
    }
}

/// OpenAI usage for Anthropic usage: every input token is a prompt token (cache reads and writes too).
fn usage_of(u: &Json) -> Json {
    let n = |k: &str| u.get(k).and_then(Json::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    // Saturating: an upstream's numbers never wrap (they are bounded later, `Usage::normalized`).
    let prompt = n("input_tokens")
        .saturating_add(n("cache_creation_input_tokens"))
        .saturating_add(cached);
    let completion = n("output_tokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
        "prompt_tokens_details": {"cached_tokens": cached},
    })
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

/// Anthropic's stream events in, OpenAI chunks out.
pub struct StreamTranslator {
    frames: SseFrames,
    started: bool,
    /// Characters of text and tool arguments generated, for a count when the stream is cut before its usage.
    generated: u64,
    id: String,
    model: String,
    created: u64,
    usage: Map<String, Json>,
    /// Content block index -> (tool call index, arguments sent), for `input_json_delta`s.
    tools: Vec<(u64, usize, bool)>,
    finish: Option<String>,
    done: bool,
}

impl StreamTranslator {
    pub fn new(model: &str) -> Self {
        StreamTranslator {
            frames: SseFrames::default(),
            started: false,
            generated: 0,
            id: String::new(),
            model: model.to_owned(),
            created: unix_now(),
            usage: Map::new(),
            tools: Vec::new(),
            finish: None,
            done: false,
        }
    }

    fn chunk(&self, out: &mut BytesMut, delta: Json, finish: Option<&str>) {
        let c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        frame(out, &c);
    }

    fn end(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        let usage = usage_of(&Json::Object(self.usage.clone()));
        let c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        });
        frame(out, &c);
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    /// A stream that ends before `message_stop` (cut, or an `error` event): the usage chunk with what is
    /// known, the input from `message_start` and at least the output generated so far (about four
    /// characters a token), so the request is charged for it.
    fn partial_usage(&mut self, out: &mut BytesMut) {
        if self.done || !self.started {
            return;
        }
        self.done = true;
        let seen = self
            .usage
            .get("output_tokens")
            .and_then(Json::as_u64)
            .unwrap_or(0);
        self.usage.insert(
            "output_tokens".into(),
            seen.max(self.generated.div_ceil(4)).into(),
        );
        let c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_of(&Json::Object(self.usage.clone())),
        });
        frame(out, &c);
    }

    fn event(&mut self, ev: &Json, out: &mut BytesMut) {
        let merge_usage = |usage: &mut Map<String, Json>, u: Option<&Json>| {
            if let Some(Json::Object(u)) = u {
                for k in USAGE_FIELDS {
                    if let Some(v) = u.get(k).filter(|v| v.is_u64()) {
                        usage.insert(k.into(), v.clone());
                    }
                }
            }
        };
        match ev.get("type").and_then(Json::as_str) {
            Some("message_start") => {
                let m = ev.get("message").unwrap_or(&Json::Null);
                if let Some(id) = m.get("id").and_then(Json::as_str) {
                    self.id = id.to_owned();
                }
                if let Some(model) = m.get("model").and_then(Json::as_str) {
                    self.model = model.to_owned();
                }
                merge_usage(&mut self.usage, m.get("usage"));
                self.started = true;
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            Some("content_block_start") => {
                let b = ev.get("content_block").unwrap_or(&Json::Null);
                if b.get("type").and_then(Json::as_str) == Some("tool_use") {
                    let index = ev.get("index").and_then(Json::as_u64).unwrap_or(0);
                    let n = self.tools.len();
                    if n >= MAX_TOOL_CALLS {
                        return;
                    }
                    self.tools.push((index, n, false));
                    self.chunk(
                        out,
                        json!({"tool_calls": [{
                            "index": n,
                            "id": b.get("id").cloned().unwrap_or(Json::Null),
                            "type": "function",
                            "function": {"name": b.get("name").cloned().unwrap_or(Json::Null), "arguments": ""},
                        }]}),
                        None,
                    );
                }
            }
            Some("content_block_delta") => {
                let d = ev.get("delta").unwrap_or(&Json::Null);
                match d.get("type").and_then(Json::as_str) {
                    Some("text_delta") => {
                        let text = d.get("text").and_then(Json::as_str).unwrap_or("");
                        self.generated += text.chars().count() as u64;
                        self.chunk(out, json!({"content": text}), None);
                    }
                    Some("input_json_delta") => {
                        let index = ev.get("index").and_then(Json::as_u64).unwrap_or(0);
                        if let Some(t) = self.tools.iter_mut().find(|t| t.0 == index) {
                            let part = d.get("partial_json").and_then(Json::as_str).unwrap_or("");
                            if part.is_empty() {
                                return;
                            }
                            t.2 = true;
                            let n = t.1;
                            self.generated += part.chars().count() as u64;
                            self.chunk(
                                out,
                                json!({"tool_calls": [{"index": n, "function": {"arguments": part}}]}),
                                None,
                            );
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_stop") => {
                // A tool called with no arguments: `{}`, as a complete answer has it (never `""`).
                let index = ev.get("index").and_then(Json::as_u64).unwrap_or(0);
                if let Some(t) = self.tools.iter_mut().find(|t| t.0 == index && !t.2) {
                    t.2 = true;
                    let n = t.1;
                    self.chunk(
                        out,
                        json!({"tool_calls": [{"index": n, "function": {"arguments": "{}"}}]}),
                        None,
                    );
                }
            }
            Some("message_delta") => {
                merge_usage(&mut self.usage, ev.get("usage"));
                let stop = ev
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Json::as_str);
                if let Json::String(f) = finish_reason(stop) {
                    self.finish = Some(f);
                }
            }
            Some("message_stop") => {
                let finish = self.finish.clone();
                self.chunk(out, json!({}), Some(finish.as_deref().unwrap_or("stop")));
                self.end(out);
            }
            Some("error") => {
                // What was generated so far is charged: the usage comes before the error.
                self.partial_usage(out);
                let e = ev.get("error").unwrap_or(&Json::Null);
                let body = json!({"error": {
                    "message": e.get("message").cloned().unwrap_or(Json::Null),
                    "type": e.get("type").cloned().unwrap_or(Json::Null),
                }});
                frame(out, &body);
            }
            // `ping` and events added later carry nothing for the client.
            _ => {}
        }
    }
}

fn frame(out: &mut BytesMut, v: &Json) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&serde_json::to_vec(v).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
}

/// Longest event the translator holds while it waits for its end.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;
/// Tool calls of one answer the translator follows (more are not passed on).
const MAX_TOOL_CALLS: usize = 128;
/// The usage fields read from the stream.
const USAGE_FIELDS: [&str; 4] = [
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
];

impl Translate for StreamTranslator {
    fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, String> {
        self.frames.push(chunk);
        let mut out = BytesMut::new();
        while let Some(data) = self.frames.next_data() {
            match serde_json::from_str::<Json>(&data) {
                Ok(ev) => self.event(&ev, &mut out),
                Err(_) => return Err("the upstream stream sent an event that is not JSON".into()),
            }
        }
        if self.frames.pending() > MAX_EVENT_BYTES {
            return Err("the upstream stream sent an event larger than 4 MiB".into());
        }
        Ok(out.freeze())
    }

    fn finish(&mut self) -> Bytes {
        // A stream that ended without `message_stop` was cut: the usage chunk of what it generated (which
        // the request is charged), then an error event (no `[DONE]`), so the client and the metrics see
        // it failed.
        let mut out = BytesMut::new();
        if !self.done && self.started {
            self.partial_usage(&mut out);
            frame(
                &mut out,
                &json!({"error": {"message": "the upstream stream ended before `message_stop`", "type": "api_error"}}),
            );
        }
        out.freeze()
    }

    fn interrupted(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        self.partial_usage(&mut out);
        out.freeze()
    }
}

#[cfg(test)]
mod tests;
