-- Every index is written on every insert, and on every update that is not HOT: the lifecycle
-- sweep, which ends grants a thousand at a time, and the audit chainer, which links every event
-- once, paid for three indexes no query reads (BENCHMARKS.md, "Sweep: fewer writes per ended
-- grant").
-- The audit log is read by target in sequence order (audit_events_target_seq_idx), by chain
-- index, by event id and by seq; never by actor, nor by target in time order.
DROP INDEX audit_events_target_idx;
DROP INDEX audit_events_actor_idx;
-- Dormancy reads COALESCE(last_used_at, authorized_at, created_at) through grants_activity_idx;
-- nothing filters on (status, last_used_at) any more.
DROP INDEX grants_last_used_idx;

-- The append-only guard, unchanged in what it refuses, is decided by the trigger's WHEN clause:
-- the chainer's link of an unlinked event no longer calls a PL/pgSQL function per row.
DROP TRIGGER audit_events_append_only ON audit_events;
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW WHEN (OLD.chain_index IS NOT NULL)
    EXECUTE FUNCTION audit_events_append_only();
