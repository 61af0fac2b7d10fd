//! The routing table: model groups and their deployments. Immutable once published; the RouterActor builds
//! a new one when the set of deployments changes. What changes per request (in flight, usage, cooldowns,
//! latency) lives in each deployment's [`Live`](crate::deployment::live::Live) atomics, read at pick time.

use super::strategy::{choose, shuffle_weights, Candidate};
use crate::config::{RouterSettings, RoutingStrategy};
use crate::deployment::Deployment;
use crate::providers::Endpoint;
use std::collections::HashMap;
use std::sync::Arc;

/// The result of asking a group for a deployment.
pub enum Pick {
    /// The deployment, and whether this request holds its probe (it is back from a cooldown).
    Chosen(Arc<Deployment>, bool),
    /// Every deployment left is cooling down (or waiting on its probe); the earliest may be back at
    /// `until_ms` (wall clock).
    Cooling { until_ms: i64 },
    /// Usage-based routing: no deployment has room for the request this minute.
    NoCapacity,
}

pub struct Group {
    pub name: Arc<str>,
    pub deployments: Vec<Arc<Deployment>>,
    weights: Vec<f64>,
}

impl Group {
    /// Whether any deployment could take a request for `endpoint` now.
    pub fn any_available(&self, endpoint: Endpoint, now_ms: i64) -> bool {
        self.deployments
            .iter()
            .any(|d| d.serves(endpoint) && d.live.available(now_ms, &d.policy))
    }

    /// Whether any deployment of the group has `endpoint`.
    pub fn serves(&self, endpoint: Endpoint) -> bool {
        self.deployments.iter().any(|d| d.serves(endpoint))
    }

    /// The deployment `strategy` picks among those that serve `endpoint`, not in `exclude` and available
    /// now. `r` is uniform in [0, 1); `tokens` is the request's estimated size.
    #[allow(clippy::too_many_arguments)]
    pub fn pick(
        &self,
        strategy: RoutingStrategy,
        endpoint: Endpoint,
        exclude: &[Arc<Deployment>],
        now_ms: i64,
        r: f64,
        tokens: u64,
    ) -> Pick {
        let mut cands: Vec<Candidate> = Vec::with_capacity(self.deployments.len());
        let mut until_ms = i64::MAX;
        for (i, d) in self.deployments.iter().enumerate() {
            if exclude.iter().any(|e| Arc::ptr_eq(e, d)) || !d.serves(endpoint) {
                continue;
            }
            if !d.live.available(now_ms, &d.policy) {
                let back = d.live.cooldown_until().max(now_ms + 1);
                until_ms = until_ms.min(back);
                continue;
            }
            let mut c = Candidate {
                index: i,
                weight: self.weights[i],
                ..Default::default()
            };
            match strategy {
                RoutingStrategy::SimpleShuffle => {}
                RoutingStrategy::LeastBusy => c.in_flight = d.live.in_flight(),
                RoutingStrategy::LatencyBased => {
                    c.latency = d.live.latency().map(|l| l.as_secs_f64())
                }
                RoutingStrategy::UsageBased => {
                    (c.rpm_used, c.tpm_used) = d.live.usage(now_ms);
                    (c.rpm_limit, c.tpm_limit) = (d.cfg.rpm, d.cfg.tpm);
                    (c.remaining_requests, c.remaining_tokens) = d.live.remaining();
                }
            }
            cands.push(c);
        }
        loop {
            if cands.is_empty() {
                return Pick::Cooling {
                    until_ms: if until_ms == i64::MAX {
                        now_ms
                    } else {
                        until_ms
                    },
                };
            }
            let Some(k) = choose(strategy, &cands, r, tokens) else {
                return Pick::NoCapacity;
            };
            let d = &self.deployments[cands[k].index];
            // A deployment back from a cooldown takes one request (its probe) until it answers.
            if let Some(probe) = d.live.claim(now_ms, &d.policy) {
                return Pick::Chosen(d.clone(), probe);
            }
            cands.remove(k);
        }
    }
}

/// What routing needs, published whole by the RouterActor (its only writer): the deployments in order,
/// their groups, and the router settings in force (retries, fallbacks, timeouts, strategy). A reload or a
/// model change publishes a new table; a request reads one table from start to end.
pub struct RoutingTable {
    groups: HashMap<String, Group>,
    pub strategy: RoutingStrategy,
    /// Every deployment, config entries first, then stored ones.
    pub deployments: Vec<Arc<Deployment>>,
    /// Group names in the order of their first deployment (`/v1/models`).
    pub names: Vec<Arc<str>>,
    pub settings: Arc<RouterSettings>,
}

impl RoutingTable {
    pub fn new(deployments: Vec<Arc<Deployment>>, settings: Arc<RouterSettings>) -> RoutingTable {
        let mut by_group: HashMap<String, Vec<Arc<Deployment>>> = HashMap::new();
        let mut names: Vec<Arc<str>> = Vec::new();
        for d in &deployments {
            if !by_group.contains_key(&d.cfg.model_name) {
                names.push(d.group.clone());
            }
            by_group
                .entry(d.cfg.model_name.clone())
                .or_default()
                .push(d.clone());
        }
        let groups = by_group
            .into_iter()
            .map(|(name, deployments)| {
                let cfgs: Vec<_> = deployments.iter().map(|d| &d.cfg).collect();
                let weights = shuffle_weights(&cfgs);
                let group = Group {
                    name: deployments[0].group.clone(),
                    deployments,
                    weights,
                };
                (name, group)
            })
            .collect();
        RoutingTable {
            groups,
            strategy: settings.routing_strategy,
            deployments,
            names,
            settings,
        }
    }

    /// The deployment with this id.
    pub fn deployment(&self, id: &str) -> Option<&Arc<Deployment>> {
        self.deployments.iter().find(|d| d.cfg.id == id)
    }

    pub fn group(&self, model: &str) -> Option<&Group> {
        self.groups.get(model)
    }

    /// Picks a deployment of `model` for chat completions with the table's strategy, as a request's first
    /// attempt does.
    pub fn pick(&self, model: &str, now_ms: i64, r: f64, tokens: u64) -> Option<Pick> {
        self.groups.get(model).map(|g| {
            g.pick(
                self.strategy,
                Endpoint::ChatCompletions,
                &[],
                now_ms,
                r,
                tokens,
            )
        })
    }
}
