//! `GET /metrics` (and `/metrics/`, no redirect): the Prometheus text exposition, rendered by the metrics
//! actor. With `require_auth_for_metrics_endpoint: true` the caller must present a valid key; with
//! `general_settings.metrics_require_master_key: true`, the master key. A scraper that accepts gzip (as
//! Prometheus does) gets the exposition gzipped, compressed on the blocking pool, not on the worker that
//! serves requests.

use super::{auth, AppState};
use crate::actors::metrics::Render;
use crate::error::ApiError;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use std::io::Write;

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
    let gzip = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let mut resp = HttpResponse::Ok();
    resp.content_type("text/plain; version=0.0.4; charset=utf-8")
        .insert_header((header::VARY, "Accept-Encoding"));
    if !gzip {
        return Ok(resp.body(text));
    }
    let body = web::block(move || gzip_bytes(text.as_bytes()))
        .await
        .map_err(|e| ApiError::internal(format!("cannot compress the metrics: {e}")))?
        .map_err(|e| ApiError::internal(format!("cannot compress the metrics: {e}")))?;
    Ok(resp
        .insert_header((header::CONTENT_ENCODING, "gzip"))
        .body(body))
}

/// Whether an `Accept-Encoding` value accepts gzip (listed, or `*`, without `q=0`).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|part| {
        let mut it = part.split(';');
        let name = it.next().unwrap_or("").trim();
        let refused = it.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

/// The fast gzip level: scrapes are large and frequent, and most of the gain is in the first level.
fn gzip_bytes(text: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(text.len() / 8),
        flate2::Compression::fast(),
    );
    enc.write_all(text)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::accepts_gzip;

    #[test]
    fn accept_encoding() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("deflate, GZIP;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip("br, deflate"));
    }
}
