//! The outbox store: one SQLite file (WAL), embedded migrations, and every statement the engine
//! runs. Write transactions start with `BEGIN IMMEDIATE` so a reader never has to upgrade to a
//! writer mid-transaction (which SQLite answers with SQLITE_BUSY instead of waiting).
//! Time is always passed in (`now` in ms since the epoch).

use crate::coalesce::{self, Incoming, Tail};
use crate::error::{Error, Result};
use crate::models::{
    AuthConfig, Coalesce, Delivered, DeliveredQuery, DrainReport, Durability, Enqueued, EntityRef, Mutation,
    MutationState, Priority, StatusEvent, SyncConfig,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

mod uploads;
pub(crate) use uploads::{ClaimedUpload, PreparedUpload, Target};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const KEY_CONFIG: &str = "config";
const KEY_AUTH: &str = "auth";
const KEY_ENABLED: &str = "enabled";
const KEY_LAST_SYNC: &str = "last_sync_at";
const KEY_LAST_ERROR: &str = "last_error";

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

/// Counts for the status snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub pending: u64,
    pub in_flight: u64,
    pub dead: u64,
    pub blocked: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Store {
    pool: SqlitePool,
    /// Drain bookkeeping (lease, claim, outcomes) on one connection with `synchronous=NORMAL`:
    /// losing its last commits to a power cut only means resending with the same idempotency
    /// key (the server replays), so an fsync per outcome buys nothing. Enqueues stay on `pool`
    /// (FULL by default): an acknowledged write must survive power loss.
    drain: SqlitePool,
    path: PathBuf,
}

impl Store {
    /// Open (creating if needed) and migrate. `durability` overrides the persisted setting.
    pub(crate) async fn open(path: &Path, durability: Option<Durability>, key: Option<&str>) -> Result<Self> {
        if path.as_os_str().is_empty() {
            return Err(Error::invalid("database path is empty"));
        }
        let mut base =
            SqliteConnectOptions::from_str("sqlite://").map_err(|e| Error::Internal(e.to_string()))?;
        if let Some(k) = key {
            if !cfg!(any(feature = "sqlcipher", feature = "sqlcipher-vendored")) {
                return Err(Error::invalid(
                    "an encryption key needs the `sqlcipher` cargo feature (this build would write plaintext)",
                ));
            }
            if k.is_empty() {
                return Err(Error::invalid("the encryption key is empty"));
            }
            // sqlx issues `key` first on every connection, before any other pragma. A raw key
            // (`x'<64 hex>'`) is double-quoted as SQLCipher expects; a passphrase is a string.
            let raw = k.len() == 67
                && k.starts_with("x'")
                && k.ends_with('\'')
                && k[2..66].chars().all(|c| c.is_ascii_hexdigit());
            let value = if raw {
                format!("\"{k}\"")
            } else {
                format!("'{}'", k.replace('\'', "''"))
            };
            base = base.pragma("key", value);
        }
        let base = base
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // Read the persisted durability on a first connection, so the pool is built right.
        let migrated = durability.is_none();
        let durability = match durability {
            Some(d) => d,
            None => {
                let probe = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(base.clone().synchronous(SqliteSynchronous::Full))
                    .await?;
                MIGRATOR.run(&probe).await?;
                let cfg: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
                    .bind(KEY_CONFIG)
                    .fetch_optional(&probe)
                    .await?;
                probe.close().await;
                cfg.and_then(|c| serde_json::from_str::<SyncConfig>(&c).ok())
                    .map(|c| c.durability)
                    .unwrap_or_default()
            }
        };
        let sync = match durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Relaxed => SqliteSynchronous::Normal,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(base.clone().synchronous(sync))
            .await?;
        if !migrated {
            MIGRATOR.run(&pool).await?;
        }
        let drain = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(base.synchronous(SqliteSynchronous::Normal))
            .await?;
        Ok(Self {
            pool,
            drain,
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) async fn close(&self) {
        self.drain.close().await;
        self.pool.close().await;
    }

    // ---- settings -------------------------------------------------------------------------

    async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        put_setting(&self.pool, key, value).await
    }

    pub(crate) async fn load_config(&self) -> Result<Option<SyncConfig>> {
        match self.get_setting(KEY_CONFIG).await? {
            None => Ok(None),
            Some(s) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| Error::Storage(format!("stored configuration is unreadable: {e}"))),
        }
    }

    /// The stored configuration as JSON text (cheap to compare with a cached copy).
    pub(crate) async fn load_config_raw(&self) -> Result<Option<String>> {
        self.get_setting(KEY_CONFIG).await
    }

    pub(crate) async fn save_config(&self, cfg: &SyncConfig) -> Result<()> {
        self.set_setting(KEY_CONFIG, &serde_json::to_string(cfg)?).await
    }

    pub(crate) async fn load_auth(&self) -> Result<AuthConfig> {
        Ok(self
            .get_setting(KEY_AUTH)
            .await?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default())
    }

    pub(crate) async fn save_auth(&self, auth: &AuthConfig) -> Result<()> {
        self.set_setting(KEY_AUTH, &serde_json::to_string(auth)?).await
    }

    /// Store `new` only if the stored credentials are still `old` (a token refresh must not
    /// overwrite a sign-out or another user's sign-in that happened meanwhile).
    pub(crate) async fn replace_auth(&self, old: &AuthConfig, new: &AuthConfig) -> Result<bool> {
        let old_json = serde_json::to_string(old)?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let stored: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(KEY_AUTH)
            .fetch_optional(&mut *tx)
            .await?;
        let current = stored
            .and_then(|s| serde_json::from_str::<AuthConfig>(&s).ok())
            .unwrap_or_default();
        if serde_json::to_string(&current)? != old_json {
            return Ok(false);
        }
        put_setting(&mut *tx, KEY_AUTH, &serde_json::to_string(new)?).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(crate) async fn enabled(&self) -> Result<bool> {
        Ok(self.get_setting(KEY_ENABLED).await?.as_deref() == Some("1"))
    }

    pub(crate) async fn set_enabled(&self, on: bool) -> Result<()> {
        self.set_setting(KEY_ENABLED, if on { "1" } else { "0" }).await
    }

    pub(crate) async fn set_last_error(&self, message: &str) -> Result<()> {
        self.set_setting(KEY_LAST_ERROR, message).await
    }

    pub(crate) async fn last_sync(&self) -> Result<(Option<i64>, Option<String>)> {
        let at = self
            .get_setting(KEY_LAST_SYNC)
            .await?
            .and_then(|s| s.parse().ok());
        let err = self.get_setting(KEY_LAST_ERROR).await?.filter(|s| !s.is_empty());
        Ok((at, err))
    }

    // ---- enqueue --------------------------------------------------------------------------

    /// Write mutations in one transaction: all or none.
    pub(crate) async fn enqueue(
        &self,
        items: &[Prepared],
        now: i64,
        max_queue_len: u64,
    ) -> Result<EnqueueOutcome> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // One statement for the queue size and for which of the strings these mutations
        // contain are known temp ids or placeholders (JSON {temp id: discarded}).
        let all: std::collections::BTreeSet<&String> = items.iter().flat_map(|p| &p.candidates).collect();
        let (open, known): (i64, String) = sqlx::query_as(
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
            // A later mutation of higher priority lifts the earlier ones of its entity: they
            // must be delivered first anyway. (Nothing is below `low`.)
            if p.priority.rank() > 0 {
                sqlx::query("UPDATE outbox SET priority = ?1 WHERE entity_key = ?2 AND priority < ?1")
                    .bind(p.priority.rank())
                    .bind(&entity_key)
                    .execute(&mut *tx)
                    .await?;
            }
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
                match coalesce_with_lane(&mut tx, p, mode, &entity_key, &deps, now).await? {
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
                sqlx::query("INSERT OR IGNORE INTO mutation_deps (mutation_seq, temp_id) VALUES (?, ?)")
                    .bind(seq)
                    .bind(c)
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(t) = &p.temp_id {
                let inserted = sqlx::query(
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
        tx.commit().await?;
        Ok(EnqueueOutcome {
            enqueued: out,
            cancelled,
        })
    }

    // ---- lease ----------------------------------------------------------------------------

    /// Take the single-drainer lease for `ttl_ms` on the lease clock (monotonic, shared by the
    /// processes of one boot). A lease whose expiry lies further ahead than it was ever granted
    /// for (a reboot reset the clock, or a row written by an older version on the wall clock)
    /// counts as expired.
    pub(crate) async fn acquire_lease(&self, owner: &str, now: i64, ttl_ms: i64) -> Result<bool> {
        let mut tx = self.drain.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
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
        for table in ["outbox", "uploads"] {
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
        for table in ["outbox", "uploads"] {
            n += sqlx::query(&format!(
                "UPDATE {table} SET state = 'pending', claimed_by = NULL WHERE state = 'in_flight'"
            ))
            .execute(&self.drain)
            .await?
            .rows_affected();
        }
        Ok(n)
    }

    /// Put every row this drainer still holds back to pending (cancellation).
    /// `table` is `outbox` or `uploads` (each pass releases only its own rows).
    pub(crate) async fn recover_owned(&self, table: &str, owner: &str) -> Result<u64> {
        debug_assert!(table == "outbox" || table == "uploads");
        Ok(sqlx::query(&format!(
            "UPDATE {table} SET state = 'pending', claimed_by = NULL WHERE state = 'in_flight' AND claimed_by = ?"
        ))
        .bind(owner)
        .execute(&self.drain)
        .await?
        .rows_affected())
    }

    // ---- claim and outcomes ---------------------------------------------------------------

    #[cfg(test)]
    /// Atomically claim up to `limit` sendable rows: each the oldest open row of its entity,
    /// due, with every referenced temp id resolved; priority first, then enqueue order.
    pub(crate) async fn claim(
        &self,
        owner: &str,
        now: i64,
        limit: u32,
        max_wait_ms: i64,
    ) -> Result<Vec<Claimed>> {
        // Unit tests that do not exercise the lease claim as its first holder.
        sqlx::query("INSERT INTO drain_lease (id, owner, expires_at, ttl_ms) VALUES (1, ?, ?, 0) ON CONFLICT DO NOTHING")
            .bind(owner)
            .bind(now + 60_000)
            .execute(&self.drain)
            .await?;
        Ok(self
            .settle_and_claim(owner, &[], true, now, limit, max_wait_ms)
            .await?
            .1)
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

    /// Delivered: move the row to `delivered` and record the server id of a create.
    #[cfg(test)]
    pub(crate) async fn complete(
        &self,
        seq: i64,
        owner: &str,
        status: u16,
        server_id: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let o = Outcome::Complete {
            seq,
            status,
            server_id: server_id.map(str::to_string),
            now,
            had_deps: true,
            body: None,
        };
        Ok(self.settle(owner, &[o], true).await?[0].written())
    }

    /// Transient failure: back to pending, due at `next_at`.
    #[cfg(test)]
    pub(crate) async fn reschedule(
        &self,
        seq: i64,
        owner: &str,
        attempts: u32,
        next_at: i64,
        status: Option<u16>,
        error: &str,
    ) -> Result<bool> {
        let o = Outcome::Reschedule {
            seq,
            attempts,
            next_at,
            status,
            error: error.to_string(),
        };
        Ok(self.settle(owner, &[o], true).await?[0].written())
    }

    /// Permanent failure or retry limit: dead letter. Blocks only its own entity.
    #[cfg(test)]
    pub(crate) async fn bury(
        &self,
        seq: i64,
        owner: &str,
        attempts: u32,
        status: Option<u16>,
        error: &str,
    ) -> Result<bool> {
        let o = Outcome::Bury {
            seq,
            attempts,
            status,
            error: error.to_string(),
            now: 0,
        };
        Ok(self.settle(owner, &[o], true).await?[0].written())
    }

    // ---- queries --------------------------------------------------------------------------

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
        if self.revive_dead("outbox", id, now).await? == 0 {
            self.get(id).await?;
            return Err(Error::Conflict(format!("mutation '{id}' is not a dead letter")));
        }
        Ok(())
    }

    /// The retry rule shared by mutations and uploads (`table` is `outbox` or `uploads`).
    pub(crate) async fn revive_dead(&self, table: &str, id: &str, now: i64) -> Result<u64> {
        debug_assert!(table == "outbox" || table == "uploads");
        Ok(sqlx::query(&format!(
            "UPDATE {table} SET state = 'pending', attempts = 0, next_attempt_at = ?,{reset} \
             idempotency_key = CASE WHEN last_status BETWEEN 400 AND 499 AND last_status NOT IN (408, 409, 425, 429) \
                               THEN ? ELSE idempotency_key END \
             WHERE id = ? AND state = 'dead'",
            reset = if table == "outbox" { " backing_off = 0," } else { "" }
        ))
        .bind(now)
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected())
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
            "UPDATE outbox SET body = ?, state = 'pending', backing_off = 0, attempts = 0, next_attempt_at = ?, idempotency_key = ? \
             WHERE seq = ?",
        )
        .bind(body)
        .bind(now)
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM mutation_deps WHERE mutation_seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        let refs: Vec<String> = candidates
            .into_iter()
            .filter(|c| Some(c) != temp_id.as_ref())
            .collect();
        sqlx::query(
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
        sqlx::query("DELETE FROM outbox WHERE seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM mutation_deps WHERE mutation_seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        // What was coalesced into it goes with it.
        sqlx::query("DELETE FROM coalesced WHERE into_seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        let mut orphaned = Vec::new();
        if let Some(t) = temp_id {
            let resolved: Option<String> =
                sqlx::query_scalar("SELECT server_id FROM id_map WHERE temp_id = ?")
                    .bind(&t)
                    .fetch_optional(&mut *tx)
                    .await?
                    .flatten();
            if resolved.is_none() {
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

    // ---- runs -----------------------------------------------------------------------------

    pub(crate) async fn record_run(&self, report: &DrainReport) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
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
            "SELECT report FROM drain_runs ORDER BY finished_at DESC, run_id DESC LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().filter_map(|r| serde_json::from_str(r).ok()).collect())
    }

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
            out.applied.push(uploads::upload_outcome(r));
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
            applied.push(uploads::upload_outcome(r));
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

    /// Drop delivered rows and old run reports past the retention (never the id map).
    pub(crate) async fn prune(&self, now: i64, retention_ms: u64) -> Result<u64> {
        let cutoff = now - retention_ms as i64;
        let mut n = sqlx::query("DELETE FROM delivered WHERE delivered_at < ?")
            .bind(cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected();
        n += sqlx::query(
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

    pub(crate) async fn server_id_for(&self, temp_id: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT server_id FROM id_map WHERE temp_id = ?")
                .bind(temp_id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }
}

/// Insert or replace one setting (on the pool or inside a transaction).
async fn put_setting<'e>(conn: impl sqlx::SqliteExecutor<'e>, key: &str, value: &str) -> Result<()> {
    // language=SQLite
    sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(key)
        .bind(value)
        .execute(conn)
        .await?;
    Ok(())
}

/// What coalescing did with a mutation being enqueued.
enum Folded {
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
async fn coalesce_with_lane(
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
            "DELETE FROM coalesced WHERE into_seq IN (SELECT seq FROM outbox WHERE entity_key = ?) RETURNING seq, id",
        )
        .bind(entity_key)
        .fetch_all(&mut *tx)
        .await?;
        ids.extend(lane.into_iter().map(|r| (r.0, r.1)));
        ids.sort();
        sqlx::query(
            "DELETE FROM mutation_deps WHERE mutation_seq IN (SELECT seq FROM outbox WHERE entity_key = ?)",
        )
        .bind(entity_key)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM outbox WHERE entity_key = ?")
            .bind(entity_key)
            .execute(&mut *tx)
            .await?;
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
    let earlier: Option<serde_json::Value> = body.as_deref().map(serde_json::from_str).transpose()?;
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
    sqlx::query("UPDATE outbox SET body = ? WHERE seq = ?")
        .bind(serde_json::to_string(&new_body)?)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    // Its own place in the enqueue order, from the outbox's sequence (never reused).
    let own_seq: i64 =
        sqlx::query_scalar("UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'outbox' RETURNING seq")
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query(
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

/// A dead letter as the app is told it, from a row with seq, id, entity_kind, entity_id,
/// last_status, last_error and coalesce.
async fn dead_row(conn: &mut sqlx::SqliteConnection, r: &SqliteRow) -> Result<Applied> {
    Ok(Applied::Dead {
        id: r.get("id"),
        entity: EntityRef {
            kind: r.get("entity_kind"),
            id: r.get("entity_id"),
        },
        status: r.get::<Option<i64>, _>("last_status").map(|s| s as u16),
        error: r.get::<Option<String>, _>("last_error").unwrap_or_default(),
        absorbed: absorbed_ids(conn, r.get("seq"), r.get("coalesce")).await?,
    })
}

/// Ids of the mutations coalesced into row `seq` (none unless it opted in), in enqueue order.
async fn absorbed_ids(conn: &mut sqlx::SqliteConnection, seq: i64, coalesce: bool) -> Result<Vec<String>> {
    if !coalesce {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        // language=SQLite
        "SELECT id FROM coalesced WHERE into_seq = ? ORDER BY seq",
    )
    .bind(seq)
    .fetch_all(conn)
    .await?)
}

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

/// Whether an outcome was written (this drainer still owned the row), and what the app is told.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Applied {
    /// Not ours any more (the lease moved on): nothing written.
    No,
    /// Written (rescheduled or released).
    Yes,
    /// The row first, then the mutations coalesced into it, in enqueue order.
    Delivered(Vec<Delivered>),
    Dead {
        id: String,
        entity: EntityRef,
        status: Option<u16>,
        error: String,
        /// Ids of the mutations coalesced into the row, dead with it.
        absorbed: Vec<String>,
    },
    /// An upload finished or moved to the dead letter, as the app is told it
    /// (`StatusEvent::Uploaded` / `StatusEvent::UploadDead`).
    Upload(StatusEvent),
}

impl Applied {
    pub(crate) fn written(&self) -> bool {
        !matches!(self, Applied::No)
    }
}

async fn apply_outcome(
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
                sqlx::query("DELETE FROM mutation_deps WHERE mutation_seq = ?")
                    .bind(seq)
                    .execute(&mut *conn)
                    .await?;
            }
            if let (Some(temp), Some(server)) = (&temp_id, server_id) {
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

fn delivered_row(r: &SqliteRow) -> Delivered {
    Delivered {
        id: r.get("id"),
        entity: EntityRef {
            kind: r.get("entity_kind"),
            id: r.get("entity_id"),
        },
        method: r.get("method"),
        path: r.get("path"),
        status: r.get::<i64, _>("status") as u16,
        temp_id: r.get("temp_id"),
        server_id: r.get("server_id"),
        delivered_at: r.get("delivered_at"),
        body: parse_body(r.get::<Option<String>, _>("body").as_deref()),
    }
}

/// A kept response body as stored (JSON text written by the drain); unreadable text (a hand-
/// edited file) is left out rather than failing the query.
fn parse_body(text: Option<&str>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

fn row_to_mutation(r: &SqliteRow) -> Result<Mutation> {
    let headers: Option<String> = r.get("headers");
    let body: Option<String> = r.get("body");
    let waiting: Option<String> = r.get("waiting");
    Ok(Mutation {
        id: r.get("id"),
        seq: r.get("seq"),
        idempotency_key: r.get("idempotency_key"),
        priority: Priority::from_rank(r.get("priority")),
        entity: EntityRef {
            kind: r.get("entity_kind"),
            id: r.get("entity_id"),
        },
        method: r.get("method"),
        path: r.get("path"),
        body: body.and_then(|b| serde_json::from_str(&b).ok()),
        headers: headers
            .and_then(|h| serde_json::from_str(&h).ok())
            .unwrap_or_default(),
        temp_id: r.get("temp_id"),
        created_at: r.get("created_at"),
        attempts: r.get::<i64, _>("attempts") as u32,
        next_attempt_at: r.get("next_attempt_at"),
        last_status: r.get::<Option<i64>, _>("last_status").map(|s| s as u16),
        last_error: r.get("last_error"),
        state: MutationState::parse(&r.get::<String, _>("state")),
        waiting_for: waiting
            .and_then(|w| serde_json::from_str(&w).ok())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db"), None, None).await.unwrap();
        (dir, s)
    }

    fn p(entity: &str, prio: Priority, body: Option<&str>, temp: Option<&str>) -> Prepared {
        let body = body.map(str::to_string);
        let candidates = crate::idmap::candidates(
            "/x",
            body.as_deref().map(|b| serde_json::from_str(b).unwrap()).as_ref(),
            entity,
        )
        .into_iter()
        .collect();
        Prepared {
            id: uuid::Uuid::new_v4().to_string(),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            caller_key: false,
            priority: prio,
            entity: EntityRef {
                kind: "k".into(),
                id: entity.into(),
            },
            method: "POST".into(),
            path: "/x".into(),
            headers: BTreeMap::new(),
            body,
            temp_id: temp.map(str::to_string),
            candidates,
            coalesce: None,
        }
    }

    const T0: i64 = 1_000_000;
    const MAX_WAIT: i64 = 10_000_000;

    #[tokio::test]
    async fn claim_takes_heads_by_priority_then_fifo() {
        let (_d, s) = store().await;
        let items = [
            p("a", Priority::Low, None, None),
            p("a", Priority::Low, None, None),
            p("b", Priority::Normal, None, None),
            p("c", Priority::High, None, None),
            p("d", Priority::Normal, None, None),
        ];
        let e = s.enqueue(&items, T0, 100).await.unwrap().enqueued;
        let got = s.claim("me", T0, 10, MAX_WAIT).await.unwrap();
        let seqs: Vec<i64> = got.iter().map(|c| c.seq).collect();
        // c (high), b, d (normal, FIFO), a's head (low); a's second row waits for its head.
        assert_eq!(seqs, vec![e[3].seq, e[2].seq, e[4].seq, e[0].seq]);
        assert!(
            s.claim("me", T0, 10, MAX_WAIT).await.unwrap().is_empty(),
            "nothing else is sendable"
        );
        // Delivering a's head makes its successor the head.
        assert!(s.complete(e[0].seq, "me", 200, None, T0).await.unwrap());
        let got = s.claim("me", T0, 10, MAX_WAIT).await.unwrap();
        assert_eq!(got.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![e[1].seq]);
    }

    #[tokio::test]
    async fn later_high_priority_lifts_its_entity() {
        let (_d, s) = store().await;
        let e = s
            .enqueue(
                &[
                    p("a", Priority::Low, None, None),
                    p("b", Priority::Normal, None, None),
                    p("a", Priority::Critical, None, None),
                ],
                T0,
                100,
            )
            .await
            .unwrap()
            .enqueued;
        let got = s.claim("me", T0, 1, MAX_WAIT).await.unwrap();
        assert_eq!(got[0].seq, e[0].seq, "a's first row inherits critical");
    }

    #[tokio::test]
    async fn backoff_dead_letters_and_clock_jumps() {
        let (_d, s) = store().await;
        let e = s
            .enqueue(
                &[
                    p("a", Priority::Normal, None, None),
                    p("a", Priority::Normal, None, None),
                    p("b", Priority::Normal, None, None),
                ],
                T0,
                100,
            )
            .await
            .unwrap()
            .enqueued;
        let got = s.claim("me", T0, 10, MAX_WAIT).await.unwrap();
        assert_eq!(got.len(), 2);
        assert!(s
            .reschedule(e[0].seq, "me", 1, T0 + 5_000, Some(503), "HTTP 503")
            .await
            .unwrap());
        assert!(s.bury(e[2].seq, "me", 1, Some(422), "HTTP 422").await.unwrap());
        assert!(
            s.claim("me", T0 + 4_999, 10, MAX_WAIT).await.unwrap().is_empty(),
            "not due yet; b is dead"
        );
        assert_eq!(
            s.claim("me", T0 + 5_000, 10, MAX_WAIT).await.unwrap()[0].seq,
            e[0].seq
        );
        assert!(s
            .reschedule(e[0].seq, "me", 2, T0 + 5_000_000_000, Some(503), "x")
            .await
            .unwrap());
        // The wall clock jumped back: a due time beyond any wait we schedule counts as due.
        assert_eq!(s.claim("me", T0, 10, MAX_WAIT).await.unwrap()[0].seq, e[0].seq);
        let c = s.counts().await.unwrap();
        assert_eq!((c.pending, c.in_flight, c.dead), (1, 1, 1));
        assert_eq!(s.next_due().await.unwrap(), None);
    }

    #[tokio::test]
    async fn unresolved_temp_ids_wait_and_resolve() {
        let (_d, s) = store().await;
        let e = s
            .enqueue(
                &[
                    p("v1", Priority::Low, Some(r#"{"a":1}"#), Some("tmp-1")),
                    p("n1", Priority::Critical, Some(r#"{"v":"tmp-1"}"#), None),
                ],
                T0,
                100,
            )
            .await
            .unwrap()
            .enqueued;
        assert_eq!(s.counts().await.unwrap().blocked, 1);
        let got = s.claim("me", T0, 10, MAX_WAIT).await.unwrap();
        assert_eq!(got.len(), 1, "the note waits for the visit's create");
        assert!(s.complete(e[0].seq, "me", 201, Some("srv_9"), T0).await.unwrap());
        let got = s.claim("me", T0, 10, MAX_WAIT).await.unwrap();
        assert_eq!(got[0].seq, e[1].seq);
        assert_eq!(got[0].mapping.get("tmp-1").map(String::as_str), Some("srv_9"));
        assert_eq!(s.server_id_for("tmp-1").await.unwrap().as_deref(), Some("srv_9"));
    }

    #[tokio::test]
    async fn crash_recovery_and_lease() {
        let (_d, s) = store().await;
        s.enqueue(
            &[
                p("a", Priority::Normal, None, None),
                p("b", Priority::Normal, None, None),
            ],
            T0,
            100,
        )
        .await
        .unwrap();
        assert!(s.acquire_lease("dead-drainer", T0, 1_000).await.unwrap());
        assert_eq!(s.claim("dead-drainer", T0, 10, MAX_WAIT).await.unwrap().len(), 2);
        // Another drainer cannot take a live lease...
        assert!(!s.acquire_lease("next", T0 + 999, 1_000).await.unwrap());
        // ...but can once it expired, and then recovers the orphaned rows.
        assert!(s.acquire_lease("next", T0 + 1_000, 1_000).await.unwrap());
        assert_eq!(s.recover_in_flight().await.unwrap(), 2);
        assert!(
            !s.complete(1, "dead-drainer", 200, None, T0).await.unwrap(),
            "the old owner's late answer is ignored"
        );
        assert!(
            s.claim("dead-drainer", T0 + 1_000, 10, MAX_WAIT)
                .await
                .unwrap()
                .is_empty(),
            "a drainer that lost the lease cannot claim (fencing)"
        );
        assert_eq!(s.claim("next", T0 + 1_000, 10, MAX_WAIT).await.unwrap().len(), 2);
        // A lease expiring implausibly far ahead (clock jumped back) is treated as expired.
        s.release_lease("next").await.unwrap();
        assert!(s.acquire_lease("x", T0 + 10_000_000, 1_000).await.unwrap());
        assert!(s.acquire_lease("y", T0, 1_000).await.unwrap());
        assert!(s.renew_lease("y", T0 + 500, 1_000).await.unwrap());
        assert!(!s.renew_lease("x", T0 + 500, 1_000).await.unwrap());
    }

    #[tokio::test]
    async fn prune_drops_old_delivered_rows_only() {
        let (_d, s) = store().await;
        let e = s
            .enqueue(
                &[
                    p("a", Priority::Normal, None, None),
                    p("b", Priority::Normal, None, None),
                ],
                T0,
                100,
            )
            .await
            .unwrap()
            .enqueued;
        s.claim("me", T0, 10, MAX_WAIT).await.unwrap();
        s.complete(e[0].seq, "me", 200, None, T0).await.unwrap();
        s.complete(e[1].seq, "me", 200, None, T0 + 10_000).await.unwrap();
        assert_eq!(s.prune(T0 + 10_001, 5_000).await.unwrap(), 1);
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM delivered")
            .fetch_one(&s.pool)
            .await
            .unwrap();
        assert_eq!(left, 1);
    }

    #[tokio::test]
    async fn discarding_an_unresolved_create_surfaces_its_dependents() {
        let (_d, s) = store().await;
        let c = p("v1", Priority::Normal, None, Some("tmp-1"));
        let id = c.id.clone();
        s.enqueue(
            &[c, p("n1", Priority::Normal, Some(r#"{"v":"tmp-1"}"#), None)],
            T0,
            100,
        )
        .await
        .unwrap();
        assert_eq!(s.discard(&id, true, 0).await.unwrap().len(), 1);
        let c = s.counts().await.unwrap();
        assert_eq!((c.pending, c.dead), (0, 1));
        // A new reference to the discarded temp id is refused.
        let e = s
            .enqueue(
                &[p("n2", Priority::Normal, Some(r#"{"v":"tmp-1"}"#), None)],
                T0,
                100,
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "conflict");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, failure_persistence: None, ..Default::default() })]

        /// Whatever the mix of entities and priorities: each entity is delivered in enqueue
        /// order, and every claim takes a head of the highest (inherited) priority waiting.
        #[test]
        fn claims_respect_entity_order_and_priority(
            ops in proptest::collection::vec((0usize..5, 0i64..4), 1..40),
            batch in proptest::prelude::any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (_d, s) = store().await;
                let items: Vec<Prepared> = ops
                    .iter()
                    .map(|(e, pr)| p(&format!("e{e}"), Priority::from_rank(*pr), None, None))
                    .collect();
                if batch {
                    s.enqueue(&items, T0, 1_000).await.unwrap();
                } else {
                    for it in &items {
                        s.enqueue(std::slice::from_ref(it), T0, 1_000).await.unwrap();
                    }
                }
                let mut last_seq: HashMap<String, i64> = HashMap::new();
                let mut delivered = 0;
                loop {
                    let best: Option<i64> = sqlx::query_scalar(
                        "SELECT MAX(priority) FROM outbox WHERE is_head = 1 AND state = 'pending'",
                    )
                    .fetch_one(&s.pool)
                    .await
                    .unwrap();
                    let got = s.claim("me", T0, 1, MAX_WAIT).await.unwrap();
                    let Some(c) = got.into_iter().next() else { break };
                    assert_eq!(Some(c.priority.rank()), best, "a head of the highest priority goes first");
                    let entity: String = sqlx::query_scalar("SELECT entity_id FROM outbox WHERE seq = ?")
                        .bind(c.seq)
                        .fetch_one(&s.pool)
                        .await
                        .unwrap();
                    if let Some(prev) = last_seq.insert(entity.clone(), c.seq) {
                        assert!(prev < c.seq, "{entity}: seq {} after {prev}", c.seq);
                    }
                    assert!(s.complete(c.seq, "me", 200, None, T0).await.unwrap());
                    delivered += 1;
                }
                assert_eq!(delivered, ops.len(), "everything delivered, nothing stuck");
            });
        }
    }
}
