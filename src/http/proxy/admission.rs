//! Admission beyond the caller's own ledgers: the spend-log backlog, limits shared across replicas through
//! Redis (leases, parallel-request slots, the outage mode), and whose turn it is to probe a deployment back
//! from a cooldown.

use crate::accounts::quota::ProbeToken;
use crate::accounts::{admit, limit_error, Admission, Caller, Denied, EndUserEntry, Sharing};
use crate::config::RedisOutageMode;
use crate::deployment::Deployment;
use crate::error::{ApiError, ErrorKind};
use crate::http::state::AppState;
use crate::units::now_ms;
use actix::clock::{sleep, Instant};
use std::time::Duration;

/// While the database is away the spend log waits in memory; when that backlog is full, a request is
/// refused rather than served without a record (`general_settings.max_unwritten_spend_logs`).
pub(super) fn spend_log_has_room(state: &AppState) -> Result<(), ApiError> {
    let backlog = state
        .actors
        .accounts
        .unwritten_logs
        .load(std::sync::atomic::Ordering::Acquire);
    if backlog < state.config.general.max_unwritten_spend_logs {
        return Ok(());
    }
    let mut err = ApiError::new(
        ErrorKind::ServiceUnavailableError,
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        "the gateway cannot record spend right now (its database is unavailable and the backlog is full); try again shortly",
    );
    err.retry_after = Some(5);
    Err(err)
}

/// How many times one request asks Redis for slices before it is refused: each answer grants at least one
/// unit of every limit asked, so asking again means other requests of this replica took the slices first.
pub(super) const MAX_ASKS: usize = 8;

/// How long a request waits for other requests' asks before it is refused (Redis times out in 500 ms).
pub(super) const MAX_ADMISSION_WAIT: Duration = Duration::from_secs(2);

/// Admits the request on this replica's leases, asking Redis for more of a shared limit when one runs out
/// (`accounts/quota.rs`), and takes its parallel-request slot in Redis when the key has a limit on them.
pub(super) async fn admit_shared(
    state: &AppState,
    caller: &Caller,
    end_user: Option<&EndUserEntry>,
    group: &str,
) -> Result<Admission, ApiError> {
    let accounts = &state.actors.accounts;
    let redis = state.config.general.redis_url.is_some();
    let quota = &accounts.quota;
    // The parallel-request slot first: refused here, nothing else was taken.
    let mut slot = None;
    let parallel = caller
        .key
        .as_ref()
        .and_then(|k| k.rec.max_parallel_requests.map(|m| (m, &k.rec.token)));
    if let (Some((max, token)), true) = (parallel, redis && quota.usable(now_ms())) {
        match quota.take_slot(format!("k:{token}"), max).await {
            Ok(Some(s)) => slot = Some(s),
            Ok(None) => {
                return Err(limit_error(
                    format!("max_parallel_requests of this key ({max}) reached"),
                    now_ms(),
                ))
            }
            // Redis failed: this replica's own count holds the request (as the outage mode says).
            Err(_) => {}
        }
    }
    let (mut asked, started) = (0, Instant::now());
    while asked < MAX_ASKS && started.elapsed() < MAX_ADMISSION_WAIT {
        let now = now_ms();
        let mut how = sharing(state, now);
        if redis && how == Sharing::Shared {
            if quota.usable(now) {
                how = Sharing::Leased;
            } else if quota.backing_off(now) {
                // A Redis call failed a moment ago: counted as in an outage until Redis is tried again.
                how = outage(state);
            }
        }
        match admit(caller, end_user, group, now, how, redis) {
            Ok(mut admission) => {
                admission.slot = slot;
                return Ok(admission);
            }
            Err(Denied::Refused(e)) => return Err(e),
            // Another request's ask answers for this one too; Redis answers within its timeout.
            Err(Denied::Wait) => sleep(Duration::from_millis(1)).await,
            Err(Denied::Ask(asks)) => {
                asked += 1;
                let replicas = accounts
                    .redis
                    .replicas
                    .load(std::sync::atomic::Ordering::Acquire);
                // A failure starts the back-off: the next round counts the request as Redis's outage
                // mode says.
                let _ = quota.claim(&asks, replicas).await;
            }
        }
    }
    Err(limit_error(
        "the shared limits of this key could not be reserved: too many requests at once".into(),
        now_ms(),
    ))
}

/// How long a probe holds the shared token at most (then another replica may probe too): a replica that
/// died mid-probe, or an outcome whose announcement was lost, holds the others back no longer.
pub(super) const MAX_PROBE_HOLD: Duration = Duration::from_secs(60);

/// With Redis, one replica probes a deployment back from a cooldown, not each of them. `Ok(token)`: this
/// replica probes (holding the shared token while it does, when there is one); `Err(())`: another
/// replica does. Without Redis (or when it fails) every replica probes on its own.
pub(super) async fn probe_turn(
    state: &AppState,
    dep: &Deployment,
) -> Result<Option<ProbeToken>, ()> {
    let quota = &state.actors.accounts.quota;
    if state.config.general.redis_url.is_none() || !quota.usable(now_ms()) {
        return Ok(None);
    }
    let ttl = dep.policy.probe_timeout.min(MAX_PROBE_HOLD);
    match quota.take_probe(&dep.cfg.id, ttl).await {
        Ok(Some(token)) => Ok(Some(token)),
        Ok(None) => Err(()),
        Err(_) => Ok(None),
    }
}

/// What Redis's outage mode makes of shared limits.
pub(super) fn outage(state: &AppState) -> Sharing {
    match state.config.general.redis_outage_mode {
        RedisOutageMode::Divide => Sharing::Divided(
            state
                .actors
                .accounts
                .redis
                .replicas
                .load(std::sync::atomic::Ordering::Acquire)
                .max(1),
        ),
        RedisOutageMode::Refuse => Sharing::Refuse,
    }
}

/// How shared rate limits are counted now: with Redis unreachable, as `general_settings.redis_outage_mode`
/// says.
pub(super) fn sharing(state: &AppState, now_ms: i64) -> Sharing {
    let view = &state.actors.accounts.redis;
    if state.config.general.redis_url.is_none() || view.reachable(now_ms) {
        return Sharing::Shared;
    }
    outage(state)
}
