//! Virtual keys, teams, internal users and end users, in memory: their records, spend ledgers and rate-limit
//! windows. The BudgetActor (`actors/budget.rs`) is the only writer of records (create, update, delete,
//! budget resets) and persists them; HTTP workers read records from the maps and admit or settle requests
//! with atomic counters, so a known key costs no database or actor round trip on the request path.
//!
//! Money is integer micro-dollars. Windows are fixed one-minute windows packed into one atomic word
//! (minute in the high half, count in the low half), so a check-and-take is a single compare-and-swap.

pub mod admin;
pub mod quota;
pub mod requests;
pub mod views;

use crate::error::{ApiError, ErrorKind};
use crate::labels::KeyLabels;
use crate::secret::hash_key;
use crate::units::parse_duration;
use crate::units::{micros, usd};
use crate::window::{current_minute, seconds_to_next_minute, Window};
use actix_web::http::StatusCode;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

// ---- records (what is stored) -----------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    /// sha256 hex of the key: its id, and the `hashed_api_key` label.
    pub token: String,
    /// The key shortened for display (`sk-...abcd`).
    pub key_name: String,
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u64>,
    #[serde(default)]
    pub model_rpm_limit: BTreeMap<String, u64>,
    #[serde(default)]
    pub model_tpm_limit: BTreeMap<String, u64>,
    /// Unix milliseconds after which the key is refused.
    pub expires: Option<i64>,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub metadata: Map<String, Json>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    #[serde(default = "default_role")]
    pub role: String,
}

fn default_role() -> String {
    "user".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TeamRecord {
    pub team_id: String,
    pub team_alias: Option<String>,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub members_with_roles: Vec<Member>,
    #[serde(default)]
    pub metadata: Map<String, Json>,
    #[serde(default)]
    pub blocked: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UserRecord {
    pub user_id: String,
    pub user_email: Option<String>,
    pub user_alias: Option<String>,
    #[serde(default = "default_user_role")]
    pub user_role: String,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    #[serde(default)]
    pub rpm_limit: Option<u64>,
    #[serde(default)]
    pub tpm_limit: Option<u64>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub metadata: Map<String, Json>,
    pub created_at: i64,
}

fn default_user_role() -> String {
    "internal_user".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EndUserRecord {
    pub user_id: String,
    pub alias: Option<String>,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    #[serde(default)]
    pub blocked: bool,
    pub created_at: i64,
}

// ---- counters -----------------------------------------------------------------------------------------

/// Spend of one entity. `spend` is what admission reads; `unpersisted` is what the BudgetActor has not
/// written to the store yet (it swaps it to zero when it writes).
#[derive(Debug, Default)]
pub struct Ledger {
    spend: AtomicI64,
    unpersisted: AtomicI64,
    /// Unix ms of the next budget reset; -1 when the entity has no `budget_duration`.
    reset_at: AtomicI64,
    /// With Redis: this replica's part of the budget in the current period (`accounts/quota.rs`).
    pub lease: quota::Lease,
}

impl Ledger {
    pub fn new(spend_micros: i64, reset_at: Option<i64>) -> Ledger {
        Ledger {
            spend: AtomicI64::new(spend_micros),
            unpersisted: AtomicI64::new(0),
            reset_at: AtomicI64::new(reset_at.unwrap_or(-1)),
            lease: quota::Lease::default(),
        }
    }

    /// The budget period as the shared counters name it (its reset time; 0 without one).
    pub fn period(&self) -> quota::Span {
        quota::Span::Period(self.reset_at().unwrap_or(0) as u64)
    }

    pub fn spend_micros(&self) -> i64 {
        self.spend.load(Ordering::Acquire)
    }

    pub fn add(&self, micros: i64) {
        // Unpersisted first: a concurrent `sync` then either sees it (and retries) or counts it twice in
        // memory until the next flush, never zero times. Sums saturate: a wrapped spend would read as
        // negative and lift every budget.
        saturating_add(&self.unpersisted, micros);
        saturating_add(&self.spend, micros);
    }

    /// What the store has not seen yet; the caller writes it.
    pub fn take_unpersisted(&self) -> i64 {
        self.unpersisted.swap(0, Ordering::AcqRel)
    }

    /// Gives back a delta whose write failed, so the next flush retries it.
    pub fn restore_unpersisted(&self, micros: i64) {
        saturating_add(&self.unpersisted, micros);
    }

    pub fn reset_at(&self) -> Option<i64> {
        let v = self.reset_at.load(Ordering::Acquire);
        (v >= 0).then_some(v)
    }

    pub fn set_reset_at(&self, at: Option<i64>) {
        self.reset_at.store(at.unwrap_or(-1), Ordering::Release);
    }

    /// Takes the store's spend (which includes what every replica has written) as the base: spend becomes
    /// `stored` plus what this replica has settled and not written yet. Budget checks then see the spend of
    /// every replica, a flush interval late at most.
    pub fn sync(&self, stored_micros: i64, reset_at: Option<i64>) {
        loop {
            let pending = self.unpersisted.load(Ordering::Acquire);
            self.spend.store(stored_micros + pending, Ordering::Release);
            // A settlement that raced with the store above is in `unpersisted` now: go again.
            if self.unpersisted.load(Ordering::Acquire) == pending {
                break;
            }
        }
        self.set_reset_at(reset_at);
    }

    /// Starts a new period: spend and pending writes to zero.
    ///
    /// The caller has just written the store's spend to zero. Whatever was settled since it last took the
    /// unpersisted amount (requests finishing during the write) belongs to the new period: it is kept, in
    /// memory and as still to be written.
    pub fn reset(&self, next: Option<i64>) {
        let carried = self.unpersisted.swap(0, Ordering::AcqRel);
        self.spend.store(carried, Ordering::Release);
        self.unpersisted.fetch_add(carried, Ordering::AcqRel);
        self.set_reset_at(next);
    }
}

/// Adds to an atomic without wrapping.
fn saturating_add(a: &AtomicI64, n: i64) {
    // The closure always returns Some, so fetch_update cannot fail.
    let _ = a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        Some(v.saturating_add(n))
    });
}

/// Request and token windows of one scope (a key, a team, a key on one model).
#[derive(Debug, Default)]
pub struct Limits {
    pub requests: Window,
    pub tokens: Window,
    pub in_flight: AtomicI64,
    /// With Redis: what the other replicas counted in the current minute (requests, tokens; see
    /// `actors/shared.rs`).
    pub remote: (Window, Window),
    /// With Redis: this replica's part of the requests and tokens of the minute (`accounts/quota.rs`).
    pub leases: [quota::Lease; 2],
}

impl Limits {
    /// Requests counted in `minute` by every replica (this one exactly, the others as last synced).
    pub fn requests_used(&self, minute: u64) -> u64 {
        self.requests.current(minute) + self.remote.0.current(minute)
    }

    /// Tokens counted in `minute` by every replica.
    pub fn tokens_used(&self, minute: u64) -> u64 {
        self.tokens.current(minute) + self.remote.1.current(minute)
    }

    /// Takes one request if, with the other replicas' count, it stays within `rpm`.
    fn take_request(&self, minute: u64, rpm: u64) -> bool {
        let others = self.remote.0.current(minute);
        rpm > others && self.requests.try_take(minute, 1, rpm - others)
    }

    /// [`Self::take_request`] as `sharing` says.
    fn take_request_as(&self, minute: u64, rpm: u64, sharing: Sharing) -> bool {
        match sharing {
            Sharing::Divided(n) => self.requests.try_take(minute, 1, share_of(rpm, n)),
            _ => self.take_request(minute, rpm),
        }
    }

    /// Whether the tokens counted this minute reach `tpm`, as `sharing` says.
    fn tokens_reached(&self, minute: u64, tpm: u64, sharing: Sharing) -> bool {
        match sharing {
            Sharing::Divided(n) => self.tokens.current(minute) >= share_of(tpm, n),
            _ => self.tokens_used(minute) >= tpm,
        }
    }
}

// ---- entries (records with their counters) ------------------------------------------------------------

pub struct KeyEntry {
    pub rec: KeyRecord,
    pub ledger: Arc<Ledger>,
    pub limits: Arc<Limits>,
    /// Windows per model group named in `model_rpm_limit` / `model_tpm_limit`.
    pub model_limits: HashMap<String, Arc<Limits>>,
    pub labels: Arc<KeyLabels>,
}

pub struct TeamEntry {
    pub rec: TeamRecord,
    pub ledger: Arc<Ledger>,
    pub limits: Arc<Limits>,
}

pub struct UserEntry {
    pub rec: UserRecord,
    pub ledger: Arc<Ledger>,
    pub limits: Arc<Limits>,
}

pub struct EndUserEntry {
    pub rec: EndUserRecord,
    pub ledger: Arc<Ledger>,
}

/// Everything in memory. Shared (`Arc`) by the BudgetActor (writer) and the HTTP workers (readers).
#[derive(Default)]
pub struct Accounts {
    pub keys: DashMap<String, Arc<KeyEntry>>,
    pub teams: DashMap<String, Arc<TeamEntry>>,
    pub users: DashMap<String, Arc<UserEntry>>,
    pub end_users: DashMap<String, Arc<EndUserEntry>>,
    /// Keys looked up in the store and not found, with when: not asked again for [`NEGATIVE_TTL`].
    pub missing_keys: DashMap<String, std::time::Instant>,
    /// Spend-log rows the BudgetActor holds that the store has not taken yet (it publishes the count; the
    /// request path refuses new requests while it is at `general_settings.max_unwritten_spend_logs`).
    pub unwritten_logs: std::sync::atomic::AtomicUsize,
    /// What this replica knows of Redis (written by the SharedStateActor).
    pub redis: RedisView,
    /// This replica's leases of the limits shared through Redis.
    pub quota: Arc<quota::Quota>,
}

/// Redis as the request path sees it: when it last answered, and how many replicas were alive then.
#[derive(Debug, Default)]
pub struct RedisView {
    /// Unix ms of the last successful Redis exchange; 0 before the first (or without Redis).
    pub last_ok_ms: AtomicI64,
    /// Replicas that announced themselves within [`REPLICA_ALIVE_MS`] at the last exchange (at least 1).
    pub replicas: AtomicU64,
}

/// Redis counts as unreachable when it has not answered for this long (its syncs run every 200 ms).
pub const REDIS_SILENCE_MS: i64 = 2_000;
/// A replica that has not announced itself for this long is not counted among the live ones.
pub const REPLICA_ALIVE_MS: i64 = 5_000;

impl RedisView {
    /// Whether Redis answered within [`REDIS_SILENCE_MS`] of `now_ms`, or has never answered (the first
    /// connection is still being made: the windows start empty either way).
    pub fn reachable(&self, now_ms: i64) -> bool {
        let last = self.last_ok_ms.load(Ordering::Acquire);
        last == 0 || now_ms - last < REDIS_SILENCE_MS
    }
}

/// How this request's limits are counted (see `config::RedisOutageMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// The replica's own count plus the others' as last read from Redis (or no Redis at all).
    Shared,
    /// Redis is unreachable: each replica holds `limit / n` on its own count.
    Divided(u64),
    /// Redis is unreachable and limited requests are refused.
    Refuse,
    /// Redis is there: each replica admits within the slices of every limit Redis granted it, and asks for
    /// more when they are used up (`accounts/quota.rs`).
    Leased,
}

/// How long an unknown key is remembered as unknown.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

impl Accounts {
    /// Builds a key entry, keeping the counters of `previous` (the same key before an update).
    pub fn key_entry(
        &self,
        rec: KeyRecord,
        previous: Option<&KeyEntry>,
        spend: i64,
        reset_at: Option<i64>,
    ) -> KeyEntry {
        let ledger = previous
            .map(|p| p.ledger.clone())
            .unwrap_or_else(|| Arc::new(Ledger::new(spend, reset_at)));
        let limits = previous.map(|p| p.limits.clone()).unwrap_or_default();
        let model_limits = rec
            .model_rpm_limit
            .keys()
            .chain(rec.model_tpm_limit.keys())
            .map(|m| {
                let l = previous
                    .and_then(|p| p.model_limits.get(m).cloned())
                    .unwrap_or_default();
                (m.clone(), l)
            })
            .collect();
        KeyEntry {
            labels: Arc::new(self.labels_for(&rec)),
            rec,
            ledger,
            limits,
            model_limits,
        }
    }

    pub fn labels_for(&self, rec: &KeyRecord) -> KeyLabels {
        let team = rec
            .team_id
            .as_ref()
            .and_then(|t| self.teams.get(t).map(|e| e.clone()));
        KeyLabels {
            hashed_api_key: rec.token.clone(),
            api_key_alias: rec.key_alias.clone().unwrap_or_default(),
            team: rec.team_id.clone().unwrap_or_default(),
            team_alias: team
                .and_then(|t| t.rec.team_alias.clone())
                .unwrap_or_default(),
            user: rec.user_id.clone().unwrap_or_default(),
        }
    }
}

// ---- durations ----------------------------------------------------------------------------------------

/// One replica's share of `limit` over `n` replicas (rounded down, at least 1 when the limit is not 0).
fn share_of(limit: u64, n: u64) -> u64 {
    if limit == 0 {
        return 0;
    }
    (limit / n.max(1)).max(1)
}

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

fn budget_error(what: &str, spend: i64, max: f64) -> ApiError {
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
fn allows(models: &[String], model_group: &str) -> bool {
    models.is_empty() || models.iter().any(|m| m == model_group)
}

/// Which of the caller's `models` lists (key, team, user) refuses `model_group`, if any.
fn refused_by(caller: &Caller, model_group: &str) -> Option<&'static str> {
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
enum ScopeName<'a> {
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
    pub slot: Option<quota::Slot>,
    /// The leases (tokens, spend) that count this request as in flight.
    in_leases: Vec<quota::LeaseOf>,
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
    Ask(Vec<quota::Ask>),
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
    let mut asks: Vec<quota::Ask> = Vec::new();
    let mut wait = false;
    // Asks already marked as reported: if the request is refused after all, their debts are owed again.
    let unask = |asks: &mut Vec<quota::Ask>| {
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
            quota::Room::Yes => admission
                .in_leases
                .push(quota::LeaseOf::Spend((*ledger).clone())),
            quota::Room::Refused => {
                unask(&mut asks);
                return Err(budget_error(what, ledger.spend_micros(), *max).into());
            }
            quota::Room::Wait => wait = true,
            quota::Room::Ask { debt, window, .. } => asks.push(quota::Ask {
                lease: quota::LeaseOf::Spend((*ledger).clone()),
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
                l.leases[0].give_back(quota::Span::Minute(minute), 1);
            }
        }
    };
    let span = quota::Span::Minute(minute);
    for (i, (limits, rpm, tpm, name)) in scopes
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    {
        let refuse = |asks: &mut Vec<quota::Ask>, taken: &[Option<&Limits>], e: ApiError| {
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
                    quota::Room::Yes => admission
                        .in_leases
                        .push(quota::LeaseOf::Tokens((*limits).clone())),
                    quota::Room::Refused => return refuse(&mut asks, &taken, tpm_error(tpm)),
                    quota::Room::Wait => wait = true,
                    quota::Room::Ask {
                        debt,
                        before,
                        window,
                    } => asks.push(quota::Ask {
                        lease: quota::LeaseOf::Tokens((*limits).clone()),
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
                    quota::Room::Yes => taken[i] = Some(limits),
                    quota::Room::Refused => {
                        limits.requests.give_back(minute, 1);
                        return refuse(&mut asks, &taken, rpm_error(rpm));
                    }
                    quota::Room::Wait => {
                        limits.requests.give_back(minute, 1);
                        wait = true;
                    }
                    quota::Room::Ask {
                        debt,
                        before,
                        window,
                    } => {
                        limits.requests.give_back(minute, 1);
                        asks.push(quota::Ask {
                            lease: quota::LeaseOf::Requests((*limits).clone()),
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
    quota: Option<&Arc<quota::Quota>>,
) {
    // Tokens count in the minute the request finished in (a long stream may end in the next one).
    let minute = current_minute(crate::units::now_ms()).max(admission.minute);
    let span = quota::Span::Minute(minute);
    let token = caller.key.as_ref().map_or("", |k| k.rec.token.as_str());
    let count_tokens = |limits: &Arc<Limits>, limited: bool, name: ScopeName| {
        limits.tokens.add(minute, tokens);
        if let (Some(q), true) = (quota, limited) {
            if let Some((over, before, window)) = limits.leases[1].charge(span, tokens as i64) {
                q.report(quota::Ask {
                    lease: quota::LeaseOf::Tokens(limits.clone()),
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
                q.report(quota::Ask {
                    lease: quota::LeaseOf::Spend(ledger.clone()),
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

/// Longest key looked up: generated keys are 35 characters, custom ones rarely more than 100.
pub const MAX_KEY_CHARS: usize = 256;

/// Whether `key` could be a virtual key at all: `sk-` and printable ASCII, bounded. Anything else is
/// refused without a lookup.
pub fn plausible_key(key: &str) -> bool {
    key.len() <= MAX_KEY_CHARS
        && key.starts_with("sk-")
        && key.bytes().all(|b| b.is_ascii_graphic())
}

/// A new key: `sk-` and 32 random URL-safe characters.
pub fn new_key() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    let s: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    format!("sk-{s}")
}

/// `sk-...abcd`: enough to recognise a key, not enough to use it.
pub fn key_name(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("sk-...{tail}")
}

/// The stored id of a key given either the key itself (`sk-...`) or its hash.
pub fn token_of(key_or_hash: &str) -> String {
    if key_or_hash.len() == 64 && key_or_hash.chars().all(|c| c.is_ascii_hexdigit()) {
        key_or_hash.to_ascii_lowercase()
    } else {
        hash_key(key_or_hash)
    }
}

#[cfg(test)]
mod tests;
