//! Anthropic's stream, event by event, into OpenAI chunks ending with the usage chunk and `[DONE]`; a
//! stream cut or ended by an `error` event reports the usage of what it generated first, so it is charged.

use crate::providers::adapter::Translate;
use crate::providers::mock::unix_now;
use crate::providers::wire::SseFrames;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value as Json};

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
pub(super) fn finish_reason(stop: Option<&str>) -> Json {
    match stop {
        None => Json::Null,
        Some("max_tokens") => "length".into(),
        Some("tool_use") => "tool_calls".into(),
        Some("refusal") => "content_filter".into(),
        Some(_) => "stop".into(),
    }
}

/// OpenAI usage for Anthropic usage: every input token is a prompt token (cache reads and writes too).
pub(super) fn usage_of(u: &Json) -> Json {
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
        "cache_creation_input_tokens": n("cache_creation_input_tokens"),
    })
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
        self.usage_chunk(out);
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    /// The usage chunk (no choices) with the usage known so far.
    fn usage_chunk(&self, out: &mut BytesMut) {
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
        self.usage_chunk(out);
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
                    // Reasoning is output too: counted for a stream cut before its usage.
                    Some("thinking_delta") => {
                        let text = d.get("thinking").and_then(Json::as_str).unwrap_or("");
                        self.generated += text.chars().count() as u64;
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
