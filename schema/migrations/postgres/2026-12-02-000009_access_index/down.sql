DROP INDEX search_tokens_access;
