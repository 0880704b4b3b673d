-- The six index tables are derived from their resource and written only by the store, in the
-- transaction that writes the resource (`store::insert_resource`, `update_resource`,
-- `delete_resource`, `purge`, which clears them itself). Their foreign keys checked each new
-- index row against `resources` through a trigger (a locking SELECT per row, some thirty per
-- booking): about a tenth of a booking's throughput on the benchmark machine
-- (docs/BENCHMARKS.md, Booking), for a guarantee the store already gives. Searches join
-- `resources` in any case, so an index row without its resource would never be an answer.
-- (SQLite checks foreign keys in-process, without triggers, and keeps them.)
ALTER TABLE search_tokens DROP CONSTRAINT IF EXISTS search_tokens_res_type_res_id_fkey;
ALTER TABLE search_strings DROP CONSTRAINT IF EXISTS search_strings_res_type_res_id_fkey;
ALTER TABLE search_dates DROP CONSTRAINT IF EXISTS search_dates_res_type_res_id_fkey;
ALTER TABLE search_refs DROP CONSTRAINT IF EXISTS search_refs_res_type_res_id_fkey;
ALTER TABLE search_geo DROP CONSTRAINT IF EXISTS search_geo_res_type_res_id_fkey;
ALTER TABLE unique_identifiers DROP CONSTRAINT IF EXISTS unique_identifiers_res_type_res_id_fkey;
