//! The spend log: appended in batches (PostgreSQL: one JSON array per statement; SQLite: its own writer,
//! `sqlite_spend_log.rs`), read by filter and page, summed into reports, trimmed by retention.

use super::*;

impl Store {
    /// Appends rows in one transaction.
    ///
    /// PostgreSQL: one statement per [`SPEND_LOG_BATCH`] rows with a single parameter, the rows as a JSON
    /// array of arrays unpacked by `jsonb_array_elements`: the SQL text never changes and a row costs one JSON
    /// encode instead of fifteen binds.
    ///
    /// SQLite: a prepared single-row statement on the spend log's own connection and thread
    /// (`store/sqlite_spend_log.rs`). (SQLite's own JSON functions cost more per row than the binds do.)
    pub(super) async fn insert_spend_logs_raw(
        &self,
        logs: Arc<Vec<SpendEvent>>,
    ) -> Result<(), StoreError> {
        if let Some(writer) = &self.spend_log {
            return writer.write(logs).await;
        }
        let mut tx = self.pool.begin().await.map_err(err("cannot begin"))?;
        let fields: Vec<String> = (0..15)
            .map(|i| match i {
                8..=11 | 13 | 14 => format!("(r->>{i})::bigint"),
                _ => format!("r->>{i}"),
            })
            .collect();
        let sql = format!(
            "INSERT INTO llm_spend_logs ({SPEND_LOG_COLUMNS}) SELECT {} FROM jsonb_array_elements($1::jsonb) AS r ON CONFLICT (request_id) DO NOTHING",
            fields.join(", ")
        );
        for chunk in logs.chunks(SPEND_LOG_BATCH) {
            sqlx::query(&sql)
                .bind(spend_rows_json(chunk))
                .execute(&mut *tx)
                .await
                .map_err(err("cannot write the spend log"))?;
        }
        tx.commit()
            .await
            .map_err(err("cannot commit the spend log"))
    }

    fn where_clause(f: &SpendFilter) -> (String, Vec<Bind>) {
        let mut parts = Vec::new();
        let mut binds = Vec::new();
        let mut add = |col: &str, op: &str, b: Bind| {
            binds.push(b);
            parts.push(format!("{col} {op} ${}", binds.len()));
        };
        if let Some(k) = &f.api_key {
            add("api_key", "=", Bind::Text(k.clone()));
        }
        if let Some(t) = &f.team_id {
            add("team_id", "=", Bind::Text(t.clone()));
        }
        if let Some(u) = &f.user_id {
            add("user_id", "=", Bind::Text(u.clone()));
        }
        if let Some(m) = &f.model {
            add("model_group", "=", Bind::Text(m.clone()));
        }
        if let Some(s) = f.start_ms {
            add("start_time_ms", ">=", Bind::Int(s));
        }
        if let Some(e) = f.end_ms {
            add("start_time_ms", "<", Bind::Int(e));
        }
        let w = if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        };
        (w, binds)
    }

    /// Deletes the spend-log rows that started before `cutoff_ms`, [`RETENTION_BATCH`] rows per statement,
    /// each statement its own transaction, so that the spend-log writer never waits long for the write
    /// lock. Returns how many rows went.
    pub(super) async fn delete_spend_logs_before_raw(
        &self,
        cutoff_ms: i64,
    ) -> Result<u64, StoreError> {
        let sql = if self.kind == "postgres" {
            "DELETE FROM llm_spend_logs WHERE ctid IN (SELECT ctid FROM llm_spend_logs WHERE start_time_ms < $1 LIMIT $2)"
        } else {
            "DELETE FROM llm_spend_logs WHERE rowid IN (SELECT rowid FROM llm_spend_logs WHERE start_time_ms < $1 LIMIT $2)"
        };
        let mut deleted = 0;
        loop {
            let n = sqlx::query(sql)
                .bind(cutoff_ms)
                .bind(RETENTION_BATCH)
                .execute(&self.pool)
                .await
                .map_err(err("cannot delete old spend logs"))?
                .rows_affected();
            deleted += n;
            if n < RETENTION_BATCH as u64 {
                return Ok(deleted);
            }
        }
    }

    pub(super) async fn spend_logs_raw(
        &self,
        f: &SpendFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SpendLog>, i64), StoreError> {
        let (w, binds) = Self::where_clause(f);
        let n = binds.len();
        let count_sql = format!("SELECT COUNT(*) AS n FROM llm_spend_logs{w}");
        let mut q = sqlx::query(&count_sql);
        for b in &binds {
            q = b.bind(q);
        }
        let total: i64 = q
            .fetch_one(&self.pool)
            .await
            .map_err(err("cannot count spend logs"))?
            .try_get("n")
            .map_err(err("bad count"))?;
        let sql = format!(
            "SELECT request_id, api_key, key_alias, team_id, user_id, end_user, model_group, model_id, prompt_tokens, completion_tokens, total_tokens, spend_micros, status, start_time_ms, end_time_ms FROM llm_spend_logs{w} ORDER BY start_time_ms DESC, request_id LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = b.bind(q);
        }
        let rows = q
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await
            .map_err(err("cannot read spend logs"))?;
        let logs = rows
            .iter()
            .map(|r| -> Result<SpendLog, sqlx::Error> {
                Ok(SpendLog {
                    request_id: r.try_get("request_id")?,
                    api_key: r.try_get("api_key")?,
                    key_alias: r.try_get("key_alias")?,
                    team_id: r.try_get("team_id")?,
                    user: r.try_get("user_id")?,
                    end_user: r.try_get("end_user")?,
                    model_group: r.try_get("model_group")?,
                    model_id: r.try_get("model_id")?,
                    prompt_tokens: r.try_get("prompt_tokens")?,
                    completion_tokens: r.try_get("completion_tokens")?,
                    total_tokens: r.try_get("total_tokens")?,
                    spend: usd(r.try_get("spend_micros")?),
                    status: r.try_get("status")?,
                    start_time_ms: r.try_get("start_time_ms")?,
                    end_time_ms: r.try_get("end_time_ms")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(err("bad spend log row"))?;
        Ok((logs, total))
    }

    /// Totals grouped by one column of the spend log (`api_key`, `team_id`, `user_id`, `end_user`, `model_group`).
    pub(super) async fn spend_report_raw(
        &self,
        f: &SpendFilter,
        group_by: &'static str,
        per_day: bool,
    ) -> Result<Vec<ReportRow>, StoreError> {
        let (w, binds) = Self::where_clause(f);
        // Days since the epoch (UTC): integer division on both SQLite and PostgreSQL.
        let (day, by_day) = if per_day {
            ("CAST(start_time_ms / 86400000 AS BIGINT)", "d, ")
        } else {
            ("CAST(0 AS BIGINT)", "")
        };
        let sql = format!(
            "SELECT {group_by} AS g, {day} AS d, CAST(SUM(spend_micros) AS BIGINT) AS s, CAST(SUM(total_tokens) AS BIGINT) AS t, COUNT(*) AS n FROM llm_spend_logs{w} GROUP BY {by_day}{group_by} ORDER BY {by_day}s DESC"
        );
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = b.bind(q);
        }
        let rows = q
            .fetch_all(&self.pool)
            .await
            .map_err(err("cannot build the spend report"))?;
        rows.iter()
            .map(|r| -> Result<_, sqlx::Error> {
                Ok(ReportRow {
                    group: r.try_get::<String, _>("g")?,
                    day: per_day.then(|| r.try_get::<i64, _>("d")).transpose()?,
                    spend: usd(r.try_get::<i64, _>("s")?),
                    total_tokens: r.try_get::<i64, _>("t")?,
                    requests: r.try_get::<i64, _>("n")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(err("bad report row"))
    }
}

enum Bind {
    Text(String),
    Int(i64),
}

impl Bind {
    fn bind<'q>(
        &self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        match self {
            Bind::Text(s) => q.bind(s.clone()),
            Bind::Int(i) => q.bind(*i),
        }
    }
}

/// Rows per `DELETE` of spend-log retention.
pub(super) const RETENTION_BATCH: i64 = 5000;
