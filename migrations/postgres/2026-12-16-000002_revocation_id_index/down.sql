CREATE INDEX revocations_grant_idx ON revocations (grant_id);
DROP INDEX revocations_revocation_id_idx;
