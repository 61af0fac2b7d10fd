//! The built-in `mock/` provider: answers in-process with a deterministic reply and real usage numbers, so the
//! gateway runs offline with no API keys. Also used by the standalone mock upstream (`llm-mock`) to build
//! its OpenAI-shaped bodies.

use super::wire::{estimate_tokens, Usage};
use super::Endpoint;
use serde_json::json;

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
            let data: Vec<_> = (0..inputs.max(1))
                .map(|i| {
                    let v: Vec<f64> = (0..dims)
                        .map(|d| (((i * 31 + d * 17) % 97) as f64 / 97.0) - 0.5)
                        .collect();
                    json!({"object": "embedding", "index": i, "embedding": v})
                })
                .collect();
            let body = json!({
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens},
            });
            (body.to_string().into_bytes(), usage)
        }
    }
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
