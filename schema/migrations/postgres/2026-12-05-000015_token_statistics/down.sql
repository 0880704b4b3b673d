DROP STATISTICS IF EXISTS search_tokens_combination;
