ALTER TABLE revocations ADD COLUMN position BIGINT;
UPDATE revocations AS r SET position = p.position
FROM revocation_positions AS p WHERE p.seq = r.seq;
CREATE UNIQUE INDEX revocations_position_idx ON revocations (position)
    WHERE position IS NOT NULL;
CREATE INDEX revocations_unlinked_idx ON revocations (seq) WHERE position IS NULL;
DROP INDEX revocations_commit_order_idx;
ALTER TABLE revocations DROP COLUMN xid;
ALTER TABLE revocation_feed_head DROP COLUMN link_floor_xid, DROP COLUMN link_floor_seq;
DROP TABLE revocation_positions;
