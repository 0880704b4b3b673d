-- Provenance derived since the upgrade is not stored back: going down loses it.
DROP INDEX resource_versions_maker;
ALTER TABLE resource_versions DROP COLUMN client_id;
ALTER TABLE resource_versions DROP COLUMN on_behalf_of;
