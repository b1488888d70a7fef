-- Outcomes, continued (README "Outcomes").
-- A delivered mutation's response body, kept only when `outcomeBodyMaxBytes` asks for it
-- (JSON text; NULL otherwise). It goes with the delivered row at retention.
ALTER TABLE delivered ADD COLUMN body TEXT;
-- Upload outcomes nobody heard are replayed like mutation outcomes (0007). Rows from before
-- this migration count as told.
ALTER TABLE uploads ADD COLUMN told INTEGER NOT NULL DEFAULT 1;
CREATE INDEX uploads_untold ON uploads (seq) WHERE told = 0;
-- When a mutation became a dead letter, so a listener that fell behind the event stream can
-- re-read the outcomes it missed (`BackgroundSync::forward`). A dead upload's `finished_at`
-- says the same for uploads. NULL for dead letters from before this migration.
ALTER TABLE outbox ADD COLUMN dead_at INTEGER;
CREATE INDEX outbox_dead_at ON outbox (dead_at) WHERE state = 'dead';
