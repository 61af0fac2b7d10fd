//! BudgetActor: the only writer of keys, teams, internal users and end users. It loads them at boot, runs
//! management operations one at a time (store first, memory second), persists spend write-behind (every
//! [`FLUSH_INTERVAL`], and on shutdown), appends the spend log in batches, resets budgets when their period
//! ends, deletes spend-log rows past `maximum_spend_logs_retention_period`, and tells the metrics actor about
//! budget changes that happen outside requests.
//!
//! Admission and settlement happen on the HTTP workers with atomic counters (`accounts.rs`); the actor sees
//! their effect through the ledgers' unpersisted deltas, so a lost message can never lose spend.

use super::metrics::{BudgetsChanged, MetricsActor};
use crate::accounts::admin::{self, AdminOp};
use crate::accounts::views;
use crate::accounts::*;
use crate::config::Retention;
use crate::error::ApiError;
use crate::labels::BudgetScope;
use crate::store::{decode, SpendEvent, Store, StoreError, Table};
use crate::units::now_ms;
use crate::units::parse_duration;
use actix::prelude::*;
use serde_json::Value as Json;
use std::sync::Arc;
use std::time::Duration;

/// How often spend and the spend log are written, and budget resets checked.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// The largest spend-log buffer (in rows) kept for reuse after a flush; a burst bigger than this gives its
/// memory back.
const RECYCLED_LOGS_MAX: usize = 65_536;

// ---- messages -------------------------------------------------------------------------------------------

/// Spend-log rows from one HTTP worker (batched, see `actors/outbox.rs`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SpendLogged(pub Vec<SpendEvent>);

/// Spend-log retention: deletes the rows older than the retention period.
#[derive(Message)]
#[rtype(result = "()")]
struct PruneSpendLogs;

/// A management operation; answers the JSON body for the client.
#[derive(Message)]
#[rtype(result = "Result<Json, ApiError>")]
pub struct Admin(pub AdminOp);

/// Another replica wrote or deleted this record (announced through Redis): read it again now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh(pub crate::store::Change);

/// Writes pending spend and spend-log rows now and applies due budget resets.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

/// Whether spend or spend-log rows are still waiting to be written (a flush left them, the store failed).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Unwritten;

// ---- boot -----------------------------------------------------------------------------------------------

/// Loads every entity from the store into memory.
pub async fn load(accounts: &Accounts, store: &Store) -> Result<(), StoreError> {
    for row in store.load(Table::Teams).await? {
        if let Some(rec) = decode::<TeamRecord>(&row) {
            let ledger = Arc::new(Ledger::new(row.spend_micros, row.budget_reset_at));
            accounts.teams.insert(
                row.id.clone(),
                Arc::new(TeamEntry {
                    rec,
                    ledger,
                    limits: Default::default(),
                }),
            );
        }
    }
    for row in store.load(Table::Users).await? {
        if let Some(rec) = decode::<UserRecord>(&row) {
            let ledger = Arc::new(Ledger::new(row.spend_micros, row.budget_reset_at));
            accounts.users.insert(
                row.id.clone(),
                Arc::new(UserEntry {
                    rec,
                    ledger,
                    limits: Default::default(),
                }),
            );
        }
    }
    for row in store.load(Table::EndUsers).await? {
        if let Some(rec) = decode::<EndUserRecord>(&row) {
            let ledger = Arc::new(Ledger::new(row.spend_micros, row.budget_reset_at));
            accounts
                .end_users
                .insert(row.id.clone(), Arc::new(EndUserEntry { rec, ledger }));
        }
    }
    for row in store.load(Table::Keys).await? {
        if let Some(rec) = decode::<KeyRecord>(&row) {
            let entry = accounts.key_entry(rec, None, row.spend_micros, row.budget_reset_at);
            accounts.keys.insert(row.id.clone(), Arc::new(entry));
        }
    }
    Ok(())
}

/// Budget gauges of every key, team, user and end user with a budget (`prometheus_initialize_budget_metrics`).
pub fn all_gauges(accounts: &Accounts) -> BudgetsChanged {
    let mut gauges: Vec<_> = accounts.keys.iter().map(|e| views::key_gauge(&e)).collect();
    gauges.extend(accounts.teams.iter().map(|e| views::team_gauge(&e)));
    gauges.extend(accounts.users.iter().map(|e| views::user_gauge(&e)));
    let mut removed = Vec::new();
    for e in accounts.end_users.iter() {
        views::end_user_gauge(&e, &mut gauges, &mut removed);
    }
    BudgetsChanged { gauges, removed }
}

// ---- the actor ------------------------------------------------------------------------------------------

pub struct BudgetActor {
    accounts: Arc<Accounts>,
    store: Store,
    metrics: Option<Addr<MetricsActor>>,
    logs: Vec<SpendEvent>,
    retention: Option<Retention>,
    /// A retention pass is running (a long one is never started twice).
    pruning: bool,
    /// `general_settings.max_unwritten_spend_logs`: new requests are refused at this backlog; rows of
    /// requests already admitted are kept up to twice as many, then the oldest are dropped (counted).
    max_unwritten: usize,
    /// Spend taken from the ledgers whose write failed, retried as is (see [`SpendBatch`]).
    unwritten_spend: Option<SpendBatch>,
}

impl BudgetActor {
    /// Publishes the backlog for the request path.
    fn publish_backlog(&self) {
        self.accounts
            .unwritten_logs
            .store(self.logs.len(), std::sync::atomic::Ordering::Release);
    }
}

impl BudgetActor {
    pub fn new(
        accounts: Arc<Accounts>,
        store: Store,
        metrics: Option<Addr<MetricsActor>>,
        retention: Option<Retention>,
        max_unwritten: usize,
    ) -> Self {
        BudgetActor {
            accounts,
            store,
            metrics,
            logs: Vec::new(),
            retention,
            pruning: false,
            max_unwritten,
            unwritten_spend: None,
        }
    }
}

impl Actor for BudgetActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(FLUSH_INTERVAL, |_, ctx| ctx.notify(Flush));
        if let Some(r) = self.retention {
            // Once at startup (a gateway restarted daily still prunes), then every interval.
            ctx.notify(PruneSpendLogs);
            ctx.run_interval(r.interval, |_, ctx| ctx.notify(PruneSpendLogs));
        }
    }
}

impl Handler<PruneSpendLogs> for BudgetActor {
    type Result = ();

    /// Runs beside the actor's other work (not atomically: a large first pass must not hold up spend
    /// flushes or management operations); the deletes go in small batches.
    fn handle(&mut self, _: PruneSpendLogs, ctx: &mut Context<Self>) {
        let Some(r) = self.retention else { return };
        if std::mem::replace(&mut self.pruning, true) {
            return;
        }
        let store = self.store.clone();
        let cutoff = now_ms() - r.period.as_millis() as i64;
        ctx.spawn(
            async move { store.delete_spend_logs_before(cutoff).await }
                .into_actor(self)
                .map(move |result, act, _| {
                    act.pruning = false;
                    match result {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            deleted = n,
                            "spend log retention: rows older than {:?} deleted",
                            r.period
                        ),
                        Err(e) => tracing::warn!(
                            "spend log retention failed, retried at the next interval: {e}"
                        ),
                    }
                }),
        );
    }
}

impl Handler<SpendLogged> for BudgetActor {
    type Result = ();

    fn handle(&mut self, msg: SpendLogged, _: &mut Context<Self>) {
        self.logs.extend(msg.0);
        let hard_cap = self.max_unwritten.saturating_mul(2);
        if self.logs.len() > hard_cap {
            let drop = self.logs.len() - hard_cap;
            tracing::error!(
                dropped = drop,
                "spend log backlog is full (the store refuses writes); oldest rows dropped"
            );
            self.store.note_dropped_rows(drop, "spend_log_backlog");
            self.logs.drain(..drop);
        }
        self.publish_backlog();
    }
}

impl Handler<Admin> for BudgetActor {
    type Result = AtomicResponse<Self, Result<Json, ApiError>>;

    fn handle(&mut self, msg: Admin, _: &mut Context<Self>) -> Self::Result {
        let (accounts, store, metrics) = (
            self.accounts.clone(),
            self.store.clone(),
            self.metrics.clone(),
        );
        AtomicResponse::new(Box::pin(
            async move {
                let (json, fx) = admin::run(&accounts, &store, msg.0).await?;
                if let Some(m) = metrics {
                    if !fx.gauges.is_empty() || !fx.removed.is_empty() {
                        m.do_send(BudgetsChanged {
                            gauges: fx.gauges,
                            removed: fx.removed,
                        });
                    }
                }
                Ok(json)
            }
            .into_actor(self),
        ))
    }
}

impl Handler<Refresh> for BudgetActor {
    type Result = AtomicResponse<Self, ()>;

    /// Atomic like a management operation: this actor stays the only writer of the records.
    fn handle(&mut self, msg: Refresh, _: &mut Context<Self>) -> Self::Result {
        let (accounts, store, metrics) = (
            self.accounts.clone(),
            self.store.clone(),
            self.metrics.clone(),
        );
        let crate::store::Change { table, id } = msg.0;
        if table == Table::Keys {
            // A key made elsewhere that this replica was asked for before: not unknown any more.
            self.accounts.missing_keys.remove(&id);
        }
        AtomicResponse::new(Box::pin(
            async move {
                let mut fx = no_changes();
                match store.get(table, &id).await {
                    Ok(Some(row)) => apply_row(&accounts, table, &row, &mut fx),
                    Ok(None) => forget(&accounts, table, &id, &mut fx),
                    // The read-back of the next flush catches up.
                    Err(e) => tracing::warn!("cannot read a record another replica changed: {e}"),
                }
                send_changes(metrics.as_ref(), fx);
            }
            .into_actor(self),
        ))
    }
}

impl Handler<Unwritten> for BudgetActor {
    type Result = bool;

    fn handle(&mut self, _: Unwritten, _: &mut Context<Self>) -> bool {
        self.unwritten_spend.is_some() || !self.logs.is_empty()
    }
}

impl Handler<Flush> for BudgetActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        let (accounts, store, metrics) = (
            self.accounts.clone(),
            self.store.clone(),
            self.metrics.clone(),
        );
        let logs = std::mem::take(&mut self.logs);
        let spend = self.unwritten_spend.take();
        AtomicResponse::new(Box::pin(
            async move { flush(&accounts, &store, metrics.as_ref(), logs, spend).await }
                .into_actor(self)
                .map(|(unwritten, spend), act, _| {
                    act.unwritten_spend = spend;
                    // Rows the store did not take go back in front, to be retried on the next flush.
                    if !unwritten.is_empty() {
                        let newer = std::mem::take(&mut act.logs);
                        act.logs = unwritten;
                        act.logs.extend(newer);
                    } else if act.logs.is_empty() && unwritten.capacity() <= RECYCLED_LOGS_MAX {
                        // The written batch's buffer, emptied, takes the next second's rows: growing a
                        // new one every second faulted in (and zeroed) megabytes of fresh pages each time.
                        act.logs = unwritten;
                    }
                    act.publish_backlog();
                }),
        ))
    }
}

/// Spend deltas taken from the ledgers and not yet known to be written. The batch keeps its id and its
/// deltas until a write succeeds: a write that failed may still have committed, and writing the same batch
/// again is then recognised by its id (`Store::add_spend`) instead of adding the spend twice.
pub struct SpendBatch {
    id: String,
    rows: Vec<(Table, String, i64)>,
}

/// Spend-log rows per write: a backlog left by an outage drains in commits of this size, each one off the
/// backlog as soon as it is written.
const LOG_WRITE_BATCH: usize = 5000;

/// Writes spend (a batch left from an earlier failure first) and spend-log rows, then reads the other
/// replicas' changes back (PostgreSQL) and applies due resets. Returns the log rows not written (or, when
/// all were, their emptied buffer) and the spend batch still to write.
async fn flush(
    accounts: &Accounts,
    store: &Store,
    metrics: Option<&Addr<MetricsActor>>,
    logs: Vec<SpendEvent>,
    mut spend: Option<SpendBatch>,
) -> (Vec<SpendEvent>, Option<SpendBatch>) {
    if let Some(batch) = spend.take() {
        spend = write_spend(store, batch).await;
    }
    if spend.is_none() {
        let mut rows: Vec<(Table, String, i64)> = Vec::new();
        let mut take = |table: Table, id: &String, ledger: &Arc<Ledger>| {
            let d = ledger.take_unpersisted();
            if d != 0 {
                rows.push((table, id.clone(), d));
            }
        };
        for e in accounts.keys.iter() {
            take(Table::Keys, e.key(), &e.ledger);
        }
        for e in accounts.teams.iter() {
            take(Table::Teams, e.key(), &e.ledger);
        }
        for e in accounts.users.iter() {
            take(Table::Users, e.key(), &e.ledger);
        }
        for e in accounts.end_users.iter() {
            take(Table::EndUsers, e.key(), &e.ledger);
        }
        if !rows.is_empty() {
            let id = uuid::Uuid::new_v4().simple().to_string();
            spend = write_spend(store, SpendBatch { id, rows }).await;
        }
    }
    let unwritten = write_logs(store, logs).await;
    // The stored spend lacks what is still to write: reading it back now would lower this replica's view.
    if store.kind == "postgres" && spend.is_none() {
        sync_from_store(accounts, store, metrics).await;
    }
    resets(accounts, store, metrics).await;
    // Unknown keys are remembered for a few seconds only, so a flood of random keys cannot grow memory.
    accounts
        .missing_keys
        .retain(|_, seen| seen.elapsed() < NEGATIVE_TTL);
    (unwritten, spend)
}

/// Writes one spend batch; gives it back when the write failed.
async fn write_spend(store: &Store, batch: SpendBatch) -> Option<SpendBatch> {
    match store.add_spend(&batch.id, &batch.rows).await {
        Ok(()) => None,
        Err(e) => {
            tracing::error!(batch = %batch.id, "cannot persist spend, will retry the same batch: {e}");
            Some(batch)
        }
    }
}

/// Writes spend-log rows in commits of at most [`LOG_WRITE_BATCH`]; returns the rows not written (from the
/// first commit that failed for want of the database), or the emptied buffer when all were.
async fn write_logs(store: &Store, logs: Vec<SpendEvent>) -> Vec<SpendEvent> {
    if logs.is_empty() {
        return logs;
    }
    if logs.len() <= LOG_WRITE_BATCH {
        return match write_part(store, logs).await {
            Ok(mut emptied) => {
                emptied.clear();
                emptied
            }
            Err(rows) => rows,
        };
    }
    let mut rest = logs.into_iter();
    loop {
        let part: Vec<SpendEvent> = rest.by_ref().take(LOG_WRITE_BATCH).collect();
        if part.is_empty() {
            return Vec::new();
        }
        if let Err(mut kept) = write_part(store, part).await {
            kept.extend(rest);
            return kept;
        }
    }
}

/// Writes `rows` in one commit. A batch the database refuses is split in halves until the refused rows
/// stand alone; those are dropped (logged and counted), never left to block the rows behind them. A
/// failure that is not a refusal (the database went away) gives back every row not yet written.
/// `Ok` carries the written buffer for reuse.
async fn write_part(
    store: &Store,
    rows: Vec<SpendEvent>,
) -> Result<Vec<SpendEvent>, Vec<SpendEvent>> {
    let mut stack = vec![rows];
    let mut written = Vec::new();
    while let Some(part) = stack.pop() {
        let shared = Arc::new(part);
        let result = store.insert_spend_logs(shared.clone()).await;
        let part = Arc::try_unwrap(shared).unwrap_or_else(|s| s.as_ref().clone());
        match result {
            Ok(()) => written = part,
            Err(e) if e.is_refusal() && part.len() == 1 => {
                let row = &part[0];
                tracing::error!(
                    hashed_api_key = %row.key.hashed_api_key,
                    model_group = %row.model_group,
                    spend_micros = row.spend_micros,
                    "spend-log row dropped, the database refuses it: {e}"
                );
                store.note_dropped_rows(1, "insert_spend_logs");
            }
            Err(e) if e.is_refusal() => {
                tracing::error!(
                    rows = part.len(),
                    "the database refused a spend-log batch, writing it in halves: {e}"
                );
                let mut first = part;
                let second = first.split_off(first.len() / 2);
                stack.push(second);
                stack.push(first);
            }
            Err(e) => {
                tracing::error!("cannot write the spend log, will retry: {e}");
                let mut kept = part;
                for p in stack.into_iter().rev() {
                    kept.extend(p);
                }
                return Err(kept);
            }
        }
    }
    Ok(written)
}

/// Replicas sharing one PostgreSQL database: every flush reads the entities back, so that each replica
/// enforces budgets on the spend of all of them, not only on its own share, and sees records another replica
/// changed or deleted (keys, teams, users, end users) a flush interval later at most. With Redis the other
/// replicas also announce each change as they make it ([`Refresh`]), so this read-back is the backstop for a
/// missed message. Keys never used here are not cached (read-through finds new ones). Runs inside the
/// BudgetActor, like every management operation of this replica, so none can interleave with it.
async fn sync_from_store(accounts: &Accounts, store: &Store, metrics: Option<&Addr<MetricsActor>>) {
    let mut fx = no_changes();
    for table in Table::ALL {
        let rows = match store.load(table).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("cannot read entities back from the store: {e}");
                break;
            }
        };
        let present: std::collections::HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        for row in &rows {
            apply_row(accounts, table, row, &mut fx);
        }
        for id in ids_in_memory(accounts, table) {
            if present.contains(id.as_str()) {
                continue;
            }
            // Made (or read through) here after the load above is not gone: ask again.
            if let Ok(None) = store.get(table, &id).await {
                forget(accounts, table, &id, &mut fx);
            }
        }
    }
    send_changes(metrics, fx);
}

fn no_changes() -> BudgetsChanged {
    BudgetsChanged {
        gauges: Vec::new(),
        removed: Vec::new(),
    }
}

/// Tells the metrics actor about gauges that records read back changed.
fn send_changes(metrics: Option<&Addr<MetricsActor>>, fx: BudgetsChanged) {
    if let (Some(m), false) = (metrics, fx.gauges.is_empty() && fx.removed.is_empty()) {
        m.do_send(fx);
    }
}

/// Takes one stored row as the truth for its entity: spend and reset time into the ledger (plus what this
/// replica has not written yet), a changed record replacing the old one with the same counters. Keys are
/// only updated, never added (a key not used here stays out of memory); the other entities are added.
fn apply_row(accounts: &Accounts, table: Table, row: &crate::store::Row_, fx: &mut BudgetsChanged) {
    match table {
        Table::Keys => {
            let Some(old) = accounts.keys.get(&row.id).map(|e| e.clone()) else {
                return;
            };
            let moved = old.ledger.reset_at() != row.budget_reset_at;
            old.ledger.sync(row.spend_micros, row.budget_reset_at);
            if let Some(rec) = decode::<KeyRecord>(row).filter(|r| *r != old.rec) {
                let entry = accounts.key_entry(rec, Some(&old), 0, row.budget_reset_at);
                fx.gauges.push(views::key_gauge(&entry));
                accounts.keys.insert(row.id.clone(), Arc::new(entry));
            } else if moved {
                // A new budget period another replica started: the gauges show it here too.
                fx.gauges.push(views::key_gauge(&old));
            }
        }
        Table::Teams => {
            let old = accounts.teams.get(&row.id).map(|e| e.clone());
            if let Some(old) = &old {
                let moved = old.ledger.reset_at() != row.budget_reset_at;
                old.ledger.sync(row.spend_micros, row.budget_reset_at);
                if moved {
                    fx.gauges.push(views::team_gauge(old));
                }
            }
            let Some(rec) = decode::<TeamRecord>(row) else {
                return;
            };
            let entry = match old {
                Some(old) if old.rec == rec => return,
                Some(old) => TeamEntry {
                    rec,
                    ledger: old.ledger.clone(),
                    limits: old.limits.clone(),
                },
                None => TeamEntry {
                    rec,
                    ledger: Arc::new(Ledger::new(row.spend_micros, row.budget_reset_at)),
                    limits: Default::default(),
                },
            };
            fx.gauges.push(views::team_gauge(&entry));
            accounts.teams.insert(row.id.clone(), Arc::new(entry));
        }
        Table::Users => {
            let old = accounts.users.get(&row.id).map(|e| e.clone());
            if let Some(old) = &old {
                let moved = old.ledger.reset_at() != row.budget_reset_at;
                old.ledger.sync(row.spend_micros, row.budget_reset_at);
                if moved {
                    fx.gauges.push(views::user_gauge(old));
                }
            }
            let Some(rec) = decode::<UserRecord>(row) else {
                return;
            };
            let entry = match old {
                Some(old) if old.rec == rec => return,
                Some(old) => UserEntry {
                    rec,
                    ledger: old.ledger.clone(),
                    limits: old.limits.clone(),
                },
                None => UserEntry {
                    rec,
                    ledger: Arc::new(Ledger::new(row.spend_micros, row.budget_reset_at)),
                    limits: Default::default(),
                },
            };
            fx.gauges.push(views::user_gauge(&entry));
            accounts.users.insert(row.id.clone(), Arc::new(entry));
        }
        Table::EndUsers => {
            let old = accounts.end_users.get(&row.id).map(|e| e.clone());
            if let Some(old) = &old {
                let moved = old.ledger.reset_at() != row.budget_reset_at;
                old.ledger.sync(row.spend_micros, row.budget_reset_at);
                if moved {
                    views::end_user_gauge(old, &mut fx.gauges, &mut fx.removed);
                }
            }
            let Some(rec) = decode::<EndUserRecord>(row) else {
                return;
            };
            let entry = match old {
                Some(old) if old.rec == rec => return,
                Some(old) => EndUserEntry {
                    rec,
                    ledger: old.ledger.clone(),
                },
                None => EndUserEntry {
                    rec,
                    ledger: Arc::new(Ledger::new(row.spend_micros, row.budget_reset_at)),
                },
            };
            views::end_user_gauge(&entry, &mut fx.gauges, &mut fx.removed);
            accounts.end_users.insert(row.id.clone(), Arc::new(entry));
        }
        Table::Models => {}
    }
}

fn ids_in_memory(accounts: &Accounts, table: Table) -> Vec<String> {
    match table {
        Table::Keys => accounts.keys.iter().map(|e| e.key().clone()).collect(),
        Table::Teams => accounts.teams.iter().map(|e| e.key().clone()).collect(),
        Table::Users => accounts.users.iter().map(|e| e.key().clone()).collect(),
        Table::EndUsers => accounts.end_users.iter().map(|e| e.key().clone()).collect(),
        Table::Models => Vec::new(),
    }
}

/// Drops an entity deleted elsewhere (and its budget gauges).
fn forget(accounts: &Accounts, table: Table, id: &str, fx: &mut BudgetsChanged) {
    match table {
        Table::Keys => {
            if let Some((_, e)) = accounts.keys.remove(id) {
                fx.removed.push(views::key_gauge(&e).scope);
            }
        }
        Table::Teams => {
            if let Some((_, e)) = accounts.teams.remove(id) {
                fx.removed.push(views::team_gauge(&e).scope);
            }
        }
        Table::Users => {
            if accounts.users.remove(id).is_some() {
                fx.removed.push(BudgetScope::User {
                    user_id: id.to_owned(),
                });
            }
        }
        Table::EndUsers => {
            if accounts.end_users.remove(id).is_some() {
                fx.removed.push(BudgetScope::EndUser {
                    end_user_id: id.to_owned(),
                });
            }
        }
        // The RouterActor's, not an account.
        Table::Models => {}
    }
}

/// Starts a new budget period for every entity whose reset time has passed.
async fn resets(accounts: &Accounts, store: &Store, metrics: Option<&Addr<MetricsActor>>) {
    let now = now_ms();
    let due = |l: &Ledger| l.reset_at().is_some_and(|t| t <= now);
    let next = |d: &Option<String>| {
        d.as_deref()
            .and_then(parse_duration)
            .map(|d| now + d.as_millis() as i64)
    };
    let (mut gauges, mut removed) = (Vec::new(), Vec::new());
    let mut todo: Vec<(Table, String, Arc<Ledger>, Option<i64>)> = Vec::new();
    for e in accounts.keys.iter().filter(|e| due(&e.ledger)) {
        todo.push((
            Table::Keys,
            e.key().clone(),
            e.ledger.clone(),
            next(&e.rec.budget_duration),
        ));
    }
    for e in accounts.teams.iter().filter(|e| due(&e.ledger)) {
        todo.push((
            Table::Teams,
            e.key().clone(),
            e.ledger.clone(),
            next(&e.rec.budget_duration),
        ));
    }
    for e in accounts.users.iter().filter(|e| due(&e.ledger)) {
        todo.push((
            Table::Users,
            e.key().clone(),
            e.ledger.clone(),
            next(&e.rec.budget_duration),
        ));
    }
    for e in accounts.end_users.iter().filter(|e| due(&e.ledger)) {
        todo.push((
            Table::EndUsers,
            e.key().clone(),
            e.ledger.clone(),
            next(&e.rec.budget_duration),
        ));
    }
    for (table, id, ledger, next_reset) in todo {
        match store.reset_spend(table, &id, next_reset).await {
            Ok(true) => {}
            // Another replica started the new period; the next read-back brings its state here.
            Ok(false) => continue,
            Err(e) => {
                tracing::error!("cannot reset the budget of {id}, will retry: {e}");
                continue;
            }
        }
        ledger.reset(next_reset);
        tracing::info!(entity = ?table, id = %if table == Table::Keys { &id[..8] } else { &id }, "budget period reset");
        match table {
            Table::Keys => {
                if let Some(e) = accounts.keys.get(&id) {
                    gauges.push(views::key_gauge(&e));
                }
            }
            Table::Teams => {
                if let Some(e) = accounts.teams.get(&id) {
                    gauges.push(views::team_gauge(&e));
                }
            }
            Table::Users => {
                if let Some(e) = accounts.users.get(&id) {
                    gauges.push(views::user_gauge(&e));
                }
            }
            Table::EndUsers => {
                if let Some(e) = accounts.end_users.get(&id) {
                    views::end_user_gauge(&e, &mut gauges, &mut removed);
                }
            }
            Table::Models => {}
        }
    }
    if let (Some(m), false) = (metrics, gauges.is_empty() && removed.is_empty()) {
        m.do_send(BudgetsChanged { gauges, removed });
    }
}
