//! Builds the server around the actors: opens the store, loads accounts, starts the actors and actix-web,
//! and on shutdown writes the spend that is still in memory before the process exits.

use crate::accounts::Accounts;
use crate::actors::{self, budget};
use crate::config::Config;
use crate::http::{self, state::AppState};
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
    let store = Store::connect(config.general.database_url.as_ref(), &config_dir)
        .await?
        .with_call_timeout(config.general.database_timeout);
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
    let stored = if config.general.store_model_in_db {
        let stored = actors::router::load_stored(&store, config.request_timeout).await?;
        tracing::info!(deployments = stored.len(), "stored deployments loaded");
        stored
    } else {
        Vec::new()
    };
    let handles = actors::start(&config, accounts, store.clone(), stored);
    // Held to the end: an arbiter's thread stops when the last handle to it is dropped, and the server's
    // app factories (which hold the others) are dropped when it stops.
    let kept = handles.clone();
    let state = web::Data::new(AppState::new(config.clone(), handles));
    // SIGHUP reads the config file again (as `POST /config/reload` does).
    {
        let state = state.clone();
        actix_rt::spawn(async move {
            use actix_rt::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP: reload with POST /config/reload");
                return;
            };
            while hup.recv().await.is_some() {
                match http::models_admin::reload_file(&state).await {
                    Ok(a) => {
                        tracing::info!(added = ?a.added, changed = ?a.changed, removed = ?a.removed, "SIGHUP: config reloaded")
                    }
                    Err(e) => tracing::error!("SIGHUP: {}", e.message),
                }
            }
        });
    }
    let server = HttpServer::new(move || {
        // Runs once on each worker thread: building the upstream client loads OpenSSL's roots (hundreds of
        // millions of instructions in callgrind), which would otherwise land on that worker's first request.
        drop(crate::providers::http::client());
        App::new()
            .app_data(state.clone())
            .configure(http::routes)
            .default_service(web::to(http::not_found))
    })
    .workers(opts.workers.max(1))
    .tcp_nodelay(true)
    .backlog(4096)
    .max_connection_rate(1024)
    // Signals are ours: actix-server's own handling stops the whole System right after the HTTP server,
    // which would kill the budget actor before it writes the spend still in memory.
    .disable_signals()
    .bind((opts.host.as_str(), opts.port))?;
    for addr in server.addrs() {
        tracing::info!("llm gateway listening on http://{addr}");
    }
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!("stop signal: finishing in-flight requests");
        handle.stop(true).await;
    });
    server.await?;
    // Worker threads send what their telemetry buffers still hold as they exit (outbox `Drop`); give the
    // last of them a moment so their spend-log rows are in the budget actor's mailbox before the flush.
    actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
    tracing::info!("stopping: writing pending spend");
    // A write that fails (the database slow or away) is tried again, for up to SHUTDOWN_WRITES.
    let deadline = std::time::Instant::now() + SHUTDOWN_WRITES;
    loop {
        if let Err(e) = kept.budget.send(budget::Flush).await {
            tracing::error!("could not write pending spend at shutdown: {e}");
            break;
        }
        match kept.budget.send(budget::Unwritten).await {
            Ok(false) => break,
            Ok(true) if std::time::Instant::now() < deadline => {
                tracing::warn!("spend not written yet at shutdown, trying again");
                actix_rt::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            _ => {
                tracing::error!("stopping with spend the database did not take");
                break;
            }
        }
    }
    store.close().await;
    Ok(())
}

/// How long a stopping gateway keeps trying to write the spend it holds.
const SHUTDOWN_WRITES: std::time::Duration = std::time::Duration::from_secs(20);

/// SIGINT or SIGTERM.
async fn wait_for_stop_signal() {
    use actix_rt::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio_select(actix_rt::signal::ctrl_c(), term.recv()).await;
        }
        Err(_) => {
            let _ = actix_rt::signal::ctrl_c().await;
        }
    }
}

/// Waits for whichever of two futures finishes first.
async fn tokio_select<A: std::future::Future, B: std::future::Future>(a: A, b: B) {
    futures_util::future::select(std::pin::pin!(a), std::pin::pin!(b)).await;
}
