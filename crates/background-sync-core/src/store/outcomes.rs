//! Outcomes as the app reads them: delivered rows, replay of what no listener heard, recovery
//! of what a lagging listener missed, and temp id → server id.

use super::rows::{dead_row, delivered_row, upload_outcome};
use super::{Applied, Store};
use crate::error::{Error, Result};
use crate::models::{Delivered, DeliveredQuery};
use sqlx::Row;

/// A page of outcomes nobody heard (`Store::untold`), with the rows `mark_told` marks.
#[derive(Debug, Default)]
pub(crate) struct Untold {
    pub(crate) applied: Vec<Applied>,
    delivered_seqs: Vec<i64>,
    dead_seqs: Vec<i64>,
    upload_seqs: Vec<i64>,
}

/// Where `Store::settled_since` goes on from.
#[derive(Debug, Clone)]
pub(crate) struct SettledCursor {
    since: i64,
    delivered: (i64, i64),
    dead_seq: i64,
    upload_seq: i64,
}

impl SettledCursor {
    /// Outcomes settled at or after `since` (ms since the Unix epoch, the engine's clock).
    pub(crate) fn new(since: i64) -> Self {
        SettledCursor {
            since,
            delivered: (since, i64::MIN),
            dead_seq: i64::MIN,
            upload_seq: i64::MIN,
        }
    }
}

impl Store {
    /// Delivered mutations, oldest confirmation first (bounded by retention).
    pub(crate) async fn delivered(&self, q: &DeliveredQuery) -> Result<Vec<Delivered>> {
        let limit = q.limit.unwrap_or(100).clamp(1, 1_000);
        let (kind, id) = match &q.entity {
            Some(e) => (Some(e.kind.as_str()), Some(e.id.as_str())),
            None => (None, None),
        };
        let rows = sqlx::query(
            // language=SQLite
            "SELECT id, entity_kind, entity_id, method, path, status, temp_id, server_id, delivered_at, body \
             FROM delivered INDEXED BY delivered_at WHERE delivered_at >= ?1 \
             AND (?2 IS NULL OR (entity_kind = ?2 AND entity_id = ?3)) \
             ORDER BY delivered_at, seq LIMIT ?4",
        )
        .bind(q.since.unwrap_or(i64::MIN))
        .bind(kind)
        .bind(id)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(delivered_row).collect())
    }

    /// Outcomes no listener heard (settled with `told = 0`: a background run, nobody
    /// subscribed), oldest first, at most `limit` of each kind: delivered rows as
    /// `Applied::Delivered`, dead letters as `Applied::Dead` with what was coalesced into them,
    /// then finished and dead uploads. `mark_told` takes the result once a listener has it.
    pub(crate) async fn untold(&self, limit: u32) -> Result<Untold> {
        let mut conn = self.pool.acquire().await?;
        let mut out = Untold::default();
        let rows = sqlx::query(
            // language=SQLite
            "SELECT seq, id, entity_kind, entity_id, method, path, status, temp_id, server_id, delivered_at, body \
             FROM delivered INDEXED BY delivered_untold WHERE told = 0 ORDER BY seq LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await?;
        for r in &rows {
            out.delivered_seqs.push(r.get::<i64, _>("seq"));
            out.applied.push(Applied::Delivered(vec![delivered_row(r)]));
        }
        let dead = sqlx::query(
            // language=SQLite
            "SELECT seq, id, entity_kind, entity_id, last_status, last_error, coalesce \
             FROM outbox INDEXED BY outbox_untold WHERE told = 0 AND state = 'dead' ORDER BY seq LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await?;
        for r in &dead {
            out.dead_seqs.push(r.get("seq"));
            out.applied.push(dead_row(&mut conn, r).await?);
        }
        let uploads = sqlx::query(
            // language=SQLite
            "SELECT seq, id, placeholder, entity_kind, entity_id, state, last_status, last_error, result \
             FROM uploads INDEXED BY uploads_untold WHERE told = 0 AND state IN ('done', 'dead') ORDER BY seq LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await?;
        for r in &uploads {
            out.upload_seqs.push(r.get::<i64, _>("seq"));
            out.applied.push(upload_outcome(r));
        }
        Ok(out)
    }

    /// Outcomes settled at or after `cursor.since` (ms), one page of at most `limit` of each
    /// kind after `cursor`, which moves past them: delivered rows (within retention), mutations
    /// still dead, finished and dead uploads. Returns whether more may follow.
    pub(crate) async fn settled_since(
        &self,
        cursor: &mut SettledCursor,
        limit: u32,
    ) -> Result<(Vec<Applied>, bool)> {
        let mut conn = self.pool.acquire().await?;
        let mut applied = Vec::new();
        let rows = sqlx::query(
            // language=SQLite
            "SELECT seq, id, entity_kind, entity_id, method, path, status, temp_id, server_id, delivered_at, body \
             FROM delivered INDEXED BY delivered_at WHERE (delivered_at, seq) > (?1, ?2) \
             ORDER BY delivered_at, seq LIMIT ?3",
        )
        .bind(cursor.delivered.0)
        .bind(cursor.delivered.1)
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await?;
        let mut more = rows.len() == limit as usize;
        for r in &rows {
            cursor.delivered = (r.get("delivered_at"), r.get("seq"));
            applied.push(Applied::Delivered(vec![delivered_row(r)]));
        }
        let dead = sqlx::query(
            // language=SQLite
            "SELECT seq, id, entity_kind, entity_id, last_status, last_error, coalesce \
             FROM outbox INDEXED BY outbox_dead_at WHERE state = 'dead' AND dead_at >= ?1 AND seq > ?2 \
             ORDER BY seq LIMIT ?3",
        )
        .bind(cursor.since)
        .bind(cursor.dead_seq)
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await?;
        more |= dead.len() == limit as usize;
        for r in &dead {
            cursor.dead_seq = r.get("seq");
            applied.push(dead_row(&mut conn, r).await?);
        }
        let uploads = sqlx::query(
            // language=SQLite
            "SELECT seq, id, placeholder, entity_kind, entity_id, state, last_status, last_error, result \
             FROM uploads WHERE state IN ('done', 'dead') AND finished_at >= ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .bind(cursor.since)
        .bind(cursor.upload_seq)
        .bind(limit as i64)
        .fetch_all(&mut *conn)
        .await?;
        more |= uploads.len() == limit as usize;
        for r in &uploads {
            cursor.upload_seq = r.get("seq");
            applied.push(upload_outcome(r));
        }
        Ok((applied, more))
    }

    /// The outcomes `untold` returned reached a listener: never replay them again.
    pub(crate) async fn mark_told(&self, told: &Untold) -> Result<()> {
        let seqs = |v: &[i64]| serde_json::to_string(v).map_err(|e| Error::Internal(e.to_string()));
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            // language=SQLite
            "UPDATE delivered SET told = 1 WHERE seq IN (SELECT value FROM json_each(?))",
        )
        .bind(seqs(&told.delivered_seqs)?)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            // language=SQLite
            "UPDATE outbox SET told = 1 WHERE seq IN (SELECT value FROM json_each(?))",
        )
        .bind(seqs(&told.dead_seqs)?)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            // language=SQLite
            "UPDATE uploads SET told = 1 WHERE seq IN (SELECT value FROM json_each(?))",
        )
        .bind(seqs(&told.upload_seqs)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn server_id_for(&self, temp_id: &str) -> Result<Option<String>> {
        Ok(
            // language=SQLite
            sqlx::query_scalar("SELECT server_id FROM id_map WHERE temp_id = ?")
                .bind(temp_id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }
}
