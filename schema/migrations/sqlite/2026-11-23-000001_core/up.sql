-- Current version of every resource. `content` is the FHIR JSON of the current version
-- (kept for deleted resources too, so nothing is lost); `deleted` is 0 or 1.
CREATE TABLE resources (
    res_type     TEXT      NOT NULL,
    id           TEXT      NOT NULL,
    version_id   BIGINT    NOT NULL,
    last_updated TIMESTAMP NOT NULL,
    deleted      INTEGER   NOT NULL DEFAULT 0,
    content      TEXT      NOT NULL,
    PRIMARY KEY (res_type, id)
);
CREATE INDEX resources_type_updated ON resources (res_type, last_updated, id);

-- Every version of every resource, append-only.
CREATE TABLE resource_versions (
    res_type      TEXT      NOT NULL,
    id            TEXT      NOT NULL,
    version_id    BIGINT    NOT NULL,
    last_updated  TIMESTAMP NOT NULL,
    method        TEXT      NOT NULL,
    deleted       INTEGER   NOT NULL DEFAULT 0,
    content       TEXT      NOT NULL,
    author_user   TEXT,
    author_role   TEXT      NOT NULL,
    author_org    TEXT      NOT NULL,
    request_id    TEXT      NOT NULL,
    PRIMARY KEY (res_type, id, version_id),
    FOREIGN KEY (res_type, id) REFERENCES resources (res_type, id)
);
CREATE INDEX resource_versions_type_updated ON resource_versions (res_type, last_updated);
CREATE INDEX resource_versions_updated ON resource_versions (last_updated);

-- Search indexes, rebuilt from the resource on every write.
CREATE TABLE search_tokens (
    res_type TEXT NOT NULL,
    res_id   TEXT NOT NULL,
    param    TEXT NOT NULL,
    system   TEXT NOT NULL,
    code     TEXT NOT NULL,
    PRIMARY KEY (res_type, res_id, param, system, code),
    FOREIGN KEY (res_type, res_id) REFERENCES resources (res_type, id) ON DELETE CASCADE
);
CREATE INDEX search_tokens_lookup ON search_tokens (res_type, param, code, system);

CREATE TABLE search_strings (
    res_type    TEXT NOT NULL,
    res_id      TEXT NOT NULL,
    param       TEXT NOT NULL,
    value_norm  TEXT NOT NULL,
    value_exact TEXT NOT NULL,
    PRIMARY KEY (res_type, res_id, param, value_exact),
    FOREIGN KEY (res_type, res_id) REFERENCES resources (res_type, id) ON DELETE CASCADE
);
CREATE INDEX search_strings_lookup ON search_strings (res_type, param, value_norm);

CREATE TABLE search_dates (
    res_type TEXT      NOT NULL,
    res_id   TEXT      NOT NULL,
    param    TEXT      NOT NULL,
    low      TIMESTAMP NOT NULL,
    high     TIMESTAMP NOT NULL,
    PRIMARY KEY (res_type, res_id, param, low, high),
    FOREIGN KEY (res_type, res_id) REFERENCES resources (res_type, id) ON DELETE CASCADE
);
CREATE INDEX search_dates_lookup ON search_dates (res_type, param, low, high);

CREATE TABLE search_refs (
    res_type    TEXT NOT NULL,
    res_id      TEXT NOT NULL,
    param       TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    PRIMARY KEY (res_type, res_id, param, target_type, target_id),
    FOREIGN KEY (res_type, res_id) REFERENCES resources (res_type, id) ON DELETE CASCADE
);
CREATE INDEX search_refs_lookup ON search_refs (res_type, param, target_id);
CREATE INDEX search_refs_target ON search_refs (target_type, target_id);

-- Business identifiers that must be unique per resource type (NHS number, ODS code, SDS id...).
CREATE TABLE unique_identifiers (
    res_type TEXT NOT NULL,
    system   TEXT NOT NULL,
    value    TEXT NOT NULL,
    res_id   TEXT NOT NULL,
    PRIMARY KEY (res_type, system, value),
    FOREIGN KEY (res_type, res_id) REFERENCES resources (res_type, id)
);
CREATE INDEX unique_identifiers_owner ON unique_identifiers (res_type, res_id);

-- SQLite only: the first statement of every write transaction touches this row, so the
-- transaction takes the write lock at once and waits on busy_timeout instead of failing
-- with SQLITE_BUSY when a read transaction is upgraded.
CREATE TABLE write_lock (
    id      INTEGER PRIMARY KEY,
    counter BIGINT NOT NULL
);
INSERT INTO write_lock (id, counter) VALUES (1, 0);
