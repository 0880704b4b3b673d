-- Positions of resources (Location.position), for `near` searches.
CREATE TABLE search_geo (
    res_type  TEXT             NOT NULL,
    res_id    TEXT             NOT NULL,
    param     TEXT             NOT NULL,
    latitude  DOUBLE PRECISION NOT NULL,
    longitude DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (res_type, res_id, param),
    FOREIGN KEY (res_type, res_id) REFERENCES resources (res_type, id) ON DELETE CASCADE
);
CREATE INDEX search_geo_box ON search_geo (res_type, param, latitude, longitude);

-- Postcode (full or outward code, upper case, single space) to coordinates, loaded by
-- `ers-server import-postcodes`.
CREATE TABLE postcodes (
    code      TEXT             NOT NULL PRIMARY KEY,
    latitude  DOUBLE PRECISION NOT NULL,
    longitude DOUBLE PRECISION NOT NULL
);
