//! Who messages whom (the diagram in ARCHITECTURE.md) and [`start`], which builds the actor system.
//!
//! ```text
//! HTTP handlers --Route--> RouterActor            (model group -> deployment)
//! HTTP handlers --AttemptDone--> DeploymentActor   (one per model_list entry: health, headers, latency)
//! HTTP handlers --RequestFinished--> MetricsActor  (owns the registry; renders /metrics)
//! DeploymentActor --DeploymentStateChanged--> MetricsActor
//! ```
//! Actors run on their own arbiters, so HTTP workers never run actor code and never block on it.

pub mod deployment;
pub mod metrics;
pub mod router;

use crate::config::{Config, DeploymentConfig};
use actix::prelude::*;
use deployment::DeploymentActor;
use metrics::{DeploymentLabels, MetricsActor};
use router::RouterActor;
use std::sync::Arc;

/// One `model_list` entry at run time: its config, its metric labels and its actor.
pub struct Deployment {
    pub cfg: DeploymentConfig,
    pub labels: Arc<DeploymentLabels>,
    pub addr: Addr<DeploymentActor>,
}

/// Addresses of the running actors.
#[derive(Clone)]
pub struct Handles {
    pub router: Addr<RouterActor>,
    /// `None` when the `prometheus` callback is off.
    pub metrics: Option<Addr<MetricsActor>>,
    pub deployments: Arc<Vec<Arc<Deployment>>>,
    /// Keeps the arbiters' handles; the threads stop with the System.
    _arbiters: Arc<Vec<ArbiterHandle>>,
}

/// Starts every actor. Must run inside an actix System.
pub fn start(config: &Config) -> Handles {
    let metrics_arbiter = Arbiter::new().handle();
    let routing_arbiter = Arbiter::new().handle();
    let metrics = config.metrics.enabled.then(|| {
        let settings = config.metrics.clone();
        MetricsActor::start_in_arbiter(&metrics_arbiter, move |_| MetricsActor::new(&settings))
    });
    let deployments: Vec<Arc<Deployment>> = config
        .model_list
        .iter()
        .map(|cfg| {
            let labels = Arc::new(DeploymentLabels {
                model_group: cfg.model_name.clone(),
                llm_model_name: cfg.model.clone(),
                model_id: cfg.id.clone(),
                api_base: cfg.api_base.clone(),
                api_provider: cfg.provider.as_str(),
            });
            let (l, m) = (labels.clone(), metrics.clone());
            let addr = DeploymentActor::start_in_arbiter(&routing_arbiter, move |_| {
                DeploymentActor::new(l, m)
            });
            Arc::new(Deployment {
                cfg: cfg.clone(),
                labels,
                addr,
            })
        })
        .collect();
    let deployments = Arc::new(deployments);
    let router = {
        let d = deployments.clone();
        RouterActor::start_in_arbiter(&routing_arbiter, move |_| RouterActor::new(&d))
    };
    Handles {
        router,
        metrics,
        deployments,
        _arbiters: Arc::new(vec![metrics_arbiter, routing_arbiter]),
    }
}
