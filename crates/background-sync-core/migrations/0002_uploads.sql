-- Files to upload in the background (photos, signatures, scans), beside the mutation outbox.
-- A finished upload records its result (URL or id) in id_map under the upload's placeholder, so
-- mutations that reference the placeholder wait for the file and are rewritten like temp ids.
CREATE TABLE uploads (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    placeholder     TEXT NOT NULL UNIQUE,
    idempotency_key TEXT NOT NULL UNIQUE,
    priority        INTEGER NOT NULL,
    entity_kind     TEXT,
    entity_id       TEXT,
    file_path       TEXT NOT NULL,
    owned           INTEGER NOT NULL,                  -- 1: a copy the plugin deletes when done
    file_name       TEXT,
    content_type    TEXT NOT NULL,
    size            INTEGER NOT NULL,
    destination     TEXT NOT NULL,                     -- JSON UploadDestination
    -- Signed-URL flow: where to send the bytes (JSON from the sign response), kept until it
    -- expires or the storage host rejects it.
    target          TEXT,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'in_flight', 'dead', 'done')),
    claimed_by      TEXT,
    result          TEXT,
    finished_at     INTEGER
);
CREATE INDEX uploads_due ON uploads (priority DESC, seq) WHERE state = 'pending';
CREATE INDEX uploads_state ON uploads (state, next_attempt_at);
