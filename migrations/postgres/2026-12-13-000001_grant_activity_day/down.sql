ALTER TABLE grants RESET (fillfactor);
CREATE INDEX grants_activity_idx ON grants ((COALESCE(last_used_at, authorized_at, created_at))) WHERE status = 'authorized';
DROP INDEX grants_activity_day_idx;
ALTER TABLE grants DROP COLUMN activity_day;
