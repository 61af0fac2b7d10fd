//! A deployment at run time ([`Deployment`]: what the router's table holds and the request path reads), and
//! its logic with no actix types: health state and outcome statistics ([`health`], owned by its
//! DeploymentActor, `actors/deployment.rs`) and the per-request atomics ([`live`]), unit-tested synchronously.

pub mod health;
pub mod live;

use crate::actors::deployment::DeploymentActor;
use crate::config::DeploymentConfig;
use crate::labels::DeploymentLabels;
use crate::providers::adapter::Provider;
use crate::providers::target::Target;
use crate::providers::Endpoint;
use actix::Addr;
use actix_web::http::header::HeaderValue;
use live::{CooldownPolicy, Live};
use std::sync::Arc;

/// One `model_list` entry at run time: its config, its metric labels and its actor.
pub struct Deployment {
    pub cfg: DeploymentConfig,
    /// The model group, shared with every request it serves.
    pub group: Arc<str>,
    pub labels: Arc<DeploymentLabels>,
    pub addr: Addr<DeploymentActor>,
    /// URLs and headers of its upstream (none for the built-in mock).
    pub target: Target,
    /// Its provider's adapter: how a call is sent and its answer read.
    pub provider: &'static dyn Provider,
    /// In flight, usage, cooldown gate, latency: what routing reads on every request.
    pub live: Arc<Live>,
    pub policy: CooldownPolicy,
    /// `x-llm-model-id` and `x-llm-model-group` response header values, built once.
    pub headers: (HeaderValue, HeaderValue),
}

impl Deployment {
    /// Whether this deployment's provider has `endpoint` (an Anthropic deployment has no embeddings).
    pub fn serves(&self, endpoint: Endpoint) -> bool {
        self.provider.serves(endpoint, &self.target)
    }
}
