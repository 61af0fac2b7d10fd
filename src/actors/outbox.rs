//! Telemetry batching per HTTP worker. Sending one actor message per request wakes the receiving arbiter's
//! thread each time (an `eventfd` write and a context switch), which on a busy gateway costs more than the
//! work the message carries. Each worker instead buffers its events and sends them in one message per
//! actor after [`FLUSH_DELAY`] (or at once past [`FLUSH_AT`] events). Still `do_send`, still owned by the
//! actors; only the number of wake-ups changes.

use super::budget::{BudgetActor, SpendLogged};
use super::deployment::{AttemptDone, AttemptsDone};
use super::metrics::{MetricsActor, RequestFinished, RequestsFinished};
use crate::deployment::Deployment;
use crate::store::SpendEvent;
use actix::Addr;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

/// How long an event may wait in a worker's buffer.
/// (10 ms: at a few thousand requests per second per worker that is one wake-up per actor for dozens of
/// requests, where 2 ms cost about half a microsecond per request in wake-ups alone.)
pub const FLUSH_DELAY: Duration = Duration::from_millis(10);
/// Buffer size that triggers an immediate flush.
pub const FLUSH_AT: usize = 256;

#[derive(Default)]
struct Outbox {
    metrics: Option<Addr<MetricsActor>>,
    finished: Vec<RequestFinished>,
    attempts: Vec<(Arc<Deployment>, AttemptDone)>,
    budget: Option<Addr<BudgetActor>>,
    spend_logs: Vec<SpendEvent>,
    scheduled: bool,
}

thread_local! {
    static OUTBOX: RefCell<Outbox> = RefCell::new(Outbox::default());
}

/// Queues a finished request for the metrics actor.
pub fn request_finished(metrics: &Addr<MetricsActor>, event: RequestFinished) {
    let full = OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        if o.metrics.is_none() {
            o.metrics = Some(metrics.clone());
        }
        o.finished.push(event);
        o.finished.len() + o.attempts.len() >= FLUSH_AT
    });
    after_push(full);
}

/// Queues a spend-log row for the budget actor.
pub fn spend_logged(budget: &Addr<BudgetActor>, row: SpendEvent) {
    let full = OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        if o.budget.is_none() {
            o.budget = Some(budget.clone());
        }
        o.spend_logs.push(row);
        o.spend_logs.len() >= FLUSH_AT
    });
    after_push(full);
}

/// Queues an upstream attempt's outcome for its deployment actor.
pub fn attempt_done(deployment: &Arc<Deployment>, event: AttemptDone) {
    let full = OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        o.attempts.push((deployment.clone(), event));
        o.finished.len() + o.attempts.len() >= FLUSH_AT
    });
    after_push(full);
}

fn after_push(full: bool) {
    if full {
        flush();
        return;
    }
    let schedule = OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        !std::mem::replace(&mut o.scheduled, true)
    });
    if schedule {
        actix_rt::spawn(async {
            actix_rt::time::sleep(FLUSH_DELAY).await;
            flush();
        });
    }
}

/// Sends everything buffered on this thread.
pub fn flush() {
    // The buffer is gone once the thread is being torn down; its `Drop` has sent what it held.
    let _ = OUTBOX.try_with(|o| o.borrow_mut().send());
}

impl Drop for Outbox {
    /// A worker thread that stops (graceful shutdown) sends what it still holds, so the spend-log rows and
    /// metrics of its last requests reach their actors before the final flush.
    fn drop(&mut self) {
        self.send();
    }
}

impl Outbox {
    fn send(&mut self) {
        self.scheduled = false;
        let (metrics, finished, attempts, budget, logs) = (
            self.metrics.clone(),
            std::mem::take(&mut self.finished),
            std::mem::take(&mut self.attempts),
            self.budget.clone(),
            std::mem::take(&mut self.spend_logs),
        );
        send_batches(metrics, finished, attempts, budget, logs);
    }
}

fn send_batches(
    metrics: Option<Addr<MetricsActor>>,
    finished: Vec<RequestFinished>,
    attempts: Vec<(Arc<Deployment>, AttemptDone)>,
    budget: Option<Addr<BudgetActor>>,
    logs: Vec<SpendEvent>,
) {
    if let (Some(b), false) = (budget, logs.is_empty()) {
        b.do_send(SpendLogged(logs));
    }
    // Deployment events first: a state change should not trail the request that caused it.
    let mut groups: Vec<(Arc<Deployment>, Vec<AttemptDone>)> = Vec::new();
    for (dep, ev) in attempts {
        match groups.iter_mut().find(|(d, _)| Arc::ptr_eq(d, &dep)) {
            Some((_, evs)) => evs.push(ev),
            None => groups.push((dep, vec![ev])),
        }
    }
    for (dep, evs) in groups {
        dep.addr.do_send(AttemptsDone(evs));
    }
    if let (Some(m), false) = (metrics, finished.is_empty()) {
        m.do_send(RequestsFinished(finished));
    }
}
