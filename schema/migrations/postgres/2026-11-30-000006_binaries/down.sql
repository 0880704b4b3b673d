DROP TABLE binaries;
