-- UBRNs come from a sequence, taken inside the transaction that uses them: no row lock held to
-- commit, so concurrent creates do not queue on a counter (a rolled-back one leaves a gap).
CREATE SEQUENCE ubrn_numbers;
SELECT setval('ubrn_numbers', (SELECT value FROM counters WHERE name = 'ubrn'));
