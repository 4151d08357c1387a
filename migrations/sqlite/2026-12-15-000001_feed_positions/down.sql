ALTER TABLE revocations ADD COLUMN position BIGINT;
UPDATE revocations SET position =
    (SELECT p.position FROM revocation_positions AS p WHERE p.seq = revocations.seq);
CREATE UNIQUE INDEX revocations_position_idx ON revocations (position) WHERE position IS NOT NULL;
CREATE INDEX revocations_unlinked_idx ON revocations (seq) WHERE position IS NULL;
ALTER TABLE revocation_feed_head DROP COLUMN link_floor_xid;
ALTER TABLE revocation_feed_head DROP COLUMN link_floor_seq;
DROP TABLE revocation_positions;
