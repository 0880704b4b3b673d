-- Reporting tables: one row per referral, A&G request, appointment and slot, written with the
-- resource's index in the same transaction (so a report never disagrees with the data), with
-- the organisations already resolved and the ISO week computed, so reports are plain
-- aggregates over one table. A deleted resource keeps its row, marked deleted.
CREATE TABLE report_referrals (
    id           TEXT      NOT NULL PRIMARY KEY,
    kind         TEXT      NOT NULL,  -- referral | advice
    ubrn         TEXT      NOT NULL,
    state        TEXT      NOT NULL,  -- e-RS referral state or A&G status
    active       INTEGER   NOT NULL,
    priority     TEXT      NOT NULL,
    specialty    TEXT      NOT NULL,
    clinic_type  TEXT,
    referrer_org TEXT,
    provider_org TEXT,
    service_id   TEXT,
    patient_id   TEXT,
    created      TIMESTAMP NOT NULL,
    updated      TIMESTAMP NOT NULL,
    week         TEXT      NOT NULL,  -- ISO week of created, 2026-W49
    converted    INTEGER   NOT NULL,  -- a referral converted from an A&G request
    deleted      INTEGER   NOT NULL
);
CREATE INDEX report_referrals_active ON report_referrals (kind, active, created, id);
CREATE INDEX report_referrals_week ON report_referrals (week);
CREATE TABLE report_appointments (
    id           TEXT      NOT NULL PRIMARY KEY,
    referral_id  TEXT,
    service_id   TEXT,
    provider_org TEXT,
    referrer_org TEXT,
    specialty    TEXT      NOT NULL,
    priority     TEXT      NOT NULL,
    status       TEXT      NOT NULL,
    booked       INTEGER   NOT NULL,  -- a booking was made (not a deferral)
    start        TIMESTAMP,
    created      TIMESTAMP NOT NULL,
    week         TEXT      NOT NULL,  -- ISO week of created
    deleted      INTEGER   NOT NULL
);
CREATE INDEX report_appointments_week ON report_appointments (week);
CREATE TABLE report_slots (
    id           TEXT      NOT NULL PRIMARY KEY,
    service_id   TEXT      NOT NULL,
    provider_org TEXT,
    specialty    TEXT,
    priority     TEXT      NOT NULL,
    status       TEXT      NOT NULL,
    start        TIMESTAMP NOT NULL,
    week         TEXT      NOT NULL,  -- ISO week of start
    deleted      INTEGER   NOT NULL
);
CREATE INDEX report_slots_week ON report_slots (week, service_id);
-- FHIR Bulk Data exports: the job (kept so a restart resumes it) and its NDJSON files, kept in
-- the database so any instance can serve them.
CREATE TABLE export_jobs (
    id           TEXT      NOT NULL PRIMARY KEY,
    owner        TEXT      NOT NULL,  -- who may poll and download: user or client, role, ODS
    owner_org    TEXT      NOT NULL,
    owner_role   TEXT      NOT NULL,
    request      TEXT      NOT NULL,  -- the kick-off URL
    level        TEXT      NOT NULL,  -- system | patient
    types        TEXT      NOT NULL,  -- comma-separated, in export order
    since        TIMESTAMP,
    status       TEXT      NOT NULL,  -- queued | running | complete | failed | cancelled
    position     TEXT      NOT NULL,  -- next type index and last id done: 2|abc
    exported     BIGINT    NOT NULL,
    error        TEXT,
    transaction_time TIMESTAMP NOT NULL,
    created      TIMESTAMP NOT NULL,
    completed    TIMESTAMP,
    expires      TIMESTAMP NOT NULL,
    lease_until  TIMESTAMP,
    lease_owner  TEXT
);
CREATE TABLE export_files (
    job_id   TEXT    NOT NULL,
    part     INTEGER NOT NULL,
    res_type TEXT    NOT NULL,
    count    BIGINT  NOT NULL,
    data     BYTEA   NOT NULL,
    PRIMARY KEY (job_id, part)
);
