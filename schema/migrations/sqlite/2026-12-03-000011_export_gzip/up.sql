-- Export files are stored gzip-compressed (FHIR NDJSON shrinks about 8 times); files written
-- before this stay as they were.
ALTER TABLE export_files ADD COLUMN encoding TEXT NOT NULL DEFAULT 'identity';
