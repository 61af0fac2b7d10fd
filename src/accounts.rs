//! Virtual keys, teams, internal users and end users, in memory: their records, spend ledgers and rate-limit
//! windows. The BudgetActor (`actors/budget.rs`) is the only writer of records (create, update, delete,
//! budget resets) and persists them; HTTP workers read records from the maps and admit or settle requests
//! with atomic counters, so a known key costs no database or actor round trip on the request path.
//!
//! Money is integer micro-dollars. Windows are fixed one-minute windows packed into one atomic word
//! (minute in the high half, count in the low half), so a check-and-take is a single compare-and-swap.

pub mod admin;
mod admission;
mod entries;
mod lease;
mod ledger;
mod managed;
pub mod quota;
mod records;
pub mod requests;
pub mod views;

pub use admission::*;
pub use entries::*;
pub use ledger::*;
pub use records::*;

use crate::error::ApiError;
use crate::secret::hash_key;
use crate::units::parse_duration;
use crate::units::usd;
use serde::Serialize;
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest key looked up: generated keys are 35 characters, custom ones rarely more than 100.
pub const MAX_KEY_CHARS: usize = 256;

/// Whether `key` could be a virtual key at all: `sk-` and printable ASCII, bounded. Anything else is
/// refused without a lookup.
pub fn plausible_key(key: &str) -> bool {
    key.len() <= MAX_KEY_CHARS
        && key.starts_with("sk-")
        && key.bytes().all(|b| b.is_ascii_graphic())
}

/// A new key: `sk-` and 32 random URL-safe characters.
pub fn new_key() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    let s: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    format!("sk-{s}")
}

/// `sk-...abcd`: enough to recognise a key, not enough to use it.
pub fn key_name(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("sk-...{tail}")
}

/// The stored id of a key given either the key itself (`sk-...`) or its hash.
pub fn token_of(key_or_hash: &str) -> String {
    if key_or_hash.len() == 64 && key_or_hash.chars().all(|c| c.is_ascii_hexdigit()) {
        key_or_hash.to_ascii_lowercase()
    } else {
        hash_key(key_or_hash)
    }
}

#[cfg(test)]
mod tests;
