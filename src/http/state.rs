//! What every handler can reach: the validated config, the actors' handles, the key labels of requests
//! made without a virtual key or with the master key.

use crate::actors::Handles;
use crate::config::Config;
use crate::labels::KeyLabels;
use std::sync::Arc;

/// Store lookups of unknown keys running at once (the rest wait): a flood of random keys then holds at most
/// this many database connections, and spend flushes and admin calls keep theirs.
pub const KEY_LOOKUP_CONCURRENCY: usize = 2;

/// `api_key_alias` of requests made with the master key (their `hashed_api_key` is empty).
pub const MASTER_KEY_ALIAS: &str = "master_key";

/// What every handler can reach: the validated config and the actors.
pub struct AppState {
    pub config: Arc<Config>,
    pub actors: Handles,
    /// Key labels of a request made without a virtual key (all empty), shared.
    pub anonymous: Arc<KeyLabels>,
    /// Key labels of requests made with the master key.
    pub master_labels: Arc<KeyLabels>,
    /// Slots for store lookups of keys not in memory (see `KEY_LOOKUP_CONCURRENCY`).
    pub key_lookups: tokio::sync::Semaphore,
}

impl AppState {
    pub fn new(config: Arc<Config>, actors: Handles) -> AppState {
        AppState {
            config,
            actors,
            anonymous: Arc::new(KeyLabels::default()),
            // Not the master key's hash (LiteLLM labels it so): a hash of the one key that opens everything
            // is an offline guessing target for whoever reads the metrics. No label value, a fixed alias.
            master_labels: Arc::new(KeyLabels {
                api_key_alias: MASTER_KEY_ALIAS.to_owned(),
                ..Default::default()
            }),
            key_lookups: tokio::sync::Semaphore::new(KEY_LOOKUP_CONCURRENCY),
        }
    }
}
