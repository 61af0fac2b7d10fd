//! Writing spend: ledger deltas and spend-log rows in batches, kept in memory and retried while the
//! database is away, bounded by `general_settings.max_unwritten_spend_logs`.

use super::sync::{resets, sync_from_store};
use crate::accounts::*;
use crate::actors::metrics::BudgetsChanged;
use crate::store::{SpendEvent, Store, Table};
use crate::units::Clock;
use actix::prelude::*;
use std::sync::Arc;

/// Spend deltas taken from the ledgers and not yet known to be written. The batch keeps its id and its
/// deltas until a write succeeds: a write that failed may still have committed, and writing the same batch
/// again is then recognised by its id (`Store::add_spend`) instead of adding the spend twice.
pub struct SpendBatch {
    id: String,
    rows: Vec<(Table, String, i64)>,
}

/// Spend-log rows per write: a backlog left by an outage drains in commits of this size, each one off the
/// backlog as soon as it is written.
pub(super) const LOG_WRITE_BATCH: usize = 5000;

/// Writes spend (a batch left from an earlier failure first) and spend-log rows, then reads the other
/// replicas' changes back (PostgreSQL) and applies due resets. Returns the log rows not written (or, when
/// all were, their emptied buffer) and the spend batch still to write.
pub(super) async fn flush(
    accounts: &Accounts,
    store: &Store,
    metrics: Option<&Recipient<BudgetsChanged>>,
    logs: Vec<SpendEvent>,
    mut spend: Option<SpendBatch>,
    clock: Clock,
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
    resets(accounts, store, metrics, clock.now_ms()).await;
    // Unknown keys are remembered for a few seconds only, so a flood of random keys cannot grow memory.
    accounts
        .missing_keys
        .retain(|_, seen| seen.elapsed() < NEGATIVE_TTL);
    (unwritten, spend)
}

/// Writes one spend batch; gives it back when the write failed.
pub(super) async fn write_spend(store: &Store, batch: SpendBatch) -> Option<SpendBatch> {
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
pub(super) async fn write_logs(store: &Store, logs: Vec<SpendEvent>) -> Vec<SpendEvent> {
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
pub(super) async fn write_part(
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
