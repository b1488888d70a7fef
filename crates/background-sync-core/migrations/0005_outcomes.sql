-- Outcomes back to the app: a delivered create keeps the temp id it was created under, so
-- `delivered()` and the `delivered` event can say which local record the server id replaces
-- (after retention the id_map still resolves it).
ALTER TABLE delivered ADD COLUMN temp_id TEXT;
