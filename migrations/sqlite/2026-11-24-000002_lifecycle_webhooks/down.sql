DROP TABLE webhook_outbox;
CREATE TABLE webhook_outbox (
    id              TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL REFERENCES clients(id),
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    last_error      TEXT,
    created_at      TIMESTAMP NOT NULL,
    delivered_at    TIMESTAMP
);
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (status, next_attempt_at);

DROP INDEX grants_activity_idx;
ALTER TABLE grants DROP COLUMN reconfirmed_at;
ALTER TABLE grants DROP COLUMN dormancy_warned_at;
ALTER TABLE grants RENAME COLUMN expiry_warned_at TO warned_at;
