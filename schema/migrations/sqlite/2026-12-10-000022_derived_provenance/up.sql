-- Provenance is derived from the version it describes instead of stored beside it: each
-- version row now also records the application that wrote it (client_id) and the user a
-- delegate acted for (on_behalf_of), the two things a Provenance said that the row did not.
-- A Provenance is read, searched and exported from its version (`service::provenance`), and its
-- id is its version's (`{type code}{version}.{id}`), so stored ones go: what they said about
-- applications and delegation is carried over first.
ALTER TABLE resource_versions ADD COLUMN client_id TEXT;
ALTER TABLE resource_versions ADD COLUMN on_behalf_of TEXT;

CREATE TEMP TABLE provenance_agents AS
SELECT target, client_id, on_behalf_of FROM (
    SELECT
        json_extract(content, '$.target[0].reference') AS target,
        CASE WHEN json_extract(content, '$.agent[0].who.identifier.system') = 'https://fhir.nhs.uk/Id/ers-application'
             THEN json_extract(content, '$.agent[0].who.identifier.value') END AS client_id,
        CASE WHEN json_extract(content, '$.agent[0].onBehalfOf.identifier.system') = 'https://fhir.nhs.uk/Id/sds-user-id'
             THEN json_extract(content, '$.agent[0].onBehalfOf.identifier.value') END AS on_behalf_of
    FROM resources WHERE res_type = 'Provenance'
) WHERE client_id IS NOT NULL OR on_behalf_of IS NOT NULL;
CREATE INDEX provenance_agents_target ON provenance_agents (target);

UPDATE resource_versions
SET client_id = (SELECT a.client_id FROM provenance_agents a
                 WHERE a.target = resource_versions.res_type || '/' || resource_versions.id || '/_history/' || resource_versions.version_id),
    on_behalf_of = (SELECT a.on_behalf_of FROM provenance_agents a
                    WHERE a.target = resource_versions.res_type || '/' || resource_versions.id || '/_history/' || resource_versions.version_id)
WHERE res_type || '/' || id || '/_history/' || version_id IN (SELECT target FROM provenance_agents);

DROP TABLE provenance_agents;

-- Who made each version, as a Provenance's agent says it (the application, else the user), by
-- time: `Provenance?agent=…` without a target, newest first (`schema::versions`, whose
-- predicate is written with the same expression).
CREATE INDEX resource_versions_maker ON resource_versions (COALESCE(client_id, author_user), last_updated);

DELETE FROM search_tokens WHERE res_type = 'Provenance';
DELETE FROM search_strings WHERE res_type = 'Provenance';
DELETE FROM search_dates WHERE res_type = 'Provenance';
DELETE FROM search_refs WHERE res_type = 'Provenance';
DELETE FROM resource_versions WHERE res_type = 'Provenance';
DELETE FROM resources WHERE res_type = 'Provenance';
