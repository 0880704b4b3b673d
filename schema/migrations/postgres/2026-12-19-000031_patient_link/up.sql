-- `Patient?link=` (R4's Patient-link, over `Patient.link.other`) is searched through index rows
-- written with each version, as `fhir::index::entries` makes them; those rows also keep a patient
-- another record links to from being deleted. The patients stored before get theirs here.
-- Every stored reference was checked when written to be `Type/id` or `Type/id/_history/n`.
-- The JSON is read as `json`, not `jsonb`, which refuses some strings stored text may hold.
INSERT INTO search_refs (res_type, res_id, param, target_type, target_id)
SELECT 'Patient', r.id, 'link', split_part(l.ref, '/', 1), split_part(l.ref, '/', 2)
FROM resources r
CROSS JOIN LATERAL json_array_elements(
    CASE WHEN json_typeof(r.content::json -> 'link') = 'array' THEN r.content::json -> 'link' ELSE '[]'::json END
) AS e(link)
CROSS JOIN LATERAL (SELECT e.link -> 'other' ->> 'reference') AS l(ref)
WHERE r.res_type = 'Patient'
  AND r.deleted = 0
  AND json_typeof(e.link) = 'object'
  AND json_typeof(e.link -> 'other' -> 'reference') = 'string'
  AND position('/' IN l.ref) > 1
ON CONFLICT DO NOTHING;
