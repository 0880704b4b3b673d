-- The planner estimates a search over an index table (res_type, param, …) by multiplying the
-- columns' selectivities as if they were independent. They are not: `system` follows from
-- `param`, a reference parameter's target type from the parameter, and a code such as a
-- specialty is common within its parameter and rare in the table (slots' tokens and references
-- outnumber everything else). The products came to 1–3 rows where 860 services or 6,000
-- schedules matched, so the planner drove the patient-centred directory search from the wrong
-- end (20 ms instead of 4 ms; once 3.7 s). Multi-column MCV lists give it the real
-- frequencies of the common combinations.
CREATE STATISTICS search_tokens_combination (mcv) ON res_type, param, system, code FROM search_tokens;
ALTER STATISTICS search_tokens_combination SET STATISTICS 1000;
CREATE STATISTICS search_refs_combination (mcv) ON res_type, param, target_type FROM search_refs;
CREATE STATISTICS search_strings_combination (mcv) ON res_type, param FROM search_strings;
CREATE STATISTICS search_dates_combination (mcv) ON res_type, param FROM search_dates;
ANALYZE search_tokens;
ANALYZE search_refs;
ANALYZE search_strings;
ANALYZE search_dates;
