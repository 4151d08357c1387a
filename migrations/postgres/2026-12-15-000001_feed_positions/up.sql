-- The revocation feed's positions leave the rows for a narrow insert-only table of their own, as
-- the audit chain's links did (2026-12-14-000001_audit_links). Giving a committed row its
-- position used to rewrite it: a non-HOT update (the position is indexed) that wrote the row and
-- every index of `revocations` again, the largest statement of the lifecycle sweep once the audit
-- links had moved (BENCHMARKS.md, "Sweep: ..."). A position is now one small insert.
--
-- The linker finds rows without a position the same way the chainer finds unlinked events: each
-- row records its inserting transaction (`xid`, 64-bit, never wraps), and the head a floor, an
-- (xid, seq) before which every row has a position. A pass gives positions to the committed rows
-- from the floor on that have none, in (xid, seq) order, and moves the floor up, at most to the
-- oldest transaction still running when it began (platform::revocation, `link_feed`).
CREATE TABLE revocation_positions (
    position        BIGINT PRIMARY KEY,
    seq             BIGINT NOT NULL UNIQUE
);
INSERT INTO revocation_positions (position, seq)
    SELECT position, seq FROM revocations WHERE position IS NOT NULL;

-- Rows with a position before this migration get xid 1 (a constant default: no table rewrite),
-- those still without one xid 2, new ones their own transaction id; the floor starts at (2, 0).
ALTER TABLE revocation_feed_head ADD COLUMN link_floor_xid BIGINT NOT NULL DEFAULT 2,
    ADD COLUMN link_floor_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE revocations ADD COLUMN xid xid8 NOT NULL DEFAULT '1';
UPDATE revocations SET xid = '2' WHERE position IS NULL;
ALTER TABLE revocations ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
-- Drops the position index and the unlinked-rows index with the column.
ALTER TABLE revocations DROP COLUMN position;
CREATE INDEX revocations_commit_order_idx ON revocations (xid, seq);
