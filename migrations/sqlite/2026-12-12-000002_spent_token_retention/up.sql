-- Spent tokens are purged (see the PostgreSQL migration of the same name). SQLite has no BRIN;
-- B-trees here (one writer, each write fsync'd: an index entry is not what a write costs).
CREATE INDEX issued_tokens_expiry_idx ON issued_tokens (expires_at);
CREATE INDEX refresh_tokens_created_idx ON refresh_tokens (created_at);
