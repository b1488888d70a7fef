//! The drain's bookkeeping: the single-drainer lease, claims (`UPDATE … RETURNING`), outcomes
//! written only for rows the caller still owns, and recovery of rows a dead drainer left.

use super::rows::{absorbed_ids, parse_body};
use super::{Applied, Queue, Store};
use crate::error::Result;
use crate::models::{Delivered, EntityRef, Priority};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

/// A row claimed for sending, with the temp-id mapping its references resolve to.
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    pub seq: i64,
    pub id: String,
    pub idempotency_key: String,
    pub priority: Priority,
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub temp_id: Option<String>,
    pub attempts: u32,
    pub mapping: HashMap<String, String>,
    /// It references temp ids or placeholders (its dependency rows go when it is delivered).
    pub has_deps: bool,
}

/// What happened to one claimed row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Delivered: moved to `delivered`; a create's server id resolves its temp id.
    Complete {
        seq: i64,
        status: u16,
        server_id: Option<String>,
        now: i64,
        /// Whether dependency rows may exist (false skips their deletion).
        had_deps: bool,
        /// The response body to keep (JSON text), when the app asked for bodies.
        body: Option<String>,
    },
    /// Transient failure: pending again at `next_at`.
    Reschedule {
        seq: i64,
        attempts: u32,
        next_at: i64,
        status: Option<u16>,
        error: String,
    },
    /// Dead letter (blocks only its own entity).
    Bury {
        seq: i64,
        attempts: u32,
        status: Option<u16>,
        error: String,
        now: i64,
    },
    /// Not attempted after all: pending, unchanged.
    Release { seq: i64 },
}

pub(super) async fn apply_outcome(
    conn: &mut sqlx::SqliteConnection,
    owner: &str,
    o: &Outcome,
    heard: bool,
) -> Result<Applied> {
    let n = match o {
        Outcome::Complete {
            seq,
            status,
            server_id,
            now,
            had_deps,
            body,
        } => {
            let row = sqlx::query(
                // language=SQLite
                "DELETE FROM outbox WHERE seq = ? AND claimed_by = ? AND state = 'in_flight' \
                 RETURNING id, idempotency_key, entity_kind, entity_id, method, path, attempts, created_at, temp_id, \
                 coalesce",
            )
            .bind(seq)
            .bind(owner)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = row else {
                return Ok(Applied::No);
            };
            let temp_id: Option<String> = row.get("temp_id");
            sqlx::query(
                // language=SQLite
                "INSERT INTO delivered (seq, id, idempotency_key, entity_kind, entity_id, method, path, status, attempts, \
                 created_at, delivered_at, server_id, temp_id, told, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(seq)
            .bind(row.get::<String, _>("id"))
            .bind(row.get::<String, _>("idempotency_key"))
            .bind(row.get::<String, _>("entity_kind"))
            .bind(row.get::<String, _>("entity_id"))
            .bind(row.get::<String, _>("method"))
            .bind(row.get::<String, _>("path"))
            .bind(*status as i64)
            .bind(row.get::<i64, _>("attempts") + 1)
            .bind(row.get::<i64, _>("created_at"))
            .bind(now)
            .bind(server_id)
            .bind(&temp_id)
            .bind(heard)
            .bind(body)
            .execute(&mut *conn)
            .await?;
            if *had_deps {
                // language=SQLite
                sqlx::query("DELETE FROM mutation_deps WHERE mutation_seq = ?")
                    .bind(seq)
                    .execute(&mut *conn)
                    .await?;
            }
            if let (Some(temp), Some(server)) = (&temp_id, server_id) {
                // language=SQLite
                sqlx::query("UPDATE id_map SET server_id = ?, resolved_at = ? WHERE temp_id = ?")
                    .bind(server)
                    .bind(now)
                    .bind(temp)
                    .execute(&mut *conn)
                    .await?;
            }
            let entity = EntityRef {
                kind: row.get("entity_kind"),
                id: row.get("entity_id"),
            };
            let mut told = vec![Delivered {
                id: row.get("id"),
                entity: entity.clone(),
                method: row.get("method"),
                path: row.get("path"),
                status: *status,
                temp_id,
                server_id: server_id.clone(),
                delivered_at: *now,
                body: parse_body(body.as_deref()),
            }];
            // The mutations this row carried are delivered with it, each under its own id.
            if row.get::<bool, _>("coalesce") {
                let absorbed: Vec<(i64, String, String, String, String, i64)> = sqlx::query_as(
                    // language=SQLite
                    "DELETE FROM coalesced WHERE into_seq = ? \
                     RETURNING seq, id, idempotency_key, method, path, created_at",
                )
                .bind(seq)
                .fetch_all(&mut *conn)
                .await?;
                let mut absorbed = absorbed;
                absorbed.sort();
                for (own_seq, id, key, method, path, created_at) in absorbed {
                    sqlx::query(
                        // language=SQLite
                        "INSERT INTO delivered (seq, id, idempotency_key, entity_kind, entity_id, method, path, \
                         status, attempts, created_at, delivered_at, server_id, told, body) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(own_seq)
                    .bind(&id)
                    .bind(key)
                    .bind(&entity.kind)
                    .bind(&entity.id)
                    .bind(&method)
                    .bind(&path)
                    .bind(*status as i64)
                    .bind(row.get::<i64, _>("attempts") + 1)
                    .bind(created_at)
                    .bind(now)
                    .bind(server_id)
                    .bind(heard)
                    .bind(body)
                    .execute(&mut *conn)
                    .await?;
                    told.push(Delivered {
                        id,
                        entity: entity.clone(),
                        method,
                        path,
                        status: *status,
                        temp_id: None,
                        server_id: server_id.clone(),
                        delivered_at: *now,
                        body: parse_body(body.as_deref()),
                    });
                }
            }
            return Ok(Applied::Delivered(told));
        }
        Outcome::Reschedule {
            seq,
            attempts,
            next_at,
            status,
            error,
        } => sqlx::query(
            // language=SQLite
            "UPDATE outbox SET state = 'pending', claimed_by = NULL, backing_off = 1, attempts = ?, next_attempt_at = ?, \
             last_status = ?, last_error = ? WHERE seq = ? AND claimed_by = ? AND state = 'in_flight'",
        )
        .bind(*attempts as i64)
        .bind(next_at)
        .bind(status.map(i64::from))
        .bind(error)
        .bind(seq)
        .bind(owner)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        Outcome::Bury {
            seq,
            attempts,
            status,
            error,
            now,
        } => {
            let row = sqlx::query(
                // language=SQLite
                "UPDATE outbox SET state = 'dead', claimed_by = NULL, backing_off = 0, attempts = ?, last_status = ?, \
                 last_error = ?, told = ?, dead_at = ? WHERE seq = ? AND claimed_by = ? AND state = 'in_flight' \
                 RETURNING id, entity_kind, entity_id, coalesce",
            )
            .bind(*attempts as i64)
            .bind(status.map(i64::from))
            .bind(error)
            .bind(heard)
            .bind(now)
            .bind(seq)
            .bind(owner)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = row else {
                return Ok(Applied::No);
            };
            // What the row carries stays with it (a retry delivers them together), and each
            // is told it is dead under its own id.
            let absorbed = absorbed_ids(&mut *conn, *seq, row.get("coalesce")).await?;
            return Ok(Applied::Dead {
                id: row.get("id"),
                entity: EntityRef {
                    kind: row.get("entity_kind"),
                    id: row.get("entity_id"),
                },
                status: *status,
                error: error.clone(),
                absorbed,
            });
        }
        Outcome::Release { seq } => sqlx::query(
            // language=SQLite
            "UPDATE outbox SET state = 'pending', claimed_by = NULL WHERE seq = ? AND claimed_by = ? AND state = 'in_flight'",
        )
        .bind(seq)
        .bind(owner)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
    };
    Ok(if n == 1 { Applied::Yes } else { Applied::No })
}

impl Store {
    /// Take the single-drainer lease for `ttl_ms` on the lease clock (monotonic, shared by the
    /// processes of one boot). A lease whose expiry lies further ahead than it was ever granted
    /// for (a reboot reset the clock, or a row written by an older version on the wall clock)
    /// counts as expired.
    pub(crate) async fn acquire_lease(&self, owner: &str, now: i64, ttl_ms: i64) -> Result<bool> {
        let mut tx = self.drain.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            // language=SQLite
            "INSERT INTO drain_lease (id, owner, expires_at, ttl_ms) VALUES (1, ?1, ?2, ?4) \
             ON CONFLICT(id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at, \
                                           ttl_ms = excluded.ttl_ms \
             WHERE drain_lease.owner = excluded.owner OR drain_lease.expires_at <= ?3 \
                OR drain_lease.expires_at > ?3 + MAX(drain_lease.ttl_ms, ?4) + 1000",
        )
        .bind(owner)
        .bind(now.saturating_add(ttl_ms))
        .bind(now)
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await?;
        // language=SQLite
        let holder: String = sqlx::query_scalar("SELECT owner FROM drain_lease WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(holder == owner)
    }

    /// Keep the lease until at least `now + ttl_ms` (never shortens an extension). False: the
    /// lease is someone else's now.
    pub(crate) async fn renew_lease(&self, owner: &str, now: i64, ttl_ms: i64) -> Result<bool> {
        let until = now.saturating_add(ttl_ms);
        let n = sqlx::query(
            // language=SQLite
            "UPDATE drain_lease SET expires_at = MAX(expires_at, ?1), ttl_ms = MAX(expires_at, ?1) - ?2 \
             WHERE id = 1 AND owner = ?3",
        )
        .bind(until)
        .bind(now)
        .bind(owner)
        .execute(&self.drain)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub(crate) async fn release_lease(&self, owner: &str) -> Result<()> {
        // language=SQLite
        sqlx::query("DELETE FROM drain_lease WHERE id = 1 AND owner = ?")
            .bind(owner)
            .execute(&self.drain)
            .await?;
        Ok(())
    }

    /// The wall clock was stepped back since rows were last attempted: their backoff restarts
    /// from now with the delay it was scheduled for (a server's Retry-After is still honoured,
    /// and a step of days strands nothing for days). Rows never attempted are always due.
    pub(crate) async fn rebase_backoff(&self, now: i64) -> Result<u64> {
        let mut n = 0;
        for q in Queue::ALL {
            let table = q.table();
            // language=SQLite
            n += sqlx::query(&format!(
                // language=SQLite
                "UPDATE {table} SET next_attempt_at = ?1 + MAX(0, next_attempt_at - claimed_at), claimed_at = ?1 \
                 WHERE seq IN (SELECT seq FROM {table} INDEXED BY {table}_claimed \
                               WHERE claimed_at > ?1 AND state = 'pending' AND attempts > 0)"
            ))
            .bind(now)
            .execute(&self.drain)
            .await?
            .rows_affected();
        }
        Ok(n)
    }

    /// Rows left in flight by a drainer that died. Only call while holding the lease: then no
    /// live drainer can own them.
    pub(crate) async fn recover_in_flight(&self) -> Result<u64> {
        let mut n = 0;
        for q in Queue::ALL {
            let table = q.table();
            // language=SQLite
            n += sqlx::query(&format!(
                // language=SQLite
                "UPDATE {table} SET state = 'pending', claimed_by = NULL WHERE state = 'in_flight'"
            ))
            .execute(&self.drain)
            .await?
            .rows_affected();
        }
        Ok(n)
    }

    /// Put every row this drainer still holds back to pending (cancellation).
    /// Each pass releases only its own queue's rows.
    pub(crate) async fn recover_owned(&self, queue: Queue, owner: &str) -> Result<u64> {
        let table = queue.table();
        // language=SQLite
        Ok(sqlx::query(&format!(
            // language=SQLite
            "UPDATE {table} SET state = 'pending', claimed_by = NULL WHERE state = 'in_flight' AND claimed_by = ?"
        ))
        .bind(owner)
        .execute(&self.drain)
        .await?
        .rows_affected())
    }

    /// Apply finished outcomes and claim the next rows in one transaction: the drain's
    /// steady state costs one commit per round instead of two.
    /// `heard`: a listener hears these outcomes live (else `untold` keeps them for the next).
    pub(crate) async fn settle_and_claim(
        &self,
        owner: &str,
        outcomes: &[Outcome],
        heard: bool,
        now: i64,
        limit: u32,
        max_wait_ms: i64,
    ) -> Result<(Vec<Applied>, Vec<Claimed>)> {
        let mut tx = self.drain.begin_with("BEGIN IMMEDIATE").await?;
        let mut applied = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            applied.push(apply_outcome(&mut tx, owner, o, heard).await?);
        }
        // Backoffs that ended (or whose due time is implausibly far ahead) rejoin the heads.
        sqlx::query(
            // language=SQLite
            // Two index ranges (an OR here would scan every row in backoff).
            "UPDATE outbox SET backing_off = 0 WHERE seq IN ( \
               SELECT seq FROM outbox INDEXED BY outbox_backing_off WHERE backing_off = 1 AND next_attempt_at <= ?1 \
               UNION ALL \
               SELECT seq FROM outbox INDEXED BY outbox_backing_off WHERE backing_off = 1 AND next_attempt_at > ?1 + ?2)",
        )
        .bind(now)
        .bind(max_wait_ms)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            // language=SQLite
            "UPDATE outbox SET state = 'in_flight', claimed_by = ?1, claimed_at = ?2 \
             WHERE seq IN ( \
               SELECT o.seq FROM outbox o INDEXED BY outbox_heads \
               WHERE o.is_head = 1 AND o.state = 'pending' AND o.backing_off = 0 \
                 AND EXISTS (SELECT 1 FROM drain_lease WHERE id = 1 AND owner = ?1) \
                 AND NOT EXISTS (SELECT 1 FROM mutation_deps d JOIN id_map m ON m.temp_id = d.temp_id \
                                 WHERE d.mutation_seq = o.seq AND m.server_id IS NULL) \
               ORDER BY o.priority DESC, o.seq ASC LIMIT ?3) \
             RETURNING seq, id, idempotency_key, priority, method, path, headers, body, temp_id, attempts, \
                       EXISTS (SELECT 1 FROM mutation_deps d WHERE d.mutation_seq = outbox.seq) AS has_deps",
        )
        .bind(owner)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in rows {
            let headers: Option<String> = r.get("headers");
            claimed.push(Claimed {
                seq: r.get("seq"),
                id: r.get("id"),
                idempotency_key: r.get("idempotency_key"),
                priority: Priority::from_rank(r.get("priority")),
                method: r.get("method"),
                path: r.get("path"),
                headers: headers
                    .and_then(|h| serde_json::from_str(&h).ok())
                    .unwrap_or_default(),
                body: r.get("body"),
                temp_id: r.get("temp_id"),
                attempts: r.get::<i64, _>("attempts") as u32,
                mapping: HashMap::new(),
                has_deps: r.get::<bool, _>("has_deps"),
            });
        }
        // Most mutations reference nothing: skip the lookup (a round trip) for them.
        if claimed.iter().any(|c| c.has_deps) {
            let seqs: Vec<i64> = claimed.iter().filter(|c| c.has_deps).map(|c| c.seq).collect();
            let maps = sqlx::query(
                // language=SQLite
                "SELECT d.mutation_seq, m.temp_id, m.server_id FROM mutation_deps d \
                 JOIN id_map m ON m.temp_id = d.temp_id \
                 WHERE d.mutation_seq IN (SELECT value FROM json_each(?)) AND m.server_id IS NOT NULL",
            )
            .bind(serde_json::to_string(&seqs)?)
            .fetch_all(&mut *tx)
            .await?;
            for m in maps {
                let seq: i64 = m.get(0);
                if let Some(c) = claimed.iter_mut().find(|c| c.seq == seq) {
                    c.mapping.insert(m.get(1), m.get(2));
                }
            }
        }
        tx.commit().await?;
        claimed.sort_by_key(|c| (std::cmp::Reverse(c.priority), c.seq));
        Ok((applied, claimed))
    }

    /// Apply several outcomes in one transaction (one WAL commit for a whole round of
    /// finished requests). Each returns whether the row was still ours (false: the lease was
    /// lost and the row re-claimed by another drainer, so the outcome is dropped).
    pub(crate) async fn settle(
        &self,
        owner: &str,
        outcomes: &[Outcome],
        heard: bool,
    ) -> Result<Vec<Applied>> {
        let mut tx = self.drain.begin_with("BEGIN IMMEDIATE").await?;
        let mut applied = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            applied.push(apply_outcome(&mut tx, owner, o, heard).await?);
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// The retry rule shared by mutations and uploads.
    pub(crate) async fn revive_dead(&self, queue: Queue, id: &str, now: i64) -> Result<u64> {
        let table = queue.table();
        // language=SQLite
        Ok(sqlx::query(&format!(
            // language=SQLite
            "UPDATE {table} SET state = 'pending', attempts = 0, next_attempt_at = ?,{reset} \
             idempotency_key = CASE WHEN last_status BETWEEN 400 AND 499 AND last_status NOT IN (408, 409, 425, 429) \
                               THEN ? ELSE idempotency_key END \
             WHERE id = ? AND state = 'dead'",
            reset = if queue == Queue::Outbox { " backing_off = 0," } else { "" }
        ))
        .bind(now)
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
