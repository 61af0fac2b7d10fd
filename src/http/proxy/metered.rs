//! A stream passed through to the client chunk by chunk while its SSE frames are read for usage, so that
//! the request's accounting is finished when the stream ends, however it ends.

use super::pending::{cost_of, success, Pending};
use crate::deployment::live::InFlight;
use crate::deployment::Deployment;
use crate::error::{ApiError, ErrorKind};
use crate::providers::adapter::Translate;
use crate::providers::wire::{
    estimate_prompt_tokens, find_frame_end, RequestView, SseTap, TapOut, Usage,
};
use actix::clock::{sleep, Instant, Sleep};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// A streamed body passed through frame by frame. It watches the frames for the first token and the usage
/// block, drops the usage frame the client did not ask for, stops a stalled upstream after the deployment's
/// `stream_timeout` of silence, and sends the metrics event when the stream ends (or the client leaves).
pub(super) struct Metered<S> {
    inner: S,
    tap: SseTap,
    pending: Option<Pending>,
    dep: Arc<Deployment>,
    request: Bytes,
    api_start: Instant,
    first_token: Option<Instant>,
    remaining: (Option<f64>, Option<f64>),
    idle: Pin<Box<Sleep>>,
    /// `general_settings.max_stream_duration` from the stream's start: a stream that never ends is ended.
    ends: Pin<Box<Sleep>>,
    max_duration: Duration,
    done: bool,
    /// A stream in the client's own dialect (a native Messages API stream): passed through untouched, while
    /// this translator reads a copy of it into OpenAI frames for the tap.
    shadow: Option<Box<dyn Translate>>,
    /// The shadow could not read the stream (why).
    unreadable: Option<String>,
    /// Native bytes held back until their event is complete: the client gets whole events only, so an
    /// error event the gateway adds never lands inside a half-sent one.
    held: BytesMut,
    /// An error as the client's dialect frames it.
    error_frame: fn(&ApiError) -> Bytes,
    /// The attempt's in-flight slot on its deployment, held until the stream ends.
    _slot: InFlight,
}

/// An error as an OpenAI SSE frame.
pub(super) fn openai_error_frame(err: &ApiError) -> Bytes {
    Bytes::from(format!("data: {}\n\n", err.body()))
}

impl<S> Metered<S> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        inner: S,
        tap: SseTap,
        pending: Pending,
        dep: Arc<Deployment>,
        request: Bytes,
        api_start: Instant,
        remaining: (Option<f64>, Option<f64>),
        slot: InFlight,
        shadow: Option<Box<dyn Translate>>,
        error_frame: fn(&ApiError) -> Bytes,
    ) -> Self {
        let idle = Box::pin(sleep(dep.cfg.stream_timeout));
        let max_duration = pending.state.config.general.max_stream_duration;
        let ends = Box::pin(sleep(max_duration));
        Metered {
            inner,
            tap,
            pending: Some(pending),
            dep,
            request,
            api_start,
            first_token: None,
            remaining,
            idle,
            ends,
            max_duration,
            done: false,
            shadow,
            unreadable: None,
            held: BytesMut::new(),
            error_frame,
            _slot: slot,
        }
    }

    /// Takes upstream bytes through the tap: OpenAI frames directly, a native stream through its shadow
    /// (the client gets the bytes as they came).
    fn read(&mut self, chunk: Bytes) -> TapOut {
        let Some(shadow) = self.shadow.as_mut() else {
            return self.tap.feed(&chunk);
        };
        let translated = shadow.feed(&chunk);
        self.held.extend_from_slice(&chunk);
        let mut whole = 0;
        while let Some((len, sep)) = find_frame_end(&self.held, whole) {
            whole = len + sep;
            if whole >= self.held.len() {
                break;
            }
        }
        let forward = self.held.split_to(whole).freeze();
        match translated {
            Ok(openai) => {
                let mut out = self.tap.feed(&openai);
                out.forward = forward;
                out
            }
            Err(e) => {
                self.unreadable = Some(e);
                TapOut {
                    forward,
                    first_token: false,
                }
            }
        }
    }

    /// A native stream stops before its end (cut, stalled, too long, or the client left): what the
    /// shadow knows of it (the input from `message_start`, the output so far) reaches the tap, so the
    /// request is charged for it.
    fn interrupt_shadow(&mut self) {
        if let Some(shadow) = self.shadow.as_mut() {
            let rest = shadow.interrupted();
            self.tap.feed(&rest);
        }
    }

    /// The upstream's stream ended: what is left to forward.
    fn end(&mut self) -> Bytes {
        if let Some(shadow) = self.shadow.as_mut() {
            let rest = shadow.finish();
            self.tap.feed(&rest);
            self.tap.finish();
            return std::mem::take(&mut self.held).freeze();
        }
        self.tap.finish()
    }

    fn usage(&self) -> Usage {
        self.tap.usage.unwrap_or_else(|| {
            let prompt = RequestView::parse(&self.request)
                .map(|v| estimate_prompt_tokens(&v))
                .unwrap_or(0);
            Usage::new(prompt, self.tap.content_chars.div_ceil(4))
        })
    }

    fn succeed(&mut self) {
        if let Some(mut p) = self.pending.take() {
            let api = self.api_start.elapsed();
            p.attempt(&self.dep, Ok(()), api, self.remaining);
            let ttft = self.first_token.map(|t| t.duration_since(self.api_start));
            let outcome = success(&self.dep, self.usage(), p.started.elapsed(), api, ttft);
            p.send(outcome);
        }
    }

    pub(super) fn fail(&mut self, err: &ApiError) -> Bytes {
        self.interrupt_shadow();
        let partial = self.partial();
        if let Some(mut p) = self.pending.take() {
            tracing::warn!(class = %err.class(), "stream failed: {}", err.message);
            p.attempt(
                &self.dep,
                Err(err),
                self.api_start.elapsed(),
                self.remaining,
            );
            p.partial = partial;
            p.fail(err);
        }
        (self.error_frame)(err)
    }

    /// What a stream that did not finish generated, to be charged: nothing if no text came through.
    fn partial(&self) -> Option<(Usage, f64)> {
        (self.tap.saw_token || self.tap.usage.is_some()).then(|| {
            let usage = self.usage();
            (usage, cost_of(&self.dep, &usage))
        })
    }
}

impl<S> Stream for Metered<S>
where
    S: Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if this.ends.as_mut().poll(cx).is_ready() {
                this.done = true;
                // The gateway's own limit, not the upstream's failure: it does not count against the
                // deployment (no provider on the error).
                let err = ApiError::new(
                    ErrorKind::Timeout,
                    actix_web::http::StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "upstream stream for `{}` ran longer than {:?} (general_settings.max_stream_duration)",
                        this.dep.cfg.model,
                        this.max_duration
                    ),
                );
                return Poll::Ready(Some(Ok(this.fail(&err))));
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let deadline = Instant::now() + this.dep.cfg.stream_timeout;
                    this.idle.as_mut().reset(deadline);
                    let out = this.read(chunk);
                    if this.tap.oversized || this.unreadable.is_some() {
                        this.done = true;
                        let why = this.unreadable.take().unwrap_or_else(|| {
                            format!(
                                "sent a frame larger than {} bytes",
                                crate::providers::wire::MAX_SSE_FRAME_BYTES
                            )
                        });
                        let err = ApiError::upstream_failure(
                            this.dep.cfg.provider,
                            ErrorKind::APIError,
                            format!("upstream stream for `{}`: {why}", this.dep.cfg.model),
                        );
                        let mut bytes = BytesMut::from(&out.forward[..]);
                        bytes.extend_from_slice(&this.fail(&err));
                        return Poll::Ready(Some(Ok(bytes.freeze())));
                    }
                    if out.first_token {
                        this.first_token = Some(Instant::now());
                    }
                    if !out.forward.is_empty() {
                        return Poll::Ready(Some(Ok(out.forward)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    let err = ApiError::upstream_failure(
                        this.dep.cfg.provider,
                        ErrorKind::APIConnectionError,
                        format!("upstream stream for `{}` broke: {e}", this.dep.cfg.model),
                    );
                    return Poll::Ready(Some(Ok(this.fail(&err))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    // An error event of the upstream's own has reached the client already.
                    let forwarded_error = this.shadow.is_none() || this.tap.saw_error;
                    let rest = this.end();
                    if this.tap.saw_done || (!this.tap.saw_error && this.tap.usage.is_some()) {
                        this.succeed();
                        return Poll::Ready((!rest.is_empty()).then_some(Ok(rest)));
                    }
                    let (kind, what) = if this.tap.saw_error {
                        (ErrorKind::APIError, "sent an error event")
                    } else {
                        (ErrorKind::APIConnectionError, "ended before `data: [DONE]`")
                    };
                    let err = ApiError::upstream_failure(
                        this.dep.cfg.provider,
                        kind,
                        format!("upstream stream for `{}` {what}", this.dep.cfg.model),
                    );
                    let mut out = BytesMut::from(&rest[..]);
                    // An error frame that came through already reached the client (a native stream's
                    // shadow frames never do: its cut is told in the client's dialect).
                    if !(forwarded_error && this.tap.saw_error) {
                        out.extend_from_slice(&this.fail(&err));
                    } else {
                        this.fail(&err);
                    }
                    return Poll::Ready((!out.is_empty()).then(|| Ok(out.freeze())));
                }
                Poll::Pending => {
                    if this.idle.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        let err = ApiError::upstream_failure(
                            this.dep.cfg.provider,
                            ErrorKind::Timeout,
                            format!(
                                "upstream stream for `{}` was silent for {:?} (stream_timeout)",
                                this.dep.cfg.model, this.dep.cfg.stream_timeout
                            ),
                        );
                        return Poll::Ready(Some(Ok(this.fail(&err))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<S> Drop for Metered<S> {
    /// The client went away before the stream ended: the request counts as failed (status 499, as nginx
    /// logs it), and what was generated so far is still attributed.
    fn drop(&mut self) {
        if let Some(mut p) = self.pending.take() {
            let err = ApiError::new(
                ErrorKind::APIConnectionError,
                actix_web::http::StatusCode::from_u16(499)
                    .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
                "client closed the stream",
            );
            self.interrupt_shadow();
            p.attempt(&self.dep, Ok(()), self.api_start.elapsed(), self.remaining);
            p.partial = self.partial();
            p.fail(&err);
        }
    }
}
