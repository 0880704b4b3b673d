ALTER TABLE resources RESET (autovacuum_analyze_scale_factor);
ALTER TABLE search_tokens RESET (autovacuum_analyze_scale_factor);
ALTER TABLE search_strings RESET (autovacuum_analyze_scale_factor);
ALTER TABLE search_dates RESET (autovacuum_analyze_scale_factor);
ALTER TABLE search_refs RESET (autovacuum_analyze_scale_factor);
ALTER TABLE unique_identifiers RESET (autovacuum_analyze_scale_factor);
