-- Every change of a resource type systems may subscribe to, written in the transaction of the
-- change itself (no lost or phantom events); `seq` is the event number subscribers see.
CREATE TABLE outbox (
    seq        INTEGER   PRIMARY KEY AUTOINCREMENT,
    res_type   TEXT      NOT NULL,
    res_id     TEXT      NOT NULL,
    version_id BIGINT    NOT NULL,
    method     TEXT      NOT NULL,
    occurred   TIMESTAMP NOT NULL
);
-- Delivery state of each Subscription: how far it has got, its failures and back-off, the
-- lease of the instance delivering it, and the channel headers (kept out of the resource).
CREATE TABLE subscription_state (
    id           TEXT      NOT NULL PRIMARY KEY,
    owner_org    TEXT      NOT NULL,
    owner_role   TEXT      NOT NULL,
    cursor       BIGINT    NOT NULL,
    events_sent  BIGINT    NOT NULL,
    failures     INTEGER   NOT NULL,
    next_attempt TIMESTAMP NOT NULL,
    lease_until  TIMESTAMP,
    lease_owner  TEXT,
    last_error   TEXT,
    last_sent    TIMESTAMP NOT NULL,
    headers      TEXT      NOT NULL,
    -- 1 while the handshake is still to be sent; the heartbeat period (seconds), if any.
    handshake    INTEGER   NOT NULL,
    heartbeat    BIGINT
);
-- Who has read which announcement (a CommunicationRequest of category notification).
CREATE TABLE announcement_reads (
    id      TEXT      NOT NULL,
    reader  TEXT      NOT NULL,
    read_at TIMESTAMP NOT NULL,
    PRIMARY KEY (id, reader)
);
