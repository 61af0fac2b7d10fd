//! DeploymentActor: one per `model_list` entry. Records each upstream attempt's outcome, latency and the
//! upstream's remaining-limit headers in a [`Health`], and reports state changes to the metrics actor.

use super::metrics::{DeploymentLabels, DeploymentStateChanged, HealthState, MetricsActor};
use crate::deployment::health::Health;
use actix::clock::Instant;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;

// ---- messages -------------------------------------------------------------------------------------------

/// Upstream calls to this deployment that finished, in order (batched per worker, see `actors/outbox.rs`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttemptsDone(pub Vec<AttemptDone>);

/// One upstream call to this deployment finished.
pub struct AttemptDone {
    /// `Err((status, exception_class))` on failure.
    pub result: Result<(), (u16, String)>,
    pub latency: Duration,
    pub remaining_requests: Option<f64>,
    pub remaining_tokens: Option<f64>,
}

/// A copy of the deployment's health, for `/health` endpoints and routing decisions.
#[derive(Message)]
#[rtype(result = "DeploymentSnapshot")]
pub struct Snapshot;

#[derive(Debug, Clone)]
pub struct DeploymentSnapshot {
    pub state: HealthState,
    pub successes: u64,
    pub failures: u64,
    pub recent_failures: usize,
    pub last_error: Option<(u16, String)>,
    pub remaining_requests: Option<f64>,
    pub remaining_tokens: Option<f64>,
    pub latency_ewma_seconds: Option<f64>,
}

// ---- the actor ------------------------------------------------------------------------------------------

pub struct DeploymentActor {
    labels: Arc<DeploymentLabels>,
    metrics: Option<Addr<MetricsActor>>,
    health: Health,
}

impl DeploymentActor {
    pub fn new(labels: Arc<DeploymentLabels>, metrics: Option<Addr<MetricsActor>>) -> Self {
        DeploymentActor {
            labels,
            metrics,
            health: Health::default(),
        }
    }

    fn publish(&self, from: HealthState, to: HealthState) {
        tracing::info!(deployment = %self.labels.model_id, model_group = %self.labels.model_group, from = ?from, to = ?to, "deployment state changed");
        if let Some(m) = &self.metrics {
            m.do_send(DeploymentStateChanged {
                deployment: self.labels.clone(),
                state: to,
            });
        }
    }
}

impl Actor for DeploymentActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        // The state series exists from boot, at 0, not only after the first request.
        if let Some(m) = &self.metrics {
            m.do_send(DeploymentStateChanged {
                deployment: self.labels.clone(),
                state: self.health.state,
            });
        }
    }
}

impl Handler<AttemptsDone> for DeploymentActor {
    type Result = ();

    fn handle(&mut self, msg: AttemptsDone, _: &mut Context<Self>) {
        let now = Instant::now().into_std();
        let from = self.health.state;
        for a in msg.0 {
            self.health
                .headers(a.remaining_requests, a.remaining_tokens);
            match a.result {
                Ok(()) => self.health.success(now, a.latency),
                Err((status, class)) => self.health.failure(now, status, class),
            };
        }
        // One published change per batch: the state it ends in.
        if self.health.state != from {
            self.publish(from, self.health.state);
        }
    }
}

impl Handler<Snapshot> for DeploymentActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        let now = Instant::now().into_std();
        let h = &mut self.health;
        MessageResult(DeploymentSnapshot {
            state: h.state,
            successes: h.successes,
            failures: h.failures_total,
            recent_failures: h.recent_failures(now),
            last_error: h.last_error.clone(),
            remaining_requests: h.remaining_requests,
            remaining_tokens: h.remaining_tokens,
            latency_ewma_seconds: h.latency_ewma,
        })
    }
}
