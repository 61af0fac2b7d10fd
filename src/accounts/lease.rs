//! One replica's lease of one shared limit (see `quota.rs` for how leases are granted through Redis): what
//! it was granted, what it used, and whether a request still has room in it.

use std::sync::Mutex;

/// How long a replica refuses on its own after Redis refused a slice (the counter of a budget can come
/// down: it is started again from the stored spend once idle).
pub(super) const REFUSAL_MS: i64 = 1_000;

/// One replica's part of one shared limit in one window.
#[derive(Debug, Default)]
pub struct Lease(Mutex<LeaseState>);

#[derive(Debug, Default, Clone, Copy)]
struct LeaseState {
    /// The minute, or the budget period (its reset time).
    window: u64,
    /// What Redis counts for this replica in this window: grants, and usage beyond them reported.
    granted: i64,
    /// What this replica admitted (requests) or was charged (tokens, micro-dollars) in this window.
    used: i64,
    /// The limit at which Redis refused a slice in this window, and when: refused here without asking
    /// again while the limit stays there, for [`REFUSAL_MS`].
    refused_at: Option<(i64, i64)>,
    /// Requests admitted on [`Lease::room`] that have not ended yet (kept across windows: they end in the
    /// next one).
    in_flight: i64,
    /// What the last request charged here used (kept across windows): admission counts each request in
    /// flight as using as much, so a replica does not admit more at once than its grants can pay for.
    last: i64,
    /// A request of this replica is asking Redis for a slice: the others wait for its answer instead of
    /// asking too (each answer grants a part of what is left, so a herd of asks would take it all). Kept
    /// across windows: the ask of the old window ends first.
    asking: bool,
}

/// What a lease says to one more request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Yes,
    /// No room: ask Redis for the lease's `window`, reporting `debt` (marked as reported already; what was
    /// claimed before it: `before`).
    Ask {
        debt: i64,
        before: i64,
        window: u64,
    },
    /// Redis said the limit is reached.
    Refused,
    /// Another request is asking Redis for this lease: wait for its answer, then try again.
    Wait,
}

/// Which counters a window is: minutes only move forward; a budget period is whatever the ledger says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Minute(u64),
    Period(u64),
}

impl Span {
    pub(super) fn id(self) -> u64 {
        match self {
            Span::Minute(m) | Span::Period(m) => m,
        }
    }

    /// The same kind of span, for window `id`.
    pub fn with(self, id: u64) -> Span {
        match self {
            Span::Minute(_) => Span::Minute(id),
            Span::Period(_) => Span::Period(id),
        }
    }
}

impl Lease {
    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state in `span`'s window, moving the lease to it (a minute only forward).
    fn state(&self, span: Span) -> std::sync::MutexGuard<'_, LeaseState> {
        let mut st = self.lock();
        let window = match span {
            // A caller that read the clock before another moved the window on counts in the newer one.
            Span::Minute(m) => m.max(st.window),
            Span::Period(p) => p,
        };
        if st.window != window {
            *st = LeaseState {
                window,
                in_flight: st.in_flight,
                last: st.last,
                asking: st.asking,
                ..LeaseState::default()
            };
        }
        st
    }

    /// The state if the lease is still in `span`'s window (answers for an older window change nothing).
    fn state_in(&self, span: Span) -> Option<std::sync::MutexGuard<'_, LeaseState>> {
        let st = self.lock();
        (st.window == span.id()).then_some(st)
    }

    fn refused(st: &LeaseState, limit: i64) -> bool {
        st.refused_at
            .is_some_and(|(at, when)| limit <= at && crate::units::now_ms() - when < REFUSAL_MS)
    }

    /// Marks the lease as asked for, and what was used beyond the grants as reported with the ask.
    fn ask(st: &mut LeaseState) -> Room {
        if st.asking {
            return Room::Wait;
        }
        st.asking = true;
        let before = st.granted;
        let debt = (st.used - st.granted).max(0);
        st.granted += debt;
        Room::Ask {
            debt,
            before,
            window: st.window,
        }
    }

    /// Takes `n` requests if the lease has room for them.
    pub fn take(&self, span: Span, n: i64, limit: i64) -> Room {
        let mut st = self.state(span);
        if st.used + n <= st.granted {
            st.used += n;
            return Room::Yes;
        }
        if Self::refused(&st, limit) {
            return Room::Refused;
        }
        Self::ask(&mut st)
    }

    /// Whether one more request may start using the measure (tokens, spend) it is charged later: the
    /// grants must cover what was used plus, for every request in flight, what the last one used. On
    /// `Yes` the request counts as in flight until [`Lease::ended`].
    pub fn room(&self, span: Span, limit: i64) -> Room {
        let mut st = self.state(span);
        if st.used.saturating_add(st.in_flight.saturating_mul(st.last)) < st.granted {
            st.in_flight += 1;
            return Room::Yes;
        }
        if Self::refused(&st, limit) {
            return Room::Refused;
        }
        Self::ask(&mut st)
    }

    /// A request admitted on [`Lease::room`] ended (charged or not).
    pub fn ended(&self) {
        let mut st = self.lock();
        st.in_flight = (st.in_flight - 1).max(0);
    }

    /// The ask made for this lease was answered (or given up): others may ask again.
    pub fn asked(&self) {
        self.lock().asking = false;
    }

    /// Gives back `n` taken in `span` (a later scope refused the request).
    pub fn give_back(&self, span: Span, n: i64) {
        if let Some(mut st) = self.state_in(span) {
            st.used = (st.used - n).max(0);
        }
    }

    /// Counts `n` used outside the leases (Redis away): reported as debt with the next ask.
    pub fn count(&self, span: Span, n: i64) {
        let mut st = self.state(span);
        st.used = st.used.saturating_add(n);
    }

    /// Charges `n` when a request ends. What now exceeds the grants is marked as reported and returned
    /// with what was claimed before it, for the caller to report to Redis at once; nothing when this
    /// replica holds no grant in the window (it reports with its next ask).
    pub fn charge(&self, span: Span, n: i64) -> Option<(i64, i64, u64)> {
        let mut st = self.state(span);
        st.used = st.used.saturating_add(n);
        st.last = n.max(0);
        let over = st.used - st.granted;
        if over > 0 && st.granted > 0 {
            let before = st.granted;
            st.granted = st.used;
            return Some((over, before, st.window));
        }
        None
    }

    /// Redis answered an ask: `grant` more (none: the limit is reached at `limit`).
    pub fn granted(&self, span: Span, grant: i64, limit: i64) {
        if let Some(mut st) = self.state_in(span) {
            st.granted += grant;
            if grant == 0 && limit > 0 {
                st.refused_at = Some((limit, crate::units::now_ms()));
            }
        }
    }

    /// An ask marked as reported was never sent: its debt is reported with the next one.
    pub fn unreported(&self, span: Span, debt: i64) {
        if let Some(mut st) = self.state_in(span) {
            st.granted -= debt;
        }
    }

    /// This replica's use in the current window.
    #[cfg(test)]
    pub(super) fn used(&self) -> i64 {
        self.lock().used
    }
}
