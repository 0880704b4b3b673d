-- Client assertions (signed JWTs of registered applications) already exchanged for a token:
-- each (client, jti) is accepted once, so a captured assertion cannot be replayed. Rows are
-- dropped once the assertion has expired.
CREATE TABLE used_assertions (
    client_id  TEXT      NOT NULL,
    jti        TEXT      NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX used_assertions_expiry ON used_assertions (expires_at);
