//! The request's accounting: filled in as the request is understood, finished exactly once (also when the
//! client goes away mid-request): spend settled on the caller's ledgers, a spend-log row, the attempts
//! reported to their deployments, and the metrics event.

use crate::accounts::{settle, Admission, Caller, EndUserEntry};
use crate::actors::deployment::AttemptDone;
use crate::actors::metrics::{Attempt, FallbackTried, Outcome, RequestFinished};
use crate::actors::outbox;
use crate::deployment::Deployment;
use crate::error::{ApiError, ErrorKind};
use crate::http::state::AppState;
use crate::labels::KeyLabels;
use crate::providers::wire::Usage;
use crate::store::SpendEvent;
use crate::units::{micros, now_ms, usd};
use actix::clock::Instant;
use actix_web::{web, HttpResponse};
use std::sync::Arc;
use std::time::Duration;

/// What the request's accounting needs, filled in as the request is understood, and finished exactly once:
/// spend settled on the caller's ledgers, a spend-log row, and the metrics event.
pub(super) struct Pending {
    pub(super) state: web::Data<AppState>,
    pub(super) started: Instant,
    pub(super) start_ms: i64,
    pub(super) requested_model: Arc<str>,
    pub(super) end_user: Option<String>,
    pub(super) key: Arc<KeyLabels>,
    pub(super) custom: Vec<String>,
    pub(super) attempts: Vec<Attempt>,
    pub(super) caller: Option<Caller>,
    pub(super) end_user_entry: Option<Arc<EndUserEntry>>,
    /// Set once budgets and limits admitted the request; releases its parallel slot when dropped.
    pub(super) admission: Option<Admission>,
    /// Usage and cost of a stream that failed after generating text: charged although the request failed.
    pub(super) partial: Option<(Usage, f64)>,
    /// Fallback groups tried; the last is marked successful when it answers.
    pub(super) fallbacks: Vec<FallbackTried>,
    /// The request's accounting has been sent (or this is a placeholder left behind by a stream).
    pub(super) done: bool,
}

impl Pending {
    pub(super) fn new(state: &web::Data<AppState>) -> Pending {
        Pending {
            state: state.clone(),
            started: Instant::now(),
            start_ms: now_ms(),
            requested_model: Arc::from(""),
            end_user: None,
            key: state.anonymous.clone(),
            custom: vec![String::new(); state.config.metrics.custom_metadata_labels.len()],
            attempts: Vec::new(),
            caller: None,
            end_user_entry: None,
            admission: None,
            partial: None,
            fallbacks: Vec::new(),
            done: false,
        }
    }

    /// What stays behind when a stream takes the request's accounting with it.
    pub(super) fn placeholder(state: &web::Data<AppState>) -> Pending {
        let mut p = Pending::new(state);
        p.done = true;
        p
    }

    pub(super) fn send(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    /// Settles, logs and reports the request, once.
    fn finish(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let (mut key_entry, mut team_entry, mut user_entry, mut model_limits) =
            (None, None, None, None);
        // The caller and its windows move into the metrics event: nothing else needs them now.
        if let Some(caller) = self.caller.take() {
            if let (Some(adm), Some((usage, cost))) = (&self.admission, self.charge(&outcome)) {
                settle(
                    &caller,
                    self.end_user_entry.as_deref(),
                    adm,
                    micros(cost),
                    usage.total_tokens,
                    self.state
                        .config
                        .general
                        .redis_url
                        .is_some()
                        .then_some(&self.state.actors.accounts.quota),
                );
            }
            key_entry = caller.key;
            team_entry = caller.team;
            user_entry = caller.user;
            model_limits = self.admission.as_mut().and_then(|a| a.model_limits.take());
        }
        if self.admission.is_some() {
            self.log_spend(&outcome);
        }
        self.admission = None;
        if let (Outcome::Success { deployment, .. }, Some(last)) =
            (&outcome, self.fallbacks.last_mut())
        {
            last.ok = *last.fallback_model == *deployment.model_group;
        }
        if let Some(m) = &self.state.actors.metrics {
            let event = RequestFinished {
                requested_model: self.requested_model.clone(),
                end_user: self.end_user.take(),
                key: self.key.clone(),
                custom: std::mem::take(&mut self.custom),
                attempts: std::mem::take(&mut self.attempts),
                outcome,
                key_entry,
                team_entry,
                user_entry,
                end_user_entry: self.end_user_entry.take(),
                model_limits,
                fallbacks: std::mem::take(&mut self.fallbacks),
            };
            outbox::request_finished(m, event);
        }
    }

    /// What the request costs: its usage on success, what a broken stream generated on failure.
    fn charge(&self, outcome: &Outcome) -> Option<(Usage, f64)> {
        match outcome {
            Outcome::Success { usage, cost, .. } => Some((*usage, *cost)),
            Outcome::Failure { .. } => self.partial,
        }
    }

    /// One spend-log row for a request that reached the upstream stage.
    fn log_spend(&self, outcome: &Outcome) {
        let (usage, cost) = self.charge(outcome).unwrap_or_default();
        let (spend_micros, ok) = (micros(cost), matches!(outcome, Outcome::Success { .. }));
        let row = SpendEvent {
            id: rand::random(),
            key: self.key.clone(),
            end_user: self.end_user.clone(),
            model_group: self.requested_model.clone(),
            deployment: self.attempts.last().map(|a| a.deployment.clone()),
            usage,
            spend_micros,
            ok,
            start_ms: self.start_ms,
            end_ms: now_ms(),
        };
        outbox::spend_logged(&self.state.actors.budget, row);
    }

    pub(super) fn fail(self, err: &ApiError) {
        let outcome = Outcome::Failure {
            status: err.status.as_u16(),
            exception_class: err.class(),
        };
        self.send(outcome);
    }
}

impl Drop for Pending {
    /// The handler was dropped before it answered (the client closed the connection mid-request): the
    /// request still counts, as failed with status 499 (as nginx logs it), and releases its admission.
    fn drop(&mut self) {
        if !self.done {
            self.finish(Outcome::Failure {
                status: 499,
                exception_class: ErrorKind::APIConnectionError.as_str().to_owned(),
            });
        }
    }
}

impl Pending {
    /// Records one upstream attempt with the deployment actor and in the event.
    pub(super) fn attempt(
        &mut self,
        dep: &Arc<Deployment>,
        result: Result<(), &ApiError>,
        latency: Duration,
        remaining: (Option<f64>, Option<f64>),
    ) {
        let now = now_ms();
        let mut recovered = false;
        let against = result.is_err_and(|e| e.meaning().against_deployment);
        let cooldown = match result {
            Ok(()) => {
                let started = now - latency.as_millis() as i64;
                recovered = dep.live.record_success(now, started);
                None
            }
            Err(e) if against => dep.live.record_failure(
                now,
                e.status.as_u16(),
                e.retry_after.map(Duration::from_secs),
                &dep.policy,
            ),
            Err(_) => None,
        };
        let result = result.map_err(|e| (e.status.as_u16(), e.class()));
        let event = AttemptDone {
            result: result.clone(),
            against,
            latency,
            remaining_requests: remaining.0,
            remaining_tokens: remaining.1,
            // Only a cooldown's counter carries the request's custom labels.
            custom: if cooldown.is_some() {
                self.custom.clone()
            } else {
                Vec::new()
            },
            cooldown,
            recovered,
        };
        outbox::attempt_done(dep, event);
        self.attempts.push(Attempt {
            deployment: dep.labels.clone(),
            result,
            remaining_requests: remaining.0,
            remaining_tokens: remaining.1,
        });
    }
}

pub(super) enum Answer {
    /// A complete response; the metrics event goes out now.
    Done(HttpResponse, Outcome),
    /// A stream; its body sends the metrics event when it ends.
    Streaming(HttpResponse),
}

pub(super) fn success(
    dep: &Deployment,
    usage: Usage,
    total: Duration,
    api: Duration,
    ttft: Option<Duration>,
) -> Outcome {
    let cost = cost_of(dep, &usage);
    dep.live.add_tokens(now_ms(), usage.total_tokens);
    Outcome::Success {
        deployment: dep.labels.clone(),
        usage,
        cost,
        total_latency: total.as_secs_f64(),
        api_latency: api.as_secs_f64(),
        time_to_first_token: ttft.map(|d| d.as_secs_f64()),
    }
}

/// USD for `usage` at the deployment's prices, rounded to the micro-dollar once, so the ledgers, the spend
/// log and the metric agree exactly.
///
/// Prompt tokens read from or written to a prompt cache are priced at `cache_read_input_token_cost` and
/// `cache_creation_input_token_cost` (each the input price when not set), the rest at the input price.
pub(super) fn cost_of(dep: &Deployment, usage: &Usage) -> f64 {
    let input = dep.cfg.input_cost_per_token.unwrap_or(0.0);
    let read = usage.cache_read_tokens.min(usage.prompt_tokens);
    let created = usage.cache_creation_tokens.min(usage.prompt_tokens - read);
    let plain = usage.prompt_tokens - read - created;
    usd(micros(
        plain as f64 * input
            + read as f64 * dep.cfg.cache_read_input_token_cost.unwrap_or(input)
            + created as f64 * dep.cfg.cache_creation_input_token_cost.unwrap_or(input)
            + usage.completion_tokens as f64 * dep.cfg.output_cost_per_token.unwrap_or(0.0),
    ))
}
