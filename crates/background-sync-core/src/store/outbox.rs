//! The outbox's own statements: enqueue (with coalescing and temp-id dependencies), the
//! app's queries and edits of queued mutations, and burying what waits for a discarded create.

use super::rows::{absorbed_ids, row_to_mutation};
use super::{Applied, Queue, Store};
use crate::coalesce::{self, Incoming, Tail};
use crate::error::{Error, Result};
use crate::models::{Coalesce, Enqueued, EntityRef, Mutation, MutationState, Priority, StatusEvent};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

/// A validated mutation ready to be written.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub id: String,
    pub idempotency_key: String,
    /// True when the caller chose the key (a repeat enqueue with it is deduplicated).
    pub caller_key: bool,
    pub priority: Priority,
    pub entity: EntityRef,
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub temp_id: Option<String>,
    /// Strings that might be temp-id references (see `idmap::candidates`).
    pub candidates: Vec<String>,
    pub coalesce: Option<Coalesce>,
}

/// What one enqueue call wrote, and the cancellations the app is to be told of.
#[derive(Debug)]
pub(crate) struct EnqueueOutcome {
    pub enqueued: Vec<Enqueued>,
    pub cancelled: Vec<StatusEvent>,
}

/// Counts for the status snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub pending: u64,
    pub in_flight: u64,
    pub dead: u64,
    pub blocked: u64,
}

/// What coalescing did with a mutation being enqueued.
pub(super) enum Folded {
    /// Nothing: it is queued as a row of its own.
    No,
    /// It folded into the lane's last row.
    Into(Enqueued),
    /// A delete cancelled its entity's unsent lane, create first.
    Cancelled {
        enqueued: Enqueued,
        temp_id: String,
        event: Box<StatusEvent>,
    },
}

/// Coalescing inside the enqueue's transaction (rules in `coalesce`): a delete cancels a lane
/// that was never sent and starts with the create, anything else may fold into the lane's last
/// row. Rows in flight, tried, dead or with headers are never touched.
pub(super) async fn coalesce_with_lane(
    tx: &mut sqlx::SqliteConnection,
    p: &Prepared,
    mode: Coalesce,
    entity_key: &str,
    deps: &[&String],
    now: i64,
) -> Result<Folded> {
    // Never claimed: `claimed_at` is set by every claim and never cleared, so a request that
    // went out and was cancelled, cut by a crash or lost with the lease still counts as sent.
    let unsent = "state = 'pending' AND claimed_at IS NULL";
    if p.method == "DELETE" {
        if !p.headers.is_empty() {
            return Ok(Folded::No);
        }
        // language=SQLite
        let lane: Vec<(i64, String, Option<String>, bool)> = sqlx::query_as(&format!(
            "SELECT seq, id, temp_id, {unsent} FROM outbox WHERE entity_key = ? ORDER BY seq"
        ))
        .bind(entity_key)
        .fetch_all(&mut *tx)
        .await?;
        let Some(temp_id) = lane.first().and_then(|r| r.2.clone()) else {
            return Ok(Folded::No);
        };
        if !lane.iter().all(|r| r.3) {
            return Ok(Folded::No);
        }
        // Cancelled only while nothing outside the lane waits for the create: those would
        // point at an entity that never exists.
        let waited_for: bool = sqlx::query_scalar(
            // language=SQLite
            "SELECT EXISTS (SELECT 1 FROM mutation_deps WHERE temp_id = ?1 \
               AND mutation_seq NOT IN (SELECT seq FROM outbox WHERE entity_key = ?2)) \
             OR NOT EXISTS (SELECT 1 FROM id_map WHERE temp_id = ?1 AND server_id IS NULL AND discarded = 0)",
        )
        .bind(&temp_id)
        .bind(entity_key)
        .fetch_one(&mut *tx)
        .await?;
        if waited_for {
            return Ok(Folded::No);
        }
        let mut ids: Vec<(i64, String)> = sqlx::query_as(
            // language=SQLite
            "DELETE FROM coalesced WHERE into_seq IN (SELECT seq FROM outbox WHERE entity_key = ?) RETURNING seq, id",
        )
        .bind(entity_key)
        .fetch_all(&mut *tx)
        .await?;
        ids.extend(lane.into_iter().map(|r| (r.0, r.1)));
        ids.sort();
        sqlx::query(
            // language=SQLite
            "DELETE FROM mutation_deps WHERE mutation_seq IN (SELECT seq FROM outbox WHERE entity_key = ?)",
        )
        .bind(entity_key)
        .execute(&mut *tx)
        .await?;
        // language=SQLite
        sqlx::query("DELETE FROM outbox WHERE entity_key = ?")
            .bind(entity_key)
            .execute(&mut *tx)
            .await?;
        // language=SQLite
        sqlx::query("UPDATE id_map SET discarded = 1 WHERE temp_id = ?")
            .bind(&temp_id)
            .execute(&mut *tx)
            .await?;
        let mut ids: Vec<String> = ids.into_iter().map(|(_, id)| id).collect();
        ids.push(p.id.clone());
        return Ok(Folded::Cancelled {
            enqueued: Enqueued {
                id: p.id.clone(),
                seq: 0,
                idempotency_key: p.idempotency_key.clone(),
                coalesced_into: None,
                cancelled: true,
            },
            temp_id,
            event: Box::new(StatusEvent::Cancelled {
                ids,
                entity: p.entity.clone(),
            }),
        });
    }
    type TailRow = (
        i64,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        bool,
        bool,
        bool,
    );
    // language=SQLite
    let tail: Option<TailRow> = sqlx::query_as(&format!(
        "SELECT seq, id, method, path, body, temp_id, headers IS NOT NULL, coalesce, {unsent} \
         FROM outbox WHERE entity_key = ? ORDER BY seq DESC LIMIT 1"
    ))
    .bind(entity_key)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((seq, id, method, path, body, temp_id, has_headers, opted_in, unsent)) = tail else {
        return Ok(Folded::No);
    };
    // The folded row resolves only the references it already had (and its own temp id).
    if !deps.is_empty() {
        let held: Vec<String> =
            // language=SQLite
            sqlx::query_scalar("SELECT temp_id FROM mutation_deps WHERE mutation_seq = ?")
                .bind(seq)
                .fetch_all(&mut *tx)
                .await?;
        if !deps
            .iter()
            .all(|d| held.contains(d) || temp_id.as_ref() == Some(*d))
        {
            return Ok(Folded::No);
        }
    }
    let earlier: Option<serde_json::Value> = body
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(Error::corrupt("mutation body"))?;
    let later: Option<serde_json::Value> = p.body.as_deref().map(serde_json::from_str).transpose()?;
    let folded = coalesce::fold(
        &Tail {
            method: &method,
            path: &path,
            body: earlier.as_ref(),
            temp_id: temp_id.as_deref(),
            opted_in,
            has_headers,
            unsent,
        },
        &Incoming {
            method: &p.method,
            path: &p.path,
            body: later.as_ref(),
            mode,
            has_headers: !p.headers.is_empty(),
        },
    );
    let Some(new_body) = folded else {
        return Ok(Folded::No);
    };
    // language=SQLite
    sqlx::query("UPDATE outbox SET body = ? WHERE seq = ?")
        .bind(serde_json::to_string(&new_body)?)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    // No row is inserted, so the lane is lifted here as the insert's trigger would
    // (`outbox_lift_lane`, migration 0009).
    sqlx::query(
        // language=SQLite
        "UPDATE outbox SET priority = ?1 WHERE entity_key = ?2 AND priority < ?1",
    )
    .bind(p.priority.rank())
    .bind(entity_key)
    .execute(&mut *tx)
    .await?;
    // Its own place in the enqueue order, from the outbox's sequence (never reused).
    let own_seq: i64 =
        // language=SQLite
        sqlx::query_scalar("UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'outbox' RETURNING seq")
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query(
        // language=SQLite
        "INSERT INTO coalesced (seq, id, idempotency_key, into_seq, method, path, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(own_seq)
    .bind(&p.id)
    .bind(&p.idempotency_key)
    .bind(seq)
    .bind(&p.method)
    .bind(&p.path)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(Folded::Into(Enqueued {
        id: p.id.clone(),
        seq,
        idempotency_key: p.idempotency_key.clone(),
        coalesced_into: Some(id),
        cancelled: false,
    }))
}

/// Pending mutations that wait for `temp_id` (a discarded create or upload) become dead
/// letters with `error`, so they surface for review instead of waiting forever. Returns them
/// as the app is told (`heard`: a listener hears it live, else `untold` keeps it).
pub(crate) async fn bury_dependents(
    conn: &mut sqlx::SqliteConnection,
    temp_id: &str,
    error: &str,
    heard: bool,
    now: i64,
) -> Result<Vec<Applied>> {
    let rows = sqlx::query(
        // language=SQLite
        "UPDATE outbox SET state = 'dead', backing_off = 0, last_error = ?1, told = ?3, dead_at = ?4 \
         WHERE state = 'pending' AND seq IN (SELECT mutation_seq FROM mutation_deps WHERE temp_id = ?2) \
         RETURNING seq, id, entity_kind, entity_id, coalesce",
    )
    .bind(error)
    .bind(temp_id)
    .bind(heard)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let mut buried = Vec::with_capacity(rows.len());
    for r in &rows {
        buried.push(Applied::Dead {
            id: r.get("id"),
            entity: EntityRef {
                kind: r.get("entity_kind"),
                id: r.get("entity_id"),
            },
            status: None,
            error: error.to_string(),
            absorbed: absorbed_ids(&mut *conn, r.get("seq"), r.get("coalesce")).await?,
        });
    }
    Ok(buried)
}

impl Store {
    /// Write one call's mutations: all or none, acknowledged only once committed. Calls that
    /// arrive while another is committing share the next commit (a group commit: one fsync for
    /// all of them, each still all or none through its own savepoint).
    pub(crate) async fn enqueue(
        &self,
        items: Vec<Prepared>,
        now: i64,
        max_queue_len: u64,
    ) -> Result<EnqueueOutcome> {
        let (answer, mut answered) = tokio::sync::oneshot::channel();
        self.writes.push(WriteCall {
            items,
            now,
            max_queue_len,
            answer,
        });
        loop {
            tokio::select! {
                biased;
                // Written by another call's commit.
                r = &mut answered => return r.unwrap_or_else(|_| Err(interrupted())),
                leader = self.writes.writer.clone().lock_owned() => {
                    if let Ok(r) = answered.try_recv() {
                        return r;
                    }
                    let calls = self.writes.take();
                    if calls.is_empty() {
                        continue;
                    }
                    if calls.len() == 1 {
                        // This call alone (a leader's own call is always in what it takes): no
                        // savepoint and no task, nobody else waits on this commit.
                        let call = calls.into_iter().next().expect("one call");
                        let r = enqueue_alone(&self.pool, &call.items, call.now, call.max_queue_len).await;
                        if let Err(e) = &r {
                            self.writes.fail_if_locked(e);
                        }
                        drop(leader);
                        let _ = call.answer.send(r);
                        continue;
                    }
                    // Others wait on this commit: it runs to the end even if this caller goes away.
                    let pool = self.pool.clone();
                    let writes = self.writes.clone();
                    let _ = tokio::spawn(async move {
                        enqueue_group(&pool, calls, &writes).await;
                        drop(leader);
                    })
                    .await;
                }
            }
        }
    }
}

/// A call waiting for its mutations to be written.
#[derive(Debug)]
pub(crate) struct WriteCall {
    items: Vec<Prepared>,
    now: i64,
    max_queue_len: u64,
    answer: tokio::sync::oneshot::Sender<Result<EnqueueOutcome>>,
}

/// Calls waiting for the next commit, and the right to make it.
#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    waiting: std::sync::Mutex<Vec<WriteCall>>,
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl WriteQueue {
    fn push(&self, call: WriteCall) {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).push(call);
    }

    fn take(&self) -> Vec<WriteCall> {
        std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A write that waited out SQLite's busy timeout for a lock another connection holds
    /// answers the calls queued behind it with the same error: the lock has been held for the
    /// whole timeout, and each would otherwise start a wait of its own (up to twice the timeout).
    fn fail_if_locked(&self, e: &Error) {
        if e.is_lock_timeout() {
            for call in self.take() {
                let _ = call.answer.send(Err(same_failure(e)));
            }
        }
    }
}

/// The same failure for another caller (an error keeps one source: the copies carry its text).
fn same_failure(e: &Error) -> Error {
    let message = match e {
        Error::Storage { message, .. } => message.clone(),
        other => other.to_string(),
    };
    Error::Storage {
        message,
        source: None,
    }
}

fn interrupted() -> Error {
    Error::Storage {
        message: "the write was interrupted before its commit was confirmed".into(),
        source: None,
    }
}

async fn enqueue_alone(
    pool: &sqlx::SqlitePool,
    items: &[Prepared],
    now: i64,
    max_queue_len: u64,
) -> Result<EnqueueOutcome> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let out = enqueue_in(&mut tx, items, now, max_queue_len).await?;
    tx.commit().await?;
    Ok(out)
}

/// Several calls in one transaction, each in its own savepoint (a call that fails leaves
/// nothing), answered after the commit.
async fn enqueue_group(pool: &sqlx::SqlitePool, calls: Vec<WriteCall>, writes: &WriteQueue) {
    let mut results: Vec<Result<EnqueueOutcome>> = Vec::with_capacity(calls.len());
    let written = async {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        for call in &calls {
            let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
            match enqueue_in(&mut savepoint, &call.items, call.now, call.max_queue_len).await {
                Ok(out) => {
                    savepoint.commit().await?;
                    results.push(Ok(out));
                }
                Err(e) => {
                    savepoint.rollback().await?;
                    results.push(Err(e));
                }
            }
        }
        tx.commit().await?;
        Ok::<_, Error>(())
    }
    .await;
    match written {
        Ok(()) => {
            for (call, r) in calls.into_iter().zip(results) {
                let _ = call.answer.send(r);
            }
        }
        // Nothing of the group was committed: every call fails with the reason.
        Err(e) => {
            writes.fail_if_locked(&e);
            let mut calls = calls.into_iter();
            let first = calls.next();
            for call in calls {
                let _ = call.answer.send(Err(same_failure(&e)));
            }
            // The first keeps the error's source.
            if let Some(first) = first {
                let _ = first.answer.send(Err(e));
            }
        }
    }
}

/// One call's mutations inside the caller's transaction.
async fn enqueue_in(
    tx: &mut sqlx::SqliteConnection,
    items: &[Prepared],
    now: i64,
    max_queue_len: u64,
) -> Result<EnqueueOutcome> {
    // One statement for the queue size and for which of the strings these mutations
    // contain are known temp ids or placeholders (JSON {temp id: discarded}).
    let all: std::collections::BTreeSet<&String> = items.iter().flat_map(|p| &p.candidates).collect();
    let (open, known): (i64, String) = sqlx::query_as(
        // language=SQLite
        "SELECT (SELECT open_count FROM queue_stats WHERE id = 1), \
                    (SELECT json_group_object(temp_id, discarded) FROM id_map \
                     WHERE temp_id IN (SELECT value FROM json_each(?)))",
    )
    .bind(serde_json::to_string(&all)?)
    .fetch_one(&mut *tx)
    .await?;
    if open as u64 + items.len() as u64 > max_queue_len {
        return Err(Error::LimitExceeded(format!(
            "the outbox holds {open} open mutations; adding {} would exceed maxQueueLen ({max_queue_len})",
            items.len()
        )));
    }
    let mut known: HashMap<String, bool> = serde_json::from_str::<HashMap<String, i64>>(&known)?
        .into_iter()
        .map(|(k, d)| (k, d != 0))
        .collect();
    // Temp ids created by this call, by position: a mutation may reference a create that
    // comes later in the same call (across entities it then waits for it).
    let created_here: HashMap<&String, (usize, &EntityRef)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.temp_id.as_ref().map(|t| (t, (i, &p.entity))))
        .collect();
    let mut out = Vec::with_capacity(items.len());
    let mut cancelled = Vec::new();
    for (index, p) in items.iter().enumerate() {
        if p.caller_key {
            let existing: Option<(String, i64, Option<String>)> = sqlx::query_as(
                    // language=SQLite
                    "SELECT id, seq, NULL FROM outbox WHERE idempotency_key = ?1 \
                     UNION ALL SELECT c.id, c.into_seq, o.id FROM coalesced c JOIN outbox o ON o.seq = c.into_seq \
                       WHERE c.idempotency_key = ?1 \
                     UNION ALL SELECT id, seq, NULL FROM delivered WHERE idempotency_key = ?1 LIMIT 1",
                )
                .bind(&p.idempotency_key)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((id, seq, coalesced_into)) = existing {
                out.push(Enqueued {
                    id,
                    seq,
                    idempotency_key: p.idempotency_key.clone(),
                    coalesced_into,
                    cancelled: false,
                });
                continue;
            }
        }
        let entity_key = format!("{}\u{1f}{}", p.entity.kind, p.entity.id);
        let headers = if p.headers.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&p.headers)?)
        };
        // A later mutation of higher priority lifts the earlier ones of its entity (they
        // must be delivered first anyway): the INSERT's trigger `outbox_lift_lane` does it,
        // and a fold below does it itself.
        // References to temp ids of earlier creates (and upload placeholders) become
        // dependencies.
        let mut deps: Vec<&String> = Vec::new();
        for c in p.candidates.iter().filter(|c| Some(*c) != p.temp_id.as_ref()) {
            let depends = match known.get(c) {
                Some(true) => {
                    return Err(Error::Conflict(format!(
                        "references temp id '{c}' whose create was discarded"
                    )))
                }
                Some(false) => true,
                // A create later in this call: across entities the mutation waits for it.
                None => match created_here.get(c) {
                    Some((at, entity)) if *at > index => {
                        if entity.kind == p.entity.kind && entity.id == p.entity.id {
                            // It would wait for a create queued behind it in its own lane.
                            return Err(Error::invalid(format!(
                                "mutation {index} references temp id '{c}', whose create comes later in \
                                     the same entity: put the create first"
                            )));
                        }
                        true
                    }
                    _ => false,
                },
            };
            if depends {
                deps.push(c);
            }
        }
        if let Some(mode) = p.coalesce {
            match coalesce_with_lane(&mut *tx, p, mode, &entity_key, &deps, now).await? {
                Folded::No => {}
                Folded::Into(e) => {
                    out.push(e);
                    continue;
                }
                Folded::Cancelled {
                    enqueued,
                    temp_id,
                    event,
                } => {
                    known.insert(temp_id, true);
                    out.push(enqueued);
                    cancelled.push(*event);
                    continue;
                }
            }
        }
        let seq: i64 = sqlx::query_scalar(
                // language=SQLite
                "INSERT INTO outbox (id, idempotency_key, priority, entity_kind, entity_id, entity_key, method, path, \
                 headers, body, temp_id, created_at, next_attempt_at, coalesce, is_head) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
                         NOT EXISTS (SELECT 1 FROM outbox WHERE entity_key = ?6)) RETURNING seq",
            )
            .bind(&p.id)
            .bind(&p.idempotency_key)
            .bind(p.priority.rank())
            .bind(&p.entity.kind)
            .bind(&p.entity.id)
            .bind(&entity_key)
            .bind(&p.method)
            .bind(&p.path)
            .bind(headers)
            .bind(&p.body)
            .bind(&p.temp_id)
            .bind(now)
            .bind(now)
            .bind(p.coalesce.is_some())
            .fetch_one(&mut *tx)
            .await?;
        for c in deps {
            // language=SQLite
            sqlx::query("INSERT OR IGNORE INTO mutation_deps (mutation_seq, temp_id) VALUES (?, ?)")
                .bind(seq)
                .bind(c)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(t) = &p.temp_id {
            let inserted = sqlx::query(
                    // language=SQLite
                    "INSERT INTO id_map (temp_id, entity_kind, created_by) VALUES (?, ?, ?) ON CONFLICT(temp_id) DO NOTHING",
                )
                .bind(t)
                .bind(&p.entity.kind)
                .bind(seq)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 0 {
                return Err(Error::Conflict(format!(
                    "temp id '{t}' is already used by another create"
                )));
            }
            known.insert(t.clone(), false);
        }
        out.push(Enqueued {
            id: p.id.clone(),
            seq,
            idempotency_key: p.idempotency_key.clone(),
            coalesced_into: None,
            cancelled: false,
        });
    }
    Ok(EnqueueOutcome {
        enqueued: out,
        cancelled,
    })
}

impl Store {
    pub(crate) async fn counts(&self) -> Result<Counts> {
        let r = sqlx::query(
            // language=SQLite
            "SELECT pending, in_flight, dead, \
               (SELECT COUNT(DISTINCT d.mutation_seq) FROM id_map m INDEXED BY id_map_unresolved \
                  CROSS JOIN mutation_deps d ON d.temp_id = m.temp_id CROSS JOIN outbox o2 ON o2.seq = d.mutation_seq \
                  WHERE m.server_id IS NULL AND o2.state = 'pending') \
             FROM queue_stats WHERE id = 1",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Counts {
            pending: r.get::<i64, _>(0).max(0) as u64,
            in_flight: r.get::<i64, _>(1).max(0) as u64,
            dead: r.get::<i64, _>(2).max(0) as u64,
            blocked: r.get::<i64, _>(3).max(0) as u64,
        })
    }

    pub(crate) async fn open_not_dead(&self) -> Result<u64> {
        // language=SQLite
        let n: i64 = sqlx::query_scalar("SELECT pending + in_flight FROM queue_stats WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    /// When the earliest backoff of a pending row ends. It may already have passed: a backoff
    /// that ended after the last claim is due now (the next claim takes it), not absent; leaving
    /// it out stopped a drain as `waiting` with nothing due and let the scheduler sleep its
    /// whole interval.
    pub(crate) async fn next_due(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            // language=SQLite
            "SELECT MIN(next_attempt_at) FROM outbox INDEXED BY outbox_backing_off \
             WHERE backing_off = 1 AND state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Rows in `states`, in enqueue order; only those of `entity` when given (its lane index).
    pub(crate) async fn list(
        &self,
        states: &[MutationState],
        entity: Option<&EntityRef>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Mutation>> {
        let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let entity_key = entity.map(|e| format!("{}\u{1f}{}", e.kind, e.id));
        let rows = sqlx::query(
            // language=SQLite
            "SELECT o.*, (SELECT json_group_array(m.temp_id) FROM mutation_deps d JOIN id_map m ON m.temp_id = d.temp_id \
                          WHERE d.mutation_seq = o.seq AND m.server_id IS NULL) AS waiting \
             FROM outbox o WHERE o.state IN (SELECT value FROM json_each(?1)) AND (?2 IS NULL OR o.entity_key = ?2) \
             ORDER BY o.seq LIMIT ?3 OFFSET ?4",
        )
        .bind(serde_json::to_string(&states)?)
        .bind(entity_key)
        .bind(limit as i64)
        .bind(offset as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_mutation).collect()
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Mutation> {
        let row = sqlx::query(
            // language=SQLite
            "SELECT o.*, (SELECT json_group_array(m.temp_id) FROM mutation_deps d JOIN id_map m ON m.temp_id = d.temp_id \
                          WHERE d.mutation_seq = o.seq AND m.server_id IS NULL) AS waiting \
             FROM outbox o WHERE o.id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no queued mutation with id '{id}'")))?;
        row_to_mutation(&row)
    }

    /// Dead letter back to pending with a fresh retry budget. A request the server rejected
    /// (4xx) was not applied, so it gets a new idempotency key (the old one would replay the
    /// rejection); one that ran out of transient retries keeps its key (it may have been applied).
    pub(crate) async fn retry(&self, id: &str, now: i64) -> Result<()> {
        if self.revive_dead(Queue::Outbox, id, now).await? == 0 {
            self.get(id).await?;
            return Err(Error::Conflict(format!("mutation '{id}' is not a dead letter")));
        }
        Ok(())
    }

    /// Replace a dead letter's body (references recomputed) and make it pending again.
    pub(crate) async fn edit(
        &self,
        id: &str,
        body: Option<String>,
        candidates: Vec<String>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row: Option<(i64, Option<String>)> =
            // language=SQLite
            sqlx::query_as("SELECT seq, temp_id FROM outbox WHERE id = ? AND state = 'dead'")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((seq, temp_id)) = row else {
            drop(tx);
            self.get(id).await?;
            return Err(Error::Conflict(format!(
                "mutation '{id}' is not a dead letter; only dead letters can be edited"
            )));
        };
        sqlx::query(
            // An edited request is a new request: a server that stored the rejected one's
            // response under the old key would answer "key reused with a different request".
            // language=SQLite
            "UPDATE outbox SET body = ?, state = 'pending', backing_off = 0, attempts = 0, next_attempt_at = ?, idempotency_key = ? \
             WHERE seq = ?",
        )
        .bind(body)
        .bind(now)
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        // language=SQLite
        sqlx::query("DELETE FROM mutation_deps WHERE mutation_seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        let refs: Vec<String> = candidates
            .into_iter()
            .filter(|c| Some(c) != temp_id.as_ref())
            .collect();
        sqlx::query(
            // language=SQLite
            "INSERT OR IGNORE INTO mutation_deps (mutation_seq, temp_id) \
             SELECT ?1, temp_id FROM id_map WHERE temp_id IN (SELECT value FROM json_each(?2)) AND created_by < ?1",
        )
        .bind(seq)
        .bind(serde_json::to_string(&refs)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Delete a queued mutation (not one in flight). Discarding an unresolved create turns the
    /// mutations that wait for its temp id into dead letters, so they surface for review
    /// instead of waiting forever; they are returned as the app is told.
    pub(crate) async fn discard(&self, id: &str, heard: bool, now: i64) -> Result<Vec<Applied>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row: Option<(i64, String, Option<String>)> =
            // language=SQLite
            sqlx::query_as("SELECT seq, state, temp_id FROM outbox WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((seq, state, temp_id)) = row else {
            return Err(Error::NotFound(format!("no queued mutation with id '{id}'")));
        };
        if state == "in_flight" {
            return Err(Error::Conflict(format!(
                "mutation '{id}' is being sent; try again after the drain"
            )));
        }
        // language=SQLite
        sqlx::query("DELETE FROM outbox WHERE seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        // language=SQLite
        sqlx::query("DELETE FROM mutation_deps WHERE mutation_seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        // What was coalesced into it goes with it.
        // language=SQLite
        sqlx::query("DELETE FROM coalesced WHERE into_seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        let mut orphaned = Vec::new();
        if let Some(t) = temp_id {
            let resolved: Option<String> =
                // language=SQLite
                sqlx::query_scalar("SELECT server_id FROM id_map WHERE temp_id = ?")
                    .bind(&t)
                    .fetch_optional(&mut *tx)
                    .await?
                    .flatten();
            if resolved.is_none() {
                // language=SQLite
                sqlx::query("UPDATE id_map SET discarded = 1 WHERE temp_id = ?")
                    .bind(&t)
                    .execute(&mut *tx)
                    .await?;
                orphaned = bury_dependents(
                    &mut tx,
                    &t,
                    &format!("waits for temp id '{t}' whose create was discarded"),
                    heard,
                    now,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(orphaned)
    }
}
