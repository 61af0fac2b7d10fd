//! Persistence with sqlx: an embedded SQLite file by default, PostgreSQL when `database_url` says so.
//! One schema works on both (BIGINT, DOUBLE PRECISION, TEXT only), driven through sqlx's `Any` driver.
//!
//! Entities (keys, teams, users, end users) are rows of `(id, data, spend_micros, budget_reset_at, ...)`:
//! `data` is the record as JSON; spend is a separate integer column (micro-dollars) that only ever moves by
//! `spend_micros + delta` or a reset, so replicas writing at once never lose each other's spend. The spend
//! log is append-only, written in batches, never read on the request path.

use crate::metrics::system::ServiceMetrics;
use crate::secret::Secret;
use crate::units::{now_ms, usd};
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod error;
mod rows;
mod spend_log;
mod sqlite_spend_log;
mod timed;
pub use error::StoreError;
use error::{err, Cause};
pub use rows::{
    decode, Change, KeyOwner, RecordRow, ReportRow, Row_, SpendEvent, SpendFilter, SpendLog, Table,
};
use rows::{spend_rows_json, SPEND_LOG_COLUMNS};
use sqlite_spend_log::SpendLogWriter;

/// The schema, by version: a database records the versions applied (`llm_schema`) and gets the later
/// ones at start, each version's statements then its number. Version 1 is the schema as it was before
/// versions were recorded (every statement `IF NOT EXISTS`, so a database written then takes it as is).
const SCHEMA: &[(i64, &[&str])] = &[(1, V1), (2, V2)];

const V1: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS llm_keys (id TEXT PRIMARY KEY, data TEXT NOT NULL, spend_micros BIGINT NOT NULL DEFAULT 0, budget_reset_at BIGINT, team_id TEXT, user_id TEXT, created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS llm_teams (id TEXT PRIMARY KEY, data TEXT NOT NULL, spend_micros BIGINT NOT NULL DEFAULT 0, budget_reset_at BIGINT, team_id TEXT, user_id TEXT, created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS llm_users (id TEXT PRIMARY KEY, data TEXT NOT NULL, spend_micros BIGINT NOT NULL DEFAULT 0, budget_reset_at BIGINT, team_id TEXT, user_id TEXT, created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS llm_end_users (id TEXT PRIMARY KEY, data TEXT NOT NULL, spend_micros BIGINT NOT NULL DEFAULT 0, budget_reset_at BIGINT, team_id TEXT, user_id TEXT, created_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS llm_spend_logs (request_id TEXT NOT NULL, api_key TEXT NOT NULL, key_alias TEXT NOT NULL, team_id TEXT NOT NULL, user_id TEXT NOT NULL, end_user TEXT NOT NULL, model_group TEXT NOT NULL, model_id TEXT NOT NULL, prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, total_tokens BIGINT NOT NULL, spend_micros BIGINT NOT NULL, status TEXT NOT NULL, start_time_ms BIGINT NOT NULL, end_time_ms BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS llm_spend_logs_time ON llm_spend_logs (start_time_ms)",
    // Spend batches already applied, by id: a batch retried after a failed (maybe committed) write is
    // applied once. Rows older than a day go.
    "CREATE TABLE IF NOT EXISTS llm_spend_batches (id TEXT PRIMARY KEY, at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS llm_spend_batches_at ON llm_spend_batches (at)",
];

/// Deployments made through the management API.
const V2: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS llm_models (id TEXT PRIMARY KEY, data TEXT NOT NULL, spend_micros BIGINT NOT NULL DEFAULT 0, budget_reset_at BIGINT, team_id TEXT, user_id TEXT, created_at BIGINT NOT NULL)",
];

/// Applies the schema versions the database has not recorded yet.
async fn migrate(pool: &AnyPool, postgres: bool) -> Result<(), StoreError> {
    // One transaction; on PostgreSQL under an advisory lock, so replicas starting together apply each
    // version once, one after the other (concurrent CREATE TABLE can fail there even with IF NOT EXISTS).
    let mut tx = pool.begin().await.map_err(err("cannot apply the schema"))?;
    if postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7243158401)")
            .execute(&mut *tx)
            .await
            .map_err(err("cannot lock the schema"))?;
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS llm_schema (version BIGINT NOT NULL, applied_at BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await
        .map_err(err("cannot apply the schema"))?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM llm_schema")
        .fetch_one(&mut *tx)
        .await
        .map_err(err("cannot read the schema version"))?;
    let current = current.unwrap_or(0);
    let newest = SCHEMA.last().map(|(v, _)| *v).unwrap_or(0);
    if current > newest {
        return Err(StoreError {
            what: format!(
                "the database has schema version {current}, newer than this build knows ({newest}); run a newer llm"
            ),
            source: Cause::Other("schema too new".into()),
        });
    }
    for (version, statements) in SCHEMA.iter().filter(|(v, _)| *v > current) {
        for statement in *statements {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(err(format!("cannot apply schema version {version}")))?;
        }
        sqlx::query("INSERT INTO llm_schema (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(err(format!("cannot record schema version {version}")))?;
        tracing::info!(version, "schema version applied");
    }
    tx.commit().await.map_err(err("cannot apply the schema"))?;
    Ok(())
}

/// PostgreSQL only: spend-log rows are unique by `request_id`, so a batch written twice is stored once.
/// (SQLite's writer finishes every batch it takes and is never timed out, so it needs no index.)
const POSTGRES_MIGRATIONS: &[&str] = &[
    "CREATE UNIQUE INDEX IF NOT EXISTS llm_spend_logs_request_id ON llm_spend_logs (request_id)",
];

/// How long an applied spend batch id is remembered.
const SPEND_BATCH_MEMORY_MS: i64 = 86_400_000;

/// Largest number of spend-log rows in one INSERT.
const SPEND_LOG_BATCH: usize = 1000;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// SQLite only: the spend log's own connection and thread (the store's hottest write; see
    /// `store/sqlite_spend_log.rs`).
    spend_log: Option<SpendLogWriter>,
    pub kind: &'static str,
    /// `llm_postgres_*` / `llm_sqlite_*` system metrics, once the metrics actor has registered them.
    metrics: Arc<std::sync::OnceLock<Arc<ServiceMetrics>>>,
    /// Every call's limit (`general_settings.database_timeout`): a hung database fails calls, never
    /// hangs them.
    call_timeout: Duration,
    /// Where record writes are announced (set when Redis shares state between replicas).
    changes: Arc<std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Change>>>,
    /// Unix ms until which calls fail at once: set when a call finds the database unreachable or slow, so
    /// that while it is down every caller (admin calls, key lookups, flushes) hears it immediately instead
    /// of waiting out its own timeout. The first call after it passes goes through as the probe.
    down_until: Arc<std::sync::atomic::AtomicI64>,
}

/// How long calls fail fast after one found the database unreachable.
const DOWN_FOR: Duration = Duration::from_secs(1);

/// How long a call waits for a free connection (within its own call timeout).
const POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Connects (creating the SQLite file when needed) and applies the schema.
    /// `database_url`: `postgres://…` / `postgresql://…`, `sqlite://path`, or none for `<config dir>/llm.db`.
    pub async fn connect(
        database_url: Option<&Secret>,
        config_dir: &Path,
    ) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, kind, max) = match database_url.map(Secret::expose) {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => (u.to_owned(), "postgres", 10),
            Some(u) if u.starts_with("sqlite:") => (with_create(u), "sqlite", 4),
            Some(_) => {
                return Err(StoreError {
                    what: "general_settings.database_url must start with postgresql://, postgres:// or sqlite:".into(),
                    source: Cause::Sqlx(sqlx::Error::Configuration(
                        "unsupported database URL scheme".into(),
                    )),
                })
            }
            None => {
                let path = config_dir.join("llm.db");
                (with_create(&format!("sqlite://{}", path.display())), "sqlite", 4)
            }
        };
        let pool = AnyPoolOptions::new()
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if kind == "sqlite" {
                        // 16 KiB pages (a new database only; an existing one keeps its size): a spend-log
                        // batch goes to the WAL and back to the file in a quarter of the writes.
                        sqlx::query("PRAGMA page_size=16384")
                            .execute(&mut *conn)
                            .await?;
                        // WAL: readers do not block the writer; NORMAL: no fsync per commit (still durable
                        // across a process crash, which is what write-behind spend needs).
                        sqlx::query("PRAGMA journal_mode=WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous=NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout=5000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .max_connections(max)
            .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
            .connect(&url)
            .await
            .map_err(err(format!("cannot open the {kind} database")))?;
        let extra: &[&str] = if kind == "postgres" {
            POSTGRES_MIGRATIONS
        } else {
            &[]
        };
        migrate(&pool, kind == "postgres").await?;
        for m in extra {
            sqlx::query(m)
                .execute(&pool)
                .await
                .map_err(err("cannot apply the schema"))?;
        }
        let spend_log = if kind == "sqlite" {
            use std::str::FromStr;
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
                .map_err(err("cannot open the sqlite database"))?;
            Some(SpendLogWriter::open(opts.get_filename())?)
        } else {
            None
        };
        Ok(Store {
            pool,
            spend_log,
            kind,
            metrics: Default::default(),
            call_timeout: Duration::from_secs_f64(crate::config::DEFAULT_DATABASE_TIMEOUT_SECS),
            down_until: Default::default(),
            changes: Default::default(),
        })
    }

    /// From now on, every record written or deleted is announced on `to`.
    pub fn announce_changes(&self, to: tokio::sync::mpsc::UnboundedSender<Change>) {
        let _ = self.changes.set(to);
    }

    fn announce(&self, table: Table, ids: &[String]) {
        if let Some(tx) = self.changes.get() {
            for id in ids {
                let _ = tx.send(Change {
                    table,
                    id: id.clone(),
                });
            }
        }
    }

    /// Sets every call's time limit (before the store is shared).
    pub fn with_call_timeout(mut self, limit: Duration) -> Store {
        self.call_timeout = limit;
        self
    }

    async fn load_raw(&self, table: Table) -> Result<Vec<Row_>, StoreError> {
        let sql = format!(
            "SELECT id, data, spend_micros, budget_reset_at FROM {} ORDER BY created_at, id",
            table.name()
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(err(format!("cannot read {}", table.name())))?;
        rows.iter()
            .map(|r| row(r).map_err(err("bad row")))
            .collect()
    }

    async fn get_raw(&self, table: Table, id: &str) -> Result<Option<Row_>, StoreError> {
        let sql = format!(
            "SELECT id, data, spend_micros, budget_reset_at FROM {} WHERE id = $1",
            table.name()
        );
        let r = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot read"))?;
        r.map(|r| row(&r).map_err(err("bad row"))).transpose()
    }

    async fn upsert_raw<T: Serialize>(&self, row: RecordRow<'_, T>) -> Result<(), StoreError> {
        let RecordRow {
            table,
            id,
            data,
            budget_reset_at,
            team_id,
            user_id,
        } = row;
        let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
        let sql = format!(
            "INSERT INTO {} (id, data, spend_micros, budget_reset_at, team_id, user_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET data = excluded.data, budget_reset_at = excluded.budget_reset_at, team_id = excluded.team_id, user_id = excluded.user_id",
            table.name()
        );
        sqlx::query(&sql)
            .bind(id)
            .bind(data)
            .bind(0i64)
            .bind(budget_reset_at)
            .bind(team_id.map(str::to_owned))
            .bind(user_id.map(str::to_owned))
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(err(format!("cannot write {}", table.name())))?;
        Ok(())
    }

    /// Stores a new record only if no record has `id`: `false` when one has (another replica may have made
    /// it a moment ago).
    pub async fn insert_new(
        &self,
        table: Table,
        id: &str,
        data: &impl Serialize,
    ) -> Result<bool, StoreError> {
        let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
        let sql = format!(
            "INSERT INTO {} (id, data, spend_micros, created_at) VALUES ($1, $2, 0, $3) ON CONFLICT (id) DO NOTHING",
            table.name()
        );
        let call = async {
            sqlx::query(&sql)
                .bind(id)
                .bind(data)
                .bind(now_ms())
                .execute(&self.pool)
                .await
                .map(|r| r.rows_affected() == 1)
                .map_err(err(format!("cannot write {}", table.name())))
        };
        let made = self.timed("insert", call).await?;
        if made {
            self.announce(table, &[id.to_owned()]);
        }
        Ok(made)
    }

    /// Replaces a record's data only if it still is `old` (compare and swap): `false` when another
    /// writer changed or deleted it since it was read.
    pub async fn replace_data(
        &self,
        table: Table,
        id: &str,
        old: &str,
        data: &impl Serialize,
    ) -> Result<bool, StoreError> {
        let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
        let sql = format!(
            "UPDATE {} SET data = $1 WHERE id = $2 AND data = $3",
            table.name()
        );
        let call = async {
            sqlx::query(&sql)
                .bind(data)
                .bind(id)
                .bind(old.to_owned())
                .execute(&self.pool)
                .await
                .map(|r| r.rows_affected() == 1)
                .map_err(err(format!("cannot write {}", table.name())))
        };
        let done = self.timed("update", call).await?;
        if done {
            self.announce(table, &[id.to_owned()]);
        }
        Ok(done)
    }

    /// The ids of the keys that belong to `owner` (a team or a user).
    async fn keys_of_raw(&self, owner: KeyOwner, id: &str) -> Result<Vec<String>, StoreError> {
        let column = match owner {
            KeyOwner::Team => "team_id",
            KeyOwner::User => "user_id",
        };
        let sql = format!("SELECT id FROM llm_keys WHERE {column} = $1 ORDER BY id");
        let rows = sqlx::query(&sql)
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(err("cannot read llm_keys"))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(err("bad row")))
            .collect()
    }

    async fn delete_raw(&self, table: Table, ids: &[String]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("cannot begin"))?;
        let sql = format!("DELETE FROM {} WHERE id = $1", table.name());
        let mut n = 0;
        for id in ids {
            n += sqlx::query(&sql)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(err("cannot delete"))?
                .rows_affected();
        }
        tx.commit().await.map_err(err("cannot commit"))?;
        Ok(n)
    }

    /// Adds spend deltas (micro-dollars) in one transaction, once per `batch` id: a batch whose earlier
    /// write failed after it may have committed is recognised and not added again.
    async fn add_spend_raw(
        &self,
        batch: &str,
        deltas: &[(Table, String, i64)],
    ) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(err("cannot begin"))?;
        let now = now_ms();
        let fresh = sqlx::query(
            "INSERT INTO llm_spend_batches (id, at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(batch)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(err("cannot record the spend batch"))?
        .rows_affected();
        if fresh == 0 {
            tracing::warn!(
                batch,
                "spend batch already applied (an earlier write committed); not added again"
            );
            return tx.rollback().await.map_err(err("cannot roll back"));
        }
        sqlx::query("DELETE FROM llm_spend_batches WHERE at < $1")
            .bind(now - SPEND_BATCH_MEMORY_MS)
            .execute(&mut *tx)
            .await
            .map_err(err("cannot forget old spend batches"))?;
        for (table, id, d) in deltas {
            let sql = format!(
                "UPDATE {} SET spend_micros = spend_micros + $1 WHERE id = $2",
                table.name()
            );
            sqlx::query(&sql)
                .bind(*d)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(err("cannot add spend"))?;
        }
        tx.commit().await.map_err(err("cannot commit spend"))
    }

    /// Starts a new budget period: spend to zero, next reset time stored.
    async fn reset_spend_raw(
        &self,
        table: Table,
        id: &str,
        next_reset: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError> {
        // Only a period that is still due at `now` (the caller's clock): another replica may have started the new one already, and its
        // spend in it must not be zeroed.
        let sql = format!(
            "UPDATE {} SET spend_micros = 0, budget_reset_at = $1 WHERE id = $2 AND (budget_reset_at IS NULL OR budget_reset_at <= $3)",
            table.name()
        );
        let r = sqlx::query(&sql)
            .bind(next_reset)
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(err("cannot reset spend"))?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn close(&self) {
        if let Some(w) = &self.spend_log {
            w.close().await;
        }
        self.pool.close().await;
    }
}

fn with_create(url: &str) -> String {
    if url.contains('?') {
        url.to_owned()
    } else {
        format!("{url}?mode=rwc")
    }
}

fn row(r: &AnyRow) -> Result<Row_, sqlx::Error> {
    Ok(Row_ {
        id: r.try_get("id")?,
        data: r.try_get("data")?,
        spend_micros: r.try_get("spend_micros")?,
        budget_reset_at: r.try_get("budget_reset_at")?,
    })
}
