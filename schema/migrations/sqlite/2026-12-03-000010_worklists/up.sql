-- Worklists: one row per list a referral or A&G request is on, for each organisation whose
-- list it is (the referrer's organisation, or the organisation of the service the referral is
-- with now), written with the resource in the same transaction. A worklist page is one range
-- of the primary index in the order it is shown (oldest first), however many referrals the
-- organisation has.
CREATE TABLE worklist_entries (
    list        TEXT      NOT NULL,  -- e-RS worklist code: AWAITING_BOOKING, …
    org         TEXT      NOT NULL,  -- ODS code of the organisation whose list it is
    authored    TIMESTAMP NOT NULL,
    referral_id TEXT      NOT NULL,
    service_id  TEXT,                -- provider lists: the service it is with
    specialty   TEXT      NOT NULL,
    PRIMARY KEY (list, org, authored, referral_id)
);
CREATE INDEX worklist_entries_referral ON worklist_entries (referral_id);
-- Existing referrals are listed by the server at its next start (reporting::backfill), which
-- then sets this to 1.
INSERT INTO counters (name, value) VALUES ('worklists_backfilled', 0);
