//! Who is calling. Reads the key from `Authorization: Bearer`, `api-key` (Azure style) or `x-api-key`
//! (Anthropic style) and checks it against the master key. Without a master key the gateway is open.

use super::AppState;
use crate::error::ApiError;
use crate::secret::constant_time_eq;
use actix_web::HttpRequest;

/// The key the client presented, if any.
pub fn presented_key(req: &HttpRequest) -> Option<&str> {
    let h = req.headers();
    if let Some(v) = h.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let key = match v.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim(),
            _ => v,
        };
        if !key.is_empty() {
            return Some(key);
        }
    }
    for name in ["api-key", "x-api-key"] {
        if let Some(v) = h.get(name).and_then(|v| v.to_str().ok()).map(str::trim) {
            if !v.is_empty() {
                return Some(v);
            }
        }
    }
    None
}

/// Admits the request when no master key is set, or when it presents the master key.
pub fn check(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let Some(master) = &state.config.general.master_key else {
        return Ok(());
    };
    match presented_key(req) {
        None => Err(ApiError::unauthorized(
            "no API key: send `Authorization: Bearer <key>` (or the `api-key` / `x-api-key` header)",
        )),
        Some(k) if constant_time_eq(k.as_bytes(), master.expose().as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("invalid API key")),
    }
}
