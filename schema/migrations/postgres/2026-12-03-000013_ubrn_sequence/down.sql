UPDATE counters SET value = (SELECT last_value FROM ubrn_numbers) WHERE name = 'ubrn';
DROP SEQUENCE ubrn_numbers;
