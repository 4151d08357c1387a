-- The dormancy sweep selects by the day of a grant's activity, then by its exact instant (see
-- the PostgreSQL migration of the same name, where this keeps use recording HOT). SQLite has no
-- HOT; the column is virtual here (computed when read and when indexed) so the sweep's query is
-- the same on both.
ALTER TABLE grants ADD COLUMN activity_day TEXT
    GENERATED ALWAYS AS (date(COALESCE(last_used_at, authorized_at, created_at))) VIRTUAL;
CREATE INDEX grants_activity_day_idx ON grants (activity_day) WHERE status = 'authorized';
DROP INDEX grants_activity_idx;
