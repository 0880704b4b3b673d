-- The providers' APPOINTMENTS_FOR_BOOKING worklist: referrals the provider is to book
-- (TRIAGED_PROVIDER_TO_ACTION: triaged "accept, book later", or an appointment cancelled
-- "action later"). New changes list them as they happen; the referrals already in that state
-- are listed here from their report rows, which hold the same facts (the provider organisation
-- and service they are with, their specialty, when they were made).
INSERT INTO worklist_entries (list, org, authored, referral_id, service_id, specialty)
SELECT 'APPOINTMENTS_FOR_BOOKING', provider_org, created, id, service_id, specialty
FROM report_referrals
WHERE kind = 'referral' AND state = 'TRIAGED_PROVIDER_TO_ACTION' AND provider_org IS NOT NULL;
