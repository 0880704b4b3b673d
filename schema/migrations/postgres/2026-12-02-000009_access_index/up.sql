-- The organisations that may see a resource (`_access` tokens), on their own: every scoped
-- search and export probes them once per candidate row, and this index is a small fraction
-- of the whole token index those probes read otherwise.
CREATE INDEX search_tokens_access ON search_tokens (res_type, res_id, code) WHERE param = '_access';
