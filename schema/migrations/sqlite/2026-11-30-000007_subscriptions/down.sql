DROP TABLE announcement_reads;
DROP TABLE subscription_state;
DROP TABLE outbox;
