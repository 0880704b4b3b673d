DROP INDEX audit_entities_nhs;
CREATE INDEX audit_entities_nhs ON audit_entities (nhs_number);
DROP INDEX outbox_seq;
CREATE UNIQUE INDEX outbox_seq ON outbox (seq);
