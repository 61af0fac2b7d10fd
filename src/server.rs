//! Builds the actix-web server around the actors: one place that wires config, actors and routes.

use crate::actors;
use crate::config::Config;
use crate::http::{self, AppState};
use actix_web::{web, App, HttpServer};
use std::sync::Arc;

pub struct ServerOptions {
    pub host: String,
    pub port: u16,
    pub workers: usize,
}

/// Runs until SIGINT/SIGTERM (actix-web stops accepting, finishes in-flight requests, then returns).
pub async fn run(config: Config, opts: ServerOptions) -> std::io::Result<()> {
    let config = Arc::new(config);
    let handles = actors::start(&config);
    let state = web::Data::new(AppState::new(config.clone(), handles));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(http::routes)
            .default_service(web::to(http::not_found))
    })
    .workers(opts.workers.max(1))
    .tcp_nodelay(true)
    .backlog(4096)
    .max_connection_rate(1024)
    .bind((opts.host.as_str(), opts.port))?;
    for addr in server.addrs() {
        tracing::info!("llm gateway listening on http://{addr}");
    }
    server.run().await
}
