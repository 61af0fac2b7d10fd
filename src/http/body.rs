//! Reading a request body within the size and time limits.

use super::state::AppState;
use crate::error::ApiError;
use actix_web::http::header;
use actix_web::{web, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

/// Reads a request body of at most `limit` bytes within `general_settings.request_body_timeout`: a client
/// trickling its body in holds a connection for that long at most (408), a large one is refused as soon as
/// its `content-length` or its bytes pass the limit (413). Handlers call it after authentication, so an
/// unauthenticated client never gets its body read.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    state: &AppState,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let timeout = state.config.general.request_body_timeout;
    let read = async {
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("cannot read request body: {e}")))?;
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::payload_too_large(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    match actix_rt::time::timeout(timeout, read).await {
        Ok(body) => body,
        Err(_) => Err(ApiError::new(
            crate::error::ErrorKind::Timeout,
            actix_web::http::StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}s (general_settings.request_body_timeout)",
                timeout.as_secs_f64()
            ),
        )),
    }
}
