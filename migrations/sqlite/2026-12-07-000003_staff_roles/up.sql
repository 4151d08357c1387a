-- What each staff member may approve (comma-separated roles: support, compliance, security).
-- Staff who exist before this migration keep every role, so an upgrade locks nobody out; new
-- staff get the roles they are created with (`consent admin create --roles`, default support).
ALTER TABLE staff ADD COLUMN roles TEXT NOT NULL DEFAULT 'support,compliance,security';
