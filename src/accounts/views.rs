//! How the management API and the metrics see an entity: its info JSON, its budget gauges, its stored row.

use super::*;
use crate::labels::{BudgetGauge, BudgetScope};
use crate::store::{RecordRow, Table};

/// RFC 3339 UTC time of unix milliseconds.
pub fn iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

pub fn key_gauge(e: &KeyEntry) -> BudgetGauge {
    BudgetGauge {
        scope: BudgetScope::Key {
            hashed_api_key: e.rec.token.clone(),
            api_key_alias: e.rec.key_alias.clone().unwrap_or_default(),
        },
        max_budget: e.rec.max_budget,
        spend: usd(e.ledger.spend_micros()),
        reset_at_ms: e.ledger.reset_at(),
    }
}

pub fn team_gauge(e: &TeamEntry) -> BudgetGauge {
    BudgetGauge {
        scope: BudgetScope::Team {
            team_id: e.rec.team_id.clone(),
            team_alias: e.rec.team_alias.clone().unwrap_or_default(),
        },
        max_budget: e.rec.max_budget,
        spend: usd(e.ledger.spend_micros()),
        reset_at_ms: e.ledger.reset_at(),
    }
}

pub fn user_gauge(e: &UserEntry) -> BudgetGauge {
    BudgetGauge {
        scope: BudgetScope::User {
            user_id: e.rec.user_id.clone(),
        },
        max_budget: e.rec.max_budget,
        spend: usd(e.ledger.spend_micros()),
        reset_at_ms: e.ledger.reset_at(),
    }
}

/// An end user's (customer's) budget gauges: set while it has a max budget, removed otherwise.
pub fn end_user_gauge(
    e: &EndUserEntry,
    gauges: &mut Vec<BudgetGauge>,
    removed: &mut Vec<BudgetScope>,
) {
    let scope = BudgetScope::EndUser {
        end_user_id: e.rec.user_id.clone(),
    };
    if e.rec.max_budget.is_some() {
        gauges.push(BudgetGauge {
            scope,
            max_budget: e.rec.max_budget,
            spend: usd(e.ledger.spend_micros()),
            reset_at_ms: e.ledger.reset_at(),
        });
    } else {
        removed.push(scope);
    }
}

/// The stored row of each entity: the columns besides the record follow from it.
pub(super) fn key_row<'a>(
    token: &'a str,
    rec: &'a KeyRecord,
    reset: Option<i64>,
) -> RecordRow<'a, KeyRecord> {
    RecordRow {
        table: Table::Keys,
        id: token,
        data: rec,
        budget_reset_at: reset,
        team_id: rec.team_id.as_deref(),
        user_id: rec.user_id.as_deref(),
    }
}

pub(super) fn team_row<'a>(
    id: &'a str,
    rec: &'a TeamRecord,
    reset: Option<i64>,
) -> RecordRow<'a, TeamRecord> {
    RecordRow {
        table: Table::Teams,
        id,
        data: rec,
        budget_reset_at: reset,
        team_id: Some(id),
        user_id: None,
    }
}

pub(super) fn user_row<'a>(
    id: &'a str,
    rec: &'a UserRecord,
    reset: Option<i64>,
) -> RecordRow<'a, UserRecord> {
    RecordRow {
        table: Table::Users,
        id,
        data: rec,
        budget_reset_at: reset,
        team_id: None,
        user_id: Some(id),
    }
}

pub(super) fn end_user_row<'a>(
    id: &'a str,
    rec: &'a EndUserRecord,
    reset: Option<i64>,
) -> RecordRow<'a, EndUserRecord> {
    RecordRow {
        table: Table::EndUsers,
        id,
        data: rec,
        budget_reset_at: reset,
        team_id: None,
        user_id: None,
    }
}

/// A record as the info endpoints show it: its fields, plus spend, reset and creation times.
fn info_json(rec: &impl Serialize, ledger: &Ledger, created_at: i64) -> Json {
    let mut v = serde_json::to_value(rec).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("spend".into(), usd(ledger.spend_micros()).into());
        let reset = ledger
            .reset_at()
            .map(|t| Json::String(iso(t)))
            .unwrap_or(Json::Null);
        o.insert("budget_reset_at".into(), reset);
        o.insert("created_at".into(), Json::String(iso(created_at)));
    }
    v
}

pub fn key_info(e: &KeyEntry) -> Json {
    let mut v = info_json(&e.rec, &e.ledger, e.rec.created_at);
    if let Some(o) = v.as_object_mut() {
        let expires = e
            .rec
            .expires
            .map(|t| Json::String(iso(t)))
            .unwrap_or(Json::Null);
        o.insert("expires".into(), expires);
    }
    v
}

pub fn team_info(e: &TeamEntry) -> Json {
    info_json(&e.rec, &e.ledger, e.rec.created_at)
}

pub fn user_info(e: &UserEntry) -> Json {
    info_json(&e.rec, &e.ledger, e.rec.created_at)
}

pub fn end_user_info(e: &EndUserEntry) -> Json {
    info_json(&e.rec, &e.ledger, e.rec.created_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_795_758_735_123), "2026-11-27T05:52:15.123Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
