DROP TABLE revocation_feed_head;
DROP INDEX revocations_expiry_idx;
DROP INDEX revocations_unlinked_idx;
DROP INDEX revocations_position_idx;
ALTER TABLE revocations DROP COLUMN expires_at;
ALTER TABLE revocations DROP COLUMN position;
