//! `POST /chat/completions`, `/completions`, `/embeddings`: one request end to end.
//!
//! Read the body (size limit), authenticate, parse only the fields the gateway needs, route, call the
//! upstream (or the built-in mock), pass the answer through (streams without buffering), and send one
//! [`RequestFinished`] event with everything the metrics need.

use super::auth;
use super::state::AppState;
use crate::accounts::quota::ProbeToken;
use crate::accounts::{
    admit, check_model_access, limit_error, may_use, settle, Admission, Caller, Denied,
    EndUserEntry, Sharing,
};
use crate::actors::deployment::AttemptDone;
use crate::actors::metrics::{Attempt, FallbackTried, Outcome, RequestFinished, OVERFLOW};
use crate::actors::outbox;
use crate::config::{CustomLabel, RedisOutageMode, RoutingStrategy};
use crate::deployment::live::InFlight;
use crate::deployment::Deployment;
use crate::error::{ApiError, ErrorKind, Fallback};
use crate::labels::KeyLabels;
use crate::providers::wire::{
    check_messages, check_text, estimate_prompt_tokens, response_usage, InputShape, RequestView,
    SseTap, Usage, MAX_METADATA_CHARS,
};
use crate::providers::{mock, openai, Endpoint};
use crate::router::policy::{self, Recovery};
use crate::router::table::{Group, Pick, RoutingTable};
use crate::store::SpendEvent;
use crate::units::{micros, now_ms, usd};
use actix::clock::{sleep, Instant, Sleep};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use rand::Rng;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub async fn chat_completions(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(Endpoint::ChatCompletions, req, body, state).await
}

pub async fn completions(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(Endpoint::Completions, req, body, state).await
}

pub async fn embeddings(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(Endpoint::Embeddings, req, body, state).await
}

/// What the request's accounting needs, filled in as the request is understood, and finished exactly once:
/// spend settled on the caller's ledgers, a spend-log row, and the metrics event.
struct Pending {
    state: web::Data<AppState>,
    started: Instant,
    start_ms: i64,
    requested_model: Arc<str>,
    end_user: Option<String>,
    key: Arc<KeyLabels>,
    custom: Vec<String>,
    attempts: Vec<Attempt>,
    caller: Option<Caller>,
    end_user_entry: Option<Arc<EndUserEntry>>,
    /// Set once budgets and limits admitted the request; releases its parallel slot when dropped.
    admission: Option<Admission>,
    /// Usage and cost of a stream that failed after generating text: charged although the request failed.
    partial: Option<(Usage, f64)>,
    /// Fallback groups tried; the last is marked successful when it answers.
    fallbacks: Vec<FallbackTried>,
    /// The request's accounting has been sent (or this is a placeholder left behind by a stream).
    done: bool,
}

impl Pending {
    fn new(state: &web::Data<AppState>) -> Pending {
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
    fn placeholder(state: &web::Data<AppState>) -> Pending {
        let mut p = Pending::new(state);
        p.done = true;
        p
    }

    fn send(mut self, outcome: Outcome) {
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

    fn fail(self, err: &ApiError) {
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
    fn attempt(
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

async fn handle(
    endpoint: Endpoint,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let mut pending = Pending::new(&state);
    match run(endpoint, &req, payload, &state, &mut pending).await {
        Ok(Answer::Done(resp, outcome)) => {
            pending.send(outcome);
            resp
        }
        Ok(Answer::Streaming(resp)) => resp,
        Err(err) => {
            log_error(&err);
            let resp = err.error_response();
            pending.fail(&err);
            resp
        }
    }
}

fn log_error(err: &ApiError) {
    match err.fault() {
        crate::error::Fault::Client => {
            tracing::debug!(status = err.status.as_u16(), class = %err.class(), "request rejected: {}", err.message)
        }
        _ => {
            tracing::warn!(status = err.status.as_u16(), class = %err.class(), "request failed: {}", err.message)
        }
    }
}

enum Answer {
    /// A complete response; the metrics event goes out now.
    Done(HttpResponse, Outcome),
    /// A stream; its body sends the metrics event when it ends.
    Streaming(HttpResponse),
}

/// Reads a configured custom label's value from the request's `metadata`: only string values count, and
/// they must be fit for a label (bounded length, no control characters).
fn custom_value(
    metadata: &serde_json::Map<String, serde_json::Value>,
    label: &CustomLabel,
) -> Result<String, ApiError> {
    let mut cur = metadata.get(&label.path[0]);
    for part in &label.path[1..] {
        cur = cur.and_then(|v| v.get(part));
    }
    let value = cur.and_then(|v| v.as_str()).unwrap_or("");
    check_text(
        &format!("metadata.{}", label.path.join(".")),
        value,
        MAX_METADATA_CHARS,
    )?;
    Ok(value.to_owned())
}

fn validate_fields(endpoint: Endpoint, view: &RequestView<'_>) -> Result<(), ApiError> {
    fn non_empty_array(raw: &str) -> bool {
        raw.starts_with('[') && raw[1..].trim_start() != "]"
    }
    fn text_or_array(raw: &str) -> bool {
        raw.starts_with('[') || raw.starts_with('"')
    }
    match endpoint {
        Endpoint::ChatCompletions => {
            view.require("messages", "a non-empty array of messages", non_empty_array)?;
            view.get("messages")
                .map_or(Ok(()), |m| check_messages(m.get()))
        }
        Endpoint::Completions => view.require("prompt", "a string or an array", text_or_array),
        Endpoint::Embeddings => view.require("input", "a string or an array", text_or_array),
    }
}

async fn run(
    endpoint: Endpoint,
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
    pending: &mut Pending,
) -> Result<Answer, ApiError> {
    // Kept in the request's accounting and borrowed from there (a clone would be four reference counts up
    // and down, on lines every worker shares).
    let caller = pending.caller.insert(auth::authenticate(req, state).await?);
    pending.key = caller.labels.clone();
    let body =
        super::body::read_body(req, payload, state.config.general.max_request_bytes, state).await?;
    let view = RequestView::parse(&body)?;
    let model = view.model()?;
    if let Ok(Some(user)) = view.user() {
        pending.end_user = Some(user.into_owned());
    }
    let labels = &state.config.metrics.custom_metadata_labels;
    let mut custom_error = None;
    if !labels.is_empty() {
        if let Ok(Some(meta)) = view.metadata() {
            match labels.iter().map(|l| custom_value(&meta, l)).collect() {
                Ok(values) => pending.custom = values,
                Err(e) => custom_error = Some(e),
            }
        }
    }
    let table = state.actors.routes.load_full();
    let Some(group) = table.group(&model) else {
        pending.requested_model = Arc::from(OVERFLOW);
        let shown: Vec<&str> = table.names.iter().take(50).map(|n| &**n).collect();
        let name: String = model.chars().take(100).collect();
        let mut err = ApiError::not_found(format!(
            "Invalid model name passed in model={name}. Call `/v1/models` to view available models for your key. Available models: {}",
            shown.join(", ")
        ))
        .with_param("model");
        err.code = Some("model_not_found".into());
        return Err(err);
    };
    pending.requested_model = group.name.clone();
    spend_log_has_room(state)?;
    view.user()?;
    view.metadata()?;
    if let Some(e) = custom_error {
        return Err(e);
    }
    validate_fields(endpoint, &view)?;
    let stream = endpoint.can_stream() && view.stream()?;
    let client_wants_usage = stream && view.include_usage()?;
    let router = &*table.settings;
    let num_retries = view.num_retries()?.unwrap_or(router.num_retries);
    let request_fallbacks = view.fallbacks()?;
    check_model_access(caller, &group.name, "model")?;
    // Fallbacks the request names itself must be groups the caller may use: refused before any call.
    for name in request_fallbacks.iter().flatten() {
        if let Some(g) = table.group(name) {
            check_model_access(caller, &g.name, "fallbacks")?;
        }
    }
    let end_user_entry = pending
        .end_user
        .as_ref()
        .and_then(|u| state.actors.accounts.end_users.get(u).map(|e| e.clone()));
    pending.admission =
        Some(admit_shared(state, caller, end_user_entry.as_deref(), &group.name).await?);
    pending.end_user_entry = end_user_entry;

    let tokens = match table.strategy {
        RoutingStrategy::UsageBased => estimate_prompt_tokens(&view),
        _ => 0,
    };
    let call = Call {
        endpoint,
        view: &view,
        body: &body,
        stream,
        client_wants_usage,
        deadline: router.timeout.map(|t| pending.started + t),
        strategy: table.strategy,
        retry_after: router.retry_after,
        tokens,
        num_retries,
        max_retry_after_secs: state.config.general.max_retry_after.as_secs().max(1),
    };
    // Where a failure of the requested group goes, unless it is a context-window or content-policy error.
    let general: Vec<&Group> = policy::fallback_names(
        Fallback::General,
        router,
        &group.name,
        request_fallbacks.as_ref(),
    )
    .iter()
    .filter_map(|name| table.group(name))
    .filter(|g| g.name != group.name && may_use(caller, &g.name))
    .collect();
    let mut recovery = Recovery::default();
    let alone = !general.iter().any(|g| g.any_available(now_ms()));
    let cause = match try_group(group, &call, alone, &mut recovery, pending).await {
        Ok(answer) => return Ok(answer),
        Err(err) => err,
    };
    let chain: Vec<&Group> = match cause.meaning().fallback {
        Fallback::General => general,
        kind => named(
            &table,
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
        let alone = !chain[i + 1..].iter().any(|g| g.any_available(now_ms()));
        match try_group(g, &call, alone, &mut recovery, pending).await {
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

/// While the database is away the spend log waits in memory; when that backlog is full, a request is
/// refused rather than served without a record (`general_settings.max_unwritten_spend_logs`).
fn spend_log_has_room(state: &AppState) -> Result<(), ApiError> {
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
const MAX_ASKS: usize = 8;
/// How long a request waits for other requests' asks before it is refused (Redis times out in 500 ms).
const MAX_ADMISSION_WAIT: Duration = Duration::from_secs(2);

/// Admits the request on this replica's leases, asking Redis for more of a shared limit when one runs out
/// (`accounts/quota.rs`), and takes its parallel-request slot in Redis when the key has a limit on them.
async fn admit_shared(
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
const MAX_PROBE_HOLD: Duration = Duration::from_secs(60);

/// With Redis, one replica probes a deployment back from a cooldown, not each of them. `Ok(token)`: this
/// replica probes (holding the shared token while it does, when there is one); `Err(())`: another
/// replica does. Without Redis (or when it fails) every replica probes on its own.
async fn probe_turn(state: &AppState, dep: &Deployment) -> Result<Option<ProbeToken>, ()> {
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
fn outage(state: &AppState) -> Sharing {
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
fn sharing(state: &AppState, now_ms: i64) -> Sharing {
    let view = &state.actors.accounts.redis;
    if state.config.general.redis_url.is_none() || view.reachable(now_ms) {
        return Sharing::Shared;
    }
    outage(state)
}

/// What every attempt of one request shares.
struct Call<'a> {
    endpoint: Endpoint,
    view: &'a RequestView<'a>,
    body: &'a Bytes,
    stream: bool,
    client_wants_usage: bool,
    /// `router_settings.timeout` from the request's arrival: no attempt starts or runs past it.
    deadline: Option<Instant>,
    strategy: RoutingStrategy,
    /// `router_settings.retry_after`: the least wait before a retry.
    retry_after: Duration,
    /// Estimated prompt tokens (usage-based routing only).
    tokens: u64,
    num_retries: u32,
    /// `general_settings.max_retry_after`, whole seconds.
    max_retry_after_secs: u64,
}

impl Call<'_> {
    /// A timeout that fired because the request's own deadline (`router_settings.timeout`) was reached is
    /// not the deployment's fault: it becomes the gateway's 408, which neither counts against the
    /// deployment nor cools it down.
    ///
    /// It also bounds what the upstream controls: its `retry-after` is cut to `general_settings.max_retry_after`.
    fn blame(&self, mut err: ApiError) -> ApiError {
        err.retry_after = err.retry_after.map(|s| s.min(self.max_retry_after_secs));
        let deadline_hit = self
            .deadline
            .is_some_and(|d| Instant::now() + Duration::from_millis(5) >= d);
        if err.kind != ErrorKind::Timeout || !deadline_hit {
            return err;
        }
        ApiError::new(
            ErrorKind::Timeout,
            actix_web::http::StatusCode::REQUEST_TIMEOUT,
            "the request ran out of time (router_settings.timeout) before a deployment answered",
        )
    }

    /// `base`, cut to what is left before the deadline.
    fn timeout(&self, base: Duration) -> Duration {
        match self.deadline {
            Some(d) => base.min(d.saturating_duration_since(Instant::now())),
            None => base,
        }
    }
}

/// The configured fallback groups that exist and that the caller may use (the others are skipped).
fn named<'t>(table: &'t RoutingTable, names: &[String], caller: Option<&Caller>) -> Vec<&'t Group> {
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
async fn try_group(
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
        let mut pick = g.pick(call.strategy, &tried, now, r, call.tokens);
        if matches!(pick, Pick::Cooling { .. }) && !tried.is_empty() {
            pick = g.pick(call.strategy, &[], now, r, call.tokens);
        }
        let (dep, probe) = match pick {
            Pick::Chosen(d, probe) => (d, probe),
            Pick::Cooling { until_ms } => {
                recovery.note(until_ms);
                if last.is_none() && alone && g.deployments.len() == 1 {
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

/// One upstream call to `dep`. For a stream, the first chunk is read before anything reaches the client,
/// so that a stream failing at once is still retried; after that the stream is the client's.
async fn attempt(
    dep: &Arc<Deployment>,
    slot: InFlight,
    call: &Call<'_>,
    pending: &mut Pending,
) -> Result<Answer, ApiError> {
    let api_start = Instant::now();
    let Some(target) = &dep.target else {
        return mock_answer(call, dep.clone(), api_start, slot, pending).await;
    };
    let upstream_body = call.view.upstream_body(&dep.cfg.model, call.stream);
    let base = if call.stream {
        dep.cfg.stream_timeout
    } else {
        dep.cfg.timeout
    };
    let sent = openai::send(
        &dep.cfg,
        target,
        call.endpoint,
        upstream_body,
        call.stream,
        call.timeout(base),
    )
    .await;
    let openai::UpstreamResponse {
        mut response,
        remaining_requests,
        remaining_tokens,
    } = match sent {
        Ok(up) => up,
        Err(err) => {
            let err = call.blame(err);
            pending.attempt(dep, Err(&err), api_start.elapsed(), (None, None));
            return Err(err);
        }
    };
    let remaining = (remaining_requests, remaining_tokens);
    if call.stream {
        let first =
            match actix_rt::time::timeout(call.timeout(dep.cfg.stream_timeout), response.next())
                .await
            {
                Ok(Some(Ok(chunk))) => Ok(chunk),
                Ok(Some(Err(e))) => Err((
                    ErrorKind::APIConnectionError,
                    format!("upstream stream for `{}` broke: {e}", dep.cfg.model),
                )),
                Ok(None) => Err((
                    ErrorKind::APIConnectionError,
                    format!(
                        "upstream stream for `{}` ended before any data",
                        dep.cfg.model
                    ),
                )),
                Err(_) => Err((
                    ErrorKind::Timeout,
                    format!(
                        "upstream stream for `{}` sent nothing within {:?}",
                        dep.cfg.model, dep.cfg.stream_timeout
                    ),
                )),
            };
        let first = match first {
            Ok(chunk) => chunk,
            Err((kind, message)) => {
                let err = call.blame(ApiError::upstream_failure(dep.cfg.provider, kind, message));
                pending.attempt(dep, Err(&err), api_start.elapsed(), remaining);
                return Err(err);
            }
        };
        let inner = futures_util::stream::once(std::future::ready(Ok(first))).chain(response);
        let metered = Metered::new(
            inner,
            SseTap::new(!call.client_wants_usage),
            std::mem::replace(pending, Pending::placeholder(&pending.state.clone())),
            dep.clone(),
            call.body.clone(),
            api_start,
            remaining,
            slot,
        );
        return Ok(Answer::Streaming(stream_response(dep, metered)));
    }
    let bytes =
        match openai::read_body(&dep.cfg, &mut response, call.timeout(dep.cfg.timeout)).await {
            Ok(b) => b,
            Err(err) => {
                let err = call.blame(err);
                pending.attempt(dep, Err(&err), api_start.elapsed(), remaining);
                return Err(err);
            }
        };
    let api_latency = api_start.elapsed();
    let usage = match response_usage(&bytes) {
        Ok(Some(u)) => u,
        Ok(None) => Usage::new(estimate_prompt_tokens(call.view), 0),
        Err(e) => {
            let err = ApiError::upstream_failure(
                dep.cfg.provider,
                ErrorKind::BadGatewayError,
                format!("upstream `{}` answered malformed JSON: {e}", dep.cfg.model),
            );
            pending.attempt(dep, Err(&err), api_latency, remaining);
            return Err(err);
        }
    };
    pending.attempt(dep, Ok(()), api_latency, remaining);
    drop(slot);
    let outcome = success(dep, usage, pending.started.elapsed(), api_latency, None);
    let resp = json_response(dep, bytes);
    Ok(Answer::Done(resp, outcome))
}

fn success(
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
fn cost_of(dep: &Deployment, usage: &Usage) -> f64 {
    usd(micros(
        usage.prompt_tokens as f64 * dep.cfg.input_cost_per_token.unwrap_or(0.0)
            + usage.completion_tokens as f64 * dep.cfg.output_cost_per_token.unwrap_or(0.0),
    ))
}

const MODEL_ID: header::HeaderName = header::HeaderName::from_static("x-llm-model-id");
const MODEL_GROUP: header::HeaderName = header::HeaderName::from_static("x-llm-model-group");

fn json_response(dep: &Deployment, body: Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        ))
        .insert_header((MODEL_ID, dep.headers.0.clone()))
        .insert_header((MODEL_GROUP, dep.headers.1.clone()))
        .body(body)
}

fn stream_response<S>(dep: &Deployment, body: Metered<S>) -> HttpResponse
where
    S: Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin + 'static,
{
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((MODEL_ID, dep.headers.0.clone()))
        .insert_header((MODEL_GROUP, dep.headers.1.clone()))
        .streaming(body)
}

async fn mock_answer(
    call: &Call<'_>,
    dep: Arc<Deployment>,
    api_start: Instant,
    slot: InFlight,
    pending: &mut Pending,
) -> Result<Answer, ApiError> {
    let (endpoint, view, stream) = (call.endpoint, call.view, call.stream);
    let reply = match view.mock_response()? {
        Some(r) => r.into_owned(),
        None => dep
            .cfg
            .mock_response
            .clone()
            .unwrap_or_else(|| mock::default_reply(&dep.cfg.model)),
    };
    let prompt_tokens = estimate_prompt_tokens(view);
    if !dep.cfg.mock_latency.is_zero() {
        sleep(dep.cfg.mock_latency).await;
    }
    if stream {
        let frames = mock::stream_frames(endpoint, &dep.cfg.model, &reply, prompt_tokens, true);
        let chunks = futures_util::stream::iter(
            frames
                .into_iter()
                .map(|f| Ok::<Bytes, awc::error::PayloadError>(Bytes::from(f))),
        );
        let metered = Metered::new(
            chunks,
            SseTap::new(!call.client_wants_usage),
            std::mem::replace(pending, Pending::placeholder(&pending.state.clone())),
            dep.clone(),
            call.body.clone(),
            api_start,
            (None, None),
            slot,
        );
        return Ok(Answer::Streaming(stream_response(&dep, metered)));
    }
    let inputs = view
        .get("input")
        .and_then(|r| InputShape::of(r.get()))
        .map_or(1, |s| s.inputs.max(1));
    let dims = view
        .get("dimensions")
        .and_then(|r| r.get().parse::<usize>().ok())
        .unwrap_or(mock::DEFAULT_EMBEDDING_DIMENSIONS)
        .clamp(1, mock::MAX_EMBEDDING_DIMENSIONS);
    if endpoint == Endpoint::Embeddings {
        if inputs > mock::MAX_EMBEDDING_INPUTS {
            return Err(ApiError::bad_request(format!(
                "`input` holds {inputs} inputs; at most {} are allowed per request",
                mock::MAX_EMBEDDING_INPUTS
            ))
            .with_param("input"));
        }
        if inputs * dims > mock::MAX_EMBEDDING_VALUES {
            return Err(ApiError::bad_request(format!(
                "{inputs} inputs of {dims} dimensions is more than the mock answers at once ({} numbers); send fewer inputs or fewer `dimensions`",
                mock::MAX_EMBEDDING_VALUES
            ))
            .with_param("input"));
        }
    }
    let (bytes, usage) = mock::response_body(
        endpoint,
        &dep.cfg.model,
        &reply,
        prompt_tokens,
        dims,
        inputs,
    );
    let api_latency = api_start.elapsed();
    pending.attempt(&dep, Ok(()), api_latency, (None, None));
    drop(slot);
    let outcome = success(&dep, usage, pending.started.elapsed(), api_latency, None);
    Ok(Answer::Done(
        json_response(&dep, Bytes::from(bytes)),
        outcome,
    ))
}

/// A streamed body passed through frame by frame. It watches the frames for the first token and the usage
/// block, drops the usage frame the client did not ask for, stops a stalled upstream after the deployment's
/// `stream_timeout` of silence, and sends the metrics event when the stream ends (or the client leaves).
struct Metered<S> {
    inner: S,
    tap: SseTap,
    pending: Option<Pending>,
    dep: Arc<Deployment>,
    request: Bytes,
    api_start: Instant,
    first_token: Option<Instant>,
    remaining: (Option<f64>, Option<f64>),
    idle: Pin<Box<Sleep>>,
    /// `general_settings.max_stream_duration` from the stream's start: a stream that never ends is ended.
    ends: Pin<Box<Sleep>>,
    max_duration: Duration,
    done: bool,
    /// The attempt's in-flight slot on its deployment, held until the stream ends.
    _slot: InFlight,
}

impl<S> Metered<S> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        inner: S,
        tap: SseTap,
        pending: Pending,
        dep: Arc<Deployment>,
        request: Bytes,
        api_start: Instant,
        remaining: (Option<f64>, Option<f64>),
        slot: InFlight,
    ) -> Self {
        let idle = Box::pin(sleep(dep.cfg.stream_timeout));
        let max_duration = pending.state.config.general.max_stream_duration;
        let ends = Box::pin(sleep(max_duration));
        Metered {
            inner,
            tap,
            pending: Some(pending),
            dep,
            request,
            api_start,
            first_token: None,
            remaining,
            idle,
            ends,
            max_duration,
            done: false,
            _slot: slot,
        }
    }

    fn usage(&self) -> Usage {
        self.tap.usage.unwrap_or_else(|| {
            let prompt = RequestView::parse(&self.request)
                .map(|v| estimate_prompt_tokens(&v))
                .unwrap_or(0);
            Usage::new(prompt, self.tap.content_chars.div_ceil(4))
        })
    }

    fn succeed(&mut self) {
        if let Some(mut p) = self.pending.take() {
            let api = self.api_start.elapsed();
            p.attempt(&self.dep, Ok(()), api, self.remaining);
            let ttft = self.first_token.map(|t| t.duration_since(self.api_start));
            let outcome = success(&self.dep, self.usage(), p.started.elapsed(), api, ttft);
            p.send(outcome);
        }
    }

    fn fail(&mut self, err: &ApiError) -> Bytes {
        let partial = self.partial();
        if let Some(mut p) = self.pending.take() {
            tracing::warn!(class = %err.class(), "stream failed: {}", err.message);
            p.attempt(
                &self.dep,
                Err(err),
                self.api_start.elapsed(),
                self.remaining,
            );
            p.partial = partial;
            p.fail(err);
        }
        Bytes::from(format!("data: {}\n\n", err.body()))
    }

    /// What a stream that did not finish generated, to be charged: nothing if no text came through.
    fn partial(&self) -> Option<(Usage, f64)> {
        (self.tap.saw_token || self.tap.usage.is_some()).then(|| {
            let usage = self.usage();
            (usage, cost_of(&self.dep, &usage))
        })
    }
}

impl<S> Stream for Metered<S>
where
    S: Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin,
{
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if this.ends.as_mut().poll(cx).is_ready() {
                this.done = true;
                // The gateway's own limit, not the upstream's failure: it does not count against the
                // deployment (no provider on the error).
                let err = ApiError::new(
                    ErrorKind::Timeout,
                    actix_web::http::StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "upstream stream for `{}` ran longer than {:?} (general_settings.max_stream_duration)",
                        this.dep.cfg.model,
                        this.max_duration
                    ),
                );
                return Poll::Ready(Some(Ok(this.fail(&err))));
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let deadline = Instant::now() + this.dep.cfg.stream_timeout;
                    this.idle.as_mut().reset(deadline);
                    let out = this.tap.feed(&chunk);
                    if this.tap.oversized {
                        this.done = true;
                        let err = ApiError::upstream_failure(
                            this.dep.cfg.provider,
                            ErrorKind::APIError,
                            format!(
                                "upstream stream for `{}` sent a frame larger than {} bytes",
                                this.dep.cfg.model,
                                crate::providers::wire::MAX_SSE_FRAME_BYTES
                            ),
                        );
                        let mut bytes = BytesMut::from(&out.forward[..]);
                        bytes.extend_from_slice(&this.fail(&err));
                        return Poll::Ready(Some(Ok(bytes.freeze())));
                    }
                    if out.first_token {
                        this.first_token = Some(Instant::now());
                    }
                    if !out.forward.is_empty() {
                        return Poll::Ready(Some(Ok(out.forward)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    let err = ApiError::upstream_failure(
                        this.dep.cfg.provider,
                        ErrorKind::APIConnectionError,
                        format!("upstream stream for `{}` broke: {e}", this.dep.cfg.model),
                    );
                    return Poll::Ready(Some(Ok(this.fail(&err))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let rest = this.tap.finish();
                    if this.tap.saw_done || (!this.tap.saw_error && this.tap.usage.is_some()) {
                        this.succeed();
                        return Poll::Ready((!rest.is_empty()).then_some(Ok(rest)));
                    }
                    let (kind, what) = if this.tap.saw_error {
                        (ErrorKind::APIError, "sent an error event")
                    } else {
                        (ErrorKind::APIConnectionError, "ended before `data: [DONE]`")
                    };
                    let err = ApiError::upstream_failure(
                        this.dep.cfg.provider,
                        kind,
                        format!("upstream stream for `{}` {what}", this.dep.cfg.model),
                    );
                    let mut out = BytesMut::from(&rest[..]);
                    if !this.tap.saw_error {
                        out.extend_from_slice(&this.fail(&err));
                    } else {
                        this.fail(&err);
                    }
                    return Poll::Ready((!out.is_empty()).then(|| Ok(out.freeze())));
                }
                Poll::Pending => {
                    if this.idle.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        let err = ApiError::upstream_failure(
                            this.dep.cfg.provider,
                            ErrorKind::Timeout,
                            format!(
                                "upstream stream for `{}` was silent for {:?} (stream_timeout)",
                                this.dep.cfg.model, this.dep.cfg.stream_timeout
                            ),
                        );
                        return Poll::Ready(Some(Ok(this.fail(&err))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<S> Drop for Metered<S> {
    /// The client went away before the stream ended: the request counts as failed (status 499, as nginx
    /// logs it), and what was generated so far is still attributed.
    fn drop(&mut self) {
        if let Some(mut p) = self.pending.take() {
            let err = ApiError::new(
                ErrorKind::APIConnectionError,
                actix_web::http::StatusCode::from_u16(499)
                    .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
                "client closed the stream",
            );
            p.attempt(&self.dep, Ok(()), self.api_start.elapsed(), self.remaining);
            p.partial = self.partial();
            p.fail(&err);
        }
    }
}
