-- Named counters the server allocates from inside a write transaction (UBRNs). The row lock
-- (PostgreSQL) or the write lock (SQLite) makes each value go to exactly one caller.
CREATE TABLE counters (
    name  TEXT   NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL
);
-- UBRNs the server assigns start at 000000100000; below that are the NHS sandbox UBRNs
-- (000000070000-000000070012), which the sandbox seed uses as they are.
INSERT INTO counters (name, value) VALUES ('ubrn', 99999);
