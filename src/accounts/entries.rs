//! Entities in memory: each record with its counters, the maps the request path reads without a lock,
//! and what this replica knows of Redis and the other replicas.

use super::ledger::*;
use super::records::*;
use crate::labels::KeyLabels;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

// ---- entries (records with their counters) ------------------------------------------------------------

pub struct KeyEntry {
    pub rec: KeyRecord,
    pub ledger: Arc<Ledger>,
    pub limits: Arc<Limits>,
    /// Windows per model group named in `model_rpm_limit` / `model_tpm_limit`.
    pub model_limits: HashMap<String, Arc<Limits>>,
    pub labels: Arc<KeyLabels>,
}

pub struct TeamEntry {
    pub rec: TeamRecord,
    pub ledger: Arc<Ledger>,
    pub limits: Arc<Limits>,
}

pub struct UserEntry {
    pub rec: UserRecord,
    pub ledger: Arc<Ledger>,
    pub limits: Arc<Limits>,
}

pub struct EndUserEntry {
    pub rec: EndUserRecord,
    pub ledger: Arc<Ledger>,
}

/// Everything in memory. Shared (`Arc`) by the BudgetActor (writer) and the HTTP workers (readers).
#[derive(Default)]
pub struct Accounts {
    pub keys: DashMap<String, Arc<KeyEntry>>,
    pub teams: DashMap<String, Arc<TeamEntry>>,
    pub users: DashMap<String, Arc<UserEntry>>,
    pub end_users: DashMap<String, Arc<EndUserEntry>>,
    /// Keys looked up in the store and not found, with when: not asked again for [`NEGATIVE_TTL`].
    pub missing_keys: DashMap<String, std::time::Instant>,
    /// Spend-log rows the BudgetActor holds that the store has not taken yet (it publishes the count; the
    /// request path refuses new requests while it is at `general_settings.max_unwritten_spend_logs`).
    pub unwritten_logs: std::sync::atomic::AtomicUsize,
    /// What this replica knows of Redis (written by the SharedStateActor).
    pub redis: RedisView,
    /// This replica's leases of the limits shared through Redis.
    pub quota: Arc<super::quota::Quota>,
}

/// Redis as the request path sees it: when it last answered, and how many replicas were alive then.
#[derive(Debug, Default)]
pub struct RedisView {
    /// Unix ms of the last successful Redis exchange; 0 before the first (or without Redis).
    pub last_ok_ms: AtomicI64,
    /// Replicas that announced themselves within [`REPLICA_ALIVE_MS`](super::quota::REPLICA_ALIVE_MS) at the last exchange (at least 1).
    pub replicas: AtomicU64,
}

/// Redis counts as unreachable when it has not answered for this long (its syncs run every 200 ms).
pub const REDIS_SILENCE_MS: i64 = 2_000;

impl RedisView {
    /// Whether Redis answered within [`REDIS_SILENCE_MS`] of `now_ms`, or has never answered (the first
    /// connection is still being made: the windows start empty either way).
    pub fn reachable(&self, now_ms: i64) -> bool {
        let last = self.last_ok_ms.load(Ordering::Acquire);
        last == 0 || now_ms - last < REDIS_SILENCE_MS
    }
}

/// How long an unknown key is remembered as unknown.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

impl Accounts {
    /// Builds a key entry, keeping the counters of `previous` (the same key before an update).
    pub fn key_entry(
        &self,
        rec: KeyRecord,
        previous: Option<&KeyEntry>,
        spend: i64,
        reset_at: Option<i64>,
    ) -> KeyEntry {
        let ledger = previous
            .map(|p| p.ledger.clone())
            .unwrap_or_else(|| Arc::new(Ledger::new(spend, reset_at)));
        let limits = previous.map(|p| p.limits.clone()).unwrap_or_default();
        let model_limits = rec
            .model_rpm_limit
            .keys()
            .chain(rec.model_tpm_limit.keys())
            .map(|m| {
                let l = previous
                    .and_then(|p| p.model_limits.get(m).cloned())
                    .unwrap_or_default();
                (m.clone(), l)
            })
            .collect();
        KeyEntry {
            labels: Arc::new(self.labels_for(&rec)),
            rec,
            ledger,
            limits,
            model_limits,
        }
    }

    pub fn labels_for(&self, rec: &KeyRecord) -> KeyLabels {
        let team = rec
            .team_id
            .as_ref()
            .and_then(|t| self.teams.get(t).map(|e| e.clone()));
        KeyLabels {
            hashed_api_key: rec.token.clone(),
            api_key_alias: rec.key_alias.clone().unwrap_or_default(),
            team: rec.team_id.clone().unwrap_or_default(),
            team_alias: team
                .and_then(|t| t.rec.team_alias.clone())
                .unwrap_or_default(),
            user: rec.user_id.clone().unwrap_or_default(),
        }
    }
}
