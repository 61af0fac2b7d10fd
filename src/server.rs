//! Builds the server around the actors: opens the store, loads accounts, starts the actors and actix-web,
//! and on shutdown writes the spend that is still in memory before the process exits.

use crate::accounts::Accounts;
use crate::actors::{self, budget};
use crate::config::Config;
use crate::http::{self, AppState};
use crate::store::Store;
use actix_web::{web, App, HttpServer};
use std::sync::Arc;

pub struct ServerOptions {
    pub host: String,
    pub port: u16,
    pub workers: usize,
}

/// A startup failure (store, bind): `main` prints it and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
}

/// Runs until SIGINT/SIGTERM: actix-web stops accepting, finishes in-flight requests, then the budget actor
/// writes the spend and spend-log rows still in memory.
pub async fn run(config: Config, opts: ServerOptions) -> Result<(), StartError> {
    let config = Arc::new(config);
    let config_dir = config
        .path
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| ".".into());
    let store = Store::connect(config.general.database_url.as_ref(), &config_dir).await?;
    let accounts = Arc::new(Accounts::default());
    budget::load(&accounts, &store).await?;
    tracing::info!(
        store = store.kind,
        keys = accounts.keys.len(),
        teams = accounts.teams.len(),
        users = accounts.users.len(),
        end_users = accounts.end_users.len(),
        "accounts loaded"
    );
    let handles = actors::start(&config, accounts, store.clone());
    let budget_addr = handles.budget.clone();
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
    server.run().await?;
    tracing::info!("stopping: writing pending spend");
    if let Err(e) = budget_addr.send(budget::Flush).await {
        tracing::error!("could not write pending spend at shutdown: {e}");
    }
    store.close().await;
    Ok(())
}
