//! Every database call made through one place: timed into the system metrics, bounded by
//! `general_settings.database_timeout`, failing fast for a moment after the database could not be reached.

use super::*;

/// Every database call, timed into the system metrics (`service_callback: ["prometheus_system"]`).
impl Store {
    /// Reports this store's calls to `metrics` from now on.
    pub fn set_metrics(&self, metrics: Arc<ServiceMetrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// A call of the request path or the flush: `database_timeout`, and a failure to reach the database
    /// makes the calls of the next second fail at once.
    pub(super) async fn timed<T>(
        &self,
        function: &'static str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.limited(function, call, self.call_timeout, true).await
    }

    /// A call that may legitimately take long (reports, retention): ten times `database_timeout`, and
    /// its slowness says nothing about the database being down.
    pub(super) async fn timed_slow<T>(
        &self,
        function: &'static str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.limited(function, call, self.call_timeout * 10, false)
            .await
    }

    pub(super) async fn limited<T>(
        &self,
        function: &'static str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
        limit: Duration,
        trips: bool,
    ) -> Result<T, StoreError> {
        use std::sync::atomic::Ordering;
        let seen = self.down_until.load(Ordering::Acquire);
        if now_ms() < seen {
            if let Some(m) = self.metrics.get() {
                m.fail("Unavailable", function);
            }
            return Err(StoreError {
                what: format!("database call `{function}` not tried: the database is unavailable"),
                source: Cause::Down,
            });
        }
        let down_until = self.down_until.clone();
        let call = async move {
            let result = actix_rt::time::timeout(limit, call)
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError {
                        what: format!("database call `{function}` timed out"),
                        source: Cause::Timeout(limit),
                    })
                });
            match &result {
                Err(e) if trips && e.is_unreachable() => {
                    down_until.store(now_ms() + DOWN_FOR.as_millis() as i64, Ordering::Release)
                }
                // Only a call that began after the last trip clears it: an older one succeeding late
                // says nothing about now.
                Ok(_) => {
                    let _ =
                        down_until.compare_exchange(seen, 0, Ordering::AcqRel, Ordering::Acquire);
                }
                Err(_) => {}
            }
            result
        };
        let Some(m) = self.metrics.get() else {
            return call.await;
        };
        let started = std::time::Instant::now();
        let result = call.await;
        match &result {
            Ok(_) => m.ok(started.elapsed()),
            Err(e) => m.fail(e.class(), function),
        }
        result
    }

    pub async fn load(&self, table: Table) -> Result<Vec<Row_>, StoreError> {
        self.timed("load", self.load_raw(table)).await
    }

    pub async fn get(&self, table: Table, id: &str) -> Result<Option<Row_>, StoreError> {
        self.timed("get", self.get_raw(table, id)).await
    }

    /// Inserts or replaces the record; spend is left as stored (a new row starts at 0).
    pub async fn upsert<T: Serialize>(&self, row: RecordRow<'_, T>) -> Result<(), StoreError> {
        let (table, id) = (row.table, row.id.to_owned());
        self.timed("upsert", self.upsert_raw(row)).await?;
        self.announce(table, &[id]);
        Ok(())
    }

    pub async fn keys_of(&self, owner: KeyOwner, id: &str) -> Result<Vec<String>, StoreError> {
        self.timed("keys_of", self.keys_of_raw(owner, id)).await
    }

    pub async fn delete(&self, table: Table, ids: &[String]) -> Result<u64, StoreError> {
        let n = self.timed("delete", self.delete_raw(table, ids)).await?;
        self.announce(table, ids);
        Ok(n)
    }

    /// Adds spend deltas once per `batch` id (see `add_spend_raw`).
    pub async fn add_spend(
        &self,
        batch: &str,
        deltas: &[(Table, String, i64)],
    ) -> Result<(), StoreError> {
        self.timed("add_spend", self.add_spend_raw(batch, deltas))
            .await
    }

    pub async fn reset_spend(
        &self,
        table: Table,
        id: &str,
        next_reset: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let call = self.reset_spend_raw(table, id, next_reset, now);
        let reset = self.timed("reset_spend", call).await?;
        if reset {
            self.announce(table, &[id.to_owned()]);
        }
        Ok(reset)
    }

    /// Appends the rows, all or none (the caller keeps its reference to retry them).
    pub async fn insert_spend_logs(&self, logs: Arc<Vec<SpendEvent>>) -> Result<(), StoreError> {
        if let Some(writer) = &self.spend_log {
            // SQLite's writer thread finishes a batch it has taken whatever its caller does: a timeout
            // here would only make the caller write the same rows again.
            let started = std::time::Instant::now();
            let result = writer.write(logs).await;
            if let Some(m) = self.metrics.get() {
                match &result {
                    Ok(()) => m.ok(started.elapsed()),
                    Err(e) => m.fail(e.class(), "insert_spend_logs"),
                }
            }
            return result;
        }
        self.timed("insert_spend_logs", self.insert_spend_logs_raw(logs))
            .await
    }

    /// Counts spend-log rows given up on (`llm_<store>_fails_total{error_class="RowDropped"}`).
    pub fn note_dropped_rows(&self, n: usize, function: &'static str) {
        if let Some(m) = self.metrics.get() {
            for _ in 0..n {
                m.fail("RowDropped", function);
            }
        }
    }

    /// Spend-log retention: deletes the rows that started before `cutoff_ms`; returns how many.
    pub async fn delete_spend_logs_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let call = self.delete_spend_logs_before_raw(cutoff_ms);
        self.timed_slow("delete_spend_logs", call).await
    }

    pub async fn spend_logs(
        &self,
        f: &SpendFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SpendLog>, i64), StoreError> {
        self.timed_slow("spend_logs", self.spend_logs_raw(f, limit, offset))
            .await
    }

    pub async fn spend_report(
        &self,
        f: &SpendFilter,
        group_by: &'static str,
        per_day: bool,
    ) -> Result<Vec<ReportRow>, StoreError> {
        self.timed_slow("spend_report", self.spend_report_raw(f, group_by, per_day))
            .await
    }
}
