-- No query of the service reads refresh tokens by family: a replayed token revokes its whole
-- grant (by `grant_id`), and a family's tokens are only ever reached through the token's own
-- hash or id. Every rotation and every code exchange inserted an entry here all the same, one of
-- the ~22 WAL records a refresh wrote.
DROP INDEX refresh_tokens_family_idx;
