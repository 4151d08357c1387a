-- The audit chain becomes keyed (HMAC-SHA-256 under a key derived from the master key). Events
-- linked under the old plain SHA-256 are unlinked; the server links them again under the key at
-- its next start. (See the PostgreSQL migration of the same name.)
-- The old links are kept, as they were, for whoever wants to check the old chain with the
-- previous release's rules. All instances must be stopped for this migration: an old instance
-- still linking with the plain hash after it would break the new chain.
CREATE TABLE audit_chain_legacy AS
SELECT seq, chain_index, prev_hash, hash FROM audit_events WHERE chain_index IS NOT NULL;
DROP TRIGGER audit_events_no_update;
UPDATE audit_events SET chain_index = NULL, prev_hash = NULL, hash = NULL
WHERE chain_index IS NOT NULL;
CREATE TRIGGER audit_events_no_update
BEFORE UPDATE ON audit_events
WHEN OLD.chain_index IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
UPDATE audit_chain_head
SET last_index = 0,
    last_hash = '0000000000000000000000000000000000000000000000000000000000000000',
    updated_at = CURRENT_TIMESTAMP;
