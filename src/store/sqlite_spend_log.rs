//! The SQLite spend log's writer: one connection on its own thread (`llm-spend-log`), prepared `INSERT`s
//! of [`CHUNK`] rows (and of one row for the rest) bound straight from the events, inside one
//! `BEGIN IMMEDIATE` transaction per batch.
//!
//! The spend log is the store's hottest write (a row per request) and, on the embedded database, runs on
//! the gateway's own cores. Through sqlx every value of a row was encoded into an argument list, copied
//! into an owned form to cross to sqlx's worker thread and bound there; here the row's fields are bound
//! straight from the [`SpendEvent`]s into a statement compiled once: the log's CPU per request went from
//! about 6.5 us (budget actor and sqlx worker) to about 3.8 us (bench/README.md). Reads of the log still go
//! through sqlx, on the same file (WAL: readers never block this writer, nor it them).

use super::error::StoreError;
use super::rows::{SpendEvent, SpendRow, SPEND_LOG_COLUMNS};
use rusqlite::TransactionBehavior;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

enum Job {
    Write(Arc<Vec<SpendEvent>>, oneshot::Sender<rusqlite::Result<()>>),
    Close(oneshot::Sender<()>),
}

/// Handle to the writer thread; clones share it. Stops on [`SpendLogWriter::close`] or when the last
/// handle is dropped.
#[derive(Clone)]
pub struct SpendLogWriter {
    jobs: Arc<Mutex<Option<mpsc::Sender<Job>>>>,
}

impl SpendLogWriter {
    /// Opens `path` (which the sqlx pool has already created and migrated) and starts the thread.
    pub fn open(path: &Path) -> Result<SpendLogWriter, StoreError> {
        let conn = rusqlite::Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        // Compiled now so that a schema problem shows at startup, not at the first flush.
        conn.prepare_cached(&insert_sql(1)).map_err(open_err)?;
        conn.prepare_cached(&insert_sql(CHUNK)).map_err(open_err)?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("llm-spend-log".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| StoreError::other("cannot start the spend-log writer", e.to_string()))?;
        Ok(SpendLogWriter {
            jobs: Arc::new(Mutex::new(Some(tx))),
        })
    }

    fn send(&self, job: Job) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Appends the rows in one transaction; all of them or none.
    pub async fn write(&self, rows: Arc<Vec<SpendEvent>>) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        if !self.send(Job::Write(rows, done)) {
            return Err(StoreError::closed());
        }
        match answer.await {
            Ok(result) => result.map_err(|e| StoreError::sqlite("cannot write the spend log", e)),
            Err(_) => Err(StoreError::closed()),
        }
    }

    /// Waits for the batch being written, then closes the connection.
    pub async fn close(&self) {
        let (done, answer) = oneshot::channel();
        if self.send(Job::Close(done)) {
            let _ = answer.await;
        }
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

fn open_err(e: rusqlite::Error) -> StoreError {
    StoreError::sqlite("cannot open the spend log", e)
}

/// Rows per statement for full chunks of a batch (the rest go one by one): a statement's own work (step,
/// cursor, reset) is paid once per chunk instead of once per row.
const CHUNK: usize = 32;

/// The insert of `rows` rows.
fn insert_sql(rows: usize) -> String {
    let row = format!("({})", vec!["?"; 15].join(","));
    format!(
        "INSERT INTO llm_spend_logs ({SPEND_LOG_COLUMNS}) VALUES {}",
        vec![row.as_str(); rows].join(",")
    )
}

fn run(mut conn: rusqlite::Connection, jobs: mpsc::Receiver<Job>) {
    let sql = (insert_sql(1), insert_sql(CHUNK));
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Write(rows, done) => {
                let result = write(&mut conn, &sql, &rows);
                // Let go of the rows first: the caller takes them back whole when the write failed.
                drop(rows);
                let _ = done.send(result);
            }
            Job::Close(done) => {
                drop(conn);
                let _ = done.send(());
                return;
            }
        }
    }
}

fn write(
    conn: &mut rusqlite::Connection,
    (one, chunk): &(String, String),
    rows: &[SpendEvent],
) -> rusqlite::Result<()> {
    // IMMEDIATE: take the write lock up front (waiting up to the busy timeout for the management
    // connection), so the transaction can never fail halfway on a lock upgrade.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut full = rows.chunks_exact(CHUNK);
        let mut insert = tx.prepare_cached(chunk)?;
        for rows in full.by_ref() {
            bind_rows(&mut insert, rows)?;
            insert.raw_execute()?;
        }
        let mut insert = tx.prepare_cached(one)?;
        for row in full.remainder().chunks(1) {
            bind_rows(&mut insert, row)?;
            insert.raw_execute()?;
        }
    }
    tx.commit()
}

/// Binds `rows` to the statement's parameters in order, 15 per row.
fn bind_rows(
    insert: &mut rusqlite::CachedStatement<'_>,
    rows: &[SpendEvent],
) -> rusqlite::Result<()> {
    let mut id = [0u8; 32];
    for (r, l) in rows.iter().enumerate() {
        let f = SpendRow::of(l, super::rows::row_id_into(l.id, &mut id));
        let at = r * 15;
        insert.raw_bind_parameter(at + 1, f.0)?;
        insert.raw_bind_parameter(at + 2, f.1)?;
        insert.raw_bind_parameter(at + 3, f.2)?;
        insert.raw_bind_parameter(at + 4, f.3)?;
        insert.raw_bind_parameter(at + 5, f.4)?;
        insert.raw_bind_parameter(at + 6, f.5)?;
        insert.raw_bind_parameter(at + 7, f.6)?;
        insert.raw_bind_parameter(at + 8, f.7)?;
        insert.raw_bind_parameter(at + 9, f.8)?;
        insert.raw_bind_parameter(at + 10, f.9)?;
        insert.raw_bind_parameter(at + 11, f.10)?;
        insert.raw_bind_parameter(at + 12, f.11)?;
        insert.raw_bind_parameter(at + 13, f.12)?;
        insert.raw_bind_parameter(at + 14, f.13)?;
        insert.raw_bind_parameter(at + 15, f.14)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{RecordRow, SpendFilter, Store};
    use crate::labels::{DeploymentLabels, KeyLabels};
    use crate::providers::wire::Usage;
    use crate::store::SpendEvent;
    use std::sync::Arc;

    fn event(n: u64, team: &str) -> SpendEvent {
        SpendEvent {
            id: rand::random(),
            key: Arc::new(KeyLabels {
                hashed_api_key: "ab".repeat(32),
                api_key_alias: "alias".into(),
                team: team.into(),
                team_alias: String::new(),
                user: "u1".into(),
            }),
            end_user: (n % 2 == 0).then(|| "customer-1".to_owned()),
            model_group: Arc::from("gpt-4o"),
            deployment: Some(Arc::new(DeploymentLabels {
                model_group: "gpt-4o".into(),
                llm_model_name: "gpt-4o".into(),
                model_id: "dep-1".into(),
                api_base: "http://127.0.0.1:1".into(),
                api_provider: "openai",
            })),
            usage: Usage {
                prompt_tokens: n,
                completion_tokens: 2 * n,
                total_tokens: 3 * n,
                ..Default::default()
            },
            spend_micros: 1000 + n as i64,
            ok: n != 3,
            start_ms: 1_700_000_000_000 + n as i64,
            end_ms: 1_700_000_000_100 + n as i64,
        }
    }

    /// A write retried after a failure that may have committed anyway is applied once: spend batches by
    /// their id (both stores), spend-log rows by their request id (PostgreSQL, when
    /// `LLM_TEST_DATABASE_URL` names one).
    #[actix_rt::test]
    async fn writes_retried_after_an_unknown_outcome_count_once() {
        use super::super::{Secret, Table};
        let dir = std::env::temp_dir().join(format!("llm-once-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("llm.db"));
        let mut stores = vec![Store::connect(None, &dir).await.unwrap()];
        if let Ok(url) = std::env::var("LLM_TEST_DATABASE_URL") {
            stores.push(Store::connect(Some(&Secret::new(url)), &dir).await.unwrap());
        }
        for store in stores {
            let id = format!("k-{}", rand::random::<u64>());
            store
                .upsert(RecordRow {
                    table: Table::Keys,
                    id: &id,
                    data: &serde_json::json!({}),
                    budget_reset_at: None,
                    team_id: None,
                    user_id: None,
                })
                .await
                .unwrap();
            let batch = format!("b-{}", rand::random::<u64>());
            let deltas = vec![(Table::Keys, id.clone(), 7)];
            store.add_spend(&batch, &deltas).await.unwrap();
            store.add_spend(&batch, &deltas).await.unwrap();
            store
                .add_spend(&format!("{batch}-next"), &deltas)
                .await
                .unwrap();
            let row = store.get(Table::Keys, &id).await.unwrap().unwrap();
            assert_eq!(row.spend_micros, 14, "{}", store.kind);
            if store.kind == "postgres" {
                let team = format!("once-{}", rand::random::<u64>());
                let rows = Arc::new(vec![event(1, &team), event(2, &team)]);
                store.insert_spend_logs(rows.clone()).await.unwrap();
                store.insert_spend_logs(rows).await.unwrap();
                let filter = SpendFilter {
                    team_id: Some(team),
                    ..Default::default()
                };
                assert_eq!(store.spend_logs(&filter, 10, 0).await.unwrap().1, 2);
            }
        }
    }

    #[actix_rt::test]
    async fn rows_written_by_the_writer_read_back_through_sqlx_and_failures_keep_them() {
        let dir = std::env::temp_dir().join(format!("llm-spend-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("llm.db"));
        let store = Store::connect(None, &dir).await.unwrap();
        let rows: Vec<SpendEvent> = (1..=5).map(|n| event(n, "t1")).collect();
        store.insert_spend_logs(Arc::new(rows)).await.unwrap();
        let filter = SpendFilter {
            team_id: Some("t1".into()),
            ..Default::default()
        };
        let (logs, total) = store.spend_logs(&filter, 10, 0).await.unwrap();
        assert_eq!(total, 5);
        // Newest first.
        let first = &logs[0];
        assert_eq!(first.api_key, "ab".repeat(32));
        assert_eq!(
            (first.key_alias.as_str(), first.user.as_str()),
            ("alias", "u1")
        );
        assert_eq!(
            (first.model_group.as_str(), first.model_id.as_str()),
            ("gpt-4o", "dep-1")
        );
        assert_eq!(
            (
                first.prompt_tokens,
                first.completion_tokens,
                first.total_tokens
            ),
            (5, 10, 15)
        );
        assert_eq!(first.spend, 0.001005);
        assert_eq!(first.end_user, "");
        assert_eq!(logs[1].end_user, "customer-1");
        assert_eq!(logs[2].status, "failure");
        assert_eq!(logs[0].status, "success");
        assert_eq!(first.request_id.len(), 32);
        let ids: std::collections::HashSet<_> = logs.iter().map(|l| &l.request_id).collect();
        assert_eq!(ids.len(), 5, "row ids are unique");

        // Two full chunks and a remainder: every row lands once, each with its own values.
        let rows: Vec<SpendEvent> = (1..=2 * super::CHUNK as u64 + 6)
            .map(|n| event(n, "t2"))
            .collect();
        store.insert_spend_logs(Arc::new(rows)).await.unwrap();
        let filter = SpendFilter {
            team_id: Some("t2".into()),
            ..Default::default()
        };
        let (logs, total) = store.spend_logs(&filter, 1000, 0).await.unwrap();
        assert_eq!(total, 2 * super::CHUNK as i64 + 6);
        for (i, l) in logs.iter().enumerate() {
            let n = (2 * super::CHUNK + 6 - i) as i64;
            assert_eq!(
                (l.start_time_ms, l.prompt_tokens),
                (1_700_000_000_000 + n, n)
            );
            assert_eq!((l.completion_tokens, l.total_tokens), (2 * n, 3 * n));
            assert_eq!(l.spend, crate::units::usd(1000 + n));
        }

        // The table is gone: the batch fails as a whole and the caller still holds every row.
        sqlx::query("DROP TABLE llm_spend_logs")
            .execute(&store.pool)
            .await
            .unwrap();
        let batch = Arc::new(vec![event(6, "t1"), event(7, "t1")]);
        let err = store.insert_spend_logs(batch.clone()).await.unwrap_err();
        assert_eq!(err.class(), "DatabaseError");
        assert!(
            err.to_string().contains("cannot write the spend log"),
            "{err}"
        );
        assert_eq!(
            Arc::strong_count(&batch),
            1,
            "the writer let go of the rows"
        );

        store.close().await;
        let err = store.insert_spend_logs(batch).await.unwrap_err();
        assert_eq!(err.class(), "PoolClosed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
