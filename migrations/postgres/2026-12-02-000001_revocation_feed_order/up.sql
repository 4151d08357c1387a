-- The revocation feed in commit order. `seq` is taken when a row is inserted, not when its
-- transaction commits, so a reader paging by `seq` could move past a row that a longer
-- transaction commits later, and never see it. Rows now get their `position` from one linker at
-- a time (platform::revocation::link_feed, under an advisory lock), only once they are committed;
-- readers page by `position`, which therefore only grows in the order rows become visible.
ALTER TABLE revocations ADD COLUMN position BIGINT;
-- When the entry stops mattering: the expiry of the token it names, or for a whole grant the
-- latest expiry of any token minted for it. The in-memory lists drop entries after it, and the
-- feed keeps rows until then (plus a margin).
ALTER TABLE revocations ADD COLUMN expires_at TIMESTAMP;

-- Everything already here is committed: positions follow seq.
UPDATE revocations SET position = seq;
UPDATE revocations r SET expires_at = GREATEST(r.revoked_at, COALESCE(
    (SELECT t.expires_at FROM issued_tokens t WHERE t.revocation_id = r.revocation_id),
    (SELECT MAX(t.expires_at) FROM issued_tokens t WHERE t.grant_id = r.grant_id),
    r.revoked_at));
ALTER TABLE revocations ALTER COLUMN expires_at SET NOT NULL;

CREATE UNIQUE INDEX revocations_position_idx ON revocations (position);
CREATE INDEX revocations_unlinked_idx ON revocations (seq) WHERE position IS NULL;
CREATE INDEX revocations_expiry_idx ON revocations (expires_at);

-- The last position handed out (kept apart from the rows, which are purged once expired).
CREATE TABLE revocation_feed_head (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    last_position   BIGINT NOT NULL
);
INSERT INTO revocation_feed_head (id, last_position)
    SELECT 1, COALESCE(MAX(seq), 0) FROM revocations;
