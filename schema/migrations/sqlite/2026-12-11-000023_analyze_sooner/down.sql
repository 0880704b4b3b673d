-- PostgreSQL only (when autovacuum analyzes the shared tables); nothing to change on SQLite.
SELECT 1;
