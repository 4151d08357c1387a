DROP TRIGGER audit_events_append_only ON audit_events;
DROP TRIGGER audit_events_no_truncate ON audit_events;
ALTER TABLE audit_events ADD COLUMN chain_index BIGINT, ADD COLUMN prev_hash TEXT, ADD COLUMN hash TEXT;
UPDATE audit_events AS e
SET chain_index = l.chain_index,
    hash = l.hash,
    prev_hash = COALESCE(p.hash, '0000000000000000000000000000000000000000000000000000000000000000')
FROM audit_links AS l LEFT JOIN audit_links AS p ON p.chain_index = l.chain_index - 1
WHERE e.seq = l.seq;
CREATE UNIQUE INDEX audit_events_chain_index_key ON audit_events (chain_index)
    WHERE chain_index IS NOT NULL;
CREATE INDEX audit_events_unchained_idx ON audit_events (seq) WHERE chain_index IS NULL;
DROP INDEX audit_events_commit_order_idx;
ALTER TABLE audit_events DROP COLUMN xid;
ALTER TABLE audit_chain_head DROP COLUMN link_floor_xid, DROP COLUMN link_floor_seq;
DROP TABLE audit_links;
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    IF OLD.chain_index IS NOT NULL THEN
        RAISE EXCEPTION 'audit events are append-only';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW WHEN (OLD.chain_index IS NOT NULL)
    EXECUTE FUNCTION audit_events_append_only();
