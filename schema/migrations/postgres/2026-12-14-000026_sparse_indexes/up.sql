-- Two indexes that held a row for every NULL, which no query asks for: a booking wrote about
-- five such entries (docs/BENCHMARKS.md, Booking).
-- An outbox row is numbered after it commits: until then its `seq` is NULL. Only numbered
-- rows are read by number (`seq > n`, the greatest `seq`), and only they must be unique.
DROP INDEX outbox_seq;
CREATE UNIQUE INDEX outbox_seq ON outbox (seq) WHERE seq IS NOT NULL;
-- Audit entities carry an NHS number only for a patient; the index serves the search by it.
DROP INDEX audit_entities_nhs;
CREATE INDEX audit_entities_nhs ON audit_entities (nhs_number) WHERE nhs_number IS NOT NULL;
