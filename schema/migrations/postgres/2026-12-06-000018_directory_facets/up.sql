-- The service facts every patient-centred directory search filters on, beside its positions:
-- whether it is active, and the priorities it supports (a bit each: 1 ROUTINE, 2 URGENT,
-- 4 TWO_WEEK_WAIT, as `directory::PRIORITY_BITS`). The search then reads them from the
-- `directory_positions_near` range it already reads, where it probed the service's
-- `search_tokens` twice per candidate and planned both probes (half of its PostgreSQL time,
-- docs/BENCHMARKS.md). Kept by `directory::refresh` with the rest of the row.
ALTER TABLE directory_positions ADD COLUMN active INTEGER NOT NULL DEFAULT 0;
ALTER TABLE directory_positions ADD COLUMN priorities INTEGER NOT NULL DEFAULT 0;
UPDATE directory_positions SET
    active = CASE WHEN EXISTS (SELECT 1 FROM search_tokens t WHERE t.res_type = 'HealthcareService'
        AND t.res_id = directory_positions.service_id AND t.param = 'active' AND t.code = 'true') THEN 1 ELSE 0 END,
    priorities =
        CASE WHEN EXISTS (SELECT 1 FROM search_tokens t WHERE t.res_type = 'HealthcareService'
            AND t.res_id = directory_positions.service_id AND t.param = 'priority' AND t.code = 'ROUTINE') THEN 1 ELSE 0 END
      + CASE WHEN EXISTS (SELECT 1 FROM search_tokens t WHERE t.res_type = 'HealthcareService'
            AND t.res_id = directory_positions.service_id AND t.param = 'priority' AND t.code = 'URGENT') THEN 2 ELSE 0 END
      + CASE WHEN EXISTS (SELECT 1 FROM search_tokens t WHERE t.res_type = 'HealthcareService'
            AND t.res_id = directory_positions.service_id AND t.param = 'priority' AND t.code = 'TWO_WEEK_WAIT') THEN 4 ELSE 0 END;
DROP INDEX directory_positions_near;
CREATE INDEX directory_positions_near ON directory_positions (code, latitude, longitude, system, service_id, active, priorities);
