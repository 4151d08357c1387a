-- Back to the plain chain: unlink everything; the previous release links it again.
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
DROP TABLE audit_chain_legacy;
