//! OpenAI-compatible upstreams (`openai/`, `hosted_vllm/`, `openai_compatible/`) over awc.
//!
//! One awc client per worker thread (awc is `!Send`), with pooled keep-alive connections and `TCP_NODELAY` on
//! every upstream socket: without it a kept-alive request waits on Nagle's algorithm.

use super::target::Target;
use super::wire::{parse_remaining, parse_retry_after};
use super::Endpoint;
use crate::config::DeploymentConfig;
use crate::error::{ApiError, ErrorKind};
use actix_rt::net::TcpStream;
use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection, ConnectorService};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Uri;
use awc::error::SendRequestError;
use futures_util::future::LocalBoxFuture;
use std::time::Duration;

/// Connections kept per worker, across all upstream hosts.
const POOL_LIMIT: usize = 1024;
/// How long an idle upstream connection stays in the pool.
const POOL_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// TCP connect (and TLS handshake) limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest upstream body read into memory (non-streaming responses and error bodies).
pub const MAX_UPSTREAM_BODY_BYTES: usize = 64 * 1024 * 1024;
const MAX_ERROR_MESSAGE_CHARS: usize = 2000;

/// Wraps the TCP connector to set `TCP_NODELAY` on each new upstream socket.
#[derive(Clone)]
struct NoDelay(ConnectorService);

impl Service<ConnectInfo<Uri>> for NoDelay {
    type Response = Connection<Uri, TcpStream>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_service::always_ready!();

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let conn = fut.await?;
            // A socket option failure only costs latency; the connection is still usable.
            let _ = conn.io_ref().set_nodelay(true);
            Ok(conn)
        })
    }
}

fn build_client() -> awc::Client {
    let connector = awc::Connector::new()
        .connector(NoDelay(ConnectorService::default()))
        .limit(POOL_LIMIT)
        .conn_keep_alive(POOL_KEEP_ALIVE)
        .timeout(CONNECT_TIMEOUT);
    // Redirects are not followed: an upstream (or whoever controls its DNS) must not be able to send the
    // request, with its body, to another host; a 3xx answer is an upstream error like any other.
    awc::Client::builder()
        .connector(connector)
        .disable_timeout()
        .disable_redirects()
        .finish()
}

thread_local! {
    static CLIENT: awc::Client = build_client();
}

/// This worker's upstream client (a cheap handle to the shared pool).
pub fn client() -> awc::Client {
    CLIENT.with(|c| c.clone())
}

/// An upstream answer whose status was 2xx; the body is still unread.
pub struct UpstreamResponse {
    pub response: awc::ClientResponse,
    pub remaining_requests: Option<f64>,
    pub remaining_tokens: Option<f64>,
}

const REMAINING_REQUESTS: header::HeaderName =
    header::HeaderName::from_static("x-ratelimit-remaining-requests");
const REMAINING_TOKENS: header::HeaderName =
    header::HeaderName::from_static("x-ratelimit-remaining-tokens");

fn header_f64(
    resp: &awc::ClientResponse,
    name: header::HeaderName,
    parse: fn(&str) -> Option<f64>,
) -> Option<f64> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(parse)
}

/// Sends one attempt to `dep`. Non-2xx answers become an [`ApiError`] carrying the upstream status and
/// message; transport failures become `APIConnectionError` or `Timeout`.
pub async fn send(
    dep: &DeploymentConfig,
    target: &Target,
    endpoint: Endpoint,
    body: Vec<u8>,
    stream: bool,
    timeout: Duration,
) -> Result<UpstreamResponse, ApiError> {
    let mut req = client()
        .post(target.url(endpoint))
        .timeout(timeout)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
    if let Some(auth) = &target.auth {
        req = req.insert_header((header::AUTHORIZATION, auth.clone()));
    }
    if stream {
        req = req.insert_header((
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        ));
    }
    let mut resp = req
        .send_body(body)
        .await
        .map_err(|e| transport_error(dep, &e, timeout))?;
    let remaining_requests = header_f64(&resp, REMAINING_REQUESTS, parse_remaining);
    let remaining_tokens = header_f64(&resp, REMAINING_TOKENS, parse_remaining);
    let status = resp.status();
    if status.is_success() {
        return Ok(UpstreamResponse {
            response: resp,
            remaining_requests,
            remaining_tokens,
        });
    }
    let retry_after = header_f64(&resp, header::RETRY_AFTER, parse_retry_after);
    let body = match actix_rt::time::timeout(timeout, resp.body().limit(1024 * 1024)).await {
        Ok(Ok(b)) => b,
        _ => Default::default(),
    };
    let mut err = ApiError::upstream(
        dep.provider,
        status.as_u16(),
        error_message(&body, status.as_u16()),
    );
    err.retry_after = retry_after.map(|s| s.ceil() as u64);
    if let Some(kind) = refined_kind(status.as_u16(), &body, &err.message) {
        err.kind = kind;
    }
    Err(err)
}

/// OpenAI-compatible servers answer 400 both for a prompt too long for the model and for a refused prompt;
/// routing sends each to its own fallbacks, so they are told apart by the error's `code` or message, as
/// LiteLLM does.
pub fn refined_kind(status: u16, body: &[u8], message: &str) -> Option<ErrorKind> {
    if status != 400 {
        return None;
    }
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let m = message.to_ascii_lowercase();
    if code == "context_length_exceeded"
        || m.contains("context length")
        || m.contains("context_length_exceeded")
        || m.contains("context window")
        || m.contains("too many tokens")
        || m.contains("prompt is too long")
    {
        return Some(ErrorKind::ContextWindowExceededError);
    }
    if code == "content_policy_violation"
        || code == "content_filter"
        || m.contains("content policy")
        || m.contains("content management policy")
        || m.contains("content_policy_violation")
        || m.contains("content_filter")
    {
        return Some(ErrorKind::ContentPolicyViolationError);
    }
    None
}

/// The message of an upstream error body: OpenAI's `error.message`, else the text itself (shortened).
pub fn error_message(body: &[u8], status: u16) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Inner {
        Object { message: String },
        Text(String),
    }
    let msg = match serde_json::from_slice::<Body>(body) {
        Ok(Body {
            error: Inner::Object { message },
        })
        | Ok(Body {
            error: Inner::Text(message),
        }) => message,
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let msg: String = msg.chars().take(MAX_ERROR_MESSAGE_CHARS).collect();
    if msg.is_empty() {
        format!("upstream answered HTTP {status} with no message")
    } else {
        msg
    }
}

fn transport_error(dep: &DeploymentConfig, e: &SendRequestError, timeout: Duration) -> ApiError {
    match e {
        SendRequestError::Timeout => ApiError::upstream_failure(
            dep.provider,
            ErrorKind::Timeout,
            format!("upstream `{}` did not answer within {timeout:?}", dep.model),
        ),
        other => ApiError::upstream_failure(
            dep.provider,
            ErrorKind::APIConnectionError,
            format!("cannot reach upstream for `{}`: {other}", dep.model),
        ),
    }
}

/// Reads a whole 2xx body, within the deployment's timeout.
pub async fn read_body(
    dep: &DeploymentConfig,
    resp: &mut awc::ClientResponse,
    timeout: Duration,
) -> Result<bytes::Bytes, ApiError> {
    match actix_rt::time::timeout(timeout, resp.body().limit(MAX_UPSTREAM_BODY_BYTES)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(ApiError::upstream_failure(
            dep.provider,
            ErrorKind::APIConnectionError,
            format!("upstream body for `{}` could not be read: {e}", dep.model),
        )),
        Err(_) => Err(ApiError::upstream_failure(
            dep.provider,
            ErrorKind::Timeout,
            format!(
                "upstream `{}` did not finish its answer within {timeout:?}",
                dep.model
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"error":{"message":"Rate limited","type":"x"}}"#, 429),
            "Rate limited"
        );
        assert_eq!(error_message(br#"{"error":"plain"}"#, 500), "plain");
        assert_eq!(
            error_message(b"<html>bad gateway</html>", 502),
            "<html>bad gateway</html>"
        );
        assert_eq!(
            error_message(b"", 503),
            "upstream answered HTTP 503 with no message"
        );
    }
}
