//! Who is calling. Reads the key from `Authorization: Bearer`, `api-key` (Azure style) or `x-api-key`
//! (Anthropic style): the master key, or a virtual key looked up by its sha256 (memory first, the store on a
//! miss, unknown keys remembered briefly). Without a master key the gateway is open: requests without a
//! known key are admitted anonymously.

use super::state::AppState;
use crate::accounts::{
    check_key, plausible_key, Caller, KeyEntry, KeyRecord, Ledger, TeamEntry, TeamRecord,
    NEGATIVE_TTL,
};
use crate::error::ApiError;
use crate::secret::{constant_time_eq, hash_key};
use crate::store::{decode, Table};
use crate::units::now_ms;
use actix_web::HttpRequest;
use std::sync::Arc;
use std::time::Instant;

/// Unknown keys remembered at once (older ones expire every second, see `actors/budget.rs`).
const MAX_REMEMBERED_MISSING_KEYS: usize = 100_000;

/// The key the client presented, if any.
pub fn presented_key(req: &HttpRequest) -> Option<&str> {
    let h = req.headers();
    if let Some(v) = h.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        let key = match v.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim(),
            _ => v,
        };
        if !key.is_empty() {
            return Some(key);
        }
    }
    for name in ["api-key", "x-api-key"] {
        if let Some(v) = h.get(name).and_then(|v| v.to_str().ok()).map(str::trim) {
            if !v.is_empty() {
                return Some(v);
            }
        }
    }
    None
}

fn is_master(state: &AppState, key: &str) -> bool {
    state
        .config
        .general
        .master_key
        .as_ref()
        .is_some_and(|m| constant_time_eq(key.as_bytes(), m.expose().as_bytes()))
}

/// How long a request waits for a lookup slot before it is told to come back (503).
const KEY_LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What a key lookup found.
pub enum Lookup {
    Found(Arc<KeyEntry>),
    Missing,
    /// The store could not answer (down, slow, or every lookup slot taken): not the key's fault.
    Unavailable,
}

/// A virtual key by its hash: memory, else the store (another replica may have created it).
pub async fn lookup_key(state: &AppState, token: &str) -> Lookup {
    let accounts = &state.actors.accounts;
    // What memory says: known, known to be unknown, or nothing.
    let remembered = || {
        if let Some(e) = accounts.keys.get(token) {
            return Some(Lookup::Found(e.clone()));
        }
        accounts
            .missing_keys
            .get(token)
            .is_some_and(|t| t.elapsed() < NEGATIVE_TTL)
            .then_some(Lookup::Missing)
    };
    if let Some(found) = remembered() {
        return found;
    }
    let Ok(Ok(_permit)) =
        actix_rt::time::timeout(KEY_LOOKUP_WAIT, state.key_lookups.acquire()).await
    else {
        return Lookup::Unavailable;
    };
    // Another request may have looked the same key up while this one waited.
    if let Some(found) = remembered() {
        return found;
    }
    match state.actors.store.get(Table::Keys, token).await {
        Ok(Some(row)) => {
            let Some(rec) = decode::<KeyRecord>(&row) else {
                return Lookup::Missing;
            };
            let entry =
                Arc::new(accounts.key_entry(rec, None, row.spend_micros, row.budget_reset_at));
            let entry = accounts
                .keys
                .entry(token.to_owned())
                .or_insert(entry)
                .clone();
            Lookup::Found(entry)
        }
        Ok(None) => {
            if accounts.missing_keys.len() < MAX_REMEMBERED_MISSING_KEYS {
                accounts
                    .missing_keys
                    .insert(token.to_owned(), Instant::now());
            }
            Lookup::Missing
        }
        Err(e) => {
            tracing::warn!("key lookup failed: {e}");
            Lookup::Unavailable
        }
    }
}

/// A key's team must be known before the key is used: without it the team's budget, limits and model list
/// would not apply. A team made on another replica and not read back yet is read from the store; a team
/// that no longer exists refuses the key.
async fn ensure_team(state: &AppState, team_id: &str) -> Result<(), ApiError> {
    let accounts = &state.actors.accounts;
    if accounts.teams.contains_key(team_id) {
        return Ok(());
    }
    match state.actors.store.get(Table::Teams, team_id).await {
        Ok(Some(row)) => {
            if let Some(rec) = decode::<TeamRecord>(&row) {
                accounts.teams.entry(team_id.to_owned()).or_insert_with(|| {
                    Arc::new(TeamEntry {
                        rec,
                        ledger: Arc::new(Ledger::new(row.spend_micros, row.budget_reset_at)),
                        limits: Default::default(),
                    })
                });
                return Ok(());
            }
            Err(ApiError::unauthorized(
                "Authentication Error - this key's team cannot be read",
            ))
        }
        Ok(None) => Err(ApiError::unauthorized(
            "Authentication Error - this key's team no longer exists",
        )),
        Err(_) => Err(lookup_unavailable()),
    }
}

fn lookup_unavailable() -> ApiError {
    let mut e = ApiError::new(
        crate::error::ErrorKind::ServiceUnavailableError,
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        "this key is not known here yet and the key store cannot be asked right now; try again shortly",
    );
    e.retry_after = Some(1);
    e
}

/// Authenticates an LLM request.
pub async fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Caller, ApiError> {
    let open = state.config.general.master_key.is_none();
    let Some(key) = presented_key(req) else {
        return if open {
            Ok(Caller::anonymous(state.anonymous.clone()))
        } else {
            Err(ApiError::unauthorized(
                "no API key: send `Authorization: Bearer <key>` (or the `api-key` / `x-api-key` header)",
            ))
        };
    };
    if is_master(state, key) {
        return Ok(Caller::anonymous(state.master_labels.clone()));
    }
    let invalid = || {
        if open {
            Ok(Caller::anonymous(state.anonymous.clone()))
        } else {
            Err(ApiError::unauthorized(
                "Authentication Error - invalid API key",
            ))
        }
    };
    if !plausible_key(key) {
        return invalid();
    }
    match lookup_key(state, &hash_key(key)).await {
        Lookup::Found(entry) => {
            check_key(&entry, now_ms())?;
            if let Some(team) = &entry.rec.team_id {
                ensure_team(state, team).await?;
            }
            Ok(Caller::of_key(&state.actors.accounts, entry))
        }
        Lookup::Missing => invalid(),
        Lookup::Unavailable if open => invalid(),
        Lookup::Unavailable => Err(lookup_unavailable()),
    }
}

/// For `/models`, `/health/*` and `/metrics`: the master key or any usable virtual key (no master key: open).
pub async fn check(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    authenticate(req, state).await.map(|_| ())
}

/// For the management API: the master key, which must be configured.
pub fn check_admin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    if state.config.general.master_key.is_none() {
        return Err(ApiError::new(
            crate::error::ErrorKind::AuthenticationError,
            actix_web::http::StatusCode::UNAUTHORIZED,
            "the management API needs a master key: set general_settings.master_key (it must start with sk-)",
        ));
    }
    match presented_key(req) {
        Some(k) if is_master(state, k) => Ok(()),
        Some(_) => Err(ApiError::unauthorized(
            "only the master key may call the management API",
        )),
        None => Err(ApiError::unauthorized(
            "no API key: send `Authorization: Bearer <master key>`",
        )),
    }
}
