DROP TRIGGER audit_events_append_only ON audit_events;
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE INDEX grants_last_used_idx ON grants (status, last_used_at);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_type, actor_id, occurred_at);
CREATE INDEX audit_events_target_idx ON audit_events (target_type, target_id, occurred_at);
