//! The budget gauges of keys, teams, users and end users: set, refreshed from the ledgers, removed.

use super::*;
use crate::accounts::{KeyEntry, Limits};
use crate::labels::{BudgetGauge, BudgetScope};
use crate::metrics::families::Fam;
use crate::metrics::store::Sid;
use std::collections::HashMap;
use std::sync::Arc;

impl MetricsActor {
    /// The label name and value of a scope's id.
    pub(super) fn scope_id(scope: &BudgetScope) -> (u8, &str) {
        match scope {
            BudgetScope::Key { hashed_api_key, .. } => (0, hashed_api_key),
            BudgetScope::Team { team_id, .. } => (1, team_id),
            BudgetScope::User { user_id } => (2, user_id),
            BudgetScope::EndUser { end_user_id } => (3, end_user_id),
        }
    }

    pub(super) fn budget_values<'a>(f: &Fam, scope: &'a BudgetScope) -> Vec<&'a str> {
        f.labels
            .iter()
            .map(|n| match (scope, n.as_str()) {
                (BudgetScope::Key { hashed_api_key, .. }, "hashed_api_key") => {
                    hashed_api_key.as_str()
                }
                (BudgetScope::Key { api_key_alias, .. }, "api_key_alias") => api_key_alias.as_str(),
                (BudgetScope::Team { team_id, .. }, "team_id") => team_id.as_str(),
                (BudgetScope::Team { team_alias, .. }, "team_alias") => team_alias.as_str(),
                (BudgetScope::User { user_id }, "user") => user_id.as_str(),
                (BudgetScope::EndUser { end_user_id }, "end_user") => end_user_id.as_str(),
                _ => "",
            })
            .collect()
    }

    pub(super) fn budget_families(&self, scope: &BudgetScope) -> [&Fam; 3] {
        let f = &self.fam;
        match scope {
            BudgetScope::Key { .. } => [
                &f.key_max_budget,
                &f.key_remaining_budget,
                &f.key_remaining_hours,
            ],
            BudgetScope::Team { .. } => [
                &f.team_max_budget,
                &f.team_remaining_budget,
                &f.team_remaining_hours,
            ],
            BudgetScope::User { .. } => [
                &f.user_max_budget,
                &f.user_remaining_budget,
                &f.user_remaining_hours,
            ],
            BudgetScope::EndUser { .. } => [
                &f.customer_max_budget,
                &f.customer_remaining_budget,
                &f.customer_remaining_hours,
            ],
        }
    }

    /// Max (when set), remaining (`+Inf` without a max, negative when overspent) and hours to reset of one
    /// key, team, user or end user. Handles are cached by id and shape (max set or not, reset time set or
    /// not), so a request's update is a map lookup and three stores.
    pub(super) fn set_budget(
        &mut self,
        id: (u8, &str),
        labels: impl FnOnce() -> BudgetScope,
        max_budget: Option<f64>,
        spend_micros: i64,
        reset_at_ms: Option<i64>,
        now_ms: f64,
    ) {
        let shape = (max_budget.is_some(), reset_at_ms.is_some());
        // One map per scope kind, looked up by `&str`: a request's update allocates nothing.
        let kind = id.0 as usize;
        let handles = match self.budget_handles[kind].get(id.1).filter(|h| h.0 == shape) {
            Some(h) => h.1,
            None => {
                let scope = labels();
                let [max, remaining, hours] = self.budget_families(&scope).map(Fam::clone);
                let mut removed = false;
                let mut gauge = |f: &Fam, keep: bool| -> Option<Sid> {
                    let id = f.id?;
                    // Each family's own label list: `include_labels` may differ between them.
                    let v = Self::budget_values(f, &scope);
                    if keep {
                        self.store.series(id, &v)
                    } else {
                        removed |= self.store.remove(id, &v);
                        None
                    }
                };
                let h = BudgetHandles {
                    max: gauge(&max, shape.0),
                    remaining: gauge(&remaining, true),
                    hours: gauge(&hours, shape.1),
                };
                if removed {
                    // Scopes can share a series (e.g. with `hashed_api_key` excluded): every budget handle
                    // may point at the freed slot. Only budget families lost a series, so the other caches
                    // stay valid.
                    self.budget_handles.iter_mut().for_each(HashMap::clear);
                    self.cached_generation = self.store.generation();
                }
                self.budget_handles[kind].insert(id.1.to_owned(), (shape, h));
                h
            }
        };
        let store = &mut self.store;
        match (max_budget, handles.max) {
            (Some(m), max) => {
                set(store, max, m);
                // In micro-dollars, so 0.1 - 0.024 reads 0.076, not 0.07600000000000001.
                set(
                    store,
                    handles.remaining,
                    crate::units::usd(crate::units::micros(m) - spend_micros),
                );
            }
            (None, _) => set(store, handles.remaining, f64::INFINITY),
        }
        if let Some(at) = reset_at_ms {
            set(store, handles.hours, (at as f64 - now_ms) / 3_600_000.0);
        }
    }

    /// Budget changes from the management API or a reset: labels may have changed, so handles are rebuilt.
    pub(super) fn set_budgets(&mut self, gauges: &[BudgetGauge]) {
        let now = crate::units::now_ms() as f64;
        for g in gauges {
            let (kind, id) = Self::scope_id(&g.scope);
            let id = id.to_owned();
            self.budget_handles[kind as usize].remove(&id);
            self.set_budget(
                (kind, &id),
                || g.scope.clone(),
                g.max_budget,
                crate::units::micros(g.spend),
                g.reset_at_ms,
                now,
            );
        }
    }

    /// What is left of a key's model-specific rpm / tpm in the current minute.
    pub(super) fn set_model_limits(&mut self, k: &KeyEntry, model: &Arc<str>, limits: &Limits) {
        let minute = crate::window::current_minute(crate::units::now_ms());
        let rpm = k.rec.model_rpm_limit.get(&**model).copied();
        let tpm = k.rec.model_tpm_limit.get(&**model).copied();
        let per_key = self
            .model_limit_handles
            .entry(k.rec.token.clone())
            .or_default();
        let shape = (rpm.is_some(), tpm.is_some());
        let slot = match per_key
            .iter()
            .position(|(m, made, _, _)| m == model && *made == shape)
        {
            Some(i) => i,
            None => {
                let v = [
                    k.rec.token.as_str(),
                    k.rec.key_alias.as_deref().unwrap_or(""),
                    &**model,
                ];
                let mut gauge = |f: &Fam, on: bool| -> Option<Sid> {
                    let vals: Vec<&str> = f
                        .labels
                        .iter()
                        .map(|n| match n.as_str() {
                            "hashed_api_key" => v[0],
                            "api_key_alias" => v[1],
                            _ => v[2],
                        })
                        .collect();
                    if on {
                        self.store.series(f.id?, &vals)
                    } else {
                        None
                    }
                };
                let r = gauge(&self.fam.key_remaining_requests_for_model, rpm.is_some());
                let t = gauge(&self.fam.key_remaining_tokens_for_model, tpm.is_some());
                per_key.retain(|(m, _, _, _)| m != model);
                per_key.push((model.clone(), shape, r, t));
                per_key.len() - 1
            }
        };
        let (_, _, r, t) = per_key[slot].clone();
        if let Some(l) = rpm {
            set(
                &mut self.store,
                r,
                l.saturating_sub(limits.requests_used(minute)) as f64,
            );
        }
        if let Some(l) = tpm {
            set(
                &mut self.store,
                t,
                l.saturating_sub(limits.tokens_used(minute)) as f64,
            );
        }
    }

    /// Entities deleted: their budget gauges go, and every series that names them (a deleted key's
    /// request counters, a deleted team's), so nothing about them is kept forever.
    pub(super) fn remove_budgets(&mut self, scopes: &[BudgetScope]) {
        for s in scopes {
            for f in self.budget_families(s).map(Fam::clone) {
                if let Some(id) = f.id {
                    self.store.remove(id, &Self::budget_values(&f, s));
                }
            }
            match s {
                BudgetScope::Key { hashed_api_key, .. } => {
                    self.store
                        .remove_matching("hashed_api_key", hashed_api_key, &[]);
                }
                BudgetScope::Team { team_id, .. } => {
                    self.store.remove_matching("team", team_id, &[]);
                }
                // Users and end users are labels of request series that keys and callers share; their
                // request series age out with the TTLs instead.
                BudgetScope::User { .. } | BudgetScope::EndUser { .. } => {}
            }
        }
        self.before_updates();
    }
}
