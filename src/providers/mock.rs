//! The built-in `mock/` provider: answers in-process with a deterministic reply and real usage numbers, so the
//! gateway runs offline with no API keys. Also used by the standalone mock upstream (`llm-mock`) to build
//! its OpenAI-shaped bodies.

use super::adapter::{Frames, Provider, Reply, Sent, UpstreamCall};
use super::target::Target;
use super::wire::{estimate_prompt_tokens, InputShape};
use super::wire::{estimate_tokens, Usage};
use super::Endpoint;
use crate::error::ApiError;
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use serde_json::json;

/// The built-in `mock/` provider: answers in-process, offline, in the OpenAI shape (a stream as frames).
pub struct Mock;

impl Provider for Mock {
    /// The built-in mock answers every endpoint.
    fn serves(&self, _: Endpoint, _: &Target) -> bool {
        true
    }

    fn send<'a>(
        &'a self,
        call: &'a UpstreamCall<'a>,
    ) -> LocalBoxFuture<'a, Result<Sent, ApiError>> {
        Box::pin(answer(call))
    }
}

async fn answer(call: &UpstreamCall<'_>) -> Result<Sent, ApiError> {
    let (endpoint, view) = (call.endpoint, call.view);
    let reply = match view.mock_response()? {
        Some(r) => r.into_owned(),
        None => call
            .mock_reply
            .map(str::to_owned)
            .unwrap_or_else(|| default_reply(call.model)),
    };
    let prompt_tokens = estimate_prompt_tokens(view);
    if !call.mock_latency.is_zero() {
        actix_rt::time::sleep(call.mock_latency).await;
    }
    let none = (None, None);
    if call.stream {
        let frames = stream_frames(endpoint, call.model, &reply, prompt_tokens, true);
        let frames: Frames = Box::pin(futures_util::stream::iter(
            frames.into_iter().map(|f| Ok(Bytes::from(f))),
        ));
        return Ok(Sent {
            reply: Reply::Stream(frames),
            remaining: none,
        });
    }
    let inputs = view
        .get("input")
        .and_then(|r| InputShape::of(r.get()))
        .map_or(1, |s| s.inputs.max(1));
    let dims = view
        .get("dimensions")
        .and_then(|r| r.get().parse::<usize>().ok())
        .unwrap_or(DEFAULT_EMBEDDING_DIMENSIONS)
        .clamp(1, MAX_EMBEDDING_DIMENSIONS);
    if endpoint == Endpoint::Embeddings {
        if inputs > MAX_EMBEDDING_INPUTS {
            return Err(ApiError::bad_request(format!(
                "`input` holds {inputs} inputs; at most {MAX_EMBEDDING_INPUTS} are allowed per request"
            ))
            .with_param("input"));
        }
        if inputs * dims > MAX_EMBEDDING_VALUES {
            return Err(ApiError::bad_request(format!(
                "{inputs} inputs of {dims} dimensions is more than the mock answers at once ({MAX_EMBEDDING_VALUES} numbers); send fewer inputs or fewer `dimensions`"
            ))
            .with_param("input"));
        }
    }
    let (bytes, _) = response_body(endpoint, call.model, &reply, prompt_tokens, dims, inputs);
    Ok(Sent {
        reply: Reply::Body(Bytes::from(bytes)),
        remaining: none,
    })
}

/// Embedding size when the request does not set `dimensions` (OpenAI's text-embedding-3-small).
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 1536;
/// Largest embedding the mock builds, whatever the request asks.
pub const MAX_EMBEDDING_DIMENSIONS: usize = 8192;

/// The reply when neither the deployment nor the request sets `mock_response`.
pub fn default_reply(model: &str) -> String {
    format!("This is a mock response from {model}.")
}

/// A completion id: unique enough for clients that log it.
pub fn completion_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A non-streaming response body for `endpoint`.
pub fn response_body(
    endpoint: Endpoint,
    model: &str,
    reply: &str,
    prompt_tokens: u64,
    dims: usize,
    inputs: usize,
) -> (Vec<u8>, Usage) {
    let created = unix_now();
    match endpoint {
        Endpoint::ChatCompletions => {
            let usage = Usage::new(prompt_tokens, estimate_tokens(reply));
            let body = json!({
                "id": completion_id("chatcmpl"),
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "logprobs": null,
                    "finish_reason": "stop"
                }],
                "usage": usage_json(&usage),
            });
            (body.to_string().into_bytes(), usage)
        }
        Endpoint::Completions => {
            let usage = Usage::new(prompt_tokens, estimate_tokens(reply));
            let body = json!({
                "id": completion_id("cmpl"),
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": reply, "logprobs": null, "finish_reason": "stop"}],
                "usage": usage_json(&usage),
            });
            (body.to_string().into_bytes(), usage)
        }
        Endpoint::Embeddings => {
            let usage = Usage::new(prompt_tokens, 0);
            (embeddings_body(model, inputs.max(1), dims, &usage), usage)
        }
    }
}

/// Most inputs one embeddings request may carry (OpenAI's limit).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;
/// Most numbers the mock returns in one embeddings answer (inputs x dimensions): about 5 MB of JSON.
pub const MAX_EMBEDDING_VALUES: usize = 256 * 1024;

/// The embeddings list, written straight into its JSON text (no intermediate values: a large answer costs
/// its text once).
fn embeddings_body(model: &str, inputs: usize, dims: usize, usage: &Usage) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(64 + inputs * (48 + dims * 8));
    out.extend_from_slice(br#"{"object":"list","data":["#);
    for i in 0..inputs {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, r#"{{"object":"embedding","index":{i},"embedding":["#);
        for d in 0..dims {
            if d > 0 {
                out.push(b',');
            }
            let v = (((i * 31 + d * 17) % 97) as f64 / 97.0) - 0.5;
            let _ = write!(out, "{v:.6}");
        }
        out.extend_from_slice(b"]}");
    }
    let _ = write!(
        out,
        r#"],"model":{},"usage":{{"prompt_tokens":{},"total_tokens":{}}}}}"#,
        serde_json::Value::from(model),
        usage.prompt_tokens,
        usage.total_tokens
    );
    out
}

fn usage_json(u: &Usage) -> serde_json::Value {
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens})
}

/// The SSE frames of a streamed reply: one frame per word, a final frame with `finish_reason`, a usage-only
/// frame when `include_usage`, and `data: [DONE]`.
pub fn stream_frames(
    endpoint: Endpoint,
    model: &str,
    reply: &str,
    prompt_tokens: u64,
    include_usage: bool,
) -> Vec<String> {
    let id = completion_id(if endpoint == Endpoint::Completions {
        "cmpl"
    } else {
        "chatcmpl"
    });
    let created = unix_now();
    let chat = endpoint != Endpoint::Completions;
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let mut frames = Vec::new();
    let frame = |choices: serde_json::Value, usage: serde_json::Value| {
        let mut v = json!({"id": id, "object": object, "created": created, "model": model, "choices": choices});
        if !usage.is_null() {
            v["usage"] = usage;
        }
        format!("data: {v}\n\n")
    };
    let mut words = split_words(reply);
    if words.is_empty() {
        words.push(String::new());
    }
    for (i, w) in words.iter().enumerate() {
        let choice = if chat {
            let mut delta = json!({"content": w});
            if i == 0 {
                delta["role"] = json!("assistant");
            }
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}])
        } else {
            json!([{"index": 0, "text": w, "logprobs": null, "finish_reason": null}])
        };
        frames.push(frame(choice, serde_json::Value::Null));
    }
    let last = if chat {
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}])
    } else {
        json!([{"index": 0, "text": "", "logprobs": null, "finish_reason": "stop"}])
    };
    frames.push(frame(last, serde_json::Value::Null));
    if include_usage {
        let usage = Usage::new(prompt_tokens, estimate_tokens(reply));
        frames.push(frame(json!([]), usage_json(&usage)));
    }
    frames.push("data: [DONE]\n\n".to_owned());
    frames
}

/// Splits text into word pieces that keep their leading space, so the pieces concatenate to the text.
fn split_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c == ' ' && !cur.is_empty() && !cur.ends_with(' ') {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::wire::SseTap;

    #[test]
    fn embeddings_are_valid_json() {
        let usage = Usage::new(3, 0);
        let (body, _) = response_body(Endpoint::Embeddings, "m\"x", "", 3, 4, 2);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 4);
        assert_eq!(v["model"], "m\"x");
        assert_eq!(v["usage"]["prompt_tokens"], usage.prompt_tokens);
    }

    #[test]
    fn words_concatenate_back() {
        let t = "Hello there,  big world";
        assert_eq!(split_words(t).concat(), t);
    }

    #[test]
    fn stream_usage_matches_non_stream() {
        let reply = default_reply("m");
        let (_, usage) = response_body(Endpoint::ChatCompletions, "m", &reply, 10, 0, 0);
        let mut tap = SseTap::new(false);
        for f in stream_frames(Endpoint::ChatCompletions, "m", &reply, 10, true) {
            tap.feed(f.as_bytes());
        }
        assert_eq!(tap.usage, Some(usage));
        assert!(tap.saw_done);
        assert_eq!(tap.content_chars, reply.chars().count() as u64);
    }
}
