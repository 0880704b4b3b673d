-- Uploaded attachments (referral letters, clinical documents): the bytes and what was checked
-- about them. A DocumentReference links one to a referral; until then only the uploading
-- organisation may read it.
CREATE TABLE binaries (
    id           TEXT      NOT NULL PRIMARY KEY,
    content_type TEXT      NOT NULL,
    size         BIGINT    NOT NULL,
    sha256       TEXT      NOT NULL,
    filename     TEXT,
    uploaded_by  TEXT      NOT NULL,
    uploaded_at  TIMESTAMP NOT NULL,
    data         BLOB      NOT NULL
);
