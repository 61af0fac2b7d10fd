//! The management API's logic: create, update, delete keys, teams, internal users and end users. Runs
//! inside the BudgetActor (one operation at a time). Requests arrive typed and validated
//! ([`requests`](super::requests)); every entity kind goes through one generic path ([`Managed`]:
//! create, update, delete), which writes the store first and memory second, so an error leaves nothing
//! half-written. What is particular to a kind (a key's secret, a team's members, the keys that go with a
//! deleted team or user) is written next to its kind.

use super::requests::{
    CustomerFields, KeyDelete, KeyFields, KeyRef, MemberAdd, MemberDelete, MemberIn, Members,
    Patch, TeamDelete, TeamFields, Text, UserDelete, UserFields,
};
use super::views::*;
use super::*;
use crate::labels::{BudgetGauge, BudgetScope};
use crate::store::{KeyOwner, RecordRow, Store, Table};
use crate::units::now_ms;
use dashmap::DashMap;

/// One management operation, its body already parsed and validated.
#[derive(Debug, Clone)]
pub enum AdminOp {
    KeyGenerate(KeyFields),
    KeyUpdate(KeyFields),
    KeyDelete(KeyDelete),
    KeyBlock(KeyRef, bool),
    TeamNew(TeamFields),
    TeamUpdate(TeamFields),
    TeamDelete(TeamDelete),
    TeamMemberAdd(MemberAdd),
    TeamMemberDelete(MemberDelete),
    UserNew(UserFields),
    UserUpdate(UserFields),
    UserDelete(UserDelete),
    CustomerNew(CustomerFields),
    CustomerUpdate(CustomerFields),
    CustomerDelete(UserDelete),
}

/// What an operation changed that metrics must hear about.
#[derive(Default)]
pub struct Effects {
    pub gauges: Vec<BudgetGauge>,
    pub removed: Vec<BudgetScope>,
}

/// What every operation works on.
pub struct Ctx<'a> {
    pub accounts: &'a Accounts,
    pub store: &'a Store,
    pub now: i64,
    pub fx: Effects,
}

pub async fn run(
    accounts: &Accounts,
    store: &Store,
    op: AdminOp,
) -> Result<(Json, Effects), ApiError> {
    let mut cx = Ctx {
        accounts,
        store,
        now: now_ms(),
        fx: Effects::default(),
    };
    let out = match op {
        AdminOp::KeyGenerate(f) => key_generate(&mut cx, f).await?,
        AdminOp::KeyUpdate(f) => {
            let token = token_of(&required(&f.key, "key")?);
            update::<Key>(&mut cx, &token, |cx, rec| apply_key(cx, rec, &f)).await?
        }
        AdminOp::KeyBlock(r, blocked) => {
            let token = token_of(&r.key.0);
            update::<Key>(&mut cx, &token, |_, rec| {
                rec.blocked = blocked;
                Ok(false)
            })
            .await?
        }
        AdminOp::KeyDelete(d) => key_delete(&mut cx, d).await?,
        AdminOp::TeamNew(f) => {
            let id = given_or_new(&f.team_id);
            let mut rec = TeamRecord {
                team_id: id.clone(),
                created_at: cx.now,
                ..Default::default()
            };
            apply_team(&mut rec, &f);
            create::<Team>(&mut cx, &id, rec).await?
        }
        AdminOp::TeamUpdate(f) => {
            let id = required(&f.team_id, "team_id")?;
            let out = update::<Team>(&mut cx, &id, |_, rec| Ok(apply_team(rec, &f))).await?;
            refresh_key_labels(cx.accounts);
            out
        }
        AdminOp::TeamDelete(d) => {
            let ids = texts(d.team_ids, "team_ids")?;
            exist::<Team>(&cx, &ids)?;
            // The team's keys go first: a key must never outlive the budget and model list it was made under.
            let keys = delete_keys_of(&mut cx, KeyOwner::Team, &ids).await?;
            delete::<Team>(&mut cx, &ids).await?;
            serde_json::json!({ "deleted_teams": ids, "deleted_keys": keys })
        }
        AdminOp::TeamMemberAdd(m) => member_add(&mut cx, m).await?,
        AdminOp::TeamMemberDelete(m) => member_delete(&mut cx, m).await?,
        AdminOp::UserNew(f) => user_new(&mut cx, f).await?,
        AdminOp::UserUpdate(f) => {
            let id = required(&f.user_id, "user_id")?;
            update::<User>(&mut cx, &id, |_, rec| Ok(apply_user(rec, &f))).await?
        }
        AdminOp::UserDelete(d) => {
            let ids = texts(d.user_ids, "user_ids")?;
            exist::<User>(&cx, &ids)?;
            // As LiteLLM does: a deleted user's keys are deleted with it.
            let keys = delete_keys_of(&mut cx, KeyOwner::User, &ids).await?;
            delete::<User>(&mut cx, &ids).await?;
            serde_json::json!({ "deleted_users": ids, "deleted_keys": keys })
        }
        AdminOp::CustomerNew(f) => {
            let id = required(&f.user_id, "user_id")?;
            let mut rec = EndUserRecord {
                user_id: id.clone(),
                created_at: cx.now,
                ..Default::default()
            };
            apply_end_user(&mut rec, &f);
            create::<Customer>(&mut cx, &id, rec).await?
        }
        AdminOp::CustomerUpdate(f) => {
            let id = required(&f.user_id, "user_id")?;
            update::<Customer>(&mut cx, &id, |_, rec| Ok(apply_end_user(rec, &f))).await?
        }
        AdminOp::CustomerDelete(d) => {
            let ids = texts(d.user_ids, "user_ids")?;
            exist::<Customer>(&cx, &ids)?;
            delete::<Customer>(&mut cx, &ids).await?;
            serde_json::json!({ "deleted_customers": ids })
        }
    };
    Ok((out, cx.fx))
}

// ---- the generic path ---------------------------------------------------------------------------------

/// An entity kind of the management API: where its entries live, how its row and its entry are made from
/// its record, what metrics and the info endpoints show of it.
pub trait Managed {
    type Record: Clone + Serialize;
    type Entry;
    /// The word in messages (`team `t` not found`).
    const NOUN: &'static str;
    const TABLE: Table;
    fn entries(accounts: &Accounts) -> &DashMap<String, Arc<Self::Entry>>;
    fn record(e: &Self::Entry) -> &Self::Record;
    fn ledger(e: &Self::Entry) -> &Arc<Ledger>;
    fn budget_duration(rec: &Self::Record) -> Option<&str>;
    fn row<'a>(
        id: &'a str,
        rec: &'a Self::Record,
        reset: Option<i64>,
    ) -> RecordRow<'a, Self::Record>;
    /// The entry of `rec`: a new one, or one that keeps `old`'s ledger and windows.
    fn entry(
        accounts: &Accounts,
        rec: Self::Record,
        old: Option<&Self::Entry>,
        reset: Option<i64>,
    ) -> Self::Entry;
    /// Its budget gauges after a change.
    fn gauges(e: &Self::Entry, fx: &mut Effects);
    /// Its gauges' scope once it is gone.
    fn gone(id: &str, e: &Self::Entry) -> BudgetScope;
    fn info(e: &Self::Entry) -> Json;
    fn not_found(id: &str) -> ApiError {
        ApiError::not_found(format!("{} `{id}` not found", Self::NOUN))
    }
}

/// Stores `rec`, then makes and publishes its entry; returns its info.
async fn save<K: Managed>(
    cx: &mut Ctx<'_>,
    id: &str,
    rec: K::Record,
    old: Option<&K::Entry>,
    reset: Option<i64>,
) -> Result<Json, ApiError> {
    cx.store
        .upsert(K::row(id, &rec, reset))
        .await
        .map_err(|e| ApiError::store(&e))?;
    if let Some(old) = old {
        K::ledger(old).set_reset_at(reset);
    }
    let entry = K::entry(cx.accounts, rec, old, reset);
    K::gauges(&entry, &mut cx.fx);
    let info = K::info(&entry);
    K::entries(cx.accounts).insert(id.to_owned(), Arc::new(entry));
    Ok(info)
}

/// Creates `id` (refused when it exists), its budget period starting now.
async fn create<K: Managed>(cx: &mut Ctx<'_>, id: &str, rec: K::Record) -> Result<Json, ApiError> {
    if K::entries(cx.accounts).contains_key(id) {
        let param = if K::NOUN == "team" {
            "team_id"
        } else {
            "user_id"
        };
        return Err(
            ApiError::bad_request(format!("{} `{id}` already exists", K::NOUN)).with_param(param),
        );
    }
    let reset = next_reset(K::budget_duration(&rec), cx.now);
    save::<K>(cx, id, rec, None, reset).await
}

/// Changes `id`'s record with `apply`, which says whether the budget duration changed (the period then
/// starts again now).
async fn update<K: Managed>(
    cx: &mut Ctx<'_>,
    id: &str,
    apply: impl FnOnce(&Ctx<'_>, &mut K::Record) -> Result<bool, ApiError>,
) -> Result<Json, ApiError> {
    let old = K::entries(cx.accounts)
        .get(id)
        .map(|e| e.clone())
        .ok_or_else(|| K::not_found(id))?;
    let mut rec = K::record(&old).clone();
    let reset = if apply(cx, &mut rec)? {
        next_reset(K::budget_duration(&rec), cx.now)
    } else {
        K::ledger(&old).reset_at()
    };
    save::<K>(cx, id, rec, Some(&old), reset).await
}

/// Fails with 404 unless every one of `ids` exists.
fn exist<K: Managed>(cx: &Ctx<'_>, ids: &[String]) -> Result<(), ApiError> {
    match ids
        .iter()
        .find(|id| !K::entries(cx.accounts).contains_key(*id))
    {
        Some(id) => Err(K::not_found(id)),
        None => Ok(()),
    }
}

/// Deletes `ids` from the store, then from memory and the metrics.
async fn delete<K: Managed>(cx: &mut Ctx<'_>, ids: &[String]) -> Result<(), ApiError> {
    cx.store
        .delete(K::TABLE, ids)
        .await
        .map_err(|e| ApiError::store(&e))?;
    for id in ids {
        if let Some((_, e)) = K::entries(cx.accounts).remove(id) {
            cx.fx.removed.push(K::gone(id, &e));
        }
    }
    Ok(())
}

/// The reset time for a duration starting now.
fn next_reset(duration: Option<&str>, now: i64) -> Option<i64> {
    duration
        .and_then(parse_duration)
        .map(|d| now + d.as_millis() as i64)
}

fn required(v: &Patch<Text>, name: &str) -> Result<String, ApiError> {
    match v {
        Some(Some(t)) if !t.0.is_empty() => Ok(t.0.clone()),
        _ => Err(ApiError::bad_request(format!("`{name}` is required")).with_param(name)),
    }
}

fn given_or_new(v: &Patch<Text>) -> String {
    match v {
        Some(Some(t)) if !t.0.is_empty() => t.0.clone(),
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

fn texts(v: Vec<Text>, name: &str) -> Result<Vec<String>, ApiError> {
    if v.is_empty() {
        return Err(
            ApiError::bad_request(format!("`{name}` is required: a non-empty list"))
                .with_param(name),
        );
    }
    Ok(v.into_iter().map(|t| t.0).collect())
}

fn set<T, U: Into<T> + Clone>(target: &mut Option<T>, v: &Patch<U>) {
    if let Some(v) = v {
        *target = v.clone().map(Into::into);
    }
}

fn set_vec(target: &mut Vec<String>, v: &Patch<Vec<Text>>) {
    if let Some(v) = v {
        *target = v.iter().flatten().map(|t| t.0.clone()).collect();
    }
}

fn set_or<T: Clone>(target: &mut T, v: &Patch<T>, unset: T) {
    if let Some(v) = v {
        *target = v.clone().unwrap_or(unset);
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        t.0
    }
}

impl From<super::requests::Usd> for f64 {
    fn from(u: super::requests::Usd) -> f64 {
        u.0
    }
}

impl From<super::requests::Period> for String {
    fn from(p: super::requests::Period) -> String {
        p.0
    }
}

impl From<MemberIn> for Member {
    fn from(m: MemberIn) -> Member {
        Member {
            user_id: m.user_id.map(|t| t.0),
            user_email: m.user_email.map(|t| t.0),
            role: m.role.map(|t| t.0).unwrap_or_else(default_role),
        }
    }
}

// ---- the kinds ------------------------------------------------------------------------------------------

pub struct Key;
pub struct Team;
pub struct User;
pub struct Customer;

impl Managed for Key {
    type Record = KeyRecord;
    type Entry = KeyEntry;
    const NOUN: &'static str = "key";
    const TABLE: Table = Table::Keys;
    fn entries(a: &Accounts) -> &DashMap<String, Arc<KeyEntry>> {
        &a.keys
    }
    fn record(e: &KeyEntry) -> &KeyRecord {
        &e.rec
    }
    fn ledger(e: &KeyEntry) -> &Arc<Ledger> {
        &e.ledger
    }
    fn budget_duration(rec: &KeyRecord) -> Option<&str> {
        rec.budget_duration.as_deref()
    }
    fn row<'a>(id: &'a str, rec: &'a KeyRecord, reset: Option<i64>) -> RecordRow<'a, KeyRecord> {
        key_row(id, rec, reset)
    }
    fn entry(a: &Accounts, rec: KeyRecord, old: Option<&KeyEntry>, reset: Option<i64>) -> KeyEntry {
        a.key_entry(rec, old, 0, reset)
    }
    fn gauges(e: &KeyEntry, fx: &mut Effects) {
        fx.gauges.push(key_gauge(e));
    }
    fn gone(_: &str, e: &KeyEntry) -> BudgetScope {
        key_gauge(e).scope
    }
    fn info(e: &KeyEntry) -> Json {
        key_info(e)
    }
    /// A key is never named back (its hash is the id): only that it was not found.
    fn not_found(_: &str) -> ApiError {
        ApiError::not_found("key not found")
    }
}

impl Managed for Team {
    type Record = TeamRecord;
    type Entry = TeamEntry;
    const NOUN: &'static str = "team";
    const TABLE: Table = Table::Teams;
    fn entries(a: &Accounts) -> &DashMap<String, Arc<TeamEntry>> {
        &a.teams
    }
    fn record(e: &TeamEntry) -> &TeamRecord {
        &e.rec
    }
    fn ledger(e: &TeamEntry) -> &Arc<Ledger> {
        &e.ledger
    }
    fn budget_duration(rec: &TeamRecord) -> Option<&str> {
        rec.budget_duration.as_deref()
    }
    fn row<'a>(id: &'a str, rec: &'a TeamRecord, reset: Option<i64>) -> RecordRow<'a, TeamRecord> {
        team_row(id, rec, reset)
    }
    fn entry(
        _: &Accounts,
        rec: TeamRecord,
        old: Option<&TeamEntry>,
        reset: Option<i64>,
    ) -> TeamEntry {
        TeamEntry {
            rec,
            ledger: old.map_or_else(|| Arc::new(Ledger::new(0, reset)), |o| o.ledger.clone()),
            limits: old.map(|o| o.limits.clone()).unwrap_or_default(),
        }
    }
    fn gauges(e: &TeamEntry, fx: &mut Effects) {
        fx.gauges.push(team_gauge(e));
    }
    fn gone(_: &str, e: &TeamEntry) -> BudgetScope {
        team_gauge(e).scope
    }
    fn info(e: &TeamEntry) -> Json {
        team_info(e)
    }
}

impl Managed for User {
    type Record = UserRecord;
    type Entry = UserEntry;
    const NOUN: &'static str = "user";
    const TABLE: Table = Table::Users;
    fn entries(a: &Accounts) -> &DashMap<String, Arc<UserEntry>> {
        &a.users
    }
    fn record(e: &UserEntry) -> &UserRecord {
        &e.rec
    }
    fn ledger(e: &UserEntry) -> &Arc<Ledger> {
        &e.ledger
    }
    fn budget_duration(rec: &UserRecord) -> Option<&str> {
        rec.budget_duration.as_deref()
    }
    fn row<'a>(id: &'a str, rec: &'a UserRecord, reset: Option<i64>) -> RecordRow<'a, UserRecord> {
        user_row(id, rec, reset)
    }
    fn entry(
        _: &Accounts,
        rec: UserRecord,
        old: Option<&UserEntry>,
        reset: Option<i64>,
    ) -> UserEntry {
        UserEntry {
            rec,
            ledger: old.map_or_else(|| Arc::new(Ledger::new(0, reset)), |o| o.ledger.clone()),
            limits: old.map(|o| o.limits.clone()).unwrap_or_default(),
        }
    }
    fn gauges(e: &UserEntry, fx: &mut Effects) {
        fx.gauges.push(user_gauge(e));
    }
    fn gone(id: &str, _: &UserEntry) -> BudgetScope {
        BudgetScope::User {
            user_id: id.to_owned(),
        }
    }
    fn info(e: &UserEntry) -> Json {
        user_info(e)
    }
}

impl Managed for Customer {
    type Record = EndUserRecord;
    type Entry = EndUserEntry;
    const NOUN: &'static str = "customer";
    const TABLE: Table = Table::EndUsers;
    fn entries(a: &Accounts) -> &DashMap<String, Arc<EndUserEntry>> {
        &a.end_users
    }
    fn record(e: &EndUserEntry) -> &EndUserRecord {
        &e.rec
    }
    fn ledger(e: &EndUserEntry) -> &Arc<Ledger> {
        &e.ledger
    }
    fn budget_duration(rec: &EndUserRecord) -> Option<&str> {
        rec.budget_duration.as_deref()
    }
    fn row<'a>(
        id: &'a str,
        rec: &'a EndUserRecord,
        reset: Option<i64>,
    ) -> RecordRow<'a, EndUserRecord> {
        end_user_row(id, rec, reset)
    }
    fn entry(
        _: &Accounts,
        rec: EndUserRecord,
        old: Option<&EndUserEntry>,
        reset: Option<i64>,
    ) -> EndUserEntry {
        EndUserEntry {
            rec,
            ledger: old.map_or_else(|| Arc::new(Ledger::new(0, reset)), |o| o.ledger.clone()),
        }
    }
    fn gauges(e: &EndUserEntry, fx: &mut Effects) {
        end_user_gauge(e, &mut fx.gauges, &mut fx.removed);
    }
    fn gone(id: &str, _: &EndUserEntry) -> BudgetScope {
        BudgetScope::EndUser {
            end_user_id: id.to_owned(),
        }
    }
    fn info(e: &EndUserEntry) -> Json {
        end_user_info(e)
    }
}

// ---- what is particular to each kind --------------------------------------------------------------------

/// Applies the fields of a generate/update body to a key record; says whether the budget duration changed.
fn apply_key(cx: &Ctx<'_>, rec: &mut KeyRecord, f: &KeyFields) -> Result<bool, ApiError> {
    if let Some(Some(t)) = &f.team_id {
        if !cx.accounts.teams.contains_key(&t.0) {
            return Err(ApiError::bad_request(format!(
                "team_id `{}` does not exist; create it with POST /team/new",
                t.0
            ))
            .with_param("team_id"));
        }
    }
    set(&mut rec.key_alias, &f.key_alias);
    set(&mut rec.team_id, &f.team_id);
    set(&mut rec.user_id, &f.user_id);
    set_vec(&mut rec.models, &f.models);
    set(&mut rec.max_budget, &f.max_budget);
    set(&mut rec.budget_duration, &f.budget_duration);
    set(&mut rec.rpm_limit, &f.rpm_limit);
    set(&mut rec.tpm_limit, &f.tpm_limit);
    set(&mut rec.max_parallel_requests, &f.max_parallel_requests);
    set_or(
        &mut rec.model_rpm_limit,
        &f.model_rpm_limit,
        BTreeMap::new(),
    );
    set_or(
        &mut rec.model_tpm_limit,
        &f.model_tpm_limit,
        BTreeMap::new(),
    );
    if let Some(d) = &f.duration {
        rec.expires = next_reset(d.as_ref().map(|p| p.0.as_str()), cx.now);
    }
    set_or(&mut rec.metadata, &f.metadata, Map::new());
    set_or(&mut rec.blocked, &f.blocked, false);
    Ok(f.budget_duration.is_some())
}

async fn key_generate(cx: &mut Ctx<'_>, f: KeyFields) -> Result<Json, ApiError> {
    let key = match &f.key {
        Some(Some(k)) if plausible_key(&k.0) && k.0.len() >= 8 => k.0.clone(),
        Some(Some(_)) => return Err(ApiError::bad_request(
            "`key` must start with `sk-`, be 8 to 256 printable ASCII characters, without spaces",
        )
        .with_param("key")),
        _ => new_key(),
    };
    let token = hash_key(&key);
    if cx.accounts.keys.contains_key(&token) {
        return Err(ApiError::bad_request("this key already exists").with_param("key"));
    }
    let mut rec = KeyRecord {
        token: token.clone(),
        key_name: key_name(&key),
        created_at: cx.now,
        ..Default::default()
    };
    apply_key(cx, &mut rec, &f)?;
    let reset = next_reset(rec.budget_duration.as_deref(), cx.now);
    let mut info = save::<Key>(cx, &token, rec, None, reset).await?;
    cx.accounts.missing_keys.remove(&token);
    // The only time the key itself is shown.
    if let Some(o) = info.as_object_mut() {
        o.insert("key".into(), Json::String(key));
    }
    Ok(info)
}

async fn key_delete(cx: &mut Ctx<'_>, d: KeyDelete) -> Result<Json, ApiError> {
    let mut tokens: Vec<String> = d.keys.iter().flatten().map(|k| token_of(&k.0)).collect();
    for a in d.key_aliases.iter().flatten() {
        let t = cx
            .accounts
            .keys
            .iter()
            .find(|e| e.rec.key_alias.as_deref() == Some(a.0.as_str()))
            .map(|e| e.key().clone());
        tokens.push(t.ok_or_else(|| ApiError::not_found(format!("no key with alias `{}`", a.0)))?);
    }
    if tokens.is_empty() {
        return Err(ApiError::bad_request(
            "`keys` is required: a non-empty list of keys or key hashes",
        )
        .with_param("keys"));
    }
    if let Some(t) = tokens.iter().find(|t| !cx.accounts.keys.contains_key(*t)) {
        return Err(ApiError::not_found(format!(
            "key {} not found",
            &t[..8.min(t.len())]
        )));
    }
    delete::<Key>(cx, &tokens).await?;
    Ok(serde_json::json!({ "deleted_keys": tokens }))
}

/// Applies the fields of a new/update body to a team record; says whether the budget duration changed.
fn apply_team(rec: &mut TeamRecord, f: &TeamFields) -> bool {
    set(&mut rec.team_alias, &f.team_alias);
    set(&mut rec.max_budget, &f.max_budget);
    set(&mut rec.budget_duration, &f.budget_duration);
    set(&mut rec.rpm_limit, &f.rpm_limit);
    set(&mut rec.tpm_limit, &f.tpm_limit);
    set_vec(&mut rec.models, &f.models);
    for m in [&f.members_with_roles, &f.members].into_iter().flatten() {
        rec.members_with_roles = m.iter().flatten().cloned().map(Member::from).collect();
    }
    set_or(&mut rec.metadata, &f.metadata, Map::new());
    set_or(&mut rec.blocked, &f.blocked, false);
    f.budget_duration.is_some()
}

async fn member_add(cx: &mut Ctx<'_>, m: MemberAdd) -> Result<Json, ApiError> {
    let members: Vec<MemberIn> = match m.member {
        Members::One(one) => vec![one],
        Members::Many(many) => many,
    };
    if members.is_empty() {
        return Err(
            ApiError::bad_request("`member` must name at least one member").with_param("member"),
        );
    }
    if members
        .iter()
        .any(|m| m.user_id.is_none() && m.user_email.is_none())
    {
        return Err(
            ApiError::bad_request("each member needs `user_id` or `user_email`")
                .with_param("member"),
        );
    }
    update::<Team>(cx, &m.team_id.0, |_, rec| {
        for m in members.into_iter().map(Member::from) {
            let known = rec
                .members_with_roles
                .iter()
                .any(|x| x.user_id.is_some() && x.user_id == m.user_id);
            if !known {
                rec.members_with_roles.push(m);
            }
        }
        Ok(false)
    })
    .await
}

async fn member_delete(cx: &mut Ctx<'_>, m: MemberDelete) -> Result<Json, ApiError> {
    let user_id = m.user_id.map(|t| t.0);
    let email = m.user_email.map(|t| t.0);
    if user_id.is_none() && email.is_none() {
        return Err(
            ApiError::bad_request("`user_id` or `user_email` is required").with_param("user_id"),
        );
    }
    update::<Team>(cx, &m.team_id.0, |_, rec| {
        let before = rec.members_with_roles.len();
        rec.members_with_roles.retain(|m| {
            !((user_id.is_some() && m.user_id == user_id)
                || (email.is_some() && m.user_email == email))
        });
        if rec.members_with_roles.len() == before {
            return Err(ApiError::not_found("no such member in this team"));
        }
        Ok(false)
    })
    .await
}

/// Applies the fields of a new/update body to a user record; says whether the budget duration changed.
fn apply_user(rec: &mut UserRecord, f: &UserFields) -> bool {
    set(&mut rec.user_email, &f.user_email);
    set(&mut rec.user_alias, &f.user_alias);
    if let Some(Some(r)) = &f.user_role {
        rec.user_role = r.0.clone();
    }
    set(&mut rec.max_budget, &f.max_budget);
    set(&mut rec.budget_duration, &f.budget_duration);
    set(&mut rec.rpm_limit, &f.rpm_limit);
    set(&mut rec.tpm_limit, &f.tpm_limit);
    set_vec(&mut rec.models, &f.models);
    set_vec(&mut rec.teams, &f.teams);
    set_or(&mut rec.metadata, &f.metadata, Map::new());
    f.budget_duration.is_some()
}

async fn user_new(cx: &mut Ctx<'_>, f: UserFields) -> Result<Json, ApiError> {
    let id = given_or_new(&f.user_id);
    let mut rec = UserRecord {
        user_id: id.clone(),
        user_role: default_user_role(),
        created_at: cx.now,
        ..Default::default()
    };
    apply_user(&mut rec, &f);
    let mut info = create::<User>(cx, &id, rec).await?;
    if f.auto_create_key.flatten().unwrap_or(true) {
        let key = KeyFields {
            user_id: Some(Some(Text(id.clone()))),
            ..Default::default()
        };
        match Box::pin(key_generate(cx, key)).await {
            Ok(k) => {
                if let Some(o) = info.as_object_mut() {
                    o.insert("key".into(), k["key"].clone());
                }
            }
            Err(e) => {
                // Nothing half-written: the user goes too.
                let _ = cx
                    .store
                    .delete(Table::Users, std::slice::from_ref(&id))
                    .await;
                cx.accounts.users.remove(&id);
                cx.fx.gauges.clear();
                return Err(e);
            }
        }
    }
    Ok(info)
}

/// Applies the fields of a new/update body to an end user's record; says whether the budget duration
/// changed.
fn apply_end_user(rec: &mut EndUserRecord, f: &CustomerFields) -> bool {
    set(&mut rec.alias, &f.alias);
    set(&mut rec.max_budget, &f.max_budget);
    set(&mut rec.budget_duration, &f.budget_duration);
    set_or(&mut rec.blocked, &f.blocked, false);
    f.budget_duration.is_some()
}

/// Deletes every key of the teams or users `ids` (those in the store, which other replicas may have made,
/// and those in memory); returns their hashes.
async fn delete_keys_of(
    cx: &mut Ctx<'_>,
    owner: KeyOwner,
    ids: &[String],
) -> Result<Vec<String>, ApiError> {
    let mut tokens: Vec<String> = Vec::new();
    for id in ids {
        let stored = cx.store.keys_of(owner, id).await;
        tokens.extend(stored.map_err(|e| ApiError::store(&e))?);
    }
    let owned_by = |rec: &KeyRecord| {
        let of = match owner {
            KeyOwner::Team => rec.team_id.as_ref(),
            KeyOwner::User => rec.user_id.as_ref(),
        };
        of.is_some_and(|o| ids.contains(o))
    };
    tokens.extend(
        cx.accounts
            .keys
            .iter()
            .filter(|e| owned_by(&e.rec))
            .map(|e| e.key().clone()),
    );
    tokens.sort();
    tokens.dedup();
    if !tokens.is_empty() {
        delete::<Key>(cx, &tokens).await?;
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
