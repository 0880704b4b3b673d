-- Event numbers are given when changes are visible, not as they are written: writers insert
-- changes unnumbered (`id` only orders them), and the delivery round numbers every committed
-- unnumbered change in `id` order, holding the `events` counter row while it does. So numbers
-- have no gaps and never appear below one a subscriber has passed (a transaction's number is
-- never taken before another's that commits later).
ALTER TABLE outbox RENAME COLUMN seq TO id;
ALTER TABLE outbox ADD COLUMN seq BIGINT;
UPDATE outbox SET seq = id;
CREATE UNIQUE INDEX outbox_seq ON outbox (seq);
CREATE INDEX outbox_unnumbered ON outbox (id) WHERE seq IS NULL;
INSERT INTO counters (name, value) SELECT 'events', COALESCE(MAX(id), 0) FROM outbox;
