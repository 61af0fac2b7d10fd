//! The HTTP surface on one screen. Handlers are thin: extract and validate, ask the actors, stream the
//! answer back, send one completion event. Every path exists with and without the `/v1` prefix.

pub mod admin;
pub mod auth;
pub mod body;
pub mod health;
pub mod metrics;
pub mod models;
pub mod models_admin;
pub mod proxy;
pub mod state;
pub mod ui;

use crate::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};

/// The route table.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/messages", web::post().to(proxy::messages))
        .route("/anthropic/v1/messages", web::post().to(proxy::messages));
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
    ui::routes(cfg);
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
