-- A HealthcareService's e-RS service id (https://fhir.nhs.uk/Id/ers-service) is unique from
-- now on, like an NHS number or an ODS code: the live services stored before register theirs
-- (where an older database holds two services with one id, the first by logical id owns it;
-- the other keeps its id, but no new service can take it).
INSERT OR IGNORE INTO unique_identifiers (res_type, system, value, res_id)
SELECT res_type, system, code, MIN(res_id)
FROM search_tokens
WHERE res_type = 'HealthcareService'
  AND param = 'identifier'
  AND system = 'https://fhir.nhs.uk/Id/ers-service'
GROUP BY res_type, system, code;
