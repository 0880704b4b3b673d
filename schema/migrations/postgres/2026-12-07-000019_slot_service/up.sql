-- Slot searches for a service's slots (`Slot?schedule.actor=HealthcareService/{id}&status=…`)
-- are answered from the slot projection (schema/src/search.rs, `slot_driver`): one range of
-- this index instead of the service's schedules' every slot, each probed for its status.
-- For that the projection's service must be exact: slots of a schedule without a
-- HealthcareService actor belong to no service ('').
UPDATE report_slots SET service_id = '', provider_org = NULL, specialty = NULL
WHERE NOT EXISTS (
    SELECT 1 FROM search_refs sa WHERE sa.res_type = 'Schedule' AND sa.res_id = report_slots.schedule_id
    AND sa.param = 'actor' AND sa.target_type = 'HealthcareService' AND sa.target_id = report_slots.service_id);
-- What the slot search compares, exactly as the search index holds it: the code of the slot's
-- only appointmentType coding, and the last instant its start covers.
ALTER TABLE report_slots ADD COLUMN search_priority TEXT;
ALTER TABLE report_slots ADD COLUMN start_high TIMESTAMP;
UPDATE report_slots SET
    search_priority = (SELECT MIN(t.code) FROM search_tokens t WHERE t.res_type = 'Slot'
        AND t.res_id = report_slots.id AND t.param = 'appointment-type'),
    start_high = (SELECT MAX(d.high) FROM search_dates d WHERE d.res_type = 'Slot'
        AND d.res_id = report_slots.id AND d.param = 'start');
CREATE INDEX report_slots_service ON report_slots (service_id, status, search_priority, start);
-- Slots without a row (their schedule had no service) get one at the next start.
INSERT INTO counters (name, value) VALUES ('slot_rows_backfilled', 0);
