-- A PractitionerRole's SDS role profile id (https://fhir.nhs.uk/Id/sds-role-profile-id) is unique from
-- now on, as an e-RS service id is: the live roles stored before register theirs
-- (where an older database holds two roles with one id, the first by logical id owns it;
-- the other keeps its id, but no new role can take it).
INSERT INTO unique_identifiers (res_type, system, value, res_id)
SELECT res_type, system, code, MIN(res_id)
FROM search_tokens
WHERE res_type = 'PractitionerRole'
  AND param = 'identifier'
  AND system = 'https://fhir.nhs.uk/Id/sds-role-profile-id'
GROUP BY res_type, system, code
ON CONFLICT DO NOTHING;
