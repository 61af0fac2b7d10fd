//! The retry and fallback loop: the requested group first, then the fallback groups the router's policy
//! names for the error that ended it, each group with up to `1 + num_retries` attempts. What an error means
//! (retry, fall back, count against the deployment) is asked of the error; which group is next and how
//! long to wait is asked of `router/policy.rs`.

use super::admission::probe_turn;
use super::pending::{Answer, Pending};
use super::upstream::{attempt, Call};
use crate::accounts::{may_use, Caller};
use crate::actors::metrics::FallbackTried;
use crate::deployment::Deployment;
use crate::error::{ApiError, ErrorKind, Fallback};
use crate::router::policy::{self, Recovery};
use crate::router::table::{Group, Pick, RoutingTable};
use crate::units::now_ms;
use actix::clock::{sleep, Instant};
use rand::Rng;
use std::sync::Arc;

/// The requested group, then the fallbacks for the error that ended it (those that exist and the caller
/// may use), until one answers or the deadline passes.
pub(super) async fn serve(
    table: &RoutingTable,
    group: &Group,
    call: &Call<'_>,
    request_fallbacks: Option<&Vec<String>>,
    pending: &mut Pending,
) -> Result<Answer, ApiError> {
    let router = &*table.settings;
    let caller = pending.caller.as_ref();
    // Where a failure of the requested group goes, unless it is a context-window or content-policy error.
    let general: Vec<&Group> =
        policy::fallback_names(Fallback::General, router, &group.name, request_fallbacks)
            .iter()
            .filter_map(|name| table.group(name))
            .filter(|g| g.name != group.name && caller.is_none_or(|c| may_use(c, &g.name)))
            .collect();
    let mut recovery = Recovery::default();
    let alone = !general
        .iter()
        .any(|g| g.any_available(call.endpoint, now_ms()));
    let cause = match try_group(group, call, alone, &mut recovery, pending).await {
        Ok(answer) => return Ok(answer),
        Err(err) => err,
    };
    let chain: Vec<&Group> = match cause.meaning().fallback {
        Fallback::General => general,
        kind => named(
            table,
            policy::fallback_names(kind, router, &group.name, None),
            pending.caller.as_ref(),
        ),
    };
    let why = (cause.status.as_u16(), cause.class());
    let mut last = cause;
    for (i, g) in chain.iter().enumerate() {
        if call.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        pending.fallbacks.push(FallbackTried {
            fallback_model: g.name.clone(),
            ok: false,
            cause: why.clone(),
        });
        let alone = !chain[i + 1..]
            .iter()
            .any(|g| g.any_available(call.endpoint, now_ms()));
        match try_group(g, call, alone, &mut recovery, pending).await {
            Ok(answer) => return Ok(answer),
            // A real upstream answer says more than "nothing was available" does.
            Err(err) if err.provider.is_some() || last.provider.is_none() => last = err,
            Err(_) => {}
        }
    }
    if last.retry_after.is_none() {
        last.retry_after = recovery.retry_after_secs(now_ms());
    }
    Err(last)
}

/// The configured fallback groups that exist and that the caller may use (the others are skipped).
pub(super) fn named<'t>(
    table: &'t RoutingTable,
    names: &[String],
    caller: Option<&Caller>,
) -> Vec<&'t Group> {
    names
        .iter()
        .filter_map(|n| table.group(n))
        .filter(|g| caller.is_none_or(|c| may_use(c, &g.name)))
        .collect()
}

/// Up to `1 + num_retries` attempts on the deployments of `g`. A retry goes to another deployment when
/// there is one (a deployment that failed is tried again only when no other is available, after its
/// `retry-after`); non-retryable errors end the group at once. `alone` allows the group's only
/// deployment to be used while it cools down, when nothing else could answer.
pub(super) async fn try_group(
    g: &Group,
    call: &Call<'_>,
    alone: bool,
    recovery: &mut Recovery,
    pending: &mut Pending,
) -> Result<Answer, ApiError> {
    let mut tried: Vec<Arc<Deployment>> = Vec::new();
    let mut last: Option<ApiError> = None;
    let mut left = call.num_retries + 1;
    while left > 0 {
        let now = now_ms();
        let r = rand::thread_rng().gen::<f64>();
        let mut pick = g.pick(call.strategy, call.endpoint, &tried, now, r, call.tokens);
        if matches!(pick, Pick::Cooling { .. }) && !tried.is_empty() {
            pick = g.pick(call.strategy, call.endpoint, &[], now, r, call.tokens);
        }
        let (dep, probe) = match pick {
            Pick::Chosen(d, probe) => (d, probe),
            Pick::Cooling { until_ms } => {
                recovery.note(until_ms);
                if last.is_none() && alone && g.deployments.len() == 1 && g.serves(call.endpoint) {
                    (g.deployments[0].clone(), false)
                } else {
                    break;
                }
            }
            Pick::NoCapacity => {
                let secs = 60 - (now / 1000) % 60;
                let mut err = ApiError::new(
                    ErrorKind::RateLimitError,
                    actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "No deployment of model group `{}` has room for this request under its rpm/tpm limits this minute",
                        g.name
                    ),
                );
                err.retry_after = Some(secs as u64);
                last = Some(err);
                break;
            }
        };
        // Taken now: dropping it unused (deadline below) gives back the probe it may hold.
        let slot = dep.live.start(now_ms(), probe);
        if let Some(prev) = &last {
            let same = tried.iter().any(|t| Arc::ptr_eq(t, &dep));
            let wait = policy::retry_wait(call.retry_after, same, prev.retry_after);
            if !policy::fits(Instant::now(), wait, call.deadline) {
                break;
            }
            if !wait.is_zero() {
                sleep(wait).await;
            }
        }
        if call.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // Held until this attempt is over: then another replica may probe if this one proved nothing.
        let mut probe_token = None;
        if probe {
            match probe_turn(&pending.state, &dep).await {
                Ok(token) => probe_token = token,
                Err(()) => {
                    // Another replica probes it and announces the outcome; this one looks again in a
                    // second, and meanwhile sends its requests elsewhere.
                    drop(slot);
                    dep.live.probe_elsewhere(now_ms(), &dep.policy);
                    tried.push(dep);
                    continue;
                }
            }
        }
        left -= 1;
        match attempt(&dep, slot, call, pending).await {
            Ok(answer) => {
                // Recovered: the announcement of it takes the token away with it.
                if let Some(t) = probe_token {
                    t.settled();
                }
                return Ok(answer);
            }
            Err(err) => {
                if dep.live.cooling(now_ms()) {
                    // A new cooldown: the same.
                    if let Some(t) = probe_token.take() {
                        t.settled();
                    }
                    recovery.note(dep.live.cooldown_until());
                }
                let retry = err.is_retryable();
                if !tried.iter().any(|t| Arc::ptr_eq(t, &dep)) {
                    tried.push(dep);
                }
                last = Some(err);
                if !retry {
                    break;
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        if call.deadline.is_some_and(|d| Instant::now() >= d) {
            return ApiError::new(
                ErrorKind::Timeout,
                actix_web::http::StatusCode::REQUEST_TIMEOUT,
                "the request ran out of time (router_settings.timeout) before a deployment answered",
            );
        }
        let mut err = ApiError::new(
            ErrorKind::ServiceUnavailableError,
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "No deployments available for model group `{}`: every deployment is cooling down after failures",
                g.name
            ),
        );
        err.retry_after = recovery.retry_after_secs(now_ms());
        err
    }))
}
