-- The audit chain becomes keyed: each hash is HMAC-SHA-256 under a key derived from the master
-- key (which is not in the database), where it was a plain SHA-256 that anyone able to write the
-- database could recompute. Events linked under the plain hash are unlinked here, and the server
-- links them again, in their original order, under the key at its next start (the plain chain
-- proved nothing against such a writer anyway). To keep a proof of the old chain, run the
-- previous release's verification before upgrading.
-- The old links are kept, as they were, for whoever wants to check the old chain with the
-- previous release's rules. All instances must be stopped for this migration: an old instance
-- still linking with the plain hash after it would break the new chain.
CREATE TABLE audit_chain_legacy AS
SELECT seq, chain_index, prev_hash, hash FROM audit_events WHERE chain_index IS NOT NULL;
ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only;
UPDATE audit_events SET chain_index = NULL, prev_hash = NULL, hash = NULL
WHERE chain_index IS NOT NULL;
ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only;
UPDATE audit_chain_head
SET last_index = 0,
    last_hash = '0000000000000000000000000000000000000000000000000000000000000000',
    updated_at = CURRENT_TIMESTAMP;
