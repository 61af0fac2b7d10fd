//! The request path's checks: who is calling, what it may use, admission on budgets and limits (own
//! counts, Redis leases, or the outage mode), and settling what the request cost.

use super::entries::*;
use super::ledger::*;
use crate::error::{ApiError, ErrorKind};
use crate::labels::KeyLabels;
use crate::units::{micros, usd};
use crate::window::{current_minute, seconds_to_next_minute};
use actix_web::http::StatusCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

// ---- the request path ---------------------------------------------------------------------------------

/// Who is calling, as authentication found it.
#[derive(Clone)]
pub struct Caller {
    pub key: Option<Arc<KeyEntry>>,
    pub team: Option<Arc<TeamEntry>>,
    pub user: Option<Arc<UserEntry>>,
    pub labels: Arc<KeyLabels>,
}

impl Caller {
    pub fn anonymous(labels: Arc<KeyLabels>) -> Caller {
        Caller {
            key: None,
            team: None,
            user: None,
            labels,
        }
    }

    pub fn of_key(accounts: &Accounts, key: Arc<KeyEntry>) -> Caller {
        let team = key
            .rec
            .team_id
            .as_ref()
            .and_then(|t| accounts.teams.get(t).map(|e| e.clone()));
        let user = key
            .rec
            .user_id
            .as_ref()
            .and_then(|u| accounts.users.get(u).map(|e| e.clone()));
        Caller {
            labels: key.labels.clone(),
            key: Some(key),
            team,
            user,
        }
    }
}

pub(super) fn budget_error(what: &str, spend: i64, max: f64) -> ApiError {
    ApiError::new(
        ErrorKind::BudgetExceededError,
        StatusCode::BAD_REQUEST,
        format!(
            "Budget has been exceeded! {what} Current cost: {}, Max budget: {max}",
            usd(spend)
        ),
    )
}

pub fn limit_error(what: String, now_ms: i64) -> ApiError {
    let mut e = ApiError::new(
        ErrorKind::RateLimitError,
        StatusCode::TOO_MANY_REQUESTS,
        what,
    );
    e.retry_after = Some(seconds_to_next_minute(now_ms));
    e
}

/// Refuses keys that are blocked or expired (401, before any body is read).
pub fn check_key(key: &KeyEntry, now_ms: i64) -> Result<(), ApiError> {
    if key.rec.blocked {
        return Err(ApiError::unauthorized(
            "Authentication Error - this key is blocked",
        ));
    }
    if key.rec.expires.is_some_and(|e| e <= now_ms) {
        return Err(ApiError::unauthorized("Authentication Error - expired key"));
    }
    Ok(())
}

/// Whether `models` (a key's, team's or user's list) lets its holder use `model_group`: an empty list
/// allows every group.
pub(super) fn allows(models: &[String], model_group: &str) -> bool {
    models.is_empty() || models.iter().any(|m| m == model_group)
}

/// Which of the caller's `models` lists (key, team, user) refuses `model_group`, if any.
pub(super) fn refused_by(caller: &Caller, model_group: &str) -> Option<&'static str> {
    if caller
        .key
        .as_ref()
        .is_some_and(|k| !allows(&k.rec.models, model_group))
    {
        return Some("API key");
    }
    if caller
        .team
        .as_ref()
        .is_some_and(|t| !allows(&t.rec.models, model_group))
    {
        return Some("Team");
    }
    if caller
        .user
        .as_ref()
        .is_some_and(|u| !allows(&u.rec.models, model_group))
    {
        return Some("User");
    }
    None
}

/// Whether the key, its team and its user may all use `model_group` (fallbacks skip groups that fail this).
pub fn may_use(caller: &Caller, model_group: &str) -> bool {
    refused_by(caller, model_group).is_none()
}

/// The key's, the team's and the user's `models` lists, when set, must name the model group; `param` is
/// the request field that named it (`model`, `fallbacks`).
pub fn check_model_access(caller: &Caller, model_group: &str, param: &str) -> Result<(), ApiError> {
    if let Some(t) = &caller.team {
        if t.rec.blocked {
            return Err(ApiError::unauthorized(
                "Authentication Error - this key's team is blocked",
            ));
        }
    }
    match refused_by(caller, model_group) {
        None => Ok(()),
        Some(who) => Err(ApiError::new(
            ErrorKind::AuthenticationError,
            StatusCode::UNAUTHORIZED,
            format!("{who} is not allowed to access model={model_group}"),
        )
        .with_param(param)),
    }
}

/// A limited scope during admission: its windows, rpm, tpm, and how errors name it.
type Scope<'a> = (&'a Arc<Limits>, Option<u64>, Option<u64>, ScopeName<'a>);

/// How a refusal names the scope whose limit was reached (formatted only when one is).
pub(super) enum ScopeName<'a> {
    Key,
    KeyOnModel(&'a str),
    Team(&'a str),
    User(&'a str),
}

impl std::fmt::Display for ScopeName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScopeName::Key => f.write_str("this key"),
            ScopeName::KeyOnModel(m) => write!(f, "this key on model {m}"),
            ScopeName::Team(t) => write!(f, "team {t}"),
            ScopeName::User(u) => write!(f, "user {u}"),
        }
    }
}

impl ScopeName<'_> {
    /// The scope in the shared counters' names (`accounts/quota.rs`); `token` is the key's hash.
    fn id(&self, token: &str) -> String {
        match self {
            ScopeName::Key => format!("k:{token}"),
            ScopeName::KeyOnModel(m) => format!("km:{token}:{m}"),
            ScopeName::Team(t) => format!("t:{t}"),
            ScopeName::User(u) => format!("u:{u}"),
        }
    }
}

/// What admission took; dropping it releases the parallel-request slot.
pub struct Admission {
    in_flight: Option<Arc<Limits>>,
    pub minute: u64,
    /// The key's windows for this model group, when it has model-specific limits.
    pub model_limits: Option<Arc<Limits>>,
    /// The parallel-request slot held in Redis, given back when the request ends.
    pub slot: Option<super::quota::Slot>,
    /// The leases (tokens, spend) that count this request as in flight.
    in_leases: Vec<super::quota::LeaseOf>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(l) = &self.in_flight {
            l.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        for l in &self.in_leases {
            l.lease().ended();
        }
    }
}

/// Why admission did not admit: refused, or the shared counters must be asked for more first.
pub enum Denied {
    Refused(ApiError),
    Ask(Vec<super::quota::Ask>),
    /// Another request of this replica is asking Redis for a lease this one needs: try again shortly.
    Wait,
}

impl From<ApiError> for Denied {
    fn from(e: ApiError) -> Denied {
        Denied::Refused(e)
    }
}

/// The budgets of one request: ledger, max budget, how refusals name it, its counter scope.
type Budget<'a> = (&'a Arc<Ledger>, f64, String, String);

/// Admits a request or says why not: budgets of key, team, user and end user (400 `budget_exceeded`),
/// then parallel requests, rpm and tpm of key, team and key-on-model (429 with `retry-after`).
///
/// `redis`: Redis is configured (`accounts/quota.rs`): admissions are then counted in the leases whatever
/// `sharing` is, to be reported when Redis is back. With [`Sharing::Leased`], a
/// lease without room makes admission return [`Denied::Ask`]: the caller asks Redis and admits again.
pub fn admit(
    caller: &Caller,
    end_user: Option<&EndUserEntry>,
    model_group: &str,
    now_ms: i64,
    sharing: Sharing,
    redis: bool,
) -> Result<Admission, Denied> {
    let minute = current_minute(now_ms);
    let leased = sharing == Sharing::Leased;
    let over =
        |ledger: &Ledger, max: Option<f64>| max.filter(|m| ledger.spend_micros() >= micros(*m));
    let token = caller.key.as_ref().map_or("", |k| k.rec.token.as_str());
    let mut budgets: Vec<Budget> = Vec::new();
    if let Some(k) = &caller.key {
        if let Some(max) = k.rec.max_budget {
            budgets.push((&k.ledger, max, "Key".into(), format!("k:{token}")));
        }
    }
    if let Some(t) = &caller.team {
        if let Some(max) = t.rec.max_budget {
            let id = &t.rec.team_id;
            budgets.push((&t.ledger, max, format!("Team={id}"), format!("t:{id}")));
        }
    }
    if let Some(u) = &caller.user {
        if let Some(max) = u.rec.max_budget {
            let id = &u.rec.user_id;
            budgets.push((&u.ledger, max, format!("User={id}"), format!("u:{id}")));
        }
    }
    if let Some(e) = end_user {
        if e.rec.blocked {
            return Err(ApiError::new(
                ErrorKind::PermissionDeniedError,
                StatusCode::FORBIDDEN,
                format!("end user {} is blocked", e.rec.user_id),
            )
            .into());
        }
        if let Some(max) = e.rec.max_budget {
            let id = &e.rec.user_id;
            budgets.push((&e.ledger, max, format!("End user={id}"), format!("e:{id}")));
        }
    }
    // Built first: an early return drops it, which releases what it holds.
    let mut admission = Admission {
        in_flight: None,
        minute,
        model_limits: None,
        slot: None,
        in_leases: Vec::new(),
    };
    let mut asks: Vec<super::quota::Ask> = Vec::new();
    let mut wait = false;
    // Asks already marked as reported: if the request is refused after all, their debts are owed again.
    let unask = |asks: &mut Vec<super::quota::Ask>| {
        for a in asks.drain(..) {
            a.lease.lease().unreported(a.span, a.debt);
        }
    };
    for (ledger, max, what, scope) in &budgets {
        if over(ledger, Some(*max)).is_some() {
            unask(&mut asks);
            return Err(budget_error(what, ledger.spend_micros(), *max).into());
        }
        if !leased {
            continue;
        }
        let span = ledger.period();
        match ledger.lease.room(span, micros(*max)) {
            super::quota::Room::Yes => admission
                .in_leases
                .push(super::quota::LeaseOf::Spend((*ledger).clone())),
            super::quota::Room::Refused => {
                unask(&mut asks);
                return Err(budget_error(what, ledger.spend_micros(), *max).into());
            }
            super::quota::Room::Wait => wait = true,
            super::quota::Room::Ask { debt, window, .. } => asks.push(super::quota::Ask {
                lease: super::quota::LeaseOf::Spend((*ledger).clone()),
                scope: scope.clone(),
                span: span.with(window),
                limit: micros(*max),
                debt,
                init: ledger.spend_micros() - debt,
                asking: true,
            }),
        }
    }

    let mut scopes: [Option<Scope>; 4] = [None, None, None, None];
    if let Some(k) = &caller.key {
        if let Some(max) = k.rec.max_parallel_requests {
            let n = k.limits.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
            admission.in_flight = Some(k.limits.clone());
            let local_max = match sharing {
                Sharing::Divided(replicas) => share_of(max, replicas),
                _ => max,
            };
            if n as u64 > local_max {
                unask(&mut asks);
                return Err(limit_error(
                    format!("max_parallel_requests of this key ({max}) reached"),
                    now_ms,
                )
                .into());
            }
        }
        scopes[0] = Some((&k.limits, k.rec.rpm_limit, k.rec.tpm_limit, ScopeName::Key));
        scopes[1] = k.model_limits.get(model_group).map(|l| {
            (
                l,
                k.rec.model_rpm_limit.get(model_group).copied(),
                k.rec.model_tpm_limit.get(model_group).copied(),
                ScopeName::KeyOnModel(model_group),
            )
        });
        admission.model_limits = k.model_limits.get(model_group).cloned();
    }
    if let Some(t) = &caller.team {
        scopes[2] = Some((
            &t.limits,
            t.rec.rpm_limit,
            t.rec.tpm_limit,
            ScopeName::Team(&t.rec.team_id),
        ));
    }
    if let Some(u) = &caller.user {
        scopes[3] = Some((
            &u.limits,
            u.rec.rpm_limit,
            u.rec.tpm_limit,
            ScopeName::User(&u.rec.user_id),
        ));
    }
    // Take one request slot per scope, giving back what was taken if a later scope refuses.
    let mut taken: [Option<&Limits>; 4] = [None; 4];
    let give_back = |taken: &[Option<&Limits>]| {
        for l in taken.iter().flatten() {
            l.requests.give_back(minute, 1);
            if redis {
                l.leases[0].give_back(super::quota::Span::Minute(minute), 1);
            }
        }
    };
    let span = super::quota::Span::Minute(minute);
    for (i, (limits, rpm, tpm, name)) in scopes
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    {
        let refuse = |asks: &mut Vec<super::quota::Ask>, taken: &[Option<&Limits>], e: ApiError| {
            give_back(taken);
            unask(asks);
            Err(Denied::Refused(e))
        };
        if sharing == Sharing::Refuse && (rpm.is_some() || tpm.is_some()) {
            let mut e = ApiError::new(
                ErrorKind::ServiceUnavailableError,
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the rate limits of {name} cannot be checked: Redis is unreachable (general_settings.redis_outage_mode: refuse)"),
            );
            e.retry_after = Some(1);
            return refuse(&mut asks, &taken, e);
        }
        let tpm_error = |tpm| limit_error(format!("tpm_limit of {name} ({tpm}) reached"), now_ms);
        let rpm_error = |rpm| limit_error(format!("rpm_limit of {name} ({rpm}) reached"), now_ms);
        if let Some(tpm) = *tpm {
            if leased {
                match limits.leases[1].room(span, tpm as i64) {
                    super::quota::Room::Yes => admission
                        .in_leases
                        .push(super::quota::LeaseOf::Tokens((*limits).clone())),
                    super::quota::Room::Refused => {
                        return refuse(&mut asks, &taken, tpm_error(tpm))
                    }
                    super::quota::Room::Wait => wait = true,
                    super::quota::Room::Ask {
                        debt,
                        before,
                        window,
                    } => asks.push(super::quota::Ask {
                        lease: super::quota::LeaseOf::Tokens((*limits).clone()),
                        scope: name.id(token),
                        span: span.with(window),
                        limit: tpm as i64,
                        debt,
                        init: before,
                        asking: true,
                    }),
                }
            } else if limits.tokens_reached(minute, tpm, sharing) {
                return refuse(&mut asks, &taken, tpm_error(tpm));
            }
        }
        if let Some(rpm) = *rpm {
            if leased {
                if !limits.requests.try_take(minute, 1, rpm) {
                    return refuse(&mut asks, &taken, rpm_error(rpm));
                }
                match limits.leases[0].take(span, 1, rpm as i64) {
                    super::quota::Room::Yes => taken[i] = Some(limits),
                    super::quota::Room::Refused => {
                        limits.requests.give_back(minute, 1);
                        return refuse(&mut asks, &taken, rpm_error(rpm));
                    }
                    super::quota::Room::Wait => {
                        limits.requests.give_back(minute, 1);
                        wait = true;
                    }
                    super::quota::Room::Ask {
                        debt,
                        before,
                        window,
                    } => {
                        limits.requests.give_back(minute, 1);
                        asks.push(super::quota::Ask {
                            lease: super::quota::LeaseOf::Requests((*limits).clone()),
                            scope: name.id(token),
                            span: span.with(window),
                            limit: rpm as i64,
                            debt,
                            init: before,
                            asking: true,
                        });
                    }
                }
            } else {
                if !limits.take_request_as(minute, rpm, sharing) {
                    return refuse(&mut asks, &taken, rpm_error(rpm));
                }
                if redis {
                    limits.leases[0].count(span, 1);
                }
                taken[i] = Some(limits);
            }
        }
    }
    if !asks.is_empty() || wait {
        give_back(&taken);
        return Err(if asks.is_empty() {
            Denied::Wait
        } else {
            Denied::Ask(asks)
        });
    }
    Ok(admission)
}

/// Attributes a finished request: cost to every ledger, tokens to every token window. With Redis
/// (`quota`), both are counted in the leases too, and what exceeds a lease is reported at once.
pub fn settle(
    caller: &Caller,
    end_user: Option<&EndUserEntry>,
    admission: &Admission,
    cost_micros: i64,
    tokens: u64,
    quota: Option<&Arc<super::quota::Quota>>,
) {
    // Tokens count in the minute the request finished in (a long stream may end in the next one).
    let minute = current_minute(crate::units::now_ms()).max(admission.minute);
    let span = super::quota::Span::Minute(minute);
    let token = caller.key.as_ref().map_or("", |k| k.rec.token.as_str());
    let count_tokens = |limits: &Arc<Limits>, limited: bool, name: ScopeName| {
        limits.tokens.add(minute, tokens);
        if let (Some(q), true) = (quota, limited) {
            if let Some((over, before, window)) = limits.leases[1].charge(span, tokens as i64) {
                q.report(super::quota::Ask {
                    lease: super::quota::LeaseOf::Tokens(limits.clone()),
                    scope: name.id(token),
                    span: span.with(window),
                    limit: 0,
                    debt: over,
                    init: before,
                    asking: false,
                });
            }
        }
    };
    let charge = |ledger: &Arc<Ledger>, limited: bool, scope: &dyn Fn() -> String| {
        ledger.add(cost_micros);
        if let (Some(q), true) = (quota, limited) {
            let span = ledger.period();
            if let Some((over, _, window)) = ledger.lease.charge(span, cost_micros) {
                q.report(super::quota::Ask {
                    lease: super::quota::LeaseOf::Spend(ledger.clone()),
                    scope: scope(),
                    span: span.with(window),
                    limit: 0,
                    debt: over,
                    init: ledger.spend_micros() - over,
                    asking: false,
                });
            }
        }
    };
    if let Some(k) = &caller.key {
        charge(&k.ledger, k.rec.max_budget.is_some(), &|| {
            format!("k:{token}")
        });
        count_tokens(&k.limits, k.rec.tpm_limit.is_some(), ScopeName::Key);
        if let Some(ml) = &admission.model_limits {
            let model = k
                .model_limits
                .iter()
                .find(|(_, l)| Arc::ptr_eq(l, ml))
                .map_or("", |(m, _)| m.as_str());
            let limited = k.rec.model_tpm_limit.contains_key(model);
            count_tokens(ml, limited, ScopeName::KeyOnModel(model));
        }
    }
    if let Some(t) = &caller.team {
        let id = &t.rec.team_id;
        charge(&t.ledger, t.rec.max_budget.is_some(), &|| format!("t:{id}"));
        count_tokens(&t.limits, t.rec.tpm_limit.is_some(), ScopeName::Team(id));
    }
    if let Some(u) = &caller.user {
        let id = &u.rec.user_id;
        charge(&u.ledger, u.rec.max_budget.is_some(), &|| format!("u:{id}"));
        count_tokens(&u.limits, u.rec.tpm_limit.is_some(), ScopeName::User(id));
    }
    if let Some(e) = end_user {
        let id = &e.rec.user_id;
        charge(&e.ledger, e.rec.max_budget.is_some(), &|| format!("e:{id}"));
    }
}
