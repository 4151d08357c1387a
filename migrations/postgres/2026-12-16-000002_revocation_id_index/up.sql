-- Introspection asks the revocation feed whether a token's revocation ids are revoked
-- (`revocation_id = ANY(...)`, and a join on it for minted tokens), but no index held
-- `revocation_id`: every answer not already cached read the whole table, 8.5 ms at 100,000
-- rows, and a mass revocation (the lifecycle sweep, a client suspended) leaves that many until
-- their tokens expire. Only token rows carry an id; a grant's own row, written for every ended
-- grant, does not, and adds no entry here.
--
-- The index on `grant_id` goes: no query of the service reads the feed by grant. Every ended
-- grant wrote an entry to it.
CREATE INDEX revocations_revocation_id_idx ON revocations (revocation_id)
    WHERE revocation_id IS NOT NULL;
DROP INDEX revocations_grant_idx;
