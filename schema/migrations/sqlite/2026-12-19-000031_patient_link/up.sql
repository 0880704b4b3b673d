-- `Patient?link=` (R4's Patient-link, over `Patient.link.other`) is searched through index rows
-- written with each version, as `fhir::index::entries` makes them; those rows also keep a patient
-- another record links to from being deleted. The patients stored before get theirs here.
-- Every stored reference was checked when written to be `Type/id` or `Type/id/_history/n`.
WITH refs AS (
    SELECT r.id, json_extract(l.value, '$.other.reference') AS ref
    FROM resources r
    JOIN json_each(r.content, '$.link') AS l
    WHERE r.res_type = 'Patient'
      AND r.deleted = 0
      AND json_type(r.content, '$.link') = 'array'
      AND l.type = 'object'
      AND json_type(l.value, '$.other.reference') = 'text'
), split AS (
    SELECT id, substr(ref, 1, instr(ref, '/') - 1) AS target_type,
           substr(ref, instr(ref, '/') + 1) AS rest
    FROM refs
    WHERE instr(ref, '/') > 1
)
INSERT OR IGNORE INTO search_refs (res_type, res_id, param, target_type, target_id)
SELECT 'Patient', id, 'link', target_type,
       CASE WHEN instr(rest, '/') > 0 THEN substr(rest, 1, instr(rest, '/') - 1) ELSE rest END
FROM split;
