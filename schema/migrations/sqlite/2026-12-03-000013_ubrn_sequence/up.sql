-- PostgreSQL takes UBRNs from a sequence from here on. SQLite keeps the `ubrn` counter row,
-- taken inside the creating transaction (its writers run one at a time): nothing to do.
SELECT 1;
