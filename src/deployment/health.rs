//! The record one DeploymentActor keeps about its deployment: the state `llm_deployment_state` reports,
//! totals, the last error and the latency average. (The upstream's remaining-limit headers live in the
//! deployment's `Live` state, which routing reads.)
//!
//! State follows LiteLLM's meaning, on one series that always returns to 0: a success sets 0 (healthy); a
//! failure sets 1 (partial outage) unless the deployment is cooling down; a cooldown sets 2 (complete
//! outage), which holds until a request after the cooldown succeeds (the probe), or until the deployment
//! has been idle for a [`IDLE_RECOVERY`] after its cooldown ended.

use crate::labels::HealthState;
use std::time::Duration;

/// After a cooldown ends with no request to prove the deployment back, the state returns to 0 after this.
pub const IDLE_RECOVERY: Duration = Duration::from_secs(60);
/// Weight of the newest sample in the latency average.
const LATENCY_EWMA_ALPHA: f64 = 0.2;

#[derive(Debug, Clone)]
pub struct Health {
    pub state: HealthState,
    pub successes: u64,
    pub failures_total: u64,
    pub cooldowns: u64,
    pub last_error: Option<(u16, String)>,
    /// Seconds, exponentially weighted.
    pub latency_ewma: Option<f64>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: HealthState::Healthy,
            successes: 0,
            failures_total: 0,
            cooldowns: 0,
            last_error: None,
            latency_ewma: None,
        }
    }
}

impl Health {
    /// Records a successful call; `cooling` when the deployment is (still) in a cooldown, so a call that
    /// started before the cooldown does not end it. Returns the new state when it changed.
    pub fn success(&mut self, latency: Duration, cooling: bool) -> Option<HealthState> {
        self.successes += 1;
        let s = latency.as_secs_f64();
        self.latency_ewma = Some(match self.latency_ewma {
            None => s,
            Some(avg) => avg + LATENCY_EWMA_ALPHA * (s - avg),
        });
        if cooling {
            return None;
        }
        self.set(HealthState::Healthy)
    }

    /// Records a failed call; `cooled_down` when this failure started a cooldown.
    pub fn failure(
        &mut self,
        status: u16,
        class: String,
        cooled_down: bool,
    ) -> Option<HealthState> {
        self.failures_total += 1;
        self.last_error = Some((status, class));
        if cooled_down {
            self.cooldowns += 1;
            return self.set(HealthState::CompleteOutage);
        }
        if self.state == HealthState::CompleteOutage {
            return None;
        }
        self.set(HealthState::PartialOutage)
    }

    /// Nobody proved the deployment back within [`IDLE_RECOVERY`] after its cooldown: back to healthy.
    pub fn idle_recovery(&mut self) -> Option<HealthState> {
        if self.state != HealthState::CompleteOutage {
            return None;
        }
        self.set(HealthState::Healthy)
    }

    fn set(&mut self, new: HealthState) -> Option<HealthState> {
        (self.state != new).then(|| {
            self.state = new;
            new
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthState::*;

    #[test]
    fn zero_one_two_zero_on_one_record() {
        let mut h = Health::default();
        assert_eq!(h.success(Duration::from_millis(100), false), None);
        assert_eq!(
            h.failure(500, "Openai.InternalServerError".into(), false),
            Some(PartialOutage)
        );
        assert_eq!(h.failure(500, "x".into(), false), None);
        assert_eq!(
            h.failure(429, "Openai.RateLimitError".into(), true),
            Some(CompleteOutage)
        );
        // Failures and stragglers' successes during the cooldown keep it at 2.
        assert_eq!(h.failure(500, "x".into(), false), None);
        assert_eq!(h.success(Duration::from_millis(100), true), None);
        assert_eq!(h.state, CompleteOutage);
        // The probe after the cooldown succeeds.
        assert_eq!(h.success(Duration::from_millis(300), false), Some(Healthy));
        assert_eq!((h.successes, h.failures_total, h.cooldowns), (3, 4, 1));
        assert!((h.latency_ewma.unwrap() - 0.14).abs() < 1e-9);
        h.failure(429, "x".into(), true);
        assert_eq!(h.idle_recovery(), Some(Healthy));
        assert_eq!(h.idle_recovery(), None);
    }
}
