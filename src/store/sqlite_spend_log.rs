//! The SQLite spend log's writer: one connection on its own thread (`llm-spend-log`), one prepared
//! single-row `INSERT` bound and stepped per row inside one `BEGIN IMMEDIATE` transaction per batch.
//!
//! The spend log is the store's hottest write (a row per request) and, on the embedded database, runs on
//! the gateway's own cores. Through sqlx every value of a row was encoded into an argument list, copied
//! into an owned form to cross to sqlx's worker thread and bound there; here the row's fields are bound
//! straight from the [`SpendEvent`]s into a statement compiled once, which costs a third as much per row
//! (bench/README.md). Reads of the log still go through sqlx, on the same file (WAL: readers never block
//! this writer, nor it them).

use super::{SpendEvent, SpendRow, StoreError, SPEND_LOG_COLUMNS};
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
        conn.prepare_cached(&insert_sql()).map_err(open_err)?;
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

fn insert_sql() -> String {
    format!(
        "INSERT INTO llm_spend_logs ({SPEND_LOG_COLUMNS}) VALUES ({})",
        vec!["?"; 15].join(",")
    )
}

fn run(mut conn: rusqlite::Connection, jobs: mpsc::Receiver<Job>) {
    let mut rng = {
        use rand::SeedableRng;
        rand::rngs::SmallRng::from_entropy()
    };
    let sql = insert_sql();
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Write(rows, done) => {
                let result = write(&mut conn, &sql, &rows, &mut rng);
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
    sql: &str,
    rows: &[SpendEvent],
    rng: &mut rand::rngs::SmallRng,
) -> rusqlite::Result<()> {
    // IMMEDIATE: take the write lock up front (waiting up to the busy timeout for the management
    // connection), so the transaction can never fail halfway on a lock upgrade.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(sql)?;
        let mut id = [0u8; 32];
        for l in rows {
            let f = SpendRow::of(l, super::row_id_into(rng, &mut id));
            insert.execute(rusqlite::params![
                f.0, f.1, f.2, f.3, f.4, f.5, f.6, f.7, f.8, f.9, f.10, f.11, f.12, f.13, f.14
            ])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::super::{SpendFilter, Store};
    use crate::actors::metrics::{DeploymentLabels, KeyLabels};
    use crate::providers::wire::Usage;
    use crate::store::SpendEvent;
    use std::sync::Arc;

    fn event(n: u64, team: &str) -> SpendEvent {
        SpendEvent {
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
            },
            spend_micros: 1000 + n as i64,
            ok: n != 3,
            start_ms: 1_700_000_000_000 + n as i64,
            end_ms: 1_700_000_000_100 + n as i64,
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
