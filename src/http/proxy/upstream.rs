//! One call to one deployment: the upstream over HTTP (or the built-in mock), the answer read or passed
//! through as a stream, the attempt recorded.

use super::metered::Metered;
use super::pending::{success, Answer, Pending};
use crate::config::RoutingStrategy;
use crate::deployment::live::InFlight;
use crate::deployment::Deployment;
use crate::error::{ApiError, ErrorKind};
use crate::providers::wire::{
    estimate_prompt_tokens, response_usage, InputShape, RequestView, SseTap, Usage,
};
use crate::providers::{mock, openai, Endpoint};
use actix::clock::{sleep, Instant};
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

/// One upstream call to `dep`. For a stream, the first chunk is read before anything reaches the client,
/// so that a stream failing at once is still retried; after that the stream is the client's.
pub(super) async fn attempt(
    dep: &Arc<Deployment>,
    slot: InFlight,
    call: &Call<'_>,
    pending: &mut Pending,
) -> Result<Answer, ApiError> {
    let api_start = Instant::now();
    let Some(target) = &dep.target else {
        return mock_answer(call, dep.clone(), api_start, slot, pending).await;
    };
    let upstream_body = call.view.upstream_body(&dep.cfg.model, call.stream);
    let base = if call.stream {
        dep.cfg.stream_timeout
    } else {
        dep.cfg.timeout
    };
    let sent = openai::send(
        &dep.cfg,
        target,
        call.endpoint,
        upstream_body,
        call.stream,
        call.timeout(base),
    )
    .await;
    let openai::UpstreamResponse {
        mut response,
        remaining_requests,
        remaining_tokens,
    } = match sent {
        Ok(up) => up,
        Err(err) => {
            let err = call.blame(err);
            pending.attempt(dep, Err(&err), api_start.elapsed(), (None, None));
            return Err(err);
        }
    };
    let remaining = (remaining_requests, remaining_tokens);
    if call.stream {
        let first =
            match actix_rt::time::timeout(call.timeout(dep.cfg.stream_timeout), response.next())
                .await
            {
                Ok(Some(Ok(chunk))) => Ok(chunk),
                Ok(Some(Err(e))) => Err((
                    ErrorKind::APIConnectionError,
                    format!("upstream stream for `{}` broke: {e}", dep.cfg.model),
                )),
                Ok(None) => Err((
                    ErrorKind::APIConnectionError,
                    format!(
                        "upstream stream for `{}` ended before any data",
                        dep.cfg.model
                    ),
                )),
                Err(_) => Err((
                    ErrorKind::Timeout,
                    format!(
                        "upstream stream for `{}` sent nothing within {:?}",
                        dep.cfg.model, dep.cfg.stream_timeout
                    ),
                )),
            };
        let first = match first {
            Ok(chunk) => chunk,
            Err((kind, message)) => {
                let err = call.blame(ApiError::upstream_failure(dep.cfg.provider, kind, message));
                pending.attempt(dep, Err(&err), api_start.elapsed(), remaining);
                return Err(err);
            }
        };
        let inner = futures_util::stream::once(std::future::ready(Ok(first))).chain(response);
        let metered = Metered::new(
            inner,
            SseTap::new(!call.client_wants_usage),
            std::mem::replace(pending, Pending::placeholder(&pending.state.clone())),
            dep.clone(),
            call.body.clone(),
            api_start,
            remaining,
            slot,
        );
        return Ok(Answer::Streaming(stream_response(dep, metered)));
    }
    let bytes =
        match openai::read_body(&dep.cfg, &mut response, call.timeout(dep.cfg.timeout)).await {
            Ok(b) => b,
            Err(err) => {
                let err = call.blame(err);
                pending.attempt(dep, Err(&err), api_start.elapsed(), remaining);
                return Err(err);
            }
        };
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
    let resp = json_response(dep, bytes);
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

pub(super) async fn mock_answer(
    call: &Call<'_>,
    dep: Arc<Deployment>,
    api_start: Instant,
    slot: InFlight,
    pending: &mut Pending,
) -> Result<Answer, ApiError> {
    let (endpoint, view, stream) = (call.endpoint, call.view, call.stream);
    let reply = match view.mock_response()? {
        Some(r) => r.into_owned(),
        None => dep
            .cfg
            .mock_response
            .clone()
            .unwrap_or_else(|| mock::default_reply(&dep.cfg.model)),
    };
    let prompt_tokens = estimate_prompt_tokens(view);
    if !dep.cfg.mock_latency.is_zero() {
        sleep(dep.cfg.mock_latency).await;
    }
    if stream {
        let frames = mock::stream_frames(endpoint, &dep.cfg.model, &reply, prompt_tokens, true);
        let chunks = futures_util::stream::iter(
            frames
                .into_iter()
                .map(|f| Ok::<Bytes, awc::error::PayloadError>(Bytes::from(f))),
        );
        let metered = Metered::new(
            chunks,
            SseTap::new(!call.client_wants_usage),
            std::mem::replace(pending, Pending::placeholder(&pending.state.clone())),
            dep.clone(),
            call.body.clone(),
            api_start,
            (None, None),
            slot,
        );
        return Ok(Answer::Streaming(stream_response(&dep, metered)));
    }
    let inputs = view
        .get("input")
        .and_then(|r| InputShape::of(r.get()))
        .map_or(1, |s| s.inputs.max(1));
    let dims = view
        .get("dimensions")
        .and_then(|r| r.get().parse::<usize>().ok())
        .unwrap_or(mock::DEFAULT_EMBEDDING_DIMENSIONS)
        .clamp(1, mock::MAX_EMBEDDING_DIMENSIONS);
    if endpoint == Endpoint::Embeddings {
        if inputs > mock::MAX_EMBEDDING_INPUTS {
            return Err(ApiError::bad_request(format!(
                "`input` holds {inputs} inputs; at most {} are allowed per request",
                mock::MAX_EMBEDDING_INPUTS
            ))
            .with_param("input"));
        }
        if inputs * dims > mock::MAX_EMBEDDING_VALUES {
            return Err(ApiError::bad_request(format!(
                "{inputs} inputs of {dims} dimensions is more than the mock answers at once ({} numbers); send fewer inputs or fewer `dimensions`",
                mock::MAX_EMBEDDING_VALUES
            ))
            .with_param("input"));
        }
    }
    let (bytes, usage) = mock::response_body(
        endpoint,
        &dep.cfg.model,
        &reply,
        prompt_tokens,
        dims,
        inputs,
    );
    let api_latency = api_start.elapsed();
    pending.attempt(&dep, Ok(()), api_latency, (None, None));
    drop(slot);
    let outcome = success(&dep, usage, pending.started.elapsed(), api_latency, None);
    Ok(Answer::Done(
        json_response(&dep, Bytes::from(bytes)),
        outcome,
    ))
}
