//! Pure parsers for the OpenAI wire format: the few request fields the gateway needs (borrowed, typed, the
//! rest left as raw JSON), usage blocks, server-sent-event frames and rate-limit headers. None of them panic
//! on bad input; they are table-tested (`wire/tests.rs`).
//!
//! One cohesive thing, about 770 lines: every parser here reads the same lazily-parsed view of one body
//! ([`RequestView`]) or the same frame format, and shares its error wording; split by field they would each
//! re-read the body or repeat the rules.

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
        let view: RequestView = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("request body is not a valid JSON object: {e}"))
        })?;
        if let Some(dup) = view.duplicate_key() {
            // The gateway reads one of the values and the upstream might read the other: refuse both.
            let shown: String = dup.chars().take(MAX_SHOWN_KEY_CHARS).collect();
            return Err(ApiError::bad_request(format!(
                "request body has the key `{shown}` more than once; send each field once"
            ))
            .with_param(&shown));
        }
        Ok(view)
    }

    /// The first top-level key that appears twice, if any.
    fn duplicate_key(&self) -> Option<&str> {
        let f = &self.fields;
        if f.len() <= 16 {
            for (i, (k, _)) in f.iter().enumerate() {
                if f[..i].iter().any(|(p, _)| p == k) {
                    return Some(k);
                }
            }
            return None;
        }
        let mut seen = std::collections::HashSet::with_capacity(f.len());
        f.iter().map(|(k, _)| k.as_ref()).find(|k| !seen.insert(*k))
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

    /// `user`: the end user (customer) of the request. It becomes a label value, a spend-log column and a
    /// ledger key, so it is bounded: at most [`MAX_USER_CHARS`] characters, no control characters.
    pub fn user(&self) -> Result<Option<Cow<'a, str>>, ApiError> {
        let user = self.typed::<Cow<'a, str>>("user", "a string")?;
        if let Some(u) = &user {
            check_label_text("user", u)?;
        }
        Ok(user)
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

    /// The body as a JSON object, for a provider that translates it into its own format.
    pub fn to_object(&self) -> serde_json::Map<String, serde_json::Value> {
        self.fields
            .iter()
            .filter_map(|(k, v)| {
                serde_json::from_str(v.get())
                    .ok()
                    .map(|v| (k.to_string(), v))
            })
            .collect()
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

/// Longest `user` accepted (OpenAI documents no limit; 256 covers ids, emails and UUIDs).
pub const MAX_USER_CHARS: usize = 256;
/// How much of an offending key an error message repeats.
const MAX_SHOWN_KEY_CHARS: usize = 64;

/// Longest `metadata` value used as a label (OpenAI's limit for metadata values).
pub const MAX_METADATA_CHARS: usize = 512;

/// A client-sent string that ends up in a label, a log row or a header: at most [`MAX_USER_CHARS`]
/// characters and no control characters (NUL breaks PostgreSQL text, newlines break log lines).
pub fn check_label_text(param: &str, value: &str) -> Result<(), ApiError> {
    check_text(param, value, MAX_USER_CHARS)
}

/// [`check_label_text`] with its own length limit.
pub fn check_text(param: &str, value: &str, max_chars: usize) -> Result<(), ApiError> {
    if value.chars().count() > max_chars {
        return Err(ApiError::bad_request(format!(
            "`{param}` is longer than {max_chars} characters"
        ))
        .with_param(param));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "`{param}` must not contain control characters"
        ))
        .with_param(param));
    }
    Ok(())
}

/// The roles a chat message may have (OpenAI's, with the legacy `function`).
/// (`ipython` is what vLLM's Llama tool templates use.)
const MESSAGE_ROLES: [&str; 7] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
    "ipython",
];

/// Checks that `messages` is a non-empty array of objects, each with a known `role`; the error names the
/// first bad item (`messages[3]`). Reads the raw text without building values.
pub fn check_messages(raw: &str) -> Result<(), ApiError> {
    #[derive(Deserialize)]
    struct Item<'a> {
        #[serde(borrow)]
        role: Option<Cow<'a, str>>,
    }
    let bad = |param: String, why: String| Err(ApiError::bad_request(why).with_param(&param));
    let items: Vec<&RawValue> = match serde_json::from_str(raw) {
        Ok(items) => items,
        Err(_) => {
            return bad(
                "messages".into(),
                "`messages` must be a non-empty array of messages".into(),
            )
        }
    };
    if items.is_empty() {
        return bad(
            "messages".into(),
            "`messages` must be a non-empty array of messages".into(),
        );
    }
    for (i, item) in items.iter().enumerate() {
        let param = format!("messages[{i}]");
        if !item.get().starts_with('{') {
            return bad(
                param.clone(),
                format!("`{param}` must be an object with a `role` and `content`"),
            );
        }
        match serde_json::from_str::<Item>(item.get()) {
            Ok(Item { role: Some(r) }) if MESSAGE_ROLES.contains(&r.as_ref()) => {}
            Ok(Item { role: Some(_) }) => {
                return bad(
                    format!("{param}.role"),
                    format!("`{param}.role` must be one of {}", MESSAGE_ROLES.join(", ")),
                )
            }
            Ok(Item { role: None }) => {
                return bad(
                    format!("{param}.role"),
                    format!("`{param}.role` is required"),
                )
            }
            Err(_) => {
                return bad(
                    format!("{param}.role"),
                    format!("`{param}.role` must be a string (and the message an object)"),
                )
            }
        }
    }
    Ok(())
}

/// Token usage of one call. `prompt_tokens` counts every input token; of them, `cache_read_tokens`
/// (OpenAI's `prompt_tokens_details.cached_tokens`) and `cache_creation_tokens` (Anthropic's
/// `cache_creation_input_tokens`, as LiteLLM passes it on) are priced at their own rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(
        default,
        rename = "prompt_tokens_details",
        deserialize_with = "cached_tokens"
    )]
    pub cache_read_tokens: u64,
    #[serde(default, rename = "cache_creation_input_tokens")]
    pub cache_creation_tokens: u64,
}

/// `prompt_tokens_details.cached_tokens` (absent or `null`: none).
fn cached_tokens<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    struct Details {
        #[serde(default)]
        cached_tokens: Option<u64>,
    }
    Ok(Option::<Details>::deserialize(d)?
        .and_then(|x| x.cached_tokens)
        .unwrap_or(0))
}

/// The most tokens one number of a usage block may claim. An upstream's numbers are bounded before any
/// spend or token window adds them, so no sum can wrap (10^12 tokens is far beyond any real request).
pub const MAX_USAGE_TOKENS: u64 = 1_000_000_000_000;

impl Usage {
    pub fn new(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            ..Default::default()
        }
    }

    /// Fills `total_tokens` when a provider left it out, and bounds every number by [`MAX_USAGE_TOKENS`]
    /// (logged: an upstream claiming more is broken or hostile).
    fn normalized(mut self) -> Usage {
        let raw = self;
        for n in [
            &mut self.prompt_tokens,
            &mut self.completion_tokens,
            &mut self.total_tokens,
        ] {
            *n = (*n).min(MAX_USAGE_TOKENS);
        }
        // Cached tokens are some of the prompt's, never more.
        self.cache_read_tokens = self.cache_read_tokens.min(self.prompt_tokens);
        self.cache_creation_tokens = self
            .cache_creation_tokens
            .min(self.prompt_tokens - self.cache_read_tokens);
        if self != raw {
            tracing::warn!(
                prompt = raw.prompt_tokens,
                completion = raw.completion_tokens,
                total = raw.total_tokens,
                "upstream usage numbers out of range; bounded to {MAX_USAGE_TOKENS}"
            );
        }
        if self.total_tokens == 0 {
            self.total_tokens = self.prompt_tokens.saturating_add(self.completion_tokens);
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
            return InputShape::of(raw.get()).map_or(0, |s| s.tokens);
        }
    }
    0
}

/// The shape of a `prompt` or `input`: how many separate inputs it holds and roughly how many tokens. A
/// string is one input; an array of strings or of token arrays is one input per item; an array of
/// integers is one input of that many tokens. Counted while parsing, without building the values: a 4 MiB
/// array of zeros costs no memory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InputShape {
    pub inputs: usize,
    pub tokens: u64,
}

impl InputShape {
    /// `None` when `raw` is not valid JSON.
    pub fn of(raw: &str) -> Option<InputShape> {
        serde_json::from_str(raw).ok()
    }
}

/// One item of an input array.
enum Item {
    Text(u64),
    Token,
    TokenList(u64),
    Other,
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Item;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a token or a token array")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Item, E> {
                Ok(Item::Text(estimate_tokens(v)))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Item, E> {
                Ok(Item::Token)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Item, E> {
                Ok(Item::Token)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Item, E> {
                Ok(Item::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Item, E> {
                Ok(Item::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Item, E> {
                Ok(Item::Other)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
                let mut n = 0u64;
                while seq.next_element::<de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Item::TokenList(n))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Item::Other)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for InputShape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InputShape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<InputShape, E> {
                Ok(InputShape {
                    inputs: 1,
                    tokens: estimate_tokens(v),
                })
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<InputShape, A::Error> {
                let (mut items, mut tokens, mut all_tokens) = (0usize, 0u64, true);
                while let Some(item) = seq.next_element::<Item>()? {
                    items += 1;
                    match item {
                        Item::Token => tokens += 1,
                        Item::Text(t) | Item::TokenList(t) => {
                            all_tokens = false;
                            tokens = tokens.saturating_add(t);
                        }
                        Item::Other => all_tokens = false,
                    }
                }
                let inputs = if all_tokens { items.min(1) } else { items };
                Ok(InputShape { inputs, tokens })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InputShape, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(InputShape {
                    inputs: 1,
                    tokens: 0,
                })
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<InputShape, E> {
                Ok(InputShape::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<InputShape, E> {
                Ok(InputShape::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<InputShape, E> {
                Ok(InputShape::default())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<InputShape, E> {
                Ok(InputShape::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<InputShape, E> {
                Ok(InputShape::default())
            }
        }
        d.deserialize_any(V)
    }
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

/// The largest SSE frame passed through: an upstream sending more without a frame boundary is broken (or
/// hostile) and its stream is ended with an error.
pub const MAX_SSE_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// What an SSE pass-through learns from the frames it forwards.
#[derive(Debug, Default)]
pub struct SseTap {
    buf: BytesMut,
    /// How far into `buf` no frame boundary can start: the next feed scans only what is new.
    scanned: usize,
    /// A frame grew past [`MAX_SSE_FRAME_BYTES`]; nothing more is read.
    pub oversized: bool,
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
        while let Some((frame_len, sep_len)) = find_frame_end(&self.buf, self.scanned) {
            let frame = self.buf.split_to(frame_len + sep_len);
            self.scanned = 0;
            if self.inspect(&frame[..frame_len]) {
                out.extend_from_slice(&frame);
            }
        }
        // A separator is at most 3 bytes: the last 2 may still begin one.
        self.scanned = self.buf.len().saturating_sub(2);
        if self.buf.len() > MAX_SSE_FRAME_BYTES {
            self.oversized = true;
            self.buf = BytesMut::new();
            self.scanned = 0;
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

/// Finds the end of the first complete SSE frame, looking from `from` on: (frame length, separator
/// length).
/// SSE frames taken one at a time from a stream's bytes as they arrive: the `data:` lines of each complete
/// frame, joined (frames with no data are skipped). Each byte is scanned for a frame end once.
#[derive(Debug, Default)]
pub struct SseFrames {
    buf: BytesMut,
    /// How far into `buf` no frame end can start.
    scanned: usize,
}

impl SseFrames {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The data of the next complete frame, if one has arrived.
    pub fn next_data(&mut self) -> Option<String> {
        while let Some((end, sep)) = find_frame_end(&self.buf, self.scanned) {
            let frame = self.buf.split_to(end + sep);
            self.scanned = 0;
            let text = String::from_utf8_lossy(&frame[..end]);
            let data: Vec<&str> = text
                .lines()
                .filter_map(|l| l.trim_end_matches('\r').strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                return Some(data.join("\n"));
            }
        }
        // No frame ends before the last bytes (a separator may still start there).
        self.scanned = self.buf.len().saturating_sub(2);
        None
    }

    /// Bytes held for a frame that is not complete yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// The end of the first SSE frame in `buf` at or after `from` (`\n\n`, or `\n\r\n` of CRLF lines): its
/// length and the separator's.
pub fn find_frame_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
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

/// The `data` of a stream's first event when that event is an error (it has an `error` object: OpenAI's
/// `{"error": {...}}` and Anthropic's `{"type": "error", "error": {...}}` alike). A stream that fails
/// before its first token is retried like any failed call.
pub fn leading_error(chunk: &[u8]) -> Option<String> {
    // Every streamed request's first chunk comes here: one without the word is no error, and is neither
    // copied nor parsed.
    if !chunk.windows(7).any(|w| w == b"\"error\"") {
        return None;
    }
    let mut frames = SseFrames::default();
    frames.push(chunk);
    let data = frames.next_data()?;
    let v: serde_json::Value = serde_json::from_str(&data).ok()?;
    v.get("error")?.is_object().then_some(data)
}

#[cfg(test)]
mod tests;
