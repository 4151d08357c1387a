-- The audit chain's links leave the events for a narrow insert-only table (see the PostgreSQL
-- migration of the same name). SQLite has one writer at a time, so events commit in seq order:
-- the head's floor is the seq after the last linked one, and the events from it on are exactly the
-- unlinked ones.
CREATE TABLE audit_links (
    chain_index     INTEGER PRIMARY KEY,
    seq             BIGINT NOT NULL UNIQUE,
    hash            TEXT NOT NULL
);
INSERT INTO audit_links (chain_index, seq, hash)
    SELECT chain_index, seq, hash FROM audit_events WHERE chain_index IS NOT NULL;
ALTER TABLE audit_chain_head ADD COLUMN link_floor_xid BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit_chain_head ADD COLUMN link_floor_seq BIGINT NOT NULL DEFAULT 0;
UPDATE audit_chain_head SET link_floor_seq = COALESCE((SELECT MAX(seq) FROM audit_links), 0) + 1;

-- The chain columns carry a UNIQUE constraint, which SQLite cannot drop: the table is rebuilt.
DROP TRIGGER audit_events_no_update;
DROP TRIGGER audit_events_no_delete;
CREATE TABLE audit_events_rebuilt (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    occurred_at     TIMESTAMP NOT NULL,
    actor_type      TEXT NOT NULL,
    actor_id        TEXT NOT NULL,
    action          TEXT NOT NULL,
    target_type     TEXT NOT NULL,
    target_id       TEXT NOT NULL,
    details         TEXT NOT NULL
);
INSERT INTO audit_events_rebuilt
    SELECT seq, event_id, occurred_at, actor_type, actor_id, action, target_type, target_id, details
    FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_rebuilt RENAME TO audit_events;
CREATE INDEX audit_events_target_seq_idx ON audit_events (target_type, target_id, seq);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_links_no_update BEFORE UPDATE ON audit_links
BEGIN
    SELECT RAISE(ABORT, 'audit_links is append-only');
END;
CREATE TRIGGER audit_links_no_delete BEFORE DELETE ON audit_links
BEGIN
    SELECT RAISE(ABORT, 'audit_links is append-only');
END;
