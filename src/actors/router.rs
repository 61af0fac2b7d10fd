//! RouterActor: owns the model list and publishes the [`RoutingTable`] HTTP workers pick from.
//!
//! The list is the config file's `model_list` followed by the deployments stored through the management
//! API (`/model/new`, with `store_model_in_db`); a stored deployment whose id a config entry already has is
//! left out (the file wins). Every change (a reload of the file, a model created, updated or deleted here or
//! on another replica) arrives as the new desired list, [`SetModels`]; the actor compares it with what runs,
//! by id:
//! - unchanged deployments keep everything (their live state, actor and series);
//! - a change that keeps the metric labels (limits, key, timeouts, prices, weight) keeps the live state and
//!   the actor, with the new settings;
//! - a change of labels (model, `api_base`) or a new id starts fresh: a new actor, live state and series;
//! - what is gone is retired: it leaves the table at once (no new request reaches it), requests already on
//!   it finish normally, and once none is left its actor stops and its series are removed.
//!
//! Deployment choice itself is a pure function of the table and the deployments' live state (`router/`);
//! the request path does not message the actor: a worker reads the published table and picks in a few
//! hundred nanoseconds. [`Route`] asks the actor for the same decision, for callers outside the HTTP
//! workers and for the benchmark that compares the two (`benches/routing.rs`).

use super::deployment::{CooldownShared, DeploymentActor, ShareCooldowns, Stop};
use super::metrics::{DeploymentsRemoved, MetricsActor};
use crate::config::{Config, DeploymentConfig, RouterSettings};
use crate::deployment::live::{CooldownPolicy, Live};
use crate::deployment::Deployment;
use crate::labels::DeploymentLabels;
use crate::providers::registry;
use crate::providers::target::Target;
use crate::router::table::{Pick, RoutingTable};
use crate::store::{Store, Table};
use crate::units::now_ms;
use crate::units::Clock;
use actix::prelude::*;
use actix_web::http::header::HeaderValue;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;

// ---- messages -------------------------------------------------------------------------------------------

/// Which deployment of `model` would serve a request of about `tokens` tokens now.
#[derive(Message)]
#[rtype(result = "Option<Arc<Deployment>>")]
pub struct Route {
    pub model: String,
    pub tokens: u64,
}

/// The desired model list changed: `file` (the config file's entries, on a reload, with its router
/// settings) and/or `stored` (the deployments in the store). `None` keeps that part as it is.
#[derive(Message)]
#[rtype(result = "ModelsApplied")]
pub struct SetModels {
    pub file: Option<(Vec<DeploymentConfig>, RouterSettings)>,
    pub stored: Option<Vec<DeploymentConfig>>,
}

/// What a [`SetModels`] changed, by deployment id.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ModelsApplied {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Stored deployments left out because a config entry has their id.
    pub shadowed: Vec<String>,
}

/// Read the stored deployments again and apply them (a change announced by another replica, or the
/// periodic read-back).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReloadStored;

/// From now on, new deployments share their cooldowns through Redis here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShareCooldownsWith(pub Recipient<CooldownShared>);

// ---- making deployments ---------------------------------------------------------------------------------

/// What a new deployment is made with: where its actor runs and whom it reports to.
pub struct DeploymentMaker {
    pub metrics: Option<Addr<MetricsActor>>,
    pub arbiter: ArbiterHandle,
    pub shared: Option<Recipient<CooldownShared>>,
}

/// A response header value for a configured name; names that are not valid header text are left out.
fn header_value(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn labels_of(cfg: &DeploymentConfig) -> DeploymentLabels {
    DeploymentLabels {
        model_group: cfg.model_name.clone(),
        llm_model_name: cfg.model.clone(),
        model_id: cfg.id.clone(),
        api_base: cfg.api_base_shown.clone(),
        api_provider: cfg.provider.as_str(),
    }
}

fn policy_of(cfg: &DeploymentConfig, router: &RouterSettings) -> CooldownPolicy {
    CooldownPolicy {
        allowed_fails: router.allowed_fails,
        cooldown_time: router.cooldown_time,
        probe_timeout: cfg.timeout.max(cfg.stream_timeout),
    }
}

fn target_of(cfg: &DeploymentConfig) -> Target {
    // Validation built every target once already (`Config::parse`, `Config::parse_deployment`), so this
    // cannot fail for a validated entry; a deployment is never silently turned into the mock.
    registry::target(cfg.provider, &cfg.target_params())
        .unwrap_or_else(|e| panic!("deployment `{}` passed validation but {e}", cfg.id))
}

impl DeploymentMaker {
    /// A new deployment with its own actor and live state.
    pub fn make(&self, cfg: &DeploymentConfig, router: &RouterSettings) -> Arc<Deployment> {
        let labels = Arc::new(labels_of(cfg));
        let live = Arc::new(Live::default());
        let (l, m, lv) = (labels.clone(), self.metrics.clone(), live.clone());
        let addr = DeploymentActor::start_in_arbiter(&self.arbiter, move |_| {
            DeploymentActor::new(l, m.map(|m| m.recipient()), lv, Clock::System)
        });
        if let Some(shared) = &self.shared {
            addr.do_send(ShareCooldowns(shared.clone()));
        }
        Arc::new(Deployment {
            cfg: cfg.clone(),
            group: Arc::from(cfg.model_name.as_str()),
            labels,
            addr,
            target: target_of(cfg),
            provider: registry::provider(cfg.provider),
            live,
            policy: policy_of(cfg, router),
            headers: (header_value(&cfg.id), header_value(&cfg.model_name)),
        })
    }

    /// `old` with new settings that keep its labels: same actor, live state and series.
    fn remake(
        old: &Deployment,
        cfg: &DeploymentConfig,
        router: &RouterSettings,
    ) -> Arc<Deployment> {
        Arc::new(Deployment {
            cfg: cfg.clone(),
            group: old.group.clone(),
            labels: old.labels.clone(),
            addr: old.addr.clone(),
            target: target_of(cfg),
            provider: registry::provider(cfg.provider),
            live: old.live.clone(),
            policy: policy_of(cfg, router),
            headers: (header_value(&cfg.id), header_value(&cfg.model_name)),
        })
    }
}

// ---- the actor ------------------------------------------------------------------------------------------

/// How often retiring deployments are looked at, and how long after their last request ends their
/// series go (the worker's telemetry of that request is sent within 10 ms; this leaves it ample time).
const RETIRE_CHECK: Duration = Duration::from_millis(200);
const RETIRE_GRACE_MS: i64 = 2_000;
/// A retiring deployment whose requests never end (a stream held open for hours) is let go after this.
const RETIRE_MAX_MS: i64 = 6 * 3_600_000;

struct Retiring {
    deployment: Arc<Deployment>,
    /// Whether its actor stops too (not when a successor with the same labels kept it).
    stop_actor: bool,
    since_ms: i64,
    idle_since_ms: Option<i64>,
}

/// Where stored deployments are read from, with what to validate them.
pub struct StoredModels {
    pub store: Store,
    pub request_timeout: Duration,
    /// Read back every second (replicas on one PostgreSQL database without Redis learn of each other's
    /// changes this way; with Redis it is the backstop for a missed announcement).
    pub read_back: bool,
}

/// The deployments in the store, each validated as a `model_list` entry; one that no longer validates (an
/// environment variable gone) is left out and logged, the others load.
pub async fn load_stored(
    store: &Store,
    request_timeout: Duration,
) -> Result<Vec<DeploymentConfig>, crate::store::StoreError> {
    let rows = store.load(Table::Models).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&row.data) else {
            if first_report(&row.id, &row.data) {
                tracing::error!(model_id = %row.id, "stored deployment is not JSON; left out");
            }
            continue;
        };
        let at = format!("stored model `{}`", row.id);
        match Config::parse_model(&entry, &at, request_timeout, &|n| std::env::var(n).ok()) {
            Ok(d) => out.push(d),
            Err(problems) => {
                if first_report(&row.id, &row.data) {
                    tracing::error!(model_id = %row.id, problems = %problems.join("; "), "stored deployment left out");
                }
            }
        }
    }
    // In the order they were made (`model_info.created_at`), then by id.
    out.sort_by(|a, b| {
        let at = |d: &DeploymentConfig| d.model_info.get("created_at").and_then(|v| v.as_i64());
        (at(a), &a.id).cmp(&(at(b), &b.id))
    });
    Ok(out)
}

/// Whether this stored row's problem is new (the read-back runs every second; each problem is logged once).
fn first_report(id: &str, data: &str) -> bool {
    use std::hash::{Hash, Hasher};
    static REPORTED: std::sync::Mutex<std::collections::BTreeSet<(String, u64)>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
    if reported.len() > 10_000 {
        reported.clear();
    }
    reported.insert((id.to_owned(), h.finish()))
}

pub struct RouterActor {
    maker: DeploymentMaker,
    stored_models: Option<StoredModels>,
    loading: bool,
    /// Bumped by every [`SetModels`] with a stored list: a read-back that began before one is stale.
    stored_generation: u64,
    published: Arc<ArcSwap<RoutingTable>>,
    file: Vec<DeploymentConfig>,
    stored: Vec<DeploymentConfig>,
    settings: Arc<RouterSettings>,
    retiring: Vec<Retiring>,
}

impl RouterActor {
    /// `published` is read by the HTTP workers and already holds the first table (made by
    /// [`RouterActor::first_table`] before the server starts); the actor stores every new one there.
    pub fn new(
        maker: DeploymentMaker,
        stored_models: Option<StoredModels>,
        published: Arc<ArcSwap<RoutingTable>>,
        file: Vec<DeploymentConfig>,
        stored: Vec<DeploymentConfig>,
        settings: RouterSettings,
    ) -> Self {
        RouterActor {
            maker,
            stored_models,
            loading: false,
            stored_generation: 0,
            published,
            file,
            stored,
            settings: Arc::new(settings),
            retiring: Vec::new(),
        }
    }

    /// The desired list: the file's entries, then the stored ones whose id the file does not have.
    fn desired(&self) -> (Vec<&DeploymentConfig>, Vec<String>) {
        let mut out: Vec<&DeploymentConfig> = self.file.iter().collect();
        let mut shadowed = Vec::new();
        for s in &self.stored {
            if out.iter().any(|d| d.id == s.id) {
                shadowed.push(s.id.clone());
            } else {
                out.push(s);
            }
        }
        (out, shadowed)
    }

    /// Brings the table to the desired list and publishes it.
    fn apply(&mut self) -> ModelsApplied {
        let current = self.published.load_full();
        let (desired, shadowed) = self.desired();
        let mut applied = ModelsApplied {
            shadowed,
            ..Default::default()
        };
        let mut next: Vec<Arc<Deployment>> = Vec::with_capacity(desired.len());
        let mut retire: Vec<(Arc<Deployment>, bool)> = Vec::new();
        for cfg in desired {
            match current.deployment(&cfg.id) {
                Some(old) if old.cfg == *cfg && old.policy == policy_of(cfg, &self.settings) => {
                    next.push(old.clone())
                }
                Some(old) if *old.labels == labels_of(cfg) => {
                    next.push(DeploymentMaker::remake(old, cfg, &self.settings));
                    if old.cfg != *cfg {
                        applied.changed.push(cfg.id.clone());
                    }
                }
                Some(old) => {
                    retire.push((old.clone(), true));
                    next.push(self.maker.make(cfg, &self.settings));
                    applied.changed.push(cfg.id.clone());
                }
                None => {
                    next.push(self.maker.make(cfg, &self.settings));
                    applied.added.push(cfg.id.clone());
                }
            }
        }
        for old in &current.deployments {
            if !next.iter().any(|d| d.cfg.id == old.cfg.id) {
                retire.push((old.clone(), true));
                applied.removed.push(old.cfg.id.clone());
            }
        }
        self.published
            .store(Arc::new(RoutingTable::new(next, self.settings.clone())));
        let now = now_ms();
        for (deployment, stop_actor) in retire {
            tracing::info!(deployment = %deployment.cfg.id, model_group = %deployment.cfg.model_name, "deployment retired; in-flight requests finish on it");
            self.retiring.push(Retiring {
                deployment,
                stop_actor,
                since_ms: now,
                idle_since_ms: None,
            });
        }
        if applied != ModelsApplied::default() {
            tracing::info!(added = ?applied.added, changed = ?applied.changed, removed = ?applied.removed, shadowed = ?applied.shadowed, "model list changed");
        }
        applied
    }

    /// Lets go of retired deployments whose last request has ended: their actors stop and their series
    /// go (unless a running deployment still has the same labels).
    fn retire(&mut self) {
        if self.retiring.is_empty() {
            return;
        }
        let now = now_ms();
        let table = self.published.load();
        let mut gone: Vec<Arc<DeploymentLabels>> = Vec::new();
        self.retiring.retain_mut(|r| {
            // Requests hold the table they started with (and its deployments) through retries and
            // fallbacks: the deployment is let go once only this list holds it and nothing is in flight.
            let busy = r.deployment.live.in_flight() > 0 || Arc::strong_count(&r.deployment) > 1;
            if busy && now - r.since_ms < RETIRE_MAX_MS {
                r.idle_since_ms = None;
                return true;
            }
            let idle = *r.idle_since_ms.get_or_insert(now);
            if now - idle < RETIRE_GRACE_MS && now - r.since_ms < RETIRE_MAX_MS {
                return true;
            }
            if r.stop_actor {
                r.deployment.addr.do_send(Stop);
            }
            let labels = &r.deployment.labels;
            if !table.deployments.iter().any(|d| *d.labels == **labels) {
                gone.push(labels.clone());
            }
            false
        });
        if let (Some(m), false) = (&self.maker.metrics, gone.is_empty()) {
            let running = table.deployments.iter().map(|d| d.labels.clone()).collect();
            m.do_send(DeploymentsRemoved {
                deployments: gone,
                running,
            });
        }
    }
}

/// The first table, published before the actor starts so the first request finds it.
pub fn first_table(
    maker: &DeploymentMaker,
    file: &[DeploymentConfig],
    stored: &[DeploymentConfig],
    settings: &RouterSettings,
) -> RoutingTable {
    let mut list: Vec<Arc<Deployment>> = file.iter().map(|c| maker.make(c, settings)).collect();
    for s in stored {
        if !file.iter().any(|f| f.id == s.id) {
            list.push(maker.make(s, settings));
        }
    }
    RoutingTable::new(list, Arc::new(settings.clone()))
}

impl Actor for RouterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(RETIRE_CHECK, |act, _| act.retire());
        if self.stored_models.as_ref().is_some_and(|s| s.read_back) {
            ctx.run_interval(READ_BACK, |act, ctx| act.reload_stored(ctx));
        }
    }
}

/// How often replicas on one database read the stored deployments back.
const READ_BACK: Duration = Duration::from_secs(1);

impl RouterActor {
    /// Reads the stored deployments and applies them, one read at a time.
    fn reload_stored(&mut self, ctx: &mut Context<Self>) {
        let Some(s) = &self.stored_models else {
            return;
        };
        if self.loading {
            return;
        }
        self.loading = true;
        let (store, timeout) = (s.store.clone(), s.request_timeout);
        let began = self.stored_generation;
        ctx.spawn(
            async move { load_stored(&store, timeout).await }
                .into_actor(self)
                .map(move |loaded, act, _| {
                    act.loading = false;
                    match loaded {
                        // A change applied meanwhile read the store after this read: this one is older.
                        Ok(_) if act.stored_generation != began => {}
                        Ok(stored) if stored != act.stored => {
                            act.stored = stored;
                            act.apply();
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("cannot read the stored deployments: {e}"),
                    }
                }),
        );
    }
}

impl Handler<ReloadStored> for RouterActor {
    type Result = ();

    fn handle(&mut self, _: ReloadStored, ctx: &mut Context<Self>) {
        self.reload_stored(ctx);
    }
}

impl Handler<SetModels> for RouterActor {
    type Result = MessageResult<SetModels>;

    fn handle(&mut self, msg: SetModels, _: &mut Context<Self>) -> Self::Result {
        if let Some((file, settings)) = msg.file {
            self.file = file;
            self.settings = Arc::new(settings);
        }
        if let Some(stored) = msg.stored {
            self.stored = stored;
            self.stored_generation += 1;
        }
        MessageResult(self.apply())
    }
}

impl Handler<ShareCooldownsWith> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: ShareCooldownsWith, _: &mut Context<Self>) {
        for d in &self.published.load().deployments {
            d.addr.do_send(ShareCooldowns(msg.0.clone()));
        }
        self.maker.shared = Some(msg.0);
    }
}

impl Handler<Route> for RouterActor {
    type Result = Option<Arc<Deployment>>;

    fn handle(&mut self, msg: Route, _: &mut Context<Self>) -> Self::Result {
        let r = rand::random::<f64>();
        match self
            .published
            .load()
            .pick(&msg.model, now_ms(), r, msg.tokens)?
        {
            Pick::Chosen(d, _) => Some(d),
            Pick::Cooling { .. } | Pick::NoCapacity => None,
        }
    }
}
