//! The provider adapter: what the request path asks of a provider, whichever it is. A provider turns an
//! OpenAI-shaped attempt into its own request (URL, headers, body) and its answer, stream and errors back
//! into the OpenAI shape, with usage. The request path calls [`Provider::send`] and never asks which
//! provider it talks to. A new provider is one file implementing [`Provider`] plus its line in
//! `registry.rs`.
//!
//! Every method has the OpenAI-compatible behaviour as its default, so an OpenAI-compatible provider
//! implements nothing; `send` does the HTTP exchange ([`exchange`], over the shared client of `http.rs`),
//! which the built-in mock replaces with an in-process answer.

use super::http::{client, MAX_UPSTREAM_BODY_BYTES};
use super::target::Target;
use super::wire::parse_retry_after;
use super::wire::{parse_remaining, RequestView};
use super::{Endpoint, ProviderKind};
use crate::error::{ApiError, ErrorKind};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use awc::error::{PayloadError, SendRequestError};
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::LocalBoxStream;
use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// One attempt, as a provider sees it.
pub struct UpstreamCall<'a> {
    pub endpoint: Endpoint,
    pub view: &'a RequestView<'a>,
    pub stream: bool,
    pub provider: ProviderKind,
    /// The model the upstream knows (the part after `provider/`).
    pub model: &'a str,
    pub target: &'a Target,
    /// How long the upstream may take to answer (to send its headers, for a stream).
    pub timeout: Duration,
    /// How long reading a complete (not streamed) answer may take.
    pub body_timeout: Duration,
    /// The deployment's `mock_response` and `mock_latency` (the built-in mock only).
    pub mock_reply: Option<&'a str>,
    pub mock_latency: Duration,
    /// The client's request as it came, when it spoke the Messages API (`/v1/messages`).
    pub messages: Option<MessagesRequest<'a>>,
}

/// A request in Anthropic's Messages API as the client sent it. A provider that speaks the Messages API
/// ([`Provider::native_body`]) sends it as it came (only `model` replaced) and its answer goes back as it
/// came: nothing the translation to a chat completion cannot carry (`cache_control`, `thinking`, citations,
/// new block types) is lost.
#[derive(Clone, Copy)]
pub struct MessagesRequest<'a> {
    pub body: &'a [u8],
    /// The client's `anthropic-beta` header (features it opted into), passed on.
    pub beta: Option<&'a HeaderValue>,
}

/// Remaining requests and tokens from the two headers a provider names them in.
pub fn remaining_in(
    headers: &HeaderMap,
    requests: &str,
    tokens: &str,
) -> (Option<f64>, Option<f64>) {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_remaining)
    };
    (get(requests), get(tokens))
}

/// OpenAI SSE frames, as the client will get them.
pub type Frames = LocalBoxStream<'static, Result<Bytes, awc::error::PayloadError>>;

/// A 2xx answer: in the OpenAI shape, or in the client's own dialect, passed through.
pub enum Reply {
    /// A complete body.
    Body(Bytes),
    /// A stream of OpenAI SSE frames (the gateway asked for the final usage chunk).
    Stream(Frames),
    /// The answer in the client's own dialect (a native Messages API answer), and the same answer in the
    /// OpenAI shape, from which the request is accounted.
    Native(Bytes, Bytes),
    /// A stream in the client's own dialect, passed through untouched; the translator reads a copy of it
    /// into OpenAI frames, from which the request is accounted.
    NativeStream(Frames, Box<dyn Translate>),
}

pub struct Sent {
    pub reply: Reply,
    /// The upstream's remaining requests and tokens, from its rate-limit headers.
    pub remaining: (Option<f64>, Option<f64>),
}

/// Turns a provider's stream into OpenAI SSE frames, a chunk at a time.
pub trait Translate {
    /// Bytes of the provider's stream in; complete OpenAI frames out (possibly none yet).
    fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, String>;
    /// The provider's stream ended: whatever is still to send.
    fn finish(&mut self) -> Bytes;
    /// The provider's stream broke (a transport error follows): what is still to send before it, such as
    /// the usage of what was generated, so the request is charged for it.
    fn interrupted(&mut self) -> Bytes {
        Bytes::new()
    }
}

pub trait Provider: Sync {
    /// Sends one attempt and brings its answer back in the OpenAI shape. Non-2xx answers and transport
    /// failures are errors carrying what they mean for routing.
    fn send<'a>(
        &'a self,
        call: &'a UpstreamCall<'a>,
    ) -> LocalBoxFuture<'a, Result<Sent, ApiError>> {
        Box::pin(exchange(self, call))
    }

    /// Whether deployments of this provider, called at `target`, have `endpoint`. Routing passes over those
    /// that do not.
    fn serves(&self, endpoint: Endpoint, target: &Target) -> bool {
        target.url(endpoint).is_some()
    }

    /// The body to send for a request that came in the Messages API, as it came, if this provider speaks it
    /// (its answers, errors and streams are then the Messages API's too, and `response` / `translator`
    /// read them for the accounting). `None`: the request is sent translated, as a chat completion.
    fn native_body(&self, _call: &UpstreamCall<'_>) -> Option<Result<Vec<u8>, ApiError>> {
        None
    }

    /// The body to send for `call`.
    fn body(&self, call: &UpstreamCall<'_>) -> Result<Vec<u8>, ApiError> {
        // The gateway always asks a stream for its final usage chunk: it is what the request is charged.
        Ok(call.view.upstream_body(call.model, call.stream))
    }

    /// The upstream's remaining requests and tokens, from its rate-limit headers.
    fn remaining(&self, headers: &HeaderMap) -> (Option<f64>, Option<f64>) {
        remaining_in(
            headers,
            "x-ratelimit-remaining-requests",
            "x-ratelimit-remaining-tokens",
        )
    }

    /// A non-2xx answer as an error in the OpenAI shape, with its kind (context window, content policy, ...).
    fn error(&self, call: &UpstreamCall<'_>, status: u16, body: &[u8]) -> ApiError {
        super::openai_error::error(call.provider, status, body)
    }

    /// An error event that opened a 2xx stream (its `data`, with an `error` object), as an error: the
    /// call failed before anything reached the client, and is retried or falls back like any other.
    fn stream_error(&self, call: &UpstreamCall<'_>, data: &[u8]) -> ApiError {
        self.error(call, 500, data)
    }

    /// A complete 2xx body in the OpenAI shape.
    fn response(&self, _call: &UpstreamCall<'_>, body: Bytes) -> Result<Bytes, ApiError> {
        Ok(body)
    }

    /// A translator for a stream that is not OpenAI SSE; `None` passes the frames through.
    fn translator(&self, _call: &UpstreamCall<'_>) -> Option<Box<dyn Translate>> {
        None
    }
}

/// Sends `call` to its upstream the way `provider` says, and reads the answer back in the OpenAI shape.
pub async fn exchange<P: Provider + ?Sized>(
    provider: &P,
    call: &UpstreamCall<'_>,
) -> Result<Sent, ApiError> {
    let Some(url) = call.target.url(call.endpoint) else {
        return Err(ApiError::bad_request(format!(
            "`{}` deployments do not serve {}",
            call.provider.as_str(),
            call.endpoint.path()
        )));
    };
    let native = match provider.native_body(call) {
        Some(body) => Some(body?),
        None => None,
    };
    let is_native = native.is_some();
    let body = match native {
        Some(body) => body,
        None => provider.body(call)?,
    };
    let mut req = client().post(url).timeout(call.timeout).insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    for (name, value) in &call.target.headers {
        req = req.insert_header((name.clone(), value.clone()));
    }
    if call.stream {
        req = req.insert_header((
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        ));
    }
    if let (true, Some(beta)) = (is_native, call.messages.and_then(|m| m.beta)) {
        req = req.insert_header(("anthropic-beta", beta.clone()));
    }
    let mut resp = req
        .send_body(body)
        .await
        .map_err(|e| transport_error(call, &e))?;
    let remaining = provider.remaining(resp.headers());
    let status = resp.status();
    if !status.is_success() {
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = match actix_rt::time::timeout(call.timeout, resp.body().limit(1024 * 1024)).await
        {
            Ok(Ok(b)) => b,
            _ => Default::default(),
        };
        let mut err = provider.error(call, status.as_u16(), &body);
        if err.retry_after.is_none() {
            err.retry_after = retry_after.map(|s| s.ceil() as u64);
        }
        return Err(err);
    }
    if call.stream {
        if is_native {
            if let Some(meter) = provider.translator(call) {
                return Ok(Sent {
                    reply: Reply::NativeStream(Box::pin(resp), meter),
                    remaining,
                });
            }
        }
        let frames: Frames = match provider.translator(call) {
            Some(t) => Box::pin(Translated::new(resp, t, true)),
            None => Box::pin(resp),
        };
        return Ok(Sent {
            reply: Reply::Stream(frames),
            remaining,
        });
    }
    let bytes = read_body(call, &mut resp).await?;
    let reply = if is_native {
        Reply::Native(bytes.clone(), provider.response(call, bytes)?)
    } else {
        Reply::Body(provider.response(call, bytes)?)
    };
    Ok(Sent { reply, remaining })
}

fn transport_error(call: &UpstreamCall<'_>, e: &SendRequestError) -> ApiError {
    match e {
        SendRequestError::Timeout => ApiError::upstream_failure(
            call.provider,
            ErrorKind::Timeout,
            format!(
                "upstream `{}` did not answer within {:?}",
                call.model, call.timeout
            ),
        ),
        other => ApiError::upstream_failure(
            call.provider,
            ErrorKind::APIConnectionError,
            format!("cannot reach upstream for `{}`: {other}", call.model),
        ),
    }
}

/// Reads a whole 2xx body, within the call's body timeout.
async fn read_body<S>(
    call: &UpstreamCall<'_>,
    resp: &mut awc::ClientResponse<S>,
) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    let timeout = call.body_timeout;
    match actix_rt::time::timeout(timeout, resp.body().limit(MAX_UPSTREAM_BODY_BYTES)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(ApiError::upstream_failure(
            call.provider,
            ErrorKind::APIConnectionError,
            format!("upstream body for `{}` could not be read: {e}", call.model),
        )),
        Err(_) => Err(ApiError::upstream_failure(
            call.provider,
            ErrorKind::Timeout,
            format!(
                "upstream `{}` did not finish its answer within {timeout:?}",
                call.model
            ),
        )),
    }
}

/// `inner` made into another stream format by `translate` (a provider's stream into OpenAI frames, or
/// OpenAI frames into the Messages API's events).
pub fn translated<S>(inner: S, translate: Box<dyn Translate>) -> Frames
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin + 'static,
{
    Box::pin(Translated::new(inner, translate, false))
}

/// A stream made into another format by its [`Translate`].
struct Translated<S> {
    inner: S,
    translate: Box<dyn Translate>,
    done: bool,
    /// An upstream error held back one item, after what the translator still had to say (the usage of a
    /// cut stream, so it is charged).
    error: Option<PayloadError>,
    /// Empty chunks come out for events that translate to nothing (an upstream's stream, read by the
    /// metered stream, which drops them); never for what goes straight to a client.
    keep_alive: bool,
}

impl<S> Translated<S> {
    fn new(inner: S, translate: Box<dyn Translate>, keep_alive: bool) -> Self {
        Translated {
            inner,
            translate,
            done: false,
            error: None,
            keep_alive,
        }
    }
}

impl<S> Stream for Translated<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(e) = self.error.take() {
                return Poll::Ready(Some(Err(e)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    let rest = self.translate.interrupted();
                    if rest.is_empty() {
                        return Poll::Ready(Some(Err(e)));
                    }
                    self.error = Some(e);
                    return Poll::Ready(Some(Ok(rest)));
                }
                // An upstream event that translates to nothing (a `ping`) still comes out, empty, when
                // `keep_alive`: it shows the upstream is alive (the metered stream resets its idle timer).
                Poll::Ready(Some(Ok(chunk))) => match self.translate.feed(&chunk) {
                    Ok(out) if out.is_empty() && !self.keep_alive => continue,
                    Ok(out) => return Poll::Ready(Some(Ok(out))),
                    Err(e) => {
                        self.done = true;
                        return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::other(e)))));
                    }
                },
                Poll::Ready(None) => {
                    self.done = true;
                    let rest = self.translate.finish();
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(rest)));
                }
            }
        }
    }
}
