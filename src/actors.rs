//! Who messages whom (the diagram in ARCHITECTURE.md) and [`start`], which builds the actor system.
//!
//! ```text
//! RouterActor --publishes--> RoutingTable (ArcSwap)  <--reads-- HTTP handlers pick a deployment
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

use crate::accounts::Accounts;
use crate::config::{Config, DeploymentConfig, ProviderKind};
use crate::deployment::live::{CooldownPolicy, Live};
use crate::metrics::system::SystemMetrics;
use crate::providers::openai;
use crate::router::table::RoutingTable;
use crate::store::Store;
use actix::prelude::*;
use actix_web::http::header::HeaderValue;
use arc_swap::ArcSwap;
use budget::BudgetActor;
use deployment::DeploymentActor;
use metrics::{DeploymentLabels, MetricsActor};
use router::RouterActor;
use shared::SharedStateActor;
use std::sync::Arc;

/// One `model_list` entry at run time: its config, its metric labels and its actor.
pub struct Deployment {
    pub cfg: DeploymentConfig,
    /// The model group, shared with every request it serves.
    pub group: Arc<str>,
    pub labels: Arc<DeploymentLabels>,
    pub addr: Addr<DeploymentActor>,
    /// URLs and auth header of an HTTP upstream; `None` for the built-in mock.
    pub target: Option<openai::Target>,
    /// In flight, usage, cooldown gate, latency: what routing reads on every request.
    pub live: Arc<Live>,
    pub policy: CooldownPolicy,
    /// `x-llm-model-id` and `x-llm-model-group` response header values, built once.
    pub headers: (HeaderValue, HeaderValue),
}

/// Addresses of the running actors.
#[derive(Clone)]
pub struct Handles {
    pub router: Addr<RouterActor>,
    /// The routing table the RouterActor publishes; handlers pick from it.
    pub routes: Arc<ArcSwap<RoutingTable>>,
    /// `None` when the `prometheus` callback is off.
    pub metrics: Option<Addr<MetricsActor>>,
    pub deployments: Arc<Vec<Arc<Deployment>>>,
    pub budget: Addr<BudgetActor>,
    /// Keys, teams, users and end users in memory (the BudgetActor writes, handlers read).
    pub accounts: Arc<Accounts>,
    pub store: Store,
    /// Keeps the arbiters' handles; the threads stop with the System.
    _arbiters: Arc<Vec<ArbiterHandle>>,
}

/// A response header value for a configured name; names that are not valid header text are left out.
fn header_value(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""))
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
pub fn start(config: &Config, accounts: Arc<Accounts>, store: Store) -> Handles {
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
    let deployments: Vec<Arc<Deployment>> = config
        .model_list
        .iter()
        .map(|cfg| {
            let labels = Arc::new(DeploymentLabels {
                model_group: cfg.model_name.clone(),
                llm_model_name: cfg.model.clone(),
                model_id: cfg.id.clone(),
                api_base: cfg.api_base_shown.clone(),
                api_provider: cfg.provider.as_str(),
            });
            let live = Arc::new(Live::default());
            let (l, m, lv) = (labels.clone(), metrics.clone(), live.clone());
            let addr = DeploymentActor::start_in_arbiter(&routing_arbiter, move |_| {
                DeploymentActor::new(l, m, lv)
            });
            let policy = CooldownPolicy {
                allowed_fails: config.router.allowed_fails,
                cooldown_time: config.router.cooldown_time,
                probe_timeout: cfg.timeout.max(cfg.stream_timeout),
            };
            // Config validation built every target once already (`Config::load`), so this cannot fail for
            // a loaded config; a deployment is never silently turned into the mock.
            let target = (cfg.provider != ProviderKind::Mock).then(|| {
                openai::Target::new(cfg)
                    .unwrap_or_else(|e| panic!("deployment `{}` passed validation but {e}", cfg.id))
            });
            Arc::new(Deployment {
                cfg: cfg.clone(),
                group: Arc::from(cfg.model_name.as_str()),
                labels,
                addr,
                target,
                live,
                policy,
                headers: (header_value(&cfg.id), header_value(&cfg.model_name)),
            })
        })
        .collect();
    let deployments = Arc::new(deployments);
    // Published now so the first request finds it; the actor republishes on every change.
    let strategy = config.router.routing_strategy;
    let routes = Arc::new(ArcSwap::from_pointee(RoutingTable::new(
        &deployments,
        strategy,
    )));
    let router = {
        let (d, r) = (deployments.clone(), routes.clone());
        RouterActor::start_in_arbiter(&routing_arbiter, move |_| RouterActor::new(d, strategy, r))
    };
    let budget_arbiter = named_arbiter("llm-budget");
    let budget = {
        let (a, s, m) = (accounts.clone(), store.clone(), metrics.clone());
        let retention = config.general.spend_logs_retention;
        let max_unwritten = config.general.max_unwritten_spend_logs;
        BudgetActor::start_in_arbiter(&budget_arbiter, move |_| {
            BudgetActor::new(a, s, m, retention, max_unwritten)
        })
    };
    // Redis: rate-limit windows and cooldowns shared across replicas.
    if let Some(url) = &config.general.redis_url {
        let (d, url, m, a) = (
            deployments.clone(),
            url.expose().to_owned(),
            system.as_ref().map(|s| s.redis.clone()),
            accounts.clone(),
        );
        // Every record this replica writes is announced, so the others read it again at once.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        store.announce_changes(tx);
        let b = budget.clone().recipient();
        let shared_store = store.kind == "postgres";
        let namespace = match &config.general.database_url {
            Some(db) if shared_store => {
                crate::secret::hash_key(&crate::config::shown_url(db.expose()))[..16].to_owned()
            }
            _ => "local".to_owned(),
        };
        let shared = SharedStateActor::start_in_arbiter(&routing_arbiter, move |_| {
            SharedStateActor::new(url, d, a, m, rx, b, &namespace, shared_store)
        });
        for d in deployments.iter() {
            d.addr
                .do_send(deployment::ShareCooldowns(shared.clone().recipient()));
        }
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
        deployments,
        _arbiters: Arc::new(vec![metrics_arbiter, routing_arbiter, budget_arbiter]),
    }
}
