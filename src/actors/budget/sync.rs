//! Reading back: records and spend other replicas wrote, applied to memory with their gauges; budget
//! periods that ended, reset.

use crate::accounts::views;
use crate::accounts::*;
use crate::actors::metrics::BudgetsChanged;
use crate::labels::BudgetScope;
use crate::store::{decode, Store, Table};
use crate::units::parse_duration;
use actix::prelude::*;
use std::sync::Arc;

/// Replicas sharing one PostgreSQL database: every flush reads the entities back, so that each replica
/// enforces budgets on the spend of all of them, not only on its own share, and sees records another replica
/// changed or deleted (keys, teams, users, end users) a flush interval later at most. With Redis the other
/// replicas also announce each change as they make it ([`Refresh`]), so this read-back is the backstop for a
/// missed message. Keys never used here are not cached (read-through finds new ones). Runs inside the
/// BudgetActor, like every management operation of this replica, so none can interleave with it.
pub(super) async fn sync_from_store(
    accounts: &Accounts,
    store: &Store,
    metrics: Option<&Recipient<BudgetsChanged>>,
) {
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

pub(super) fn no_changes() -> BudgetsChanged {
    BudgetsChanged {
        gauges: Vec::new(),
        removed: Vec::new(),
    }
}

/// Tells the metrics actor about gauges that records read back changed.
pub(super) fn send_changes(metrics: Option<&Recipient<BudgetsChanged>>, fx: BudgetsChanged) {
    if let (Some(m), false) = (metrics, fx.gauges.is_empty() && fx.removed.is_empty()) {
        m.do_send(fx);
    }
}

/// Takes one stored row as the truth for its entity: spend and reset time into the ledger (plus what this
/// replica has not written yet), a changed record replacing the old one with the same counters. Keys are
/// only updated, never added (a key not used here stays out of memory); the other entities are added.
pub(super) fn apply_row(
    accounts: &Accounts,
    table: Table,
    row: &crate::store::Row_,
    fx: &mut BudgetsChanged,
) {
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

pub(super) fn ids_in_memory(accounts: &Accounts, table: Table) -> Vec<String> {
    match table {
        Table::Keys => accounts.keys.iter().map(|e| e.key().clone()).collect(),
        Table::Teams => accounts.teams.iter().map(|e| e.key().clone()).collect(),
        Table::Users => accounts.users.iter().map(|e| e.key().clone()).collect(),
        Table::EndUsers => accounts.end_users.iter().map(|e| e.key().clone()).collect(),
        Table::Models => Vec::new(),
    }
}

/// Drops an entity deleted elsewhere (and its budget gauges).
pub(super) fn forget(accounts: &Accounts, table: Table, id: &str, fx: &mut BudgetsChanged) {
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
pub(super) async fn resets(
    accounts: &Accounts,
    store: &Store,
    metrics: Option<&Recipient<BudgetsChanged>>,
    now: i64,
) {
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
        match store.reset_spend(table, &id, next_reset, now).await {
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
