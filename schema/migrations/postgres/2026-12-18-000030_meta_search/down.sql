DELETE FROM search_tokens WHERE param IN ('_tag', '_security', '_profile');
