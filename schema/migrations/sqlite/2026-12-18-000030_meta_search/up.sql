-- `_tag`, `_security` and `_profile` (R4's parameters of every resource over `meta.tag`,
-- `meta.security` and `meta.profile`) are searched through index rows written with each version,
-- as `fhir::index::entries` makes them. The resources stored before get theirs here: each
-- Coding with a code (its system, or none) and each profile, also without its `|version`.
-- Values are indexed up to 1,000 bytes (`index::MAX_INDEXED_BYTES`); a longer one is cut there
-- when it is ASCII and otherwise left out (none such is a real tag, label or profile).
-- Provenance is derived, with no index rows; Binary is not searched.
WITH hosted AS (
    SELECT res_type, id, content FROM resources
    WHERE deleted = 0
      AND res_type IN ('Patient', 'Practitioner', 'Organization', 'PractitionerRole', 'Location',
                       'HealthcareService', 'Schedule', 'Slot', 'ServiceRequest', 'Appointment',
                       'DocumentReference', 'Communication', 'Subscription', 'CommunicationRequest')
), codings AS (
    SELECT h.res_type, h.id, k.param,
           COALESCE(json_extract(c.value, '$.system'), '') AS system,
           json_extract(c.value, '$.code') AS code
    FROM hosted h
    JOIN (SELECT '_tag' AS param, '$.meta.tag' AS path
          UNION ALL SELECT '_security', '$.meta.security') AS k
    JOIN json_each(h.content, k.path) AS c
    WHERE json_type(h.content, k.path) = 'array'
      AND c.type = 'object'
      AND json_type(c.value, '$.code') = 'text'
      AND COALESCE(json_type(c.value, '$.system'), 'text') = 'text'
), urls AS (
    SELECT h.res_type, h.id, p.value AS url
    FROM hosted h
    JOIN json_each(h.content, '$.meta.profile') AS p
    WHERE json_type(h.content, '$.meta.profile') = 'array' AND p.type = 'text'
), tokens AS (
    SELECT res_type, id, param, system, code FROM codings
    UNION
    SELECT res_type, id, '_profile', '', url FROM urls
    UNION
    SELECT res_type, id, '_profile', '', substr(url, 1, instr(url, '|') - 1)
    FROM urls WHERE instr(url, '|') > 0
), capped AS (
    SELECT res_type, id, param,
           CASE WHEN length(CAST(system AS BLOB)) <= 1000 THEN system
                WHEN length(CAST(system AS BLOB)) = length(system) THEN substr(system, 1, 1000)
           END AS system,
           CASE WHEN length(CAST(code AS BLOB)) <= 1000 THEN code
                WHEN length(CAST(code AS BLOB)) = length(code) THEN substr(code, 1, 1000)
           END AS code
    FROM tokens
)
INSERT OR IGNORE INTO search_tokens (res_type, res_id, param, system, code)
SELECT res_type, id, param, system, code FROM capped
WHERE system IS NOT NULL AND code IS NOT NULL;
