-- A resource's version rows and an audit event's entity rows are written only with their
-- parent, in the same statement (`pg_rows::Rows` and `Rewrite` write the resource and its
-- version together; `pg_rows::AuditRows` and the audit writer write the event and its
-- entities together), and nothing deletes a parent before its children (`store::purge`
-- deletes the versions first; audit events are never deleted). Their foreign keys checked each
-- new child row against its parent through a trigger, a locking SELECT run through SPI at the
-- end of the statement: some ten a booking, about 3 % of the benchmark machine's CPU during
-- bookings (docs/BENCHMARKS.md, Booking), for a guarantee the writers already give, as for
-- the index tables (migration 000020). (SQLite checks foreign keys in-process, without
-- triggers, and keeps them.)
ALTER TABLE resource_versions DROP CONSTRAINT IF EXISTS resource_versions_res_type_id_fkey;
ALTER TABLE audit_entities DROP CONSTRAINT IF EXISTS audit_entities_audit_id_fkey;
