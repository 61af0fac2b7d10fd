//! BudgetActor: the only writer of keys, teams, internal users and end users. It loads them at boot, runs
//! management operations one at a time (store first, memory second), persists spend write-behind (every
//! [`FLUSH_INTERVAL`], and on shutdown), appends the spend log in batches, resets budgets when their period
//! ends, deletes spend-log rows past `maximum_spend_logs_retention_period`, and tells the metrics actor about
//! budget changes that happen outside requests.
//!
//! Admission and settlement happen on the HTTP workers with atomic counters (`accounts/admission.rs`, `accounts/ledger.rs`); the actor sees
//! their effect through the ledgers' unpersisted deltas, so a lost message can never lose spend.

use super::metrics::BudgetsChanged;
use crate::accounts::admin::{self, AdminOp};
use crate::accounts::views;
use crate::accounts::*;
use crate::config::Retention;
use crate::error::ApiError;
use crate::store::{decode, SpendEvent, Store, StoreError, Table};
use crate::units::Clock;
use actix::prelude::*;
use serde_json::Value as Json;
use std::sync::Arc;

mod sync;
mod writes;
use std::time::Duration;
use sync::*;
use writes::*;

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
    /// Where budget gauge changes go (the MetricsActor).
    metrics: Option<Recipient<BudgetsChanged>>,
    clock: Clock,
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
        metrics: Option<Recipient<BudgetsChanged>>,
        retention: Option<Retention>,
        max_unwritten: usize,
    ) -> Self {
        BudgetActor {
            accounts,
            store,
            metrics,
            clock: Clock::System,
            logs: Vec::new(),
            retention,
            pruning: false,
            max_unwritten,
            unwritten_spend: None,
        }
    }

    /// The same actor reading time from `clock` (tests run it on tokio's paused clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
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
        let cutoff = self.clock.now_ms() - r.period.as_millis() as i64;
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
        let now = self.clock.now_ms();
        AtomicResponse::new(Box::pin(
            async move {
                let (json, fx) = admin::run(&accounts, &store, msg.0, now).await?;
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
        let clock = self.clock.clone();
        AtomicResponse::new(Box::pin(
            async move { flush(&accounts, &store, metrics.as_ref(), logs, spend, clock).await }
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

#[cfg(test)]
mod tests;
