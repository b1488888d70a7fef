//! Statements of the upload queue. Same rules as the outbox: claims are atomic
//! (`UPDATE … RETURNING`), outcomes only apply to rows the caller still owns, drain bookkeeping
//! runs on the `drain` connection, enqueues on the durable pool.

use super::outbox::bury_dependents;
use super::rows::{row_to_upload, upload_outcome};
use super::{Applied, Queue, Store};
use crate::error::{Error, Result};
use crate::models::{EnqueuedUpload, EntityRef, Priority, Upload, UploadDestination, UploadState};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;

/// `id_map.entity_kind` of an upload's placeholder.
const PLACEHOLDER_KIND: &str = "__upload";

/// What happened to one claimed upload (the upload queue's `Outcome`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum UploadOutcome {
    /// Uploaded: the result resolves the placeholder.
    Complete {
        seq: i64,
        status: u16,
        result: String,
        now: i64,
    },
    /// Transient failure: pending again at `next_at`; `resign` drops a signed URL the storage
    /// host refused, so the next attempt signs again.
    Reschedule {
        seq: i64,
        attempts: u32,
        next_at: i64,
        status: Option<u16>,
        error: String,
        resign: bool,
    },
    /// Dead letter (blocks only the mutations that reference it).
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

/// What settling an upload wrote (nothing when the row is no longer this drainer's).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum UploadSettled {
    No,
    /// Rescheduled or released.
    Yes,
    /// Uploaded: the file to delete when the plugin owns its copy, and what the app is told.
    Done {
        file: String,
        owned: bool,
        told: Applied,
    },
    /// Dead letter, as the app is told it.
    Dead(Applied),
}

/// A validated upload ready to be written.
#[derive(Debug, Clone)]
pub(crate) struct PreparedUpload {
    pub id: String,
    pub placeholder: String,
    pub idempotency_key: String,
    pub caller_key: bool,
    pub priority: Priority,
    pub entity: Option<EntityRef>,
    pub file_path: String,
    pub owned: bool,
    pub file_name: Option<String>,
    pub content_type: String,
    pub size: u64,
    pub destination: UploadDestination,
}

/// Where a signed upload's bytes go, as returned by the sign endpoint (and stored as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Target {
    pub url: String,
    #[serde(default = "put")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Form fields: when present the file is sent as `multipart/form-data` (e.g. Cloudinary's
    /// signed upload: api_key, timestamp, signature), the file as part `fileField`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_field: Option<String>,
    /// Milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Where the file will be, when the upload response does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_url: Option<String>,
}

fn put() -> String {
    "PUT".into()
}

/// An upload claimed for sending.
#[derive(Debug, Clone)]
pub(crate) struct ClaimedUpload {
    pub seq: i64,
    pub id: String,
    pub placeholder: String,
    pub idempotency_key: String,
    pub file_path: String,
    pub file_name: Option<String>,
    pub content_type: String,
    pub size: u64,
    pub destination: UploadDestination,
    pub target: Option<Target>,
    pub attempts: u32,
    /// The target was signed in this run: used as it is, even if it lives shorter than the
    /// upload should take (signing again would only get the same lifetime).
    pub signed_now: bool,
}

const KEY_THROUGHPUT: &str = "upload_throughput_bpms";

const OPEN: &str = "state IN ('pending', 'in_flight', 'dead')";

impl Store {
    pub(crate) async fn enqueue_upload(
        &self,
        p: &PreparedUpload,
        now: i64,
        max_queued: u64,
    ) -> Result<EnqueuedUpload> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if p.caller_key {
            let existing: Option<(String, String, i64)> =
                // language=SQLite
                sqlx::query_as("SELECT id, placeholder, size FROM uploads WHERE idempotency_key = ?")
                    .bind(&p.idempotency_key)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((id, placeholder, size)) = existing {
                return Ok(EnqueuedUpload {
                    id,
                    placeholder,
                    size: size as u64,
                });
            }
        }
        // language=SQLite
        let open: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM uploads WHERE {OPEN}"))
            .fetch_one(&mut *tx)
            .await?;
        if open as u64 >= max_queued {
            return Err(Error::LimitExceeded(format!(
                "the upload queue holds {open} open uploads (uploads.maxQueued is {max_queued})"
            )));
        }
        let taken = sqlx::query(
            // language=SQLite
            "INSERT INTO id_map (temp_id, entity_kind, created_by) VALUES (?, ?, 0) ON CONFLICT(temp_id) DO NOTHING",
        )
        .bind(&p.placeholder)
        .bind(PLACEHOLDER_KIND)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if taken == 0 {
            return Err(Error::Conflict(format!(
                "placeholder '{}' is already used by a temp id or another upload",
                p.placeholder
            )));
        }
        sqlx::query(
            // language=SQLite
            "INSERT INTO uploads (id, placeholder, idempotency_key, priority, entity_kind, entity_id, file_path, owned, \
             file_name, content_type, size, destination, created_at, next_attempt_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&p.id)
        .bind(&p.placeholder)
        .bind(&p.idempotency_key)
        .bind(p.priority.rank())
        .bind(p.entity.as_ref().map(|e| &e.kind))
        .bind(p.entity.as_ref().map(|e| &e.id))
        .bind(&p.file_path)
        .bind(p.owned)
        .bind(&p.file_name)
        .bind(&p.content_type)
        .bind(p.size as i64)
        .bind(serde_json::to_string(&p.destination)?)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(EnqueuedUpload {
            id: p.id.clone(),
            placeholder: p.placeholder.clone(),
            size: p.size,
        })
    }

    /// Claim up to `limit` due uploads no larger than `max_size` bytes (what fits in the
    /// budget at the measured throughput), priority first, then enqueue order.
    pub(crate) async fn claim_uploads(
        &self,
        owner: &str,
        now: i64,
        limit: u32,
        max_size: u64,
        max_wait_ms: i64,
    ) -> Result<Vec<ClaimedUpload>> {
        let rows = sqlx::query(
            // language=SQLite
            "UPDATE uploads SET state = 'in_flight', claimed_by = ?1, claimed_at = ?2 \
             WHERE seq IN ( \
               SELECT seq FROM uploads INDEXED BY uploads_due WHERE state = 'pending' AND size <= ?5 \
                 AND EXISTS (SELECT 1 FROM drain_lease WHERE id = 1 AND owner = ?1) \
                 AND (attempts = 0 OR next_attempt_at <= ?2 OR next_attempt_at > ?2 + ?4) \
               ORDER BY priority DESC, seq ASC LIMIT ?3) \
             RETURNING seq, id, placeholder, idempotency_key, priority, file_path, file_name, content_type, size, \
                       destination, target, attempts",
        )
        .bind(owner)
        .bind(now)
        .bind(limit as i64)
        .bind(max_wait_ms)
        .bind(max_size.min(i64::MAX as u64) as i64)
        .fetch_all(&self.drain)
        .await?;
        let mut out: Vec<(i64, ClaimedUpload)> = rows
            .iter()
            .map(|r| {
                let destination: String = r.get("destination");
                let target = r
                    .get::<Option<String>, _>("target")
                    .and_then(|t| serde_json::from_str(&t).ok());
                (
                    r.get::<i64, _>("priority"),
                    ClaimedUpload {
                        seq: r.get("seq"),
                        id: r.get("id"),
                        placeholder: r.get("placeholder"),
                        idempotency_key: r.get("idempotency_key"),
                        file_path: r.get("file_path"),
                        file_name: r.get("file_name"),
                        content_type: r.get("content_type"),
                        size: r.get::<i64, _>("size") as u64,
                        destination: serde_json::from_str(&destination).unwrap_or_default(),
                        target,
                        attempts: r.get::<i64, _>("attempts") as u32,
                        signed_now: false,
                    },
                )
            })
            .collect();
        out.sort_by_key(|(prio, c)| (std::cmp::Reverse(*prio), c.seq));
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    /// Remember a signed URL (kept across runs until it expires or is rejected).
    pub(crate) async fn set_upload_target(&self, seq: i64, owner: &str, t: &Target) -> Result<()> {
        // language=SQLite
        sqlx::query("UPDATE uploads SET target = ? WHERE seq = ? AND claimed_by = ? AND state = 'in_flight'")
            .bind(serde_json::to_string(t)?)
            .bind(seq)
            .bind(owner)
            .execute(&self.drain)
            .await?;
        Ok(())
    }

    /// Write one upload's outcome if this drainer still owns the row (`heard`: a listener hears
    /// it live, else `untold` keeps it for the next one).
    pub(crate) async fn settle_upload(
        &self,
        owner: &str,
        o: &UploadOutcome,
        heard: bool,
    ) -> Result<UploadSettled> {
        Ok(match o {
            UploadOutcome::Complete {
                seq,
                status,
                result,
                now,
            } => match self
                .complete_upload(*seq, owner, *status, result, *now, heard)
                .await?
            {
                Some((file, owned, told)) => UploadSettled::Done { file, owned, told },
                None => UploadSettled::No,
            },
            UploadOutcome::Reschedule {
                seq,
                attempts,
                next_at,
                status,
                error,
                resign,
            } => {
                if self
                    .reschedule_upload(*seq, owner, *attempts, *next_at, *status, error, *resign)
                    .await?
                {
                    UploadSettled::Yes
                } else {
                    UploadSettled::No
                }
            }
            UploadOutcome::Bury {
                seq,
                attempts,
                status,
                error,
                now,
            } => match self
                .bury_upload(*seq, owner, *attempts, *status, error, heard, *now)
                .await?
            {
                Some(told) => UploadSettled::Dead(told),
                None => UploadSettled::No,
            },
            UploadOutcome::Release { seq } => {
                self.release_upload(*seq, owner).await?;
                UploadSettled::Yes
            }
        })
    }

    /// Uploaded: record the result under the placeholder (which unblocks the mutations that
    /// reference it). Returns the file to delete when the plugin owns it and what the app is
    /// told (`heard`: a listener hears it live, else `untold` keeps it), or `None` when the
    /// row is no longer ours.
    #[allow(clippy::too_many_arguments)]
    async fn complete_upload(
        &self,
        seq: i64,
        owner: &str,
        status: u16,
        result: &str,
        now: i64,
        heard: bool,
    ) -> Result<Option<(String, bool, Applied)>> {
        let mut tx = self.drain.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(
            // language=SQLite
            "UPDATE uploads SET state = 'done', claimed_by = NULL, result = ?, finished_at = ?, last_status = ?, \
             last_error = NULL, attempts = attempts + 1, target = NULL, told = ? \
             WHERE seq = ? AND claimed_by = ? AND state = 'in_flight' \
             RETURNING id, placeholder, entity_kind, entity_id, state, last_status, last_error, result, file_path, owned",
        )
        .bind(result)
        .bind(now)
        .bind(status as i64)
        .bind(heard)
        .bind(seq)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let told = upload_outcome(&row);
        let (placeholder, file, owned): (String, String, bool) =
            (row.get("placeholder"), row.get("file_path"), row.get("owned"));
        // language=SQLite
        sqlx::query("UPDATE id_map SET server_id = ?, resolved_at = ? WHERE temp_id = ?")
            .bind(result)
            .bind(now)
            .bind(&placeholder)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some((file, owned, told)))
    }

    /// Transient failure: pending again at `next_at`. `forget_target` drops a signed URL the
    /// storage host rejected, so the next attempt signs again.
    #[allow(clippy::too_many_arguments)]
    async fn reschedule_upload(
        &self,
        seq: i64,
        owner: &str,
        attempts: u32,
        next_at: i64,
        status: Option<u16>,
        error: &str,
        forget_target: bool,
    ) -> Result<bool> {
        let n = sqlx::query(
            // language=SQLite
            "UPDATE uploads SET state = 'pending', claimed_by = NULL, attempts = ?, next_attempt_at = ?, \
             last_status = ?, last_error = ?, \
             target = CASE WHEN ? THEN NULL ELSE target END \
             WHERE seq = ? AND claimed_by = ? AND state = 'in_flight'",
        )
        .bind(attempts as i64)
        .bind(next_at)
        .bind(status.map(i64::from))
        .bind(error)
        .bind(forget_target)
        .bind(seq)
        .bind(owner)
        .execute(&self.drain)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Dead letter: what the app is told (`heard` as in `complete_upload`), or `None` when the
    /// row is no longer ours.
    #[allow(clippy::too_many_arguments)]
    async fn bury_upload(
        &self,
        seq: i64,
        owner: &str,
        attempts: u32,
        status: Option<u16>,
        error: &str,
        heard: bool,
        now: i64,
    ) -> Result<Option<Applied>> {
        let row = sqlx::query(
            // language=SQLite
            "UPDATE uploads SET state = 'dead', claimed_by = NULL, attempts = ?, last_status = ?, last_error = ?, \
             target = NULL, told = ?, finished_at = ? WHERE seq = ? AND claimed_by = ? AND state = 'in_flight' \
             RETURNING id, placeholder, entity_kind, entity_id, state, last_status, last_error, result",
        )
        .bind(attempts as i64)
        .bind(status.map(i64::from))
        .bind(error)
        .bind(heard)
        .bind(now)
        .bind(seq)
        .bind(owner)
        .fetch_optional(&self.drain)
        .await?;
        Ok(row.as_ref().map(upload_outcome))
    }

    /// Unconfirmed through no fault of the upload (deadline, cancellation, offline).
    pub(crate) async fn release_upload(&self, seq: i64, owner: &str) -> Result<()> {
        sqlx::query(
            // language=SQLite
            "UPDATE uploads SET state = 'pending', claimed_by = NULL WHERE seq = ? AND claimed_by = ? AND state = 'in_flight'",
        )
        .bind(seq)
        .bind(owner)
        .execute(&self.drain)
        .await?;
        Ok(())
    }

    /// (pending + in flight, dead).
    pub(crate) async fn upload_counts(&self) -> Result<(u64, u64)> {
        let (open, dead): (i64, i64) = sqlx::query_as(
            // language=SQLite
            "SELECT COALESCE(SUM(state IN ('pending', 'in_flight')), 0), COALESCE(SUM(state = 'dead'), 0) \
             FROM uploads WHERE state IN ('pending', 'in_flight', 'dead')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((open as u64, dead as u64))
    }

    /// Earliest future due time among pending uploads.
    pub(crate) async fn next_upload_due(&self, now: i64) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            // language=SQLite
            "SELECT MIN(next_attempt_at) FROM uploads WHERE state = 'pending' AND next_attempt_at > ?1 AND attempts > 0",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Pending uploads due now or within `horizon_ms` (whether waiting in this run can help).
    pub(crate) async fn uploads_due_by(&self, now: i64, horizon_ms: i64) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            // language=SQLite
            "SELECT COUNT(*) FROM uploads WHERE state = 'pending' AND next_attempt_at <= ?",
        )
        .bind(now + horizon_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    pub(crate) async fn list_uploads(
        &self,
        states: &[UploadState],
        limit: u32,
        offset: u32,
    ) -> Result<Vec<Upload>> {
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let rows = sqlx::query(
            // language=SQLite
            "SELECT * FROM uploads WHERE state IN (SELECT value FROM json_each(?)) ORDER BY seq LIMIT ? OFFSET ?",
        )
        .bind(serde_json::to_string(&names)?)
        .bind(limit as i64)
        .bind(offset as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_upload).collect()
    }

    pub(crate) async fn get_upload(&self, id: &str) -> Result<Upload> {
        // language=SQLite
        let row = sqlx::query("SELECT * FROM uploads WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no upload with id '{id}'")))?;
        row_to_upload(&row)
    }

    /// Dead upload back to pending with a fresh retry budget (and a fresh key after a 4xx, as
    /// for mutations).
    pub(crate) async fn retry_upload(&self, id: &str, now: i64) -> Result<()> {
        if self.revive_dead(Queue::Uploads, id, now).await? == 0 {
            self.get_upload(id).await?;
            return Err(Error::Conflict(format!("upload '{id}' is not a dead letter")));
        }
        Ok(())
    }

    /// Delete an upload that is not in flight. Mutations waiting for its placeholder become
    /// dead letters (count returned) so they surface for review. Returns the file to delete
    /// when the plugin owns it.
    pub(crate) async fn discard_upload(
        &self,
        id: &str,
        heard: bool,
        now: i64,
    ) -> Result<(Vec<Applied>, Option<String>)> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row: Option<(i64, String, String, String, bool)> =
            // language=SQLite
            sqlx::query_as("SELECT seq, state, placeholder, file_path, owned FROM uploads WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((seq, state, placeholder, file, owned)) = row else {
            return Err(Error::NotFound(format!("no upload with id '{id}'")));
        };
        if state == "in_flight" {
            return Err(Error::Conflict(format!(
                "upload '{id}' is being sent; try again after the drain"
            )));
        }
        // language=SQLite
        sqlx::query("DELETE FROM uploads WHERE seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        let mut orphaned = Vec::new();
        if state != "done" {
            // language=SQLite
            sqlx::query("UPDATE id_map SET discarded = 1 WHERE temp_id = ? AND server_id IS NULL")
                .bind(&placeholder)
                .execute(&mut *tx)
                .await?;
            orphaned = bury_dependents(
                &mut tx,
                &placeholder,
                &format!("waits for upload '{placeholder}' which was discarded"),
                heard,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok((orphaned, owned.then_some(file)))
    }

    /// Measured upload throughput in bytes/ms, kept across runs: a cold background run must
    /// know whether a big file can finish in its window.
    pub(crate) async fn upload_throughput(&self) -> Result<Option<f64>> {
        Ok(self
            .get_setting(KEY_THROUGHPUT)
            .await?
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v > 0.0))
    }

    pub(crate) async fn set_upload_throughput(&self, bytes_per_ms: f64) -> Result<()> {
        self.set_setting(KEY_THROUGHPUT, &bytes_per_ms.to_string()).await
    }

    /// Where copied files wait for upload: beside the database (`<name>-uploads/<upload id>`).
    pub(crate) fn uploads_dir(&self) -> std::path::PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "outbox".into());
        self.path.with_file_name(format!("{name}-uploads"))
    }

    /// The uploads that own a copy of their file: id → still needed (not finished).
    pub(crate) async fn owned_copies(&self) -> Result<std::collections::HashMap<String, bool>> {
        Ok(
            // language=SQLite
            sqlx::query_as::<_, (String, bool)>("SELECT id, state != 'done' FROM uploads WHERE owned = 1")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect(),
        )
    }

    /// Finished uploads past the retention (their placeholders are pruned with the id map).
    pub(crate) async fn prune_uploads(&self, cutoff: i64) -> Result<u64> {
        Ok(
            // language=SQLite
            sqlx::query("DELETE FROM uploads WHERE state = 'done' AND finished_at < ?")
                .bind(cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}
