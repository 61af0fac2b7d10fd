//! The health of one deployment: the state `llm_deployment_state` reports, a one-minute failure window, the
//! upstream's last remaining-limit headers, in-flight count and a latency average.

use crate::actors::metrics::HealthState;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Failures are counted over this window (LiteLLM's `allowed_fails` is per minute).
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Weight of the newest sample in the latency average.
const LATENCY_EWMA_ALPHA: f64 = 0.2;

#[derive(Debug, Clone)]
pub struct Health {
    pub state: HealthState,
    failures: VecDeque<Instant>,
    pub successes: u64,
    pub failures_total: u64,
    pub last_error: Option<(u16, String)>,
    pub remaining_requests: Option<f64>,
    pub remaining_tokens: Option<f64>,
    /// Seconds, exponentially weighted.
    pub latency_ewma: Option<f64>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: HealthState::Healthy,
            failures: VecDeque::new(),
            successes: 0,
            failures_total: 0,
            last_error: None,
            remaining_requests: None,
            remaining_tokens: None,
            latency_ewma: None,
        }
    }
}

impl Health {
    fn prune(&mut self, now: Instant) {
        while let Some(&t) = self.failures.front() {
            if now.duration_since(t) > FAILURE_WINDOW {
                self.failures.pop_front();
            } else {
                break;
            }
        }
    }

    /// Records a successful call; returns the new state when it changed.
    pub fn success(&mut self, now: Instant, latency: Duration) -> Option<HealthState> {
        self.prune(now);
        self.successes += 1;
        let s = latency.as_secs_f64();
        self.latency_ewma = Some(match self.latency_ewma {
            None => s,
            Some(avg) => avg + LATENCY_EWMA_ALPHA * (s - avg),
        });
        self.set(HealthState::Healthy)
    }

    /// Records a failed call; returns the new state when it changed.
    pub fn failure(&mut self, now: Instant, status: u16, class: String) -> Option<HealthState> {
        self.prune(now);
        self.failures.push_back(now);
        self.failures_total += 1;
        self.last_error = Some((status, class));
        if self.state == HealthState::CompleteOutage {
            return None;
        }
        self.set(HealthState::PartialOutage)
    }

    /// Failures inside the current window.
    pub fn recent_failures(&mut self, now: Instant) -> usize {
        self.prune(now);
        self.failures.len()
    }

    pub fn headers(&mut self, requests: Option<f64>, tokens: Option<f64>) {
        if requests.is_some() {
            self.remaining_requests = requests;
        }
        if tokens.is_some() {
            self.remaining_tokens = tokens;
        }
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

    #[test]
    fn moves_between_healthy_and_partial() {
        let mut h = Health::default();
        let t0 = Instant::now();
        assert_eq!(h.success(t0, Duration::from_millis(100)), None);
        assert_eq!(
            h.failure(t0, 500, "Openai.InternalServerError".into()),
            Some(HealthState::PartialOutage)
        );
        assert_eq!(h.failure(t0, 500, "x".into()), None);
        assert_eq!(h.recent_failures(t0), 2);
        assert_eq!(
            h.recent_failures(t0 + FAILURE_WINDOW + Duration::from_secs(1)),
            0
        );
        assert_eq!(
            h.success(t0, Duration::from_millis(300)),
            Some(HealthState::Healthy)
        );
        assert!((h.latency_ewma.unwrap() - 0.14).abs() < 1e-9);
    }
}
