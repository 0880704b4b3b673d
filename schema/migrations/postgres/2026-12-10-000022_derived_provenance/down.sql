-- Provenance derived since the upgrade is not stored back: going down loses it.
ALTER TABLE resource_versions DROP COLUMN client_id, DROP COLUMN on_behalf_of;
