//! Who messages whom (the diagram in ARCHITECTURE.md) and [`start`], which builds the actor system.
//!
//! ```text
//! RouterActor --publishes--> RoutingTable (ArcSwap)  <--reads-- HTTP handlers pick a deployment
//! admin API, SIGHUP, other replicas --SetModels--> RouterActor (owns the model list; starts and stops
//!                                                  DeploymentActors; DeploymentsRemoved --> MetricsActor)
//! HTTP handlers --AttemptsDone--> DeploymentActor      (one per model_list entry: health, headers, latency)
//! HTTP handlers --RequestsFinished--> MetricsActor     (owns the registry; renders /metrics)
//! HTTP handlers --SpendLogged, Admin--> BudgetActor     (keys, teams, users, end users; spend; resets)
//! BudgetActor --BudgetsChanged--> MetricsActor
//! DeploymentActor --DeploymentStateChanged--> MetricsActor
//! DeploymentActor --CooldownShared--> SharedStateActor --AdoptCooldown--> DeploymentActor   (Redis)
//! SharedStateActor <--> Redis: rate-limit windows (200 ms), cooldowns (1 s)
//! HTTP handlers: cooldown gate, probe, in flight, usage in per-deployment atomics (deployment/live.rs)
//! ```
//! Actors run on their own arbiters, so HTTP workers never run actor code and never block on it.
//! Telemetry from the workers is batched per worker ([`outbox`]) to keep cross-thread wake-ups rare.

pub mod budget;
pub mod deployment;
pub mod metrics;
pub mod outbox;
pub mod router;
pub mod shared;
#[cfg(test)]
pub mod testing;

use crate::accounts::Accounts;
use crate::config::{Config, DeploymentConfig};
use crate::metrics::system::SystemMetrics;
use crate::router::table::RoutingTable;
use crate::store::Store;
use actix::prelude::*;
use arc_swap::ArcSwap;
use budget::BudgetActor;
use metrics::MetricsActor;
use router::RouterActor;
use shared::SharedStateActor;
use std::sync::Arc;

/// Addresses of the running actors.
#[derive(Clone)]
pub struct Handles {
    pub router: Addr<RouterActor>,
    /// The routing table the RouterActor publishes; handlers pick from it.
    pub routes: Arc<ArcSwap<RoutingTable>>,
    /// `None` when the `prometheus` callback is off.
    pub metrics: Option<Addr<MetricsActor>>,
    pub budget: Addr<BudgetActor>,
    /// Keys, teams, users and end users in memory (the BudgetActor writes, handlers read).
    pub accounts: Arc<Accounts>,
    pub store: Store,
    /// Keeps the arbiters' handles; the threads stop with the System.
    _arbiters: Arc<Vec<ArbiterHandle>>,
}

/// An arbiter whose thread carries `name` (actix names them all `actix-rt|system:…`, which the kernel cuts
/// to the same 15 characters), so that `top -H` and `bench/run.sh` (`THREAD_CPU=1`) tell them apart.
fn named_arbiter(name: &'static str) -> ArbiterHandle {
    let arbiter = Arbiter::new().handle();
    arbiter.spawn_fn(move || {
        // Linux only; elsewhere the thread keeps actix's name.
        let _ = std::fs::write("/proc/thread-self/comm", name);
    });
    arbiter
}

/// Starts every actor. Must run inside an actix System.
/// `stored`: the deployments read from the store (`router::load_stored`), when `store_model_in_db` is on.
pub fn start(
    config: &Config,
    accounts: Arc<Accounts>,
    store: Store,
    stored: Vec<DeploymentConfig>,
) -> Handles {
    let metrics_arbiter = named_arbiter("llm-metrics");
    let routing_arbiter = named_arbiter("llm-routing");
    let system = config
        .metrics
        .system_enabled
        .then(|| Arc::new(SystemMetrics::new(&config.metrics.latency_buckets)));
    if let Some(sys) = &system {
        store.set_metrics(sys.store(store.kind));
    }
    let metrics = config.metrics.enabled.then(|| {
        let (settings, sys) = (config.metrics.clone(), system.clone());
        MetricsActor::start_in_arbiter(&metrics_arbiter, move |_| MetricsActor::new(&settings, sys))
    });
    // The RouterActor owns the model list; the first table is published now so the first request finds it.
    let maker = router::DeploymentMaker {
        metrics: metrics.clone(),
        arbiter: routing_arbiter.clone(),
        shared: None,
    };
    let routes = Arc::new(ArcSwap::from_pointee(router::first_table(
        &maker,
        &config.model_list,
        &stored,
        &config.router,
    )));
    let router = {
        let (r, file, settings) = (
            routes.clone(),
            config.model_list.clone(),
            config.router.clone(),
        );
        let stored_models = config
            .general
            .store_model_in_db
            .then(|| router::StoredModels {
                store: store.clone(),
                request_timeout: config.request_timeout,
                // Replicas share a PostgreSQL database; a SQLite file has one process.
                read_back: store.kind == "postgres",
            });
        RouterActor::start_in_arbiter(&routing_arbiter, move |_| {
            RouterActor::new(maker, stored_models, r, file, stored, settings)
        })
    };
    let budget_arbiter = named_arbiter("llm-budget");
    let budget = {
        let (a, s, m) = (accounts.clone(), store.clone(), metrics.clone());
        let retention = config.general.spend_logs_retention;
        let max_unwritten = config.general.max_unwritten_spend_logs;
        BudgetActor::start_in_arbiter(&budget_arbiter, move |_| {
            BudgetActor::new(a, s, m.map(|m| m.recipient()), retention, max_unwritten)
        })
    };
    // Redis: rate-limit windows and cooldowns shared across replicas.
    if let Some(url) = &config.general.redis_url {
        let (d, url, m, a) = (
            routes.clone(),
            url.expose().to_owned(),
            system.as_ref().map(|s| s.redis.clone()),
            accounts.clone(),
        );
        // Every record this replica writes is announced, so the others read it again at once.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        store.announce_changes(tx);
        let (b, models) = (budget.clone().recipient(), router.clone().recipient());
        let shared_store = store.kind == "postgres";
        let namespace = match &config.general.database_url {
            Some(db) if shared_store => {
                crate::secret::hash_key(&crate::config::shown_url(db.expose()))[..16].to_owned()
            }
            _ => "local".to_owned(),
        };
        let shared = SharedStateActor::start_in_arbiter(&routing_arbiter, move |_| {
            SharedStateActor::new(url, d, a, m, rx, b, models, &namespace, shared_store)
        });
        router.do_send(router::ShareCooldownsWith(shared.clone().recipient()));
    }
    if let (Some(m), true) = (&metrics, config.metrics.initialize_budget_metrics) {
        m.do_send(budget::all_gauges(&accounts));
    }
    Handles {
        router,
        routes,
        budget,
        accounts,
        store,
        metrics,
        _arbiters: Arc::new(vec![metrics_arbiter, routing_arbiter, budget_arbiter]),
    }
}
