//! `GET /ui`: the admin web UI, a single page compiled into the binary (`ui/` in the repository: one HTML
//! page, one script, one style sheet; no framework, nothing fetched from elsewhere). The page signs in with
//! the master key, keeps it in the page's memory only (never a cookie, a URL or local storage) and sends
//! it as the bearer of every call it makes to the documented admin API: the UI can do nothing the API
//! forbids, and as no cookie carries the key, another site cannot make the browser act (no CSRF).
//!
//! Served only when a master key is set and `general_settings.ui` is not `false`. Every answer carries a
//! `Content-Security-Policy` that allows scripts and styles from this origin only (no inline script),
//! `X-Frame-Options: DENY` and `nosniff`.
//!
//! `LLM_UI_DIR`, when set, serves the files from that folder instead, read on each request (for working on
//! the UI without rebuilding).

use super::state::AppState;
use crate::error::ApiError;
use actix_web::http::header;
use actix_web::{web, HttpResponse};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The UI's files: name, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/app.css"),
    ),
];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(index))
        .route("/ui/", web::get().to(index))
        .route("/ui/{file}", web::get().to(file));
}

async fn index(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    serve(&state, "index.html")
}

async fn file(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    serve(&state, &path)
}

fn serve(state: &AppState, name: &str) -> Result<HttpResponse, ApiError> {
    let general = &state.config.general;
    if !general.ui || general.master_key.is_none() {
        return Err(ApiError::not_found(
            "the admin UI is off: it needs `general_settings.master_key` (and `ui` not false)",
        ));
    }
    let Some(&(name, content_type, bytes)) = FILES.iter().find(|f| f.0 == name) else {
        return Err(ApiError::not_found("no such UI file"));
    };
    let body = match std::env::var_os("LLM_UI_DIR") {
        Some(dir) => std::fs::read(std::path::Path::new(&dir).join(name))
            .map_err(|e| ApiError::internal(format!("LLM_UI_DIR: cannot read {name}: {e}")))?,
        None => bytes.to_vec(),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body))
}
