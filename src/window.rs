//! The rate window: a fixed one-minute request or token count in one atomic word, as every rpm/tpm limit
//! (keys, teams, users, deployments) counts. Nothing here imports anything from the crate.

use std::sync::atomic::{AtomicU64, Ordering};

/// The minute number of `now_ms` (milliseconds since the epoch).
pub fn current_minute(now_ms: i64) -> u64 {
    (now_ms.max(0) / 60_000) as u64
}

/// Seconds until the next minute starts (at least 1): what `retry-after` says of a full window.
pub fn seconds_to_next_minute(now_ms: i64) -> u64 {
    let into = now_ms.rem_euclid(60_000);
    ((60_000 - into) as u64).div_ceil(1000).max(1)
}

/// A fixed one-minute window: minute number in the high 32 bits, count in the low 32 bits.
#[derive(Debug, Default)]
pub struct Window(AtomicU64);

const COUNT_MASK: u64 = 0xFFFF_FFFF;

impl Window {
    fn unpack(v: u64, minute: u64) -> u64 {
        if v >> 32 == minute {
            v & COUNT_MASK
        } else {
            0
        }
    }

    /// Count in the current minute.
    pub fn current(&self, minute: u64) -> u64 {
        Self::unpack(self.0.load(Ordering::Acquire), minute)
    }

    /// Takes `n` if the count stays within `limit`; returns whether it did.
    pub fn try_take(&self, minute: u64, n: u64, limit: u64) -> bool {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            // Never back to an older minute: a caller that read the clock before another moved the window on
            // counts in the newer window.
            let minute = minute.max(cur >> 32);
            let count = Self::unpack(cur, minute);
            if count + n > limit {
                return false;
            }
            let next = (minute << 32) | ((count + n) & COUNT_MASK);
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(v) => cur = v,
            }
        }
    }

    /// Adds `n` unconditionally (tokens, known only after the call); returns the new count.
    pub fn add(&self, minute: u64, n: u64) -> u64 {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let minute = minute.max(cur >> 32);
            let count = Self::unpack(cur, minute).saturating_add(n).min(COUNT_MASK);
            let next = (minute << 32) | count;
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return count,
                Err(v) => cur = v,
            }
        }
    }

    /// Sets the count of `minute` (a newer minute only ever replaces an older one).
    pub fn set(&self, minute: u64, n: u64) {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            if cur >> 32 > minute {
                return;
            }
            let next = (minute << 32) | n.min(COUNT_MASK);
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(v) => cur = v,
            }
        }
    }

    /// Forgets the count.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Release);
    }

    /// Gives back `n` taken in `minute` (a request refused by a later check).
    pub fn give_back(&self, minute: u64, n: u64) {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            if cur >> 32 != minute {
                return;
            }
            let next = (minute << 32) | (cur & COUNT_MASK).saturating_sub(n);
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(v) => cur = v,
            }
        }
    }
}
