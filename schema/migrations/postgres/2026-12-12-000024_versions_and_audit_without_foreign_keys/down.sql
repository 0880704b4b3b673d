ALTER TABLE resource_versions ADD FOREIGN KEY (res_type, id) REFERENCES resources (res_type, id);
ALTER TABLE audit_entities ADD FOREIGN KEY (audit_id) REFERENCES audit_events (id);
