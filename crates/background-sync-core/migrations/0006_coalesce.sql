-- Coalescing (README "Coalescing"): a row opted in may absorb the mutations enqueued after it
-- while it is unsent. Each absorbed mutation keeps its id, idempotency key and its own place in
-- the enqueue order (a seq drawn from the outbox's sequence), so it is told its own outcome
-- and moves to `delivered` with the row that carried it.
ALTER TABLE outbox ADD COLUMN coalesce INTEGER NOT NULL DEFAULT 0;
CREATE TABLE coalesced (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    idempotency_key TEXT NOT NULL UNIQUE,
    into_seq        INTEGER NOT NULL,   -- outbox.seq of the row that carries it
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX coalesced_into ON coalesced (into_seq);
