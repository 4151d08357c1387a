-- Back to the plain chain: unlink everything; the previous release links it again.
ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only;
UPDATE audit_events SET chain_index = NULL, prev_hash = NULL, hash = NULL
WHERE chain_index IS NOT NULL;
ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only;
UPDATE audit_chain_head
SET last_index = 0,
    last_hash = '0000000000000000000000000000000000000000000000000000000000000000',
    updated_at = CURRENT_TIMESTAMP;
DROP TABLE audit_chain_legacy;
