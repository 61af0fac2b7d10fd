//! Liveness, readiness and per-deployment health.

use super::auth;
use super::state::AppState;
use crate::accounts::views::iso;
use crate::actors::deployment::Snapshot;
use crate::error::ApiError;
use crate::units::now_ms;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

/// `GET /health/liveliness`: the process answers (LiteLLM's body, a JSON string).
pub async fn liveliness() -> HttpResponse {
    HttpResponse::Ok().json("I'm alive!")
}

/// `GET /health/readiness`: ready to serve, with what it is connected to.
pub async fn readiness(state: web::Data<AppState>) -> HttpResponse {
    let c = &state.config;
    HttpResponse::Ok().json(json!({
        "status": "healthy",
        "db": if c.general.database_url.is_some() { "configured" } else { "Not connected" },
        "cache": if c.general.redis_url.is_some() { Some("redis") } else { None },
        "llm_version": env!("CARGO_PKG_VERSION"),
        "success_callbacks": if c.metrics.enabled { vec!["prometheus"] } else { vec![] },
        "model_groups": state.actors.routes.load().names.len(),
        // With Redis: whether it answers, and the replicas seen alive (shared limits depend on both).
        "redis": c.general.redis_url.as_ref().map(|_| {
            let view = &state.actors.accounts.redis;
            json!({
                "reachable": view.reachable(now_ms()),
                "replicas": view.replicas.load(std::sync::atomic::Ordering::Acquire).max(1),
                "outage_mode": match c.general.redis_outage_mode {
                    crate::config::RedisOutageMode::Divide => "divide",
                    crate::config::RedisOutageMode::Refuse => "refuse",
                },
            })
        }),
    }))
}

/// `GET /health/deployments` (master key): every deployment with its state and the upstream's last
/// remaining-limit headers.
pub async fn deployments(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if state.config.general.master_key.is_some() {
        auth::check_admin(&req, &state)?;
    }
    let table = state.actors.routes.load_full();
    let mut out = Vec::with_capacity(table.deployments.len());
    for d in table.deployments.iter() {
        let s = d
            .addr
            .send(Snapshot)
            .await
            .map_err(|e| ApiError::internal(format!("deployment actor unavailable: {e}")))?;
        let now = now_ms();
        let until = d.live.cooldown_until();
        let (rpm_used, tpm_used) = d.live.usage(now);
        let (remaining_requests, remaining_tokens) = d.live.remaining();
        out.push(json!({
            "model_name": d.cfg.model_name,
            "model_id": d.cfg.id,
            "model": format!("{}/{}", d.cfg.provider.as_str(), d.cfg.model),
            "api_base": d.cfg.api_base_shown,
            "state": s.state as i32,
            "state_name": match s.state as i32 { 0 => "healthy", 1 => "partial_outage", _ => "complete_outage" },
            "cooling_down": until > now,
            "cooldown_until": (until > now).then(|| iso(until)),
            "cooldown_remaining_seconds": (until > now).then(|| (until - now) as f64 / 1000.0),
            "on_probation": d.live.on_probation(),
            "cooldowns": s.cooldowns,
            "in_flight": d.live.in_flight(),
            "rpm_used": rpm_used,
            "tpm_used": tpm_used,
            "successes": s.successes,
            "failures": s.failures,
            "recent_failures": d.live.recent_failures(now),
            "last_error": s.last_error.map(|(status, class)| json!({"status": status, "class": class})),
            "remaining_requests": remaining_requests,
            "remaining_tokens": remaining_tokens,
            "latency_ewma_seconds": s.latency_ewma_seconds,
        }));
    }
    Ok(HttpResponse::Ok().json(json!({
        "routing_strategy": table.strategy.as_str(),
        "deployments": out,
    })))
}
