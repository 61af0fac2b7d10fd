//! `GET /metrics` (and `/metrics/`, no redirect): the Prometheus text exposition, rendered by the metrics
//! actor. With `require_auth_for_metrics_endpoint: true` the caller must present a valid key; with
//! `general_settings.metrics_require_master_key: true`, the master key.

use super::{auth, AppState};
use crate::actors::metrics::Render;
use crate::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn render(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(metrics) = &state.actors.metrics else {
        return Err(ApiError::not_found(
            "metrics are off: add `prometheus` to `llm_settings.callbacks` in the config",
        ));
    };
    if state.config.general.metrics_require_master_key {
        auth::check_admin(&req, &state).map_err(|e| {
            ApiError::unauthorized(format!(
                "Unauthorized access to metrics endpoint: {} (general_settings.metrics_require_master_key is on)",
                e.message
            ))
        })?;
    } else if state.config.metrics.require_auth {
        auth::check(&req, &state).await.map_err(|e| {
            ApiError::unauthorized(format!(
                "Unauthorized access to metrics endpoint: {} To allow unauthenticated access, set `llm_settings.require_auth_for_metrics_endpoint: false` in your config.",
                e.message
            ))
        })?;
    }
    let text = metrics
        .send(Render)
        .await
        .map_err(|e| ApiError::internal(format!("metrics actor unavailable: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
