-- Export files are stored gzip-compressed (FHIR NDJSON shrinks about 8 times); files written
-- before this stay as they were. PostgreSQL stores them out of line without compressing them
-- again (pglz would spend its time failing to shrink gzip).
ALTER TABLE export_files ADD COLUMN encoding TEXT NOT NULL DEFAULT 'identity';
ALTER TABLE export_files ALTER COLUMN data SET STORAGE EXTERNAL;
