ALTER TABLE export_files DROP COLUMN encoding;
