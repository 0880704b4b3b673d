DROP INDEX report_slots_service;
ALTER TABLE report_slots DROP COLUMN start_high;
ALTER TABLE report_slots DROP COLUMN search_priority;
DELETE FROM counters WHERE name = 'slot_rows_backfilled';
