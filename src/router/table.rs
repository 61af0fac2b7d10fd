//! The routing table: model groups, their deployments and pick weights, and which deployments are eligible
//! right now. Immutable once published; the RouterActor builds a new one when something changes.

use super::strategy::{shuffle_weights, weighted_pick};
use crate::actors::Deployment;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No model group has this name.
    UnknownModel,
}

pub struct Group {
    pub deployments: Vec<Arc<Deployment>>,
    weights: Vec<f64>,
    /// Indices of the deployments routing may choose.
    eligible: Vec<usize>,
}

#[derive(Default)]
pub struct RoutingTable {
    groups: HashMap<String, Group>,
}

impl RoutingTable {
    pub fn new(deployments: &[Arc<Deployment>]) -> RoutingTable {
        let mut by_group: HashMap<String, Vec<Arc<Deployment>>> = HashMap::new();
        for d in deployments {
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
                let eligible = (0..deployments.len()).collect();
                (
                    name,
                    Group {
                        deployments,
                        weights,
                        eligible,
                    },
                )
            })
            .collect();
        RoutingTable { groups }
    }

    pub fn group(&self, model: &str) -> Option<&Group> {
        self.groups.get(model)
    }

    /// Picks a deployment of `model` (simple-shuffle); `r` is uniform in [0, 1).
    pub fn pick(&self, model: &str, r: f64) -> Result<Arc<Deployment>, RouteError> {
        let g = self.groups.get(model).ok_or(RouteError::UnknownModel)?;
        let i = weighted_pick(&g.weights, &g.eligible, r).ok_or(RouteError::UnknownModel)?;
        Ok(g.deployments[i].clone())
    }
}
