-- PostgreSQL adds a partial index of the `_access` tokens here. SQLite would use a partial
-- index only for a query that names '_access' as a literal, and every query binds it: the
-- index would cost each write and serve no read. Nothing to do.
SELECT 1;
