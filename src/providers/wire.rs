//! Pure parsers for the OpenAI wire format: the few request fields the gateway needs (borrowed, typed, the
//! rest left as raw JSON), usage blocks, server-sent-event frames and rate-limit headers. None of them panic
//! on bad input; they are table-tested below.

use crate::error::ApiError;
use bytes::{Bytes, BytesMut};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A request body's top-level fields, each value kept as raw JSON text borrowed from the body.
pub struct RequestView<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for RequestView<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RequestView<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    fields.push((k, v));
                }
                Ok(RequestView { fields })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> RequestView<'a> {
    /// Parses a body that must be a JSON object.
    pub fn parse(body: &'a [u8]) -> Result<Self, ApiError> {
        if body.is_empty() {
            return Err(ApiError::bad_request(
                "request body is empty; send a JSON object",
            ));
        }
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("request body is not a valid JSON object: {e}"))
        })
    }

    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    fn typed<T: Deserialize<'a>>(&self, key: &str, expected: &str) -> Result<Option<T>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|_| {
                ApiError::bad_request(format!("`{key}` must be {expected}")).with_param(key)
            }),
        }
    }

    /// `model`, which must be a non-empty string.
    pub fn model(&self) -> Result<Cow<'a, str>, ApiError> {
        match self.typed::<Cow<'a, str>>("model", "a string")? {
            Some(m) if !m.is_empty() => Ok(m),
            _ => Err(ApiError::bad_request(
                "`model` is required: name one of the model groups (GET /v1/models)",
            )
            .with_param("model")),
        }
    }

    pub fn stream(&self) -> Result<bool, ApiError> {
        Ok(self.typed::<bool>("stream", "a boolean")?.unwrap_or(false))
    }

    /// `stream_options.include_usage`.
    pub fn include_usage(&self) -> Result<bool, ApiError> {
        #[derive(Deserialize)]
        struct StreamOptions {
            #[serde(default)]
            include_usage: Option<bool>,
        }
        let opts: Option<StreamOptions> = self.typed("stream_options", "an object")?;
        Ok(opts.and_then(|o| o.include_usage).unwrap_or(false))
    }

    /// `user`: the end user (customer) of the request.
    pub fn user(&self) -> Result<Option<Cow<'a, str>>, ApiError> {
        self.typed::<Cow<'a, str>>("user", "a string")
    }

    /// `metadata`, when it is an object.
    pub fn metadata(&self) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ApiError> {
        self.typed("metadata", "an object")
    }

    /// `mock_response`: a reply text the built-in mock provider returns instead of its default.
    pub fn mock_response(&self) -> Result<Option<Cow<'a, str>>, ApiError> {
        self.typed::<Cow<'a, str>>("mock_response", "a string")
    }

    /// `num_retries`: this request's retries, instead of `router_settings.num_retries`.
    pub fn num_retries(&self) -> Result<Option<u32>, ApiError> {
        self.typed::<u32>("num_retries", "a non-negative integer")
    }

    /// `fallbacks`: model groups to try, in order, when the requested one fails (instead of the configured
    /// fallbacks). Names, or objects with a `model` field as LiteLLM also accepts.
    pub fn fallbacks(&self) -> Result<Option<Vec<String>>, ApiError> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Entry {
            Name(String),
            Object { model: String },
        }
        let list: Option<Vec<Entry>> = self.typed("fallbacks", "an array of model group names")?;
        Ok(list.map(|l| {
            l.into_iter()
                .map(|e| match e {
                    Entry::Name(m) | Entry::Object { model: m } => m,
                })
                .collect()
        }))
    }

    /// Checks the fields each endpoint cannot do without, so the client hears it before any upstream call.
    pub fn require(&self, key: &str, expected: &str, ok: fn(&str) -> bool) -> Result<(), ApiError> {
        match self.get(key) {
            Some(raw) if ok(raw.get()) => Ok(()),
            Some(_) => {
                Err(ApiError::bad_request(format!("`{key}` must be {expected}")).with_param(key))
            }
            None => Err(
                ApiError::bad_request(format!("`{key}` is required ({expected})")).with_param(key),
            ),
        }
    }

    /// The body to send upstream: `model` replaced by the deployment's model name, the gateway's own fields
    /// (`metadata`, `mock_response`, `fallbacks`, `num_retries`) dropped, and `stream_options.include_usage` forced on when `force_usage`.
    /// Every other field is copied byte for byte.
    pub fn upstream_body(&self, model: &str, force_usage: bool) -> Vec<u8> {
        let len: usize = self
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(len + model.len() + 64);
        out.push(b'{');
        let mut first = true;
        let mut sep = |out: &mut Vec<u8>| {
            if !first {
                out.push(b',');
            }
            first = false;
        };
        let write_key = |out: &mut Vec<u8>, k: &str| {
            // serde_json writes a valid, escaped JSON string.
            out.extend_from_slice(serde_json::to_string(k).unwrap_or_default().as_bytes());
            out.push(b':');
        };
        sep(&mut out);
        write_key(&mut out, "model");
        out.extend_from_slice(serde_json::to_string(model).unwrap_or_default().as_bytes());
        for (k, v) in &self.fields {
            match k.as_ref() {
                "model" | "metadata" | "mock_response" | "fallbacks" | "num_retries" => continue,
                "stream_options" if force_usage => continue,
                _ => {}
            }
            sep(&mut out);
            write_key(&mut out, k);
            out.extend_from_slice(v.get().as_bytes());
        }
        if force_usage {
            sep(&mut out);
            write_key(&mut out, "stream_options");
            let mut opts: serde_json::Map<String, serde_json::Value> = self
                .get("stream_options")
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .unwrap_or_default();
            opts.insert("include_usage".into(), serde_json::Value::Bool(true));
            out.extend_from_slice(serde_json::Value::Object(opts).to_string().as_bytes());
        }
        out.push(b'}');
        out
    }
}

/// Token usage of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

impl Usage {
    pub fn new(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    }

    /// Fills `total_tokens` when a provider left it out.
    fn normalized(mut self) -> Usage {
        if self.total_tokens == 0 {
            self.total_tokens = self.prompt_tokens + self.completion_tokens;
        }
        self
    }
}

/// Reads `usage` out of a non-streaming response body. `Err` when the body is not a JSON object.
pub fn response_usage(body: &[u8]) -> Result<Option<Usage>, serde_json::Error> {
    #[derive(Deserialize)]
    struct View {
        #[serde(default)]
        usage: Option<Usage>,
    }
    let v: View = serde_json::from_slice(body)?;
    Ok(v.usage.map(Usage::normalized))
}

/// A rough token count for text the provider did not count for us: one token per four characters, the
/// usual rule of thumb for English with OpenAI tokenizers.
pub fn estimate_tokens(text: &str) -> u64 {
    let chars = text.chars().count() as u64;
    chars.div_ceil(4)
}

/// Estimated prompt tokens of a request, from its `messages`, `prompt` or `input`.
pub fn estimate_prompt_tokens(view: &RequestView<'_>) -> u64 {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<Part>),
        #[allow(dead_code)]
        Other(serde::de::IgnoredAny),
    }
    #[derive(Deserialize)]
    struct Part {
        #[serde(default)]
        text: Option<String>,
    }
    #[derive(Deserialize)]
    struct Message {
        #[serde(default)]
        content: Option<Content>,
    }
    fn content_tokens(c: &Content) -> u64 {
        match c {
            Content::Text(t) => estimate_tokens(t),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .map(estimate_tokens)
                .sum(),
            Content::Other(_) => 0,
        }
    }
    if let Some(raw) = view.get("messages") {
        if let Ok(messages) = serde_json::from_str::<Vec<Message>>(raw.get()) {
            // Chat formats add a few tokens per message for roles and separators.
            return 3 + messages
                .iter()
                .map(|m| 4 + m.content.as_ref().map(content_tokens).unwrap_or(0))
                .sum::<u64>();
        }
    }
    for key in ["prompt", "input"] {
        if let Some(raw) = view.get(key) {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Input {
                One(String),
                Many(Vec<String>),
                Tokens(Vec<u64>),
                TokenLists(Vec<Vec<u64>>),
            }
            return match serde_json::from_str::<Input>(raw.get()) {
                Ok(Input::One(s)) => estimate_tokens(&s),
                Ok(Input::Many(v)) => v.iter().map(|s| estimate_tokens(s)).sum(),
                Ok(Input::Tokens(t)) => t.len() as u64,
                Ok(Input::TokenLists(t)) => t.iter().map(|l| l.len() as u64).sum(),
                Err(_) => 0,
            };
        }
    }
    0
}

/// `x-ratelimit-remaining-requests` / `-tokens`: a number (OpenAI sends integers; some servers floats).
pub fn parse_remaining(value: &str) -> Option<f64> {
    let v: f64 = value.trim().parse().ok()?;
    v.is_finite().then_some(v)
}

/// `retry-after`: seconds (integer or decimal). HTTP dates are not used by LLM providers and are ignored.
pub fn parse_retry_after(value: &str) -> Option<f64> {
    let v: f64 = value.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// What an SSE pass-through learns from the frames it forwards.
#[derive(Debug, Default)]
pub struct SseTap {
    buf: BytesMut,
    /// Drop the usage-only chunk: the gateway asked for it, the client did not.
    drop_usage_chunk: bool,
    pub usage: Option<Usage>,
    /// Characters of generated text seen, for a local count when the provider sends no usage.
    pub content_chars: u64,
    pub saw_token: bool,
    pub saw_done: bool,
    /// An `{"error": ...}` frame came through.
    pub saw_error: bool,
}

/// The result of feeding bytes to an [`SseTap`].
pub struct TapOut {
    /// Complete frames to forward to the client (possibly empty).
    pub forward: Bytes,
    /// This feed carried the first generated token.
    pub first_token: bool,
}

impl SseTap {
    pub fn new(drop_usage_chunk: bool) -> SseTap {
        SseTap {
            drop_usage_chunk,
            ..Default::default()
        }
    }

    /// Takes upstream bytes; returns the complete frames to forward. A partial frame waits for the next feed.
    pub fn feed(&mut self, chunk: &[u8]) -> TapOut {
        self.buf.extend_from_slice(chunk);
        let had_token = self.saw_token;
        let mut out = BytesMut::new();
        while let Some((frame_len, sep_len)) = find_frame_end(&self.buf) {
            let frame = self.buf.split_to(frame_len + sep_len);
            if self.inspect(&frame[..frame_len]) {
                out.extend_from_slice(&frame);
            }
        }
        TapOut {
            forward: out.freeze(),
            first_token: !had_token && self.saw_token,
        }
    }

    /// Whatever is left when the upstream closes (a frame without its final blank line).
    pub fn finish(&mut self) -> Bytes {
        let rest = self.buf.split().freeze();
        if !rest.is_empty() && self.inspect(&rest) {
            return rest;
        }
        Bytes::new()
    }

    /// Reads one frame; returns whether to forward it.
    fn inspect(&mut self, frame: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(frame) else {
            return true;
        };
        let mut data = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
            }
        }
        if data.is_empty() {
            return true;
        }
        if data.trim() == "[DONE]" {
            self.saw_done = true;
            return true;
        }
        #[derive(Deserialize)]
        struct Chunk<'a> {
            #[serde(default)]
            usage: Option<Usage>,
            #[serde(default, borrow)]
            choices: Option<Vec<Choice<'a>>>,
            #[serde(default)]
            error: Option<serde::de::IgnoredAny>,
        }
        #[derive(Deserialize)]
        struct Choice<'a> {
            #[serde(default, borrow)]
            delta: Option<Delta<'a>>,
            #[serde(default, borrow)]
            text: Option<Cow<'a, str>>,
        }
        #[derive(Deserialize)]
        struct Delta<'a> {
            #[serde(default, borrow)]
            content: Option<Cow<'a, str>>,
        }
        let Ok(chunk) = serde_json::from_str::<Chunk>(&data) else {
            return true;
        };
        if chunk.error.is_some() {
            self.saw_error = true;
        }
        let mut chars = 0u64;
        let choices = chunk.choices.as_deref().unwrap_or(&[]);
        for c in choices {
            if let Some(t) = c
                .delta
                .as_ref()
                .and_then(|d| d.content.as_deref())
                .or(c.text.as_deref())
            {
                chars += t.chars().count() as u64;
            }
        }
        if chars > 0 {
            self.saw_token = true;
            self.content_chars += chars;
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u.normalized());
            if self.drop_usage_chunk && choices.is_empty() {
                return false;
            }
        }
        true
    }
}

/// Finds the end of the first complete SSE frame: (frame length, separator length).
fn find_frame_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_fields_are_typed() {
        let body = br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"user":"u\"1","messages":[{"role":"user","content":"hi"}]}"#;
        let v = RequestView::parse(body).unwrap();
        assert_eq!(v.model().unwrap(), "gpt-4o");
        assert!(v.stream().unwrap());
        assert!(v.include_usage().unwrap());
        assert_eq!(v.user().unwrap().unwrap(), "u\"1");
    }

    #[test]
    fn bad_requests_are_named() {
        for (body, needle) in [
            (&b"{"[..], "not a valid JSON object"),
            (b"[1,2]", "not a valid JSON object"),
            (b"", "empty"),
        ] {
            let e = RequestView::parse(body).err().unwrap();
            assert!(e.message.contains(needle), "{}", e.message);
        }
        let v = RequestView::parse(br#"{"model":5,"stream":"yes"}"#).unwrap();
        assert_eq!(v.model().unwrap_err().param.as_deref(), Some("model"));
        assert!(v
            .stream()
            .unwrap_err()
            .message
            .contains("`stream` must be a boolean"));
        let v = RequestView::parse(br#"{"messages":[]}"#).unwrap();
        assert!(v
            .model()
            .unwrap_err()
            .message
            .contains("`model` is required"));
    }

    #[test]
    fn upstream_body_rewrites_model_and_usage() {
        let body = br#"{"model":"group","metadata":{"a":1},"stream":true,"temperature":0.5,"stream_options":{"x":1}}"#;
        let v = RequestView::parse(body).unwrap();
        let out: serde_json::Value =
            serde_json::from_slice(&v.upstream_body("gpt-4o-2024", true)).unwrap();
        assert_eq!(out["model"], "gpt-4o-2024");
        assert!(out.get("metadata").is_none());
        assert_eq!(out["temperature"], 0.5);
        assert_eq!(out["stream_options"]["include_usage"], true);
        assert_eq!(out["stream_options"]["x"], 1);
        let out: serde_json::Value = serde_json::from_slice(&v.upstream_body("m", false)).unwrap();
        assert_eq!(out["stream_options"], serde_json::json!({"x":1}));
    }

    #[test]
    fn usage_from_responses() {
        let u = response_usage(
            br#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(u, Usage::new(3, 4));
        let u = response_usage(br#"{"usage":{"prompt_tokens":5}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(u, Usage::new(5, 0));
        assert_eq!(response_usage(br#"{"data":[]}"#).unwrap(), None);
        assert!(response_usage(b"not json").is_err());
    }

    #[test]
    fn prompt_estimates() {
        let v =
            RequestView::parse(br#"{"messages":[{"role":"user","content":"abcdefgh"}]}"#).unwrap();
        assert_eq!(estimate_prompt_tokens(&v), 3 + 4 + 2);
        let v = RequestView::parse(br#"{"input":["abcd","ab"]}"#).unwrap();
        assert_eq!(estimate_prompt_tokens(&v), 2);
        let v = RequestView::parse(
            br#"{"messages":[{"role":"user","content":[{"type":"text","text":"abcd"}]}]}"#,
        )
        .unwrap();
        assert_eq!(estimate_prompt_tokens(&v), 3 + 4 + 1);
    }

    #[test]
    fn header_parsers() {
        assert_eq!(parse_remaining("99"), Some(99.0));
        assert_eq!(parse_remaining(" 12.5 "), Some(12.5));
        assert_eq!(parse_remaining("lots"), None);
        assert_eq!(parse_retry_after("2"), Some(2.0));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn sse_tap_splits_frames_and_reads_usage() {
        let mut tap = SseTap::new(true);
        let a = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"con";
        let out = tap.feed(a);
        assert!(out.first_token);
        let first_frame_end = a.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
        assert_eq!(&out.forward[..], &a[..first_frame_end]);
        let out = tap.feed(b"tent\":\"lo\"}}]}\n\n");
        assert!(!out.first_token);
        assert_eq!(out.forward.len(), a.len() - first_frame_end + 16);
        let out = tap.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n");
        assert_eq!(&out.forward[..], b"data: [DONE]\n\n");
        assert_eq!(tap.usage, Some(Usage::new(2, 2)));
        assert_eq!(tap.content_chars, 5);
        assert!(tap.saw_done);
    }

    #[test]
    fn sse_tap_keeps_usage_when_client_asked_and_handles_crlf_and_garbage() {
        let mut tap = SseTap::new(false);
        let frame = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\r\n\r\n";
        assert_eq!(&tap.feed(frame).forward[..], frame);
        assert_eq!(
            &tap.feed(b": keep-alive\n\ndata: {oops\n\n").forward[..],
            b": keep-alive\n\ndata: {oops\n\n"
        );
        assert_eq!(
            &tap.feed(b"data: {\"error\":{\"message\":\"x\"}}").forward[..],
            b""
        );
        assert_eq!(&tap.finish()[..], b"data: {\"error\":{\"message\":\"x\"}}");
        assert!(tap.saw_error);
    }
}
