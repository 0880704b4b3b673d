-- `_tag`, `_security` and `_profile` (R4's parameters of every resource over `meta.tag`,
-- `meta.security` and `meta.profile`) are searched through index rows written with each version,
-- as `fhir::index::entries` makes them. The resources stored before get theirs here: each
-- Coding with a code (its system, or none) and each profile, also without its `|version`.
-- Values are indexed up to 1,000 bytes (`index::MAX_INDEXED_BYTES`); a longer one is cut there
-- when it is ASCII and otherwise left out (none such is a real tag, label or profile).
-- The JSON is read as `json`, not `jsonb`, which refuses some strings stored text may hold.
-- Provenance is derived, with no index rows; Binary is not searched.
CREATE FUNCTION pg_temp.ers_capped(v TEXT) RETURNS TEXT LANGUAGE SQL IMMUTABLE AS $$
    SELECT CASE
        WHEN octet_length(v) <= 1000 THEN v
        WHEN octet_length(v) = char_length(v) THEN left(v, 1000)
    END
$$;

CREATE TEMPORARY TABLE ers_meta_hosted AS
SELECT r.res_type, r.id, r.content::json -> 'meta' AS meta
FROM resources r
WHERE r.deleted = 0
  AND r.res_type IN ('Patient', 'Practitioner', 'Organization', 'PractitionerRole', 'Location',
                     'HealthcareService', 'Schedule', 'Slot', 'ServiceRequest', 'Appointment',
                     'DocumentReference', 'Communication', 'Subscription', 'CommunicationRequest')
  AND r.content::json -> 'meta' IS NOT NULL;

INSERT INTO search_tokens (res_type, res_id, param, system, code)
SELECT m.res_type, m.id, kind.param,
       pg_temp.ers_capped(COALESCE(c.coding ->> 'system', '')), pg_temp.ers_capped(c.coding ->> 'code')
FROM ers_meta_hosted m
CROSS JOIN (VALUES ('_tag', 'tag'), ('_security', 'security')) AS kind(param, element)
CROSS JOIN LATERAL json_array_elements(
    CASE WHEN json_typeof(m.meta -> kind.element) = 'array' THEN m.meta -> kind.element ELSE '[]'::json END
) AS c(coding)
WHERE json_typeof(c.coding -> 'code') = 'string'
  AND (c.coding -> 'system' IS NULL OR json_typeof(c.coding -> 'system') = 'string')
  AND pg_temp.ers_capped(COALESCE(c.coding ->> 'system', '')) IS NOT NULL
  AND pg_temp.ers_capped(c.coding ->> 'code') IS NOT NULL
ON CONFLICT DO NOTHING;

INSERT INTO search_tokens (res_type, res_id, param, system, code)
SELECT m.res_type, m.id, '_profile', '', pg_temp.ers_capped(u.code)
FROM ers_meta_hosted m
CROSS JOIN LATERAL json_array_elements(
    CASE WHEN json_typeof(m.meta -> 'profile') = 'array' THEN m.meta -> 'profile' ELSE '[]'::json END
) AS p(url)
CROSS JOIN LATERAL (
    SELECT p.url #>> '{}'
    UNION ALL
    SELECT split_part(p.url #>> '{}', '|', 1) WHERE position('|' IN p.url #>> '{}') > 0
) AS u(code)
WHERE json_typeof(p.url) = 'string' AND pg_temp.ers_capped(u.code) IS NOT NULL
ON CONFLICT DO NOTHING;

DROP TABLE ers_meta_hosted;
DROP FUNCTION pg_temp.ers_capped(TEXT);
