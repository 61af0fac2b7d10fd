//! The counters of one entity: its spend ledger (micro-dollars, reset by period) and its rate windows.

use crate::window::Window;
use std::sync::atomic::{AtomicI64, Ordering};

// ---- counters -----------------------------------------------------------------------------------------

/// Spend of one entity. `spend` is what admission reads; `unpersisted` is what the BudgetActor has not
/// written to the store yet (it swaps it to zero when it writes).
#[derive(Debug, Default)]
pub struct Ledger {
    spend: AtomicI64,
    unpersisted: AtomicI64,
    /// Unix ms of the next budget reset; -1 when the entity has no `budget_duration`.
    reset_at: AtomicI64,
    /// With Redis: this replica's part of the budget in the current period (`accounts/quota.rs`).
    pub lease: super::lease::Lease,
}

impl Ledger {
    pub fn new(spend_micros: i64, reset_at: Option<i64>) -> Ledger {
        Ledger {
            spend: AtomicI64::new(spend_micros),
            unpersisted: AtomicI64::new(0),
            reset_at: AtomicI64::new(reset_at.unwrap_or(-1)),
            lease: super::lease::Lease::default(),
        }
    }

    /// The budget period as the shared counters name it (its reset time; 0 without one).
    pub fn period(&self) -> super::lease::Span {
        super::lease::Span::Period(self.reset_at().unwrap_or(0) as u64)
    }

    pub fn spend_micros(&self) -> i64 {
        self.spend.load(Ordering::Acquire)
    }

    pub fn add(&self, micros: i64) {
        // Unpersisted first: a concurrent `sync` then either sees it (and retries) or counts it twice in
        // memory until the next flush, never zero times. Sums saturate: a wrapped spend would read as
        // negative and lift every budget.
        saturating_add(&self.unpersisted, micros);
        saturating_add(&self.spend, micros);
    }

    /// What the store has not seen yet; the caller writes it.
    pub fn take_unpersisted(&self) -> i64 {
        self.unpersisted.swap(0, Ordering::AcqRel)
    }

    /// Gives back a delta whose write failed, so the next flush retries it.
    pub fn restore_unpersisted(&self, micros: i64) {
        saturating_add(&self.unpersisted, micros);
    }

    pub fn reset_at(&self) -> Option<i64> {
        let v = self.reset_at.load(Ordering::Acquire);
        (v >= 0).then_some(v)
    }

    pub fn set_reset_at(&self, at: Option<i64>) {
        self.reset_at.store(at.unwrap_or(-1), Ordering::Release);
    }

    /// Takes the store's spend (which includes what every replica has written) as the base: spend becomes
    /// `stored` plus what this replica has settled and not written yet. Budget checks then see the spend of
    /// every replica, a flush interval late at most.
    pub fn sync(&self, stored_micros: i64, reset_at: Option<i64>) {
        loop {
            let pending = self.unpersisted.load(Ordering::Acquire);
            self.spend.store(stored_micros + pending, Ordering::Release);
            // A settlement that raced with the store above is in `unpersisted` now: go again.
            if self.unpersisted.load(Ordering::Acquire) == pending {
                break;
            }
        }
        self.set_reset_at(reset_at);
    }

    /// Starts a new period: spend and pending writes to zero.
    ///
    /// The caller has just written the store's spend to zero. Whatever was settled since it last took the
    /// unpersisted amount (requests finishing during the write) belongs to the new period: it is kept, in
    /// memory and as still to be written.
    pub fn reset(&self, next: Option<i64>) {
        let carried = self.unpersisted.swap(0, Ordering::AcqRel);
        self.spend.store(carried, Ordering::Release);
        self.unpersisted.fetch_add(carried, Ordering::AcqRel);
        self.set_reset_at(next);
    }
}

/// Adds to an atomic without wrapping.
pub(super) fn saturating_add(a: &AtomicI64, n: i64) {
    // The closure always returns Some, so fetch_update cannot fail.
    let _ = a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        Some(v.saturating_add(n))
    });
}

/// Request and token windows of one scope (a key, a team, a key on one model).
#[derive(Debug, Default)]
pub struct Limits {
    pub requests: Window,
    pub tokens: Window,
    pub in_flight: AtomicI64,
    /// With Redis: what the other replicas counted in the current minute (requests, tokens; see
    /// `actors/shared.rs`).
    pub remote: (Window, Window),
    /// With Redis: this replica's part of the requests and tokens of the minute (`accounts/quota.rs`).
    pub leases: [super::lease::Lease; 2],
}

impl Limits {
    /// Requests counted in `minute` by every replica (this one exactly, the others as last synced).
    pub fn requests_used(&self, minute: u64) -> u64 {
        self.requests.current(minute) + self.remote.0.current(minute)
    }

    /// Tokens counted in `minute` by every replica.
    pub fn tokens_used(&self, minute: u64) -> u64 {
        self.tokens.current(minute) + self.remote.1.current(minute)
    }

    /// Takes one request if, with the other replicas' count, it stays within `rpm`.
    pub(super) fn take_request(&self, minute: u64, rpm: u64) -> bool {
        let others = self.remote.0.current(minute);
        rpm > others && self.requests.try_take(minute, 1, rpm - others)
    }

    /// [`Self::take_request`] as `sharing` says.
    pub(super) fn take_request_as(&self, minute: u64, rpm: u64, sharing: Sharing) -> bool {
        match sharing {
            Sharing::Divided(n) => self.requests.try_take(minute, 1, share_of(rpm, n)),
            _ => self.take_request(minute, rpm),
        }
    }

    /// Whether the tokens counted this minute reach `tpm`, as `sharing` says.
    pub(super) fn tokens_reached(&self, minute: u64, tpm: u64, sharing: Sharing) -> bool {
        match sharing {
            Sharing::Divided(n) => self.tokens.current(minute) >= share_of(tpm, n),
            _ => self.tokens_used(minute) >= tpm,
        }
    }
}

/// How this request's limits are counted (see `config::RedisOutageMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// The replica's own count plus the others' as last read from Redis (or no Redis at all).
    Shared,
    /// Redis is unreachable: each replica holds `limit / n` on its own count.
    Divided(u64),
    /// Redis is unreachable and limited requests are refused.
    Refuse,
    /// Redis is there: each replica admits within the slices of every limit Redis granted it, and asks for
    /// more when they are used up (`accounts/quota.rs`).
    Leased,
}

/// One replica's share of `limit` over `n` replicas (rounded down, at least 1 when the limit is not 0).
pub(super) fn share_of(limit: u64, n: u64) -> u64 {
    if limit == 0 {
        return 0;
    }
    (limit / n.max(1)).max(1)
}
