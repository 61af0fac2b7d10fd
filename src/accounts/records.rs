//! What is stored of each entity: keys, teams, internal users, end users (the records the management
//! API writes and the store keeps as JSON).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

// ---- records (what is stored) -----------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    /// sha256 hex of the key: its id, and the `hashed_api_key` label.
    pub token: String,
    /// The key shortened for display (`sk-...abcd`).
    pub key_name: String,
    pub key_alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u64>,
    #[serde(default)]
    pub model_rpm_limit: BTreeMap<String, u64>,
    #[serde(default)]
    pub model_tpm_limit: BTreeMap<String, u64>,
    /// Unix milliseconds after which the key is refused.
    pub expires: Option<i64>,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub metadata: Map<String, Json>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    #[serde(default = "default_role")]
    pub role: String,
}

pub(super) fn default_role() -> String {
    "user".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TeamRecord {
    pub team_id: String,
    pub team_alias: Option<String>,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub members_with_roles: Vec<Member>,
    #[serde(default)]
    pub metadata: Map<String, Json>,
    #[serde(default)]
    pub blocked: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UserRecord {
    pub user_id: String,
    pub user_email: Option<String>,
    pub user_alias: Option<String>,
    #[serde(default = "default_user_role")]
    pub user_role: String,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    #[serde(default)]
    pub rpm_limit: Option<u64>,
    #[serde(default)]
    pub tpm_limit: Option<u64>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    #[serde(default)]
    pub metadata: Map<String, Json>,
    pub created_at: i64,
}

pub(super) fn default_user_role() -> String {
    "internal_user".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EndUserRecord {
    pub user_id: String,
    pub alias: Option<String>,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    #[serde(default)]
    pub blocked: bool,
    pub created_at: i64,
}
