-- Lifecycle warnings and webhook delivery.

-- Warnings before the end: one per expiry (reset when the customer extends the grant) and one per
-- period of inactivity (a later use makes last_used_at newer than dormancy_warned_at again).
ALTER TABLE grants RENAME COLUMN warned_at TO expiry_warned_at;
ALTER TABLE grants ADD COLUMN dormancy_warned_at TIMESTAMP;
-- When the customer last re-confirmed (extended) the grant: an extension renews the lifetime of
-- the last confirmation, not of everything since the first authorization.
ALTER TABLE grants ADD COLUMN reconfirmed_at TIMESTAMP;
-- The dormancy sweep selects on exactly this expression.
CREATE INDEX grants_activity_idx ON grants (COALESCE(last_used_at, authorized_at, created_at)) WHERE status = 'authorized';

-- The outbox: written in the same transaction as the state change it reports, delivered (at
-- least once) by every instance's delivery worker, which claims due rows by pushing
-- next_attempt_at forward (a lease), so a crash mid-delivery only delays a retry.
DROP TABLE webhook_outbox;
CREATE TABLE webhook_outbox (
    id              TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL REFERENCES clients(id),
    event_type      TEXT NOT NULL,
    grant_id        TEXT,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    last_attempt_at TIMESTAMP,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TIMESTAMP NOT NULL,
    delivered_at    TIMESTAMP
);
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_outbox_client_idx ON webhook_outbox (client_id, created_at);
