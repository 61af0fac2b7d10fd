//! The management API's logic: create, update, delete and describe keys, teams, internal users and end
//! users, with LiteLLM's field names. Runs inside the BudgetActor (one operation at a time), validates
//! everything before it writes, writes the store first and memory second, so an error leaves nothing
//! half-written.

use super::*;
use crate::labels::{BudgetGauge, BudgetScope};
use crate::providers::wire::check_label_text;
use crate::store::{KeyOwner, RecordRow, Store, Table};
use crate::units::now_ms;

/// One management operation; `body` is the JSON object the client sent.
#[derive(Debug, Clone)]
pub enum AdminOp {
    KeyGenerate(Map<String, Json>),
    KeyUpdate(Map<String, Json>),
    KeyDelete(Map<String, Json>),
    KeyBlock(Map<String, Json>, bool),
    TeamNew(Map<String, Json>),
    TeamUpdate(Map<String, Json>),
    TeamDelete(Map<String, Json>),
    TeamMemberAdd(Map<String, Json>),
    TeamMemberDelete(Map<String, Json>),
    UserNew(Map<String, Json>),
    UserUpdate(Map<String, Json>),
    UserDelete(Map<String, Json>),
    CustomerNew(Map<String, Json>),
    CustomerUpdate(Map<String, Json>),
    CustomerDelete(Map<String, Json>),
}

/// What an operation changed that metrics must hear about.
#[derive(Default)]
pub struct Effects {
    pub gauges: Vec<BudgetGauge>,
    pub removed: Vec<BudgetScope>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

fn internal(e: crate::store::StoreError) -> ApiError {
    ApiError::store(&e)
}

/// Reads typed fields out of a request object, naming the field on any mistake.
struct Fields<'a> {
    map: &'a Map<String, Json>,
}

impl<'a> Fields<'a> {
    fn check_known(&self, known: &[&str]) -> Result<(), ApiError> {
        for k in self.map.keys() {
            if !known.contains(&k.as_str()) {
                return Err(bad(format!(
                    "unknown field `{k}`; known fields: {}",
                    known.join(", ")
                ))
                .with_param(k));
            }
        }
        Ok(())
    }

    /// `None`: absent. `Some(None)`: explicitly null (unset). `Some(Some(v))`: a value.
    fn get<T: serde::de::DeserializeOwned>(
        &self,
        k: &str,
        what: &str,
    ) -> Result<Option<Option<T>>, ApiError> {
        match self.map.get(k) {
            None => Ok(None),
            Some(Json::Null) => Ok(Some(None)),
            Some(v) => serde_json::from_value(v.clone())
                .map(|v| Some(Some(v)))
                // The value is not echoed: it could be a key.
                .map_err(|_| bad(format!("`{k}` must be {what}")).with_param(k)),
        }
    }

    /// Strings of the management API are ids, aliases and emails: they become label values and database
    /// text, so they are bounded and free of control characters (a NUL would make PostgreSQL refuse them).
    fn string(&self, k: &str) -> Result<Option<Option<String>>, ApiError> {
        let v: Option<Option<String>> = self.get(k, "a string")?;
        if let Some(Some(s)) = &v {
            check_label_text(k, s)?;
        }
        Ok(v)
    }

    fn money(&self, k: &str) -> Result<Option<Option<f64>>, ApiError> {
        let v: Option<Option<f64>> = self.get(k, "a number (USD)")?;
        if let Some(Some(x)) = v {
            if !(x.is_finite() && x >= 0.0) {
                return Err(bad(format!("`{k}` must be a number >= 0")).with_param(k));
            }
        }
        Ok(v)
    }

    fn count(&self, k: &str) -> Result<Option<Option<u64>>, ApiError> {
        self.get(k, "a non-negative integer")
    }

    fn duration(&self, k: &str) -> Result<Option<Option<String>>, ApiError> {
        let v = self.string(k)?;
        if let Some(Some(d)) = &v {
            if parse_duration(d).is_none() {
                return Err(bad(format!(
                    "`{k}` must look like 30s, 30m, 1h, 1d or 30d, got `{d}`"
                ))
                .with_param(k));
            }
        }
        Ok(v)
    }

    fn list(&self, k: &str) -> Result<Option<Option<Vec<String>>>, ApiError> {
        let v: Option<Option<Vec<String>>> = self.get(k, "a list of strings")?;
        for s in v.iter().flatten().flatten() {
            check_label_text(k, s)?;
        }
        Ok(v)
    }

    fn limits_map(&self, k: &str) -> Result<Option<Option<BTreeMap<String, u64>>>, ApiError> {
        self.get(k, "an object of model group -> non-negative integer")
    }

    fn object(&self, k: &str) -> Result<Option<Option<Map<String, Json>>>, ApiError> {
        self.get(k, "an object")
    }

    fn boolean(&self, k: &str) -> Result<Option<Option<bool>>, ApiError> {
        self.get(k, "true or false")
    }

    fn required_string(&self, k: &str) -> Result<String, ApiError> {
        match self.string(k)? {
            Some(Some(s)) if !s.is_empty() => Ok(s),
            _ => Err(bad(format!("`{k}` is required")).with_param(k)),
        }
    }

    fn id_list(&self, k: &str) -> Result<Vec<String>, ApiError> {
        match self.list(k)? {
            Some(Some(v)) if !v.is_empty() => Ok(v),
            _ => Err(bad(format!("`{k}` is required: a non-empty list")).with_param(k)),
        }
    }
}

fn set<T>(target: &mut Option<T>, v: Option<Option<T>>) {
    if let Some(v) = v {
        *target = v;
    }
}

fn set_vec<T>(target: &mut Vec<T>, v: Option<Option<Vec<T>>>) {
    if let Some(v) = v {
        *target = v.unwrap_or_default();
    }
}

/// The reset time for a duration starting now.
fn next_reset(duration: Option<&str>, now: i64) -> Option<i64> {
    duration
        .and_then(parse_duration)
        .map(|d| now + d.as_millis() as i64)
}

/// RFC 3339 UTC time of unix milliseconds.
pub fn iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

pub fn key_gauge(e: &KeyEntry) -> BudgetGauge {
    BudgetGauge {
        scope: BudgetScope::Key {
            hashed_api_key: e.rec.token.clone(),
            api_key_alias: e.rec.key_alias.clone().unwrap_or_default(),
        },
        max_budget: e.rec.max_budget,
        spend: usd(e.ledger.spend_micros()),
        reset_at_ms: e.ledger.reset_at(),
    }
}

pub fn team_gauge(e: &TeamEntry) -> BudgetGauge {
    BudgetGauge {
        scope: BudgetScope::Team {
            team_id: e.rec.team_id.clone(),
            team_alias: e.rec.team_alias.clone().unwrap_or_default(),
        },
        max_budget: e.rec.max_budget,
        spend: usd(e.ledger.spend_micros()),
        reset_at_ms: e.ledger.reset_at(),
    }
}

pub fn user_gauge(e: &UserEntry) -> BudgetGauge {
    BudgetGauge {
        scope: BudgetScope::User {
            user_id: e.rec.user_id.clone(),
        },
        max_budget: e.rec.max_budget,
        spend: usd(e.ledger.spend_micros()),
        reset_at_ms: e.ledger.reset_at(),
    }
}

/// An end user's (customer's) budget gauges: set while it has a max budget, removed otherwise.
pub fn end_user_gauge(
    e: &EndUserEntry,
    gauges: &mut Vec<BudgetGauge>,
    removed: &mut Vec<BudgetScope>,
) {
    let scope = BudgetScope::EndUser {
        end_user_id: e.rec.user_id.clone(),
    };
    if e.rec.max_budget.is_some() {
        gauges.push(BudgetGauge {
            scope,
            max_budget: e.rec.max_budget,
            spend: usd(e.ledger.spend_micros()),
            reset_at_ms: e.ledger.reset_at(),
        });
    } else {
        removed.push(scope);
    }
}

/// The stored row of each entity: the columns besides the record follow from it.
fn key_row<'a>(token: &'a str, rec: &'a KeyRecord, reset: Option<i64>) -> RecordRow<'a, KeyRecord> {
    RecordRow {
        table: Table::Keys,
        id: token,
        data: rec,
        budget_reset_at: reset,
        team_id: rec.team_id.as_deref(),
        user_id: rec.user_id.as_deref(),
    }
}

fn team_row<'a>(id: &'a str, rec: &'a TeamRecord, reset: Option<i64>) -> RecordRow<'a, TeamRecord> {
    RecordRow {
        table: Table::Teams,
        id,
        data: rec,
        budget_reset_at: reset,
        team_id: Some(id),
        user_id: None,
    }
}

fn user_row<'a>(id: &'a str, rec: &'a UserRecord, reset: Option<i64>) -> RecordRow<'a, UserRecord> {
    RecordRow {
        table: Table::Users,
        id,
        data: rec,
        budget_reset_at: reset,
        team_id: None,
        user_id: Some(id),
    }
}

fn end_user_row<'a>(
    id: &'a str,
    rec: &'a EndUserRecord,
    reset: Option<i64>,
) -> RecordRow<'a, EndUserRecord> {
    RecordRow {
        table: Table::EndUsers,
        id,
        data: rec,
        budget_reset_at: reset,
        team_id: None,
        user_id: None,
    }
}

/// A record as the info endpoints show it: its fields, plus spend, reset and creation times.
fn info_json(rec: &impl Serialize, ledger: &Ledger, created_at: i64) -> Json {
    let mut v = serde_json::to_value(rec).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("spend".into(), usd(ledger.spend_micros()).into());
        let reset = ledger
            .reset_at()
            .map(|t| Json::String(iso(t)))
            .unwrap_or(Json::Null);
        o.insert("budget_reset_at".into(), reset);
        o.insert("created_at".into(), Json::String(iso(created_at)));
    }
    v
}

pub fn key_info(e: &KeyEntry) -> Json {
    let mut v = info_json(&e.rec, &e.ledger, e.rec.created_at);
    if let Some(o) = v.as_object_mut() {
        let expires = e
            .rec
            .expires
            .map(|t| Json::String(iso(t)))
            .unwrap_or(Json::Null);
        o.insert("expires".into(), expires);
    }
    v
}

pub fn team_info(e: &TeamEntry) -> Json {
    info_json(&e.rec, &e.ledger, e.rec.created_at)
}

pub fn user_info(e: &UserEntry) -> Json {
    info_json(&e.rec, &e.ledger, e.rec.created_at)
}

pub fn end_user_info(e: &EndUserEntry) -> Json {
    info_json(&e.rec, &e.ledger, e.rec.created_at)
}

const KEY_FIELDS: &[&str] = &[
    "key",
    "key_alias",
    "team_id",
    "user_id",
    "models",
    "max_budget",
    "budget_duration",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "model_rpm_limit",
    "model_tpm_limit",
    "duration",
    "metadata",
    "blocked",
];

/// Applies the fields of a generate/update body to a key record.
fn apply_key(
    accounts: &Accounts,
    rec: &mut KeyRecord,
    f: &Fields,
    now: i64,
) -> Result<bool, ApiError> {
    f.check_known(KEY_FIELDS)?;
    set(&mut rec.key_alias, f.string("key_alias")?);
    if let Some(team) = f.string("team_id")? {
        if let Some(t) = &team {
            if !accounts.teams.contains_key(t) {
                return Err(bad(format!(
                    "team_id `{t}` does not exist; create it with POST /team/new"
                ))
                .with_param("team_id"));
            }
        }
        rec.team_id = team;
    }
    set(&mut rec.user_id, f.string("user_id")?);
    set_vec(&mut rec.models, f.list("models")?);
    set(&mut rec.max_budget, f.money("max_budget")?);
    let duration = f.duration("budget_duration")?;
    let duration_changed = duration.is_some();
    set(&mut rec.budget_duration, duration);
    set(&mut rec.rpm_limit, f.count("rpm_limit")?);
    set(&mut rec.tpm_limit, f.count("tpm_limit")?);
    set(
        &mut rec.max_parallel_requests,
        f.count("max_parallel_requests")?,
    );
    if let Some(v) = f.limits_map("model_rpm_limit")? {
        rec.model_rpm_limit = v.unwrap_or_default();
    }
    if let Some(v) = f.limits_map("model_tpm_limit")? {
        rec.model_tpm_limit = v.unwrap_or_default();
    }
    if let Some(d) = f.duration("duration")? {
        rec.expires = d
            .as_deref()
            .and_then(parse_duration)
            .map(|d| now + d.as_millis() as i64);
    }
    if let Some(m) = f.object("metadata")? {
        rec.metadata = m.unwrap_or_default();
    }
    if let Some(b) = f.boolean("blocked")? {
        rec.blocked = b.unwrap_or(false);
    }
    Ok(duration_changed)
}

pub async fn run(
    accounts: &Accounts,
    store: &Store,
    op: AdminOp,
) -> Result<(Json, Effects), ApiError> {
    let now = now_ms();
    let mut fx = Effects::default();
    let out = match op {
        AdminOp::KeyGenerate(body) => {
            let f = Fields { map: &body };
            let key = match f.string("key")? {
                Some(Some(k)) if plausible_key(&k) && k.len() >= 8 => k,
                Some(Some(_)) => {
                    return Err(bad(
                        "`key` must start with `sk-`, be 8 to 256 printable ASCII characters, without spaces",
                    )
                    .with_param("key"))
                }
                _ => new_key(),
            };
            let token = hash_key(&key);
            if accounts.keys.contains_key(&token) {
                return Err(bad("this key already exists").with_param("key"));
            }
            let mut rec = KeyRecord {
                token: token.clone(),
                key_name: key_name(&key),
                created_at: now,
                ..Default::default()
            };
            apply_key(accounts, &mut rec, &f, now)?;
            let reset = next_reset(rec.budget_duration.as_deref(), now);
            store
                .upsert(key_row(&token, &rec, reset))
                .await
                .map_err(internal)?;
            let entry = Arc::new(accounts.key_entry(rec, None, 0, reset));
            fx.gauges.push(key_gauge(&entry));
            let mut info = key_info(&entry);
            accounts.keys.insert(token.clone(), entry);
            accounts.missing_keys.remove(&token);
            if let Some(o) = info.as_object_mut() {
                o.insert("key".into(), Json::String(key));
            }
            info
        }
        AdminOp::KeyUpdate(body) => {
            let f = Fields { map: &body };
            let token = token_of(&f.required_string("key")?);
            let old = accounts
                .keys
                .get(&token)
                .map(|e| e.clone())
                .ok_or_else(|| ApiError::not_found("key not found"))?;
            let mut rec = old.rec.clone();
            let duration_changed = apply_key(accounts, &mut rec, &f, now)?;
            let reset = if duration_changed {
                next_reset(rec.budget_duration.as_deref(), now)
            } else {
                old.ledger.reset_at()
            };
            store
                .upsert(key_row(&token, &rec, reset))
                .await
                .map_err(internal)?;
            old.ledger.set_reset_at(reset);
            let entry = Arc::new(accounts.key_entry(rec, Some(&old), 0, reset));
            fx.gauges.push(key_gauge(&entry));
            let info = key_info(&entry);
            accounts.keys.insert(token, entry);
            info
        }
        AdminOp::KeyBlock(body, blocked) => {
            let f = Fields { map: &body };
            f.check_known(&["key"])?;
            let token = token_of(&f.required_string("key")?);
            let old = accounts
                .keys
                .get(&token)
                .map(|e| e.clone())
                .ok_or_else(|| ApiError::not_found("key not found"))?;
            let mut rec = old.rec.clone();
            rec.blocked = blocked;
            let reset = old.ledger.reset_at();
            store
                .upsert(key_row(&token, &rec, reset))
                .await
                .map_err(internal)?;
            let entry = Arc::new(accounts.key_entry(rec, Some(&old), 0, reset));
            let info = key_info(&entry);
            accounts.keys.insert(token, entry);
            info
        }
        AdminOp::KeyDelete(body) => {
            let f = Fields { map: &body };
            f.check_known(&["keys", "key_aliases"])?;
            let mut tokens: Vec<String> = match f.list("keys")? {
                Some(Some(v)) => v.iter().map(|k| token_of(k)).collect(),
                _ => Vec::new(),
            };
            if let Some(Some(aliases)) = f.list("key_aliases")? {
                for a in aliases {
                    let t = accounts
                        .keys
                        .iter()
                        .find(|e| e.rec.key_alias.as_deref() == Some(a.as_str()))
                        .map(|e| e.key().clone());
                    tokens.push(
                        t.ok_or_else(|| ApiError::not_found(format!("no key with alias `{a}`")))?,
                    );
                }
            }
            if tokens.is_empty() {
                return Err(
                    bad("`keys` is required: a non-empty list of keys or key hashes")
                        .with_param("keys"),
                );
            }
            for t in &tokens {
                if !accounts.keys.contains_key(t) {
                    return Err(ApiError::not_found(format!(
                        "key {} not found",
                        &t[..8.min(t.len())]
                    )));
                }
            }
            store.delete(Table::Keys, &tokens).await.map_err(internal)?;
            for t in &tokens {
                if let Some((_, e)) = accounts.keys.remove(t) {
                    fx.removed.push(key_gauge(&e).scope);
                }
            }
            serde_json::json!({ "deleted_keys": tokens })
        }
        AdminOp::TeamNew(body) => {
            let f = Fields { map: &body };
            let team_id = match f.string("team_id")? {
                Some(Some(t)) if !t.is_empty() => t,
                _ => uuid::Uuid::new_v4().to_string(),
            };
            if accounts.teams.contains_key(&team_id) {
                return Err(
                    bad(format!("team_id `{team_id}` already exists")).with_param("team_id")
                );
            }
            let mut rec = TeamRecord {
                team_id: team_id.clone(),
                created_at: now,
                ..Default::default()
            };
            apply_team(&mut rec, &f)?;
            let reset = next_reset(rec.budget_duration.as_deref(), now);
            store
                .upsert(team_row(&team_id, &rec, reset))
                .await
                .map_err(internal)?;
            let entry = Arc::new(TeamEntry {
                rec,
                ledger: Arc::new(Ledger::new(0, reset)),
                limits: Default::default(),
            });
            fx.gauges.push(team_gauge(&entry));
            let info = team_info(&entry);
            accounts.teams.insert(team_id, entry);
            info
        }
        AdminOp::TeamUpdate(body) => {
            let f = Fields { map: &body };
            let team_id = f.required_string("team_id")?;
            let old = accounts
                .teams
                .get(&team_id)
                .map(|e| e.clone())
                .ok_or_else(|| ApiError::not_found(format!("team `{team_id}` not found")))?;
            let mut rec = old.rec.clone();
            let duration_changed = apply_team(&mut rec, &f)?;
            let reset = if duration_changed {
                next_reset(rec.budget_duration.as_deref(), now)
            } else {
                old.ledger.reset_at()
            };
            store
                .upsert(team_row(&team_id, &rec, reset))
                .await
                .map_err(internal)?;
            old.ledger.set_reset_at(reset);
            let entry = Arc::new(TeamEntry {
                rec,
                ledger: old.ledger.clone(),
                limits: old.limits.clone(),
            });
            fx.gauges.push(team_gauge(&entry));
            let info = team_info(&entry);
            accounts.teams.insert(team_id, entry);
            refresh_key_labels(accounts);
            info
        }
        AdminOp::TeamDelete(body) => {
            let f = Fields { map: &body };
            f.check_known(&["team_ids"])?;
            let ids = f.id_list("team_ids")?;
            for id in &ids {
                if !accounts.teams.contains_key(id) {
                    return Err(ApiError::not_found(format!("team `{id}` not found")));
                }
            }
            // The team's keys go first: a key must never outlive the budget and model list it was made under.
            let keys = delete_keys_of(accounts, store, KeyOwner::Team, &ids, &mut fx).await?;
            store.delete(Table::Teams, &ids).await.map_err(internal)?;
            for id in &ids {
                if let Some((_, e)) = accounts.teams.remove(id) {
                    fx.removed.push(team_gauge(&e).scope);
                }
            }
            serde_json::json!({ "deleted_teams": ids, "deleted_keys": keys })
        }
        AdminOp::TeamMemberAdd(body) => {
            let f = Fields { map: &body };
            f.check_known(&["team_id", "member"])?;
            let team_id = f.required_string("team_id")?;
            let old = accounts
                .teams
                .get(&team_id)
                .map(|e| e.clone())
                .ok_or_else(|| ApiError::not_found(format!("team `{team_id}` not found")))?;
            let members: Vec<Member> = match body.get("member") {
                Some(Json::Array(_)) => f
                    .get::<Vec<Member>>("member", "a member object or a list of them")?
                    .flatten()
                    .unwrap_or_default(),
                Some(_) => f
                    .get::<Member>("member", "a member object {user_id, role}")?
                    .flatten()
                    .into_iter()
                    .collect(),
                None => return Err(bad("`member` is required").with_param("member")),
            };
            if members.is_empty() {
                return Err(bad("`member` must name at least one member").with_param("member"));
            }
            if members
                .iter()
                .any(|m| m.user_id.is_none() && m.user_email.is_none())
            {
                return Err(bad("each member needs `user_id` or `user_email`").with_param("member"));
            }
            let mut rec = old.rec.clone();
            for m in members {
                if !rec
                    .members_with_roles
                    .iter()
                    .any(|x| x.user_id.is_some() && x.user_id == m.user_id)
                {
                    rec.members_with_roles.push(m);
                }
            }
            let reset = old.ledger.reset_at();
            store
                .upsert(team_row(&team_id, &rec, reset))
                .await
                .map_err(internal)?;
            let entry = Arc::new(TeamEntry {
                rec,
                ledger: old.ledger.clone(),
                limits: old.limits.clone(),
            });
            let info = team_info(&entry);
            accounts.teams.insert(team_id, entry);
            info
        }
        AdminOp::TeamMemberDelete(body) => {
            let f = Fields { map: &body };
            f.check_known(&["team_id", "user_id", "user_email"])?;
            let team_id = f.required_string("team_id")?;
            let old = accounts
                .teams
                .get(&team_id)
                .map(|e| e.clone())
                .ok_or_else(|| ApiError::not_found(format!("team `{team_id}` not found")))?;
            let user_id = f.string("user_id")?.flatten();
            let email = f.string("user_email")?.flatten();
            if user_id.is_none() && email.is_none() {
                return Err(bad("`user_id` or `user_email` is required").with_param("user_id"));
            }
            let mut rec = old.rec.clone();
            let before = rec.members_with_roles.len();
            rec.members_with_roles.retain(|m| {
                !((user_id.is_some() && m.user_id == user_id)
                    || (email.is_some() && m.user_email == email))
            });
            if rec.members_with_roles.len() == before {
                return Err(ApiError::not_found("no such member in this team"));
            }
            let reset = old.ledger.reset_at();
            store
                .upsert(team_row(&team_id, &rec, reset))
                .await
                .map_err(internal)?;
            let entry = Arc::new(TeamEntry {
                rec,
                ledger: old.ledger.clone(),
                limits: old.limits.clone(),
            });
            let info = team_info(&entry);
            accounts.teams.insert(team_id, entry);
            info
        }
        AdminOp::UserNew(body) => {
            let f = Fields { map: &body };
            let user_id = match f.string("user_id")? {
                Some(Some(u)) if !u.is_empty() => u,
                _ => uuid::Uuid::new_v4().to_string(),
            };
            if accounts.users.contains_key(&user_id) {
                return Err(
                    bad(format!("user_id `{user_id}` already exists")).with_param("user_id")
                );
            }
            let auto_key = f.boolean("auto_create_key")?.flatten().unwrap_or(true);
            let mut rec = UserRecord {
                user_id: user_id.clone(),
                user_role: default_user_role(),
                created_at: now,
                ..Default::default()
            };
            apply_user(&mut rec, &f)?;
            let reset = next_reset(rec.budget_duration.as_deref(), now);
            store
                .upsert(user_row(&user_id, &rec, reset))
                .await
                .map_err(internal)?;
            let entry = Arc::new(UserEntry {
                rec,
                ledger: Arc::new(Ledger::new(0, reset)),
                limits: Default::default(),
            });
            let mut info = user_info(&entry);
            fx.gauges.push(user_gauge(&entry));
            accounts.users.insert(user_id.clone(), entry);
            if auto_key {
                let mut kb = Map::new();
                kb.insert("user_id".into(), Json::String(user_id.clone()));
                let generated = Box::pin(run(accounts, store, AdminOp::KeyGenerate(kb))).await;
                let (k, kfx) = match generated {
                    Ok(v) => v,
                    Err(e) => {
                        // Nothing half-written: the user goes too.
                        let _ = store
                            .delete(Table::Users, std::slice::from_ref(&user_id))
                            .await;
                        accounts.users.remove(&user_id);
                        return Err(e);
                    }
                };
                fx.gauges.extend(kfx.gauges);
                if let Some(o) = info.as_object_mut() {
                    o.insert("key".into(), k["key"].clone());
                }
            }
            info
        }
        AdminOp::UserUpdate(body) => {
            let f = Fields { map: &body };
            let user_id = f.required_string("user_id")?;
            let old = accounts
                .users
                .get(&user_id)
                .map(|e| e.clone())
                .ok_or_else(|| ApiError::not_found(format!("user `{user_id}` not found")))?;
            let mut rec = old.rec.clone();
            let duration_changed = apply_user(&mut rec, &f)?;
            let reset = if duration_changed {
                next_reset(rec.budget_duration.as_deref(), now)
            } else {
                old.ledger.reset_at()
            };
            store
                .upsert(user_row(&user_id, &rec, reset))
                .await
                .map_err(internal)?;
            old.ledger.set_reset_at(reset);
            let entry = Arc::new(UserEntry {
                rec,
                ledger: old.ledger.clone(),
                limits: old.limits.clone(),
            });
            let info = user_info(&entry);
            fx.gauges.push(user_gauge(&entry));
            accounts.users.insert(user_id, entry);
            info
        }
        AdminOp::UserDelete(body) => {
            let f = Fields { map: &body };
            f.check_known(&["user_ids"])?;
            let ids = f.id_list("user_ids")?;
            for id in &ids {
                if !accounts.users.contains_key(id) {
                    return Err(ApiError::not_found(format!("user `{id}` not found")));
                }
            }
            // As LiteLLM does: a deleted user's keys are deleted with it.
            let keys = delete_keys_of(accounts, store, KeyOwner::User, &ids, &mut fx).await?;
            store.delete(Table::Users, &ids).await.map_err(internal)?;
            for id in &ids {
                accounts.users.remove(id);
                fx.removed.push(BudgetScope::User {
                    user_id: id.clone(),
                });
            }
            serde_json::json!({ "deleted_users": ids, "deleted_keys": keys })
        }
        AdminOp::CustomerNew(body) => {
            let f = Fields { map: &body };
            let user_id = f.required_string("user_id")?;
            if accounts.end_users.contains_key(&user_id) {
                return Err(
                    bad(format!("customer `{user_id}` already exists")).with_param("user_id")
                );
            }
            let mut rec = EndUserRecord {
                user_id: user_id.clone(),
                created_at: now,
                ..Default::default()
            };
            apply_end_user(&mut rec, &f)?;
            let reset = next_reset(rec.budget_duration.as_deref(), now);
            store
                .upsert(end_user_row(&user_id, &rec, reset))
                .await
                .map_err(internal)?;
            let entry = Arc::new(EndUserEntry {
                rec,
                ledger: Arc::new(Ledger::new(0, reset)),
            });
            let info = end_user_info(&entry);
            end_user_gauge(&entry, &mut fx.gauges, &mut fx.removed);
            accounts.end_users.insert(user_id, entry);
            info
        }
        AdminOp::CustomerUpdate(body) => {
            let f = Fields { map: &body };
            let user_id = f.required_string("user_id")?;
            let old = accounts
                .end_users
                .get(&user_id)
                .map(|e| e.clone())
                .ok_or_else(|| ApiError::not_found(format!("customer `{user_id}` not found")))?;
            let mut rec = old.rec.clone();
            let duration_changed = apply_end_user(&mut rec, &f)?;
            let reset = if duration_changed {
                next_reset(rec.budget_duration.as_deref(), now)
            } else {
                old.ledger.reset_at()
            };
            store
                .upsert(end_user_row(&user_id, &rec, reset))
                .await
                .map_err(internal)?;
            old.ledger.set_reset_at(reset);
            let entry = Arc::new(EndUserEntry {
                rec,
                ledger: old.ledger.clone(),
            });
            let info = end_user_info(&entry);
            end_user_gauge(&entry, &mut fx.gauges, &mut fx.removed);
            accounts.end_users.insert(user_id, entry);
            info
        }
        AdminOp::CustomerDelete(body) => {
            let f = Fields { map: &body };
            f.check_known(&["user_ids"])?;
            let ids = f.id_list("user_ids")?;
            for id in &ids {
                if !accounts.end_users.contains_key(id) {
                    return Err(ApiError::not_found(format!("customer `{id}` not found")));
                }
            }
            store
                .delete(Table::EndUsers, &ids)
                .await
                .map_err(internal)?;
            for id in &ids {
                accounts.end_users.remove(id);
                fx.removed.push(BudgetScope::EndUser {
                    end_user_id: id.clone(),
                });
            }
            serde_json::json!({ "deleted_customers": ids })
        }
    };
    Ok((out, fx))
}

const TEAM_FIELDS: &[&str] = &[
    "team_id",
    "team_alias",
    "max_budget",
    "budget_duration",
    "rpm_limit",
    "tpm_limit",
    "models",
    "members_with_roles",
    "members",
    "metadata",
    "blocked",
];

fn apply_team(rec: &mut TeamRecord, f: &Fields) -> Result<bool, ApiError> {
    f.check_known(TEAM_FIELDS)?;
    set(&mut rec.team_alias, f.string("team_alias")?);
    set(&mut rec.max_budget, f.money("max_budget")?);
    let d = f.duration("budget_duration")?;
    let changed = d.is_some();
    set(&mut rec.budget_duration, d);
    set(&mut rec.rpm_limit, f.count("rpm_limit")?);
    set(&mut rec.tpm_limit, f.count("tpm_limit")?);
    set_vec(&mut rec.models, f.list("models")?);
    for k in ["members_with_roles", "members"] {
        if let Some(m) = f.get::<Vec<Member>>(k, "a list of {user_id, role}")? {
            rec.members_with_roles = m.unwrap_or_default();
        }
    }
    if let Some(m) = f.object("metadata")? {
        rec.metadata = m.unwrap_or_default();
    }
    if let Some(b) = f.boolean("blocked")? {
        rec.blocked = b.unwrap_or(false);
    }
    Ok(changed)
}

const USER_FIELDS: &[&str] = &[
    "user_id",
    "user_email",
    "user_alias",
    "user_role",
    "max_budget",
    "budget_duration",
    "rpm_limit",
    "tpm_limit",
    "models",
    "teams",
    "metadata",
    "auto_create_key",
];

fn apply_user(rec: &mut UserRecord, f: &Fields) -> Result<bool, ApiError> {
    f.check_known(USER_FIELDS)?;
    set(&mut rec.user_email, f.string("user_email")?);
    set(&mut rec.user_alias, f.string("user_alias")?);
    if let Some(Some(r)) = f.string("user_role")? {
        rec.user_role = r;
    }
    set(&mut rec.max_budget, f.money("max_budget")?);
    let d = f.duration("budget_duration")?;
    let changed = d.is_some();
    set(&mut rec.budget_duration, d);
    set(&mut rec.rpm_limit, f.count("rpm_limit")?);
    set(&mut rec.tpm_limit, f.count("tpm_limit")?);
    set_vec(&mut rec.models, f.list("models")?);
    set_vec(&mut rec.teams, f.list("teams")?);
    if let Some(m) = f.object("metadata")? {
        rec.metadata = m.unwrap_or_default();
    }
    Ok(changed)
}

fn apply_end_user(rec: &mut EndUserRecord, f: &Fields) -> Result<bool, ApiError> {
    f.check_known(&[
        "user_id",
        "alias",
        "max_budget",
        "budget_duration",
        "blocked",
    ])?;
    set(&mut rec.alias, f.string("alias")?);
    set(&mut rec.max_budget, f.money("max_budget")?);
    let d = f.duration("budget_duration")?;
    let changed = d.is_some();
    set(&mut rec.budget_duration, d);
    if let Some(b) = f.boolean("blocked")? {
        rec.blocked = b.unwrap_or(false);
    }
    Ok(changed)
}

/// Deletes every key of the teams or users `ids` (those in the store, which other replicas may have made,
/// and those in memory); returns their hashes.
async fn delete_keys_of(
    accounts: &Accounts,
    store: &Store,
    owner: KeyOwner,
    ids: &[String],
    fx: &mut Effects,
) -> Result<Vec<String>, ApiError> {
    let mut tokens: Vec<String> = Vec::new();
    for id in ids {
        tokens.extend(store.keys_of(owner, id).await.map_err(internal)?);
    }
    let owned_by = |rec: &KeyRecord| {
        let of = match owner {
            KeyOwner::Team => rec.team_id.as_ref(),
            KeyOwner::User => rec.user_id.as_ref(),
        };
        of.is_some_and(|o| ids.contains(o))
    };
    tokens.extend(
        accounts
            .keys
            .iter()
            .filter(|e| owned_by(&e.rec))
            .map(|e| e.key().clone()),
    );
    tokens.sort();
    tokens.dedup();
    if !tokens.is_empty() {
        store.delete(Table::Keys, &tokens).await.map_err(internal)?;
    }
    for t in &tokens {
        if let Some((_, e)) = accounts.keys.remove(t) {
            fx.removed.push(key_gauge(&e).scope);
        }
    }
    Ok(tokens)
}

/// Team aliases are labels of keys: rebuild the keys' labels after a team changes.
fn refresh_key_labels(accounts: &Accounts) {
    let stale: Vec<Arc<KeyEntry>> = accounts
        .keys
        .iter()
        .filter(|e| e.labels.team_alias != accounts.labels_for(&e.rec).team_alias)
        .map(|e| e.clone())
        .collect();
    for old in stale {
        let entry = accounts.key_entry(old.rec.clone(), Some(&old), 0, old.ledger.reset_at());
        accounts.keys.insert(old.rec.token.clone(), Arc::new(entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_795_758_735_123), "2026-11-27T05:52:15.123Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
