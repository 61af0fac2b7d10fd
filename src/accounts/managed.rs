//! One generic path for every entity kind of the management API ([`Managed`]): create, update and delete
//! write the store first and memory second (an error leaves nothing half-written), and report the budget
//! gauges that changed. The kinds (keys, teams, internal users, end users) say only where their entries
//! live and how a row, an entry, a gauge and an info answer are made from a record.

use super::views::*;
use super::*;
use crate::labels::{BudgetGauge, BudgetScope};
use crate::store::{RecordRow, Store, Table};
use dashmap::DashMap;

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
pub(super) async fn save<K: Managed>(
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
pub(super) async fn create<K: Managed>(
    cx: &mut Ctx<'_>,
    id: &str,
    rec: K::Record,
) -> Result<Json, ApiError> {
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
pub(super) async fn update<K: Managed>(
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
pub(super) fn exist<K: Managed>(cx: &Ctx<'_>, ids: &[String]) -> Result<(), ApiError> {
    match ids
        .iter()
        .find(|id| !K::entries(cx.accounts).contains_key(*id))
    {
        Some(id) => Err(K::not_found(id)),
        None => Ok(()),
    }
}

/// Deletes `ids` from the store, then from memory and the metrics.
pub(super) async fn delete<K: Managed>(cx: &mut Ctx<'_>, ids: &[String]) -> Result<(), ApiError> {
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
pub(super) fn next_reset(duration: Option<&str>, now: i64) -> Option<i64> {
    duration
        .and_then(parse_duration)
        .map(|d| now + d.as_millis() as i64)
}

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
