-- Rows in backoff leave the claim's index and come back when due, so a claim walks only heads
-- that can go now: after a 503 storm over many entities its cost does not grow with the rows
-- still waiting (Store::settle_and_claim wakes the due ones through outbox_backing_off).
ALTER TABLE outbox ADD COLUMN backing_off INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET backing_off = 1 WHERE state = 'pending' AND attempts > 0;
DROP INDEX outbox_heads;
CREATE INDEX outbox_heads ON outbox (priority DESC, seq)
    WHERE is_head = 1 AND state = 'pending' AND backing_off = 0;
CREATE INDEX outbox_backing_off ON outbox (next_attempt_at) WHERE backing_off = 1;

-- Unresolved temp ids (the id map is kept for good, so it only grows): the blocked count
-- starts from these.
CREATE INDEX id_map_unresolved ON id_map (temp_id) WHERE server_id IS NULL;

-- Per-state counts kept by triggers: the status snapshot (sent with every event while a
-- listener is subscribed) costs a row read instead of a table scan.
ALTER TABLE queue_stats ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue_stats ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue_stats ADD COLUMN dead INTEGER NOT NULL DEFAULT 0;
UPDATE queue_stats SET
    pending = (SELECT COUNT(*) FROM outbox WHERE state = 'pending'),
    in_flight = (SELECT COUNT(*) FROM outbox WHERE state = 'in_flight'),
    dead = (SELECT COUNT(*) FROM outbox WHERE state = 'dead')
WHERE id = 1;
CREATE TRIGGER outbox_state_ins AFTER INSERT ON outbox
BEGIN
    UPDATE queue_stats SET
        pending = pending + (NEW.state = 'pending'),
        in_flight = in_flight + (NEW.state = 'in_flight'),
        dead = dead + (NEW.state = 'dead')
    WHERE id = 1;
END;
CREATE TRIGGER outbox_state_del AFTER DELETE ON outbox
BEGIN
    UPDATE queue_stats SET
        pending = pending - (OLD.state = 'pending'),
        in_flight = in_flight - (OLD.state = 'in_flight'),
        dead = dead - (OLD.state = 'dead')
    WHERE id = 1;
END;
CREATE TRIGGER outbox_state_upd AFTER UPDATE OF state ON outbox WHEN OLD.state != NEW.state
BEGIN
    UPDATE queue_stats SET
        pending = pending + (NEW.state = 'pending') - (OLD.state = 'pending'),
        in_flight = in_flight + (NEW.state = 'in_flight') - (OLD.state = 'in_flight'),
        dead = dead + (NEW.state = 'dead') - (OLD.state = 'dead')
    WHERE id = 1;
END;
