-- What the write claiming a key did ("created Appointment/a.1; updated Slot/s.1"), recorded in
-- its transaction: a retry whose first answer was lost with its server (the answer is stored
-- just after the commit) is told where the result is, instead of only that there is one.
ALTER TABLE idempotency_keys ADD COLUMN written TEXT;
