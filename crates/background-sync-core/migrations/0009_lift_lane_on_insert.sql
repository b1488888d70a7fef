-- A later mutation of higher priority lifts the earlier mutations of its entity (they must be
-- delivered first anyway). Done by the row's own INSERT instead of a separate UPDATE before it:
-- one statement per enqueued row instead of two (each statement is a hand-off to the
-- database's worker thread; `enqueue_many` of 100 ran 200). Nothing is below `low` (0).
-- A mutation that coalesces into a queued row inserts nothing and lifts the lane itself.
CREATE TRIGGER outbox_lift_lane AFTER INSERT ON outbox WHEN NEW.priority > 0
BEGIN
    UPDATE outbox SET priority = NEW.priority
    WHERE entity_key = NEW.entity_key AND priority < NEW.priority;
END;
