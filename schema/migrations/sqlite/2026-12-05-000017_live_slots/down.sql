DROP INDEX report_slots_free;
CREATE INDEX report_slots_free ON report_slots (service_id, start) WHERE status = 'free' AND deleted = 0;
ALTER TABLE report_slots DROP COLUMN live;
