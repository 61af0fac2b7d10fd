//! RouterActor: owns the model groups and decides which deployment serves a request.

use super::Deployment;
use crate::router::strategy::{shuffle_weights, weighted_pick};
use actix::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::Arc;

// ---- messages -------------------------------------------------------------------------------------------

/// Choose a deployment of model group `model`.
#[derive(Message)]
#[rtype(result = "Result<Arc<Deployment>, RouteError>")]
pub struct Route {
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No model group has this name.
    UnknownModel,
}

// ---- the actor ------------------------------------------------------------------------------------------

struct Group {
    deployments: Vec<Arc<Deployment>>,
    weights: Vec<f64>,
    all: Vec<usize>,
}

pub struct RouterActor {
    groups: HashMap<String, Group>,
    rng: SmallRng,
}

impl RouterActor {
    pub fn new(deployments: &[Arc<Deployment>]) -> Self {
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
                let all = (0..deployments.len()).collect();
                (
                    name,
                    Group {
                        deployments,
                        weights,
                        all,
                    },
                )
            })
            .collect();
        RouterActor {
            groups,
            rng: SmallRng::from_entropy(),
        }
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;
}

impl Handler<Route> for RouterActor {
    type Result = Result<Arc<Deployment>, RouteError>;

    fn handle(&mut self, msg: Route, _: &mut Context<Self>) -> Self::Result {
        let group = self
            .groups
            .get(&msg.model)
            .ok_or(RouteError::UnknownModel)?;
        let i = weighted_pick(&group.weights, &group.all, self.rng.gen::<f64>())
            .ok_or(RouteError::UnknownModel)?;
        Ok(group.deployments[i].clone())
    }
}
