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
    details         TEXT NOT NULL,
    chain_index     BIGINT UNIQUE,
    prev_hash       TEXT,
    hash            TEXT
);
INSERT INTO audit_events_rebuilt
    SELECT e.seq, e.event_id, e.occurred_at, e.actor_type, e.actor_id, e.action, e.target_type,
           e.target_id, e.details, l.chain_index,
           CASE WHEN l.chain_index IS NULL THEN NULL
                ELSE COALESCE(p.hash, '0000000000000000000000000000000000000000000000000000000000000000') END,
           l.hash
    FROM audit_events AS e
    LEFT JOIN audit_links AS l ON l.seq = e.seq
    LEFT JOIN audit_links AS p ON p.chain_index = l.chain_index - 1;
DROP TABLE audit_events;
ALTER TABLE audit_events_rebuilt RENAME TO audit_events;
CREATE INDEX audit_events_unchained_idx ON audit_events (seq) WHERE chain_index IS NULL;
CREATE INDEX audit_events_target_seq_idx ON audit_events (target_type, target_id, seq);
CREATE TRIGGER audit_events_no_update
BEFORE UPDATE ON audit_events
WHEN OLD.chain_index IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
CREATE TRIGGER audit_events_no_delete
BEFORE DELETE ON audit_events
WHEN OLD.chain_index IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
DROP TABLE audit_links;
ALTER TABLE audit_chain_head DROP COLUMN link_floor_xid;
ALTER TABLE audit_chain_head DROP COLUMN link_floor_seq;
