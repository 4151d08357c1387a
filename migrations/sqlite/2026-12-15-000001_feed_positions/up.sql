-- The revocation feed's positions leave the rows for a narrow insert-only table (see the
-- PostgreSQL migration of the same name). SQLite has one writer at a time, so rows commit in seq
-- order: the head's floor is the seq after the last row given a position, and the rows from it on
-- are exactly those without one.
CREATE TABLE revocation_positions (
    position        INTEGER PRIMARY KEY,
    seq             BIGINT NOT NULL UNIQUE
);
INSERT INTO revocation_positions (position, seq)
    SELECT position, seq FROM revocations WHERE position IS NOT NULL;
ALTER TABLE revocation_feed_head ADD COLUMN link_floor_xid BIGINT NOT NULL DEFAULT 0;
ALTER TABLE revocation_feed_head ADD COLUMN link_floor_seq BIGINT NOT NULL DEFAULT 0;
-- The first row without a position (rows are only ever given one in seq order here), or the next
-- seq to come.
UPDATE revocation_feed_head SET link_floor_seq = COALESCE(
    (SELECT MIN(seq) FROM revocations WHERE position IS NULL),
    (SELECT MAX(seq) FROM revocations) + 1,
    0);
DROP INDEX revocations_position_idx;
DROP INDEX revocations_unlinked_idx;
ALTER TABLE revocations DROP COLUMN position;
