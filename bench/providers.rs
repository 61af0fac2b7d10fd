//! Criterion benchmark of what a provider adapter adds to a request (`cargo bench --bench providers`):
//! the Anthropic translation of a typical chat request, of its answer, and of its stream, against what the
//! OpenAI pass-through does for the same request (rewrite the body with the upstream model).
//!
//! - `openai/request`: `RequestView::upstream_body`, the pass-through's only body work;
//! - `anthropic/request`: the body to the Messages API (parse into JSON values, translate, serialize);
//! - `anthropic/response`: a Messages API answer to an OpenAI chat completion;
//! - `anthropic/stream`: a 40-event stream (about 30 text deltas) to OpenAI chunks.
//! - `messages/native_request`: a `/v1/messages` request passed through to an Anthropic deployment (only
//!   `model` replaced); its answer goes back as it came, read once for the accounting
//!   (`anthropic/response`), its stream by the shadow translator (`anthropic/stream`).
//! - `messages/translated_request`: the same request to an OpenAI deployment (to a chat completion, then
//!   the pass-through's body work).
//!
//! Numbers are in bench/README.md.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use llm::providers::adapter::Translate;
use llm::providers::anthropic::{native_body, request, response, StreamTranslator};
use llm::providers::messages::to_openai;
use llm::providers::wire::RequestView;
use serde_json::{json, Value};

fn chat_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model": "claude",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly and precisely."},
            {"role": "user", "content": "What is the capital of France, and what is it known for? Give three facts."},
            {"role": "assistant", "content": "Paris. It is known for the Eiffel Tower, the Louvre and its cafes."},
            {"role": "user", "content": "And its population?"}
        ],
        "max_tokens": 256,
        "temperature": 0.2,
        "stream": false
    }))
    .unwrap()
}

fn answer() -> Value {
    json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-3-5-sonnet-20241022",
        "content": [{"type": "text", "text": "About 2.1 million people live in Paris proper, and about 12 million in its metropolitan area."}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 60, "output_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    })
}

fn stream_bytes() -> Bytes {
    let mut s = String::new();
    let mut ev = |v: Value| {
        s.push_str(&format!(
            "event: {}\ndata: {}\n\n",
            v["type"].as_str().unwrap(),
            v
        ))
    };
    ev(
        json!({"type": "message_start", "message": {"id": "msg_01", "model": "claude-3-5-sonnet-20241022", "usage": {"input_tokens": 60, "output_tokens": 1}}}),
    );
    ev(
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    for i in 0..30 {
        ev(
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": format!("word{i} ")}}),
        );
    }
    ev(json!({"type": "content_block_stop", "index": 0}));
    ev(
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 30}}),
    );
    ev(json!({"type": "message_stop"}));
    Bytes::from(s)
}

fn bench(c: &mut Criterion) {
    let body = chat_body();
    c.bench_function("openai/request", |b| {
        b.iter(|| {
            let view = RequestView::parse(black_box(&body)).unwrap();
            black_box(view.upstream_body("gpt-4o", false))
        })
    });
    c.bench_function("anthropic/request", |b| {
        b.iter(|| {
            let view = RequestView::parse(black_box(&body)).unwrap();
            let mut map = view.to_object();
            let out = request(&mut map, "claude-3-5-sonnet-20241022", false).unwrap();
            black_box(serde_json::to_vec(&out).unwrap())
        })
    });
    let raw = serde_json::to_vec(&answer()).unwrap();
    c.bench_function("anthropic/response", |b| {
        b.iter(|| {
            let msg: Value = serde_json::from_slice(black_box(&raw)).unwrap();
            black_box(serde_json::to_vec(&response(&msg, "claude")).unwrap())
        })
    });
    let events = stream_bytes();
    c.bench_function("anthropic/stream", |b| {
        b.iter(|| {
            let mut t = StreamTranslator::new("claude");
            // In network-sized pieces, as a stream arrives.
            let mut n = 0;
            for piece in events.chunks(512) {
                n += t.feed(black_box(piece)).unwrap().len();
            }
            black_box(n)
        })
    });
}

fn messages_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model": "claude",
        "system": "You are a helpful assistant. Answer briefly and precisely.",
        "messages": [
            {"role": "user", "content": "What is the capital of France, and what is it known for? Give three facts."},
            {"role": "assistant", "content": "Paris. It is known for the Eiffel Tower, the Louvre and its cafes."},
            {"role": "user", "content": "And its population?"}
        ],
        "max_tokens": 256,
        "temperature": 0.2
    }))
    .unwrap()
}

fn bench_messages(c: &mut Criterion) {
    let body = messages_body();
    c.bench_function("messages/native_request", |b| {
        b.iter(|| black_box(native_body(black_box(&body), "claude-3-5-sonnet-20241022").unwrap()))
    });
    c.bench_function("messages/translated_request", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(&body)).unwrap();
            let chat = serde_json::to_vec(&to_openai(&v).unwrap()).unwrap();
            let view = RequestView::parse(&chat).unwrap();
            black_box(view.upstream_body("gpt-4o", false))
        })
    });
}

criterion_group!(benches, bench, bench_messages);
criterion_main!(benches);
