//! The gateway's Anthropic-compatible endpoint (`POST /v1/messages`), as pure translations: a Messages API
//! request into the OpenAI chat request the gateway serves ([`to_openai`]), and the OpenAI answer, stream
//! and errors back into the Messages API's ([`from_openai`], [`EventWriter`], [`error_body`]). Whatever
//! the deployment's provider, the request then goes through the same accounting, limits, budgets, metrics
//! and fallbacks as a chat completion.

use super::adapter::Translate;
use super::wire::SseFrames;
use crate::error::{ApiError, ErrorKind};
use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value as Json};

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message).with_param(param)
}

/// Text of Anthropic content (a string, or its text blocks).
fn text_of(content: &Json) -> String {
    match content {
        Json::String(s) => s.clone(),
        Json::Array(blocks) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Json::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Json::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The OpenAI chat request for a Messages API request (`stream` requests ask for the usage chunk, which the
/// answer's `message_delta` needs).
pub fn to_openai(body: &Json) -> Result<Json, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let model = obj
        .get("model")
        .and_then(Json::as_str)
        .ok_or_else(|| bad("model", "`model` is required"))?;
    let max_tokens = obj
        .get("max_tokens")
        .and_then(Json::as_u64)
        .ok_or_else(|| bad("max_tokens", "`max_tokens` is required: a positive integer"))?;
    let msgs = obj
        .get("messages")
        .and_then(Json::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("messages", "`messages` must be a non-empty array"))?;
    let mut out_msgs: Vec<Json> = Vec::new();
    let system = obj.get("system").map(text_of).unwrap_or_default();
    if !system.is_empty() {
        out_msgs.push(json!({"role": "system", "content": system}));
    }
    for (i, m) in msgs.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = m.get("role").and_then(Json::as_str).unwrap_or("");
        let content = m.get("content").unwrap_or(&Json::Null);
        let blocks: Vec<Json> = match content {
            Json::String(s) => vec![json!({"type": "text", "text": s})],
            Json::Array(b) => b.clone(),
            _ => {
                return Err(bad(
                    &format!("{at}.content"),
                    "`content` must be a string or an array of blocks",
                ))
            }
        };
        match role {
            "user" => {
                let mut parts = Vec::new();
                for (j, b) in blocks.iter().enumerate() {
                    match b.get("type").and_then(Json::as_str) {
                        Some("text") => parts.push(json!({"type": "text", "text": b.get("text").cloned().unwrap_or(Json::String(String::new()))})),
                        Some("image") => {
                            let src = b.get("source").unwrap_or(&Json::Null);
                            let url = match src.get("type").and_then(Json::as_str) {
                                Some("base64") => format!(
                                    "data:{};base64,{}",
                                    src.get("media_type").and_then(Json::as_str).unwrap_or("image/png"),
                                    src.get("data").and_then(Json::as_str).unwrap_or("")
                                ),
                                Some("url") => src.get("url").and_then(Json::as_str).unwrap_or("").to_owned(),
                                _ => return Err(bad(&format!("{at}.content[{j}].source"), "an image source must be `base64` or `url`")),
                            };
                            parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                        }
                        Some("tool_result") => {
                            let text = text_of(b.get("content").unwrap_or(&Json::Null));
                            // A chat completion has no `is_error`: the model reads it in the content.
                            let content = if b.get("is_error") == Some(&Json::Bool(true)) {
                                format!("Error: {text}")
                            } else {
                                text
                            };
                            out_msgs.push(json!({
                                "role": "tool",
                                "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(Json::Null),
                                "content": content,
                            }))
                        }
                        _ => {}
                    }
                }
                if !parts.is_empty() {
                    let all_text = parts.iter().all(|p| p["type"] == "text");
                    let content = if all_text && parts.len() == 1 {
                        parts[0]["text"].clone()
                    } else {
                        Json::Array(parts)
                    };
                    out_msgs.push(json!({"role": "user", "content": content}));
                }
            }
            "assistant" => {
                let text = text_of(&Json::Array(blocks.clone()));
                let calls: Vec<Json> = blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(Json::as_str) == Some("tool_use"))
                    .map(|b| json!({
                        "id": b.get("id").cloned().unwrap_or(Json::Null),
                        "type": "function",
                        "function": {
                            "name": b.get("name").cloned().unwrap_or(Json::Null),
                            "arguments": serde_json::to_string(b.get("input").unwrap_or(&json!({}))).unwrap_or_default(),
                        },
                    }))
                    .collect();
                let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Json::Null } else { Json::String(text) }});
                if !calls.is_empty() {
                    msg["tool_calls"] = Json::Array(calls);
                }
                out_msgs.push(msg);
            }
            _ => {
                return Err(bad(
                    &format!("{at}.role"),
                    "`role` must be `user` or `assistant`",
                ))
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), Json::String(model.to_owned()));
    out.insert("messages".into(), Json::Array(out_msgs));
    out.insert("max_tokens".into(), max_tokens.into());
    if let Some(Json::Array(stop)) = obj.get("stop_sequences") {
        out.insert("stop".into(), Json::Array(stop.clone()));
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = obj.get(k).filter(|v| v.is_number()) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(Json::Array(tools)) = obj.get("tools") {
        let tools: Vec<Json> = tools
            .iter()
            .map(|t| json!({"type": "function", "function": {
                "name": t.get("name").cloned().unwrap_or(Json::Null),
                "description": t.get("description").cloned().unwrap_or(Json::String(String::new())),
                "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
            }}))
            .collect();
        out.insert("tools".into(), Json::Array(tools));
    }
    if let Some(choice) = obj.get("tool_choice") {
        let c = match choice.get("type").and_then(Json::as_str) {
            Some("auto") => Some(json!("auto")),
            Some("any") => Some(json!("required")),
            Some("none") => Some(json!("none")),
            Some("tool") => choice
                .get("name")
                .map(|n| json!({"type": "function", "function": {"name": n}})),
            _ => None,
        };
        if let Some(c) = c {
            out.insert("tool_choice".into(), c);
        }
    }
    if let Some(Json::String(user)) = obj.get("metadata").and_then(|m| m.get("user_id")) {
        out.insert("user".into(), Json::String(user.clone()));
    }
    if obj.get("stream").and_then(Json::as_bool).unwrap_or(false) {
        out.insert("stream".into(), Json::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Json::Object(out))
}

/// Anthropic's `stop_reason` for OpenAI's `finish_reason`.
fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// A Messages API answer for an OpenAI chat completion.
pub fn from_openai(resp: &Json) -> Json {
    let choice = &resp["choices"][0];
    let msg = &choice["message"];
    let mut content = Vec::new();
    if let Some(text) = msg["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in msg["tool_calls"].as_array().into_iter().flatten() {
        let args = call["function"]["arguments"].as_str().unwrap_or("{}");
        let input: Json = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}));
    }
    json!({
        "id": resp["id"],
        "type": "message",
        "role": "assistant",
        "model": resp["model"],
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str()),
        "stop_sequence": null,
        "usage": {
            "input_tokens": resp["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
            "output_tokens": resp["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        },
    })
}

/// An error in the Messages API's shape.
pub fn error_body(err: &ApiError) -> Json {
    let kind = match err.kind {
        ErrorKind::AuthenticationError => "authentication_error",
        ErrorKind::PermissionDeniedError => "permission_error",
        ErrorKind::NotFoundError => "not_found_error",
        ErrorKind::PayloadTooLargeError => "request_too_large",
        ErrorKind::RateLimitError => "rate_limit_error",
        ErrorKind::ServiceUnavailableError => "overloaded_error",
        ErrorKind::Timeout => "api_error",
        _ if err.status.is_client_error() => "invalid_request_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": err.message}})
}

/// An error as a Messages API stream event.
pub fn error_event(err: &ApiError) -> Bytes {
    let mut out = BytesMut::new();
    event(&mut out, "error", error_body(err));
    out.freeze()
}

/// Longest frame the writer holds while it waits for its end.
const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Tool calls of one answer the writer follows.
const MAX_TOOL_CALLS: usize = 128;

/// OpenAI chunks in, Messages API events out.
pub struct EventWriter {
    frames: SseFrames,
    started: bool,
    /// The open content block: its index and whether it is text.
    block: Option<(u64, bool)>,
    /// OpenAI tool call index -> its `tool_use` block index.
    tools: Vec<(u64, u64)>,
    next_index: u64,
    stop: &'static str,
    usage: (u64, u64),
    done: bool,
}

impl Default for EventWriter {
    fn default() -> Self {
        EventWriter {
            frames: SseFrames::default(),
            started: false,
            block: None,
            tools: Vec::new(),
            next_index: 0,
            stop: "end_turn",
            usage: (0, 0),
            done: false,
        }
    }
}

fn event(out: &mut BytesMut, name: &str, data: Json) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&serde_json::to_vec(&data).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
}

impl EventWriter {
    fn start(&mut self, chunk: &Json, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        // Azure's first chunk (prompt filter results) has an empty id and model.
        let id = chunk["id"]
            .as_str()
            .filter(|i| !i.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("msg_{:032x}", rand::random::<u128>()));
        event(
            out,
            "message_start",
            json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": chunk["model"],
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        );
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if let Some((index, _)) = self.block.take() {
            event(
                out,
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open_block(&mut self, text: bool, start: Json, out: &mut BytesMut) -> u64 {
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.block = Some((index, text));
        event(
            out,
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        );
        index
    }

    fn chunk(&mut self, c: &Json, out: &mut BytesMut) {
        if c.get("error").is_some() {
            event(
                out,
                "error",
                json!({"type": "error", "error": {
                "type": "api_error", "message": c["error"]["message"]}}),
            );
            return;
        }
        self.start(c, out);
        if let Some(u) = c.get("usage").filter(|u| u.is_object()) {
            self.usage = (
                u["prompt_tokens"].as_u64().unwrap_or(0),
                u["completion_tokens"].as_u64().unwrap_or(0),
            );
        }
        let Some(choice) = c["choices"].as_array().and_then(|a| a.first()) else {
            return;
        };
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            let index = match self.block {
                Some((i, true)) => i,
                _ => self.open_block(true, json!({"type": "text", "text": ""}), out),
            };
            event(
                out,
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": text}}),
            );
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            // Calls are told apart by `index` (some servers repeat `id` on every fragment).
            let n = call["index"].as_u64().unwrap_or(0);
            let block = match self.tools.iter().find(|t| t.0 == n) {
                Some(&(_, b)) => b,
                None if self.tools.len() < MAX_TOOL_CALLS => {
                    let b = self.open_block(false, json!({"type": "tool_use",
                        "id": call["id"].as_str().map(str::to_owned)
                            .unwrap_or_else(|| format!("toolu_{:024x}", rand::random::<u128>() >> 32)),
                        "name": call["function"]["name"], "input": {}}), out);
                    self.tools.push((n, b));
                    b
                }
                None => continue,
            };
            if let Some(args) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                event(
                    out,
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": block,
                    "delta": {"type": "input_json_delta", "partial_json": args}}),
                );
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.stop = stop_reason(Some(f));
        }
    }

    fn end(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        self.start(&Json::Null, out);
        self.close_block(out);
        event(
            out,
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop, "stop_sequence": null},
            "usage": {"input_tokens": self.usage.0, "output_tokens": self.usage.1}}),
        );
        event(out, "message_stop", json!({"type": "message_stop"}));
    }
}

impl Translate for EventWriter {
    fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, String> {
        self.frames.push(chunk);
        let mut out = BytesMut::new();
        while let Some(data) = self.frames.next_data() {
            if data == "[DONE]" {
                self.end(&mut out);
            } else if let Ok(c) = serde_json::from_str::<Json>(&data) {
                self.chunk(&c, &mut out);
            }
        }
        if self.frames.pending() > MAX_FRAME_BYTES {
            return Err("a frame of the answer is larger than 4 MiB".into());
        }
        Ok(out.freeze())
    }

    fn finish(&mut self) -> Bytes {
        Bytes::new()
    }
}

#[cfg(test)]
mod tests;
