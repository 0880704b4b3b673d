-- The slot projection answers "has this service a free slot at this priority from then on?"
-- (the Directory of Services' availability filter and earliest-slot sort) with one index probe
-- per service. Each row names its schedule, so the search can check the schedule is still the
-- service's and active.
ALTER TABLE report_slots ADD COLUMN schedule_id TEXT NOT NULL DEFAULT '';
UPDATE report_slots SET schedule_id = COALESCE((
    SELECT r.target_id FROM search_refs r
    WHERE r.res_type = 'Slot' AND r.param = 'schedule' AND r.res_id = report_slots.id
    LIMIT 1), '');
CREATE INDEX report_slots_free ON report_slots (service_id, start) WHERE status = 'free' AND deleted = 0;
CREATE INDEX report_slots_schedule ON report_slots (schedule_id);
