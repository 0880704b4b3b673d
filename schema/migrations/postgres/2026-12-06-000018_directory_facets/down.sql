DROP INDEX directory_positions_near;
ALTER TABLE directory_positions DROP COLUMN priorities;
ALTER TABLE directory_positions DROP COLUMN active;
CREATE INDEX directory_positions_near ON directory_positions (code, latitude, longitude, system, service_id);
