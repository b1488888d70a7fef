-- The outbox holds only open mutations (pending, in flight, dead). Delivered rows move to
-- `delivered`, so "has an earlier open row in my entity" is a single index probe.
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT, -- global enqueue order, never reused
    id              TEXT NOT NULL UNIQUE,
    idempotency_key TEXT NOT NULL UNIQUE,
    priority        INTEGER NOT NULL,                  -- 0 low .. 3 critical
    entity_kind     TEXT NOT NULL,
    entity_id       TEXT NOT NULL,
    entity_key      TEXT NOT NULL,                     -- kind || x'1f' || id: the ordering lane
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    headers         TEXT,                              -- JSON object
    body            TEXT,                              -- JSON text
    temp_id         TEXT,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'in_flight', 'dead')),
    claimed_by      TEXT,
    claimed_at      INTEGER,
    -- 1 for the oldest open row of its entity: the only one that may be sent. Set at insert
    -- (rows are only appended to a lane) and moved on by a trigger when the head is deleted.
    is_head         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_lane ON outbox (entity_key, seq);
-- Priority inheritance at enqueue touches only the rows it lifts.
CREATE INDEX outbox_lane_priority ON outbox (entity_key, priority);
CREATE INDEX outbox_state ON outbox (state, next_attempt_at);
-- The claim walks only sendable heads, in priority then enqueue order: its cost does not grow
-- with the backlog behind them.
CREATE INDEX outbox_heads ON outbox (priority DESC, seq) WHERE is_head = 1 AND state = 'pending';
CREATE TRIGGER outbox_next_head AFTER DELETE ON outbox WHEN OLD.is_head = 1
BEGIN
    UPDATE outbox SET is_head = 1
    WHERE seq = (SELECT MIN(seq) FROM outbox WHERE entity_key = OLD.entity_key);
END;

CREATE TABLE delivered (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    entity_kind     TEXT NOT NULL,
    entity_id       TEXT NOT NULL,
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    status          INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER NOT NULL,
    server_id       TEXT
);
CREATE INDEX delivered_at ON delivered (delivered_at);

-- Temporary ids of entities created offline and the server ids that replace them.
CREATE TABLE id_map (
    temp_id     TEXT PRIMARY KEY,
    entity_kind TEXT NOT NULL,
    created_by  INTEGER NOT NULL,   -- outbox.seq of the create
    server_id   TEXT,
    resolved_at INTEGER,
    discarded   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Which temp ids a mutation references (it waits until all are resolved).
CREATE TABLE mutation_deps (
    mutation_seq INTEGER NOT NULL,
    temp_id      TEXT NOT NULL,
    PRIMARY KEY (mutation_seq, temp_id)
) WITHOUT ROWID;
CREATE INDEX mutation_deps_temp ON mutation_deps (temp_id);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Single drainer across threads and processes.
CREATE TABLE drain_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    owner      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE drain_runs (
    run_id      TEXT PRIMARY KEY,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    report      TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX drain_runs_finished ON drain_runs (finished_at);

CREATE INDEX delivered_key ON delivered (idempotency_key);

-- Open-row count kept by triggers: the queue limit is checked on every enqueue and
-- COUNT(*) would scan the table.
CREATE TABLE queue_stats (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    open_count INTEGER NOT NULL
);
INSERT INTO queue_stats (id, open_count) VALUES (1, 0);
CREATE TRIGGER outbox_count_ins AFTER INSERT ON outbox
BEGIN
    UPDATE queue_stats SET open_count = open_count + 1 WHERE id = 1;
END;
CREATE TRIGGER outbox_count_del AFTER DELETE ON outbox
BEGIN
    UPDATE queue_stats SET open_count = open_count - 1 WHERE id = 1;
END;
