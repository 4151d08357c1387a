-- Spent tokens are purged (consent::lifecycle, "purge_spent_tokens"): issued-token rows once
-- their access token has expired (plus the revocation list's margin), refresh tokens a week past
-- their expiry. BRIN indexes find them: both tables are appended to in time order, so a block
-- range's min/max is narrow, and a BRIN index costs an insert almost nothing (new block ranges are
-- summarized later, by vacuum), where a B-tree would be one more index write per token issued.
-- Refresh tokens are found by created_at, which never changes (a bound family slides its
-- expires_at forward, and an index on a column an UPDATE changes makes that UPDATE non-HOT).
CREATE INDEX issued_tokens_expiry_brin ON issued_tokens USING brin (expires_at);
CREATE INDEX refresh_tokens_created_brin ON refresh_tokens USING brin (created_at);
