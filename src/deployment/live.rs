//! What routing reads about a deployment on every request, kept in atomics so that HTTP workers decide
//! without a message round trip: requests in flight, usage in the current minute, the cooldown gate and the
//! probe that reopens it, and the latency and upstream headers the DeploymentActor writes back.
//!
//! Cooldowns are decided where the failure is seen. The worker whose attempt failed applies the rule
//! ([`Live::record_failure`]) and the first to move the gate reports a new cooldown, so a second request can
//! never reach a deployment that has just been taken out while a message is on its way to its actor. Times
//! are wall-clock milliseconds, the same clock a Redis-shared gate will use across replicas.

use crate::window::Window;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Whether a failure the deployment caused (`record_failure` sees only those) cools it down at once; the
/// table is `error::Meaning`.
fn cools_down_at_once(status: u16) -> bool {
    crate::error::Meaning::of(true, status, crate::error::ErrorKind::APIError).cools_down_at_once
}

/// The cooldown rule, from `router_settings`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CooldownPolicy {
    /// Failures tolerated per minute; one more starts a cooldown.
    pub allowed_fails: u32,
    pub cooldown_time: Duration,
    /// How long a probe may be out before another request may probe instead (the attempt's timeout).
    pub probe_timeout: Duration,
}

/// A cooldown that a failure started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CooldownStarted {
    pub until_ms: i64,
}

const NONE: i64 = i64::MIN;

#[derive(Debug)]
pub struct Live {
    in_flight: AtomicU32,
    /// Wall-clock ms until which routing skips the deployment; 0 when it never cooled down.
    cooldown_until: AtomicI64,
    /// When the current (or last) cooldown started.
    cooldown_from: AtomicI64,
    /// Set when a cooldown starts, cleared by the first success after it ends: until then one request at
    /// a time (the probe) may use the deployment.
    probation: AtomicBool,
    /// When the current probe was handed out (ms); 0 when none is out.
    probe_at: AtomicI64,
    failures: Window,
    requests: Window,
    tokens: Window,
    /// Latency average in microseconds; 0 when unknown.
    latency_us: AtomicU64,
    remaining_requests: AtomicI64,
    remaining_tokens: AtomicI64,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            in_flight: AtomicU32::new(0),
            cooldown_until: AtomicI64::new(0),
            cooldown_from: AtomicI64::new(0),
            probation: AtomicBool::new(false),
            probe_at: AtomicI64::new(0),
            failures: Window::default(),
            requests: Window::default(),
            tokens: Window::default(),
            latency_us: AtomicU64::new(0),
            remaining_requests: AtomicI64::new(NONE),
            remaining_tokens: AtomicI64::new(NONE),
        }
    }
}

fn minute(now_ms: i64) -> u64 {
    (now_ms.max(0) / 60_000) as u64
}

/// Holds one in-flight slot; released when dropped. Dropping it also frees the probe of a deployment still
/// on probation, so a probe whose request was abandoned (the client left, the deadline passed) does not keep
/// the deployment out until the probe timeout.
#[derive(Debug)]
pub struct InFlight {
    live: Arc<Live>,
    /// This attempt is the probe of a deployment on probation.
    probe: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let l = &self.live;
        l.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.probe && l.on_probation() && !l.cooling(crate::units::now_ms()) {
            l.probe_at.store(0, Ordering::Release);
        }
    }
}

impl Live {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Counts an attempt as started (in flight, and one request in this minute's usage).
    /// `probe`: this attempt holds the deployment's probe (see [`Live::claim`]).
    pub fn start(self: &Arc<Self>, now_ms: i64, probe: bool) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.add(minute(now_ms), 1);
        InFlight {
            live: self.clone(),
            probe,
        }
    }

    pub fn add_tokens(&self, now_ms: i64, tokens: u64) {
        self.tokens.add(minute(now_ms), tokens);
    }

    /// Requests and tokens sent to the deployment in the current minute.
    pub fn usage(&self, now_ms: i64) -> (u64, u64) {
        let m = minute(now_ms);
        (self.requests.current(m), self.tokens.current(m))
    }

    pub fn cooldown_until(&self) -> i64 {
        self.cooldown_until.load(Ordering::Acquire)
    }

    pub fn cooling(&self, now_ms: i64) -> bool {
        self.cooldown_until() > now_ms
    }

    pub fn on_probation(&self) -> bool {
        self.probation.load(Ordering::Acquire)
    }

    /// Whether routing may send a request now: not cooling down, and not waiting on a probe that is out.
    pub fn available(&self, now_ms: i64, policy: &CooldownPolicy) -> bool {
        if self.cooling(now_ms) {
            return false;
        }
        if !self.on_probation() {
            return true;
        }
        let at = self.probe_at.load(Ordering::Acquire);
        at == 0 || now_ms - at > policy.probe_timeout.as_millis() as i64
    }

    /// Takes the deployment for one request: `Some(false)` when it is not on probation, `Some(true)` when
    /// this request got its probe, `None` when another request holds the probe.
    pub fn claim(&self, now_ms: i64, policy: &CooldownPolicy) -> Option<bool> {
        if !self.on_probation() {
            return Some(false);
        }
        let at = self.probe_at.load(Ordering::Acquire);
        let free = at == 0 || now_ms - at > policy.probe_timeout.as_millis() as i64;
        let won = free
            && self
                .probe_at
                .compare_exchange(at, now_ms.max(1), Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        won.then_some(true)
    }

    /// A successful attempt that started at `started_ms`. It proves the deployment back (ending probation,
    /// and a cooldown it was sent into because nothing else could answer), unless it started before the
    /// cooldown: such a straggler proves nothing. Returns whether it ended a cooldown or probation.
    pub fn record_success(&self, now_ms: i64, started_ms: i64) -> bool {
        if !self.on_probation() || started_ms < self.cooldown_from.load(Ordering::Acquire) {
            return false;
        }
        if self.cooling(now_ms) {
            let until = self.cooldown_until();
            if until > now_ms
                && self
                    .cooldown_until
                    .compare_exchange(until, now_ms, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                return false;
            }
        }
        self.end_probation()
    }

    /// Ends probation (its probe and the failures counted before it go); whether it was on.
    fn end_probation(&self) -> bool {
        let ended = self
            .probation
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if ended {
            self.probe_at.store(0, Ordering::Release);
            self.failures.reset();
        }
        ended
    }

    /// A failed attempt with `status` (0 when no HTTP status came back). Applies the cooldown rule and
    /// returns the cooldown this failure started, if it started one. A failure while already cooling down
    /// may extend the cooldown (a longer `retry-after`) but does not start a new one.
    pub fn record_failure(
        &self,
        now_ms: i64,
        status: u16,
        retry_after: Option<Duration>,
        policy: &CooldownPolicy,
    ) -> Option<CooldownStarted> {
        let fails = self.failures.add(minute(now_ms), 1);
        let probing = self.on_probation() && !self.cooling(now_ms);
        let trips = cools_down_at_once(status) || fails > policy.allowed_fails as u64 || probing;
        if !trips {
            return None;
        }
        let length = retry_after
            .unwrap_or_default()
            .max(policy.cooldown_time)
            .as_millis() as i64;
        let until = now_ms + length;
        let mut cur = self.cooldown_until.load(Ordering::Acquire);
        loop {
            if cur > now_ms {
                // Already cooling down: only ever extend.
                if until <= cur {
                    return None;
                }
                match self.cooldown_until.compare_exchange_weak(
                    cur,
                    until,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return None,
                    Err(v) => cur = v,
                }
                continue;
            }
            match self.cooldown_until.compare_exchange_weak(
                cur,
                until,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.cooldown_from.store(now_ms, Ordering::Release);
                    self.probation.store(true, Ordering::Release);
                    self.probe_at.store(0, Ordering::Release);
                    return Some(CooldownStarted { until_ms: until });
                }
                Err(v) => cur = v,
            }
        }
    }

    /// A cooldown another replica started (shared through Redis): taken over when it ends later than the
    /// local one. Returns whether it was.
    pub fn adopt_cooldown(&self, now_ms: i64, until_ms: i64) -> bool {
        let mut cur = self.cooldown_until.load(Ordering::Acquire);
        loop {
            if until_ms <= cur || until_ms <= now_ms {
                return false;
            }
            match self.cooldown_until.compare_exchange_weak(
                cur,
                until_ms,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if cur <= now_ms {
                        self.cooldown_from.store(now_ms, Ordering::Release);
                    }
                    self.probation.store(true, Ordering::Release);
                    self.probe_at.store(0, Ordering::Release);
                    return true;
                }
                Err(v) => cur = v,
            }
        }
    }

    /// Another replica holds the probe: this replica does not send requests here for about a second, then
    /// looks again (the other replica's outcome usually arrives first).
    pub fn probe_elsewhere(&self, now_ms: i64, policy: &CooldownPolicy) {
        let timeout = policy.probe_timeout.as_millis() as i64;
        self.probe_at
            .store((now_ms - timeout + 1_000).max(1), Ordering::Release);
    }

    /// Another replica's probe succeeded: probation ends (unless this replica is in a cooldown of its own
    /// that has not ended). Returns whether it did.
    pub fn recovered_elsewhere(&self, now_ms: i64) -> bool {
        if self.cooling(now_ms) {
            return false;
        }
        self.end_probation()
    }

    /// Failures counted in the current minute.
    pub fn recent_failures(&self, now_ms: i64) -> u64 {
        self.failures.current(minute(now_ms))
    }

    pub fn latency(&self) -> Option<Duration> {
        match self.latency_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    pub fn set_latency(&self, latency: Duration) {
        let us = (latency.as_micros() as u64).max(1);
        self.latency_us.store(us, Ordering::Release);
    }

    /// The upstream's last `x-ratelimit-remaining-requests` / `-tokens`.
    pub fn remaining(&self) -> (Option<i64>, Option<i64>) {
        let get = |a: &AtomicI64| Some(a.load(Ordering::Acquire)).filter(|&v| v != NONE);
        (get(&self.remaining_requests), get(&self.remaining_tokens))
    }

    pub fn set_remaining(&self, requests: Option<f64>, tokens: Option<f64>) {
        if let Some(v) = requests {
            self.remaining_requests.store(v as i64, Ordering::Release);
        }
        if let Some(v) = tokens {
            self.remaining_tokens.store(v as i64, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CooldownPolicy = CooldownPolicy {
        allowed_fails: 3,
        cooldown_time: Duration::from_secs(5),
        probe_timeout: Duration::from_secs(10),
    };

    #[test]
    fn more_than_allowed_fails_in_a_minute_cools_down() {
        let l = Live::default();
        let t = 1_000_000_000;
        for _ in 0..3 {
            assert_eq!(l.record_failure(t, 500, None, &POLICY), None);
        }
        assert!(l.available(t, &POLICY));
        let c = l.record_failure(t, 500, None, &POLICY).unwrap();
        assert_eq!(c.until_ms, t + 5000);
        assert!(!l.available(t + 4999, &POLICY));
        // Failing again while cooling down starts nothing new.
        assert_eq!(l.record_failure(t + 10, 500, None, &POLICY), None);
        // Failures of an earlier minute do not count.
        let l = Live::default();
        for _ in 0..3 {
            l.record_failure(t, 500, None, &POLICY);
        }
        assert_eq!(l.record_failure(t + 60_000, 500, None, &POLICY), None);
    }

    #[test]
    fn rate_limits_cool_down_at_once_for_at_least_retry_after() {
        let l = Live::default();
        let t = 1_000_000_000;
        let c = l
            .record_failure(t, 429, Some(Duration::from_secs(30)), &POLICY)
            .unwrap();
        assert_eq!(c.until_ms, t + 30_000);
        assert!(l.record_failure(t, 400, None, &POLICY).is_none());
        // A longer retry-after extends the cooldown without counting a new one.
        assert_eq!(
            l.record_failure(t + 1, 429, Some(Duration::from_secs(60)), &POLICY),
            None
        );
        assert_eq!(l.cooldown_until(), t + 1 + 60_000);
    }

    #[test]
    fn one_probe_after_the_cooldown_then_back_or_out_again() {
        let l = Live::default();
        let t = 1_000_000_000;
        l.record_failure(t, 429, None, &POLICY).unwrap();
        assert!(
            !l.record_success(t + 1, t - 5),
            "a straggler's success does not end a cooldown"
        );
        let after = t + 5001;
        assert!(l.available(after, &POLICY));
        assert_eq!(l.claim(after, &POLICY), Some(true));
        assert!(!l.available(after, &POLICY), "one probe at a time");
        assert_eq!(l.claim(after, &POLICY), None);
        // A probe that never reports frees the slot after the probe timeout.
        assert_eq!(l.claim(after + 10_001, &POLICY), Some(true));
        // A failed probe cools down again, whatever its status.
        let c = l
            .record_failure(after + 10_002, 500, None, &POLICY)
            .unwrap();
        assert_eq!(c.until_ms, after + 10_002 + 5000);
        let later = c.until_ms + 1;
        assert_eq!(l.claim(later, &POLICY), Some(true));
        assert!(l.record_success(later, later));
        assert!(!l.on_probation());
        assert!(l.available(later, &POLICY));
        assert_eq!(l.claim(later, &POLICY), Some(false));
        assert_eq!(l.recent_failures(later), 0);
    }

    #[test]
    fn usage_and_in_flight() {
        let l = Arc::new(Live::default());
        let t = 1_000_000_000;
        {
            let _a = l.start(t, false);
            let _b = l.start(t, false);
            assert_eq!(l.in_flight(), 2);
        }
        assert_eq!(l.in_flight(), 0);
        l.add_tokens(t, 70);
        assert_eq!(l.usage(t), (2, 70));
        assert_eq!(l.usage(t + 60_000), (0, 0));
        l.set_remaining(Some(5.0), None);
        assert_eq!(l.remaining(), (Some(5), None));
    }

    #[test]
    fn a_request_sent_during_the_cooldown_that_succeeds_ends_it() {
        let l = Live::default();
        let t = 1_000_000_000;
        l.record_failure(t, 429, None, &POLICY).unwrap();
        assert!(l.record_success(t + 10, t + 5));
        assert!(!l.cooling(t + 10));
        assert!(!l.on_probation());
    }

    #[test]
    fn an_abandoned_probe_frees_the_deployment() {
        let l = Arc::new(Live::default());
        let t = crate::units::now_ms() - 10_000;
        l.record_failure(t, 429, None, &POLICY).unwrap();
        let now = crate::units::now_ms();
        assert_eq!(l.claim(now, &POLICY), Some(true));
        let slot = l.start(now, true);
        assert!(!l.available(now, &POLICY));
        drop(slot);
        assert!(l.available(now, &POLICY));
    }

    #[test]
    fn a_request_older_than_the_cooldown_never_ends_probation() {
        let l = Live::default();
        let t = 1_000_000_000;
        l.record_failure(t, 429, None, &POLICY).unwrap();
        // A long stream that started before the cooldown ends after it.
        assert!(!l.record_success(t + 6000, t - 100));
        assert!(l.on_probation());
    }
}
