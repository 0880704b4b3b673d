DROP TABLE subscription_state;
DROP TABLE outbox;
