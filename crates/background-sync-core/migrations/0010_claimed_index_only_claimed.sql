-- The clock-step rebase looks only at rows that were claimed at least once (`claimed_at > now`),
-- so rows never claimed (every fresh enqueue) need no entry in its index: one index page fewer
-- for each enqueue and for each first claim to write (a WAL frame per page per commit).
DROP INDEX outbox_claimed;
CREATE INDEX outbox_claimed ON outbox (claimed_at) WHERE state = 'pending' AND claimed_at IS NOT NULL;
DROP INDEX uploads_claimed;
CREATE INDEX uploads_claimed ON uploads (claimed_at) WHERE state = 'pending' AND claimed_at IS NOT NULL;
