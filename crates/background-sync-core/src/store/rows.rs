//! Readers of stored rows into the types the app gets.

use super::Applied;
use crate::error::{Error, Result};
use crate::models::{
    Delivered, EntityRef, Mutation, MutationState, Priority, StatusEvent, Upload, UploadState,
};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

/// A dead letter as the app is told it, from a row with seq, id, entity_kind, entity_id,
/// last_status, last_error and coalesce.
pub(super) async fn dead_row(conn: &mut sqlx::SqliteConnection, r: &SqliteRow) -> Result<Applied> {
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

pub(super) fn delivered_row(r: &SqliteRow) -> Delivered {
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
pub(super) fn parse_body(text: Option<&str>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

pub(super) fn row_to_mutation(r: &SqliteRow) -> Result<Mutation> {
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

/// Ids of the mutations coalesced into row `seq` (none unless it opted in), in enqueue order.
pub(super) async fn absorbed_ids(
    conn: &mut sqlx::SqliteConnection,
    seq: i64,
    coalesce: bool,
) -> Result<Vec<String>> {
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

/// A finished (`done`) or dead upload row as the app is told it: needs id, placeholder,
/// entity_kind, entity_id, state, last_status, last_error, result.
pub(super) fn upload_outcome(r: &SqliteRow) -> Applied {
    let id: String = r.get("id");
    let placeholder: String = r.get("placeholder");
    let kind: Option<String> = r.get("entity_kind");
    let eid: Option<String> = r.get("entity_id");
    let entity = kind.zip(eid).map(|(kind, id)| EntityRef { kind, id });
    let status = r.get::<Option<i64>, _>("last_status").map(|s| s as u16);
    Applied::Upload(match r.get::<String, _>("state").as_str() {
        "done" => StatusEvent::Uploaded {
            id,
            placeholder,
            entity,
            status: status.unwrap_or(200),
            result: r.get::<Option<String>, _>("result").unwrap_or_default(),
        },
        _ => StatusEvent::UploadDead {
            id,
            placeholder,
            entity,
            status,
            error: r.get::<Option<String>, _>("last_error").unwrap_or_default(),
        },
    })
}

pub(super) fn row_to_upload(r: &SqliteRow) -> Result<Upload> {
    let destination: String = r.get("destination");
    let kind: Option<String> = r.get("entity_kind");
    let eid: Option<String> = r.get("entity_id");
    Ok(Upload {
        id: r.get("id"),
        placeholder: r.get("placeholder"),
        idempotency_key: r.get("idempotency_key"),
        priority: Priority::from_rank(r.get("priority")),
        entity: kind.zip(eid).map(|(kind, id)| EntityRef { kind, id }),
        file_path: r.get("file_path"),
        file_name: r.get("file_name"),
        content_type: r.get("content_type"),
        size: r.get::<i64, _>("size") as u64,
        destination: serde_json::from_str(&destination).map_err(Error::corrupt("upload destination"))?,
        created_at: r.get("created_at"),
        attempts: r.get::<i64, _>("attempts") as u32,
        next_attempt_at: r.get("next_attempt_at"),
        last_status: r.get::<Option<i64>, _>("last_status").map(|s| s as u16),
        last_error: r.get("last_error"),
        state: UploadState::parse(&r.get::<String, _>("state")),
        result: r.get("result"),
        finished_at: r.get("finished_at"),
    })
}
