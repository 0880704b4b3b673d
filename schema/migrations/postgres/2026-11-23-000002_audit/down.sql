DROP TABLE audit_entities;
DROP TABLE audit_events;
