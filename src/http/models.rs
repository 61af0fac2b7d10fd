//! `GET /models`: the model groups, in the OpenAI list shape.

use super::auth;
use super::state::AppState;
use crate::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    auth::check(&req, &state).await?;
    let created = crate::providers::mock::unix_now();
    let table = state.actors.routes.load();
    let data: Vec<_> = table
        .names
        .iter()
        .map(|g| json!({"id": g, "object": "model", "created": created, "owned_by": "llm"}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}
