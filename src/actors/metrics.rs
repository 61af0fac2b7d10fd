//! MetricsActor: the only owner of the Prometheus registry. Every other part of the gateway sends it events
//! (`do_send`); it turns them into counter, gauge and histogram updates with the spec's names and labels, and
//! renders `/metrics`.
//!
//! Metric handles for the success path are resolved once per label set and cached, so a request costs one
//! hash lookup here, not one per family. Client-controlled label values (`end_user`, custom metadata) are
//! bounded: past a cap, new values fold into `other`, so totals stay exact and series stay finite.

use crate::config::MetricsSettings;
use crate::metrics::families::{Fam, Families};
use crate::metrics::render::{created_key, render};
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
    /// Budgets of the caller's key and team after this request.
    pub budgets: Vec<BudgetGauge>,
    pub model_limits: Option<ModelLimitGauge>,
}

/// The gauge `llm_deployment_state` of one deployment has a new value.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeploymentStateChanged {
    pub deployment: Arc<DeploymentLabels>,
    pub state: HealthState,
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

/// What is left of a key's model-specific limits in the current minute.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLimitGauge {
    pub model: Arc<str>,
    pub remaining_requests: Option<f64>,
    pub remaining_tokens: Option<f64>,
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
    fn admit(&mut self, v: &str) -> String {
        if v.is_empty() || self.seen.contains(v) {
            return v.to_owned();
        }
        if v.chars().count() > MAX_LABEL_VALUE_CHARS || self.seen.len() >= self.cap {
            return OVERFLOW.to_owned();
        }
        self.seen.insert(v.to_owned());
        v.to_owned()
    }
}

pub struct MetricsActor {
    registry: Registry,
    fam: Families,
    created: HashMap<String, f64>,
    success: HashMap<String, SuccessHandles>,
    deployment_success: HashMap<String, (Counter, Counter)>,
    end_users: Bounded,
    custom: Vec<Bounded>,
    custom_names: Vec<String>,
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
    pub fn new(settings: &MetricsSettings) -> MetricsActor {
        let registry = Registry::new();
        let fam = Families::register(&registry, settings);
        MetricsActor {
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
            created: HashMap::new(),
            success: HashMap::new(),
            deployment_success: HashMap::new(),
            end_users: Bounded {
                seen: HashSet::new(),
                cap: settings.end_user_max_series,
            },
        }
    }

    fn counter(created: &mut HashMap<String, f64>, f: &Fam<CounterVec>, ctx: &LabelCtx) -> Counter {
        let vals = ctx.values(&f.labels);
        created
            .entry(created_key(f.name, &f.labels, &vals))
            .or_insert_with(now_unix);
        f.vec.with_label_values(&vals)
    }

    fn histogram(
        created: &mut HashMap<String, f64>,
        f: &Fam<HistogramVec>,
        ctx: &LabelCtx,
    ) -> Histogram {
        let vals = ctx.values(&f.labels);
        created
            .entry(created_key(f.name, &f.labels, &vals))
            .or_insert_with(now_unix);
        f.vec.with_label_values(&vals)
    }

    fn gauge(f: &Fam<GaugeVec>, ctx: &LabelCtx) -> Gauge {
        f.vec.with_label_values(&ctx.values(&f.labels))
    }

    fn finish(&mut self, msg: RequestFinished) {
        self.set_budgets(&msg.budgets);
        if let Some(ml) = &msg.model_limits {
            let key = &*msg.key;
            let get = |n: &str| -> String {
                match n {
                    "hashed_api_key" => key.hashed_api_key.clone(),
                    "api_key_alias" => key.api_key_alias.clone(),
                    "model" => ml.model.to_string(),
                    _ => String::new(),
                }
            };
            let vals = |f: &Fam<GaugeVec>| f.labels.iter().map(|n| get(n)).collect::<Vec<String>>();
            if let Some(v) = ml.remaining_requests {
                let l = vals(&self.fam.key_remaining_requests_for_model);
                let r: Vec<&str> = l.iter().map(String::as_str).collect();
                self.fam
                    .key_remaining_requests_for_model
                    .vec
                    .with_label_values(&r)
                    .set(v);
            }
            if let Some(v) = ml.remaining_tokens {
                let l = vals(&self.fam.key_remaining_tokens_for_model);
                let r: Vec<&str> = l.iter().map(String::as_str).collect();
                self.fam
                    .key_remaining_tokens_for_model
                    .vec
                    .with_label_values(&r)
                    .set(v);
            }
        }
        let end_user = match msg.end_user.as_deref() {
            Some(u) => self.end_users.admit(u),
            None => String::new(),
        };
        let custom: Vec<String> = msg
            .custom
            .iter()
            .zip(self.custom.iter_mut())
            .map(|(v, b)| b.admit(v))
            .collect();
        let base = LabelCtx {
            end_user: &end_user,
            key: &msg.key,
            requested_model: &msg.requested_model,
            dep: None,
            custom_names: &self.custom_names,
            custom: &custom,
            status: "",
            class: "",
        };
        let (fam, created) = (&self.fam, &mut self.created);

        // Upstream attempts: deployment-level counters and the provider's remaining-limit headers.
        for a in &msg.attempts {
            let d = &*a.deployment;
            match &a.result {
                Ok(()) => {
                    let ctx = LabelCtx {
                        dep: Some(d),
                        ..base
                    };
                    let key = ctx.values(&fam.deployment_success.labels).join("\u{1}");
                    let (ok, total) = self.deployment_success.entry(key).or_insert_with(|| {
                        (
                            Self::counter(created, &fam.deployment_success, &ctx),
                            Self::counter(created, &fam.deployment_total, &ctx),
                        )
                    });
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
                // The usage labels plus the deployment id cover every label of the cached families.
                let mut key = ctx.values(&fam.request_total_latency.labels).join("\u{1}");
                key.push('\u{1}');
                key.push_str(&deployment.model_id);
                let h = self.success.entry(key).or_insert_with(|| SuccessHandles {
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
                });
                h.proxy_total.inc();
                h.requests.inc();
                h.spend.inc_by(cost.max(0.0));
                h.total_tokens.inc_by(usage.total_tokens as f64);
                h.input_tokens.inc_by(usage.prompt_tokens as f64);
                h.output_tokens.inc_by(usage.completion_tokens as f64);
                h.total_latency.observe(total_latency);
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
        };
        Self::gauge(&self.fam.deployment_state, &ctx).set(msg.state as i32 as f64);
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

    /// Max (when set), remaining (`+Inf` without a max, negative when overspent) and hours to reset.
    fn set_budgets(&mut self, gauges: &[BudgetGauge]) {
        let now = now_unix() * 1000.0;
        for g in gauges {
            let [max, remaining, hours] = self.budget_families(&g.scope);
            let v = Self::budget_values(max, &g.scope);
            match g.max_budget {
                Some(m) => {
                    max.vec.with_label_values(&v).set(m);
                    // In micro-dollars first, so 0.1 - 0.024 reads 0.076, not 0.07600000000000001.
                    let left = crate::store::micros(m) - crate::store::micros(g.spend);
                    remaining
                        .vec
                        .with_label_values(&v)
                        .set(crate::store::usd(left));
                }
                None => {
                    let _ = max.vec.remove_label_values(&v);
                    remaining.vec.with_label_values(&v).set(f64::INFINITY);
                }
            }
            match g.reset_at_ms {
                Some(at) => hours
                    .vec
                    .with_label_values(&v)
                    .set((at as f64 - now) / 3_600_000.0),
                None => {
                    let _ = hours.vec.remove_label_values(&v);
                }
            }
        }
    }

    fn remove_budgets(&mut self, scopes: &[BudgetScope]) {
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
        render(&self.fam.descs, &self.registry.gather(), &self.created)
    }
}
