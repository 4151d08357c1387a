CREATE INDEX grants_last_used_idx ON grants (status, last_used_at);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_type, actor_id, occurred_at);
CREATE INDEX audit_events_target_idx ON audit_events (target_type, target_id, occurred_at);
