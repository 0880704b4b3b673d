-- Idempotency keys (the Idempotency-Key request header): a write sent again with the same key
-- is answered with the first answer instead of being done twice. A key is claimed in the
-- transaction of the write it names (so a key is held exactly when its write happened), and
-- the answer is stored just after. Keys belong to the caller that sent them (`owner`), and are
-- forgotten after ERS_IDEMPOTENCY_KEY_HOURS.
CREATE TABLE idempotency_keys (
    owner       TEXT      NOT NULL,
    key         TEXT      NOT NULL,
    fingerprint TEXT      NOT NULL,  -- SHA-256 of the method, path, query and body
    request_id  TEXT      NOT NULL,  -- the request that claimed it
    created_at  TIMESTAMP NOT NULL,
    status      INTEGER,             -- the answer, once stored
    headers     TEXT,                -- JSON object of the answer's headers that are replayed
    body        BLOB,
    PRIMARY KEY (owner, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
