CREATE INDEX grants_expiry_idx ON grants (status, expires_at);
DROP INDEX grants_live_expiry_idx;
