ALTER TABLE search_tokens ADD FOREIGN KEY (res_type, res_id) REFERENCES resources (res_type, id) ON DELETE CASCADE;
ALTER TABLE search_strings ADD FOREIGN KEY (res_type, res_id) REFERENCES resources (res_type, id) ON DELETE CASCADE;
ALTER TABLE search_dates ADD FOREIGN KEY (res_type, res_id) REFERENCES resources (res_type, id) ON DELETE CASCADE;
ALTER TABLE search_refs ADD FOREIGN KEY (res_type, res_id) REFERENCES resources (res_type, id) ON DELETE CASCADE;
ALTER TABLE search_geo ADD FOREIGN KEY (res_type, res_id) REFERENCES resources (res_type, id) ON DELETE CASCADE;
ALTER TABLE unique_identifiers ADD FOREIGN KEY (res_type, res_id) REFERENCES resources (res_type, id);
