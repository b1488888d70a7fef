-- Outcome replay (README "Outcomes"): whether a listener was there when a delivered or dead
-- mutation settled. A background run nobody listens to leaves 0, and the next listener is
-- told from here (`catch_up`). Rows from before this migration count as told: replaying a
-- week of history on upgrade would tell an app what it already handled.
ALTER TABLE delivered ADD COLUMN told INTEGER NOT NULL DEFAULT 1;
ALTER TABLE outbox ADD COLUMN told INTEGER NOT NULL DEFAULT 1;
CREATE INDEX delivered_untold ON delivered (seq) WHERE told = 0;
CREATE INDEX outbox_untold ON outbox (seq) WHERE told = 0 AND state = 'dead';
