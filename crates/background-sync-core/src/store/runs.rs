//! Run reports (history) and pruning past the retention.

use super::settings::{put_setting, KEY_LAST_ERROR, KEY_LAST_SYNC};
use super::Store;
use crate::error::Result;
use crate::models::DrainReport;
use crate::time;

impl Store {
    pub(crate) async fn record_run(&self, report: &DrainReport) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            // language=SQLite
            "INSERT OR REPLACE INTO drain_runs (run_id, started_at, finished_at, report) VALUES (?, ?, ?, ?)",
        )
        .bind(&report.run_id)
        .bind(report.started_at)
        .bind(report.finished_at)
        .bind(serde_json::to_string(report)?)
        .execute(&mut *tx)
        .await?;
        if report.done > 0 {
            put_setting(&mut *tx, KEY_LAST_SYNC, &report.finished_at.to_string()).await?;
        }
        put_setting(
            &mut *tx,
            KEY_LAST_ERROR,
            report.last_error.as_deref().unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn history(&self, limit: u32) -> Result<Vec<DrainReport>> {
        let rows: Vec<String> = sqlx::query_scalar(
            // language=SQLite
            "SELECT report FROM drain_runs ORDER BY finished_at DESC, run_id DESC LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().filter_map(|r| serde_json::from_str(r).ok()).collect())
    }

    /// Drop delivered rows and old run reports past the retention (never the id map).
    pub(crate) async fn prune(&self, now: i64, retention_ms: u64) -> Result<u64> {
        let cutoff = time::before(now, std::time::Duration::from_millis(retention_ms));
        // language=SQLite
        let mut n = sqlx::query("DELETE FROM delivered WHERE delivered_at < ?")
            .bind(cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected();
        n += sqlx::query(
            // language=SQLite
            "DELETE FROM drain_runs WHERE finished_at < ? AND run_id NOT IN \
             (SELECT run_id FROM drain_runs ORDER BY finished_at DESC LIMIT 20)",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await?
        .rows_affected();
        // Resolved temp ids are kept for good: the app may reference a temp id (a local copy it
        // never rewrote) long after the create was delivered, and a forgotten mapping would send
        // the temp id raw. One small row per offline create.
        n += self.prune_uploads(cutoff).await?;
        Ok(n)
    }
}
