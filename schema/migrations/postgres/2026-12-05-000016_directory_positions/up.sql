-- Where each service is, by specialty: one row per (service, location, specialty coding),
-- the join of the service's `specialty` tokens, its `location` references and those
-- locations' positions, kept in step by the store whenever a HealthcareService or a Location
-- is written (`directory::refresh`). The patient-centred directory search (a specialty
-- within a radius) reads one range of `directory_positions_near` instead of every service at
-- every location inside the radius (1,350 in London at 25 miles) and checking each one's
-- specialty.
CREATE TABLE directory_positions (
    service_id  TEXT             NOT NULL,
    location_id TEXT             NOT NULL,
    system      TEXT             NOT NULL,
    code        TEXT             NOT NULL,
    latitude    DOUBLE PRECISION NOT NULL,
    longitude   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (service_id, location_id, system, code)
);
CREATE INDEX directory_positions_near ON directory_positions (code, latitude, longitude, system, service_id);
CREATE INDEX directory_positions_location ON directory_positions (location_id);
INSERT INTO directory_positions (service_id, location_id, system, code, latitude, longitude)
SELECT DISTINCT t.res_id, g.res_id, t.system, t.code, g.latitude, g.longitude
FROM search_tokens t
JOIN search_refs r ON r.res_type = 'HealthcareService' AND r.res_id = t.res_id
    AND r.param = 'location' AND r.target_type = 'Location'
JOIN search_geo g ON g.res_type = 'Location' AND g.res_id = r.target_id AND g.param = 'near'
WHERE t.res_type = 'HealthcareService' AND t.param = 'specialty';
