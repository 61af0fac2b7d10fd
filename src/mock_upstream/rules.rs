//! What the mock upstream is told to do (per model or per request), and its call counts.

use bytes::Bytes;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to answer. Every field is optional; an empty rule answers normally.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The model the rule is for (only in `POST /__mock/rules`).
    #[serde(default)]
    pub model: Option<String>,
    /// Answer this HTTP status with an OpenAI error body.
    pub status: Option<u16>,
    /// With `status`: apply it only on calls whose number (from 1, per model) is a multiple of `every`.
    pub every: Option<u64>,
    /// With `status`: apply it only to the first `times` calls after the rule was set.
    pub times: Option<u64>,
    pub message: Option<String>,
    /// Seconds, sent as `retry-after`.
    pub retry_after: Option<f64>,
    pub latency_ms: Option<u64>,
    pub remaining_requests: Option<f64>,
    pub remaining_tokens: Option<f64>,
    /// Streams: send this many frames, then break the connection.
    pub cut_stream_after: Option<usize>,
    /// Streams: wait this long between frames.
    pub frame_delay_ms: Option<u64>,
    /// 200 with a body that is not JSON.
    #[serde(default)]
    pub malformed: bool,
    /// Leave `usage` out of the answer (and out of streams).
    #[serde(default)]
    pub omit_usage: bool,
    /// With `status`: the error's `code` (e.g. Azure's `content_filter`).
    pub code: Option<String>,
    /// With `status` (a 3xx): the `location` header to send.
    pub location: Option<String>,
    /// Streams: after the first frame, send this many bytes that never end a frame.
    pub endless_frame_bytes: Option<usize>,
    /// Streams: send content frames forever (every `frame_delay_ms`, default 10).
    #[serde(default)]
    pub endless: bool,
    pub reply: Option<String>,
    /// Streams: answer 200, then open the stream with an error event of this type (Anthropic's
    /// `overloaded_error`, say; an OpenAI stream gets an `{"error": ...}` frame). Honours `every` / `times`.
    pub stream_error: Option<String>,
    /// Anthropic streams: this many `ping` events (`frame_delay_ms` apart) before the content.
    pub pings: Option<usize>,
}

#[derive(Default)]
pub struct ModelState {
    pub rule: Rule,
    pub calls: u64,
    pub calls_since_rule: u64,
}

#[derive(Default, Clone)]
pub struct MockState {
    models: Arc<Mutex<HashMap<String, ModelState>>>,
}

pub fn lock(state: &MockState) -> std::sync::MutexGuard<'_, HashMap<String, ModelState>> {
    // A poisoned lock only means a panicking test thread; the counts are still usable.
    state.models.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts a call to `model` and returns the rule it is answered by (the request's own, else the model's),
/// the call's number and its number since the rule was set.
pub fn take(state: &MockState, model: &str, per_request: Option<Rule>) -> (Rule, u64, u64) {
    let mut models = lock(state);
    let m = models.entry(model.to_owned()).or_default();
    m.calls += 1;
    m.calls_since_rule += 1;
    (
        per_request.unwrap_or_else(|| m.rule.clone()),
        m.calls,
        m.calls_since_rule,
    )
}

impl Rule {
    /// The status this call answers, if the rule sets one and it applies to this call.
    pub fn status_for(&self, call: u64, since: u64) -> Option<u16> {
        let status = self.status?;
        self.applies(call, since).then_some(status)
    }

    /// The stream error this call opens with, if the rule sets one and it applies to this call.
    pub fn stream_error_for(&self, call: u64, since: u64) -> Option<&str> {
        let kind = self.stream_error.as_deref()?;
        self.applies(call, since).then_some(kind)
    }

    fn applies(&self, call: u64, since: u64) -> bool {
        self.every.is_none_or(|n| n > 0 && call % n == 0) && self.times.is_none_or(|n| since <= n)
    }
}

/// A stream's frames as the rule paces them: `frame_delay_ms` between frames, the connection broken after
/// `cut_stream_after` frames.
pub fn paced(
    frames: Vec<Bytes>,
    rule: &Rule,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let cut = rule.cut_stream_after;
    let delay = rule.frame_delay_ms.map(Duration::from_millis);
    futures_util::stream::unfold(0usize, move |i| {
        let frame = frames.get(i).cloned();
        async move {
            if cut.is_some_and(|n| i == n) {
                // Let the frames already produced reach the wire before the connection breaks.
                actix_web::rt::time::sleep(Duration::from_millis(50)).await;
                return Some((
                    Err(std::io::Error::other("mock upstream cut the stream")),
                    i + 1,
                ));
            }
            if cut.is_some_and(|n| i > n) {
                return None;
            }
            let frame = frame?;
            if let (Some(d), true) = (delay, i > 0) {
                actix_web::rt::time::sleep(d).await;
            }
            Some((Ok(frame), i + 1))
        }
    })
}
