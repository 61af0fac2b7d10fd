//! MetricsActor: the only owner of the Prometheus registry. Every other part of the gateway sends it events
//! (`do_send`); it turns them into counter, gauge and histogram updates with the spec's names and labels, and
//! renders `/metrics`.
//!
//! Metric handles for the success path are resolved once per label set and cached, so a request costs one
//! hash lookup here, not one per family. Client-controlled label values (`end_user`, custom metadata) are
//! bounded: past a cap, new values fold into `other`, so totals stay exact and series stay finite.

use crate::config::MetricsSettings;
use crate::labels::{BudgetScope, DeploymentLabels, KeyLabels};
use crate::metrics::families::{Fam, Families};
use crate::metrics::render::render;
pub use crate::metrics::store::Cursor;
use crate::metrics::store::{FamId, Sid, Store};
use crate::metrics::system::SystemMetrics;
use actix::prelude::*;
use prometheus::Registry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

mod budgets;
mod cache;
mod events;
use cache::{Bounded, SeriesCache};
pub use cache::{CUSTOM_LABEL_MAX_VALUES, MAX_LABEL_VALUE_CHARS, OVERFLOW};
pub use events::*;

// ---- the actor ------------------------------------------------------------------------------------------

/// Handles of the success path for one label set (`None`: the family is not made, or a gauge past the cap).
struct SuccessHandles {
    proxy_total: Option<Sid>,
    requests: Option<Sid>,
    spend: Option<Sid>,
    total_tokens: Option<Sid>,
    input_tokens: Option<Sid>,
    output_tokens: Option<Sid>,
    total_latency: Option<Sid>,
    overhead_latency: Option<Sid>,
    api_latency: Option<Sid>,
    ttft: Option<Option<Sid>>,
    per_token: Option<Option<Sid>>,
}

/// Render chunks are about this large: the actor returns to its updates between them.
pub const RENDER_CHUNK_BYTES: usize = 256 * 1024;

/// The next chunk of the exposition: `cursor: None` begins a scrape. Answers the text and where to go on
/// from (`None` when the exposition is complete).
#[derive(Message)]
#[rtype(result = "(String, Option<Cursor>)")]
pub struct RenderChunk {
    pub cursor: Option<Cursor>,
}

/// Deployments gone from the model list (their last request ended): their series go.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeploymentsRemoved {
    pub deployments: Vec<Arc<DeploymentLabels>>,
    /// The deployments still running: a remaining-limit gauge one of them shares (same group, base, model
    /// and provider; those gauges have no `model_id`) stays.
    pub running: Vec<Arc<DeploymentLabels>>,
}

pub struct MetricsActor {
    store: Store,
    fam: Families,
    /// The store generation the cached handles were resolved in; a removal invalidates them.
    cached_generation: u64,
    success: SeriesCache<SuccessHandles>,
    deployment_success: SeriesCache<(Option<Sid>, Option<Sid>)>,
    end_users: Bounded,
    custom: Vec<Bounded>,
    custom_names: Vec<String>,
    /// Budget gauge handles per scope kind (key, team, user, end user), by id.
    budget_handles: [BudgetHandleMap; 4],
    /// Remaining model-limit gauges per key hash: (model, requests, tokens).
    model_limit_handles: HashMap<String, Vec<ModelLimitHandles>>,
    /// The system families (`prometheus_system`) and `llm_self_latency`.
    system: Option<(Registry, Arc<SystemMetrics>)>,
    series_ttl: Option<u32>,
    end_user_ttl: Option<u32>,
    cleanup_every: std::time::Duration,
}

/// (model, whether the key had an rpm and a tpm limit for it when made, requests gauge, tokens gauge).
type ModelLimitHandles = (Arc<str>, (bool, bool), Option<Sid>, Option<Sid>);

/// Budget gauge handles of one scope kind, by id, with the shape (max set, reset set) they were made for.
type BudgetHandleMap = HashMap<String, ((bool, bool), BudgetHandles)>;

#[derive(Clone, Copy)]
struct BudgetHandles {
    max: Option<Sid>,
    remaining: Option<Sid>,
    hours: Option<Sid>,
}

impl Actor for MetricsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.series_ttl.is_some() || self.end_user_ttl.is_some() {
            ctx.run_interval(self.cleanup_every, |act, _| act.sweep());
        }
    }
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

fn inc(store: &mut Store, s: Option<Sid>, v: f64) {
    if let Some(s) = s {
        store.inc(s, v);
    }
}

fn set(store: &mut Store, s: Option<Sid>, v: f64) {
    if let Some(s) = s {
        store.set(s, v);
    }
}

fn observe(store: &mut Store, s: Option<Sid>, v: f64) {
    if let Some(s) = s {
        store.observe(s, v);
    }
}

fn secs(d: std::time::Duration) -> u32 {
    d.as_secs().min(u32::MAX as u64 - 1) as u32
}

impl MetricsActor {
    /// `system`: the `prometheus_system` families, rendered after the others when given.
    pub fn new(settings: &MetricsSettings, system: Option<Arc<SystemMetrics>>) -> MetricsActor {
        let mut store = Store::new(settings.max_series_per_family);
        let mut fam = Families::register(&mut store, settings);
        let system = system.map(|sys| {
            let registry = Registry::new();
            fam.add_system(&registry, &sys);
            (registry, sys)
        });
        MetricsActor {
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
            cached_generation: store.generation(),
            store,
            fam,
            success: SeriesCache::default(),
            deployment_success: SeriesCache::default(),
            end_users: Bounded {
                seen: HashSet::new(),
                cap: settings.end_user_max_series,
            },
            budget_handles: Default::default(),
            model_limit_handles: HashMap::new(),
            system,
            series_ttl: settings.series_ttl.map(secs),
            end_user_ttl: settings.end_user_series_ttl.map(secs),
            cleanup_every: settings.series_cleanup_interval,
        }
    }

    /// One finished request, as the `RequestsFinished` handler applies it (for benchmarks and tests).
    pub fn record(&mut self, event: RequestFinished) {
        self.before_updates();
        self.finish(event);
    }

    /// About how many heap bytes the series store takes (benchmarks).
    pub fn store_bytes(&self) -> usize {
        self.store.heap_bytes()
    }

    /// The whole exposition, as `/metrics` serves it (for benchmarks and tests).
    pub fn render_text(&mut self) -> String {
        let mut out = String::new();
        self.render_each(|chunk| out.push_str(chunk));
        out
    }

    /// The exposition a chunk at a time, as `/metrics` streams it (for benchmarks).
    pub fn render_each(&mut self, mut each: impl FnMut(&str)) {
        let mut cursor = None;
        loop {
            let (text, next) = self.render_chunk(cursor);
            each(&text);
            match next {
                Some(c) => cursor = Some(c),
                None => return,
            }
        }
    }

    fn render_chunk(&mut self, cursor: Option<Cursor>) -> (String, Option<Cursor>) {
        let cursor = cursor.unwrap_or_else(|| self.store.begin_render());
        let mut out = String::with_capacity(RENDER_CHUNK_BYTES + 4096);
        let next = self
            .store
            .render_chunk(cursor, &mut out, RENDER_CHUNK_BYTES);
        if next.is_none() {
            if let Some((registry, _)) = &self.system {
                render(&self.fam.system_descs, &registry.gather(), &mut out);
            }
        }
        (out, next)
    }

    /// Reads the clock for the updates that follow, and drops cached handles a removal made stale.
    fn before_updates(&mut self) {
        self.store.tick();
        if self.store.generation() != self.cached_generation {
            self.success.clear();
            self.deployment_success.clear();
            self.budget_handles.iter_mut().for_each(HashMap::clear);
            self.model_limit_handles.clear();
            self.cached_generation = self.store.generation();
        }
    }

    /// The families whose series come from requests (what `prometheus_metrics_ttl_seconds` applies to):
    /// all but the deployment states, the budget gauges and the dropped-series counter.
    fn request_families(&self) -> Vec<FamId> {
        let f = &self.fam;
        let kept = [
            &f.deployment_state,
            &f.series_dropped,
            &f.team_max_budget,
            &f.team_remaining_budget,
            &f.team_remaining_hours,
            &f.key_max_budget,
            &f.key_remaining_budget,
            &f.key_remaining_hours,
            &f.user_max_budget,
            &f.user_remaining_budget,
            &f.user_remaining_hours,
            &f.customer_max_budget,
            &f.customer_remaining_budget,
            &f.customer_remaining_hours,
        ]
        .map(|f| f.id);
        f.all()
            .into_iter()
            .filter_map(|f| f.id)
            .filter(|id| !kept.contains(&Some(*id)))
            .collect()
    }

    /// Removes idle series: request-driven ones after `prometheus_metrics_ttl_seconds`, those with an end
    /// user after `prometheus_end_user_metrics_ttl_seconds`; end users left in no series are forgotten, so
    /// the end-user cap counts active ones.
    fn sweep(&mut self) {
        let fams = self.request_families();
        let mut removed = 0;
        if let Some(ttl) = self.series_ttl {
            removed += self.store.sweep(&fams, ttl, None);
        }
        if let Some(ttl) = self.end_user_ttl {
            removed += self.store.sweep(&fams, ttl, Some("end_user"));
        }
        if removed > 0 {
            // Whichever pass removed an end user's last series frees its place under the cap.
            let mut seen = HashSet::new();
            self.store.values_of(&fams, "end_user", |v| {
                if !v.is_empty() && v != OVERFLOW {
                    seen.insert(v.to_owned());
                }
            });
            self.end_users.seen = seen;
            tracing::debug!(removed, "idle metric series removed");
        }
    }

    fn counter(store: &mut Store, f: &Fam, ctx: &LabelCtx) -> Option<Sid> {
        store.series(f.id?, &ctx.values(&f.labels))
    }

    fn finish(&mut self, msg: RequestFinished) {
        let now = crate::units::now_ms() as f64;
        if let Some(k) = &msg.key_entry {
            let labels = || BudgetScope::Key {
                hashed_api_key: k.rec.token.clone(),
                api_key_alias: k.rec.key_alias.clone().unwrap_or_default(),
            };
            self.set_budget(
                (0, &k.rec.token),
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
                (1, &t.rec.team_id),
                labels,
                t.rec.max_budget,
                t.ledger.spend_micros(),
                t.ledger.reset_at(),
                now,
            );
        }
        if let Some(u) = &msg.user_entry {
            let labels = || BudgetScope::User {
                user_id: u.rec.user_id.clone(),
            };
            self.set_budget(
                (2, &u.rec.user_id),
                labels,
                u.rec.max_budget,
                u.ledger.spend_micros(),
                u.ledger.reset_at(),
                now,
            );
        }
        if let Some(e) = msg
            .end_user_entry
            .as_ref()
            .filter(|e| e.rec.max_budget.is_some())
        {
            let labels = || BudgetScope::EndUser {
                end_user_id: e.rec.user_id.clone(),
            };
            self.set_budget(
                (3, &e.rec.user_id),
                labels,
                e.rec.max_budget,
                e.ledger.spend_micros(),
                e.ledger.reset_at(),
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
        let (fam, store) = (&self.fam, &mut self.store);

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
            let s = Self::counter(store, family, &ctx);
            inc(store, s, 1.0);
        }

        // Upstream attempts: deployment-level counters and the provider's remaining-limit headers.
        for a in &msg.attempts {
            let d = &*a.deployment;
            match &a.result {
                Ok(()) => {
                    let ctx = LabelCtx {
                        dep: Some(d),
                        end_user: "",
                        ..base
                    };
                    // The deployment families have no end_user label: one entry per key, not per end user.
                    let (ok, total) = *self.deployment_success.get_or_insert_with(
                        &msg.key,
                        &a.deployment,
                        &msg.requested_model,
                        "",
                        &custom,
                        || {
                            (
                                Self::counter(store, &fam.deployment_success, &ctx),
                                Self::counter(store, &fam.deployment_total, &ctx),
                            )
                        },
                    );
                    inc(store, ok, 1.0);
                    inc(store, total, 1.0);
                }
                Err((status, class)) => {
                    let status = status.to_string();
                    let ctx = LabelCtx {
                        dep: Some(d),
                        status: &status,
                        class,
                        ..base
                    };
                    for f in [
                        &fam.deployment_failure,
                        &fam.deployment_total,
                        &fam.api_failed_requests_deprecated,
                    ] {
                        let s = Self::counter(store, f, &ctx);
                        inc(store, s, 1.0);
                    }
                }
            }
            let ctx = LabelCtx {
                dep: Some(d),
                ..base
            };
            if let Some(v) = a.remaining_requests {
                let s = Self::counter(store, &fam.remaining_requests, &ctx);
                set(store, s, v);
            }
            if let Some(v) = a.remaining_tokens {
                let s = Self::counter(store, &fam.remaining_tokens, &ctx);
                set(store, s, v);
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
                for f in [&fam.proxy_failed_requests, &fam.proxy_total_requests] {
                    let s = Self::counter(store, f, &ctx);
                    inc(store, s, 1.0);
                }
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
                        proxy_total: Self::counter(store, &fam.proxy_total_requests, &ctx),
                        requests: Self::counter(store, &fam.requests_deprecated, &ctx),
                        spend: Self::counter(store, &fam.spend, &ctx),
                        total_tokens: Self::counter(store, &fam.total_tokens, &ctx),
                        input_tokens: Self::counter(store, &fam.input_tokens, &ctx),
                        output_tokens: Self::counter(store, &fam.output_tokens, &ctx),
                        total_latency: Self::counter(store, &fam.request_total_latency, &ctx),
                        overhead_latency: Self::counter(store, &fam.overhead_latency, &ctx),
                        api_latency: Self::counter(store, &fam.api_latency, &ctx),
                        ttft: None,
                        per_token: None,
                    },
                );
                inc(store, h.proxy_total, 1.0);
                inc(store, h.requests, 1.0);
                inc(store, h.spend, cost.max(0.0));
                inc(store, h.total_tokens, usage.total_tokens as f64);
                inc(store, h.input_tokens, usage.prompt_tokens as f64);
                inc(store, h.output_tokens, usage.completion_tokens as f64);
                observe(store, h.total_latency, total_latency);
                if let Some((_, s)) = &self.system {
                    s.self_
                        .ok(std::time::Duration::from_secs_f64(api_latency.max(0.0)));
                }
                observe(store, h.api_latency, api_latency);
                observe(
                    store,
                    h.overhead_latency,
                    (total_latency - api_latency).max(0.0),
                );
                // Made on first use so that a label set never streamed has no empty TTFT series.
                if let Some(t) = time_to_first_token {
                    let s = *h.ttft.get_or_insert_with(|| {
                        Self::counter(store, &fam.time_to_first_token, &ctx)
                    });
                    observe(store, s, t);
                }
                if usage.completion_tokens > 0 {
                    let s = *h.per_token.get_or_insert_with(|| {
                        Self::counter(store, &fam.latency_per_output_token, &ctx)
                    });
                    observe(store, s, api_latency / usage.completion_tokens as f64);
                }
            }
        }
    }
}

impl Handler<RequestsFinished> for MetricsActor {
    type Result = ();

    fn handle(&mut self, msg: RequestsFinished, _: &mut Context<Self>) {
        self.before_updates();
        for event in msg.0 {
            self.finish(event);
        }
    }
}

impl Handler<DeploymentStateChanged> for MetricsActor {
    type Result = ();

    fn handle(&mut self, msg: DeploymentStateChanged, _: &mut Context<Self>) {
        self.before_updates();
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
        let s = Self::counter(&mut self.store, &self.fam.deployment_state, &ctx);
        set(&mut self.store, s, msg.state as i32 as f64);
        if let Some((status, values)) = msg.cooled_down {
            let status = status.to_string();
            let custom: Vec<String> = (0..self.custom.len())
                .map(|i| match values.get(i) {
                    Some(v) => self.custom[i].admit(v).to_owned(),
                    None => String::new(),
                })
                .collect();
            let ctx = LabelCtx {
                status: &status,
                custom_names: &self.custom_names,
                custom: &custom,
                ..ctx
            };
            let s = Self::counter(&mut self.store, &self.fam.deployment_cooled_down, &ctx);
            inc(&mut self.store, s, 1.0);
        }
    }
}

impl Handler<DeploymentsRemoved> for MetricsActor {
    type Result = ();

    fn handle(&mut self, msg: DeploymentsRemoved, _: &mut Context<Self>) {
        self.remove_deployments(&msg.deployments, &msg.running);
    }
}

impl MetricsActor {
    /// Deployments gone from the model list: every series that describes one of them goes (state,
    /// deployment counters, cooldowns, per-token latency by `model_id` and its other labels; the remaining
    /// gauges, which have no `model_id`, by group, base, model and provider).
    fn remove_deployments(
        &mut self,
        deployments: &[Arc<DeploymentLabels>],
        running: &[Arc<DeploymentLabels>],
    ) {
        for d in deployments {
            let with_id = [
                ("model_id", d.model_id.as_str()),
                ("llm_model_name", &d.llm_model_name),
                ("api_base", &d.api_base),
                ("api_provider", d.api_provider),
            ];
            // A running deployment with the same id and labels (a group renamed keeps the id): its series
            // are its own now.
            let same_id = running.iter().any(|r| {
                r.model_id == d.model_id
                    && r.llm_model_name == d.llm_model_name
                    && r.api_base == d.api_base
                    && r.api_provider == d.api_provider
            });
            if !same_id {
                self.store.remove_where(&with_id, "model_id");
            }
            let shared = running.iter().any(|r| {
                r.model_group == d.model_group
                    && r.llm_model_name == d.llm_model_name
                    && r.api_base == d.api_base
                    && r.api_provider == d.api_provider
            });
            if shared {
                continue;
            }
            let without_id = [
                ("model_group", d.model_group.as_str()),
                ("llm_model_name", &d.llm_model_name),
                ("api_base", &d.api_base),
                ("api_provider", d.api_provider),
            ];
            self.store.remove_where(&without_id, "model_group");
        }
        self.before_updates();
    }
}

impl Handler<BudgetsChanged> for MetricsActor {
    type Result = ();

    fn handle(&mut self, msg: BudgetsChanged, _: &mut Context<Self>) {
        self.before_updates();
        self.set_budgets(&msg.gauges);
        self.remove_budgets(&msg.removed);
    }
}

impl Handler<RenderChunk> for MetricsActor {
    type Result = MessageResult<RenderChunk>;

    fn handle(&mut self, msg: RenderChunk, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.render_chunk(msg.cursor))
    }
}

#[cfg(test)]
mod tests;
