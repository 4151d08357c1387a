DROP INDEX revocations_position_idx;
CREATE UNIQUE INDEX revocations_position_idx ON revocations (position);
