-- Every resource type shares `resources` and the index tables, so one type can grow from a
-- handful of rows to thousands (a day's appointments) while the table as a whole changes by
-- far less than autovacuum's default 10 % before it is analyzed again. Until then the planner
-- takes the type for almost empty and plans its searches accordingly (a count of a slot's
-- booked appointments walked every appointment: 1.1 s instead of well under 1 ms; see
-- docs/BENCHMARKS.md, Booking). Analyzed after 1 % instead.
ALTER TABLE resources SET (autovacuum_analyze_scale_factor = 0.01);
ALTER TABLE search_tokens SET (autovacuum_analyze_scale_factor = 0.01);
ALTER TABLE search_strings SET (autovacuum_analyze_scale_factor = 0.01);
ALTER TABLE search_dates SET (autovacuum_analyze_scale_factor = 0.01);
ALTER TABLE search_refs SET (autovacuum_analyze_scale_factor = 0.01);
ALTER TABLE unique_identifiers SET (autovacuum_analyze_scale_factor = 0.01);
