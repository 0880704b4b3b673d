DROP STATISTICS IF EXISTS search_tokens_combination;
DROP STATISTICS IF EXISTS search_refs_combination;
DROP STATISTICS IF EXISTS search_strings_combination;
DROP STATISTICS IF EXISTS search_dates_combination;
