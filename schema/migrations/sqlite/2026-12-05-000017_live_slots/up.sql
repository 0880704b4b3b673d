-- Whether a slot counts as availability: its schedule is still its service's and not inactive.
-- Kept by Schedule writes and deletes and by each slot write (`service/reporting.rs`), so the
-- free-slot index covers live slots only and "has this service a free slot" is one probe of it,
-- where it was that probe plus two per slot found (the schedule's actor and active flag:
-- half of a directory search's planning and execution time on PostgreSQL).
ALTER TABLE report_slots ADD COLUMN live INTEGER NOT NULL DEFAULT 1;
UPDATE report_slots SET live = 0
WHERE NOT EXISTS (
        SELECT 1 FROM search_refs sa WHERE sa.res_type = 'Schedule' AND sa.res_id = report_slots.schedule_id
        AND sa.param = 'actor' AND sa.target_type = 'HealthcareService' AND sa.target_id = report_slots.service_id)
    OR EXISTS (
        SELECT 1 FROM search_tokens sx WHERE sx.res_type = 'Schedule' AND sx.res_id = report_slots.schedule_id
        AND sx.param = 'active' AND sx.code = 'false');
DROP INDEX report_slots_free;
CREATE INDEX report_slots_free ON report_slots (service_id, start) WHERE status = 'free' AND deleted = 0 AND live = 1;
