//! One call to one deployment through its provider's adapter (`providers/adapter.rs`): the answer, in the
//! OpenAI shape whatever the provider, read or passed through as a stream, the attempt recorded.

use super::metered::{openai_error_frame, Metered};
use super::pending::{success, Answer, Pending};
use crate::config::RoutingStrategy;
use crate::deployment::live::InFlight;
use crate::deployment::Deployment;
use crate::error::{ApiError, ErrorKind};
use crate::providers::adapter::{Frames, MessagesRequest, Reply, Sent, UpstreamCall};
use crate::providers::messages;
use crate::providers::wire::{
    estimate_prompt_tokens, leading_error, response_usage, RequestView, SseTap, Usage,
};
use crate::providers::Endpoint;
use actix::clock::Instant;
use actix_web::http::header;
use actix_web::HttpResponse;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::sync::Arc;
use std::time::Duration;

/// What every attempt of one request shares.
pub(super) struct Call<'a> {
    pub(super) endpoint: Endpoint,
    pub(super) view: &'a RequestView<'a>,
    pub(super) body: &'a Bytes,
    pub(super) stream: bool,
    pub(super) client_wants_usage: bool,
    /// `router_settings.timeout` from the request's arrival: no attempt starts or runs past it.
    pub(super) deadline: Option<Instant>,
    pub(super) strategy: RoutingStrategy,
    /// `router_settings.retry_after`: the least wait before a retry.
    pub(super) retry_after: Duration,
    /// Estimated prompt tokens (usage-based routing only).
    pub(super) tokens: u64,
    pub(super) num_retries: u32,
    /// `general_settings.max_retry_after`, whole seconds.
    pub(super) max_retry_after_secs: u64,
    /// The client's request as it came, when it spoke the Messages API.
    pub(super) messages: Option<MessagesRequest<'a>>,
}

impl Call<'_> {
    /// A timeout that fired because the request's own deadline (`router_settings.timeout`) was reached is
    /// not the deployment's fault: it becomes the gateway's 408, which neither counts against the
    /// deployment nor cools it down.
    ///
    /// It also bounds what the upstream controls: its `retry-after` is cut to `general_settings.max_retry_after`.
    pub(super) fn blame(&self, mut err: ApiError) -> ApiError {
        err.retry_after = err.retry_after.map(|s| s.min(self.max_retry_after_secs));
        let deadline_hit = self
            .deadline
            .is_some_and(|d| Instant::now() + Duration::from_millis(5) >= d);
        if err.kind != ErrorKind::Timeout || !deadline_hit {
            return err;
        }
        ApiError::new(
            ErrorKind::Timeout,
            actix_web::http::StatusCode::REQUEST_TIMEOUT,
            "the request ran out of time (router_settings.timeout) before a deployment answered",
        )
    }

    /// `base`, cut to what is left before the deadline.
    pub(super) fn timeout(&self, base: Duration) -> Duration {
        match self.deadline {
            Some(d) => base.min(d.saturating_duration_since(Instant::now())),
            None => base,
        }
    }
}

/// One upstream call to `dep`, through its provider's adapter. For a stream, the first chunk is read before
/// anything reaches the client, so that a stream failing at once is still retried; after that the stream is
/// the client's.
pub(super) async fn attempt(
    dep: &Arc<Deployment>,
    slot: InFlight,
    call: &Call<'_>,
    pending: &mut Pending,
) -> Result<Answer, ApiError> {
    let api_start = Instant::now();
    let base = if call.stream {
        dep.cfg.stream_timeout
    } else {
        dep.cfg.timeout
    };
    let upstream = UpstreamCall {
        endpoint: call.endpoint,
        view: call.view,
        stream: call.stream,
        provider: dep.cfg.provider,
        model: &dep.cfg.model,
        target: &dep.target,
        timeout: call.timeout(base),
        body_timeout: call.timeout(dep.cfg.timeout),
        mock_reply: dep.cfg.mock_response.as_deref(),
        mock_latency: dep.cfg.mock_latency,
        messages: call.messages,
    };
    let Sent { reply, remaining } = match dep.provider.send(&upstream).await {
        Ok(sent) => sent,
        Err(err) => {
            let err = call.blame(err);
            pending.attempt(dep, Err(&err), api_start.elapsed(), (None, None));
            return Err(err);
        }
    };
    let (stream, shadow, native) = match reply {
        Reply::Body(bytes) => {
            return finish_body(dep, slot, call, pending, api_start, remaining, bytes, None)
        }
        Reply::Native(bytes, openai) => {
            return finish_body(
                dep,
                slot,
                call,
                pending,
                api_start,
                remaining,
                openai,
                Some(bytes),
            )
        }
        Reply::Stream(frames) => (frames, None, false),
        Reply::NativeStream(frames, meter) => (frames, Some(meter), true),
    };
    let (first, stream) = match first_chunk(dep, call, &upstream, stream).await {
        Ok(read) => read,
        Err(err) => {
            let err = call.blame(err);
            pending.attempt(dep, Err(&err), api_start.elapsed(), remaining);
            return Err(err);
        }
    };
    let inner = futures_util::stream::once(std::future::ready(Ok(first))).chain(stream);
    let error_frame = if native {
        messages::error_event
    } else {
        openai_error_frame
    };
    let metered = Metered::new(
        inner,
        SseTap::new(!call.client_wants_usage),
        std::mem::replace(pending, Pending::placeholder(&pending.state.clone())),
        dep.clone(),
        call.body.clone(),
        api_start,
        remaining,
        slot,
        shadow,
        error_frame,
    );
    let mut resp = stream_response(dep, metered);
    if native {
        resp.extensions_mut().insert(Native);
    }
    Ok(Answer::Streaming(resp))
}

/// Marks an answer in the client's own dialect (passed through), which the handler sends as it is.
pub(super) struct Native;

/// A stream's first chunk with content, read before anything reaches the client (each read within the
/// deployment's `stream_timeout`), so that a stream that fails at once, or opens with an error event, is
/// retried like any failed call.
async fn first_chunk(
    dep: &Deployment,
    call: &Call<'_>,
    upstream: &UpstreamCall<'_>,
    mut frames: Frames,
) -> Result<(Bytes, Frames), ApiError> {
    let failure = |kind, message| ApiError::upstream_failure(dep.cfg.provider, kind, message);
    // One deadline for all reads: keep-alives (empty chunks) do not extend it.
    let until = Instant::now() + call.timeout(dep.cfg.stream_timeout);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let next = actix_rt::time::timeout(left, frames.next()).await;
        let chunk = match next {
            Ok(Some(Ok(chunk))) if chunk.is_empty() => continue,
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(e))) => {
                return Err(failure(
                    ErrorKind::APIConnectionError,
                    format!("upstream stream for `{}` broke: {e}", dep.cfg.model),
                ))
            }
            Ok(None) => {
                return Err(failure(
                    ErrorKind::APIConnectionError,
                    format!(
                        "upstream stream for `{}` ended before any data",
                        dep.cfg.model
                    ),
                ))
            }
            Err(_) => {
                return Err(failure(
                    ErrorKind::Timeout,
                    format!(
                        "upstream stream for `{}` sent nothing within {:?}",
                        dep.cfg.model, dep.cfg.stream_timeout
                    ),
                ))
            }
        };
        if let Some(data) = leading_error(&chunk) {
            return Err(dep.provider.stream_error(upstream, data.as_bytes()));
        }
        return Ok((chunk, frames));
    }
}

/// A complete answer: `openai` (the answer in the OpenAI shape) read for its usage, and `native` (the
/// answer in the client's own dialect), when there is one, sent instead.
#[allow(clippy::too_many_arguments)]
fn finish_body(
    dep: &Arc<Deployment>,
    slot: InFlight,
    call: &Call<'_>,
    pending: &mut Pending,
    api_start: Instant,
    remaining: (Option<f64>, Option<f64>),
    bytes: Bytes,
    native: Option<Bytes>,
) -> Result<Answer, ApiError> {
    let api_latency = api_start.elapsed();
    let usage = match response_usage(&bytes) {
        Ok(Some(u)) => u,
        Ok(None) => Usage::new(estimate_prompt_tokens(call.view), 0),
        Err(e) => {
            let err = ApiError::upstream_failure(
                dep.cfg.provider,
                ErrorKind::BadGatewayError,
                format!("upstream `{}` answered malformed JSON: {e}", dep.cfg.model),
            );
            pending.attempt(dep, Err(&err), api_latency, remaining);
            return Err(err);
        }
    };
    pending.attempt(dep, Ok(()), api_latency, remaining);
    drop(slot);
    let outcome = success(dep, usage, pending.started.elapsed(), api_latency, None);
    let mut resp = json_response(dep, native.clone().unwrap_or(bytes));
    if native.is_some() {
        resp.extensions_mut().insert(Native);
    }
    Ok(Answer::Done(resp, outcome))
}

pub(super) const MODEL_ID: header::HeaderName = header::HeaderName::from_static("x-llm-model-id");

pub(super) const MODEL_GROUP: header::HeaderName =
    header::HeaderName::from_static("x-llm-model-group");

pub(super) fn json_response(dep: &Deployment, body: Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        ))
        .insert_header((MODEL_ID, dep.headers.0.clone()))
        .insert_header((MODEL_GROUP, dep.headers.1.clone()))
        .body(body)
}

pub(super) fn stream_response<S>(dep: &Deployment, body: Metered<S>) -> HttpResponse
where
    S: Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin + 'static,
{
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((MODEL_ID, dep.headers.0.clone()))
        .insert_header((MODEL_GROUP, dep.headers.1.clone()))
        .streaming(body)
}
