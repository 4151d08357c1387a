-- The staff channel's position in the audit chain: events linked after it are still to be
-- broadcast. One instance at a time sends (a lease), in chain order. It starts at the chain's
-- current end: history before the upgrade is not broadcast.
CREATE TABLE staff_broadcast (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    chain_index     BIGINT NOT NULL,
    lease_until     TIMESTAMP,
    last_error      TEXT,
    updated_at      TIMESTAMP NOT NULL
);
INSERT INTO staff_broadcast (id, chain_index, updated_at)
    SELECT 1, COALESCE(MAX(chain_index), 0), CURRENT_TIMESTAMP FROM audit_events;
