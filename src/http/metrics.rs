//! `GET /metrics` (and `/metrics/`, no redirect): the Prometheus text exposition, rendered by the metrics
//! actor and streamed a chunk at a time. With `require_auth_for_metrics_endpoint: true` the caller must present a valid key; with
//! `general_settings.metrics_require_master_key: true`, the master key. A scraper that accepts gzip (as
//! Prometheus does) gets the exposition gzipped, compressed on the blocking pool, not on the worker that
//! serves requests.

use super::auth;
use super::state::AppState;
use crate::actors::metrics::{Cursor, MetricsActor, RenderChunk};
use crate::error::ApiError;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;
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
    let gzip = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let mut scrape = Scrape {
        addr: metrics.clone(),
        cursor: None,
        done: false,
        gz: gzip.then(|| flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast())),
    };
    // The first chunk before the status line, so that an actor that is gone is a 500, not a cut body.
    let first = scrape
        .next_bytes()
        .await
        .map_err(|e| ApiError::internal(format!("cannot render the metrics: {e}")))?;
    let mut resp = HttpResponse::Ok();
    resp.content_type("text/plain; version=0.0.4; charset=utf-8")
        .insert_header((header::VARY, "Accept-Encoding"));
    if gzip {
        resp.insert_header((header::CONTENT_ENCODING, "gzip"));
    }
    if scrape.done {
        return Ok(resp.body(first));
    }
    let rest = futures_util::stream::unfold(scrape, |mut scrape| async move {
        if scrape.done {
            return None;
        }
        match scrape.next_bytes().await {
            Ok(b) => Some((Ok::<_, actix_web::Error>(b), scrape)),
            Err(e) => {
                tracing::warn!(error = %e, "a /metrics scrape was cut");
                scrape.done = true;
                Some((Err(actix_web::error::ErrorInternalServerError(e)), scrape))
            }
        }
    });
    let body = futures_util::stream::once(async move { Ok(first) }).chain(rest);
    Ok(resp.streaming(body))
}

/// One scrape in progress: the exposition comes from the metrics actor a chunk at a time (the actor goes
/// back to its updates in between) and, for a scraper that accepts it, is gzipped on the blocking pool, so
/// neither a worker that serves requests nor the whole exposition's memory is held at once.
struct Scrape {
    addr: actix::Addr<MetricsActor>,
    cursor: Option<Cursor>,
    done: bool,
    gz: Option<flate2::write::GzEncoder<Vec<u8>>>,
}

impl Scrape {
    /// The next non-empty piece of the body (empty only at the end).
    async fn next_bytes(&mut self) -> Result<Bytes, String> {
        loop {
            let (text, next) = self
                .addr
                .send(RenderChunk {
                    cursor: self.cursor.take(),
                })
                .await
                .map_err(|e| format!("metrics actor unavailable: {e}"))?;
            self.cursor = next;
            self.done = next.is_none();
            let bytes = match self.gz.take() {
                None => Bytes::from(text),
                Some(mut enc) => {
                    let last = self.done;
                    let (out, enc) = web::block(move || -> std::io::Result<_> {
                        enc.write_all(text.as_bytes())?;
                        if last {
                            Ok((enc.finish()?, None))
                        } else {
                            Ok((std::mem::take(enc.get_mut()), Some(enc)))
                        }
                    })
                    .await
                    .map_err(|e| format!("cannot compress the metrics: {e}"))?
                    .map_err(|e| format!("cannot compress the metrics: {e}"))?;
                    self.gz = enc;
                    Bytes::from(out)
                }
            };
            if !bytes.is_empty() || self.done {
                return Ok(bytes);
            }
        }
    }
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
