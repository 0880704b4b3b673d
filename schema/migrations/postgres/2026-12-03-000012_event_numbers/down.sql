DELETE FROM counters WHERE name = 'events';
DROP INDEX outbox_unnumbered;
DROP INDEX outbox_seq;
DELETE FROM outbox WHERE seq IS NULL;
UPDATE outbox SET id = seq;
ALTER TABLE outbox DROP COLUMN seq;
ALTER TABLE outbox RENAME COLUMN id TO seq;
