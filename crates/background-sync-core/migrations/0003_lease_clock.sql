-- The lease moves to the system's monotonic clock (wall-clock steps cannot free a live lease)
-- and records the duration it was granted for, so an extended lease (a long upload) is not
-- mistaken for a stale one. Old rows hold wall-clock expiries, which read as implausible on
-- the new clock and therefore as expired: nothing to convert.
ALTER TABLE drain_lease ADD COLUMN ttl_ms INTEGER NOT NULL DEFAULT 0;

-- When a row was last claimed (wall clock): a row whose last attempt lies in the future tells
-- that the clock was stepped back, and its backoff restarts from now (Store::rebase_backoff).
ALTER TABLE uploads ADD COLUMN claimed_at INTEGER;
CREATE INDEX outbox_claimed ON outbox (claimed_at) WHERE state = 'pending';
CREATE INDEX uploads_claimed ON uploads (claimed_at) WHERE state = 'pending';
