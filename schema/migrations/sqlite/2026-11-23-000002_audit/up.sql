-- The audit trail: append-only. Nothing in the application updates or deletes these rows.
CREATE TABLE audit_events (
    id             TEXT      NOT NULL PRIMARY KEY,
    recorded       TIMESTAMP NOT NULL,
    action         TEXT      NOT NULL,
    subtype        TEXT      NOT NULL,
    outcome        TEXT      NOT NULL,
    outcome_desc   TEXT,
    user_id        TEXT,
    client_id      TEXT,
    role           TEXT,
    org            TEXT,
    on_behalf_of   TEXT,
    method         TEXT      NOT NULL,
    path           TEXT      NOT NULL,
    query          TEXT,
    status         INTEGER   NOT NULL,
    source_address TEXT,
    request_id     TEXT      NOT NULL,
    correlation_id TEXT
);
CREATE INDEX audit_events_recorded ON audit_events (recorded);
CREATE INDEX audit_events_user ON audit_events (user_id, recorded);

-- What each event touched: resources, with the patient's NHS number and the UBRN when known.
CREATE TABLE audit_entities (
    audit_id    TEXT NOT NULL,
    position    INTEGER NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    nhs_number  TEXT,
    ubrn        TEXT,
    PRIMARY KEY (audit_id, position),
    FOREIGN KEY (audit_id) REFERENCES audit_events (id)
);
CREATE INDEX audit_entities_entity ON audit_entities (entity_type, entity_id);
CREATE INDEX audit_entities_nhs ON audit_entities (nhs_number);
