//! MetricsActor: the only owner of the Prometheus registry. Every other part of the gateway sends it events
//! (`do_send`); it turns them into counter, gauge and histogram updates with the spec's names and labels, and
//! renders `/metrics`.
//!
//! Metric handles for the success path are resolved once per label set and cached, so a request costs one
//! hash lookup here, not one per family. Client-controlled label values (`end_user`, custom metadata) are
//! bounded: past a cap, new values fold into `other`, so totals stay exact and series stay finite.

use crate::accounts::{KeyEntry, Limits, TeamEntry};
use crate::config::MetricsSettings;
use crate::metrics::families::{Fam, Families};
use crate::metrics::render::{created_key, render};
use crate::metrics::system::{ServiceMetrics, SystemMetrics};
use crate::providers::wire::Usage;
use actix::prelude::*;
use prometheus::{Counter, CounterVec, Gauge, GaugeVec, Histogram, HistogramVec, Registry};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

// ---- messages -------------------------------------------------------------------------------------------

/// A batch of finished requests from one HTTP worker (see `actors/outbox.rs`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RequestsFinished(pub Vec<RequestFinished>);

/// One client request has been answered (successfully or not), with every upstream attempt it made.
pub struct RequestFinished {
    /// The model group asked for; `other` when it does not exist; empty when the body named none.
    pub requested_model: Arc<str>,
    pub end_user: Option<String>,
    pub key: Arc<KeyLabels>,
    /// Values of the configured custom metadata labels, in configuration order (`""` when absent).
    pub custom: Vec<String>,
    pub attempts: Vec<Attempt>,
    pub outcome: Outcome,
    /// The caller's key and team: their budget gauges are refreshed from the ledgers.
    pub key_entry: Option<Arc<KeyEntry>>,
    pub team_entry: Option<Arc<TeamEntry>>,
    /// The key's windows on the requested model, when it has model-specific limits.
    pub model_limits: Option<Arc<Limits>>,
    /// Fallback groups tried after the requested group failed, in order.
    pub fallbacks: Vec<FallbackTried>,
}

/// One fallback model group tried for a request.
pub struct FallbackTried {
    pub fallback_model: Arc<str>,
    pub ok: bool,
    /// The requested group's failure that sent the request to its fallbacks: (status, exception class).
    pub cause: (u16, String),
}

/// The gauge `llm_deployment_state` of one deployment has a new value.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeploymentStateChanged {
    pub deployment: Arc<DeploymentLabels>,
    pub state: HealthState,
    /// Set when the change is a new cooldown, with the status of the failure that started it.
    pub cooled_down: Option<u16>,
}

/// Budget gauges changed outside a request (create, update, reset), or entities went away.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BudgetsChanged {
    pub gauges: Vec<BudgetGauge>,
    pub removed: Vec<BudgetScope>,
}

/// Renders the text exposition.
#[derive(Message)]
#[rtype(result = "String")]
pub struct Render;

// ---- message payloads -----------------------------------------------------------------------------------

/// Whose budget a gauge describes.
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetScope {
    Key {
        hashed_api_key: String,
        api_key_alias: String,
    },
    Team {
        team_id: String,
        team_alias: String,
    },
}

/// The budget of a key or a team as the gauges show it.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetGauge {
    pub scope: BudgetScope,
    pub max_budget: Option<f64>,
    /// USD.
    pub spend: f64,
    pub reset_at_ms: Option<i64>,
}

/// Labels describing the caller: virtual key, team and internal user. Empty until virtual keys exist.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct KeyLabels {
    pub hashed_api_key: String,
    pub api_key_alias: String,
    pub team: String,
    pub team_alias: String,
    pub user: String,
}

/// Labels describing one deployment, built once at startup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeploymentLabels {
    pub model_group: String,
    /// The model name the upstream knows (`gpt-4o` for `openai/gpt-4o`).
    pub llm_model_name: String,
    pub model_id: String,
    pub api_base: String,
    pub api_provider: &'static str,
}

/// Health of a deployment as `llm_deployment_state` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Healthy = 0,
    PartialOutage = 1,
    CompleteOutage = 2,
}

/// One upstream call.
pub struct Attempt {
    pub deployment: Arc<DeploymentLabels>,
    /// `Err((status, exception_class))` for a failed call.
    pub result: Result<(), (u16, String)>,
    pub remaining_requests: Option<f64>,
    pub remaining_tokens: Option<f64>,
}

pub enum Outcome {
    Success {
        deployment: Arc<DeploymentLabels>,
        usage: Usage,
        /// USD.
        cost: f64,
        /// Seconds from arrival to the last byte sent.
        total_latency: f64,
        /// Seconds of the upstream call that answered.
        api_latency: f64,
        /// Seconds from the upstream call's start to its first token (streams only).
        time_to_first_token: Option<f64>,
    },
    Failure {
        status: u16,
        exception_class: String,
    },
}

// ---- the actor ------------------------------------------------------------------------------------------

/// Longest label value taken from client input; longer values fold into `other`.
pub const MAX_LABEL_VALUE_CHARS: usize = 200;
/// Distinct values admitted per custom metadata label before new ones fold into `other`.
pub const CUSTOM_LABEL_MAX_VALUES: usize = 1000;
pub const OVERFLOW: &str = "other";

/// Handles of the success path for one label set.
struct SuccessHandles {
    proxy_total: Counter,
    requests: Counter,
    spend: Counter,
    total_tokens: Counter,
    input_tokens: Counter,
    output_tokens: Counter,
    total_latency: Histogram,
    overhead_latency: Histogram,
    api_latency: Histogram,
    ttft: Option<Histogram>,
    per_token: Option<Histogram>,
}

/// Admits label values up to a cap; later ones read as `other`.
struct Bounded {
    seen: HashSet<String>,
    cap: usize,
}

impl Bounded {
    /// `v` itself when admitted (now or before), else `other`.
    fn admit<'v>(&mut self, v: &'v str) -> &'v str {
        if v.is_empty() || self.seen.contains(v) {
            return v;
        }
        if v.chars().count() > MAX_LABEL_VALUE_CHARS || self.seen.len() >= self.cap {
            return OVERFLOW;
        }
        self.seen.insert(v.to_owned());
        v
    }
}

/// Metric handles of the success path cached per *source* of their labels: the caller's `KeyLabels`, the
/// deployment's `DeploymentLabels` (both shared `Arc`s, compared by address and held, so an address is never
/// reused while cached), the requested model, the admitted end user and custom values. Every label of the
/// cached families is a function of these, so a request's lookup hashes two addresses and a few short
/// strings and allocates nothing; label values are only resolved when a handle is made.
struct SeriesCache<V> {
    map: HashMap<u64, Vec<(Source, V)>>,
    len: usize,
}

struct Source {
    key: Arc<KeyLabels>,
    dep: Arc<DeploymentLabels>,
    model: Arc<str>,
    end_user: Box<str>,
    custom: Box<[String]>,
}

/// Entries kept before the cache starts over (a key edited many times leaves one entry per version).
const SERIES_CACHE_MAX: usize = 100_000;

impl<V> Default for SeriesCache<V> {
    fn default() -> Self {
        SeriesCache {
            map: HashMap::new(),
            len: 0,
        }
    }
}

impl<V> SeriesCache<V> {
    fn get_or_insert_with(
        &mut self,
        key: &Arc<KeyLabels>,
        dep: &Arc<DeploymentLabels>,
        model: &Arc<str>,
        end_user: &str,
        custom: &[String],
        make: impl FnOnce() -> V,
    ) -> &mut V {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (Arc::as_ptr(key) as usize).hash(&mut h);
        (Arc::as_ptr(dep) as usize).hash(&mut h);
        model.hash(&mut h);
        end_user.hash(&mut h);
        custom.hash(&mut h);
        let hash = h.finish();
        if self.len >= SERIES_CACHE_MAX && !self.map.contains_key(&hash) {
            self.map.clear();
            self.len = 0;
        }
        let bucket = self.map.entry(hash).or_default();
        let found = bucket.iter().position(|(s, _)| {
            Arc::ptr_eq(&s.key, key)
                && Arc::ptr_eq(&s.dep, dep)
                && *s.model == **model
                && *s.end_user == *end_user
                && *s.custom == *custom
        });
        let i = match found {
            Some(i) => i,
            None => {
                let source = Source {
                    key: key.clone(),
                    dep: dep.clone(),
                    model: model.clone(),
                    end_user: end_user.into(),
                    custom: custom.into(),
                };
                bucket.push((source, make()));
                self.len += 1;
                bucket.len() - 1
            }
        };
        &mut bucket[i].1
    }
}

/// The label value a series past `prometheus_max_series_per_metric` gets for every label.
const OVER_CAP: &str = "other";

/// Every request-driven series (counters, histograms) made so far, with when (the `_created` samples),
/// and how many per family: past `llm_settings.prometheus_max_series_per_metric`, a new label set folds
/// into the family's one `other` series and is counted in `llm_metrics_series_dropped_total`, so no
/// client can grow memory without bound whatever it sends.
pub struct SeriesBook {
    created: HashMap<String, f64>,
    per_family: HashMap<&'static str, usize>,
    cap: usize,
    /// `llm_metrics_series_dropped_total{metric}`.
    dropped: CounterVec,
}

impl SeriesBook {
    /// The label values to use: `vals` when the series exists or its family has room, else `other`.
    fn admit<'v>(
        &mut self,
        family: &'static str,
        names: &[String],
        vals: Vec<&'v str>,
    ) -> Vec<&'v str> {
        let key = created_key(family, names, &vals);
        if self.created.contains_key(&key) {
            return vals;
        }
        let n = self.per_family.entry(family).or_insert(0);
        if *n < self.cap {
            *n += 1;
            self.created.insert(key, now_unix());
            return vals;
        }
        self.dropped.with_label_values(&[family]).inc();
        let other = vec![OVER_CAP; vals.len()];
        self.created
            .entry(created_key(family, names, &other))
            .or_insert_with(now_unix);
        other
    }
}

pub struct MetricsActor {
    registry: Registry,
    fam: Families,
    created: SeriesBook,
    success: SeriesCache<SuccessHandles>,
    deployment_success: SeriesCache<(Counter, Counter)>,
    end_users: Bounded,
    custom: Vec<Bounded>,
    custom_names: Vec<String>,
    /// Budget gauge handles per key hash or team id, with the shape they were made for.
    budget_handles: HashMap<String, ((bool, bool), BudgetHandles)>,
    /// Remaining model-limit gauges per key hash: (model, requests, tokens).
    model_limit_handles: HashMap<String, Vec<ModelLimitHandles>>,
    /// `llm_self_latency`, with `prometheus_system`.
    self_latency: Option<Arc<ServiceMetrics>>,
}

type ModelLimitHandles = (Arc<str>, Option<Gauge>, Option<Gauge>);

#[derive(Clone)]
struct BudgetHandles {
    max: Option<Gauge>,
    remaining: Gauge,
    hours: Option<Gauge>,
}

impl Actor for MetricsActor {
    type Context = Context<Self>;
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Everything a label value can come from, for one event. `get` answers by label name.
#[derive(Clone, Copy)]
struct LabelCtx<'a> {
    end_user: &'a str,
    key: &'a KeyLabels,
    requested_model: &'a str,
    dep: Option<&'a DeploymentLabels>,
    custom_names: &'a [String],
    custom: &'a [String],
    status: &'a str,
    class: &'a str,
    fallback_model: &'a str,
}

impl<'a> LabelCtx<'a> {
    fn get(&self, name: &str) -> &'a str {
        let dep = |f: fn(&'a DeploymentLabels) -> &'a str| self.dep.map(f).unwrap_or("");
        match name {
            "end_user" => self.end_user,
            "hashed_api_key" => &self.key.hashed_api_key,
            "api_key_alias" => &self.key.api_key_alias,
            "team" => &self.key.team,
            "team_alias" => &self.key.team_alias,
            "user" => &self.key.user,
            "requested_model" => self.requested_model,
            "status_code" | "exception_status" => self.status,
            "exception_class" => self.class,
            "fallback_model" => self.fallback_model,
            "model" | "llm_model_name" => dep(|d| &d.llm_model_name),
            "model_group" => dep(|d| &d.model_group),
            "model_id" => dep(|d| &d.model_id),
            "api_base" => dep(|d| &d.api_base),
            "api_provider" => dep(|d| d.api_provider),
            other => self
                .custom_names
                .iter()
                .position(|n| n == other)
                .and_then(|i| self.custom.get(i))
                .map(String::as_str)
                .unwrap_or(""),
        }
    }

    fn values(&self, names: &[String]) -> Vec<&'a str> {
        names.iter().map(|n| self.get(n)).collect()
    }
}

impl MetricsActor {
    /// `system`: the `prometheus_system` families, registered here too when given.
    pub fn new(settings: &MetricsSettings, system: Option<Arc<SystemMetrics>>) -> MetricsActor {
        let registry = Registry::new();
        let mut fam = Families::register(&registry, settings);
        if let Some(sys) = &system {
            fam.add_system(&registry, sys);
        }
        let dropped = fam.series_dropped.vec.clone();
        MetricsActor {
            self_latency: system.as_ref().map(|s| s.self_.clone()),
            registry,
            custom: (0..fam.custom_labels)
                .map(|_| Bounded {
                    seen: HashSet::new(),
                    cap: CUSTOM_LABEL_MAX_VALUES,
                })
                .collect(),
            custom_names: settings
                .custom_metadata_labels
                .iter()
                .map(|c| c.label.clone())
                .collect(),
            fam,
            created: SeriesBook {
                created: HashMap::new(),
                per_family: HashMap::new(),
                cap: settings.max_series_per_family,
                dropped,
            },
            success: SeriesCache::default(),
            deployment_success: SeriesCache::default(),
            end_users: Bounded {
                seen: HashSet::new(),
                cap: settings.end_user_max_series,
            },
            budget_handles: HashMap::new(),
            model_limit_handles: HashMap::new(),
        }
    }

    /// One finished request, as the `RequestsFinished` handler applies it (for benchmarks and tests).
    pub fn record(&mut self, event: RequestFinished) {
        self.finish(event);
    }

    /// The whole exposition, as `/metrics` serves it (for benchmarks and tests).
    pub fn render_text(&mut self) -> String {
        render(&self.fam.descs, &self.registry.gather(), &self.created.created)
    }

    fn counter(created: &mut SeriesBook, f: &Fam<CounterVec>, ctx: &LabelCtx) -> Counter {
        let vals = created.admit(f.name, &f.labels, ctx.values(&f.labels));
        f.vec.with_label_values(&vals)
    }

    fn histogram(created: &mut SeriesBook, f: &Fam<HistogramVec>, ctx: &LabelCtx) -> Histogram {
        let vals = created.admit(f.name, &f.labels, ctx.values(&f.labels));
        f.vec.with_label_values(&vals)
    }

    fn gauge(f: &Fam<GaugeVec>, ctx: &LabelCtx) -> Gauge {
        f.vec.with_label_values(&ctx.values(&f.labels))
    }

    fn finish(&mut self, msg: RequestFinished) {
        let now = now_unix() * 1000.0;
        if let Some(k) = &msg.key_entry {
            let labels = || BudgetScope::Key {
                hashed_api_key: k.rec.token.clone(),
                api_key_alias: k.rec.key_alias.clone().unwrap_or_default(),
            };
            self.set_budget(
                &k.rec.token,
                labels,
                k.rec.max_budget,
                k.ledger.spend_micros(),
                k.ledger.reset_at(),
                now,
            );
            if let Some(ml) = &msg.model_limits {
                self.set_model_limits(k, &msg.requested_model, ml);
            }
        }
        if let Some(t) = &msg.team_entry {
            let labels = || BudgetScope::Team {
                team_id: t.rec.team_id.clone(),
                team_alias: t.rec.team_alias.clone().unwrap_or_default(),
            };
            self.set_budget(
                &t.rec.team_id,
                labels,
                t.rec.max_budget,
                t.ledger.spend_micros(),
                t.ledger.reset_at(),
                now,
            );
        }
        let end_user = match msg.end_user.as_deref() {
            Some(u) => self.end_users.admit(u),
            None => "",
        };
        let custom: Vec<String> = msg
            .custom
            .iter()
            .zip(self.custom.iter_mut())
            .map(|(v, b)| b.admit(v).to_owned())
            .collect();
        let base = LabelCtx {
            end_user,
            key: &msg.key,
            requested_model: &msg.requested_model,
            dep: None,
            custom_names: &self.custom_names,
            custom: &custom,
            status: "",
            class: "",
            fallback_model: "",
        };
        let (fam, created) = (&self.fam, &mut self.created);

        for f in &msg.fallbacks {
            let status = f.cause.0.to_string();
            let ctx = LabelCtx {
                status: &status,
                class: &f.cause.1,
                fallback_model: &f.fallback_model,
                ..base
            };
            let family = if f.ok {
                &fam.successful_fallbacks
            } else {
                &fam.failed_fallbacks
            };
            Self::counter(created, family, &ctx).inc();
        }

        // Upstream attempts: deployment-level counters and the provider's remaining-limit headers.
        for a in &msg.attempts {
            let d = &*a.deployment;
            match &a.result {
                Ok(()) => {
                    let ctx = LabelCtx {
                        dep: Some(d),
                        ..base
                    };
                    let (ok, total) = self.deployment_success.get_or_insert_with(
                        &msg.key,
                        &a.deployment,
                        &msg.requested_model,
                        end_user,
                        &custom,
                        || {
                            (
                                Self::counter(created, &fam.deployment_success, &ctx),
                                Self::counter(created, &fam.deployment_total, &ctx),
                            )
                        },
                    );
                    ok.inc();
                    total.inc();
                }
                Err((status, class)) => {
                    let status = status.to_string();
                    let ctx = LabelCtx {
                        dep: Some(d),
                        status: &status,
                        class,
                        ..base
                    };
                    Self::counter(created, &fam.deployment_failure, &ctx).inc();
                    Self::counter(created, &fam.deployment_total, &ctx).inc();
                    Self::counter(created, &fam.api_failed_requests_deprecated, &ctx).inc();
                }
            }
            let ctx = LabelCtx {
                dep: Some(d),
                ..base
            };
            if let Some(v) = a.remaining_requests {
                Self::gauge(&fam.remaining_requests, &ctx).set(v);
            }
            if let Some(v) = a.remaining_tokens {
                Self::gauge(&fam.remaining_tokens, &ctx).set(v);
            }
        }

        match msg.outcome {
            Outcome::Failure {
                status,
                exception_class,
            } => {
                let status = status.to_string();
                let ctx = LabelCtx {
                    status: &status,
                    class: &exception_class,
                    ..base
                };
                Self::counter(created, &fam.proxy_failed_requests, &ctx).inc();
                Self::counter(created, &fam.proxy_total_requests, &ctx).inc();
            }
            Outcome::Success {
                deployment,
                usage,
                cost,
                total_latency,
                api_latency,
                time_to_first_token,
            } => {
                let ctx = LabelCtx {
                    dep: Some(&deployment),
                    status: "200",
                    ..base
                };
                let h = self.success.get_or_insert_with(
                    &msg.key,
                    &deployment,
                    &msg.requested_model,
                    end_user,
                    &custom,
                    || SuccessHandles {
                        proxy_total: Self::counter(created, &fam.proxy_total_requests, &ctx),
                        requests: Self::counter(created, &fam.requests_deprecated, &ctx),
                        spend: Self::counter(created, &fam.spend, &ctx),
                        total_tokens: Self::counter(created, &fam.total_tokens, &ctx),
                        input_tokens: Self::counter(created, &fam.input_tokens, &ctx),
                        output_tokens: Self::counter(created, &fam.output_tokens, &ctx),
                        total_latency: Self::histogram(created, &fam.request_total_latency, &ctx),
                        overhead_latency: Self::histogram(created, &fam.overhead_latency, &ctx),
                        api_latency: Self::histogram(created, &fam.api_latency, &ctx),
                        ttft: None,
                        per_token: None,
                    },
                );
                h.proxy_total.inc();
                h.requests.inc();
                h.spend.inc_by(cost.max(0.0));
                h.total_tokens.inc_by(usage.total_tokens as f64);
                h.input_tokens.inc_by(usage.prompt_tokens as f64);
                h.output_tokens.inc_by(usage.completion_tokens as f64);
                h.total_latency.observe(total_latency);
                if let Some(s) = &self.self_latency {
                    s.ok(std::time::Duration::from_secs_f64(api_latency.max(0.0)));
                }
                h.api_latency.observe(api_latency);
                h.overhead_latency
                    .observe((total_latency - api_latency).max(0.0));
                // Created on first use so that a label set never streamed has no empty TTFT series.
                if let Some(t) = time_to_first_token {
                    h.ttft
                        .get_or_insert_with(|| {
                            Self::histogram(created, &fam.time_to_first_token, &ctx)
                        })
                        .observe(t);
                }
                if usage.completion_tokens > 0 {
                    h.per_token
                        .get_or_insert_with(|| {
                            Self::histogram(created, &fam.latency_per_output_token, &ctx)
                        })
                        .observe(api_latency / usage.completion_tokens as f64);
                }
            }
        }
    }
}

impl Handler<RequestsFinished> for MetricsActor {
    type Result = ();

    fn handle(&mut self, msg: RequestsFinished, _: &mut Context<Self>) {
        for event in msg.0 {
            self.finish(event);
        }
    }
}

impl Handler<DeploymentStateChanged> for MetricsActor {
    type Result = ();

    fn handle(&mut self, msg: DeploymentStateChanged, _: &mut Context<Self>) {
        let key = KeyLabels::default();
        let ctx = LabelCtx {
            end_user: "",
            key: &key,
            requested_model: "",
            dep: Some(&msg.deployment),
            custom_names: &[],
            custom: &[],
            status: "",
            class: "",
            fallback_model: "",
        };
        Self::gauge(&self.fam.deployment_state, &ctx).set(msg.state as i32 as f64);
        if let Some(status) = msg.cooled_down {
            let status = status.to_string();
            let ctx = LabelCtx {
                status: &status,
                ..ctx
            };
            Self::counter(&mut self.created, &self.fam.deployment_cooled_down, &ctx).inc();
        }
    }
}

impl MetricsActor {
    fn budget_values<'a>(f: &Fam<GaugeVec>, scope: &'a BudgetScope) -> Vec<&'a str> {
        f.labels
            .iter()
            .map(|n| match (scope, n.as_str()) {
                (BudgetScope::Key { hashed_api_key, .. }, "hashed_api_key") => {
                    hashed_api_key.as_str()
                }
                (BudgetScope::Key { api_key_alias, .. }, "api_key_alias") => api_key_alias.as_str(),
                (BudgetScope::Team { team_id, .. }, "team_id") => team_id.as_str(),
                (BudgetScope::Team { team_alias, .. }, "team_alias") => team_alias.as_str(),
                _ => "",
            })
            .collect()
    }

    fn budget_families(&self, scope: &BudgetScope) -> [&Fam<GaugeVec>; 3] {
        match scope {
            BudgetScope::Key { .. } => [
                &self.fam.key_max_budget,
                &self.fam.key_remaining_budget,
                &self.fam.key_remaining_hours,
            ],
            BudgetScope::Team { .. } => [
                &self.fam.team_max_budget,
                &self.fam.team_remaining_budget,
                &self.fam.team_remaining_hours,
            ],
        }
    }

    /// Max (when set), remaining (`+Inf` without a max, negative when overspent) and hours to reset of one
    /// key or team. Handles are cached by id and shape (max set or not, reset time set or not), so a
    /// request's update is a map lookup by `&str` and three atomic stores.
    fn set_budget(
        &mut self,
        id: &str,
        labels: impl FnOnce() -> BudgetScope,
        max_budget: Option<f64>,
        spend_micros: i64,
        reset_at_ms: Option<i64>,
        now_ms: f64,
    ) {
        let shape = (max_budget.is_some(), reset_at_ms.is_some());
        let handles = match self.budget_handles.get(id).filter(|h| h.0 == shape) {
            Some(h) => &h.1,
            None => {
                let scope = labels();
                let [max, remaining, hours] = self.budget_families(&scope);
                let v = Self::budget_values(max, &scope);
                let h = BudgetHandles {
                    max: if shape.0 {
                        Some(max.vec.with_label_values(&v))
                    } else {
                        let _ = max.vec.remove_label_values(&v);
                        None
                    },
                    remaining: remaining.vec.with_label_values(&v),
                    hours: if shape.1 {
                        Some(hours.vec.with_label_values(&v))
                    } else {
                        let _ = hours.vec.remove_label_values(&v);
                        None
                    },
                };
                self.budget_handles.insert(id.to_owned(), (shape, h));
                &self.budget_handles[id].1
            }
        };
        match (max_budget, &handles.max) {
            (Some(m), Some(h)) => {
                h.set(m);
                // In micro-dollars, so 0.1 - 0.024 reads 0.076, not 0.07600000000000001.
                handles
                    .remaining
                    .set(crate::store::usd(crate::store::micros(m) - spend_micros));
            }
            _ => handles.remaining.set(f64::INFINITY),
        }
        if let (Some(at), Some(h)) = (reset_at_ms, &handles.hours) {
            h.set((at as f64 - now_ms) / 3_600_000.0);
        }
    }

    /// Budget changes from the management API or a reset: labels may have changed, so handles are rebuilt.
    fn set_budgets(&mut self, gauges: &[BudgetGauge]) {
        let now = now_unix() * 1000.0;
        for g in gauges {
            let id = match &g.scope {
                BudgetScope::Key { hashed_api_key, .. } => hashed_api_key.clone(),
                BudgetScope::Team { team_id, .. } => team_id.clone(),
            };
            self.budget_handles.remove(&id);
            self.set_budget(
                &id,
                || g.scope.clone(),
                g.max_budget,
                crate::store::micros(g.spend),
                g.reset_at_ms,
                now,
            );
        }
    }

    /// What is left of a key's model-specific rpm / tpm in the current minute.
    fn set_model_limits(&mut self, k: &KeyEntry, model: &Arc<str>, limits: &Limits) {
        let minute = crate::accounts::current_minute(crate::store::now_ms());
        let rpm = k.rec.model_rpm_limit.get(&**model).copied();
        let tpm = k.rec.model_tpm_limit.get(&**model).copied();
        if !self.model_limit_handles.contains_key(&k.rec.token) {
            self.model_limit_handles
                .insert(k.rec.token.clone(), Vec::new());
        }
        let Some(per_key) = self.model_limit_handles.get_mut(&k.rec.token) else {
            return;
        };
        let slot = match per_key.iter().position(|(m, _, _)| m == model) {
            Some(i) => i,
            None => {
                let v = [
                    k.rec.token.as_str(),
                    k.rec.key_alias.as_deref().unwrap_or(""),
                    &**model,
                ];
                let names = &self.fam.key_remaining_requests_for_model.labels;
                let vals: Vec<&str> = names
                    .iter()
                    .map(|n| match n.as_str() {
                        "hashed_api_key" => v[0],
                        "api_key_alias" => v[1],
                        _ => v[2],
                    })
                    .collect();
                let r = rpm.map(|_| {
                    self.fam
                        .key_remaining_requests_for_model
                        .vec
                        .with_label_values(&vals)
                });
                let t = tpm.map(|_| {
                    self.fam
                        .key_remaining_tokens_for_model
                        .vec
                        .with_label_values(&vals)
                });
                per_key.push((model.clone(), r, t));
                per_key.len() - 1
            }
        };
        let (_, r, t) = &per_key[slot];
        if let (Some(g), Some(l)) = (r, rpm) {
            g.set(l.saturating_sub(limits.requests_used(minute)) as f64);
        }
        if let (Some(g), Some(l)) = (t, tpm) {
            g.set(l.saturating_sub(limits.tokens_used(minute)) as f64);
        }
    }

    fn remove_budgets(&mut self, scopes: &[BudgetScope]) {
        self.budget_handles.clear();
        self.model_limit_handles.clear();
        for s in scopes {
            for f in self.budget_families(s) {
                let _ = f.vec.remove_label_values(&Self::budget_values(f, s));
            }
        }
    }
}

impl Handler<BudgetsChanged> for MetricsActor {
    type Result = ();

    fn handle(&mut self, msg: BudgetsChanged, _: &mut Context<Self>) {
        self.set_budgets(&msg.gauges);
        self.remove_budgets(&msg.removed);
    }
}

impl Handler<Render> for MetricsActor {
    type Result = String;

    fn handle(&mut self, _: Render, _: &mut Context<Self>) -> String {
        render(
            &self.fam.descs,
            &self.registry.gather(),
            &self.created.created,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(id: &str) -> Arc<DeploymentLabels> {
        Arc::new(DeploymentLabels {
            model_group: "g".into(),
            llm_model_name: "m".into(),
            model_id: id.into(),
            api_base: "http://127.0.0.1:1".into(),
            api_provider: "openai",
        })
    }

    #[test]
    fn series_cache_makes_one_entry_per_source_and_starts_over_past_its_cap() {
        let mut cache: SeriesCache<usize> = SeriesCache::default();
        let (k1, k2) = (
            Arc::new(KeyLabels::default()),
            Arc::new(KeyLabels::default()),
        );
        let (d1, d2) = (dep("a"), dep("b"));
        let model: Arc<str> = Arc::from("g");
        let mut made = 0;
        let mut get = |c: &mut SeriesCache<usize>, k: &Arc<KeyLabels>, d, m: &str, eu: &str| {
            *c.get_or_insert_with(k, d, &Arc::from(m), eu, &[], || {
                made += 1;
                made
            })
        };
        assert_eq!(get(&mut cache, &k1, &d1, &model, ""), 1);
        assert_eq!(
            get(&mut cache, &k1, &d1, &model, ""),
            1,
            "same source, same entry"
        );
        // Another Arc with equal labels is another source (a key edited since); so is every other field.
        assert_eq!(get(&mut cache, &k2, &d1, &model, ""), 2);
        assert_eq!(get(&mut cache, &k1, &d2, &model, ""), 3);
        assert_eq!(get(&mut cache, &k1, &d1, "other", ""), 4);
        assert_eq!(get(&mut cache, &k1, &d1, &model, "customer"), 5);
        assert_eq!(get(&mut cache, &k1, &d1, &model, "customer"), 5);
        assert_eq!(cache.len, 5);
        cache.len = SERIES_CACHE_MAX;
        assert_eq!(
            get(&mut cache, &k1, &d1, &model, ""),
            1,
            "a hit does not clear"
        );
        assert_eq!(
            get(&mut cache, &k1, &d1, &model, "new"),
            6,
            "a miss at the cap starts over"
        );
        assert_eq!(cache.len, 1);
        assert_eq!(get(&mut cache, &k1, &d1, &model, ""), 7);
    }
}
