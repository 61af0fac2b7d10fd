//! The HTTP surface on one screen. Handlers are thin: extract and validate, ask the actors, stream the
//! answer back, send one completion event. Every path exists with and without the `/v1` prefix.

pub mod admin;
pub mod auth;
pub mod health;
pub mod metrics;
pub mod models;
pub mod proxy;

use crate::actors::metrics::KeyLabels;
use crate::actors::Handles;
use crate::config::Config;
use crate::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};
use std::sync::Arc;

/// What every handler can reach: the validated config and the actors.
pub struct AppState {
    pub config: Arc<Config>,
    pub actors: Handles,
    /// Model group names in config order, for `/models` and "unknown model" errors.
    pub groups: Vec<String>,
    /// Key labels of a request made without a virtual key (all empty), shared.
    pub anonymous: Arc<KeyLabels>,
    /// Key labels of requests made with the master key (its hash, as the reference labels it).
    pub master_labels: Arc<KeyLabels>,
}

impl AppState {
    pub fn new(config: Arc<Config>, actors: Handles) -> AppState {
        let mut groups: Vec<String> = Vec::new();
        for d in &config.model_list {
            if !groups.contains(&d.model_name) {
                groups.push(d.model_name.clone());
            }
        }
        let master_hash = config
            .general
            .master_key
            .as_ref()
            .map(|k| crate::secret::hash_key(k.expose()))
            .unwrap_or_default();
        AppState {
            config,
            actors,
            groups,
            anonymous: Arc::new(KeyLabels::default()),
            master_labels: Arc::new(KeyLabels {
                hashed_api_key: master_hash,
                ..Default::default()
            }),
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
