-- A grant's history, newest first and a page at a time (the dashboard), reads the audit log by
-- target in sequence order: this index serves it without sorting every event of the grant.
CREATE INDEX audit_events_target_seq_idx ON audit_events (target_type, target_id, seq);
