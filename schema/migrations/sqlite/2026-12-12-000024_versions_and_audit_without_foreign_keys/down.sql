-- PostgreSQL only (its foreign keys are checked by triggers); SQLite keeps its own.
SELECT 1;
