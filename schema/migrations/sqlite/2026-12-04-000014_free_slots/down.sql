DROP INDEX report_slots_schedule;
DROP INDEX report_slots_free;
ALTER TABLE report_slots DROP COLUMN schedule_id;
