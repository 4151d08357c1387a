-- The audit chain's links leave the events for a narrow insert-only table of their own.
-- Linking an event used to rewrite it: a non-HOT update of the whole row (details included) that
-- wrote every index of `audit_events` again, the largest single cost of the lifecycle sweep
-- (BENCHMARKS.md, "Sweep: ..."). A link is now one small insert, and `audit_events` refuses
-- every UPDATE and DELETE.
--
-- The linker finds unlinked events without a NULL to index, and without skipping an event whose
-- transaction commits late: each event records its inserting transaction (`xid`, 64-bit, never
-- wraps), and the head a floor, an (xid, seq) before which every event is linked. A pass links
-- the committed events from the floor on that have no link, in (xid, seq) order, and moves the
-- floor up, at most to the oldest transaction still running when it began (platform::audit,
-- `link_pending`). A transaction left open holds the floor back: passes then read more events
-- (those written since it began), but never skip one.
CREATE TABLE audit_links (
    chain_index     BIGINT PRIMARY KEY,
    seq             BIGINT NOT NULL UNIQUE,
    hash            TEXT NOT NULL
);
INSERT INTO audit_links (chain_index, seq, hash)
    SELECT chain_index, seq, hash FROM audit_events WHERE chain_index IS NOT NULL;

-- Events linked before this migration get xid 1 (a constant default: no table rewrite), those
-- still unlinked xid 2 (found through the unlinked-events index), new ones their own transaction
-- id; the floor starts at (2, 0).
ALTER TABLE audit_chain_head ADD COLUMN link_floor_xid BIGINT NOT NULL DEFAULT 2,
    ADD COLUMN link_floor_seq BIGINT NOT NULL DEFAULT 0;

DROP TRIGGER audit_events_append_only ON audit_events;
ALTER TABLE audit_events ADD COLUMN xid xid8 NOT NULL DEFAULT '1';
UPDATE audit_events SET xid = '2' WHERE chain_index IS NULL;
ALTER TABLE audit_events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
-- Drops the unlinked-events index and the chain index's unique index with the columns.
ALTER TABLE audit_events DROP COLUMN chain_index, DROP COLUMN prev_hash, DROP COLUMN hash;
CREATE INDEX audit_events_commit_order_idx ON audit_events (xid, seq);

-- Defence in depth: neither table can be changed or emptied through normal SQL (the keyed chain
-- still detects tampering by an owner who drops these triggers).
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_links_append_only
    BEFORE UPDATE OR DELETE ON audit_links
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_links_no_truncate
    BEFORE TRUNCATE ON audit_links
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
