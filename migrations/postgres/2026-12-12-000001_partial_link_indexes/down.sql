DROP INDEX revocations_position_idx;
CREATE UNIQUE INDEX revocations_position_idx ON revocations (position);
DROP INDEX audit_events_chain_index_key;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_chain_index_key UNIQUE (chain_index);
