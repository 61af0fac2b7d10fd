//! DeploymentActor: one per `model_list` entry. Keeps the deployment's [`Health`] record from each upstream
//! attempt (outcome, latency), writes the latency average and the upstream's remaining-limit headers into
//! the deployment's [`Live`] state for routing, follows its cooldowns with timers, and reports state changes and
//! cooldowns to the metrics actor. Cooldowns themselves start on the worker that saw the failure
//! (`deployment/live.rs`), so no request reaches a deployment that is being taken out.

use super::metrics::DeploymentStateChanged;
use crate::deployment::health::{Health, IDLE_RECOVERY};
use crate::deployment::live::{CooldownStarted, Live};
use crate::labels::{DeploymentLabels, HealthState};
use crate::units::Clock;
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
    /// A failure the deployment caused (not the client's request, such as an upstream 400 or 422 to it):
    /// only these move the deployment's health.
    pub against: bool,
    pub latency: Duration,
    pub remaining_requests: Option<f64>,
    pub remaining_tokens: Option<f64>,
    /// The cooldown this failure started.
    pub cooldown: Option<CooldownStarted>,
    /// With a cooldown: the values of the custom metadata labels of the request that caused it.
    pub custom: Vec<String>,
    /// This success proved the deployment back after a cooldown.
    pub recovered: bool,
}

/// A cooldown another replica started, read from Redis.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptCooldown {
    pub until_ms: i64,
}

/// Another replica's probe found the deployment back: probation ends here too, without a probe of its own.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecoveredElsewhere;

/// A cooldown this replica started (until `until_ms`), or, with `recovered`, the end of one: this
/// replica's probe succeeded, every replica ends its probation.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CooldownShared {
    pub model_id: String,
    pub until_ms: i64,
    pub recovered: bool,
}

/// Where to report the cooldowns this replica starts (Redis sharing is on).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShareCooldowns(pub Recipient<CooldownShared>);

/// The deployment left the model list and its last request ended: the actor stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// A copy of the deployment's health, for `/health` endpoints.
#[derive(Message)]
#[rtype(result = "DeploymentSnapshot")]
pub struct Snapshot;

#[derive(Debug, Clone)]
pub struct DeploymentSnapshot {
    pub state: HealthState,
    pub successes: u64,
    pub failures: u64,
    pub cooldowns: u64,
    pub last_error: Option<(u16, String)>,
    pub latency_ewma_seconds: Option<f64>,
}

// ---- the actor ------------------------------------------------------------------------------------------

pub struct DeploymentActor {
    labels: Arc<DeploymentLabels>,
    /// Where state changes go (the MetricsActor).
    metrics: Option<Recipient<DeploymentStateChanged>>,
    live: Arc<Live>,
    health: Health,
    clock: Clock,
    /// Counts cooldowns, so that a timer set for an older one does nothing.
    epoch: u64,
    shared: Option<Recipient<CooldownShared>>,
}

impl DeploymentActor {
    pub fn new(
        labels: Arc<DeploymentLabels>,
        metrics: Option<Recipient<DeploymentStateChanged>>,
        live: Arc<Live>,
        clock: Clock,
    ) -> Self {
        DeploymentActor {
            labels,
            metrics,
            live,
            health: Health::default(),
            clock,
            epoch: 0,
            shared: None,
        }
    }

    /// `cooled_down`: the status of the failure that started a new cooldown, with the custom label values
    /// of its request.
    fn publish(&self, to: HealthState, cooled_down: Option<(u16, Vec<String>)>) {
        tracing::info!(deployment = %self.labels.model_id, model_group = %self.labels.model_group, state = ?to, "deployment state changed");
        if let Some(m) = &self.metrics {
            m.do_send(DeploymentStateChanged {
                deployment: self.labels.clone(),
                state: to,
                cooled_down,
            });
        }
    }

    /// Follows the cooldown of `epoch`: when it is over, waits [`IDLE_RECOVERY`] for a probe.
    fn watch(&mut self, epoch: u64, ctx: &mut Context<Self>) {
        let left = self.live.cooldown_until() - self.clock.now_ms();
        if left > 0 {
            let wait = Duration::from_millis(left as u64 + 1);
            ctx.run_later(wait, move |act, ctx| act.watch(epoch, ctx));
            return;
        }
        ctx.run_later(IDLE_RECOVERY, move |act, _| {
            if act.epoch == epoch && !act.live.cooling(act.clock.now_ms()) {
                if let Some(s) = act.health.idle_recovery() {
                    act.publish(s, None);
                }
            }
        });
    }
}

impl Actor for DeploymentActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        // The state series exists from boot, at 0, not only after the first request.
        self.publish(self.health.state, None);
    }
}

impl Handler<AttemptsDone> for DeploymentActor {
    type Result = ();

    fn handle(&mut self, msg: AttemptsDone, ctx: &mut Context<Self>) {
        for a in msg.0 {
            self.live
                .set_remaining(a.remaining_requests, a.remaining_tokens);
            let custom = a.custom;
            let changed = match a.result {
                Ok(()) => {
                    if let (true, Some(shared)) = (a.recovered, &self.shared) {
                        shared.do_send(CooldownShared {
                            model_id: self.labels.model_id.clone(),
                            until_ms: 0,
                            recovered: true,
                        });
                    }
                    let cooling = !a.recovered && self.live.cooling(self.clock.now_ms());
                    let s = self.health.success(a.latency, cooling);
                    if let Some(avg) = self.health.latency_ewma {
                        self.live.set_latency(Duration::from_secs_f64(avg));
                    }
                    s.map(|s| (s, None))
                }
                // The client's own failure says nothing about the deployment.
                Err(_) if !a.against => None,
                Err((status, class)) => {
                    let cooled = a.cooldown.is_some();
                    let s = self.health.failure(status, class, cooled);
                    if let (Some(c), Some(shared)) = (&a.cooldown, &self.shared) {
                        shared.do_send(CooldownShared {
                            model_id: self.labels.model_id.clone(),
                            until_ms: c.until_ms,
                            recovered: false,
                        });
                    }
                    if cooled {
                        self.epoch += 1;
                        self.watch(self.epoch, ctx);
                        // Every cooldown is counted, also one that keeps the state at 2.
                        Some((
                            s.unwrap_or(HealthState::CompleteOutage),
                            Some((status, custom)),
                        ))
                    } else {
                        s.map(|s| (s, None))
                    }
                }
            };
            if let Some((state, cooled_down)) = changed {
                self.publish(state, cooled_down);
            }
        }
    }
}

impl Handler<AdoptCooldown> for DeploymentActor {
    type Result = ();

    fn handle(&mut self, msg: AdoptCooldown, ctx: &mut Context<Self>) {
        if !self.live.adopt_cooldown(self.clock.now_ms(), msg.until_ms) {
            return;
        }
        tracing::info!(deployment = %self.labels.model_id, "cooldown from another replica adopted");
        self.epoch += 1;
        self.watch(self.epoch, ctx);
        if self.health.state != HealthState::CompleteOutage {
            self.health.state = HealthState::CompleteOutage;
            self.publish(HealthState::CompleteOutage, None);
        }
    }
}

impl Handler<RecoveredElsewhere> for DeploymentActor {
    type Result = ();

    fn handle(&mut self, _: RecoveredElsewhere, _: &mut Context<Self>) {
        if !self.live.recovered_elsewhere(self.clock.now_ms()) {
            return;
        }
        tracing::info!(deployment = %self.labels.model_id, "recovery seen by another replica's probe adopted");
        self.epoch += 1;
        if let Some(s) = self.health.idle_recovery() {
            self.publish(s, None);
        }
    }
}

impl Handler<ShareCooldowns> for DeploymentActor {
    type Result = ();

    fn handle(&mut self, msg: ShareCooldowns, _: &mut Context<Self>) {
        self.shared = Some(msg.0);
    }
}

impl Handler<Stop> for DeploymentActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Snapshot> for DeploymentActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        let h = &self.health;
        MessageResult(DeploymentSnapshot {
            state: h.state,
            successes: h.successes,
            failures: h.failures_total,
            cooldowns: h.cooldowns,
            last_error: h.last_error.clone(),
            latency_ewma_seconds: h.latency_ewma,
        })
    }
}

#[cfg(test)]
mod tests;
