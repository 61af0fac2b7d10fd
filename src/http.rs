//! The HTTP surface on one screen. Handlers are thin: extract and validate, ask the actors, stream the
//! answer back, send one completion event. Every path exists with and without the `/v1` prefix.

pub mod admin;
pub mod auth;
pub mod health;
pub mod metrics;
pub mod models;
pub mod models_admin;
pub mod proxy;

use crate::actors::metrics::KeyLabels;
use crate::actors::Handles;
use crate::config::Config;
use crate::error::ApiError;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::sync::Arc;

/// `api_key_alias` of requests made with the master key (their `hashed_api_key` is empty).
pub const MASTER_KEY_ALIAS: &str = "master_key";

/// What every handler can reach: the validated config and the actors.
pub struct AppState {
    pub config: Arc<Config>,
    pub actors: Handles,
    /// Key labels of a request made without a virtual key (all empty), shared.
    pub anonymous: Arc<KeyLabels>,
    /// Key labels of requests made with the master key.
    pub master_labels: Arc<KeyLabels>,
    /// Slots for store lookups of keys not in memory (see `auth::KEY_LOOKUP_CONCURRENCY`).
    pub key_lookups: tokio::sync::Semaphore,
}

impl AppState {
    pub fn new(config: Arc<Config>, actors: Handles) -> AppState {
        AppState {
            config,
            actors,
            anonymous: Arc::new(KeyLabels::default()),
            // Not the master key's hash (LiteLLM labels it so): a hash of the one key that opens everything
            // is an offline guessing target for whoever reads the metrics. No label value, a fixed alias.
            master_labels: Arc::new(KeyLabels {
                api_key_alias: MASTER_KEY_ALIAS.to_owned(),
                ..Default::default()
            }),
            key_lookups: tokio::sync::Semaphore::new(auth::KEY_LOOKUP_CONCURRENCY),
        }
    }
}

/// The route table.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for prefix in ["", "/v1"] {
        cfg.route(
            &format!("{prefix}/chat/completions"),
            web::post().to(proxy::chat_completions),
        )
        .route(
            &format!("{prefix}/completions"),
            web::post().to(proxy::completions),
        )
        .route(
            &format!("{prefix}/embeddings"),
            web::post().to(proxy::embeddings),
        )
        .route(&format!("{prefix}/models"), web::get().to(models::list));
    }
    admin::routes(cfg);
    cfg.route("/health/liveliness", web::get().to(health::liveliness))
        .route("/health/liveness", web::get().to(health::liveliness))
        .route("/health/readiness", web::get().to(health::readiness))
        .route("/health/deployments", web::get().to(health::deployments))
        .route("/metrics", web::get().to(metrics::render))
        .route("/metrics/", web::get().to(metrics::render));
}

/// Unknown paths and methods answer in the OpenAI error shape too.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    ApiError::not_found(format!("no route for {} {}", req.method(), req.path())).error_response()
}

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
