//! What the store reads and writes: the entity tables and their rows, the spend log's lines and events,
//! and the row encodings of the spend log (column order, ids, the JSON batch PostgreSQL unpacks).

use crate::labels::{DeploymentLabels, KeyLabels};
use crate::providers::wire::Usage;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;

/// The tables holding one entity kind each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Keys,
    Teams,
    Users,
    EndUsers,
    /// Deployments created through the management API (`store_model_in_db`); `data` is the entry as
    /// `model_list` would hold it.
    Models,
}

impl Table {
    /// The account tables (the BudgetActor's).
    pub const ALL: [Table; 4] = [Table::Keys, Table::Teams, Table::Users, Table::EndUsers];

    pub fn name(self) -> &'static str {
        match self {
            Table::Keys => "llm_keys",
            Table::Teams => "llm_teams",
            Table::Users => "llm_users",
            Table::EndUsers => "llm_end_users",
            Table::Models => "llm_models",
        }
    }

    /// The table named `name` (as [`Table::name`] spells it).
    pub fn named(name: &str) -> Option<Table> {
        Table::ALL
            .into_iter()
            .chain([Table::Models])
            .find(|t| t.name() == name)
    }
}

/// One entity record to write: the record itself (stored as JSON) and the columns the store reads without
/// decoding it.
pub struct RecordRow<'a, T: Serialize> {
    pub table: Table,
    pub id: &'a str,
    pub data: &'a T,
    /// Unix ms when the budget period ends; `None` without one.
    pub budget_reset_at: Option<i64>,
    /// The team and user a key belongs to (a team's and a user's own ids for their rows).
    pub team_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
}

/// A record this replica wrote or deleted, announced to the other replicas (through Redis) so that they
/// read it again at once instead of at their next read-back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub table: Table,
    pub id: String,
}

/// One stored entity: its record (JSON), spend and reset time.
#[derive(Debug, Clone)]
pub struct Row_ {
    pub id: String,
    pub data: String,
    pub spend_micros: i64,
    pub budget_reset_at: Option<i64>,
}

/// One line of the append-only spend log.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct SpendLog {
    pub request_id: String,
    pub api_key: String,
    pub key_alias: String,
    pub team_id: String,
    pub user: String,
    pub end_user: String,
    pub model_group: String,
    pub model_id: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// USD, exact: the log stores micro-dollars.
    pub spend: f64,
    pub status: String,
    pub start_time_ms: i64,
    pub end_time_ms: i64,
}

/// A finished request as the spend log needs it, built on the request path without copying strings; the
/// row is written from it directly.
#[derive(Debug, Clone)]
pub struct SpendEvent {
    /// The row's `request_id`, drawn on the request path: a batch written again after a failure whose
    /// commit may have happened anyway is recognised row by row (PostgreSQL: `ON CONFLICT DO NOTHING`).
    pub id: u128,
    pub key: Arc<KeyLabels>,
    pub end_user: Option<String>,
    pub model_group: Arc<str>,
    pub deployment: Option<Arc<DeploymentLabels>>,
    pub usage: Usage,
    pub spend_micros: i64,
    pub ok: bool,
    pub start_ms: i64,
    pub end_ms: i64,
}

#[derive(Debug, Default, Clone)]
pub struct SpendFilter {
    pub api_key: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    /// The model group the request asked for.
    pub model: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

/// One line of the spend report: a group's spend, tokens and requests (on one day, days since the epoch
/// in UTC, when asked per day).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub group: String,
    pub day: Option<i64>,
    pub spend: f64,
    pub total_tokens: i64,
    pub requests: i64,
}

pub fn decode<T: DeserializeOwned>(row: &Row_) -> Option<T> {
    serde_json::from_str(&row.data).ok()
}

/// Who a key can belong to, for [`Store::keys_of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOwner {
    Team,
    User,
}

pub(super) const SPEND_LOG_COLUMNS: &str = "request_id, api_key, key_alias, team_id, user_id, end_user, model_group, model_id, prompt_tokens, completion_tokens, total_tokens, spend_micros, status, start_time_ms, end_time_ms";

/// A spend-log row's values in the column order of [`SPEND_LOG_COLUMNS`].
#[allow(clippy::type_complexity)]
pub(super) struct SpendRow<'a>(
    pub(super) &'a str,
    pub(super) &'a str,
    pub(super) &'a str,
    pub(super) &'a str,
    pub(super) &'a str,
    pub(super) &'a str,
    pub(super) &'a str,
    pub(super) &'a str,
    pub(super) i64,
    pub(super) i64,
    pub(super) i64,
    pub(super) i64,
    pub(super) &'a str,
    pub(super) i64,
    pub(super) i64,
);

impl<'a> SpendRow<'a> {
    pub(super) fn of(l: &'a SpendEvent, id: &'a str) -> Self {
        SpendRow(
            id,
            l.key.hashed_api_key.as_str(),
            l.key.api_key_alias.as_str(),
            l.key.team.as_str(),
            l.key.user.as_str(),
            l.end_user.as_deref().unwrap_or(""),
            &l.model_group,
            l.deployment
                .as_ref()
                .map(|d| d.model_id.as_str())
                .unwrap_or(""),
            l.usage.prompt_tokens as i64,
            l.usage.completion_tokens as i64,
            l.usage.total_tokens as i64,
            l.spend_micros,
            if l.ok { "success" } else { "failure" },
            l.start_ms,
            l.end_ms,
        )
    }
}

/// A row's 128-bit id in hex.
pub(super) fn row_id(id: u128) -> String {
    let mut buf = [0u8; 32];
    row_id_into(id, &mut buf).to_owned()
}

/// [`row_id`] written into `buf`.
pub(super) fn row_id_into(id: u128, buf: &mut [u8; 32]) -> &str {
    let _ = hex::encode_to_slice(id.to_be_bytes(), buf);
    // Hex digits are ASCII.
    std::str::from_utf8(buf).unwrap_or_default()
}

/// Spend-log rows as one JSON array of 15-element arrays, in the order of [`SPEND_LOG_COLUMNS`].
pub(super) fn spend_rows_json(rows: &[SpendEvent]) -> String {
    let mut out = Vec::with_capacity(rows.len() * 320 + 2);
    out.push(b'[');
    for (i, l) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let id = row_id(l.id);
        let f = SpendRow::of(l, &id);
        let row = (
            f.0, f.1, f.2, f.3, f.4, f.5, f.6, f.7, f.8, f.9, f.10, f.11, f.12, f.13, f.14,
        );
        // Serializing strings and integers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &row);
    }
    out.push(b']');
    String::from_utf8(out).unwrap_or_default()
}
