-- Indexes no query reads, written on every insert and update (see the PostgreSQL migration of
-- the same name).
DROP INDEX audit_events_target_idx;
DROP INDEX audit_events_actor_idx;
DROP INDEX grants_last_used_idx;
